// wss:// against the Python server with certificates made by openssl at test time.
import Testing
import WSCore

@Suite("TLS")
struct TLSTests {
    @Test("wss works when the test CA is trusted", arguments: TestEngine.allCases)
    func trusted(engine: TestEngine) async throws {
        let certs = try await TestCertificates.load()
        let peer = try await PythonPeer.start(tls: .init(certs.server))
        defer { peer.stop() }
        try await withClient(engine.client(trustedCA: certs.caCertificate)) { client in
            try await client.webSocket(peer.url(path: "/echo", host: "localhost")) { session in
                try await session.send("over TLS")
                #expect(try await nextMessage(session).readText() == "over TLS")
                let big = [UInt8](repeating: 0x5A, count: 300_000)
                try await session.send(big)
                #expect(try await nextMessage(session).data == big)
            }
            // The seed's wss(host, port, path) form.
            try await client.wss(host: "localhost", port: peer.port, path: "/echo") { session in
                try await session.send("wss alias")
                #expect(try await nextMessage(session).readText() == "wss alias")
            }
        }
    }

    @Test("an untrusted certificate is rejected", arguments: TestEngine.allCases)
    func untrusted(engine: TestEngine) async throws {
        let certs = try await TestCertificates.load()
        let peer = try await PythonPeer.start(tls: .init(certs.selfSigned))
        defer { peer.stop() }
        try await withClient(engine.client(trustedCA: certs.caCertificate)) { client in
            do {
                _ = try await client.webSocketSession(peer.url(path: "/echo", host: "localhost"))
                Issue.record("a self-signed certificate must not be trusted")
            } catch let error as WebSocketError {
                #expect(error.code == .tlsFailure)
                #expect(error.message.lowercased().contains("certificate"))
            }
        }
        // Only the loudly named opt-out accepts it.
        try await withClient(engine.client(disableVerification: true)) { client in
            try await client.webSocket(peer.url(path: "/echo", host: "localhost")) { session in
                try await session.send("insecure")
                #expect(try await nextMessage(session).readText() == "insecure")
            }
        }
    }

    @Test("a certificate for another host name is rejected", arguments: TestEngine.allCases)
    func wrongHost(engine: TestEngine) async throws {
        let certs = try await TestCertificates.load()
        let peer = try await PythonPeer.start(tls: .init(certs.wrongHost))
        defer { peer.stop() }
        try await withClient(engine.client(trustedCA: certs.caCertificate)) { client in
            do {
                _ = try await client.webSocketSession(peer.url(path: "/echo", host: "localhost"))
                Issue.record("the certificate is for wrong.example, not localhost")
            } catch let error as WebSocketError {
                #expect(error.code == .tlsFailure)
                #expect(error.message.lowercased().contains("host"))
            }
        }
    }

    @Test("an expired certificate is rejected", arguments: TestEngine.allCases)
    func expired(engine: TestEngine) async throws {
        let certs = try await TestCertificates.load()
        let peer = try await PythonPeer.start(tls: .init(certs.expired))
        defer { peer.stop() }
        try await withClient(engine.client(trustedCA: certs.caCertificate)) { client in
            do {
                _ = try await client.webSocketSession(peer.url(path: "/echo", host: "localhost"))
                Issue.record("the certificate expired in 2021")
            } catch let error as WebSocketError {
                #expect(error.code == .tlsFailure)
                #expect(error.message.lowercased().contains("expired"))
            }
        }
    }
}
