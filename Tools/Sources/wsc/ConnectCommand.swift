import ArgumentParser
import Foundation
import Glibc
import Synchronization
import WSCore
import WSExtensions

/// How a `wsc URL` session ended, as its exit status.
enum SessionExit: Int32, CaseIterable {
    /// The close handshake completed with 1000 (normal), 1001 (going away) or no status code.
    case clean = 0
    /// Any other failure: an unreadable input file, an unsupported engine, an invalid URL.
    case failure = 1
    /// The connection or the opening handshake failed (DNS, refused, TLS, timeout, upgrade rejected).
    case connectionFailed = 2
    /// The server broke the protocol (close codes 1002, 1007, 1009, 1010 sent by `wsc`).
    case protocolError = 3
    /// The connection dropped without a close handshake (1006): lost, pong timeout, close timeout.
    case abnormalClosure = 4
    /// The server closed the session with an error code (e.g. 1008, 1011, 4000-4999).
    case closedWithError = 5
    /// A second Ctrl-C (SIGINT) ended `wsc` before the close handshake finished.
    case interrupted = 130

    /// The exit status for an error thrown while opening a session.
    static func forOpening(_ error: any Error) -> SessionExit {
        guard let error = error as? WebSocketError, error.isConnectionFailure else { return .failure }
        // An invalid URL or an engine that cannot run here is not a failure to connect (Docs/CLI.md: exit 1).
        let cannotTry = error.code == .invalidURL || error.code == .unsupported || error.code == .invalidArgument
        return cannotTry ? .failure : .connectionFailed
    }

    /// The exit status for an error thrown while the session was open.
    static func forSession(_ error: any Error) -> SessionExit {
        guard let error = error as? WebSocketError else { return .failure }
        switch error.code {
        case .protocolViolation, .invalidUTF8, .messageTooBig, .extensionFailure: return .protocolError
        case .connectionLost, .pongTimeout, .closeTimeout: return .abnormalClosure
        default: return .failure
        }
    }

    /// The exit status for a session that ended with `reason` and no error.
    static func forClose(_ reason: CloseReason?) -> SessionExit {
        guard let code = reason?.code else { return .clean }
        switch code {
        case .normal, .goingAway, .noStatus: return .clean
        case .abnormalClosure: return .abnormalClosure
        default: return .closedWithError
        }
    }
}

/// `wsc URL` (the default subcommand): an interactive session; stdin lines go out, messages are printed.
struct ConnectCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "connect",
        abstract: "Open an interactive session (the default: `wsc URL` is `wsc connect URL`).",
        discussion: """
            Each line read from stdin is sent as a text message; messages received are printed to stdout as \
            they arrive: text as is (pretty-printed with --json), binary as `< [binary N bytes] HEX` (base64 \
            with --base64). End of input (Ctrl-D) or Ctrl-C closes the session with 1000; a second Ctrl-C quits \
            at once. Notices (connected, closed) go to stderr.

            With --binary, stdin is read to its end and sent as ONE binary message. With --once, the MESSAGE \
            arguments (or, without them, all of stdin) are sent as one message, the first reply is printed and \
            the session is closed.

            Exit status: 0 clean close (1000, 1001 or no code), 1 other failure, 2 connection or handshake \
            failure, 3 protocol error by the server (1002/1007/1009), 4 abnormal closure (1006: connection \
            lost, ping or close timeout), 5 the server closed with an error code, 130 a second Ctrl-C, 64 bad \
            arguments.

            Examples:
              wsc ws://127.0.0.1:8080/chat
              wsc wss://echo.example.com --subprotocol chat.v1 -H 'Authorization: Bearer T'
              echo '{"op":"hi"}' | wsc ws://127.0.0.1:8080 --json
              wsc ws://127.0.0.1:8080 --once hello
              wsc wss://localhost:8443 --cacert ca.pem --engine curl
              wsc wss://localhost:8443 --cacert ca.pem --http2 preferred
              wsc ws://127.0.0.1:8080/upload --send-file video.mp4
              wsc ws://127.0.0.1:8080/feed --save-to downloads/
              wsc ws://127.0.0.1:8080/feed --reconnect

            --send-file streams a file as one binary message (fragments of 256 KiB, sent as the network takes \
            them); --save-to streams each binary message received into a file of its own in DIR \
            (message-1.bin, message-2.bin, ...) as its fragments arrive, so neither holds a message in memory.

            With --reconnect the session connects again after a lost connection or a server restart, with \
            exponential backoff and jitter; lines typed meanwhile are queued and sent after the reconnection, and \
            each state change (connecting, open, reconnecting, closed) is printed on stderr. It ends when the \
            server closes with a code that is not retried (e.g. 1000, 1008), after --reconnect-attempts failed \
            attempts in a row, or at the end of input or Ctrl-C.
            """
    )

    @Argument(help: "The WebSocket URL (ws, wss, http or https).")
    var url: String

    @Argument(help: "A message to send first (the words are joined with spaces); with --once, the only one.")
    var message: [String] = []

    @OptionGroup var client: ConnectionOptions

    @OptionGroup var reconnection: ReconnectOptions

    @Flag(help: "Read stdin to its end and send it as one binary message (instead of a text message per line).")
    var binary = false

    @Flag(help: "Print binary messages as base64 instead of hex.")
    var base64 = false

    @Flag(help: "Pretty-print text messages that are JSON.")
    var json = false

    @Flag(help: "Send the arguments (or all of stdin) as one message, print the first reply, close and exit.")
    var once = false

    @Flag(help: "Offer permessage-deflate (RFC 7692, CIO engine).")
    var deflate = false

    @Flag(help: "When the session ends, print its statistics (frames, messages, bytes, ping round trips) to stderr.")
    var stats = false

    @Option(
        help: ArgumentHelp(
            "Stream the file at PATH as one binary message (instead of reading stdin).", valueName: "path"))
    var sendFile: String?

    @Option(help: ArgumentHelp("Stream each binary message received into a new file in DIR.", valueName: "dir"))
    var saveTo: String?

    @Option(
        help: ArgumentHelp(
            "After end of input, close once no message arrived for SECONDS (replies still in flight are printed).",
            valueName: "seconds"))
    var linger = 0.5

    func validate() throws {
        guard self.linger >= 0 else { throw ValidationError("--linger must not be negative") }
        if self.reconnection.reconnect && self.once {
            throw ValidationError("--once and --reconnect do not go together")
        }
        if self.reconnection.reconnect && (self.sendFile != nil || self.saveTo != nil) {
            throw ValidationError("--send-file and --save-to do not go together with --reconnect")
        }
        if self.sendFile != nil && (self.binary || self.once) {
            throw ValidationError("--send-file cannot be combined with --binary or --once")
        }
        if let directory = self.saveTo {
            var isDirectory: ObjCBool = false
            guard FileManager.default.fileExists(atPath: directory, isDirectory: &isDirectory), isDirectory.boolValue
            else {
                throw ValidationError("--save-to: \(directory) is not a directory")
            }
        }
    }

    func run() async throws {
        let status = await self.session()
        if status != .clean { throw ExitCode(status.rawValue) }
    }

    /// Events the session loop reacts to.
    private enum Event: Sendable {
        /// Stdin ended (or the message to send once was sent).
        case inputEnded
        /// SIGINT or SIGTERM arrived.
        case signal(Int32)
        /// The receiving task ended: with the server's close frame, after the first reply (`--once`), or failing.
        case receiverEnded(error: (any Error)?)
        /// Sending failed.
        case sendFailed(any Error)
    }

    private func session() async -> SessionExit {
        if self.reconnection.reconnect { return await self.reconnectingSession() }
        let deflate = self.deflate
        let streams = self.saveTo != nil
        let client: WebSocketClient
        do {
            client = try self.client.makeClient { ws in
                if deflate { try ws.extensions { try $0.install(.perMessageDeflate()) } }
                if streams { ws.streamsIncomingMessages = true }
            }
        } catch {
            printError("wsc: error: \(describe(error))")
            return .failure
        }
        let options = self.client
        let session: WebSocketSession
        do {
            session = try await client.webSocketSession(self.url) { options.apply(to: &$0) }
        } catch {
            printError("wsc: cannot connect to \(self.url): \(describe(error))")
            await client.close()
            return SessionExit.forOpening(error)
        }
        // Only now: until the session is open, Ctrl-C simply ends wsc.
        let signals = SignalWatcher()
        let quiet = self.client.quiet
        if !quiet {
            var notice = "wsc: connected to \(session.url) (engine \(session.engineName)"
            if session.httpVersion == .http2 { notice += ", HTTP/2" }
            if let subprotocol = session.subprotocol { notice += ", subprotocol \(subprotocol)" }
            if !session.extensions.isEmpty {
                notice += ", extensions \(session.extensions.map(\.name).joined(separator: ", "))"
            }
            printError(notice + ")")
        }

        let (events, continuation) = AsyncStream.makeStream(of: Event.self)
        let printer = MessagePrinter(base64: self.base64, json: self.json, verbose: self.client.verbose)
        let once = self.once
        let lastMessage = LastMessage()
        let linger = Duration.milliseconds(Int64((self.linger * 1000).rounded()))
        let saver = self.saveTo.map { MessageSaver(directory: $0, quiet: quiet) }
        // Streamed files run on the session's event loop (fewer thread hand-offs per fragment); their reads and
        // writes of 256 KiB chunks are short enough for a loop that serves this one session.
        let receiver = Task(executorPreference: saver != nil ? session.executor : nil) {
            do {
                var text: [UInt8]?
                for try await var frame in session.incoming {
                    lastMessage.time.withLock { $0 = .now }
                    if let saver {
                        // Streamed: binary fragments go to a file, text fragments are joined and printed whole.
                        if frame.kind == .continuation && saver.isSaving || frame.kind == .binary {
                            try saver.write(frame)
                            if once && frame.fin { break }
                            continue
                        }
                        if frame.kind == .text && !frame.fin {
                            text = frame.data
                            continue
                        }
                        if frame.kind == .continuation, var joined = text {
                            joined += frame.data
                            text = frame.fin ? nil : joined
                            guard frame.fin else { continue }
                            frame = Frame(kind: .text, data: joined)
                        }
                    }
                    printer.print(frame)
                    if once && (frame.kind == .text || frame.kind == .binary) { break }
                }
                continuation.yield(.receiverEnded(error: nil))
            } catch {
                continuation.yield(.receiverEnded(error: error))
            }
        }
        let signalTask = Task {
            for await number in signals.signals { continuation.yield(.signal(number)) }
        }
        self.startSending(session, continuation)

        var closing: Task<Void, Never>?
        var exit: SessionExit?
        loop: for await event in events {
            switch event {
            case .inputEnded:
                if !once && closing == nil {
                    // The session drops messages that arrive after its close frame: wait for replies in flight.
                    closing = Task {
                        let ended = ContinuousClock.now
                        while !session.isClosed {
                            // A message being saved is finished first, however long it takes.
                            if saver?.isSaving == true {
                                try? await Task.sleep(for: .milliseconds(20))
                                continue
                            }
                            let idle = ContinuousClock.now - max(ended, lastMessage.time.withLock { $0 })
                            if idle >= linger { break }
                            try? await Task.sleep(for: linger - idle)
                        }
                        await session.close()
                    }
                }
            case .signal(let number):
                if closing != nil {
                    printError("wsc: interrupted")
                    exit = .interrupted
                    break loop
                }
                if !quiet {
                    printError(
                        "wsc: \(number == SIGINT ? "interrupted" : "terminated"): closing (Ctrl-C again to quit at once)"
                    )
                }
                closing = Task { await session.close() }
            case .sendFailed(let error):
                // A send after the server closed normally is not a failure: the receiver reports the close.
                let normalEnd = (error as? WebSocketError)?.isNormalClosure ?? false
                if !normalEnd, !session.isClosed, closing == nil {
                    printError("wsc: send failed: \(describe(error))")
                }
            case .receiverEnded(let error):
                if let error {
                    printError("wsc: error: \(describe(error))")
                    exit = SessionExit.forSession(error)
                }
                break loop
            }
        }
        signalTask.cancel()
        if exit == .interrupted {
            receiver.cancel()
            return .interrupted
        }
        // The receiver ended: the session is over, or --once got its reply and we close now.
        await session.close()
        await closing?.value
        let reason = await session.closeReason
        if !quiet { printError("wsc: closed: \(reason.map { "\($0)" } ?? "no close reason")") }
        if self.stats { printError(Self.statisticsText(session.statistics)) }
        await client.close()
        return exit ?? SessionExit.forClose(reason)
    }

    /// The session's statistics, one line per kind, for `--stats`.
    static func statisticsText(_ statistics: WebSocketSessionStatistics) -> String {
        var lines = ["wsc: statistics:"]
        if let open = statistics.openDuration() { lines.append("  open for        \(open)") }
        lines.append("  frames          sent \(statistics.framesSent), received \(statistics.framesReceived)")
        lines.append(
            "  messages        sent \(statistics.messagesSent) (\(statistics.textMessagesSent) text, "
                + "\(statistics.binaryMessagesSent) binary), received \(statistics.messagesReceived) "
                + "(\(statistics.textMessagesReceived) text, \(statistics.binaryMessagesReceived) binary)")
        lines.append(
            "  message bytes   sent \(statistics.messageBytesSent), received \(statistics.messageBytesReceived)")
        lines.append("  wire bytes      sent \(statistics.wireBytesSent), received \(statistics.wireBytesReceived)")
        if let last = statistics.lastRoundTripTime {
            let smoothed = statistics.smoothedRoundTripTime.map { "\($0)" } ?? "-"
            lines.append("  ping RTT        last \(last), smoothed \(smoothed) (\(statistics.pongsMatched) pongs)")
        }
        return lines.joined(separator: "\n")
    }

    /// Starts sending: the MESSAGE arguments, then stdin (per line, or whole with `--binary` or `--once`).
    private func startSending(_ session: WebSocketSession, _ events: AsyncStream<Event>.Continuation) {
        let first = self.message.isEmpty ? nil : self.message.joined(separator: " ")
        let (binary, once) = (self.binary, self.once)
        if let path = self.sendFile {
            let quiet = self.client.quiet
            Task(executorPreference: session.executor) {
                do {
                    if let first { try await session.send(first) }
                    try await session.sendFile(atPath: path)
                    if !quiet { printError("wsc: sent \(path)") }
                } catch {
                    events.yield(.sendFailed(error))
                }
                events.yield(.inputEnded)
            }
            return
        }
        if once, let first {
            Task {
                do {
                    if binary { try await session.send(Array(first.utf8)) } else { try await session.send(first) }
                } catch {
                    events.yield(.sendFailed(error))
                }
                events.yield(.inputEnded)
            }
            return
        }
        let input = StdinReader.start(wholeInput: binary || once, stripFinalNewline: !binary)
        // Weak: after the session closed (Ctrl-C) this task may still wait for a line that never comes; it must not
        // keep the session alive until exit.
        Task { [weak session] in
            do {
                if let first { try await session?.send(first) }
                for await chunk in input {
                    guard let session else { break }
                    if binary {
                        try await session.send(chunk)
                    } else {
                        try await session.send(String(decoding: chunk, as: UTF8.self))
                    }
                }
            } catch {
                events.yield(.sendFailed(error))
            }
            events.yield(.inputEnded)
        }
    }
}

// @unchecked Sendable: the vars only on the receiving task, a frame at a time; `saving` is atomic.
/// Writes streamed binary messages to files `message-N.bin` in a directory, fragment by fragment (`--save-to`).
/// Used by the receiving task only.
final class MessageSaver: @unchecked Sendable {
    let directory: String
    let quiet: Bool
    /// Whether a binary message is being written (read by the closing task).
    private let saving = Atomic(false)
    private var descriptor: Int32 = -1
    private var path = ""
    private var count = 0
    private var bytes = 0

    init(directory: String, quiet: Bool) {
        self.directory = directory
        self.quiet = quiet
    }

    /// Whether a binary message is being written.
    var isSaving: Bool { self.saving.load(ordering: .acquiring) }

    /// Writes a binary message's first fragment or a continuation; closes the file at the last.
    func write(_ frame: Frame) throws {
        if frame.kind == .binary {
            self.count += 1
            self.bytes = 0
            self.path = "\(self.directory)/message-\(self.count).bin"
            self.descriptor = open(self.path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0o644)
            self.saving.store(true, ordering: .releasing)
            guard self.descriptor >= 0 else {
                self.saving.store(false, ordering: .releasing)
                throw WebSocketError(
                    .invalidArgument, "cannot create \(self.path): \(String(cString: strerror(errno)))")
            }
        }
        var offset = 0
        try frame.data.withUnsafeBytes { buffer in
            while offset < buffer.count {
                let n = Glibc.write(self.descriptor, buffer.baseAddress! + offset, buffer.count - offset)
                if n < 0 && errno == EINTR { continue }
                guard n > 0 else {
                    throw WebSocketError(
                        .invalidArgument, "writing \(self.path) failed: \(String(cString: strerror(errno)))")
                }
                offset += n
            }
        }
        self.bytes += frame.data.count
        if frame.fin {
            Glibc.close(self.descriptor)
            self.descriptor = -1
            self.saving.store(false, ordering: .releasing)
            if !self.quiet { printError("wsc: saved \(self.bytes) bytes to \(self.path)") }
        }
    }
}

/// When the last message arrived, shared by the receiving task and the closing task.
final class LastMessage: Sendable {
    /// The arrival time of the last message (initially the session's start).
    let time = Mutex(ContinuousClock.now)
}

/// Prints received frames: text to stdout as is (or pretty JSON), binary as a marked hex or base64 line;
/// pings and pongs to stderr with `--verbose`.
struct MessagePrinter: Sendable {
    let base64: Bool
    let json: Bool
    let verbose: Bool

    func print(_ frame: Frame) {
        switch frame.kind {
        case .text:
            let text = String(decoding: frame.data, as: UTF8.self)
            printOutput(self.json ? Self.prettyJSON(text) ?? text : text)
        case .binary:
            let encoded = self.base64 ? Data(frame.data).base64EncodedString() : Self.hex(frame.data)
            printOutput("< [binary \(frame.data.count) bytes] \(encoded)")
        case .ping, .pong:
            if self.verbose { printError("< [\(frame.kind) \(frame.data.count) bytes]") }
        default:
            break
        }
    }

    /// Lower-case hex, two digits a byte.
    static func hex(_ bytes: [UInt8]) -> String {
        let digits = Array("0123456789abcdef".utf8)
        var out: [UInt8] = []
        out.reserveCapacity(bytes.count * 2)
        for byte in bytes {
            out.append(digits[Int(byte >> 4)])
            out.append(digits[Int(byte & 0xF)])
        }
        return String(decoding: out, as: UTF8.self)
    }

    /// `text` pretty-printed when it is JSON, else `nil`.
    static func prettyJSON(_ text: String) -> String? {
        guard let object = try? JSONSerialization.jsonObject(with: Data(text.utf8), options: [.fragmentsAllowed]),
            let data = try? JSONSerialization.data(
                withJSONObject: object,
                options: [.prettyPrinted, .sortedKeys, .withoutEscapingSlashes, .fragmentsAllowed])
        else { return nil }
        return String(decoding: data, as: UTF8.self)
    }
}

/// Reads stdin on a thread of its own (so that no Swift concurrency thread blocks in `read`).
enum StdinReader {
    /// Starts reading; yields each line without its newline, or the whole input as one element when
    /// `wholeInput` (without a final newline when `stripFinalNewline`), then finishes at the end of input.
    static func start(wholeInput: Bool, stripFinalNewline: Bool) -> AsyncStream<[UInt8]> {
        let (stream, continuation) = AsyncStream.makeStream(of: [UInt8].self)
        Thread.detachNewThread {
            var pending: [UInt8] = []
            var buffer = [UInt8](repeating: 0, count: 64 * 1024)
            while true {
                let n = buffer.withUnsafeMutableBytes { read(0, $0.baseAddress, $0.count) }
                if n < 0 && errno == EINTR { continue }
                if n <= 0 { break }
                pending += buffer[..<n]
                if wholeInput { continue }
                while let newline = pending.firstIndex(of: UInt8(ascii: "\n")) {
                    var line = Array(pending[..<newline])
                    if line.last == UInt8(ascii: "\r") { line.removeLast() }
                    continuation.yield(line)
                    pending.removeSubrange(...newline)
                }
            }
            if wholeInput {
                if stripFinalNewline && pending.last == UInt8(ascii: "\n") { pending.removeLast() }
                continuation.yield(pending)
            } else if !pending.isEmpty {
                continuation.yield(pending)
            }
            continuation.finish()
        }
        return stream
    }
}
