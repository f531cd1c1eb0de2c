// WebSockets over HTTP/2 (RFC 8441) on the CIO engine against Hypercorn (Tests/Fixtures/h2_ws_server.py): sharing
// one connection, echo of text, binary and fragmented messages, deflate, close codes both ways, and the fallback to
// HTTP/1.1 (or the failure) when the server does not offer extended CONNECT.
import EngineTestSupport
import Foundation
import Logging
import SpawnSupport
import Synchronization
import Testing
import WSCore
import WSExtensions

@testable import WSEngineCIO

#if canImport(Glibc)
import Glibc
#endif

/// A running Tests/Fixtures/h2_ws_server.py (Hypercorn over TLS) or h2_hostile_server.py (a scripted `h2` server)
/// on 127.0.0.1.
final class HypercornPeer: Sendable {
    let port: Int
    /// The server's standard error (Hypercorn's error log when H2_SERVER_DEBUG is set).
    let logPath: String
    private let child: PortAnnouncingChild

    private init(script: String, mode: String, certificates: TestCertificates) throws {
        let python = try TestEnvironment.python()
        let script = TestEnvironment.fixturesDirectory.appendingPathComponent(script).path
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

    /// Starts Hypercorn in `mode` (`h2`, `http1`, `h2-no-connect`).
    static func start(_ mode: String) async throws -> HypercornPeer {
        let certificates = try await TestCertificates.load()
        return try await onDedicatedThread {
            try HypercornPeer(script: "h2_ws_server.py", mode: mode, certificates: certificates)
        }
    }

    /// Starts the scripted h2 server in `mode` (`script`, `huge-headers`, `continuation`, `flood`).
    static func hostile(_ mode: String) async throws -> HypercornPeer {
        let certificates = try await TestCertificates.load()
        return try await onDedicatedThread {
            try HypercornPeer(script: "h2_hostile_server.py", mode: mode, certificates: certificates)
        }
    }

    /// `wss://localhost:PORT/`.
    var url: String { "wss://localhost:\(self.port)/" }
}

/// A client on a CIO engine with HTTP/2 `mode`, trusting the test CA.
private func http2Client(
    _ mode: CIOEngine.HTTP2Mode, deflate: Bool = false, idleTimeout: Duration = .seconds(2),
    maxIncomingBufferMessages: Int = 64, proxy: ProxyConfiguration? = nil, log: CapturingLogHandler.Store? = nil
) async throws -> WebSocketClient {
    let certificates = try await TestCertificates.load()
    let engine = CIOEngine(
        configuration: .init(
            eventLoopCount: 1, tls: .init(trustRoots: .file(certificates.caCertificate)),
            http2: .init(mode: mode, idleTimeout: idleTimeout)))
    return try WebSocketClient(engine: engine) { config in
        if let proxy { config.proxy = proxy }
        if let log {
            var logger = Logger(label: "ws.http2-test") { _ in CapturingLogHandler(store: log) }
            logger.logLevel = .debug
            config.logger = logger
        }
        try config.install(WebSockets.self) { ws in
            ws.maxIncomingBufferMessages = maxIncomingBufferMessages
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

    @Test("a session that does not read does not stall the others on the connection")
    func slowSessionDoesNotStallOthers() async throws {
        let peer = try await HypercornPeer.start("h2")
        // The slow session's queue takes 4 messages; the rest waits in its stream window, then at the server.
        let client = try await http2Client(.required, maxIncomingBufferMessages: 4)
        let slow = try await client.webSocketSession(peer.url)
        let fast = try await client.webSocketSession(peer.url)
        // 4 MiB echoed to a session nobody reads: far beyond its stream window and the session's buffer limits.
        let chunk = [UInt8](repeating: 7, count: 64 << 10)
        for _ in 0..<64 { try await slow.send(chunk) }
        let start = ContinuousClock.now
        let answered = Atomic(0)
        let watchdog = Task {
            try await Task.sleep(for: .seconds(5))
            if answered.load(ordering: .relaxed) < 20 { await fast.close(CloseReason(code: .goingAway)) }
        }
        for index in 0..<20 {
            try await fast.send("fast \(index)")
            #expect(try await fast.receiveText() == "fast \(index)")
            answered.add(1, ordering: .relaxed)
        }
        watchdog.cancel()
        #expect(ContinuousClock.now - start < .seconds(5))
        var received = 0
        while received < 64 {
            #expect(try await slow.receiveBinary() == chunk)
            received += 1
        }
        await slow.close()
        await fast.close()
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
        let log = CapturingLogHandler.Store()
        let preferred = try await http2Client(.preferred, log: log)
        let session = try await preferred.webSocketSession(peer.url)
        #expect(session.httpVersion == .http1_1)
        #expect(
            log.all.contains { $0.contains("WebSocket over HTTP/1.1: the server selected 'http/1.1' with ALPN") },
            "\(log.all)")
        try await session.send("stats")
        #expect(try await session.receiveText() == "connections=1 http=1.1")
        await session.close()
        await preferred.close()

        let required = try await http2Client(.required)
        await #expect {
            _ = try await required.webSocketSession(peer.url)
        } throws: { error in
            guard let error = error as? WebSocketError, error.code == .unsupported else { return false }
            return error.message.contains("ALPN")
        }
        await required.close()
    }

    @Test("h2 without SETTINGS_ENABLE_CONNECT_PROTOCOL: preferred falls back, required fails")
    func noExtendedConnect() async throws {
        let peer = try await HypercornPeer.start("h2-no-connect")
        let log = CapturingLogHandler.Store()
        let preferred = try await http2Client(.preferred, log: log)
        let session = try await preferred.webSocketSession(peer.url)
        #expect(session.httpVersion == .http1_1)
        #expect(
            log.all.contains {
                $0.contains("WebSocket over HTTP/1.1: the server's HTTP/2 SETTINGS do not enable extended CONNECT")
            }, "\(log.all)")
        try await session.send("x")
        #expect(try await session.receiveText() == "x")
        await session.close()
        await preferred.close()

        let required = try await http2Client(.required)
        await #expect {
            _ = try await required.webSocketSession(peer.url)
        } throws: { error in
            guard let error = error as? WebSocketError, error.code == .unsupported else { return false }
            return error.message.contains("SETTINGS_ENABLE_CONNECT_PROTOCOL")
                || error.message.contains("extended CONNECT")
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
            (error as? WebSocketError)?.code == .unsupported
        }
        await required.close()
    }
}

@Suite("WebSockets over HTTP/2 through proxies", .serialized, .timeLimit(.minutes(2)))
struct HTTP2ProxyTests {
    /// Opens `count` sessions to `peer` on `client`, checks they run over HTTP/2 and echo, and returns the server's
    /// `stats` answer.
    private func sessions(_ count: Int, _ client: WebSocketClient, _ peer: HypercornPeer) async throws -> String {
        var sessions: [WebSocketSession] = []
        for _ in 0..<count { sessions.append(try await client.webSocketSession(peer.url)) }
        #expect(sessions.allSatisfy { $0.httpVersion == .http2 })
        for (index, session) in sessions.enumerated() {
            try await session.send("via proxy \(index)")
            #expect(try await session.receiveText() == "via proxy \(index)")
        }
        try await sessions[0].send("stats")
        let stats = try await sessions[0].receiveText()
        for session in sessions { await session.close() }
        return stats
    }

    @Test("an http:// proxy (tinyproxy): ALPN is end to end, 5 sessions share one tunnel and one HTTP/2 connection")
    func connectTunnel() async throws {
        let peer = try await HypercornPeer.start("h2")
        let proxy = try await ProxyDaemon.tinyproxy(connectPorts: [peer.port])
        let client = try await http2Client(
            .required, proxy: try ProxyConfiguration(url: "http://127.0.0.1:\(proxy.port)"))
        #expect(try await self.sessions(5, client, peer) == "connections=1 http=2")
        let connects = proxy.log.components(separatedBy: "CONNECT localhost:\(peer.port)").count - 1
        #expect(connects == 1, "\(proxy.log)")
        await client.close()
    }

    @Test("an https:// proxy (tinyproxy behind stunnel4): HTTP/2 inside the endpoint's TLS inside the proxy's TLS")
    func tlsInTLS() async throws {
        guard FileManager.default.isExecutableFile(atPath: "/usr/bin/stunnel4") else { return }
        let certificates = try await TestCertificates.load()
        let peer = try await HypercornPeer.start("h2")
        let tiny = try await ProxyDaemon.tinyproxy(connectPorts: [peer.port])
        let stunnel = try await ProxyDaemon.stunnel(
            targetPort: tiny.port,
            certificate: (certificates.server.certificate, certificates.server.privateKey))
        let proxy = try ProxyConfiguration(
            url: "https://localhost:\(stunnel.port)",
            tls: WebSocketTLSConfiguration(trustRoots: .file(certificates.caCertificate)))
        let client = try await http2Client(.required, proxy: proxy)
        #expect(try await self.sessions(3, client, peer) == "connections=1 http=2")
        #expect(tiny.log.components(separatedBy: "CONNECT localhost:\(peer.port)").count - 1 == 1, "\(tiny.log)")
        await client.close()
    }

    @Test("sessions through a proxy and direct ones do not share a connection")
    func proxiedAndDirectApart() async throws {
        let peer = try await HypercornPeer.start("h2")
        let proxy = try await ProxyDaemon.tinyproxy(connectPorts: [peer.port])
        let certificates = try await TestCertificates.load()
        let engine = CIOEngine(
            configuration: .init(
                eventLoopCount: 1, tls: .init(trustRoots: .file(certificates.caCertificate)),
                http2: .init(mode: .required)))
        let viaProxy = try ProxyConfiguration(url: "http://127.0.0.1:\(proxy.port)")
        let direct = WebSocketClient(engine: engine) { $0.proxy = .direct }
        let proxied = WebSocketClient(engine: engine) { $0.proxy = viaProxy }
        let first = try await direct.webSocketSession(peer.url)
        let second = try await proxied.webSocketSession(peer.url)
        #expect(first.httpVersion == .http2 && second.httpVersion == .http2)
        try await second.send("stats")
        #expect(try await second.receiveText() == "connections=2 http=2")
        #expect(engine.http2Pool.connectionCount("localhost:\(peer.port)") == 2)
        await first.close()
        await second.close()
        await direct.close()  // Shuts the shared engine down.
    }
}

@Suite("WebSockets over HTTP/2: hostile and failing servers", .serialized, .timeLimit(.minutes(2)))
struct HostileHTTP2Tests {
    @Test("RST_STREAM on one stream ends that session with 1006 and leaves the others open")
    func streamReset() async throws {
        let peer = try await HypercornPeer.hostile("script")
        let client = try await http2Client(.required)
        let victim = try await client.webSocketSession(peer.url)
        let bystander = try await client.webSocketSession(peer.url)
        try await victim.send("rst")
        await #expect {
            _ = try await victim.receiveText()
        } throws: { error in
            (error as? WebSocketError)?.code == .connectionLost && "\(error)".contains("RST_STREAM")
        }
        #expect(await victim.closeReason?.code == .abnormalClosure)
        try await bystander.send("still here")
        #expect(try await bystander.receiveText() == "still here")
        try await bystander.send("stats")
        #expect(try await bystander.receiveText() == "connections=1")
        await bystander.close()
        await client.close()
    }

    @Test("past the server's MAX_CONCURRENT_STREAMS a second connection opens; an idle one closes")
    func streamLimit() async throws {
        let peer = try await HypercornPeer.hostile("limit2")
        let engine = CIOEngine(
            configuration: .init(
                eventLoopCount: 1, tls: .init(trustRoots: .file(try await TestCertificates.load().caCertificate)),
                http2: .init(mode: .required, idleTimeout: .milliseconds(100))))
        let client = WebSocketClient(engine: engine)
        var sessions: [WebSocketSession] = []
        for _ in 0..<3 { sessions.append(try await client.webSocketSession(peer.url)) }
        try await sessions[2].send("stats")
        #expect(try await sessions[2].receiveText() == "connections=2")
        try await sessions[0].send("stats")
        #expect(try await sessions[0].receiveText() == "connections=2")
        #expect(engine.http2Pool.connectionCount("localhost:\(peer.port)") == 2)
        for session in sessions { await session.close() }
        // Both connections close once idle (GOAWAY, then the TCP close); the pool forgets them.
        let deadline = ContinuousClock.now + .seconds(5)
        while engine.http2Pool.connectionCount("localhost:\(peer.port)") > 0 && ContinuousClock.now < deadline {
            try await Task.sleep(for: .milliseconds(20))
        }
        #expect(engine.http2Pool.connectionCount("localhost:\(peer.port)") == 0)
        await client.close()
    }

    @Test("a broken connection ends every session on it with a clear error; a new session gets a new connection")
    func brokenConnection() async throws {
        let peer = try await HypercornPeer.hostile("script")
        let client = try await http2Client(.required)
        let first = try await client.webSocketSession(peer.url)
        let second = try await client.webSocketSession(peer.url)
        try await first.send("drop")
        for session in [first, second] {
            await #expect {
                _ = try await session.receiveText()
            } throws: { error in
                (error as? WebSocketError)?.code == .connectionLost && "\(error)".contains("HTTP/2 connection")
            }
            #expect(await session.closeReason?.code == .abnormalClosure)
        }
        let third = try await client.webSocketSession(peer.url)
        try await third.send("stats")
        #expect(try await third.receiveText() == "connections=2")
        await third.close()
        await client.close()
    }

    @Test("a non-2xx answer to the extended CONNECT is upgradeRejected with the status; the connection stays")
    func rejected() async throws {
        let peer = try await HypercornPeer.hostile("reject")
        let client = try await http2Client(.required)
        await #expect {
            _ = try await client.webSocketSession(peer.url)
        } throws: { error in
            guard let error = error as? WebSocketError else { return false }
            return error.code == .upgradeRejected && error.status == 403 && error.headers["x-reason"] == "no"
        }
        let next = try await client.webSocketSession(peer.url)
        try await next.send("stats")
        #expect(try await next.receiveText() == "connections=1")
        await next.close()
        await client.close()
    }

    @Test("a stream the server refuses (REFUSED_STREAM) is opened again on the same connection")
    func refusedStreamRetried() async throws {
        let peer = try await HypercornPeer.hostile("refuse")
        let client = try await http2Client(.required)
        let session = try await client.webSocketSession(peer.url)
        #expect(session.httpVersion == .http2)
        try await session.send("stats")
        #expect(try await session.receiveText() == "connections=1")
        await session.close()
        await client.close()
    }

    @Test("a GOAWAY that leaves the opening stream unprocessed: the session opens on a new connection")
    func goAwayBeforeProcessingRetried() async throws {
        let peer = try await HypercornPeer.hostile("goaway-first")
        let client = try await http2Client(.required)
        let session = try await client.webSocketSession(peer.url)
        #expect(session.httpVersion == .http2)
        try await session.send("stats")
        #expect(try await session.receiveText() == "connections=2")
        await session.close()
        await client.close()
    }

    @Test("a new connection that takes no stream (GOAWAY with its SETTINGS): the session opens on the next one")
    func goAwayBeforeFirstStream() async throws {
        let peer = try await HypercornPeer.hostile("goaway-settings-first")
        let engine = CIOEngine(
            configuration: .init(
                eventLoopCount: 1, tls: .init(trustRoots: .file(try await TestCertificates.load().caCertificate)),
                http2: .init(mode: .required)))
        let client = WebSocketClient(engine: engine)
        let session = try await client.webSocketSession(peer.url)
        #expect(session.httpVersion == .http2)
        try await session.send("stats")
        #expect(try await session.receiveText() == "connections=2")
        // The first connection never joins the pool (its retirement may have passed the pool before it was ready).
        #expect(engine.http2Pool.connectionCount("localhost:\(peer.port)") == 1)
        await session.close()
        await client.close()
    }

    @Test("new connections that never take a stream: the opening gives up after the retries, not endlessly")
    func goAwayBeforeFirstStreamEveryTime() async throws {
        let peer = try await HypercornPeer.hostile("goaway-settings")
        let client = try await http2Client(.required)
        // Bounded here too, so that an opening that tries for ever fails this test rather than hanging the suite.
        let outcome = await withTaskGroup(of: (any Error)??.self) { group in
            group.addTask {
                do {
                    try await client.webSocketSession(peer.url).close()
                    return .some(nil)
                } catch {
                    return error
                }
            }
            group.addTask {
                try? await Task.sleep(for: .seconds(30))
                return nil
            }
            let first = await group.next() ?? nil
            group.cancelAll()
            return first
        }
        let ended = try #require(outcome, "the opening did not end within 30 s")
        let error = try #require(
            ended as? WebSocketError, "the opening succeeded or failed otherwise: \(String(describing: ended))")
        #expect(error.code == .network, "\(error)")
        let accepted = try String(contentsOfFile: peer.logPath, encoding: .utf8).split(separator: "\n")
            .filter { $0.hasPrefix("connection ") }
        // The first connection, then one per retry.
        #expect(accepted.count == 1 + CIOEngine.http2Retries, "\(accepted)")
        await client.close()
    }

    @Test("a client close ends the stream on the DATA frame that carries the close frame")
    func closeCarriesEndStream() async throws {
        let peer = try await HypercornPeer.hostile("script")
        let client = try await http2Client(.required)
        let closing = try await client.webSocketSession(peer.url)
        let observer = try await client.webSocketSession(peer.url)
        await closing.close(CloseReason(code: CloseReason.Code(4002)))
        #expect(await closing.closeReason?.code == CloseReason.Code(4002))
        try await observer.send("lastclose")
        #expect(try await observer.receiveText() == "4002 with END_STREAM")
        await observer.close()
        await client.close()
    }

    @Test("GOAWAY: open sessions go on, a new session gets a new connection")
    func goAway() async throws {
        let peer = try await HypercornPeer.hostile("script")
        let client = try await http2Client(.required)
        let first = try await client.webSocketSession(peer.url)
        let second = try await client.webSocketSession(peer.url)
        try await first.send("goaway")
        #expect(try await first.receiveText() == "goaway-sent")
        try await second.send("after goaway")
        #expect(try await second.receiveText() == "after goaway")
        let third = try await client.webSocketSession(peer.url)
        try await third.send("stats")
        #expect(try await third.receiveText() == "connections=2")
        try await first.send("first still open")
        #expect(try await first.receiveText() == "first still open")
        for session in [first, second, third] { await session.close() }
        await client.close()
    }

    @Test("a 1 MiB response header block ends the connection with a clear error, quickly")
    func hugeHeaders() async throws {
        let peer = try await HypercornPeer.hostile("huge-headers")
        let client = try await http2Client(.required)
        let start = ContinuousClock.now
        await #expect {
            _ = try await client.webSocketSession(peer.url)
        } throws: { error in
            (error as? WebSocketError)?.message.contains("header block larger than") == true
        }
        #expect(ContinuousClock.now - start < .seconds(5))
        await client.close()
    }

    @Test("an endless CONTINUATION sequence ends the connection with a clear error, quickly")
    func continuationFlood() async throws {
        let peer = try await HypercornPeer.hostile("continuation")
        let client = try await http2Client(.required)
        let start = ContinuousClock.now
        await #expect {
            _ = try await client.webSocketSession(peer.url)
        } throws: { error in
            guard let error = error as? WebSocketError else { return false }
            return error.code == .network && error.message.contains("HTTP/2")
        }
        #expect(ContinuousClock.now - start < .seconds(5))
        await client.close()
    }

    @Test("DATA beyond the stream window is a flow-control error that ends that session only")
    func flowControlViolation() async throws {
        let peer = try await HypercornPeer.hostile("flood")
        // The flooded session's queue takes 4 messages: then it stops reading, so its stream window is not given
        // back, and the 1.1 MB the server sends regardless must overflow it (whatever the timing).
        let client = try await http2Client(.required, maxIncomingBufferMessages: 4)
        let session = try await client.webSocketSession(peer.url)
        let observer = try await client.webSocketSession(peer.url)
        // The server answers once the client reset a stream of the connection: the flooded one.
        try await observer.send("waitreset")
        #expect(try await observer.receiveText() == "reset FLOW_CONTROL_ERROR")
        await #expect {
            while true { _ = try await session.receiveMessage() }
        } throws: { error in
            "\(error)".contains("FLOW_CONTROL_ERROR")
        }
        #expect(await session.closeReason?.code == .abnormalClosure)
        try await observer.send("still here")
        #expect(try await observer.receiveText() == "still here")
        await observer.close()
        await client.close()
    }
}
