// WSTesting's server-side permessage-deflate, as the demo uses it.
import Testing
import WSCore
import WSExtensions
import WSTesting

@Suite("WSTesting with permessage-deflate")
struct WSTestingDeflateTests {
    @Test(
        "a client offering permessage-deflate gets it; compressed messages round-trip", arguments: TestEngine.allCases)
    func negotiatedEcho(engine: TestEngine) async throws {
        var configuration = WebSocketTestServer.Configuration()
        configuration.perMessageDeflate = true
        let server = try WebSocketTestServer.start(configuration, handler: .echo)
        defer { server.stop() }
        let client = try WebSocketClient(engine: engine.make()) { config in
            try config.install(WebSockets.self) { ws in try ws.extensions { try $0.install(.perMessageDeflate()) } }
        }
        try await withClient(client) { client in
            try await client.webSocket(server.url(path: "/")) { session in
                #expect(session.extensions.map(\.name) == ["permessage-deflate"])
                #expect(session.responseHeaders["Sec-WebSocket-Extensions"] == "permessage-deflate")
                for round in 0..<5 {  // context takeover across messages, both ways
                    let text = String(repeating: "round \(round) compressible text ", count: 200)
                    try await session.send(text)
                    #expect(try await nextMessage(session).readText() == text)
                }
                let bytes = [UInt8](repeating: 42, count: 100_000)
                try await session.send(bytes)
                #expect(try await nextMessage(session).data == bytes)
            }
        }
        // A client that does not offer it is unaffected.
        try await withClient(engine.client()) { client in
            try await client.webSocket(server.url(path: "/")) { session in
                #expect(session.extensions.isEmpty)
                try await session.send("plain")
                #expect(try await nextMessage(session).readText() == "plain")
            }
        }
    }
}
