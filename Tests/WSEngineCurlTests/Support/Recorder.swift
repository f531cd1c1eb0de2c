import Glibc
import Logging
import Synchronization
import WSCore
import WSEngineCurl

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
        var callbackThreads: Set<UInt> = []
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
            state.callbackThreads.insert(UInt(pthread_self()))
        }
    }

    private func leave() { self.state.withLock { $0.inCallback = false } }

    func transportDidRead(_ bytes: UnsafeRawBufferPointer) {
        self.enter()
        self.state.withLock { $0.received.append(contentsOf: bytes) }
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
    /// Whether the contract held: no overlapping callbacks, none after close, all on one thread.
    var contractHeld: Bool {
        self.state.withLock {
            $0.overlappingCallbacks == 0 && $0.callbacksAfterClose == 0 && $0.callbackThreads.count <= 1
        }
    }

    /// Polls `condition` until it holds or `timeout` passes.
    /// - Returns: Whether the condition held.
    func wait(timeout: Duration = .seconds(20), until condition: (borrowing State) -> Bool) async -> Bool {
        let deadline = ContinuousClock.now + timeout
        while ContinuousClock.now < deadline {
            if self.state.withLock({ condition($0) }) { return true }
            try? await Task.sleep(for: .milliseconds(3))
        }
        return self.state.withLock { condition($0) }
    }
}

/// A log handler that keeps every message (with its metadata) for inspection.
struct CapturingLogHandler: LogHandler {
    final class Storage: Sendable {
        let lines = Mutex<[String]>([])
        var all: [String] { self.lines.withLock { $0 } }
    }

    let storage: Storage
    var metadata: Logger.Metadata = [:]
    var logLevel: Logger.Level = .trace

    subscript(metadataKey key: String) -> Logger.Metadata.Value? {
        get { self.metadata[key] }
        set { self.metadata[key] = newValue }
    }

    func log(event: LogEvent) {
        let merged = self.metadata.merging(event.metadata ?? [:]) { $1 }
        self.storage.lines.withLock { $0.append("\(event.level) \(event.message) \(merged)") }
    }
}

/// A logger for tests: silent, unless CURL_TEST_LOG is set (then trace to stderr).
let testLogger: Logger = {
    if getenv("CURL_TEST_LOG") != nil {
        var logger = Logger(label: "curl-test", factory: { StreamLogHandler.standardError(label: $0) })
        logger.logLevel = .trace
        return logger
    }
    return Logger(label: "curl-test", factory: { _ in SwiftLogNoOpLogHandler() })
}()

/// Connect options with `timeout` and the test logger.
func options(timeout: Duration = .seconds(10), logger: Logger = testLogger) -> EngineConnectOptions {
    EngineConnectOptions(connectTimeout: timeout, logger: logger)
}

/// A configuration that never uses a proxy (`""` overrides the *_proxy environment variables), so test traffic
/// cannot leave the machine whatever the environment says.
func directConfiguration(
    trustedCAFile: String? = nil, insecure: Bool = false, verbose: Bool = false
) -> CurlEngine.Configuration {
    CurlEngine.Configuration(
        trustedCAFile: trustedCAFile, proxy: "", dangerouslyDisableCertificateVerification: insecure,
        verbose: verbose)
}

/// Deterministic test bytes.
func pattern(count: Int, seed: UInt64 = 0x9E37_79B9_7F4A_7C15) -> [UInt8] {
    var state = seed
    var bytes = [UInt8](repeating: 0, count: count)
    for index in 0..<count {
        state = state &* 6_364_136_223_846_793_005 &+ 1_442_695_040_888_963_407
        bytes[index] = UInt8(truncatingIfNeeded: state >> 33)
    }
    return bytes
}
