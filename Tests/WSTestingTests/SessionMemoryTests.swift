import Dispatch
import Synchronization
import Testing
import WSTesting

@testable import WSCore

/// What a session keeps only while it is used (memory per session), checked through what a user sees.
@Suite("Session memory", .timeLimit(.minutes(1)))
struct SessionMemoryTests {
    /// The close codes the server received, in order.
    private final class CloseCodes: Sendable {
        let codes = Mutex<[CloseReason.Code?]>([])
        var all: [CloseReason.Code?] { self.codes.withLock { $0 } }
    }

    /// An engine whose servers record the close codes they receive.
    private func recordingEngine(_ codes: CloseCodes) -> InMemoryEngine {
        InMemoryEngine { server in
            while let frame = try await server.receive() {
                if frame.kind == .close { codes.codes.withLock { $0.append(frame.readReason()?.code) } }
            }
        }
    }

    @Test("a block that returns closes with 1000 and returns its value; one that throws closes with 1000 and rethrows")
    func blockReturnsOrThrows() async throws {
        struct Failed: Error {}
        let codes = CloseCodes()
        let client = WebSocketClient(engine: self.recordingEngine(codes))
        let value = try await client.webSocket("ws://a.test/") { session in
            try await session.send("hi")
            return 42
        }
        #expect(value == 42)
        await #expect(throws: Failed.self) {
            try await client.webSocket("ws://a.test/") { _ in throw Failed() }
        }
        #expect(codes.all == [.normal, .normal])
        await client.close()
    }

    @Test("a block cancelled while it waits for a message closes with 1001 and throws CancellationError")
    func blockCancelled() async throws {
        let engine = InMemoryEngine()
        let client = WebSocketClient(engine: engine)
        let (started, startedContinuation) = AsyncStream.makeStream(of: Void.self)
        let task = Task {
            try await client.webSocket("ws://a.test/") { session in
                startedContinuation.yield()
                _ = try await session.incoming.receive()
            }
        }
        let server = try await engine.nextConnection()
        for await _ in started { break }
        task.cancel()
        let frame = try #require(try await server.receive())
        #expect(frame.kind == .close)
        #expect(frame.readReason()?.code == .goingAway)
        await #expect(throws: CancellationError.self) { try await task.value }
        await client.close()
    }

    @Test("a block runs on its session's executor when the engine chose none for the connection")
    func blockHopsToTheSessionExecutor() async throws {
        let executor = MarkingExecutor()
        let client = WebSocketClient(engine: ExecutorEngine(InMemoryEngine(), executor))
        let onSessionExecutor = try await client.webSocket("ws://a.test/") { session in
            #expect(session.executor === executor)
            return MarkingExecutor.isCurrent
        }
        #expect(onSessionExecutor)
        #expect(!MarkingExecutor.isCurrent)
        await client.close()
    }

    @Test("an open session keeps no timer storage without keepalive; with it, one timer until it ends")
    func timerStorage() async throws {
        let engine = InMemoryEngine()
        let quiet = try await WebSocketClient(engine: engine).webSocketSession("ws://a.test/")
        _ = try await engine.nextConnection()
        // The opening's timer ran until the handshake ended; nothing is kept for it afterwards.
        let quietTimers = quiet.connection.state.withLock { s in (s.io.timers.count, s.io.timers.hasStorage) }
        #expect(quietTimers == (0, false))
        await quiet.close()

        let pinging = try await WebSocketClient(engine: engine) { config in
            config.install(WebSockets.self) { $0.pingInterval = .seconds(5) }
        }.webSocketSession("ws://a.test/")
        let running = pinging.connection.state.withLock { s in s.io.timers.count }
        #expect(running == 1)
        // The keepalive still runs while its timers stop and start again: a ping goes out every interval.
        let server = try await engine.nextConnection()
        for _ in 0..<3 {
            await engine.clock.advance(by: .seconds(5))
            #expect(server.nextFrameIfAvailable()?.kind == .ping)
        }
        #expect(!pinging.isClosed)
        await pinging.close()
        let endTimers = pinging.connection.state.withLock { s in (s.io.timers.count, s.io.timers.hasStorage) }
        #expect(endTimers == (0, false))
    }

    @Test("timers replace, ignore stale fires and release their storage when the last one stops")
    func timerTable() {
        struct Timer: WebSocketTransportTimer {
            func cancel() {}
        }
        var timers = SessionTimers()
        let first = timers.set(.open, token: 1, Timer())
        let second = timers.set(.ping, token: 2, Timer())
        let replaced = timers.set(.ping, token: 3, Timer())  // the old one is handed back to be cancelled
        #expect(first == nil && second == nil && replaced != nil)
        #expect(timers.count == 2)
        let stale = timers.remove(.ping, ifToken: 2)
        let current = timers.remove(.ping, ifToken: 3)
        let notRunning = timers.remove(.pong)
        #expect(!stale && current && notRunning == nil)
        #expect(timers.hasStorage)
        let last = timers.remove(.open)
        #expect(last != nil)
        #expect(timers.count == 0 && !timers.hasStorage)
        _ = timers.set(.close, token: 4, Timer())
        timers.cancelAll()
        #expect(timers.count == 0 && !timers.hasStorage)
    }

    @Test("the sessions of a client share its limits, and they apply")
    func sharedLimits() async throws {
        let engine = InMemoryEngine()
        let client = WebSocketClient(engine: engine) { config in
            config.install(WebSockets.self) { $0.maxIncomingBufferMessages = 7 }
        }
        let first = try await client.webSocketSession("ws://a.test/")
        let second = try await client.webSocketSession("ws://a.test/")
        let limits = { (session: WebSocketSession) in session.connection.state.withLock { s in s.machine.sharedLimits }
        }
        #expect(limits(first) === limits(second))
        #expect(limits(first).maxIncomingBufferMessages == 7)
        await first.close()
        await second.close()
    }
}

/// A task executor on a serial queue of its own; `isCurrent` tells whether the caller runs on it.
private final class MarkingExecutor: TaskExecutor {
    private static let key = DispatchSpecificKey<Bool>()
    private let queue = DispatchQueue(label: "marking executor")

    init() { self.queue.setSpecific(key: Self.key, value: true) }

    static var isCurrent: Bool { DispatchQueue.getSpecific(key: Self.key) == true }

    func enqueue(_ job: consuming ExecutorJob) {
        let job = UnownedJob(job)
        self.queue.async { job.runSynchronously(on: self.asUnownedTaskExecutor()) }
    }
}

/// An engine that picks no executor for a connection (``WebSocketEngine/executorForNextConnection()`` is `nil`)
/// while its transports run on `executor`.
private final class ExecutorEngine: WebSocketEngine {
    let base: InMemoryEngine
    let executor: MarkingExecutor

    init(_ base: InMemoryEngine, _ executor: MarkingExecutor) {
        self.base = base
        self.executor = executor
    }

    var name: String { "Executor" }
    func isSupported(_ capability: EngineCapability) -> Bool { self.base.isSupported(capability) }
    func unsupportedReason(_ capability: EngineCapability) -> String? { self.base.unsupportedReason(capability) }
    func executorForNextConnection() -> (any TaskExecutor)? { nil }
    func shutdown() async { await self.base.shutdown() }

    func connect(to endpoint: EngineEndpoint, options: EngineConnectOptions) async throws -> any WebSocketTransport {
        ExecutorTransport(base: try await self.base.connect(to: endpoint, options: options), executor: self.executor)
    }
}

/// A transport that reports `executor` as its own and does the rest through `base`.
private final class ExecutorTransport: WebSocketTransport {
    let base: any WebSocketTransport
    let executor: (any TaskExecutor)?

    init(base: any WebSocketTransport, executor: (any TaskExecutor)?) {
        self.base = base
        self.executor = executor
    }

    func start(handler: any WebSocketTransportHandler) { self.base.start(handler: handler) }
    func write(_ bytes: [UInt8]) -> Int { self.base.write(bytes) }
    func write(bytes: UnsafeRawBufferPointer) -> Int { self.base.write(bytes: bytes) }
    func writeLast(_ bytes: [UInt8]) -> Int { self.base.writeLast(bytes) }
    func setReadingPaused(_ paused: Bool) { self.base.setReadingPaused(paused) }
    func close() { self.base.close() }
    func abort() { self.base.abort() }
    var bufferedBytes: Int { self.base.bufferedBytes }
    func schedule(after delay: Duration, _ action: @escaping @Sendable () -> Void) -> (any WebSocketTransportTimer)? {
        self.base.schedule(after: delay, action)
    }
    var openingResponse: EngineOpeningResponse? { self.base.openingResponse }
}
