// The engines every integration test runs on: one parameterized suite, not a copy per engine.
import WSCore
import WSEngineCIO
import WSEngineCurl

/// An engine under test.
enum TestEngine: String, CaseIterable, Sendable, CustomStringConvertible {
    case cio
    case curl

    var description: String { self.rawValue }

    /// A fresh engine; `trustedCA` is the CA file for wss tests.
    func make(trustedCA: String? = nil, disableVerification: Bool = false) -> any WebSocketEngine {
        self.make(
            tls: WebSocketTLSConfiguration(
                trustRoots: trustedCA.map { .file($0) } ?? .system,
                dangerouslyDisableCertificateVerification: disableVerification))
    }

    /// A fresh engine with the TLS settings `tls`: the same value for every engine.
    func make(tls: WebSocketTLSConfiguration) -> any WebSocketEngine {
        switch self {
        case .cio:
            return CIOEngine(configuration: .init(tls: tls))
        case .curl:
            return CurlEngine(configuration: .init(tls: tls))
        }
    }

    /// A client on a fresh engine with the WebSockets plugin configured by `configure`.
    func client(
        trustedCA: String? = nil,
        disableVerification: Bool = false,
        _ configure: (inout WebSockets.Configuration) -> Void = { _ in }
    ) -> WebSocketClient {
        WebSocketClient(engine: self.make(trustedCA: trustedCA, disableVerification: disableVerification)) { config in
            config.proxy = .direct  // Test traffic never follows a *_proxy environment variable.
            config.install(WebSockets.self) { configure(&$0) }
        }
    }
}

/// Runs `body` with a client and closes the client afterwards, whatever happens.
func withClient<T>(
    _ client: WebSocketClient,
    _ body: (WebSocketClient) async throws -> T
) async throws -> T {
    do {
        let result = try await body(client)
        await client.close()
        return result
    } catch {
        await client.close()
        throw error
    }
}

/// Receives the next text or binary message, skipping pings and pongs.
func nextMessage(_ session: WebSocketSession) async throws -> Frame {
    while true {
        let frame = try await session.incoming.receive()
        if frame.kind == .ping || frame.kind == .pong { continue }
        return frame
    }
}
