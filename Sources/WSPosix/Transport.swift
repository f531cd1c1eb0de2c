// The connection logic both engines share: one transport skeleton over a small backend.
//
// A transport is a connected byte stream on one loop. `PosixTransport` holds everything that does not depend on how
// bytes reach the socket: the phases (open, closing, half-closed, closed) under the connection's Mutex, the read loop
// with its per-wakeup budget, the queue flush, the close sequence (flush with a deadline, FIN, then read until EOF
// or a grace period), pause, abort, the once-only finish, and the write policy (a loop-thread write leaves at once
// or at the end of the loop's round, see RoundWritePolicy). The conforming engine class is the backend: it stores
// the fields (the protocol names them), does the I/O (send, flush the queue, read one buffer, half-close and release
// the socket) and reaches the session's handler, whose type WSPosix does not know. Everything here is @inlinable, so
// each engine gets a copy specialised for its own class: no existential or witness-table call is added on the way
// to a byte. That needs the protocol and every package declaration its bodies use to be @usableFromInline (and the
// modules they use imported `public`): an @inlinable body in a plain `package` protocol's extension is not inlined
// into another module, and the engines then ran the generic code, with metadata lookups on every write.
//
// Thread rules: `state` (the Mutex) guards the phase, pause, write queue and the backend's I/O state; `loopState`
// and the engine's loop fields are confined to the loop thread; the fd is closed only on the loop thread after the
// phase became `.closed` under the Mutex, so a thread that sees another phase under the Mutex may use it.
public import Logging
public import Synchronization

/// The lifecycle of a transport, kept under its Mutex.
@usableFromInline package enum TransportPhase: Equatable, Sendable {
    /// Reading and writing.
    case open
    /// `close()` was called: flushing the queue; writes are dropped.
    case closing
    /// The queue was flushed and FIN sent; reading until EOF or the grace period ends.
    case halfClosed
    /// Aborted, failed or finished: no more I/O.
    case closed
}

/// What a transport keeps under its Mutex: the shared phase, pause flag and write queue, and the backend's own I/O
/// state (`IO`: its TLS or libcurl handles and flags).
@usableFromInline package struct TransportLockedState<IO: Sendable>: Sendable {
    /// Where the connection is in its lifecycle.
    @usableFromInline package var phase = TransportPhase.open
    /// Reading is paused (backpressure).
    @usableFromInline package var paused = false
    /// Bytes not yet taken by the kernel (or libcurl).
    @usableFromInline package var queue = WriteQueue()
    /// The backend's state that its I/O calls need.
    @usableFromInline package var io: IO

    /// An open, unpaused transport with nothing queued.
    package init(io: IO) {
        self.io = io
    }
}

/// What a transport keeps on its loop thread only.
@usableFromInline package struct TransportLoopState<Handler> {
    /// The session's handler, from `start(handler:)` until the close is reported.
    @usableFromInline package var handler: Handler?
    /// `start(handler:)` reached the loop.
    @usableFromInline package var started = false
    /// The transport finished: the socket is released and the close reported (or kept for the start).
    @usableFromInline package var finished = false
    /// Why the transport finished before it was started, reported when it starts.
    @usableFromInline package var closeErrorBeforeStart: (any Error)?
    /// A loop task continues the read loop after the per-wakeup budget ran out.
    @usableFromInline package var readTaskQueued = false
    /// The close deadline: first the flush timeout, then the grace period for the peer's end of stream.
    @usableFromInline package var closeTimer: LoopTimer?
    /// A flush waits for the end of the loop's round.
    @usableFromInline package var flushDeferred = false
    /// Whether a write on the loop thread leaves at once or at the end of the round.
    @usableFromInline package var writePolicy = RoundWritePolicy()

    /// A transport that has not started.
    package init() {}
}

/// The fixed settings of a transport.
@usableFromInline package struct TransportSettings: Sendable {
    /// `host:port`, for messages.
    @usableFromInline package let endpoint: String
    /// The connection's logger.
    @usableFromInline package let logger: Logger
    /// How long a half-closed transport waits for the peer's end of stream.
    @usableFromInline package let closeGraceNanoseconds: UInt64
    /// How long `close()` waits for the queue to reach the kernel.
    @usableFromInline package let closeFlushNanoseconds: UInt64

    /// Settings for a transport to `endpoint`.
    package init(endpoint: String, logger: Logger, closeGraceNanoseconds: UInt64, closeFlushNanoseconds: UInt64) {
        self.endpoint = endpoint
        self.logger = logger
        self.closeGraceNanoseconds = closeGraceNanoseconds
        self.closeFlushNanoseconds = closeFlushNanoseconds
    }
}

/// How a read that ended the buffer (or found nothing) left the stream.
@usableFromInline package enum TransportReadOutcome<Failure> {
    /// Nothing more to read for now.
    case wouldBlock
    /// The peer ended the stream.
    case endOfStream
    /// The read failed.
    case failed(Failure)
}

/// What one backend read produced.
@usableFromInline package enum TransportReadStep<Failure> {
    /// `count` bytes in the loop's read buffer, and how the read after them ended (`nil`: read again).
    case data(Int, then: TransportReadOutcome<Failure>?)
    /// No bytes, and why.
    case done(TransportReadOutcome<Failure>)
    /// Reading is paused.
    case paused
    /// The transport is closed, or the backend must wait for something other than input: stop reading.
    case stop
}

/// What an immediate send of a write produced.
@usableFromInline package enum TransportSendOutcome<Failure> {
    /// This many bytes were taken; the rest (if any) is queued and waits for writability.
    case sent(Int)
    /// This many bytes were taken; the rest is queued and the loop must retry the flush itself (a TLS write that
    /// waits for input that may already be in the socket, so no new event would come).
    case sentRetryOnLoop(Int)
    /// The send failed; the transport closes.
    case failed(Failure)
}

/// What sending the queue produced.
@usableFromInline package enum TransportQueueOutcome<Failure> {
    /// The queue is empty.
    case drained
    /// The kernel (or libcurl) took what it could; the rest waits.
    case blocked
    /// The send failed; the transport closes.
    case failed(Failure)
}

/// The kind of error a transport reports by itself (not from a system call).
@usableFromInline package enum TransportErrorKind: Sendable {
    /// The engine stopped, or the connection was lost.
    case network
    /// A close did not complete in time.
    case timedOut
}

/// The transport skeleton of both engines; the conforming class is the engine's transport and its backend.
///
/// The conforming class stores the fields named here and implements the backend requirements (I/O, handler calls);
/// this protocol's extension implements the transport: start, write with the round write policy, pause, close,
/// abort, the read loop, the flush and the finish. A backend requirement is called under the Mutex when it takes the
/// locked state as a parameter, and never calls the handler.
@usableFromInline package protocol PosixTransport: RoundEndFlushing, Sendable {
    /// The engine's loop dispatcher; its transports are this type.
    associatedtype Dispatcher: EventLoopDispatcher where Dispatcher.Transport == Self
    /// The backend's I/O state, kept under the Mutex.
    associatedtype IO: Sendable
    /// The session's handler type.
    associatedtype Handler: Sendable
    /// The error the transport reports.
    associatedtype Failure: Error & Sendable

    // MARK: Storage

    /// The loop that reads this connection.
    var loop: PosixEventLoop<Dispatcher> { get }
    /// The connection's Mutex and what it guards.
    var state: Mutex<TransportLockedState<IO>> { get }
    /// The loop-thread fields (loop thread only).
    var loopState: TransportLoopState<Handler> { get set }
    /// The endpoint, logger and close timeouts.
    var settings: TransportSettings { get }
    /// The socket, for shutdown(2) (closed only by ``didRelease()`` or ``release(_:)``).
    var fd: Int32 { get }
    /// Whether a write on the loop thread may wait for the end of the round (else it is always sent at once).
    var gathersLoopWrites: Bool { get }

    // MARK: Backend I/O

    /// Sends `bytes` at once, until they are all taken or the backend pushes back (under the Mutex, queue empty).
    func sendNow(_ bytes: UnsafeRawBufferPointer, _ state: inout TransportLockedState<IO>)
        -> TransportSendOutcome<Failure>
    /// Sends the queued bytes until the queue is empty or the backend pushes back (under the Mutex, queue not
    /// empty, phase open or closing); consumes what was sent.
    func sendQueued(_ state: inout TransportLockedState<IO>) -> TransportQueueOutcome<Failure>
    /// A flush starts (under the Mutex): returns whether a read waited for the socket to become writable and should
    /// run after the flush.
    func flushWillStart(_ state: inout TransportLockedState<IO>) -> Bool
    /// Reads once into `buffer` (the loop's read buffer) on the loop thread; takes the Mutex itself if it needs it.
    func readStep(into buffer: UnsafeMutableRawPointer, capacity: Int) -> TransportReadStep<Failure>
    /// The phase, pause or queue changed (under the Mutex): a backend that watches the socket selectively updates
    /// its epoll interest here.
    func interestMayHaveChanged(_ state: inout TransportLockedState<IO>)
    /// The transport starts reading (loop thread, before its first read).
    func willStartReading()
    /// The queue is flushed and the FIN is about to be sent (under the Mutex): a TLS close_notify goes here.
    func willShutDownOutput(_ state: inout TransportLockedState<IO>)
    /// Releases the backend's handles (under the Mutex, phase `.closed`, once).
    func release(_ state: inout TransportLockedState<IO>)
    /// After ``release(_:)``, outside the Mutex: removes the socket from epoll and closes it if the backend owns it.
    func didRelease()

    // MARK: Handler

    /// Hands read bytes to the handler (loop thread, not under the Mutex).
    func deliver(_ bytes: UnsafeRawBufferPointer, to handler: Handler)
    /// Tells the handler that the queue drained (loop thread, not under the Mutex).
    func deliverDrain(to handler: Handler)
    /// Tells the handler that the transport closed (once; not under the Mutex).
    func deliverClose(error: (any Error)?, to handler: Handler)
    /// An error the transport reports by itself.
    func makeError(_ kind: TransportErrorKind, _ message: String) -> Failure
    /// The engine's name for messages (`CIO`, `Curl`).
    static var engineName: String { get }
}

extension PosixTransport {
    /// Reads per wakeup before yielding to other connections (the rest continues in a loop task).
    @inlinable
    package static var readsPerWakeup: Int { 16 }

    /// The epoll data that routes events to this transport: its address (bit 0 clear).
    @inlinable
    package var epollData: UInt64 { UInt64(UInt(bitPattern: Unmanaged.passUnretained(self).toOpaque())) }

    // MARK: Any thread

    /// Starts delivering events to `handler` on the loop thread (called once); reports a close at once when the
    /// loop has stopped.
    @inlinable
    package func start(handler: Handler) {
        let accepted = self.loop.execute { [self] in self.begin(handler) }
        if !accepted {
            self.deliverClose(
                error: self.makeError(
                    .network,
                    "the connection to \(self.settings.endpoint) was closed: the \(Self.engineName) engine is shut down"
                ),
                to: handler)
        }
    }

    /// Sends or queues `bytes`; what is queued is `array` itself when given (no copy), else a copy.
    /// - Returns: The bytes queued in user space after the call.
    @inlinable
    package func send(_ bytes: UnsafeRawBufferPointer, array: [UInt8]?) -> Int {
        var needsLoopFlush = false
        var deferFlush = false
        let onLoop = self.gathersLoopWrites && self.loop.inLoop
        // Only a loop-thread write may wait for the end of the round; see RoundWritePolicy.
        let mayDefer = onLoop && !self.loopState.writePolicy.countWrite(inRound: self.loop.round)
        // A gathering chunk comes from the loop's cache only on its thread (the flush gives it back there).
        let spares = onLoop ? self.loop.writeChunks : nil
        let (buffered, failure) = self.state.withLock { state -> (Int, Failure?) in
            guard state.phase == .open else { return (0, nil) }
            guard !bytes.isEmpty else { return (state.queue.byteCount, nil) }
            // Queued bytes go first. On the loop thread, writes wait for the end of the round, so the messages a
            // round produces (replies to a batch of reads) leave in one system call, except a lone reply
            // (RoundWritePolicy), which leaves at once without being copied or deferred.
            guard state.queue.isEmpty, !mayDefer else {
                state.queue.append(bytes, array: array, from: 0, spares: spares)
                deferFlush = onLoop
                return (state.queue.byteCount, nil)
            }
            let sent: Int
            switch self.sendNow(bytes, &state) {
            case .sent(let count):
                sent = count
            case .sentRetryOnLoop(let count):
                sent = count
                needsLoopFlush = true
            case .failed(let failure):
                state.phase = .closed
                state.queue.removeAll()
                self.interestMayHaveChanged(&state)
                return (0, failure)
            }
            if sent < bytes.count {
                state.queue.append(bytes, array: array, from: sent, spares: spares)
                self.interestMayHaveChanged(&state)
            }
            return (state.queue.byteCount, nil)
        }
        if let failure {
            self.loop.execute { [self] in self.finish(error: failure) }
        } else if needsLoopFlush {
            self.loop.execute { [self] in self.flush() }
        } else if deferFlush && !self.loopState.flushDeferred {
            self.loopState.flushDeferred = true
            self.loop.deferUntilRoundEnds(self)
        }
        return buffered
    }

    /// The end of a round in which writes were gathered: send them (loop thread).
    @inlinable
    package func roundDidEnd() {
        self.loopState.flushDeferred = false
        self.flush()
    }

    /// Stops (`true`) or resumes (`false`) reading; resuming looks for input that arrived meanwhile.
    @inlinable
    package func setReadingPaused(_ paused: Bool) {
        let resumed = self.state.withLock { state -> Bool in
            let wasPaused = state.paused
            state.paused = paused
            self.interestMayHaveChanged(&state)
            return wasPaused && !paused && state.phase != .closed
        }
        // Input that arrived while paused raises no new event (edge-triggered epoll, or bytes buffered inside
        // OpenSSL or libcurl): the loop looks for it.
        if resumed { self.loop.execute { [self] in self.readLoop() } }
    }

    /// Flushes the queue within the flush timeout, then half-closes and reads until EOF or the grace period ends.
    @inlinable
    package func close() {
        let accepted = self.state.withLock { state -> Bool in
            guard state.phase == .open else { return false }
            state.phase = .closing
            return true
        }
        guard accepted else { return }
        self.loop.execute { [self] in
            guard !self.loopState.finished else { return }
            self.settings.logger.debug("closing: flushing \(self.bufferedBytes) buffered bytes")
            let flushNanoseconds = self.settings.closeFlushNanoseconds
            self.loopState.closeTimer = self.loop.schedule(afterNanoseconds: flushNanoseconds) { [self] in
                self.loopState.closeTimer = nil
                self.finish(
                    error: self.makeError(
                        .timedOut,
                        "the connection to \(self.settings.endpoint) did not take the buffered bytes within "
                            + "\(Duration.nanoseconds(Int64(clamping: flushNanoseconds)).secondsText) s of close()"
                    ))
            }
            self.advanceClose()
        }
    }

    /// Drops the queue, shuts the socket down and finishes on the loop thread.
    @inlinable
    package func abort() {
        let fd = self.fd
        let accepted = self.state.withLock { state -> Bool in
            guard state.phase != .closed else { return false }
            state.phase = .closed
            state.queue.removeAll()
            self.interestMayHaveChanged(&state)
            _ = shutdownSocket(fd, readAndWrite: true)
            return true
        }
        guard accepted else { return }
        self.loop.execute { [self] in self.finish(error: nil) }
    }

    /// The bytes queued in user space.
    @inlinable
    package var bufferedBytes: Int { self.state.withLock { $0.queue.byteCount } }

    // MARK: Loop thread

    /// The start on the loop thread: reports an earlier finish, or starts reading.
    @inlinable
    package func begin(_ handler: Handler) {
        precondition(!self.loopState.started, "WebSocketTransport.start(handler:) called twice")
        self.loopState.started = true
        if self.loopState.finished {
            let error = self.loopState.closeErrorBeforeStart
            self.loopState.closeErrorBeforeStart = nil
            self.deliverClose(error: error, to: handler)
            return
        }
        self.loopState.handler = handler
        self.willStartReading()
        self.readLoop()
    }

    /// Reads until the backend has no more, pause, close or the per-wakeup budget, handing each chunk to the handler.
    @inlinable
    package func readLoop() {
        guard self.loopState.started, !self.loopState.finished, let handler = self.loopState.handler else { return }
        let buffer = self.loop.readBuffer
        let capacity = self.loop.readBufferSize
        var budget = Self.readsPerWakeup
        while !self.loopState.finished {
            let outcome: TransportReadOutcome<Failure>?
            switch self.readStep(into: buffer, capacity: capacity) {
            case .paused, .stop:
                return
            case .done(let result):
                outcome = result
            case .data(let count, let then):
                self.deliver(UnsafeRawBufferPointer(start: buffer, count: count), to: handler)
                outcome = then
            }
            switch outcome {
            case nil:
                budget -= 1
                if budget == 0 {
                    self.queueReadLoop()
                    return
                }
            case .wouldBlock:
                return
            case .endOfStream:
                self.settings.logger.debug("end of stream from the peer")
                self.finish(error: nil)
                return
            case .failed(let error):
                self.finish(error: self.closeErrorAfterHalfClose(error))
                return
            }
        }
    }

    /// Continues the read loop in a loop task (once).
    @inlinable
    package func queueReadLoop() {
        guard !self.loopState.readTaskQueued else { return }
        self.loopState.readTaskQueued = true
        self.loop.execute { [self] in
            self.loopState.readTaskQueued = false
            self.readLoop()
        }
    }

    /// Sends queued bytes until the queue is empty or the backend pushes back; reports drain and advances a close.
    @inlinable
    package func flush() {
        var readAgain = false
        var closing = false
        let outcome = self.state.withLock { state -> TransportQueueOutcome<Failure>? in
            readAgain = self.flushWillStart(&state)
            guard state.phase == .open || state.phase == .closing, !state.queue.isEmpty else { return nil }
            let outcome = self.sendQueued(&state)
            if case .failed = outcome {
                state.phase = .closed
                state.queue.removeAll()
            }
            self.interestMayHaveChanged(&state)
            closing = state.phase == .closing
            return outcome
        }
        switch outcome {
        case nil, .blocked:
            break
        case .drained:
            if let handler = self.loopState.handler { self.deliverDrain(to: handler) }
            if closing { self.advanceClose() }
        case .failed(let error):
            self.finish(error: error)
            return
        }
        if readAgain { self.readLoop() }
    }

    /// When closing and the queue is empty: FIN (after the backend's close_notify), then read until EOF or the
    /// grace period ends.
    @inlinable
    package func advanceClose() {
        guard !self.loopState.finished else { return }
        let fd = self.fd
        let halfClosed = self.state.withLock { state -> Bool in
            guard state.phase == .closing, state.queue.isEmpty else { return false }
            self.willShutDownOutput(&state)
            _ = shutdownSocket(fd, readAndWrite: false)
            state.phase = .halfClosed
            self.interestMayHaveChanged(&state)
            return true
        }
        guard halfClosed else { return }
        self.settings.logger.debug("closing: sent FIN, waiting for the peer's end of stream")
        self.loopState.closeTimer?.cancel()
        self.loopState.closeTimer = self.loop.schedule(afterNanoseconds: self.settings.closeGraceNanoseconds) {
            [self] in
            self.loopState.closeTimer = nil
            self.settings.logger.debug("closing: no end of stream within the grace period")
            self.finish(error: nil)
        }
        self.readLoop()
    }

    /// After we sent FIN, a reset or TLS error is the end of a close we asked for, not a failure.
    @inlinable
    package func closeErrorAfterHalfClose(_ error: Failure) -> Failure? {
        self.state.withLock { $0.phase == .halfClosed } ? nil : error
    }

    /// Releases the socket and the backend's handles exactly once and reports the close once (idempotent; loop
    /// thread).
    @inlinable
    package func finish(error: (any Error)?) {
        guard !self.loopState.finished else { return }
        self.loopState.finished = true
        self.loopState.closeTimer?.cancel()
        self.loopState.closeTimer = nil
        self.state.withLock { state in
            state.phase = .closed
            state.queue.removeAll()
            self.interestMayHaveChanged(&state)
            self.release(&state)
        }
        self.didRelease()
        self.loop.remove(self)
        if let error {
            self.settings.logger.debug("connection closed", metadata: ["ws.error": "\(error)"])
        } else {
            self.settings.logger.debug("connection closed")
        }
        if self.loopState.started {
            let handler = self.loopState.handler
            self.loopState.handler = nil
            if let handler { self.deliverClose(error: error, to: handler) }
        } else {
            self.loopState.closeErrorBeforeStart = error
        }
    }
}
