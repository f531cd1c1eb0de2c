// A whole WebSocket session (handshake, frames, close) through a real HTTP CONNECT proxy (tinyproxy).
import EngineTestSupport
import Logging
import Testing
import WSCore
import WSEngineCurl
import WSTesting

@Suite("WebSocket sessions through a proxy")
struct ProxySessionTests {
    @Test("a wss session through tinyproxy works, and the proxy's log shows the tunnel")
    func wssThroughProxy() async throws {
        let pki = try await Certificates.load()
        var configuration = WebSocketTestServer.Configuration()
        configuration.tlsCertificateFile = pki.server.0
        configuration.tlsPrivateKeyFile = pki.server.1
        let server = try WebSocketTestServer.start(configuration, handler: .echo)
        defer { server.stop() }
        let proxy = try await TinyProxy.start(connectPorts: [server.port])
        let engine = CurlEngine(configuration: .init(tls: .init(trustRoots: .file(pki.caFile))))
        let client = try WebSocketClient(engine: engine) { config in
            config.proxy = try ProxyConfiguration(url: "http://127.0.0.1:\(proxy.port)")
        }
        do {
            try await client.wss(host: "localhost", port: server.port, path: "/chat") { session in
                try await session.send("through the tunnel")
                let frame = try await session.incoming.receive()
                #expect(try frame.readText() == "through the tunnel")
                try await session.send([UInt8](repeating: 7, count: 200_000))
                #expect(try await session.incoming.receive().data.count == 200_000)
            }
        } catch {
            await client.close()
            throw error
        }
        await client.close()
        #expect(proxy.log.contains("CONNECT localhost:\(server.port)"), "tinyproxy log: \(proxy.log)")
        #expect(server.requests.first?.path == "/chat")
    }
}
