import ArgumentParser
import WSCore
import WSExtensions

/// `wsc echo URL`: echoes every message back until the server closes; used for the Autobahn|Testsuite.
struct EchoCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "echo",
        abstract: "Connect and echo every text and binary message back until the server closes.",
        discussion: """
            Each message is sent back at once, with the same kind and bytes; a message that arrives together \
            with the server's close frame cannot be answered any more and is not. Exits 0 when the server closed \
            the session with a close frame (whatever its code), non-zero with the error on stderr otherwise. This \
            is the client side of the Autobahn|Testsuite fuzzing server's cases.

            With --reconnect it connects again after a lost connection or a server restart and goes on echoing; \
            state changes are printed on stderr. It exits 0 when the server closes with a code that is not \
            retried, non-zero when it gave up (--reconnect-attempts) or a failure is not retried.
            """
    )

    @Argument(help: "The WebSocket URL, e.g. ws://127.0.0.1:9001/runCase?case=1&agent=wsc")
    var url: String

    @OptionGroup var client: ConnectionOptions

    @OptionGroup var reconnection: ReconnectOptions

    @Flag(
        help: "Offer permessage-deflate (RFC 7692) with the default parameters; the size limits apply after inflation.")
    var deflate = false

    func run() async throws {
        do {
            let summary = try await self.reconnection.reconnect ? self.reconnectingEcho() : self.echo()
            if self.client.verbose { printError("wsc echo: \(summary)") }
        } catch {
            printError("wsc echo: error: \(describe(error))")
            throw ExitCode.failure
        }
    }

    /// Runs the session; returns a summary line, or throws when it did not end with the server's close frame.
    private func echo() async throws -> String {
        // Autobahn sends frames and messages of up to 16 MiB: 64 MiB limits unless --max-*-size says otherwise.
        let deflate = self.deflate
        let client = try self.client.makeClient(maxFrameSize: 64 << 20, maxMessageSize: 64 << 20) { ws in
            ws.maxFragments = .max
            if deflate { try ws.extensions { try $0.install(.perMessageDeflate()) } }
        }
        let options = self.client
        do {
            let session = try await client.webSocketSession(self.url) { options.apply(to: &$0) }
            var echoed = 0
            var unanswered = 0
            var serverClose: Frame?
            do {
                for try await frame in session.incoming {
                    switch frame.kind {
                    case .text, .binary:
                        do {
                            try await session.send(Frame(kind: frame.kind, data: frame.data))
                            echoed += 1
                        } catch let error as WebSocketError where error.isNormalClosure {
                            // The server's close came with this message (e.g. in the same write): the session
                            // is closed and the message cannot be answered. Not a failure; its close frame follows.
                            unanswered += 1
                        }
                    case .close:
                        serverClose = frame  // the session answers it
                    default:
                        break
                    }
                }
            } catch {
                await session.close()
                throw error
            }
            let reason = await session.closeReason
            guard let serverClose else {
                throw ToolError(
                    "the session ended without a close frame from the server (\(reason.map { "\($0)" } ?? "no reason"))"
                )
            }
            await client.close()
            let received = serverClose.readReason().map { "\($0)" } ?? "no status code"
            let late = unanswered == 0 ? "" : " (\(unanswered) arrived with the server's close and were not answered)"
            return "echoed \(echoed) messages\(late); the server closed with \(received)"
        } catch {
            await client.close()
            throw error
        }
    }
}
