import Testing
import WSCore
import WSTesting

// The example of Docs/WSTesting.md ("Unit tests without sockets"), verbatim but for the time limits: it must compile
// and pass.

/// The code under test: a tiny chat client that greets the room and reads what comes back.
struct ChatClient {
    let session: WebSocketSession
    static func connect(_ client: WebSocketClient) async throws -> ChatClient {
        let session = try await client.webSocketSession("ws://chat.example/room") { $0.subprotocols = ["chat.v1"] }
        try await session.send("hello")
        return ChatClient(session: session)
    }
    func nextMessage() async throws -> String { try await self.session.incoming.receive().readText() }
}

@Test(.timeLimit(.minutes(1))) func chatClientGreetsAndReadsTheReply() async throws {
    // The server side, run for each connection: accept, answer one greeting, then echo until the client closes.
    let engine = InMemoryEngine { server in
        #expect(server.request.path == "/room")
        try server.accept(subprotocol: "chat.v1")
        #expect(try await server.receive()?.readText() == "hello")
        try await server.send(text: "welcome")
        while let frame = try await server.receive() {
            if frame.kind == .text { try await server.send(frame) }
        }
    }
    let client = WebSocketClient(engine: engine) { config in
        config.install(WebSockets.self) { $0.pingInterval = .seconds(30) }
    }
    let chat = try await ChatClient.connect(client)
    #expect(chat.session.subprotocol == "chat.v1")
    #expect(try await chat.nextMessage() == "welcome")
    await chat.session.close()
    #expect(await chat.session.closeReason?.code == .normal)
    await client.close()
}

@Test(.timeLimit(.minutes(1))) func aSilentServerEndsTheSessionWith1011() async throws {
    // No handler: every upgrade is accepted and the test drives the server side itself.
    let engine = InMemoryEngine()
    let client = WebSocketClient(engine: engine) { config in
        config.install(WebSockets.self) {
            $0.pingInterval = .seconds(30)
            $0.pongTimeout = .seconds(10)
        }
    }
    let chat = try await ChatClient.connect(client)
    let server = try await engine.nextConnection()
    #expect(try await server.receive()?.readText() == "hello")

    server.answersPings = false  // the server stops answering
    await engine.clock.advance(by: .seconds(30))  // the ping timer fires: no real waiting
    #expect(server.nextFrameIfAvailable()?.kind == .ping)
    await engine.clock.advance(by: .seconds(10))  // the pong timeout
    #expect(server.nextFrameIfAvailable()?.readReason()?.code == .internalError)
    #expect(await chat.session.closeReason?.code == .internalError)
    await client.close()
}
