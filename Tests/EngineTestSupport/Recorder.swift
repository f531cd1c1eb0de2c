// What the engine tests (WSEngineCIOTests, WSEngineCurlTests) share besides the peers: a transport handler that
// records and checks the callback contract, the test logger, connect options and deterministic bytes.
import Glibc
package import Logging
package import Synchronization
package import WSCore

/// A transport handler that records everything it is told, and checks the callback contract as it goes:
/// callbacks never overlap, and none follows `transportDidClose`.
package final class Recorder: WebSocketTransportHandler {
    /// What the recorder saw.
    package struct State {
        /// Every byte read, in order.
        package var received: [UInt8] = []
        /// `transportDidDrain` calls.
        package var drains = 0
        /// `transportDidClose` calls.
        package var closes = 0
        /// The close error, when it was a connection error.
        package var closeError: WebSocketError?
        /// The close error's description, whatever its type.
        package var closeErrorText: String?
        /// Callbacks made after `transportDidClose`.
        package var callbacksAfterClose = 0
        /// Callbacks made while another one was running.
        package var overlappingCallbacks = 0
        /// A callback is running.
        package var inCallback = false
        /// The threads that made any callback.
        package var callbackThreads: Set<UInt> = []
        /// The threads that made `transportDidRead` calls.
        package var readThreads: Set<UInt> = []
        /// The most bytes one `transportDidRead` delivered.
        package var largestRead = 0
    }

    /// The recorded state.
    package let state = Mutex(State())
    /// Runs inside `transportDidRead` (e.g. to call back into the transport), outside the recorder's lock.
    let onRead: (@Sendable (UnsafeRawBufferPointer) -> Void)?

    /// Creates a recorder; `onRead` runs on every read.
    package init(onRead: (@Sendable (UnsafeRawBufferPointer) -> Void)? = nil) {
        self.onRead = onRead
    }

    private func enter() {
        self.state.withLock { state in
            if state.inCallback { state.overlappingCallbacks += 1 }
            if state.closes > 0 { state.callbacksAfterClose += 1 }
            state.inCallback = true
            state.callbackThreads.insert(UInt(pthread_self()))
        }
    }

    private func leave() { self.state.withLock { $0.inCallback = false } }

    package func transportDidRead(_ bytes: UnsafeRawBufferPointer) {
        self.enter()
        self.state.withLock { state in
            state.received.append(contentsOf: bytes)
            state.largestRead = max(state.largestRead, bytes.count)
            state.readThreads.insert(UInt(pthread_self()))
        }
        self.onRead?(bytes)
        self.leave()
    }

    package func transportDidDrain() {
        self.enter()
        self.state.withLock { $0.drains += 1 }
        self.leave()
    }

    package func transportDidClose(error: (any Error)?) {
        self.enter()
        self.state.withLock { state in
            state.closes += 1
            state.closeError = error as? WebSocketError
            state.closeErrorText = error.map { "\($0)" }
        }
        self.leave()
    }

    /// The number of bytes read so far.
    package var receivedCount: Int { self.state.withLock { $0.received.count } }
    /// The bytes read so far.
    package var received: [UInt8] { self.state.withLock { $0.received } }
    /// `transportDidClose` calls so far.
    package var closes: Int { self.state.withLock { $0.closes } }
    /// `transportDidDrain` calls so far.
    package var drains: Int { self.state.withLock { $0.drains } }
    /// Whether the contract held: no overlapping callbacks, none after close, all on one thread.
    package var contractHeld: Bool {
        self.state.withLock {
            $0.overlappingCallbacks == 0 && $0.callbacksAfterClose == 0 && $0.callbackThreads.count <= 1
        }
    }

    /// Polls `condition` until it holds or `timeout` passes.
    /// - Returns: Whether the condition held.
    package func wait(timeout: Duration = .seconds(20), until condition: (borrowing State) -> Bool) async -> Bool {
        let deadline = ContinuousClock.now + timeout
        while ContinuousClock.now < deadline {
            if self.state.withLock({ condition($0) }) { return true }
            try? await Task.sleep(for: .milliseconds(3))
        }
        return self.state.withLock { condition($0) }
    }
}

/// A logger for tests: silent, unless ENGINE_TEST_LOG is set (then trace to stderr).
package let testLogger: Logger = {
    if getenv("ENGINE_TEST_LOG") != nil {
        var logger = Logger(label: "engine-test", factory: { StreamLogHandler.standardError(label: $0) })
        logger.logLevel = .trace
        return logger
    }
    return Logger(label: "engine-test", factory: { _ in SwiftLogNoOpLogHandler() })
}()

/// Connect options with `timeout` and the test logger.
package func options(timeout: Duration = .seconds(10), logger: Logger = testLogger) -> EngineConnectOptions {
    EngineConnectOptions(connectTimeout: timeout, logger: logger)
}

/// Deterministic test bytes.
package func pattern(count: Int, seed: UInt64 = 0x9E37_79B9_7F4A_7C15) -> [UInt8] {
    var state = seed
    var bytes = [UInt8](repeating: 0, count: count)
    for index in 0..<count {
        state = state &* 6_364_136_223_846_793_005 &+ 1_442_695_040_888_963_407
        bytes[index] = UInt8(truncatingIfNeeded: state >> 33)
    }
    return bytes
}
