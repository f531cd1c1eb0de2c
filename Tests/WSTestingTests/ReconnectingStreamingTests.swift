// Reconnecting sessions with streamed messages, on the in-memory engine: fragmented messages received whole or as
// chunks across reconnections, and streamed sends that other sends never land inside.
import Synchronization
import Testing
import WSCore
import WSTesting

@Suite("Reconnecting sessions with streamed messages", .timeLimit(.minutes(1)))
struct ReconnectingStreamingTests {
    /// A configuration on `clock` without jitter: the first reconnection comes after 2 s of virtual time.
    private func configuration(_ clock: InMemoryClock) -> ReconnectingWebSocketSession.Configuration {
        var configuration = ReconnectingWebSocketSession.Configuration()
        configuration.clock = clock.swiftClock
        configuration.policy.jitter = .none
        configuration.policy.initialDelay = .seconds(2)
        return configuration
    }

    /// Waits (a wall-clock guard against hanging, not a sleep) until `session` is in a state `matches` accepts.
    private func waitFor(
        _ session: ReconnectingWebSocketSession, _ matches: (ReconnectingWebSocketSession.State) -> Bool,
        sourceLocation: SourceLocation = #_sourceLocation
    ) async {
        let deadline = ContinuousClock.now + .seconds(10)
        while !matches(session.state) {
            guard ContinuousClock.now < deadline else {
                Issue.record("still \(session.state) after 10 s", sourceLocation: sourceLocation)
                return
            }
            await Task.yield()
        }
    }

    private static func isReconnecting(_ state: ReconnectingWebSocketSession.State) -> Bool {
        if case .reconnecting = state { return true }
        return false
    }

    @Test(
        "streamsIncomingMessages: whole messages are collected; a message cut by a drop throws, the next comes from the next connection"
    )
    func streamedReceive() async throws {
        let engine = InMemoryEngine()
        let client = WebSocketClient(engine: engine) { config in
            config.install(WebSockets.self) { $0.streamsIncomingMessages = true }
        }
        let session = try client.reconnectingWebSocketSession(
            "ws://feed.test/", configuration: self.configuration(engine.clock))
        let first = try await engine.nextConnection()
        await self.waitFor(session) { $0.isOpen }

        // A message in two fragments is received whole by receiveMessage().
        try await first.send(Frame(kind: .text, fin: false, data: Array("hel".utf8)))
        try await first.send(Frame(kind: .continuation, fin: true, data: Array("lo".utf8)))
        #expect(try await session.receiveMessage() == .text("hello"))

        // As a stream: the first chunk arrives, then the connection drops in the middle of the message.
        try await first.send(Frame(kind: .binary, fin: false, data: [1, 2]))
        let cut = try await session.receiveStreamingMessage()
        #expect(cut.kind == .binary)
        var chunks = cut.chunks.makeAsyncIterator()
        #expect(try await chunks.next() == [1, 2])
        await first.drop()
        await #expect(throws: WebSocketError.self) { _ = try await chunks.next() }

        await self.waitFor(session, Self.isReconnecting)
        await engine.clock.waitForPendingTimers()
        await engine.clock.advance(by: .seconds(2))
        let second = try await engine.nextConnection()
        await self.waitFor(session) { $0.isOpen }
        try await second.send(Frame(kind: .binary, fin: false, data: [7]))
        try await second.send(Frame(kind: .continuation, fin: true, data: [8, 9]))
        let next = try await session.receiveStreamingMessage()
        #expect(try await next.collect(upTo: 100) == [7, 8, 9])
        await session.close()
    }

    @Test("a streamed send needs an open connection; sends made meanwhile go out after its last fragment")
    func streamedSend() async throws {
        let engine = InMemoryEngine()
        let session = try WebSocketClient(engine: engine).reconnectingWebSocketSession(
            "ws://feed.test/", configuration: self.configuration(engine.clock))
        let server = try await engine.nextConnection()
        await self.waitFor(session) { $0.isOpen }

        let (producer, chunks) = AsyncStream.makeStream(of: [UInt8].self)
        let streaming = Task { try await session.sendStreamingMessage(.binary, from: producer) }
        chunks.yield([1])
        chunks.yield([2])  // the first fragment goes out once the producer has yielded the next chunk
        let firstFragment = try #require(try await server.receive())
        #expect(firstFragment.kind == .binary && !firstFragment.fin && firstFragment.data == [1])

        try await session.send("between")  // must not land inside the streamed message
        let second = await #expect(throws: WebSocketError.self) {
            try await session.sendStreamingMessage(.binary, from: asyncChunks([[9]]))
        }
        #expect(second?.code == .invalidArgument)
        chunks.yield([3])
        chunks.finish()
        try await streaming.value
        var rest: [String] = []
        for _ in 0..<3 {
            let frame = try #require(try await server.receive())
            rest.append("\(frame.kind) \(frame.fin) \(frame.data)")
        }
        #expect(rest == ["continuation false [2]", "continuation true [3]", "text true \(Array("between".utf8))"])

        // After it, sends go straight to the connection again.
        try await session.send("after")
        #expect(try await server.receive()?.readText() == "after")

        await server.drop()
        await self.waitFor(session, Self.isReconnecting)
        let offline = await #expect(throws: WebSocketError.self) {
            try await session.sendStreamingMessage(.binary, from: asyncChunks([[1]]))
        }
        #expect(offline?.code == .notConnected)
        await session.close()
    }

    @Test("fail-fast mode: a send during a streamed send waits for its last fragment, then follows it")
    func failFastSendWaitsForStream() async throws {
        let engine = InMemoryEngine()
        var configuration = self.configuration(engine.clock)
        configuration.sendsWhileDisconnected = .failFast
        let session = try WebSocketClient(engine: engine).reconnectingWebSocketSession(
            "ws://feed.test/", configuration: configuration)
        let server = try await engine.nextConnection()
        await self.waitFor(session) { $0.isOpen }

        let (producer, chunks) = AsyncStream.makeStream(of: [UInt8].self)
        let streaming = Task { try await session.sendStreamingMessage(.binary, from: producer) }
        chunks.yield([1])
        chunks.yield([2])
        let firstFragment = try #require(try await server.receive())
        #expect(firstFragment.kind == .binary && !firstFragment.fin && firstFragment.data == [1])

        // The send starts while the stream is going; the stream ends only once that send is seen waiting.
        let between = Task { try await session.send("between") }
        let deadline = ContinuousClock.now + .seconds(10)
        while session.sendsWaitingForStreamEnd == 0 && ContinuousClock.now < deadline { await Task.yield() }
        #expect(session.sendsWaitingForStreamEnd == 1)
        chunks.yield([3])
        chunks.finish()
        try await streaming.value
        try await between.value
        var frames: [String] = []
        for _ in 0..<3 {
            let frame = try #require(try await server.receive())
            frames.append("\(frame.kind) \(frame.fin) \(frame.data)")
        }
        #expect(frames == ["continuation false [2]", "continuation true [3]", "text true \(Array("between".utf8))"])
        #expect(session.sendsWaitingForStreamEnd == 0)

        // Fail-fast still refuses a send while no connection is open.
        await server.drop()
        await self.waitFor(session, Self.isReconnecting)
        let offline = await #expect(throws: WebSocketError.self) { try await session.send("offline") }
        #expect(offline?.code == .notConnected)
        await session.close()
    }
}

/// `chunks` as an `AsyncSequence`.
private func asyncChunks(_ chunks: [[UInt8]]) -> AsyncStream<[UInt8]> {
    let (stream, continuation) = AsyncStream.makeStream(of: [UInt8].self)
    for chunk in chunks { continuation.yield(chunk) }
    continuation.finish()
    return stream
}
