// One `catch let error as WebSocketError` sees every failure a user meets, on both engines: a refused connect, an
// upgrade the server rejects (with its status, headers and body), a TLS failure and a session that fails later;
// `isConnectionFailure` tells the first three from the last.
import Synchronization
import Testing
import WSCore
import WSTesting

@Suite("One error family")
struct ErrorFamilyTests {
    /// Runs `body` as a user would, with one catch for the SDK's errors; any other error fails the test.
    private func failure(of body: () async throws -> Void) async -> WebSocketError? {
        do {
            try await body()
            Issue.record("the call should have failed")
        } catch let error as WebSocketError {
            return error
        } catch {
            Issue.record("not a WebSocketError: \(type(of: error)): \(error)")
        }
        return nil
    }

    @Test("a refused connect", arguments: TestEngine.allCases)
    func refused(engine: TestEngine) async throws {
        let port = try unusedPort()
        try await withClient(engine.client()) { client in
            let error = await self.failure { try await client.webSocket("ws://127.0.0.1:\(port)/") { _ in } }
            #expect(error?.code == .connectionRefused)
            #expect(error?.isConnectionFailure == true)
            #expect(error?.status == nil)
        }
    }

    @Test("a 403: status, headers and body read from the same error", arguments: TestEngine.allCases)
    func rejected(engine: TestEngine) async throws {
        var configuration = WebSocketTestServer.Configuration()
        configuration.handshake = .reject(status: 403, body: "members only")
        let server = try WebSocketTestServer.start(configuration)
        defer { server.stop() }
        try await withClient(engine.client()) { client in
            let error = await self.failure { _ = try await client.webSocketSession(server.url(path: "/private")) }
            #expect(error?.code == .upgradeRejected)
            #expect(error?.isConnectionFailure == true)
            #expect(error?.status == 403)
            #expect(error?.bodyText == "members only\n")  // the test server ends its body with a line feed
            #expect(error?.headers["Content-Length"] == "13")
            #expect(error?.description.contains("[HTTP 403]") == true)
        }
    }

    @Test("a TLS failure", arguments: TestEngine.allCases)
    func tls(engine: TestEngine) async throws {
        let certs = try await TestCertificates.load()
        var configuration = WebSocketTestServer.Configuration()
        configuration.tlsCertificateFile = certs.selfSigned.certificate
        configuration.tlsPrivateKeyFile = certs.selfSigned.privateKey
        let server = try WebSocketTestServer.start(configuration)
        defer { server.stop() }
        try await withClient(engine.client(trustedCA: certs.caCertificate)) { client in
            let error = await self.failure { try await client.wss(server.url) { _ in } }
            #expect(error?.code == .tlsFailure)
            #expect(error?.isConnectionFailure == true)
        }
    }

    @Test("a session that fails after it opened", arguments: TestEngine.allCases)
    func sessionFailure(engine: TestEngine) async throws {
        let server = try WebSocketTestServer.start(
            handler: .custom { session in
                try session.sendMalformedFrame(.reservedOpcode)
                while (try? session.receive()) != nil {}
            })
        defer { server.stop() }
        try await withClient(engine.client()) { client in
            let opened = Flag()
            let error = await self.failure {
                try await client.webSocket(server.url) { session in
                    opened.set()
                    for try await _ in session.incoming {}
                }
            }
            #expect(opened.isSet, "the block ran: the session was open")
            #expect(error?.code == .protocolViolation)
            #expect(error?.isConnectionFailure == false)
            #expect(error?.closeCode == .protocolError)
        }
    }

    @Test("an invalid URL is a connection failure too; codes decide outside an opening")
    func beforeConnecting() async throws {
        try await withClient(TestEngine.cio.client()) { client in
            let error = await self.failure { try await client.webSocket("ftp://example.com/") { _ in } }
            #expect(error?.code == .invalidURL)
            #expect(error?.isConnectionFailure == true)
        }
        // Errors made outside an opening keep what their code says.
        #expect(WebSocketError(.network, "x").isConnectionFailure)
        #expect(!WebSocketError(.network, "x", isConnectionFailure: false).isConnectionFailure)
        #expect(!WebSocketError(.invalidArgument, "x").isConnectionFailure)
        #expect(WebSocketError(.upgradeRejected, "x", body: [UInt8](repeating: 65, count: 10_000)).body.count == 4096)
    }
}

/// Set once from the session's block, read after it ended.
private final class Flag: Sendable {
    private let value = Mutex(false)
    func set() { self.value.withLock { $0 = true } }
    var isSet: Bool { self.value.withLock { $0 } }
}
