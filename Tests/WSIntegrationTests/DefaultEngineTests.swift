// The one-import, one-line client of WebSocketClientKit: the native engine without naming it, one engine per client.
import Testing
import WSTesting
import WebSocketClientKit

@Suite("Default engine")
struct DefaultEngineTests {
    @Test("WebSocketClient() and WebSocketClient { } run on a CIO engine of their own")
    func defaultEngine() async throws {
        let server = try WebSocketTestServer.start()
        defer { server.stop() }
        let plain = WebSocketClient()
        let configured = WebSocketClient { $0.install(WebSockets.self) { $0.maxFrameSize = 4096 } }
        #expect(plain.engine.name == "CIO")
        #expect(configured.engine is CIOEngine)
        #expect(plain.engine as AnyObject !== configured.engine as AnyObject, "each client owns its engine")
        #expect(configured.configuration.settings(of: WebSockets.self)?.maxFrameSize == 4096)

        try await plain.webSocket(server.url) { session in
            try await session.send("default")
            #expect(try await session.receiveText() == "default")
        }
        // Closing one client shuts down its engine only: the other one still connects.
        await plain.close()
        try await configured.webSocket(server.url) { session in
            try await session.send("still here")
            #expect(try await session.receiveText() == "still here")
        }
        await configured.close()
    }
}
