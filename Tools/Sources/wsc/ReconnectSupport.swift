import ArgumentParser
import WSCore
import WSExtensions

/// `--reconnect` and its limit, shared by `wsc URL` and `wsc echo`.
struct ReconnectOptions: ParsableArguments {
    @Flag(
        help: ArgumentHelp(
            "Reconnect when the connection is lost or the server restarts (exponential backoff with jitter, a keepalive "
                + "ping every 20 s unless --ping-interval says otherwise); state changes are printed on stderr."))
    var reconnect = false

    @Option(
        help: ArgumentHelp(
            "With --reconnect: give up after N attempts in a row (default: never).", valueName: "n"))
    var reconnectAttempts: Int?

    func validate() throws {
        if let attempts = self.reconnectAttempts {
            guard self.reconnect else { throw ValidationError("--reconnect-attempts needs --reconnect") }
            guard attempts >= 0 else { throw ValidationError("--reconnect-attempts must not be negative") }
        }
    }

    /// The reconnecting session's configuration for these options and the connection options' ping interval.
    func configuration(_ connection: ConnectionOptions) -> ReconnectingWebSocketSession.Configuration {
        var configuration = ReconnectingWebSocketSession.Configuration()
        configuration.policy.maxAttempts = self.reconnectAttempts
        if let interval = connection.pingInterval {
            configuration.pingInterval = .milliseconds(Int64((interval * 1000).rounded()))
        }
        return configuration
    }
}

extension ReconnectingWebSocketSession {
    /// Prints each state change on stderr as `wsc: <state>` (`prefix` instead of `wsc`), until the session ends.
    func printStates(prefix: String = "wsc") -> Task<Void, Never> {
        let states = self.states
        return Task {
            for await state in states { printError("\(prefix): \(state)") }
        }
    }
}

extension SessionExit {
    /// The exit status for a reconnecting session that ended for `cause`.
    static func forReconnecting(_ cause: ReconnectingWebSocketSession.Cause) -> SessionExit {
        switch cause {
        case .closedByClient: .clean
        case .closed(let reason): SessionExit.forClose(reason)
        case .failure(let error as WebSocketError) where error.isConnectionFailure:
            error.code == .cancelled ? .clean : .connectionFailed
        case .failure(let error): SessionExit.forSession(error)
        }
    }
}

extension ConnectCommand {
    /// `wsc URL --reconnect`: the interactive session on a reconnecting session. Lines typed during an outage are
    /// queued and sent after the reconnection; end of input or Ctrl-C closes it.
    func reconnectingSession() async -> SessionExit {
        let deflate = self.deflate
        let client: WebSocketClient
        let session: ReconnectingWebSocketSession
        let options = self.client
        do {
            client = try options.makeClient { ws in
                if deflate { try ws.extensions { try $0.install(.perMessageDeflate()) } }
            }
            session = try client.reconnectingWebSocketSession(
                self.url, configuration: self.reconnection.configuration(options)
            ) {
                options.apply(to: &$0)
            }
        } catch {
            printError("wsc: error: \(describe(error))")
            return .failure
        }
        let quiet = self.client.quiet
        let stateTask = quiet ? nil : session.printStates()
        let printer = MessagePrinter(base64: self.base64, json: self.json, verbose: self.client.verbose)
        let receiver = Task {
            // The messages end, or fail, when the session ends; the closed state says why.
            do { for try await message in session.messages { printer.print(message.frame) } } catch {}
        }
        let signals = SignalWatcher()
        let first = self.message.isEmpty ? nil : self.message.joined(separator: " ")
        let binary = self.binary
        let input = StdinReader.start(wholeInput: binary, stripFinalNewline: !binary)
        let sender = Task {
            if let first { await Self.send(.text(first), on: session) }
            for await chunk in input {
                await Self.send(binary ? .binary(chunk) : .text(String(decoding: chunk, as: UTF8.self)), on: session)
            }
        }
        let linger = Duration.milliseconds(Int64((self.linger * 1000).rounded()))
        // Whichever comes first: the session ends by itself, input ends (then the linger time), or a signal.
        let cause = await withTaskGroup(of: ReconnectingWebSocketSession.Cause?.self) { group in
            group.addTask { await session.closeCause }
            group.addTask {
                await sender.value
                try? await Task.sleep(for: linger)
                return nil
            }
            group.addTask {
                for await _ in signals.signals { return nil }
                return nil
            }
            let first = await group.next() ?? nil
            sender.cancel()
            group.cancelAll()
            if let first { return first }
            await session.close()
            return await session.closeCause
        }
        await receiver.value
        await stateTask?.value
        let exit = SessionExit.forReconnecting(cause)
        if quiet && exit != .clean { printError("wsc: closed: \(cause)") }
        await client.close()
        return exit
    }

    /// Sends one message; a failure (a full queue, fail-fast) is printed and the session goes on.
    private static func send(_ message: WebSocketMessage, on session: ReconnectingWebSocketSession) async {
        do {
            try await session.send(message)
        } catch {
            if !session.state.isClosed { printError("wsc: send failed: \(describe(error))") }
        }
    }
}

extension EchoCommand {
    /// `wsc echo URL --reconnect`: echoes across reconnections until the session ends for good.
    func reconnectingEcho() async throws -> String {
        let deflate = self.deflate
        let options = self.client
        let client = try options.makeClient(maxFrameSize: 64 << 20, maxMessageSize: 64 << 20) { ws in
            ws.maxFragments = .max
            if deflate { try ws.extensions { try $0.install(.perMessageDeflate()) } }
        }
        let session = try client.reconnectingWebSocketSession(
            self.url, configuration: self.reconnection.configuration(options)
        ) {
            options.apply(to: &$0)
        }
        let states = session.printStates(prefix: "wsc echo")
        var echoed = 0
        do {
            for try await message in session.messages {
                try await session.send(message)
                echoed += 1
            }
        } catch {
            // The cause is reported below.
        }
        let cause = await session.closeCause
        await states.value
        await client.close()
        switch cause {
        case .closed where !ReconnectPolicy.isRetriedByDefault(cause), .closedByClient:
            return "echoed \(echoed) messages; the session ended: \(cause)"
        default:
            throw ToolError("the reconnecting session gave up after echoing \(echoed) messages: \(cause)")
        }
    }
}
