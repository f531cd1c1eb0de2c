// WebSockets over HTTP/2 (RFC 8441) on the CIO engine against Hypercorn (Tests/Fixtures/h2_ws_server.py): sharing
// one connection, echo of text, binary and fragmented messages, deflate, close codes both ways, and the fallback to
// HTTP/1.1 (or the failure) when the server does not offer extended CONNECT.
import EngineTestSupport
import Foundation
import SpawnSupport
import Synchronization
import Testing
import WSCore
import WSEngineCIO
import WSExtensions

#if canImport(Glibc)
import Glibc
#endif

/// A running Tests/Fixtures/h2_ws_server.py (Hypercorn over TLS) on 127.0.0.1.
final class HypercornPeer: Sendable {
    let port: Int
    /// The server's standard error (Hypercorn's error log when H2_SERVER_DEBUG is set).
    let logPath: String
    private let child: PortAnnouncingChild

    private init(mode: String, certificates: TestCertificates) throws {
        let python = try TestEnvironment.python()
        let script = TestEnvironment.fixturesDirectory.appendingPathComponent("h2_ws_server.py").path
        let logPath = FileManager.default.temporaryDirectory
            .appendingPathComponent("hypercorn-\(getpid())-\(UUID().uuidString.prefix(8)).log").path
        let log = open(logPath, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0o600)
        defer { if log >= 0 { close(log) } }
        self.child = try PortAnnouncingChild(
            [python, script, mode, certificates.server.certificate, certificates.server.privateKey],
            stderr: log >= 0 ? log : nil, what: "Hypercorn (\(mode)); if hypercorn is missing, run ./scripts/setup.sh")
        self.port = self.child.port
        self.logPath = logPath
    }

    /// Starts the server in `mode` (`h2`, `http1`, `h2-no-connect`).
    static func start(_ mode: String) async throws -> HypercornPeer {
        let certificates = try await TestCertificates.load()
        return try await onDedicatedThread { try HypercornPeer(mode: mode, certificates: certificates) }
    }

    /// `wss://localhost:PORT/`.
    var url: String { "wss://localhost:\(self.port)/" }
}

/// A client on a CIO engine with HTTP/2 `mode`, trusting the test CA.
private func http2Client(
    _ mode: CIOEngine.HTTP2Mode, deflate: Bool = false, idleTimeout: Duration = .seconds(2)
) async throws -> WebSocketClient {
    let certificates = try await TestCertificates.load()
    let engine = CIOEngine(
        configuration: .init(
            eventLoopCount: 1, tls: .init(trustedCAFile: certificates.caCertificate),
            http2: .init(mode: mode, idleTimeout: idleTimeout)))
    return try WebSocketClient(engine: engine) { config in
        try config.install(WebSockets.self) { ws in
            if deflate { try ws.extensions { try $0.install(.perMessageDeflate()) } }
        }
    }
}

@Suite("WebSockets over HTTP/2 (Hypercorn)", .serialized, .timeLimit(.minutes(2)))
struct HTTP2Tests {
    @Test("100 sessions share one HTTP/2 connection: the server sees one TCP connection")
    func sharing() async throws {
        let peer = try await HypercornPeer.start("h2")
        let client = try await http2Client(.preferred)
        let sessions = try await withThrowingTaskGroup(of: WebSocketSession.self) { group in
            for _ in 0..<100 { group.addTask { try await client.webSocketSession(peer.url) } }
            return try await group.reduce(into: []) { $0.append($1) }
        }
        #expect(sessions.count == 100)
        #expect(sessions.allSatisfy { $0.httpVersion == .http2 })
        try await withThrowingTaskGroup(of: Void.self) { group in
            for (index, session) in sessions.enumerated() {
                group.addTask {
                    try await session.send("hello \(index)")
                    #expect(try await session.receiveText() == "hello \(index)")
                    try await session.send([UInt8(index), 0, 255])
                    #expect(try await session.receiveBinary() == [UInt8(index), 0, 255])
                }
            }
            try await group.waitForAll()
        }
        try await sessions[0].send("stats")
        #expect(try await sessions[0].receiveText() == "connections=1 http=2")
        for session in sessions { await session.close() }
        #expect(await sessions[99].closeReason?.code == .normal)
        // A session opened after the others closed still runs over HTTP/2 (on the same connection or a new one).
        let late = try await client.webSocketSession(peer.url)
        #expect(late.httpVersion == .http2)
        try await late.send("after")
        #expect(try await late.receiveText() == "after")
        await late.close()
        await client.close()
    }

    @Test("fragmented messages, a 512 KiB message through the flow-control windows, and permessage-deflate")
    func fragmentsAndDeflate() async throws {
        let peer = try await HypercornPeer.start("h2")
        let client = try await http2Client(.required, deflate: true)
        let session = try await client.webSocketSession(peer.url)
        #expect(session.httpVersion == .http2)
        #expect(session.extensions.map(\.name) == ["permessage-deflate"])
        try await session.send(Frame(kind: .text, fin: false, data: Array("frag".utf8)))
        try await session.send(Frame(kind: .continuation, fin: false, data: Array("ment".utf8)))
        try await session.send(Frame(kind: .continuation, fin: true, data: Array("ed".utf8)))
        #expect(try await session.receiveText() == "fragmented")
        var generator = SystemRandomNumberGenerator()
        let big = (0..<(512 << 10)).map { _ in UInt8.random(in: 0...255, using: &generator) }
        try await session.send(big)
        #expect(try await session.receiveBinary() == big)
        await session.close()
        await client.close()
    }

    @Test("close codes both ways; closing one session leaves the others open")
    func closeCodes() async throws {
        let peer = try await HypercornPeer.start("h2")
        let client = try await http2Client(.required)
        let first = try await client.webSocketSession(peer.url)
        let second = try await client.webSocketSession(peer.url)
        let third = try await client.webSocketSession(peer.url)
        try await first.send("close:4001")
        #expect(await first.closeReason?.code == CloseReason.Code(4001))
        // Hypercorn reports 1006 to the app for every client close; its echo of our code shows it read it.
        let start = ContinuousClock.now
        await second.close(CloseReason(code: CloseReason.Code(4002), message: "bye"))
        #expect(await second.closeReason?.code == CloseReason.Code(4002))
        // Hypercorn never ends its side of the stream: the close must not wait for it (closeTimeout).
        #expect(ContinuousClock.now - start < .seconds(2))
        try await third.send("stats")
        #expect(try await third.receiveText() == "connections=1 http=2")
        await third.close()
        await client.close()
    }

    @Test("the request's headers and subprotocols go out in the extended CONNECT")
    func headersAndSubprotocol() async throws {
        let peer = try await HypercornPeer.start("h2")
        let client = try await http2Client(.required)
        let session = try await client.webSocketSession(peer.url) { request in
            request.subprotocols = ["chat.v2", "chat.v1"]
            request.headers.add("X-Trace", "abc123")
        }
        #expect(session.subprotocol == "chat.v2")
        try await session.send("headers")
        let headers = try await session.receiveText().split(separator: "\n").map(String.init)
        #expect(headers.contains("x-trace=abc123"))
        #expect(headers.contains("sec-websocket-version=13"))
        #expect(!headers.contains { $0.hasPrefix("sec-websocket-key=") })
        await session.close()
        await client.close()
    }

    @Test("a server whose ALPN offers only http/1.1: preferred falls back, required fails")
    func alpnFallback() async throws {
        let peer = try await HypercornPeer.start("http1")
        let preferred = try await http2Client(.preferred)
        let session = try await preferred.webSocketSession(peer.url)
        #expect(session.httpVersion == .http1_1)
        try await session.send("stats")
        #expect(try await session.receiveText() == "connections=1 http=1.1")
        await session.close()
        await preferred.close()

        let required = try await http2Client(.required)
        await #expect {
            _ = try await required.webSocketSession(peer.url)
        } throws: { error in
            guard let error = error as? WebSocketConnectionError, error.code == .unsupported else { return false }
            return error.message.contains("ALPN")
        }
        await required.close()
    }

    @Test("h2 without SETTINGS_ENABLE_CONNECT_PROTOCOL: preferred falls back, required fails")
    func noExtendedConnect() async throws {
        let peer = try await HypercornPeer.start("h2-no-connect")
        let preferred = try await http2Client(.preferred)
        let session = try await preferred.webSocketSession(peer.url)
        #expect(session.httpVersion == .http1_1)
        try await session.send("x")
        #expect(try await session.receiveText() == "x")
        await session.close()
        await preferred.close()

        let required = try await http2Client(.required)
        await #expect {
            _ = try await required.webSocketSession(peer.url)
        } throws: { error in
            guard let error = error as? WebSocketConnectionError, error.code == .unsupported else { return false }
            return error.message.contains("SETTINGS_ENABLE_CONNECT_PROTOCOL") || error.message.contains("extended CONNECT")
        }
        await required.close()
    }

    @Test("the capability follows the setting; HTTP/2 off sends no ALPN and uses HTTP/1.1")
    func capability() async throws {
        let peer = try await HypercornPeer.start("h2")
        let off = try await http2Client(.disabled)
        #expect(!off.isSupported(.webSocketOverHTTP2))
        #expect(off.unsupportedReason(.webSocketOverHTTP2)?.contains("http2") == true)
        let session = try await off.webSocketSession(peer.url)
        #expect(session.httpVersion == .http1_1)
        await session.close()
        await off.close()
        let on = try await http2Client(.preferred)
        #expect(on.isSupported(.webSocketOverHTTP2))
        await on.close()
        let required = try await http2Client(.required)
        await #expect {
            _ = try await required.webSocketSession("ws://127.0.0.1:\(peer.port)/")
        } throws: { error in
            (error as? WebSocketConnectionError)?.code == .unsupported
        }
        await required.close()
    }
}
