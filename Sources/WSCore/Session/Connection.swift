import DequeModule
import Logging
import Synchronization

/// The engine-independent heart of a session: the glue between a transport and a ``SessionStateMachine``. It feeds
/// the machine the transport's events, the user's sends and closes, the consumers' requests and the timers, and
/// carries out the actions the machine returns: transport writes, continuation resumes, timers.
///
/// Locking: one `Mutex` holds the machine and what the glue keeps beside it (continuations by id, running timers,
/// masking keys). Actions are performed as the machine emits them, under that lock: transport writes (so frames
/// reach the transport in the order the machine and the extensions saw them), continuation resumes and timer
/// changes. Only the transport calls that may report back (`close`, `abort`, `setReadingPaused`) are made after it is
/// released. The transport's own lock is innermost.
@usableFromInline
final class Connection: WebSocketTransportHandler, Sendable {
    let transport: any WebSocketTransport
    /// ``WebSockets/Configuration/maxOutgoingBufferBytes``: above it, senders wait for the transport to drain. (The
    /// rest of the configuration is not kept here: the machine keeps what it needs, and memory per connection counts.)
    let maxOutgoingBufferBytes: Int
    let logger: Logger
    /// The client's metrics; `nil` when off (then the session does no metrics work).
    let metrics: ClientMetrics?
    /// The machine and the glue's state (Connection+Observability.swift reads it too).
    let state: Mutex<Locked>

    /// The session's short id and URL, for the metadata of a warning logged above debug level (where the logger does
    /// not carry them; see `Logger.setSessionMetadata`). `nil` for a connection made without a session opening.
    let identity: (id: String, url: WebSocketURL)?

    init(
        transport: any WebSocketTransport, settings: WebSockets.Configuration,
        limits: SessionStateMachine.Limits? = nil,
        logger: Logger, metrics: ClientMetrics? = nil, identity: (id: String, url: WebSocketURL)? = nil
    ) {
        self.transport = transport
        self.maxOutgoingBufferBytes = settings.maxOutgoingBufferBytes
        self.logger = logger
        self.identity = identity
        self.metrics = metrics
        self.state = Mutex(Locked(machine: SessionStateMachine(configuration: settings, limits: limits), io: IO()))
        self.state.withLock { $0.io.connection = self }
    }

    struct Locked {
        var machine: SessionStateMachine
        var io: IO
    }

    /// Transport calls decided under the lock and made after it is released.
    struct Deferred {
        var closeTransport = false
        var abortTransport = false
        var syncReadingPaused = false

        var isEmpty: Bool { !self.closeTransport && !self.abortTransport && !self.syncReadingPaused }
    }

    /// What the glue keeps beside the machine, and how it performs the machine's actions (under the lock).
    struct IO: SessionActionSink {
        /// The connection this lives in, set right after it is created. Unowned and uncounted: this struct lives in
        /// the connection's own `Mutex`, so it never outlives it (a counted reference would be a cycle).
        unowned(unsafe) var connection: Connection!
        var keys = MaskingKeyGenerator()
        /// The opening handshake's waiter. Unsafe, not checked: a checked continuation is not frozen, so this struct,
        /// and the machine's lock around it, would have a layout known only at run time (see `StoredInstant`). It is
        /// resumed once, by `finishHandshake` or `failHandshake`, which take it.
        var handshake: UnsafeContinuation<OpeningHandshake.Outcome, any Error>?
        var openTimeoutError: (@Sendable () -> WebSocketError)?
        var consumers = Deque<
            (id: SessionStateMachine.ConsumerID, continuation: UnsafeContinuation<Frame?, any Error>)
        >()
        var endWaiters: [CheckedContinuation<Void, Never>] = []
        /// Waiters for the session to start closing or fail (see `waitUntilClosing`).
        var closingWaiters: [CheckedContinuation<Void, Never>] = []
        /// Senders waiting for the outgoing buffer to drain (or the session to end).
        var drainWaiters = CancellableWaiters()
        /// Senders of a data message waiting for a fragmented message being sent to end (or the session to close).
        var messageEndWaiters = CancellableWaiters()
        /// The running timers; a fire whose token is no longer here is stale (replaced or cancelled) and ignored.
        var timers = SessionTimers()
        var lastTimerToken: UInt64 = 0
        /// Counts changes of the machine's `readingPaused`, so a stale pause or resume applied to the transport after
        /// a newer decision is noticed and corrected (see `syncReadingPaused`).
        var pauseGeneration: UInt64 = 0
        var deferred = Deferred()
        /// The sent side of the statistics (the machine counts the received side), and when the session opened.
        var sent = SentCounters()
        /// The metrics reports' timer and what was last reported; `nil` in a connection without metrics (a pointer's
        /// worth of memory).
        var metricsReporting: MetricsReporting?
        /// The application's pings waiting for their pong, with their timeout timers.
        var pings:
            [SessionStateMachine.PingID: (
                continuation: CheckedContinuation<Duration, any Error>, timer: any WebSocketTransportTimer
            )] = [:]
        var lastPingID: SessionStateMachine.PingID = 0
        /// The final metrics report is done (see `sessionEnded`); only waited for when the client has metrics.
        var endReported = false

        /// Resumes the closing waiters once the machine has a close reason (it is closing, closed or failed).
        mutating func resumeClosingWaiters(ifClosing closing: Bool) {
            guard closing else { return }
            for waiter in self.closingWaiters { waiter.resume() }
            self.closingWaiters = []
        }

        var transport: any WebSocketTransport { self.connection.transport }

        var outgoingBufferedBytes: Int { self.transport.bufferedBytes }

        mutating func takeDeferred() -> Deferred {
            defer { self.deferred = Deferred() }
            return self.deferred
        }

        /// Wakes the senders waiting for the end of a fragmented message (they try again).
        mutating func resumeMessageEndWaiters() {
            self.messageEndWaiters.resumeAll()
        }

        mutating func perform(_ action: SessionStateMachine.Action) {
            switch action {
            case .writeControl(let frame):
                self.sent.countControl(payload: frame.data.count)
                _ = FrameEncoder.withEncodedFrame(frame, maskingKey: self.keys.next()) {
                    self.transport.write(bytes: $0)
                }
            case .sendClose(let reason):
                let bytes = FrameEncoder.encodedFrame(Frame.close(reason), maskingKey: self.keys.next())
                self.sent.frames &+= 1
                self.sent.wireBytes &+= bytes.count
                self.transport.writeLast(bytes)
                self.resumeMessageEndWaiters()
            case .deliver(let frame, let id):
                self.removeConsumer(id)?.resume(returning: frame)
            case .endIncoming(let error, let id):
                guard let continuation = self.removeConsumer(id) else { return }
                if let error { continuation.resume(throwing: error) } else { continuation.resume(returning: nil) }
            case .setReadingPaused:
                self.pauseGeneration &+= 1
                self.deferred.syncReadingPaused = true
            case .armTimer(let kind, let delay):
                self.arm(kind, after: delay)
            case .cancelTimer(let kind):
                self.timers.remove(kind)?.cancel()
            case .closeTransport:
                self.deferred.closeTransport = true
            case .abortTransport:
                self.deferred.abortTransport = true
            case .finishHandshake(let outcome):
                self.sent.openedAt = StoredInstant(.now)
                self.handshake.take()?.resume(returning: outcome)
            case .failHandshake(let error):
                self.handshake.take()?.resume(throwing: error)
            case .resumeDrainWaiters:
                self.drainWaiters.resumeAll()
            case .connectionEnded:
                // With metrics, the end waiters are resumed after the final report (`sessionEnded`), so what a
                // session counted is in the metrics once `close()` returns.
                if self.connection.metrics == nil {
                    for waiter in self.endWaiters { waiter.resume() }
                    self.endWaiters = []
                }
                for waiter in self.closingWaiters { waiter.resume() }
                self.closingWaiters = []
                self.drainWaiters.resumeAll()
                self.resumeMessageEndWaiters()
                self.timers.cancelAll()
                self.metricsReporting?.timer.take()?.cancel()
                for (_, ping) in self.pings {
                    ping.timer.cancel()
                    ping.continuation.resume(
                        throwing: WebSocketError(
                            .sessionClosed, "the session ended before the pong of the ping arrived"))
                }
                self.pings = [:]
            case .pongReceived(let id, let rtt):
                self.connection.metrics?.pingAnswered(after: rtt)
                if let id, let ping = self.pings.removeValue(forKey: id) {
                    ping.timer.cancel()
                    ping.continuation.resume(returning: rtt)
                }
            }
        }

        mutating func removeConsumer(_ id: SessionStateMachine.ConsumerID) -> UnsafeContinuation<Frame?, any Error>? {
            // Consumers are served in order: the one asked for is almost always the first.
            guard let index = self.consumers.firstIndex(where: { $0.id == id }) else { return nil }
            return self.consumers.remove(at: index).continuation
        }

        /// Runs the timer on the engine's timer heap (or in a task if the engine has none). The timer holds the
        /// connection until it fires or is cancelled, which every timer is when the connection ends. Not a weak
        /// reference: that would give the connection a side table and slow down every retain and release of it.
        private mutating func arm(_ kind: SessionStateMachine.TimerKind, after delay: Duration) {
            let connection: Connection = self.connection
            self.lastTimerToken &+= 1
            let token = self.lastTimerToken
            let fire: @Sendable () -> Void = { connection.timerFired(kind, token: token) }
            let timer = self.transport.schedule(after: delay, fire) ?? TaskTimer(after: delay, fire)
            self.timers.set(kind, token: token, timer)?.cancel()
        }
    }

    /// Makes the transport calls decided under the lock.
    private func carryOut(_ deferred: Deferred) {
        if deferred.syncReadingPaused { self.syncReadingPaused() }
        if deferred.closeTransport { self.transport.close() }
        if deferred.abortTransport { self.transport.abort() }
    }

    /// Applies the latest pause decision to the transport. The decision is made under the lock but applied after it
    /// is released, so a reader pausing and a consumer resuming can apply in the wrong order; re-checking the
    /// generation after applying repairs that (the last apply always sees the latest decision).
    private func syncReadingPaused() {
        while true {
            let (paused, generation) = self.state.withLock { ($0.machine.readingPaused, $0.io.pauseGeneration) }
            self.transport.setReadingPaused(paused)
            if self.state.withLock({ $0.io.pauseGeneration == generation }) { return }
        }
    }

    private func timerFired(_ kind: SessionStateMachine.TimerKind, token: UInt64) {
        let deferred = self.state.withLock { s -> Deferred in
            guard s.io.timers.remove(kind, ifToken: token) else { return Deferred() }
            if kind == .open, let makeError = s.io.openTimeoutError {
                s.machine.failHandshake(makeError(), &s.io)
            } else {
                s.machine.timerFired(kind, at: kind == .ping ? .now : nil, &s.io)
            }
            if !s.io.closingWaiters.isEmpty { s.io.resumeClosingWaiters(ifClosing: s.machine.closeReason != nil) }
            return s.io.takeDeferred()
        }
        self.carryOut(deferred)
    }

    // MARK: - Opening handshake

    /// Sends the upgrade request and waits for a valid 101 response.
    /// - Parameters:
    ///   - handshake: The request and what the response must satisfy.
    ///   - timeout: How long the response may take; then the handshake fails with `timeoutError`.
    ///   - timeoutError: Makes the error of a handshake that took longer than `timeout`.
    func performHandshake(
        _ handshake: OpeningHandshake, timeout: Duration,
        timeoutError: @escaping @Sendable () -> WebSocketError
    ) async throws -> OpeningHandshake.Outcome {
        try await withTaskCancellationHandler {
            try await withUnsafeThrowingContinuation {
                (continuation: UnsafeContinuation<OpeningHandshake.Outcome, any Error>) in
                self.beginHandshake(handshake, continuation, timeout: timeout, timeoutError: timeoutError)
            }
        } onCancel: {
            self.transport.abort()
        }
    }

    /// The synchronous part of ``performHandshake(_:timeout:timeoutError:)``, kept out of its async frame.
    @inline(never)
    private func beginHandshake(
        _ handshake: OpeningHandshake, _ continuation: UnsafeContinuation<OpeningHandshake.Outcome, any Error>,
        timeout: Duration, timeoutError: @escaping @Sendable () -> WebSocketError
    ) {
        self.state.withLock { s in
            s.io.handshake = continuation
            s.io.openTimeoutError = timeoutError
            s.machine.beginHandshake(handshake, timeout: timeout, &s.io)
        }
        self.transport.start(handler: self)
        self.transport.write(handshake.requestBytes())
    }

    /// Opens the session with an outcome the engine negotiated (an HTTP/2 extended CONNECT): no HTTP/1.1 handshake;
    /// frames flow at once.
    /// - Parameter outcome: The subprotocol and extensions in effect.
    func beginOpened(_ outcome: OpeningHandshake.Outcome) {
        self.state.withLock { s in s.machine.opened(outcome) }
        self.transport.start(handler: self)
    }

    /// Called once the session object exists: starts the ping timer if configured, and the metrics reports.
    func startTimers() {
        self.state.withLock { s in
            s.io.openTimeoutError = nil
            s.machine.startKeepalive(&s.io)
            if self.metrics != nil, !s.machine.hasEnded { self.armMetricsTimer(&s.io) }
        }
    }

    // MARK: - Transport events

    @usableFromInline
    func transportDidRead(_ bytes: UnsafeRawBufferPointer) {
        let deferred = self.state.withLock { s -> Deferred in
            s.machine.read(bytes, at: s.machine.isAwaitingPong ? .now : nil, &s.io)
            if !s.io.closingWaiters.isEmpty { s.io.resumeClosingWaiters(ifClosing: s.machine.closeReason != nil) }
            return s.io.takeDeferred()
        }
        if !deferred.isEmpty { self.carryOut(deferred) }
    }

    @usableFromInline
    func transportDidDrain() {
        self.state.withLock { s in s.machine.transportDrained(&s.io) }
    }

    @usableFromInline
    func transportDidClose(error: (any Error)?) {
        let deferred = self.state.withLock { s -> Deferred in
            s.machine.transportClosed(error, &s.io)
            return s.io.takeDeferred()
        }
        self.carryOut(deferred)
        self.sessionEnded()
    }

    // MARK: - Sending

    /// Encodes and writes a data, ping or pong frame from the user, without waiting.
    /// - Returns: Whether more than ``WebSockets/Configuration/maxOutgoingBufferBytes`` are now buffered (the caller
    ///   should wait for the transport to drain).
    @usableFromInline
    func enqueue(_ original: Frame) throws -> Bool {
        let buffered = try self.state.withLock { s throws -> Int in
            let wasFragmented = s.machine.isSendingFragmentedMessage
            // `nil` when no extension changed the frame: the user's frame is written as is, without a copy (a retain
            // and a release per send).
            let transformed = try s.machine.checkSend(original)
            s.io.sent.count(original, wirePayload: transformed?.data.count ?? original.data.count)
            if wasFragmented && !s.machine.isSendingFragmentedMessage { s.io.resumeMessageEndWaiters() }
            let key = s.io.keys.next()
            if let transformed { return self.write(transformed, maskingKey: key) }
            return self.write(original, maskingKey: key)
        }
        return buffered > self.maxOutgoingBufferBytes
    }

    /// Encodes `frame` with `maskingKey` and hands it to the transport (under the lock).
    /// - Returns: The transport's buffered bytes after the write.
    private func write(_ frame: Frame, maskingKey key: MaskingKey) -> Int {
        if frame.data.count <= FrameEncoder.maxTemporaryPayload {
            // Small frames are encoded in a temporary buffer that the transport copies into its write buffer (where
            // a burst of small messages is gathered anyway): no array per message.
            return FrameEncoder.withEncodedFrame(frame, maskingKey: key) { self.transport.write(bytes: $0) }
        }
        return self.transport.write(FrameEncoder.encodedFrame(frame, maskingKey: key))
    }

    /// How many senders wait for the end of a fragmented message being sent (for tests).
    package var sendersWaitingForMessageEnd: Int { self.state.withLock { $0.io.messageEndWaiters.count } }

    /// Waits until no fragmented message is being sent (its last frame went out), or the session is closing.
    /// - Parameter cancellable: Whether cancelling the task ends the wait.
    /// - Returns: `false` if the task was cancelled first.
    nonisolated(nonsending) func waitForMessageEnd(cancellable: Bool = true) async -> Bool {
        await self.state.waitCancellably(in: \Locked.io.messageEndWaiters, cancellable: cancellable) {
            !$0.machine.isSendingFragmentedMessage
        }
    }

    /// Waits until the transport's buffer is at most `limit` bytes, or the connection ended.
    /// - Parameters:
    ///   - limit: The most bytes left buffered.
    ///   - cancellable: Whether cancelling the task ends the wait.
    /// - Returns: `false` if the task was cancelled first.
    nonisolated(nonsending) func waitForDrain(above limit: Int, cancellable: Bool = true) async -> Bool {
        await self.state.waitCancellably(in: \Locked.io.drainWaiters, cancellable: cancellable) { s in
            s.machine.hasEnded || self.transport.bufferedBytes <= limit
        }
    }

    // MARK: - Closing

    /// Starts the close handshake with `reason` (nil: no status code) and, if asked, waits until the
    /// connection has ended (the server's close and TCP close, or the close timeout).
    nonisolated(nonsending) func close(_ reason: CloseReason?, waitForEnd: Bool) async {
        self.beginClose(reason)
        if waitForEnd { await self.waitForEnd() }
    }

    /// The synchronous part of ``close(_:waitForEnd:)``, kept out of its async frame; starts the close handshake
    /// without waiting (a reconnecting session closes its connection with it from a cancellation handler).
    @inline(never)
    func beginClose(_ reason: CloseReason?) {
        if let code = reason?.code, !code.isValidOnWire {
            self.logger.warning(
                "close code \(code) may not be sent on the wire; sending a close frame without a code",
                metadata: self.warningMetadata)
        }
        let deferred = self.state.withLock { s -> Deferred in
            s.machine.close(reason, &s.io)
            if !s.io.closingWaiters.isEmpty { s.io.resumeClosingWaiters(ifClosing: s.machine.closeReason != nil) }
            return s.io.takeDeferred()
        }
        self.carryOut(deferred)
    }

    /// Closes without waiting, for a session dropped without `close()`.
    func closeDetached() {
        let deferred = self.state.withLock { s -> Deferred in
            s.machine.closeDetached(&s.io)
            return s.io.takeDeferred()
        }
        self.carryOut(deferred)
    }

    /// Waits until the transport has closed.
    nonisolated(nonsending) func waitForEnd() async {
        await withCheckedContinuation { (continuation: CheckedContinuation<Void, Never>) in
            let ended = self.state.withLock { s -> Bool in
                if s.machine.hasEnded && (self.metrics == nil || s.io.endReported) { return true }
                s.io.endWaiters.append(continuation)
                return false
            }
            if ended { continuation.resume() }
        }
    }

    /// Waits until the session is no longer usable: a close frame was sent or received, it failed (a protocol
    /// violation, a missing pong), or it ended. Unlike ``waitForEnd()`` it does not wait for the close handshake
    /// and the TCP close, which on a dead network take the close timeout. A reconnecting session watches its
    /// connection with it.
    nonisolated(nonsending) func waitUntilClosing() async {
        await withCheckedContinuation { (continuation: CheckedContinuation<Void, Never>) in
            let closing = self.state.withLock { s -> Bool in
                if s.machine.hasEnded || s.machine.closeReason != nil { return true }
                s.io.closingWaiters.append(continuation)
                return false
            }
            if closing { continuation.resume() }
        }
    }

    /// The close reason once the session has ended.
    nonisolated(nonsending) func closeReasonAfterEnd() async -> CloseReason? {
        await self.waitForEnd()
        return self.state.withLock { $0.machine.closeReason }
    }

    /// The close reason now: `nil` while open.
    var currentCloseReason: CloseReason? { self.state.withLock { $0.machine.closeReason } }

    /// Whether the connection has ended.
    var hasEnded: Bool { self.state.withLock { $0.machine.hasEnded } }

    // MARK: - Receiving

    /// The next incoming frame; `nil` after the last; throws the session's failure.
    @usableFromInline @inline(__always)
    nonisolated(nonsending) func receive() async throws -> Frame? {
        if let frame = self.takeQueuedFrame() { return frame }
        return try await self.waitForFrame()
    }

    /// The fast path of ``receive()``: the next queued frame if one is waiting and no earlier consumer is.
    @usableFromInline
    func takeQueuedFrame() -> Frame? {
        let (frame, deferred) = self.state.withLock { s -> (Frame?, Deferred) in
            guard let frame = s.machine.takeQueuedFrame(&s.io) else { return (nil, Deferred()) }
            return (frame, s.io.takeDeferred())
        }
        if !deferred.isEmpty { self.carryOut(deferred) }
        return frame
    }

    /// The slow path of ``receive()``: waits for the next frame (or the end).
    private nonisolated(nonsending) func waitForFrame() async throws -> Frame? {
        let id = self.state.withLock { $0.machine.makeConsumerID() }
        // Continuations are resumed exactly once: by a delivery, by the cancellation handler (after removing it
        // from the consumers under the lock), or right here.
        return try await withTaskCancellationHandler {
            try await withUnsafeThrowingContinuation { (continuation: UnsafeContinuation<Frame?, any Error>) in
                let (immediate, deferred) = self.state.withLock { s -> (Result<Frame?, any Error>?, Deferred) in
                    let result: Result<Frame?, any Error>?
                    switch s.machine.receive(id, isCancelled: Task.isCancelled, &s.io) {
                    case .frame(let frame): result = .success(frame)
                    case .end(let error?): result = .failure(error)
                    case .end(nil): result = .success(nil)
                    case .cancelled: result = .failure(CancellationError())
                    case .waiting:
                        s.io.consumers.append((id, continuation))
                        result = nil
                    }
                    return (result, s.io.takeDeferred())
                }
                if let immediate { continuation.resume(with: immediate) }
                if !deferred.isEmpty { self.carryOut(deferred) }
            }
        } onCancel: {
            let cancelled = self.state.withLock { s -> UnsafeContinuation<Frame?, any Error>? in
                guard s.machine.cancelReceive(id) else { return nil }
                return s.io.removeConsumer(id)
            }
            cancelled?.resume(throwing: CancellationError())
        }
    }
}

extension Optional {
    /// Returns the value and leaves `nil` behind.
    @inlinable
    package mutating func take() -> Wrapped? {
        defer { self = nil }
        return self
    }
}

/// A connection's running timers, at most one of each kind: a short array, released when the last timer stops. Most
/// sessions run none or one (the opening's, then the keepalive's), and a dictionary kept ≈ 180 bytes of storage in
/// every session, even with no timer running.
struct SessionTimers {
    private typealias Entry = (kind: SessionStateMachine.TimerKind, token: UInt64, timer: any WebSocketTransportTimer)
    private var entries: [Entry] = []

    /// How many timers run.
    var count: Int { self.entries.count }

    /// Whether storage is allocated (for tests: none while no timer runs).
    var hasStorage: Bool { self.entries.capacity > 0 }

    /// Records `timer` as the running timer of `kind`.
    /// - Returns: The timer it replaces, which the caller cancels.
    mutating func set(_ kind: SessionStateMachine.TimerKind, token: UInt64, _ timer: any WebSocketTransportTimer)
        -> (any WebSocketTransportTimer)?
    {
        if let index = self.entries.firstIndex(where: { $0.kind == kind }) {
            defer { self.entries[index] = (kind, token, timer) }
            return self.entries[index].timer
        }
        self.entries.append((kind, token, timer))
        return nil
    }

    /// Forgets the running timer of `kind`.
    /// - Returns: It, for the caller to cancel; `nil` when none runs.
    mutating func remove(_ kind: SessionStateMachine.TimerKind) -> (any WebSocketTransportTimer)? {
        guard let index = self.entries.firstIndex(where: { $0.kind == kind }) else { return nil }
        return self.remove(at: index)
    }

    /// Forgets the running timer of `kind` if its token is `token` (a fire that is not stale).
    /// - Returns: Whether it did.
    mutating func remove(_ kind: SessionStateMachine.TimerKind, ifToken token: UInt64) -> Bool {
        guard let index = self.entries.firstIndex(where: { $0.kind == kind && $0.token == token }) else {
            return false
        }
        _ = self.remove(at: index)
        return true
    }

    /// Cancels and forgets every running timer.
    mutating func cancelAll() {
        for entry in self.entries { entry.timer.cancel() }
        self.entries = []
    }

    private mutating func remove(at index: Int) -> any WebSocketTransportTimer {
        // The last one out releases the storage (`remove(at:)` would keep its capacity).
        if self.entries.count == 1 {
            defer { self.entries = [] }
            return self.entries[0].timer
        }
        return self.entries.remove(at: index).timer
    }
}

/// A timer as a sleeping task, for engines without timers of their own.
struct TaskTimer: WebSocketTransportTimer {
    let task: Task<Void, Never>

    init(after delay: Duration, _ action: @escaping @Sendable () -> Void) {
        self.task = Task {
            do { try await Task.sleep(for: delay) } catch { return }
            action()
        }
    }

    func cancel() { self.task.cancel() }
}
