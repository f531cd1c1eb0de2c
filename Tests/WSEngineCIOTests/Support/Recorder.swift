import Glibc
import Logging
import Synchronization
import WSCore

/// A transport handler that records everything it is told, and checks the callback contract as it goes:
/// callbacks never overlap, and none follows `transportDidClose`.
final class Recorder: WebSocketTransportHandler {
    struct State {
        var received: [UInt8] = []
        var drains = 0
        var closes = 0
        var closeError: WebSocketConnectionError?
        var closeErrorText: String?
        var callbacksAfterClose = 0
        var overlappingCallbacks = 0
        var inCallback = false
        var readThreads: Set<UInt> = []
        var largestRead = 0
    }

    let state = Mutex(State())
    /// Runs inside `transportDidRead` (e.g. to call back into the transport), outside the recorder's lock.
    let onRead: (@Sendable (UnsafeRawBufferPointer) -> Void)?

    init(onRead: (@Sendable (UnsafeRawBufferPointer) -> Void)? = nil) {
        self.onRead = onRead
    }

    private func enter() {
        self.state.withLock { state in
            if state.inCallback { state.overlappingCallbacks += 1 }
            if state.closes > 0 { state.callbacksAfterClose += 1 }
            state.inCallback = true
        }
    }

    private func leave() { self.state.withLock { $0.inCallback = false } }

    func transportDidRead(_ bytes: UnsafeRawBufferPointer) {
        self.enter()
        self.state.withLock { state in
            state.received.append(contentsOf: bytes)
            state.largestRead = max(state.largestRead, bytes.count)
            state.readThreads.insert(UInt(pthread_self()))
        }
        self.onRead?(bytes)
        self.leave()
    }

    func transportDidDrain() {
        self.enter()
        self.state.withLock { $0.drains += 1 }
        self.leave()
    }

    func transportDidClose(error: (any Error)?) {
        self.enter()
        self.state.withLock { state in
            state.closes += 1
            state.closeError = error as? WebSocketConnectionError
            state.closeErrorText = error.map { "\($0)" }
        }
        self.leave()
    }

    var receivedCount: Int { self.state.withLock { $0.received.count } }
    var received: [UInt8] { self.state.withLock { $0.received } }
    var closes: Int { self.state.withLock { $0.closes } }
    var drains: Int { self.state.withLock { $0.drains } }

    /// Polls `condition` until it holds or `timeout` passes.
    /// - Returns: Whether the condition held.
    func wait(timeout: Duration = .seconds(15), until condition: (borrowing State) -> Bool) async -> Bool {
        let deadline = ContinuousClock.now + timeout
        while ContinuousClock.now < deadline {
            if self.state.withLock({ condition($0) }) { return true }
            try? await Task.sleep(for: .milliseconds(3))
        }
        return self.state.withLock { condition($0) }
    }
}

/// A logger for tests: silent, unless CIO_TEST_LOG is set (then trace to stderr).
let testLogger: Logger = {
    if getenv("CIO_TEST_LOG") != nil {
        var logger = Logger(label: "cio-test", factory: { StreamLogHandler.standardError(label: $0) })
        logger.logLevel = .trace
        return logger
    }
    return Logger(label: "cio-test", factory: { _ in SwiftLogNoOpLogHandler() })
}()

/// Connect options with `timeout` and the test logger.
func options(timeout: Duration = .seconds(10)) -> EngineConnectOptions {
    EngineConnectOptions(connectTimeout: timeout, logger: testLogger)
}

/// Deterministic test bytes.
func pattern(count: Int, seed: UInt64 = 0x9E37_79B9_7F4A_7C15) -> [UInt8] {
    var state = seed
    return (0..<count).map { _ in
        state = state &* 6_364_136_223_846_793_005 &+ 1_442_695_040_888_963_407
        return UInt8(truncatingIfNeeded: state >> 33)
    }
}
