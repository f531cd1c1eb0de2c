// Cancelling a task that waits inside a send: for room in the outgoing buffer, for `flush`, for a streamed message to
// end (plain and reconnecting sessions). The wait ends at once; what was queued is still sent, and what was not is not.
import Synchronization
import Testing
import WSCore
import WSTesting

/// Opens a session on a fresh in-memory engine; returns it with the server side.
private func open(
    _ configure: @escaping (inout WebSockets.Configuration) -> Void = { _ in }
) async throws -> (WebSocketClient, WebSocketSession, InMemoryServerConnection) {
    let (connections, continuation) = AsyncStream.makeStream(of: InMemoryServerConnection.self)
    let engine = InMemoryEngine { server in
        try server.accept()
        continuation.yield(server)
        await server.waitForDisconnect()
    }
    let client = WebSocketClient(engine: engine) { config in config.install(WebSockets.self, configure) }
    let session = try await client.webSocketSession("ws://cancel.test/")
    var servers = connections.makeAsyncIterator()
    return (client, session, try #require(await servers.next()))
}

/// The elements of an array as an async sequence.
extension Array where Element: Sendable {
    fileprivate var async: AsyncStream<Element> {
        AsyncStream { continuation in
            for element in self { continuation.yield(element) }
            continuation.finish()
        }
    }
}

/// A flag shared between tasks.
private final class Flag: Sendable {
    private let value = Atomic(false)
    var isSet: Bool { self.value.load(ordering: .acquiring) }
    func set() { self.value.store(true, ordering: .releasing) }
}

/// Whether `task` finishes within `limit` (a bound on how long the test waits, not a sleep that sets up a race: a
/// cancelled wait ends within microseconds). A task still running then is the failure under test.
private func finishes<Success: Sendable, Failure: Error>(
    _ task: Task<Success, Failure>, within limit: Duration = .seconds(10)
) async throws -> Bool {
    let finished = Flag()
    Task {
        _ = await task.result
        finished.set()
    }
    let deadline = ContinuousClock.now + limit
    while !finished.isSet {
        guard ContinuousClock.now < deadline else { return false }
        try await Task.sleep(for: .milliseconds(5))
    }
    return true
}

@Suite("Cancelling a waiting send (in memory)", .timeLimit(.minutes(1)))
struct SendCancellationTests {
    @Test("a send waiting for room throws CancellationError when cancelled; its message is still sent, in order")
    func cancelWhileWaitingForRoom() async throws {
        let (client, session, server) = try await open { $0.maxOutgoingBufferBytes = 64 << 10 }
        server.pauseReading()
        let big = [UInt8](repeating: 7, count: 256 << 10)
        let sending = Task { try await session.send(big) }
        sending.cancel()
        let ended = try await finishes(sending)
        #expect(ended, "a cancelled send kept waiting for the server to read")
        #expect(server.clientBufferedBytes >= big.count, "the message stays queued")
        server.resumeReading()
        await #expect(throws: CancellationError.self) { try await sending.value }
        // The session goes on: the cancelled send's message arrives whole, then the next one.
        try await session.send("next")
        let first = try #require(await server.receive())
        #expect(first.kind == .binary && first.data == big)
        let second = try #require(await server.receive())
        #expect(second.kind == .text && second.data == Array("next".utf8))
        await session.close()
        await client.close()
    }

    @Test("a streamed send cancelled while its last fragment waits for room: CancellationError, the session stays open")
    func cancelStreamedSendAfterLastFragment() async throws {
        let (client, session, server) = try await open { $0.maxOutgoingBufferBytes = 64 << 10 }
        server.pauseReading()
        let chunk = [UInt8](repeating: 3, count: 256 << 10)
        let sending = Task { try await session.sendStreamingMessage(.binary, from: [chunk].async) }
        let deadline = ContinuousClock.now + .seconds(10)
        while server.clientBufferedBytes < chunk.count && ContinuousClock.now < deadline { await Task.yield() }
        sending.cancel()
        let ended = try await finishes(sending)
        #expect(ended, "a cancelled streamed send kept waiting for the server to read")
        server.resumeReading()
        await #expect(throws: CancellationError.self) { try await sending.value }
        // The message went out whole and the session was not closed (no 1011): the next message follows it.
        try await session.send("next")
        let first = try #require(await server.receive())
        #expect(first.kind == .binary && first.fin && first.data == chunk)
        let second = try #require(await server.receive())
        #expect(second.kind == .text && second.data == Array("next".utf8))
        await session.close()
        await client.close()
    }

    @Test("flush returns when its task is cancelled, the bytes still queued; a send with room never throws")
    func cancelWhileFlushing() async throws {
        let (client, session, server) = try await open { $0.maxOutgoingBufferBytes = 64 << 10 }
        server.pauseReading()
        // Under the limit: accepted without waiting, even from a cancelled task.
        let small = Task {
            withUnsafeCurrentTask { $0?.cancel() }
            try await session.send([UInt8](repeating: 1, count: 1_024))
        }
        try await small.value
        let flushing = Task { await session.flush() }
        flushing.cancel()
        let ended = try await finishes(flushing)
        #expect(ended, "a cancelled flush kept waiting for the server to read")
        #expect(server.clientBufferedBytes > 0)
        server.resumeReading()
        let frame = try #require(await server.receive())
        #expect(frame.data.count == 1_024)
        await session.flush()  // not cancelled: returns once everything went out
        #expect(server.clientBufferedBytes == 0)
        await session.close()
        await client.close()
    }

    @Test("a send waiting for a streamed message to end throws CancellationError when cancelled, and is not sent")
    func cancelWhileWaitingForMessageEnd() async throws {
        let (client, session, server) = try await open()
        let (stream, chunks) = AsyncStream<[UInt8]>.makeStream()
        chunks.yield([1])
        chunks.yield([2])
        let streaming = Task { try await session.sendStreamingMessage(.binary, from: stream) }
        let first = try #require(await server.receive())  // the first fragment is out; the producer waits
        #expect(first.kind == .binary && !first.fin)
        let other = Task { try await session.send("never sent") }
        let deadline = ContinuousClock.now + .seconds(10)
        while session.sendersWaitingForMessageEnd == 0 && ContinuousClock.now < deadline { await Task.yield() }
        other.cancel()
        let ended = try await finishes(other)
        #expect(ended, "a cancelled send kept waiting for the streamed message")
        chunks.finish()
        try await streaming.value
        if ended { await #expect(throws: CancellationError.self) { try await other.value } }
        #expect(session.sendersWaitingForMessageEnd == 0)
        try await session.send("after")
        var frames: [Frame] = []
        for _ in 0..<2 { frames.append(try #require(await server.receive())) }
        #expect(frames.map(\.kind) == [.continuation, .text])
        #expect(frames[1].data == Array("after".utf8), "the cancelled message must not be sent")
        await session.close()
        await client.close()
    }

    @Test("reconnecting session, fail-fast mode: a send waiting for a streamed send to end can be cancelled")
    func reconnectingCancelWhileWaitingForStreamEnd() async throws {
        let engine = InMemoryEngine()
        var configuration = ReconnectingWebSocketSession.Configuration()
        configuration.clock = engine.clock.swiftClock
        configuration.sendsWhileDisconnected = .failFast
        let session = try WebSocketClient(engine: engine).reconnectingWebSocketSession(
            "ws://feed.test/", configuration: configuration)
        let server = try await engine.nextConnection()
        let openDeadline = ContinuousClock.now + .seconds(10)
        while !session.state.isOpen && ContinuousClock.now < openDeadline { await Task.yield() }

        let (producer, chunks) = AsyncStream.makeStream(of: [UInt8].self)
        let streaming = Task { try await session.sendStreamingMessage(.binary, from: producer) }
        chunks.yield([1])
        chunks.yield([2])
        let firstFragment = try #require(try await server.receive())
        #expect(firstFragment.kind == .binary && !firstFragment.fin)
        let waiting = Task { try await session.send("never sent") }
        let deadline = ContinuousClock.now + .seconds(10)
        while session.sendsWaitingForStreamEnd == 0 && ContinuousClock.now < deadline { await Task.yield() }
        #expect(session.sendsWaitingForStreamEnd == 1)
        waiting.cancel()
        let ended = try await finishes(waiting)
        #expect(ended, "a cancelled send kept waiting for the streamed message")
        #expect(session.sendsWaitingForStreamEnd == 0)
        chunks.finish()
        try await streaming.value
        if ended { await #expect(throws: CancellationError.self) { try await waiting.value } }
        try await session.send("after")
        var frames: [String] = []
        for _ in 0..<2 {
            let frame = try #require(try await server.receive())
            frames.append("\(frame.kind) \(frame.fin) \(String(decoding: frame.data, as: UTF8.self))")
        }
        #expect(frames == ["continuation true \u{2}", "text true after"])
        await session.close()
    }
}
