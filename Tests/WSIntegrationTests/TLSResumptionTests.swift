// TLS session resumption (WebSocketTLSConfiguration.resumesSessions) against a real TLS server, on every engine and
// in detail on the CIO engine. Tests/Fixtures/tls_resumption_ws_server.py tells the client per connection whether
// its handshake resumed a session (`ssl_object.session_reused`). All its ports share one server context (one set of
// ticket keys), so a ticket offered where it should not be (another port, another name) would be accepted and show
// up as resumed.
import EngineTestSupport
import Foundation
import Testing
import WSCore

@testable import WSEngineCIO

/// A running tls_resumption_ws_server.py; stopped when released.
private final class ResumptionPeer: Sendable {
    let process: LineReportingProcess
    /// Its listening ports, all sharing one server TLS context.
    let ports: [Int]

    private init(process: LineReportingProcess, ports: [Int]) {
        self.process = process
        self.ports = ports
    }

    static func start(_ arguments: [String] = []) async throws -> ResumptionPeer {
        let certificates = try await sharedCertificates()
        let process = try LineReportingProcess(
            executable: try TestEnvironment.python(),
            arguments: [
                TestEnvironment.fixturesDirectory.appendingPathComponent("tls_resumption_ws_server.py").path,
                "--cert", certificates.server.certificate, "--key", certificates.server.privateKey,
            ] + arguments)
        let ports = try await process.line(startingWith: "PORTS ").split(separator: " ").compactMap { Int($0) }
        return ResumptionPeer(process: process, ports: ports)
    }

    deinit { self.process.stop() }

    /// The TLS connections the server accepted (`CONNECTION <port> reused=<0|1>`, with `--http2`), once there are at
    /// least `count` (or 10 s passed: the lines come through a pipe, after the answers they precede may have); a
    /// connection the engine opened and dropped shows here.
    func connections(atLeast count: Int) async -> [String] {
        let deadline = ContinuousClock.now + .seconds(10)
        while true {
            let lines = self.process.output.filter { $0.hasPrefix("CONNECTION ") }
            if lines.count >= count || ContinuousClock.now >= deadline { return lines }
            try? await Task.sleep(for: .milliseconds(20))
        }
    }
}

/// A client on `engine` (trusting the test CA) whose sessions go straight to the peer.
private func makeClient(_ engine: any WebSocketEngine) -> WebSocketClient {
    WebSocketClient(engine: engine) { config in
        config.proxy = .direct
        config.install(WebSockets.self)
    }
}

/// A CIO engine trusting the test CA, with `resumesSessions` as given.
private func makeEngine(resumesSessions: Bool = true, http2: CIOEngine.HTTP2Mode = .disabled) async throws -> CIOEngine
{
    let certificates = try await sharedCertificates()
    return CIOEngine(
        configuration: .init(
            eventLoopCount: 2,
            tls: .init(trustRoots: .file(certificates.caCertificate), resumesSessions: resumesSessions),
            http2: .init(mode: http2)))
}

/// Opens a session to `url`, asks the peer about its TLS handshake, closes it; returns whether it was resumed.
private func resumed(_ client: WebSocketClient, _ url: String) async throws -> Bool {
    let session = try await client.webSocketSession(url)
    try await session.send("tls")
    let answer = try await nextMessage(session).readText()
    await session.close()
    guard answer.hasPrefix("reused=") else {
        throw TestPeerError(description: "the peer answered \(answer.debugDescription) to 'tls'")
    }
    return answer.hasPrefix("reused=1")
}

/// Opens one session after the other to each of `urls` on one client; returns, for each, whether it was resumed.
private func resumptions(_ engine: any WebSocketEngine, _ urls: [String]) async throws -> [Bool] {
    try await withClient(makeClient(engine)) { client in
        var results: [Bool] = []
        for url in urls { results.append(try await resumed(client, url)) }
        return results
    }
}

/// Opens a TLS connection to localhost:`port` on `engine` itself (no proxy, no ALPN, no upgrade) and drops it: what
/// it offered shows in the engine's resumption count, not in an answer.
private func connectDirectly(_ engine: CIOEngine, port: Int) async throws {
    let transport = try await engine.connect(
        to: EngineEndpoint(host: "localhost", port: port, secure: true), options: options())
    transport.abort()
}

@Suite("TLS session resumption")
struct TLSResumptionTests {
    @Test(
        "every engine: later connections to a server resume, and none with resumesSessions off",
        arguments: TestEngine.allCases, [true, false])
    func everyEngine(engine: TestEngine, resumesSessions: Bool) async throws {
        let peer = try await ResumptionPeer.start()
        let certificates = try await sharedCertificates()
        let tls = WebSocketTLSConfiguration(
            trustRoots: .file(certificates.caCertificate), resumesSessions: resumesSessions)
        let url = "wss://localhost:\(peer.ports[0])/"
        let results = try await resumptions(engine.make(tls: tls), [url, url, url])
        #expect(results == [false, resumesSessions, resumesSessions], "\(engine): \(results)")
    }

    @Test("a second connection to the same server resumes the first one's session")
    func secondConnectionResumes() async throws {
        let peer = try await ResumptionPeer.start()
        let engine = try await makeEngine()
        let url = "wss://localhost:\(peer.ports[0])/"
        // A full handshake, then resumed, then resumed again with a ticket the second connection brought.
        let results = try await resumptions(engine, [url, url, url])
        #expect(results == [false, true, true], "\(results)")
        #expect(engine.resumedTLSSessionCount == 2)
    }

    @Test("resumesSessions = false: nothing is kept, nothing offered")
    func resumptionOff() async throws {
        let peer = try await ResumptionPeer.start()
        let engine = try await makeEngine(resumesSessions: false)
        let url = "wss://localhost:\(peer.ports[0])/"
        let results = try await resumptions(engine, [url, url, url])
        #expect(results == [false, false, false], "\(results)")
        #expect(engine.resumedTLSSessionCount == 0)
    }

    @Test("a session is offered only to the port and name it came from")
    func keyedByPortAndName() async throws {
        let peer = try await ResumptionPeer.start(["--ports", "2"])
        try #require(peer.ports.count == 2)
        let engine = try await makeEngine()
        let first = "wss://localhost:\(peer.ports[0])/"
        // Same server context (it would accept the ticket), but another port, then another name for the same port
        // (the certificate covers both localhost and 127.0.0.1); then the first server again, whose tickets were
        // kept all along.
        let urls = [first, "wss://localhost:\(peer.ports[1])/", "wss://127.0.0.1:\(peer.ports[0])/", first]
        let results = try await resumptions(engine, urls)
        #expect(results == [false, false, false, true], "\(results)")
    }

    @Test("a TLS 1.3 ticket is used once")
    func ticketUsedOnce() async throws {
        // The server issues one ticket, on the first connection, and none after.
        let peer = try await ResumptionPeer.start(["--ticket-budget", "1"])
        let engine = try await makeEngine()
        let url = "wss://localhost:\(peer.ports[0])/"
        // Full handshake (one ticket), resumed with that ticket, then a full handshake: not offered again.
        let results = try await resumptions(engine, [url, url, url])
        #expect(results == [false, true, false], "\(results)")
    }

    @Test("a TLS 1.2 session is resumed again until it is replaced")
    func tls12SessionReused() async throws {
        let peer = try await ResumptionPeer.start(["--max-version", "TLSv1_2"])
        let engine = try await makeEngine()
        let url = "wss://localhost:\(peer.ports[0])/"
        // The third resumes the first connection's session again: a resumed TLS 1.2 handshake brings no new one.
        let results = try await resumptions(engine, [url, url, url])
        #expect(results == [false, true, true], "\(results)")
    }

    @Test("HTTP/2: a second connection to the origin resumes")
    func http2() async throws {
        // One stream per connection: a second concurrent session needs a second TLS connection.
        let peer = try await ResumptionPeer.start(["--http2", "--max-streams", "1"])
        let engine = try await makeEngine(http2: .preferred)
        let url = "wss://localhost:\(peer.ports[0])/"
        let answers = try await withClient(makeClient(engine)) { client -> [String] in
            let first = try await client.webSocketSession(url)
            try await first.send("tls")
            let firstAnswer = try await nextMessage(first).readText()
            let second = try await client.webSocketSession(url)
            try await second.send("tls")
            let secondAnswer = try await nextMessage(second).readText()
            await second.close()
            await first.close()
            return [firstAnswer, secondAnswer]
        }
        let connections = await peer.connections(atLeast: 2)
        #expect(answers.count == 2 && answers.allSatisfy { $0.hasSuffix("http=2") }, "\(answers)")
        #expect(answers.map { $0.hasPrefix("reused=1") } == [false, true], "\(answers); server: \(connections)")
        #expect(engine.resumedTLSSessionCount == 1, "server: \(connections)")
        // One TLS connection per session, the first a full handshake: no connection opened and dropped.
        #expect(connections.map { $0.hasSuffix("reused=1") } == [false, true], "\(connections)")
    }

    @Test("sessions from HTTP/2 connections are not offered on a connection with another ALPN offer")
    func keyedByALPN() async throws {
        let peer = try await ResumptionPeer.start(["--http2"])
        let engine = try await makeEngine(http2: .preferred)
        let answer = try await withClient(makeClient(engine)) { client -> String in
            let session = try await client.webSocketSession("wss://localhost:\(peer.ports[0])/")
            try await session.send("tls")
            let answer = try await nextMessage(session).readText()
            await session.close()
            // The tickets of that h2 connection are kept; a connection offering no ALPN (the engine's plain path,
            // as without HTTP/2) must not use them. Nothing is read on it, so the client's own count tells.
            try await connectDirectly(engine, port: peer.ports[0])
            return answer
        }
        let connections = await peer.connections(atLeast: 1)
        #expect(answer.hasSuffix("http=2"), "\(answer)")
        #expect(answer.hasPrefix("reused=0"), "\(answer); server: \(connections)")
        #expect(engine.resumedTLSSessionCount == 0, "server: \(connections)")
        // The h2 connection, with a full handshake (the direct one may or may not get that far before its abort).
        #expect(connections.first?.hasSuffix("reused=0") == true, "\(connections)")
    }

    @Test("through an https:// proxy both TLS connections resume, and a tunnelled session is not offered directly")
    func throughHTTPSProxy() async throws {
        let peer = try await ResumptionPeer.start(["--proxy"])
        let proxyPort = try await peer.process.line(startingWith: "PROXY ")
        let certificates = try await sharedCertificates()
        let engine = try await makeEngine()
        let proxy = try ProxyConfiguration(
            url: "https://localhost:\(proxyPort)", tls: .init(trustRoots: .file(certificates.caCertificate)))
        let client = WebSocketClient(engine: engine) { config in
            config.proxy = proxy
            config.install(WebSockets.self)
        }
        let url = "wss://localhost:\(peer.ports[0])/"
        let results = try await withClient(client) { client -> [Bool] in
            let results = [try await resumed(client, url), try await resumed(client, url)]
            // The same endpoint directly (no proxy): the tickets of the tunnelled connections are not its to use,
            // though this server would take them. Nothing is read on it, so the engine's own count tells.
            try await connectDirectly(engine, port: peer.ports[0])
            return results
        }
        #expect(results == [false, true], "the endpoint's TLS inside the tunnel: \(results)")
        let tunnels = peer.process.output.filter { $0.hasPrefix("TUNNEL ") }
        #expect(tunnels.map { $0.hasPrefix("TUNNEL reused=1") } == [false, true], "the proxy's TLS: \(tunnels)")
        #expect(engine.resumedTLSSessionCount == 1, "only the second tunnelled connection resumed")
    }
}
