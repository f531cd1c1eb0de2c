import ArgumentParser
import Glibc
import WSCore
import WSEngineCIO
import WSEngineCurl
import WSExtensions
import WSSerialization
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
            var configuration = WebSocketTestServer.Configuration()
            configuration.perMessageDeflate = true  // for the Deflate step; clients that do not offer it are unaffected
            server = try WebSocketTestServer.start(configuration, handler: .echo)
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
            config.proxy = .direct  // The demo's server is in this process: never through a proxy.
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
            DemoStep(title: "HTTP/2") { context in
                // WebSockets over HTTP/2 (RFC 8441) are a setting of the CIO engine, checked at run time; this
                // demo's server is ws:// (HTTP/1.1), so the session shows HTTP/1.1 whatever the setting.
                let session = try context.openSession()
                let engine = CIOEngine(configuration: .init(http2: .init(mode: .preferred)))
                let supported = engine.isSupported(.webSocketOverHTTP2)
                let capability =
                    "CIOEngine(http2: .preferred).isSupported(.webSocketOverHTTP2) = \(supported)"
                    + (supported
                        ? " (libnghttp2 \(CIOEngine.nghttp2Version))"
                        : ": \(engine.unsupportedReason(.webSocketOverHTTP2) ?? "unsupported")")
                return "session.httpVersion = \(session.httpVersion); \(capability)"
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
            DemoStep(title: "Serialization") { context in
                // A second client on the same engine, with the JSON converter installed; not closed here, as
                // closing a client shuts its engine down (the demo's client does that at the end).
                let client = WebSocketClient(engine: context.client.engine) { config in
                    config = context.client.configuration
                    config.install(WebSockets.self) { $0.contentConverter = JSONWebSocketConverter() }
                }
                let sent = DemoChatMessage(user: "alice", message: "Hello, Codable!", timestamp: 1_700_000_000_000)
                return try await client.webSocket(context.server.url(path: "/chat")) { session in
                    try await session.sendSerialized(sent)
                    let echo: DemoChatMessage = try await session.receiveDeserialized()
                    guard echo == sent else { throw ToolError("sent \(sent) but the echo decoded as \(echo)") }
                    return "sendSerialized(\(sent)) → receiveDeserialized() == sent (JSON)"
                }
            },
            DemoStep(title: "Curl engine") { context in
                // The same session API on the other engine, chosen per client; capabilities are checked at run time.
                let engine = CurlEngine()
                let client = WebSocketClient(engine: engine) { config in config.proxy = .direct }
                defer { Task { await client.close() } }
                let capabilities =
                    "isSupported(.webSocket) = \(client.isSupported(.webSocket)), "
                    + "isSupported(.webSocketExtensions) = \(client.isSupported(.webSocketExtensions))"
                guard client.isSupported(.webSocket) else {
                    return "\(capabilities); \(engine.unsupportedReason(.webSocket) ?? "unsupported")"
                }
                let echo = try await client.webSocket(context.server.url(path: "/curl")) { session in
                    try await session.send("Hello from libcurl!")
                    var frame = try await session.incoming.receive()
                    while frame.kind != .text { frame = try await session.incoming.receive() }
                    return try frame.readText()
                }
                return "libcurl \(CurlEngine.libcurlVersion): \(capabilities); echo \"\(echo)\""
            },
            DemoStep(title: "Deflate") { context in
                // A second client on the same engine offering permessage-deflate (RFC 7692); not closed here, as
                // closing a client shuts its engine down. The step shows what was offered and negotiated.
                guard context.client.isSupported(.webSocketExtensions) else {
                    return
                        "skipped: the \(context.client.engine.name) engine cannot carry extensions (use --engine cio)"
                }
                let client = try WebSocketClient(engine: context.client.engine) { config in
                    config = context.client.configuration
                    try config.install(WebSockets.self) { ws in
                        try ws.extensions { try $0.install(.perMessageDeflate()) }
                    }
                }
                let text = String(repeating: "Hello, permessage-deflate! ", count: 40)
                // What the text compresses to with the default parameters, through the extension itself.
                let local = try PerMessageDeflate().negotiate(
                    response: WebSocketExtensionHeader(name: "permessage-deflate"))
                let compressed = try local.processOutgoing(
                    .text(text), context: WebSocketExtensionContext(maxMessageSize: 1 << 20))
                return try await client.webSocket(context.server.url(path: "/deflate")) { session in
                    try await session.send(text)
                    var reply = try await session.incoming.receive()
                    while reply.kind != .text { reply = try await session.incoming.receive() }
                    let echo = try reply.readText()
                    guard echo == text else { throw ToolError("the \(text.utf8.count)-byte text came back different") }
                    let offered = context.server.requests.last?.headers["Sec-WebSocket-Extensions"] ?? "nothing"
                    let negotiated =
                        session.extensions.first.map { "negotiated \"\($0.header)\"" }
                        ?? "the server declined, so messages go uncompressed"
                    return "offered \"\(offered)\" → \(negotiated); \(text.utf8.count)-byte text echoed "
                        + "(deflates to \(compressed.data.count) bytes)"
                }
            },
        ]
    }
}

/// The chat message of Ktor's serialization example, sent by the serialization step; `timestamp` in
/// milliseconds, as a Kotlin `Long`.
struct DemoChatMessage: Codable, Equatable, CustomStringConvertible {
    let user: String
    let message: String
    let timestamp: Int64

    var description: String { "ChatMessage(user: \"\(user)\", message: \"\(message)\")" }
}

extension String {
    /// The string padded with spaces to `width` characters.
    fileprivate func padding(to width: Int) -> String {
        self.count >= width ? self + " " : self + String(repeating: " ", count: width - self.count)
    }
}
