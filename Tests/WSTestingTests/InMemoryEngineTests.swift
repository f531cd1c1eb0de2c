import Synchronization
import Testing
import WSCore
import WSExtensions
import WSTesting

/// A client on `engine` with the WebSockets settings `configure` makes.
private func client(
    _ engine: InMemoryEngine, _ configure: (inout WebSockets.Configuration) -> Void = { _ in }
) -> WebSocketClient {
    WebSocketClient(engine: engine) { config in
        config.install(WebSockets.self) { configure(&$0) }
    }
}

/// A user's view of the in-memory engine: scripted servers, the handshake, drops.
@Suite("InMemoryEngine", .timeLimit(.minutes(1)))
struct InMemoryEngineTests {
    @Test("a user's echo client, unit-tested against a scripted echo server")
    func echo() async throws {
        let engine = InMemoryEngine { server in
            while let frame = try await server.receive() {
                if frame.kind == .text { try await server.send(text: "echo: \(try frame.readText())") }
            }
        }
        let client = WebSocketClient(engine: engine)
        let session = try await client.webSocketSession("ws://chat.test/room?user=1") { request in
            request.headers["Authorization"] = "Bearer t"
        }
        try await session.send("hello")
        #expect(try await session.incoming.receive().readText() == "echo: hello")
        try await session.send("again")
        #expect(try await session.incoming.receive().readText() == "echo: again")
        await session.close(CloseReason(code: 4001, message: "done"))
        #expect(await session.closeReason?.code == CloseReason.Code(4001))  // the handler's end echoes the code
        let request = try #require(engine.connections.first?.request)
        #expect(request.path == "/room")
        #expect(request.query == "user=1")
        #expect(request.headers["Authorization"] == "Bearer t")
        #expect(request.status == 101)
        await client.close()
    }

    @Test("the server sees the offered subprotocols and selects one; the session reports it")
    func subprotocolAccepted() async throws {
        let engine = InMemoryEngine { server in
            #expect(server.request.offeredSubprotocols == ["chat.v1", "chat.v2"])
            try server.accept(subprotocol: "chat.v2", headers: ["X-Server": "memory"])
            _ = try await server.receive()
        }
        let session = try await client(engine).webSocketSession("ws://chat.test/") {
            $0.subprotocols = ["chat.v1", "chat.v2"]
        }
        #expect(session.subprotocol == "chat.v2")
        #expect(session.responseHeaders["X-Server"] == "memory")
        #expect(session.engineName == "InMemory")
        await session.close()
        #expect(engine.connections.first?.request.selectedSubprotocol == "chat.v2")
    }

    @Test("an extension the server accepts is negotiated; its reserved bits reach the server as sent")
    func extensionAccepted() async throws {
        let engine = InMemoryEngine { server in
            #expect(server.request.headers["Sec-WebSocket-Extensions"]?.hasPrefix("permessage-deflate") == true)
            try server.accept(headers: ["Sec-WebSocket-Extensions": "permessage-deflate"])
            let frame = try #require(try await server.receive())
            #expect(frame.kind == .text && frame.rsv1)  // compressed by the client, not decompressed here
            #expect(frame.data != Array("hello hello hello hello hello hello hello hello".utf8))
        }
        #expect(engine.isSupported(.webSocketExtensions))
        let session = try await client(engine) { ws in
            try? ws.extensions { try $0.install(.perMessageDeflate()) }
        }.webSocketSession("ws://chat.test/")
        #expect(session.extensions.map(\.name) == ["permessage-deflate"])
        try await session.send("hello hello hello hello hello hello hello hello")
        #expect(await session.closeReason?.code == .normal)  // the handler returned: closed with 1000
    }

    @Test("a rejected upgrade fails the open with the status and body")
    func upgradeRejected() async throws {
        let engine = InMemoryEngine { server in try server.reject(status: 403, body: "no token") }
        let error = await #expect(throws: WebSocketError.self) {
            _ = try await client(engine).webSocketSession("ws://chat.test/")
        }
        #expect(error?.code == .upgradeRejected)
        #expect(error?.status == 403)
        #expect(error?.bodyText == "no token")
        #expect(engine.connections.first?.request.status == 403)
    }

    @Test("an upgrade never answered trips the open timeout on the virtual clock")
    func openTimeout() async throws {
        let engine = InMemoryEngine { server in await server.waitForDisconnect() }
        let client = WebSocketClient(engine: engine) { $0.openTimeout = .seconds(5) }
        let opening = Task { try await client.webSocketSession("ws://chat.test/") }
        await engine.clock.waitForPendingTimers()  // the open timer
        await engine.clock.advance(by: .seconds(5))
        let error = await #expect(throws: WebSocketError.self) { _ = try await opening.value }
        #expect(error?.code == .timedOut)
    }

    @Test("a dropped connection ends the session with 1006 after the frames sent before")
    func dropped() async throws {
        let engine = InMemoryEngine()
        let session = try await client(engine).webSocketSession("ws://chat.test/")
        let server = try await engine.nextConnection()
        try await server.send(text: "last words")
        await server.drop()
        #expect(try await session.incoming.receive().readText() == "last words")
        let error = await #expect(throws: WebSocketError.self) { _ = try await session.incoming.receive() }
        #expect(error?.code == .connectionLost)
        #expect(await session.closeReason?.code == .abnormalClosure)
        #expect(session.isClosed)
    }

    @Test("a frame that breaks the protocol makes the server's receive throw with its close code")
    func clientViolation() async throws {
        let engine = InMemoryEngine()
        let session = try await client(engine).webSocketSession("ws://chat.test/")
        let server = try await engine.nextConnection()
        try await session.send(Frame(kind: .text, data: Array("x".utf8), reservedBits: .rsv1))  // no extension
        let error = await #expect(throws: WebSocketError.self) { _ = try await server.receive() }
        #expect(error?.closeCode == .protocolError)
        await server.drop()
    }
}

/// The SDK's session rules, on the in-memory engine with the virtual clock.
@Suite("Session rules in memory", .timeLimit(.minutes(1)))
struct InMemorySessionRuleTests {
    @Test("a ping goes out every interval; a missing pong closes the session with 1011")
    func pingIntervalAndPongTimeout() async throws {
        let engine = InMemoryEngine()
        let session = try await client(engine) {
            $0.pingInterval = .seconds(10)
            $0.pongTimeout = .seconds(5)
        }.webSocketSession("ws://chat.test/")
        let server = try await engine.nextConnection()

        await engine.clock.advance(by: .seconds(10) - .milliseconds(1))
        #expect(server.nextFrameIfAvailable() == nil)  // not before the interval
        await engine.clock.advance(by: .milliseconds(1))
        let first = try #require(server.nextFrameIfAvailable())
        #expect(first.kind == .ping)
        await engine.clock.advance(by: .seconds(10))  // the pong came back at once: the next ping, no failure
        #expect(server.nextFrameIfAvailable()?.kind == .ping)
        #expect(!session.isClosed)

        server.answersPings = false
        await engine.clock.advance(by: .seconds(10))
        let unanswered = try #require(server.nextFrameIfAvailable())
        #expect(unanswered.kind == .ping && unanswered.data != first.data)
        await engine.clock.advance(by: .seconds(5) - .milliseconds(1))
        #expect(server.nextFrameIfAvailable() == nil)
        #expect(!session.isClosed)
        await engine.clock.advance(by: .milliseconds(1))  // the pong timeout
        let close = try #require(server.nextFrameIfAvailable())
        #expect(close.kind == .close && close.readReason()?.code == .internalError)
        // pongs, then the failure
        let error = await #expect(throws: WebSocketError.self) { for try await _ in session.incoming {} }
        #expect(error?.code == .pongTimeout)
        #expect(await session.closeReason?.code == .internalError)
        #expect(engine.clock.now == .seconds(35))
    }

    @Test("the client answers the server's ping with a pong carrying the same payload")
    func clientAnswersPing() async throws {
        let engine = InMemoryEngine()
        let session = try await client(engine).webSocketSession("ws://chat.test/")
        let server = try await engine.nextConnection()
        try await server.send(.ping([1, 2, 3]))
        let pong = try #require(server.nextFrameIfAvailable())  // answered while the ping was read
        #expect(pong.kind == .pong && pong.data == [1, 2, 3])
        #expect(try await session.incoming.receive().kind == .ping)
        await session.close()
    }

    @Test("client-initiated close: the server answers with the client's code and the session ends with it")
    func clientInitiatedClose() async throws {
        let engine = InMemoryEngine()
        let session = try await client(engine).webSocketSession("ws://chat.test/")
        let server = try await engine.nextConnection()
        server.answersClose = false  // answered by hand below
        let closing = Task { await session.close(CloseReason(code: 4000, message: "bye")) }
        let frame = try #require(try await server.receive())
        #expect(frame.kind == .close)
        #expect(frame.readReason() == CloseReason(code: 4000, message: "bye"))
        let reply = try await server.close(frame.readReason().map { CloseReason(code: $0.code) })
        #expect(reply?.code == CloseReason.Code(4000))
        await closing.value
        #expect(session.isClosed)
        #expect(await session.closeReason?.code == CloseReason.Code(4000))
        #expect(try await server.receive() == nil)
        #expect(engine.clock.now == .zero)
    }

    @Test("server-initiated close: the client echoes the code and the session ends with the server's reason")
    func serverInitiatedClose() async throws {
        let engine = InMemoryEngine()
        let session = try await client(engine).webSocketSession("ws://chat.test/")
        let server = try await engine.nextConnection()
        let reply = try await server.close(CloseReason(code: .goingAway, message: "restarting"))
        #expect(reply?.code == .goingAway)
        let close = try await session.incoming.receive()
        #expect(close.kind == .close)
        #expect(await session.closeReason == CloseReason(code: .goingAway, message: "restarting"))
        #expect(session.isClosed)
        await #expect(throws: WebSocketError.self) { try await session.send("late") }
    }

    @Test("close timeout: a server that never answers the close is dropped after closeTimeout, with 1006")
    func closeTimeout() async throws {
        let engine = InMemoryEngine()
        let session = try await client(engine) { $0.closeTimeout = .seconds(3) }.webSocketSession("ws://chat.test/")
        let server = try await engine.nextConnection()
        server.answersClose = false
        let closing = Task { await session.close() }
        #expect(try await server.receive()?.kind == .close)
        await engine.clock.waitForPendingTimers()  // the close timer, started right after the close frame
        let deadline = try #require(engine.clock.nextDeadline)
        #expect(deadline == engine.clock.now + .seconds(3))
        await engine.clock.advance(by: .seconds(3) - .milliseconds(1))
        #expect(!session.isClosed && !server.isClientDisconnected)
        await engine.clock.advance(by: .milliseconds(1))
        await server.waitForDisconnect()
        await closing.value
        #expect(session.isClosed)
        #expect(await session.closeReason?.code == .abnormalClosure)
    }

    @Test("a message over maxMessageSize fails the session with 1009")
    func messageTooBig() async throws {
        let engine = InMemoryEngine()
        let session = try await client(engine) { $0.maxMessageSize = 1000 }.webSocketSession("ws://chat.test/")
        let server = try await engine.nextConnection()
        try await server.send(.binary([UInt8](repeating: 1, count: 600), fin: false))
        try await server.send(.continuation([UInt8](repeating: 2, count: 600), fin: true))
        let error = await #expect(throws: WebSocketError.self) { _ = try await session.incoming.receive() }
        #expect(error?.code == .messageTooBig)
        #expect(error?.closeCode == .messageTooBig)
        let close = try #require(try await server.receive())
        #expect(close.kind == .close && close.readReason()?.code == .messageTooBig)
        #expect(await session.closeReason?.code == .messageTooBig)
    }

    @Test("a cancelled receive throws CancellationError and the session stays usable")
    func receiveCancellation() async throws {
        let engine = InMemoryEngine()
        let session = try await client(engine).webSocketSession("ws://chat.test/")
        let server = try await engine.nextConnection()
        let receiving = Task { try await session.incoming.receive() }
        receiving.cancel()
        await #expect(throws: CancellationError.self) { _ = try await receiving.value }
        try await server.send(text: "after")
        #expect(try await session.incoming.receive().readText() == "after")
        try await session.send("still open")
        #expect(try await server.receive()?.readText() == "still open")
        await session.close()
    }

    @Test("send backpressure: a send over maxOutgoingBufferBytes waits until the server reads")
    func sendBackpressure() async throws {
        let engine = InMemoryEngine()
        let session = try await client(engine) { $0.maxOutgoingBufferBytes = 1000 }.webSocketSession("ws://chat.test/")
        let server = try await engine.nextConnection()
        server.pauseReading()
        let payload = [UInt8](repeating: 7, count: 5000)
        let sent = Atomic<Bool>(false)
        let sending = Task {
            try await session.send(payload)
            sent.store(true, ordering: .releasing)
        }
        await server.waitForClientBufferedBytes(atLeast: 5000)
        await engine.clock.idle()
        #expect(server.clientBufferedBytes > 1000)
        let sentEarly = sent.load(ordering: .acquiring)
        #expect(!sentEarly)  // waiting for room
        #expect(server.nextFrameIfAvailable() == nil)
        server.resumeReading()
        try await sending.value
        let sentAtLast = sent.load(ordering: .acquiring)
        #expect(sentAtLast)
        #expect(server.clientBufferedBytes == 0)
        #expect(try await server.receive()?.data == payload)
        await session.flush()
        await session.close()
    }

    @Test("incoming backpressure: a full incoming buffer pauses reading; the server's frames wait, in order")
    func incomingBackpressure() async throws {
        let engine = InMemoryEngine()
        let session = try await client(engine) { $0.maxIncomingBufferMessages = 4 }.webSocketSession("ws://chat.test/")
        let server = try await engine.nextConnection()
        for index in 0..<10 { try await server.send(text: "m\(index)") }
        #expect(server.isClientReadingPaused)
        #expect(server.heldBytes == 6 * 4)  // m4...m9 wait, 4 bytes each on the wire
        var received: [String] = []
        for _ in 0..<10 { received.append(try await session.incoming.receive().readText()) }
        #expect(received == (0..<10).map { "m\($0)" })
        #expect(!server.isClientReadingPaused)
        #expect(server.heldBytes == 0)
        await session.close()
    }
}
