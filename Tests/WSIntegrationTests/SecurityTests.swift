// Security checks (RELIABILITY.md section 3.3, rows S1–S3 and S5) on both engines: masks and keys from a CSPRNG as
// seen on the wire, the accept check, TLS negatives the TLS suite does not cover (an untrusted CA, an old protocol
// version, the opt-out) and SNI, and credentials that never reach a log. Already covered elsewhere: a wrong,
// missing or second Sec-WebSocket-Accept (BrokenHandshakeTests), a self-signed certificate and its opt-out, a
// host-name mismatch and an expired certificate refused (TLSTests).
import Foundation
import Logging
import Synchronization
import Testing
import WSCore
import WSEngineCIO
import WSEngineCurl
import WSTesting

#if canImport(Glibc)
import Glibc
#endif

@Suite("Security: masks, keys, TLS and logs (S1–S3, S5)")
struct SecurityTests {
    // MARK: S1 masking keys

    @Test(
        "1200 client frames: every one masked with a fresh random key, payloads unmask exactly",
        arguments: TestEngine.allCases)
    func maskingKeys(engine: TestEngine) async throws {
        // What the client sends, in order: messages of many sizes (empty included) and some pings.
        var expected: [(opcode: UInt8, payload: [UInt8])] = []
        for i in 0..<1100 {
            let size = [0, 1, 3, 4, 5, 125, 126, 200, 1000][i % 9]
            let payload = (0..<size).map { UInt8(truncatingIfNeeded: $0 &* 31 &+ i) }
            expected.append(
                (i % 2 == 0 ? 0x2 : 0x1, i % 2 == 0 ? payload : Array(String(repeating: "m", count: size).utf8)))
        }
        for i in 0..<100 { expected.append((0x9, Array("ping \(i)".utf8))) }
        let frames = Mutex<[ClientFrame]>([])
        let server = try ScriptedServer { connection in
            try connection.acceptUpgrade()
            while let frame = try connection.readFrame() {
                frames.withLock { $0.append(frame) }
                if frame.opcode == 0x9 { try connection.write(rawFrame(0x8A, frame.payload)) }
                if frame.opcode == 0x8 {
                    try connection.write(rawFrame(0x88, [0x03, 0xE8]))
                    return
                }
            }
        }
        defer { server.stop() }
        try await withClient(engine.client()) { client in
            let session = try await client.webSocketSession(server.url)
            for (opcode, payload) in expected {
                switch opcode {
                case 0x1: try await session.send(String(decoding: payload, as: UTF8.self))
                case 0x2: try await session.send(payload)
                default: try await session.send(Frame.ping(payload))
                }
            }
            await session.close()
            #expect(await session.closeReason?.code == .normal)
        }
        #expect(await server.waitUntilFinished())
        let captured = frames.withLock { $0 }
        try #require(
            captured.count == expected.count + 1,
            "\(captured.count) frames captured; script errors \(server.scriptErrors)")
        for (index, (frame, sent)) in zip(captured, expected).enumerated() {
            #expect(frame.masked, "frame \(index) is not masked")
            #expect(
                frame.opcode == sent.opcode && frame.payload == sent.payload,
                "frame \(index) does not unmask to what was sent")
            if frame.payload.count >= 4 && frame.key32 != 0 {
                #expect(frame.wirePayload != frame.payload, "frame \(index): the payload went out unmasked")
            }
        }
        #expect(captured.last?.opcode == 0x8 && captured.last?.masked == true)
        let keys = captured.map(\.key32)
        let duplicates = keys.count - Set(keys).count
        // 1201 draws from 2^32: the chance of even one repeat is about 1.7e-4.
        #expect(duplicates <= 1, "\(duplicates) repeated masking keys in \(keys.count) frames")
        #expect(!keys.contains(0), "an all-zero masking key")
        let steps = zip(keys, keys.dropFirst()).map { $1 &- $0 }
        let commonestStep = Dictionary(grouping: steps, by: { $0 }).values.map(\.count).max() ?? 0
        #expect(
            commonestStep <= 2, "masking keys follow a pattern: one step between keys repeats \(commonestStep) times")
        for position in 0..<4 {
            let distinct = Set(captured.map { $0.maskingKey[position] }).count
            // 1201 uniform bytes cover about 254 of 256 values.
            #expect(distinct >= 200, "key byte \(position) takes only \(distinct) values")
        }
        let ones = keys.reduce(0) { $0 + $1.nonzeroBitCount }
        let share = Double(ones) / Double(keys.count * 32)
        #expect(share > 0.47 && share < 0.53, "\(share) of the key bits are set")
    }

    // MARK: S3 Sec-WebSocket-Key

    @Test("Sec-WebSocket-Key: 16 random bytes, fresh for each of 100 connections", arguments: TestEngine.allCases)
    func handshakeKeys(engine: TestEngine) async throws {
        let server = try WebSocketTestServer.start()
        defer { server.stop() }
        try await withClient(engine.client()) { client in
            for _ in 0..<100 {
                let session = try await client.webSocketSession(server.url)
                await session.close()
            }
        }
        let keys = server.requests.compactMap { $0.headers["Sec-WebSocket-Key"] }
        #expect(keys.count == 100)
        #expect(Set(keys).count == keys.count, "\(keys.count - Set(keys).count) repeated keys")
        let decoded = keys.compactMap { Data(base64Encoded: $0) }
        #expect(decoded.count == keys.count && decoded.allSatisfy { $0.count == 16 }, "every key is base64 of 16 bytes")
        #expect(keys.allSatisfy { $0.utf8.count == 24 })
        #expect(!decoded.contains(Data(count: 16)))
        let prefixes = Set(decoded.map { $0.prefix(8) })
        #expect(prefixes.count == decoded.count, "no shared halves (a counter or a reused seed)")
    }

    @Test(
        "Sec-WebSocket-Accept must appear exactly once, even twice with the right value",
        arguments: TestEngine.allCases, [true, false])
    func acceptExactlyOnce(engine: TestEngine, separateLines: Bool) async throws {
        let server = try RawHandshakeServer { key in
            let accept = RawHandshakeServer.accept(for: key)
            let headers =
                separateLines
                ? "Sec-WebSocket-Accept: \(accept)\r\nSec-WebSocket-Accept: \(accept)\r\n"
                : "Sec-WebSocket-Accept: \(accept), \(accept)\r\n"
            return Array(
                "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\(headers)\r\n".utf8)
        }
        defer { server.stop() }
        try await withClient(engine.client()) { client in
            let error = await #expect(throws: WebSocketError.self) {
                _ = try await client.webSocketSession("ws://127.0.0.1:\(server.port)/")
            }
            #expect(error?.code == .invalidHandshake, "\(String(describing: error))")
        }
    }

    // MARK: S2 TLS

    /// A certificate the client must refuse unless certificate verification is explicitly turned off.
    enum BadCertificate: String, Sendable, CaseIterable, CustomStringConvertible {
        case untrustedCA = "a CA the client does not trust (system store only)"
        case wrongHost = "a certificate for another host name"
        case expired = "an expired certificate"
        var description: String { self.rawValue }
    }

    @Test(
        "a bad certificate is refused; only dangerouslyDisableCertificateVerification accepts it",
        arguments: TestEngine.allCases, BadCertificate.allCases)
    func badCertificate(engine: TestEngine, certificate: BadCertificate) async throws {
        let certificates = try await sharedCertificates()
        let identity: TestCertificates.Identity =
            switch certificate {
            case .untrustedCA: certificates.server
            case .wrongHost: certificates.wrongHost
            case .expired: certificates.expired
            }
        let peer = try await PythonPeer.start(tls: .init(identity))
        defer { peer.stop() }
        let url = peer.url(path: "/echo", host: "localhost")
        let trusted: String? = certificate == .untrustedCA ? nil : certificates.caCertificate
        try await withClient(engine.client(trustedCA: trusted)) { client in
            let error = await #expect(throws: WebSocketError.self, "\(certificate)") {
                _ = try await client.webSocketSession(url)
            }
            #expect(error?.code == .tlsFailure, "\(certificate): \(String(describing: error))")
            #expect(
                error?.message.lowercased().contains("certificate") == true,
                "the message says why: \(String(describing: error))")
        }
        try await withClient(engine.client(disableVerification: true)) { client in
            let session = try await client.webSocketSession(url)
            try await session.send("accepted only by the opt-out")
            #expect(try await nextMessage(session).readText() == "accepted only by the opt-out")
            await session.close()
        }
    }

    @Test(
        "a TLS 1.0 or 1.1-only server is refused, even with certificate verification off",
        arguments: TestEngine.allCases, ["TLSv1", "TLSv1_1"])
    func oldProtocolVersion(engine: TestEngine, version: String) async throws {
        let certificates = try await sharedCertificates()
        let probe = try LineReportingProcess(
            executable: try TestEnvironment.python(),
            arguments: [
                TestEnvironment.fixturesDirectory.appendingPathComponent("tls_probe_server.py").path,
                "--cert", certificates.server.certificate, "--key", certificates.server.privateKey, "--max-version",
                version,
            ])
        defer { probe.stop() }
        let port = try await probe.line(startingWith: "PORT ")
        let selfTest = try await probe.line(startingWith: "SELFTEST ")
        try #require(selfTest.hasPrefix("TLSv1"), "the probe server could not serve \(version): \(selfTest)")
        for disableVerification in [false, true] {
            let client = engine.client(trustedCA: certificates.caCertificate, disableVerification: disableVerification)
            try await withClient(client) { client in
                let error = await #expect(
                    throws: WebSocketError.self, "\(version), verification off: \(disableVerification)"
                ) {
                    _ = try await client.webSocketSession("wss://localhost:\(port)/") {
                        $0.timeout.openTimeout = .seconds(20)
                    }
                }
                #expect(error?.code == .tlsFailure, "\(version): \(String(describing: error))")
            }
        }
        #expect(!probe.output.contains { $0.hasPrefix("CONNECTED") }, "no session may open over \(version)")
    }

    @Test("SNI carries the host name, and is left out for an IP address", arguments: TestEngine.allCases)
    func serverNameIndication(engine: TestEngine) async throws {
        let certificates = try await sharedCertificates()
        let probe = try LineReportingProcess(
            executable: try TestEnvironment.python(),
            arguments: [
                TestEnvironment.fixturesDirectory.appendingPathComponent("tls_probe_server.py").path,
                "--cert", certificates.server.certificate, "--key", certificates.server.privateKey,
            ])
        defer { probe.stop() }
        let port = try await probe.line(startingWith: "PORT ")
        try await withClient(engine.client(trustedCA: certificates.caCertificate)) { client in
            for host in ["localhost", "127.0.0.1"] {
                let session = try await client.webSocketSession("wss://\(host):\(port)/")
                try await session.send("sni")
                #expect(try await nextMessage(session).readText() == "sni")
                await session.close()
            }
        }
        let names = probe.output.filter { $0.hasPrefix("SNI ") }.map { String($0.dropFirst(4)) }
        #expect(names == ["localhost", "-"], "server names seen: \(names)")
        let versions = probe.output.filter { $0.hasPrefix("CONNECTED ") }
        #expect(
            versions.allSatisfy { $0 == "CONNECTED TLSv1.3" || $0 == "CONNECTED TLSv1.2" } && versions.count == 2,
            "\(versions)")
    }

    // MARK: S5 credentials never logged

    /// Secrets that go out in the handshake and must never be logged.
    static let secrets = [
        "s3cr3t-pass", "tok-SECRET-1", "cookie-SECRET-2", "proxy-SECRET-3",
        Data("alice:s3cr3t-pass".utf8).base64EncodedString(),
    ]

    /// A client on a fresh `engine` whose logger keeps everything at trace level (libcurl's verbose trace included).
    static func loggingClient(_ engine: TestEngine, store: CapturingLogHandler.Store) -> WebSocketClient {
        let webSocketEngine: any WebSocketEngine =
            switch engine {
            case .cio: CIOEngine()
            case .curl: CurlEngine(configuration: .init(verbose: true))
            }
        return WebSocketClient(engine: webSocketEngine) { config in
            var logger = Logger(label: "ws.security-test") { _ in CapturingLogHandler(store: store) }
            logger.logLevel = .trace
            config.logger = logger
            config.install(WebSockets.self)
        }
    }

    @Test(
        "Authorization, Cookie and URL userinfo never reach a trace-level log, in success or failure",
        arguments: TestEngine.allCases)
    func credentialsNotLogged(engine: TestEngine) async throws {
        let store = CapturingLogHandler.Store()
        let server = try WebSocketTestServer.start()
        defer { server.stop() }
        var refusing = WebSocketTestServer.Configuration()
        refusing.handshake = .reject(status: 401, body: "who are you?")
        let refuser = try WebSocketTestServer.start(refusing)
        defer { refuser.stop() }
        var lying = WebSocketTestServer.Configuration()
        lying.handshake = .wrongAccept
        let liar = try WebSocketTestServer.start(lying)
        defer { liar.stop() }
        let headers: @Sendable (inout WebSocketRequestBuilder) -> Void = { request in
            request.headers["Cookie"] = "session=cookie-SECRET-2"
            request.headers["Proxy-Authorization"] = "Basic proxy-SECRET-3"
        }
        var errors: [String] = []
        try await withClient(Self.loggingClient(engine, store: store)) { client in
            // Userinfo becomes Authorization: Basic.
            let session = try await client.webSocketSession("ws://alice:s3cr3t-pass@127.0.0.1:\(server.port)/", headers)
            try await session.send("hello")
            #expect(try await nextMessage(session).readText() == "hello")
            await session.close()
            // A bearer token, refused with 401; then a handshake that fails validation.
            for port in [refuser.port, liar.port] {
                do {
                    _ = try await client.webSocketSession("ws://127.0.0.1:\(port)/") { request in
                        headers(&request)
                        request.headers["Authorization"] = "Bearer tok-SECRET-1"
                    }
                    Issue.record("the handshake should fail")
                } catch {
                    errors.append(String(describing: error))
                }
            }
        }
        // The secrets did go out...
        let sent = server.requests.first?.headers
        #expect(sent?["Authorization"] == "Basic \(Self.secrets[4])")
        #expect(sent?["Cookie"] == "session=cookie-SECRET-2")
        #expect(refuser.requests.first?.headers["Authorization"] == "Bearer tok-SECRET-1")
        // ...and were logged nowhere, though the log is busy.
        let lines = store.all
        #expect(lines.count >= 3, "the trace-level log should not be empty: \(lines)")
        for secret in Self.secrets {
            let leaks = lines.filter { $0.contains(secret) }
            #expect(leaks.isEmpty, "'\(secret)' was logged: \(leaks)")
            #expect(!errors.contains { $0.contains(secret) }, "'\(secret)' is in an error description: \(errors)")
        }
    }
}
