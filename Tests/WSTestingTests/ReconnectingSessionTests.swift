import EngineTestSupport
import Synchronization
import Testing
import WSCore
import WSTesting

/// An in-memory engine whose next connects can be made to fail (connection refused, a rejected upgrade).
private final class FlakyEngine: WebSocketEngine {
    let memory: InMemoryEngine
    private let script = Mutex<[any Error]>([])
    private let count = Atomic<Int>(0)

    init(_ memory: InMemoryEngine = InMemoryEngine()) { self.memory = memory }

    var name: String { "Flaky" }
    func isSupported(_ capability: EngineCapability) -> Bool { self.memory.isSupported(capability) }

    /// The next connects fail with these errors, in order.
    func failNext(_ errors: [any Error]) { self.script.withLock { $0 += errors } }

    /// How many connects were asked for.
    var attempts: Int { self.count.load(ordering: .acquiring) }

    func connect(to endpoint: EngineEndpoint, options: EngineConnectOptions) async throws -> any WebSocketTransport {
        self.count.add(1, ordering: .acquiringAndReleasing)
        if let error = self.script.withLock({ $0.isEmpty ? nil : $0.removeFirst() }) { throw error }
        return try await self.memory.connect(to: endpoint, options: options)
    }

    func shutdown() async { await self.memory.shutdown() }
}

/// A configuration on `engine`'s virtual clock without jitter: delays of 2 s, 4 s, 8 s, ...
private func configuration(
    _ clock: InMemoryClock, _ edit: (inout ReconnectingWebSocketSession.Configuration) -> Void = { _ in }
) -> ReconnectingWebSocketSession.Configuration {
    var configuration = ReconnectingWebSocketSession.Configuration()
    configuration.clock = clock.swiftClock
    configuration.policy.jitter = .none
    configuration.policy.initialDelay = .seconds(2)
    configuration.policy.maximumDelay = .seconds(60)
    edit(&configuration)
    return configuration
}

/// Waits until the clock's next timer is due at `deadline` (with a wall-clock guard against hanging): the backoff
/// sleep starts just after its state is delivered, and advancing the clock before it would move its deadline.
private func waitForTimer(
    _ clock: InMemoryClock, at deadline: Duration, sourceLocation: SourceLocation = #_sourceLocation
) async {
    let limit = ContinuousClock.now + .seconds(10)
    while clock.nextDeadline != deadline {
        guard ContinuousClock.now < limit else {
            Issue.record(
                "no timer due at \(deadline) (next: \(String(describing: clock.nextDeadline)))",
                sourceLocation: sourceLocation)
            return
        }
        await Task.yield()
    }
}

/// Whether `body` returns within 5 s of wall-clock time. If it does not, `unblock` runs (e.g. the virtual clock
/// advances past the delay `body` waits for) so that the test fails instead of hanging.
private func returnsPromptly(_ body: @escaping @Sendable () async -> Void, unblock: () async -> Void) async -> Bool {
    let returned = Atomic<Bool>(false)
    let task = Task {
        await body()
        returned.store(true, ordering: .releasing)
    }
    let deadline = ContinuousClock.now + .seconds(5)
    while !returned.load(ordering: .acquiring) && ContinuousClock.now < deadline { await Task.yield() }
    let prompt = returned.load(ordering: .acquiring)
    if !prompt { await unblock() }
    await task.value
    return prompt
}

/// The state as a short string for comparisons.
private func brief(_ state: ReconnectingWebSocketSession.State?) -> String {
    switch state {
    case nil: "end"
    case .connecting: "connecting"
    case .open: "open"
    case .reconnecting(let attempt, let delay, let cause): "reconnecting \(attempt) \(delay) \(brief(cause))"
    case .closed(let cause): "closed \(brief(cause))"
    }
}

private func brief(_ cause: ReconnectingWebSocketSession.Cause) -> String {
    switch cause {
    case .failure(let error as WebSocketError): "\(error.code)"
    case .failure(let error): "\(type(of: error))"
    case .closed(let reason): "\(reason.code.rawValue)"
    case .closedByClient(let reason): "byClient \(reason.code.rawValue)"
    }
}

/// Reconnecting sessions on the in-memory engine: state sequences and timing on the virtual clock, no sockets and no
/// wall-clock sleeps.
@Suite("Reconnecting sessions in memory", .timeLimit(.minutes(1)))
struct ReconnectingSessionTests {
    @Test("a dropped connection: open → reconnecting → open after the backoff; hook twice; queued sends in order")
    func reconnectAfterDrop() async throws {
        let engine = InMemoryEngine()
        let hookRuns = Atomic<Int>(0)
        let client = WebSocketClient(engine: engine)
        let session = try client.reconnectingWebSocketSession(
            "ws://feed.test/",
            configuration: configuration(engine.clock) { configuration in
                configuration.onConnect = { connection in
                    let run = hookRuns.add(1, ordering: .acquiringAndReleasing).newValue
                    try await connection.send("subscribe \(run)")
                }
            })
        var states = session.states.makeAsyncIterator()
        // The in-memory server accepts at once: the session may be open before the subscription, whose first state
        // is then already open.
        let first = try await engine.nextConnection()
        #expect(brief(await stateAfterConnecting(&states)) == "open")
        #expect(session.state.isOpen)
        #expect(try await first.receive()?.readText() == "subscribe 1")
        try await session.send("a")
        #expect(try await first.receive()?.readText() == "a")
        try await first.send(text: "before")

        await first.drop()
        #expect(brief(await nextState(&states)) == "reconnecting 1 2.0 seconds 1006")
        try await session.send("b")  // queued while disconnected
        try await session.send("c")
        await engine.clock.waitForPendingTimers()
        #expect(engine.clock.nextDeadline == engine.clock.now + .seconds(2))
        await engine.clock.advance(by: .seconds(2) - .milliseconds(1))
        #expect(engine.connections.count == 1, "reconnected before the backoff delay")
        await engine.clock.advance(by: .milliseconds(1))
        let second = try await engine.nextConnection()
        #expect(brief(await nextState(&states)) == "open")
        #expect(hookRuns.load(ordering: .acquiring) == 2)
        // The hook's message first, then the queued ones in order, then a new send.
        try await session.send("d")
        try await session.send("end")  // read up to it: a lost message shows as a difference, not as a hang
        var received: [String] = []
        while let text = try await second.receive()?.readText(), text != "end" { received.append(text) }
        #expect(received == ["subscribe 2", "b", "c", "d"])

        // Received messages: the one from before the drop, then the new connection's.
        try await second.send(text: "after")
        #expect(try await session.receiveMessage() == .text("before"))
        #expect(try await session.receiveMessage() == .text("after"))

        await session.close()
        #expect(brief(await nextState(&states)) == "closed byClient 1000")
        #expect(brief(await nextState(&states)) == "end")
        #expect(engine.clock.pendingTimerCount == 0, "a timer outlived the session")
        await client.close()
    }

    @Test("fail-fast mode: a send during the outage throws notConnected; after it sends work again")
    func failFast() async throws {
        let engine = InMemoryEngine()
        let session = try WebSocketClient(engine: engine).reconnectingWebSocketSession(
            "ws://feed.test/", configuration: configuration(engine.clock) { $0.sendsWhileDisconnected = .failFast })
        var states = session.states.makeAsyncIterator()
        let first = try await engine.nextConnection()
        #expect(brief(await stateAfterConnecting(&states)) == "open")
        await first.drop()
        #expect(brief(await nextState(&states)).hasPrefix("reconnecting 1"))
        let error = await #expect(throws: WebSocketError.self) { try await session.send("lost") }
        #expect(error?.code == .notConnected)
        await engine.clock.waitForPendingTimers()
        await engine.clock.advance(by: .seconds(2))
        let second = try await engine.nextConnection()
        #expect(brief(await nextState(&states)) == "open")
        try await session.send("works")
        #expect(try await second.receive()?.readText() == "works")
        await session.close()
    }

    @Test("ping and statistics reach the open connection; notConnected in an outage, sessionClosed after close")
    func pingAndStatistics() async throws {
        let engine = InMemoryEngine()
        let session = try WebSocketClient(engine: engine).reconnectingWebSocketSession(
            "ws://feed.test/", configuration: configuration(engine.clock) { $0.pingInterval = nil })
        var states = session.states.makeAsyncIterator()
        let first = try await engine.nextConnection()
        #expect(brief(await stateAfterConnecting(&states)) == "open")
        _ = try await session.ping()
        try await session.send("one")
        #expect(try await first.receive()?.kind == .ping)
        #expect(try await first.receive()?.readText() == "one")
        let open = try #require(session.connectionStatistics)
        #expect(open.pongsMatched == 1)
        #expect(open.textMessagesSent == 1)

        await first.drop()
        #expect(brief(await nextState(&states)).hasPrefix("reconnecting 1"))
        #expect(session.connectionStatistics == nil)
        let outage = await #expect(throws: WebSocketError.self) { _ = try await session.ping() }
        #expect(outage?.code == .notConnected)

        await engine.clock.waitForPendingTimers()
        await engine.clock.advance(by: .seconds(2))
        let second = try await engine.nextConnection()
        #expect(brief(await nextState(&states)) == "open")
        _ = try await session.ping()
        #expect(try await second.receive()?.kind == .ping)
        let reopened = try #require(session.connectionStatistics)
        #expect(reopened.pongsMatched == 1, "the new connection's figures start from zero")
        #expect(reopened.textMessagesSent == 0)

        await session.close()
        #expect(session.connectionStatistics == nil)
        let closed = await #expect(throws: WebSocketError.self) { _ = try await session.ping() }
        #expect(closed?.code == .sessionClosed)
    }

    @Test("the queue is bounded by count and bytes: beyond either, send throws sendQueueFull")
    func queueBounds() async throws {
        let engine = FlakyEngine()
        engine.failNext([WebSocketError(.connectionRefused, "down")])
        let session = try WebSocketClient(engine: engine).reconnectingWebSocketSession(
            "ws://feed.test/",
            configuration: configuration(engine.memory.clock) {
                $0.sendsWhileDisconnected = .queue(maxMessages: 2, maxBytes: 10)
            })
        var states = session.states.makeAsyncIterator()
        #expect(brief(await stateAfterConnecting(&states)) == "reconnecting 1 2.0 seconds connectionRefused")
        try await session.send("12345")
        let tooBig = await #expect(throws: WebSocketError.self) { try await session.send("123456") }  // 11 bytes
        #expect(tooBig?.code == .sendQueueFull)
        try await session.send("67890")
        let tooMany = await #expect(throws: WebSocketError.self) { try await session.send("") }
        #expect(tooMany?.code == .sendQueueFull)
        await session.close()
        let closed = await #expect(throws: WebSocketError.self) { try await session.send("x") }
        #expect(closed?.code == .sessionClosed)
    }

    @Test("close() during the backoff delay returns at once; nothing reconnects and no timer is left")
    func closeDuringBackoff() async throws {
        let engine = FlakyEngine()
        let session = try WebSocketClient(engine: engine).reconnectingWebSocketSession(
            "ws://feed.test/",
            configuration: configuration(engine.memory.clock) { $0.policy.initialDelay = .seconds(30) })
        var states = session.states.makeAsyncIterator()
        let first = try await engine.memory.nextConnection()
        #expect(brief(await stateAfterConnecting(&states)) == "open")
        await first.drop()
        #expect(brief(await nextState(&states)) == "reconnecting 1 30.0 seconds 1006")
        await engine.memory.clock.waitForPendingTimers()
        // No virtual time passes: it cannot have waited for the delay.
        let prompt = await returnsPromptly({ await session.close() }) {
            await engine.memory.clock.advance(by: .seconds(30))
        }
        #expect(prompt, "close() waited for the backoff delay")
        #expect(engine.memory.clock.now == .zero)
        #expect(brief(await nextState(&states)) == "closed byClient 1000")
        #expect(engine.memory.clock.pendingTimerCount == 0, "the backoff timer was not removed")
        await engine.memory.clock.advance(by: .seconds(120))
        #expect(engine.attempts == 1, "reconnected after close()")
        #expect(brief(session.state) == "closed byClient 1000")
    }

    @Test("cancelling the task that owns the session stops it during the backoff delay (1001)")
    func cancelOwner() async throws {
        let engine = FlakyEngine()
        let client = WebSocketClient(engine: engine)
        let observed = Mutex<ReconnectingWebSocketSession?>(nil)
        let owner = Task {
            try await client.reconnectingWebSocket(
                "ws://feed.test/",
                configuration: configuration(engine.memory.clock) { $0.policy.initialDelay = .seconds(30) }
            ) { session in
                observed.withLock { $0 = session }
                for try await _ in session.messages {}
            }
        }
        let first = try await engine.memory.nextConnection()
        let session = try #require(
            await { () async -> ReconnectingWebSocketSession? in
                while true {
                    if let session = observed.withLock({ $0 }) { return session }
                    await Task.yield()
                }
            }())
        var states = session.states.makeAsyncIterator()
        var state = await nextState(&states)  // the state now: still connecting, or open already
        if brief(state) == "connecting" { state = await nextState(&states) }
        #expect(brief(state) == "open")
        await first.drop()
        #expect(brief(await nextState(&states)) == "reconnecting 1 30.0 seconds 1006")
        owner.cancel()
        let prompt = await returnsPromptly({ _ = try? await owner.value }) {
            await engine.memory.clock.advance(by: .seconds(30))
        }
        #expect(prompt, "the cancelled owner waited for the backoff delay")
        // The block ends either way: its message loop ends when the cancellation closes the session, or it sees
        // the cancellation first and throws.
        if case .failure(let error) = await owner.result { #expect(error is CancellationError, "\(error)") }
        #expect(brief(await nextState(&states)) == "closed byClient 1001")
        #expect(engine.memory.clock.pendingTimerCount == 0)
        await engine.memory.clock.advance(by: .seconds(120))
        #expect(engine.attempts == 1)
    }

    @Test("the keepalive is on by default: a server that stops answering pings is replaced after ping + pong time")
    func keepaliveByDefault() async throws {
        let engine = InMemoryEngine()
        let session = try WebSocketClient(engine: engine).reconnectingWebSocketSession(
            "ws://feed.test/", configuration: configuration(engine.clock))
        var states = session.states.makeAsyncIterator()
        let first = try await engine.nextConnection()
        #expect(brief(await stateAfterConnecting(&states)) == "open")
        first.pauseReading()  // a dead network: nothing the client sends arrives, not even its close frame
        await engine.clock.advance(by: .seconds(20))  // the ping (default interval 20 s)
        #expect(first.clientBufferedBytes > 0, "no ping was sent")
        await engine.clock.advance(by: .seconds(20))  // the pong timeout (default: the interval)
        // Noticed at once, not after the close timeout (10 s) of the dead connection.
        guard brief(await nextState(&states)) == "reconnecting 1 2.0 seconds 1011" else {
            Issue.record("the dead connection was not replaced at the pong timeout")
            return
        }
        #expect(engine.clock.now == .seconds(40))
        await waitForTimer(engine.clock, at: .seconds(42))  // the backoff, before the dead connection's close timer
        await engine.clock.advance(by: .seconds(2))
        _ = try await engine.nextConnection()
        #expect(brief(await nextState(&states)) == "open")
        let closing = Task { await session.close() }
        await engine.clock.advance(by: .seconds(10))  // the dead connection's close timeout
        await closing.value
    }

    @Test("the request block runs before every attempt: each handshake carries a fresh token")
    func requestPerAttempt() async throws {
        let engine = InMemoryEngine()
        let tokens = Atomic<Int>(0)
        let session = try WebSocketClient(engine: engine).reconnectingWebSocketSession(
            "ws://feed.test/", configuration: configuration(engine.clock)
        ) { request in
            request.headers["Authorization"] = "Bearer \(tokens.add(1, ordering: .acquiringAndReleasing).newValue)"
        }
        var states = session.states.makeAsyncIterator()
        let first = try await engine.nextConnection()
        #expect(brief(await stateAfterConnecting(&states)) == "open")
        try await first.close(CloseReason(code: .serviceRestart))  // 1012: retried
        #expect(brief(await nextState(&states)) == "reconnecting 1 2.0 seconds 1012")
        await waitForTimer(engine.clock, at: engine.clock.now + .seconds(2))
        await engine.clock.advance(by: .seconds(2))
        let second = try await engine.nextConnection()
        #expect(first.request.headers["Authorization"] == "Bearer 1")
        #expect(second.request.headers["Authorization"] == "Bearer 2")
        await session.close()
    }

    @Test("refused connects are retried with growing delays; the attempt limit ends in closed with the last error")
    func attemptLimit() async throws {
        let engine = FlakyEngine()
        let refused = WebSocketError(.connectionRefused, "down")
        engine.failNext([refused, refused, WebSocketError(.timedOut, "slow")])
        let session = try WebSocketClient(engine: engine).reconnectingWebSocketSession(
            "ws://feed.test/", configuration: configuration(engine.memory.clock) { $0.policy.maxAttempts = 2 })
        var states = session.states.makeAsyncIterator()
        #expect(brief(await stateAfterConnecting(&states)) == "reconnecting 1 2.0 seconds connectionRefused")
        await engine.memory.clock.waitForPendingTimers()
        await engine.memory.clock.advance(by: .seconds(2))
        #expect(brief(await nextState(&states)) == "reconnecting 2 4.0 seconds connectionRefused")
        await engine.memory.clock.waitForPendingTimers()
        await engine.memory.clock.advance(by: .seconds(4))
        #expect(brief(await nextState(&states)) == "closed timedOut")
        #expect(engine.attempts == 3)
        let error = await #expect(throws: WebSocketError.self) { for try await _ in session.messages {} }
        #expect(error?.code == .sessionClosed)
        #expect((error?.underlying as? WebSocketError)?.code == .timedOut)
        #expect(error?.isNormalClosure == false)
    }

    @Test("a close with 1008 or a rejected upgrade (401) is not retried")
    func notRetried() async throws {
        let engine = InMemoryEngine()
        let session = try WebSocketClient(engine: engine).reconnectingWebSocketSession(
            "ws://feed.test/", configuration: configuration(engine.clock))
        var states = session.states.makeAsyncIterator()
        let first = try await engine.nextConnection()
        #expect(brief(await stateAfterConnecting(&states)) == "open")
        try await first.close(CloseReason(code: .policyViolation, message: "banned"))
        #expect(brief(await nextState(&states)) == "closed 1008")
        #expect(engine.connections.count == 1)

        let rejecting = InMemoryEngine { server in try server.reject(status: 401, body: "token expired") }
        let rejected = try WebSocketClient(engine: rejecting).reconnectingWebSocketSession(
            "ws://feed.test/", configuration: configuration(rejecting.clock))
        // The rejection may come before the subscription: its first state is then already the closed one.
        var seen: [String] = []
        for await state in rejected.states { seen.append(brief(state)) }
        #expect(seen.last == "closed upgradeRejected", "\(seen)")
        #expect(!seen.contains { $0.hasPrefix("reconnecting") }, "\(seen)")
        #expect(rejecting.connections.count == 1)
    }

    @Test("the guide's example: a token per attempt, re-subscribe in the hook, a status from the states")
    func guideExample() async throws {
        struct SubscriptionRefused: Error {}
        let connections = Atomic<Int>(0)
        let engine = InMemoryEngine { server in
            let number = connections.add(1, ordering: .acquiringAndReleasing).newValue
            #expect(server.request.headers["Authorization"] == "Bearer token-\(number)")
            #expect(try await server.receive()?.readText() == #"{"op": "subscribe"}"#)
            try await server.send(text: #"{"ok": true}"#)
            try await server.send(text: "price \(number)")
            if number == 1 { await server.drop() } else { try await server.close(CloseReason(code: .normal)) }
        }
        let tokens = Atomic<Int>(0)
        let client = WebSocketClient(engine: engine)
        let configuration = configuration(engine.clock) { configuration in
            configuration.onConnect = { connection in
                try await connection.send(#"{"op": "subscribe"}"#)
                let ack = try await connection.receiveText()  // the hook may read; what it reads is consumed
                guard ack.contains("ok") else { throw SubscriptionRefused() }
            }
        }
        let (prices, seen) = try await client.reconnectingWebSocket(
            "wss://feed.example.com/ws", configuration: configuration,
            request: { request in
                request.headers["Authorization"] =
                    "Bearer token-\(tokens.add(1, ordering: .acquiringAndReleasing).newValue)"
            }
        ) { feed in
            let status = Task {
                var seen: [String] = []
                for await state in feed.states { seen.append(brief(state)) }
                return seen
            }
            var prices: [String] = []
            for try await message in feed.messages {
                if case .text(let text) = message { prices.append(text) }
                if prices.count == 1 {  // the server drops the first connection: let the backoff delay pass
                    for await state in feed.states { if case .reconnecting = state { break } }
                    await engine.clock.waitForPendingTimers()
                    await engine.clock.advance(by: .seconds(2))
                }
            }
            return (prices, await status.value)
        }
        #expect(prices == ["price 1", "price 2"])
        #expect(seen.last == "closed 1000", "\(seen)")
        #expect(seen.contains("reconnecting 1 2.0 seconds 1006"), "\(seen)")
    }

    @Test("a hook that throws closes the connection with 1011 and ends the session (not retried by default)")
    func hookThrows() async throws {
        struct NotAuthorized: Error {}
        let engine = InMemoryEngine()
        let session = try WebSocketClient(engine: engine).reconnectingWebSocketSession(
            "ws://feed.test/",
            configuration: configuration(engine.clock) { $0.onConnect = { _ in throw NotAuthorized() } })
        var states = session.states.makeAsyncIterator()
        let server = try await engine.nextConnection()
        #expect(brief(await stateAfterConnecting(&states)) == "closed NotAuthorized")
        let close = try #require(try await server.receive())
        #expect(close.kind == .close && close.readReason()?.code == .internalError)
    }
}
