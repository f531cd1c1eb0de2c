import ArgumentParser
import Glibc
import WSCore
import WSTesting

/// `wsc demo`: runs an echo server in the process and shows the client API working against it, one line per
/// step.
struct DemoCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "demo",
        abstract: "Run an in-process echo server and walk through the client API against it."
    )

    @OptionGroup var client: ClientOptions

    @Option(help: "Give up when the demo takes longer than this many seconds.")
    var timeout = 30

    func run() async throws {
        let seconds = self.timeout
        let watchdog = Task.detached {
            try await Task.sleep(for: .seconds(seconds))
            printError("wsc demo: error: the demo did not finish within \(seconds) s")
            Glibc.exit(2)
        }
        defer { watchdog.cancel() }

        let server: WebSocketTestServer
        do {
            server = try WebSocketTestServer.start(handler: .echo)
        } catch {
            printError("wsc demo: error: cannot start the echo server: \(error)")
            throw ExitCode.failure
        }
        defer { server.stop() }

        let engine: any WebSocketEngine
        do {
            engine = try self.client.engine.makeEngine()
        } catch {
            printError("wsc demo: error: \(error)")
            throw ExitCode.failure
        }
        let logger = self.client.makeLogger()
        let client = WebSocketClient(engine: engine) { config in
            config.install(WebSockets.self) { ws in
                ws.maxFrameSize = 1 << 20
                ws.maxMessageSize = 1 << 20
            }
            config.logger = logger
        }

        print("wsc demo: the WebSocket client SDK against an in-process echo server")
        print("  server  \(server.url) (WSTesting, echo handler)")
        print("  engine  \(engine.name)")
        print("")

        let context = DemoContext(client: client, server: server)
        let steps = DemoStep.all
        var passed = 0
        var failure: (step: String, error: any Error)?
        for step in steps {
            do {
                let detail = try await step.run(context)
                print("  ✓ \(step.title.padding(to: 14))\(detail)")
                passed += 1
            } catch {
                print("  ✗ \(step.title.padding(to: 14))\(describe(error))")
                failure = (step.title, error)
                break
            }
        }
        if let session = context.session, !session.isClosed { await session.close() }
        await client.close()
        print("")
        if let failure {
            print("Demo failed at step '\(failure.step)' after \(passed) of \(steps.count) steps.")
            throw ExitCode.failure
        }
        print("All \(passed) steps passed.")
    }
}

/// What the demo steps share: the client, the server and the open session.
final class DemoContext {
    let client: WebSocketClient
    let server: WebSocketTestServer
    /// The session opened by the connect step.
    var session: WebSocketSession?

    init(client: WebSocketClient, server: WebSocketTestServer) {
        self.client = client
        self.server = server
    }

    /// The open session, or an error when the connect step has not run.
    func openSession() throws -> WebSocketSession {
        guard let session else { throw ToolError("no session is open") }
        return session
    }

    /// The next frame of one of `kinds` from the session, skipping others (pings, stray pongs).
    func next(_ kinds: Set<Frame.Kind>) async throws -> Frame {
        let session = try self.openSession()
        while true {
            let frame = try await session.incoming.receive()
            if kinds.contains(frame.kind) { return frame }
            if frame.kind == .close {
                throw ToolError("the server closed the session: \(frame.readReason().map { "\($0)" } ?? "no reason")")
            }
        }
    }
}

/// One step of the demo: a title and an action that returns what to print after the ✓.
///
/// Steps run in order and share a ``DemoContext``; the first failure stops the demo. Add steps (compression,
/// serialization, other engines) by appending to ``all``.
struct DemoStep {
    let title: String
    let run: (DemoContext) async throws -> String

    static var all: [DemoStep] {
        [
            DemoStep(title: "Capability") { context in
                guard context.client.isSupported(.webSocket) else {
                    throw ToolError("client.isSupported(.webSocket) is false")
                }
                return "client.isSupported(.webSocket) = true"
            },
            DemoStep(title: "Capability") { context in
                "client.isSupported(.webSocketExtensions) = \(context.client.isSupported(.webSocketExtensions))"
            },
            DemoStep(title: "Connect") { context in
                let url = context.server.url(path: "/demo?greeting=hello")
                let session = try await context.client.webSocketSession(url)
                context.session = session
                return "connected to \(url) on \(session.engineName), subprotocol \(session.subprotocol ?? "none")"
            },
            DemoStep(title: "Server saw") { context in
                guard let request = context.server.requests.last else {
                    throw ToolError("the server recorded no request")
                }
                return "\(request.method) \(request.target) → \(request.status) Switching Protocols"
            },
            DemoStep(title: "Text") { context in
                let text = "Hello, WebSocket!"
                try await context.openSession().send(text)
                let echo = try await context.next([.text]).readText()
                guard echo == text else { throw ToolError("sent \"\(text)\" but the echo was \"\(echo)\"") }
                return "sent \"\(text)\" → echo \"\(echo)\""
            },
            DemoStep(title: "Binary") { context in
                let bytes = (0..<1024).map { UInt8(truncatingIfNeeded: $0) }
                try await context.openSession().send(bytes)
                let echo = try await context.next([.binary]).readBytes()
                guard echo == bytes else { throw ToolError("the binary echo differs (\(echo.count) bytes)") }
                return "sent \(bytes.count) bytes → echo \(echo.count) bytes, identical"
            },
            DemoStep(title: "Ping") { context in
                let payload: [UInt8] = [1, 2, 3]
                try await context.openSession().send(Frame.ping(payload))
                let pong = try await context.next([.pong])
                guard pong.data == payload else { throw ToolError("the pong carried \(pong.data), not \(payload)") }
                return "Frame.ping(\(payload)) → pong \(pong.data)"
            },
            DemoStep(title: "Custom frame") { context in
                try await context.openSession().send(Frame.text("Custom frame"))
                let echo = try await context.next([.text]).readText()
                return "Frame.text(\"Custom frame\") → echo \"\(echo)\""
            },
            DemoStep(title: "Close") { context in
                let session = try context.openSession()
                let reason = CloseReason(code: .normal, message: "Client disconnecting")
                await session.close(reason)
                let closeReason = await session.closeReason
                guard closeReason?.code == .normal else {
                    throw ToolError("closeReason is \(closeReason.map { "\($0)" } ?? "nil"), expected 1000")
                }
                return "close(\(reason)) → closeReason \(closeReason.map { "\($0)" } ?? "nil")"
            },
        ]
    }
}

extension String {
    /// The string padded with spaces to `width` characters.
    fileprivate func padding(to width: Int) -> String {
        self.count >= width ? self + " " : self + String(repeating: " ", count: width - self.count)
    }
}
