// A connected byte stream over a libcurl CONNECT_ONLY connection, on the engine's loop.
//
// Every libcurl call on the connection (curl_easy_send, curl_easy_recv, cleanup) happens under `state`, the
// connection's Mutex, so the easy handle is used by one thread at a time. Handler callbacks happen on the loop
// thread and never under the Mutex.
// Writes: `write(_:)` runs on the caller's thread. With nothing queued it calls curl_easy_send at once; what
// libcurl does not take (CURLE_AGAIN) is queued and flushed by the loop on EPOLLOUT, head chunk first.
// Reads: on the loop thread, into the loop's one buffer, until CURLE_AGAIN — libcurl/OpenSSL may hold decrypted
// bytes that epoll cannot see, so "one read per EPOLLIN" would stall a TLS stream. Only on a plain connection
// without a proxy, where every byte libcurl returns comes straight from recv(2) (no released libcurl buffers
// socket reads), does a short read end the reading: level-triggered epoll reports whatever arrives next.
// epoll interest is level-triggered and updated under the Mutex whenever it changes (see CurlEventLoop); the
// socket is closed (by libcurl's cleanup) only under the Mutex after `phase` became `.closed`, so whoever sees
// another phase under the Mutex may use the handle and the descriptor.
import CWSCurl
import CWSLinux
import Glibc
import Logging
import Synchronization
import WSCore
import WSPosix

/// The engine's ``WebSocketTransport``.
final class CurlTransport: LoopRegistrant, WebSocketTransport, RoundEndFlushing, @unchecked Sendable {  // `state` Mutex + loop thread.
    // Thread rules: fields in `state` are guarded by that Mutex; the fields marked "loop" are confined to
    // `loop`'s thread; the rest are immutable.

    private enum Phase: Equatable {
        /// Reading and writing.
        case open
        /// `close()` was called: flushing the queue; writes are dropped.
        case closing
        /// The queue was flushed and FIN sent; reading until EOF or the grace period ends.
        case halfClosed
        /// Aborted, failed or finished: no more I/O.
        case closed
    }

    private struct Locked {
        var phase = Phase.open
        var paused = false
        /// `start(handler:)` ran: reading is wanted (unless paused).
        var reading = false
        var queue = WriteQueue()
        /// The handles; `nil` once cleaned up.
        var handles: CurlHandles?
        /// The epoll events currently registered for the socket; 0 when not registered.
        var interest: UInt32 = 0
    }

    private enum ReadOutcome {
        case wouldBlock
        case endOfStream
        case failed(WebSocketConnectionError)
    }

    private enum ReadStep {
        /// Bytes, and what the read after them returned (`nil`: the buffer is full, read again).
        case data(Int, then: ReadOutcome?)
        case done(ReadOutcome)
        case paused
        case stop
    }

    private enum FlushOutcome {
        case idle
        case blocked
        case drained(closing: Bool)
        case failed(WebSocketConnectionError)
    }

    /// Buffers read per wakeup before yielding to other connections (the rest continues in a loop task).
    private static let readsPerWakeup = 16

    let loop: CurlEventLoop
    private let fd: Int32
    /// A short read means the socket is drained: plain TCP without a proxy (see the file comment).
    private let shortReadDrains: Bool
    private let endpoint: String
    private let logger: Logger
    private let closeGraceNanoseconds: UInt64
    private let closeFlushNanoseconds: UInt64
    private let state: Mutex<Locked>

    // loop:
    private var handler: (any WebSocketTransportHandler)?
    private var started = false
    private var finished = false
    private var closeErrorBeforeStart: (any Error)?
    private var readTaskQueued = false
    private var closeTimer: LoopTimer?

    init(
        loop: CurlEventLoop, handles: CurlHandles, fd: Int32, shortReadDrains: Bool, endpoint: String, logger: Logger,
        closeGraceNanoseconds: UInt64, closeFlushNanoseconds: UInt64
    ) {
        self.loop = loop
        self.fd = fd
        self.shortReadDrains = shortReadDrains
        self.endpoint = endpoint
        self.logger = logger
        self.closeGraceNanoseconds = closeGraceNanoseconds
        self.closeFlushNanoseconds = closeFlushNanoseconds
        var locked = Locked()
        locked.handles = handles
        self.state = Mutex(locked)
    }

    // MARK: WebSocketTransport (any thread)

    func start(handler: any WebSocketTransportHandler) {
        let accepted = self.loop.execute { [self] in self.begin(handler) }
        if !accepted {
            handler.transportDidClose(
                error: WebSocketConnectionError(
                    .network, "the connection to \(self.endpoint) was closed: the Curl engine is shut down"))
        }
    }

    @discardableResult
    func write(_ bytes: [UInt8]) -> Int {
        bytes.withUnsafeBytes { self.write($0, array: bytes) }
    }

    @discardableResult
    func write(bytes: UnsafeRawBufferPointer) -> Int {
        self.write(bytes, array: nil)
    }

    /// Sends or queues `bytes`; what is queued is `array` itself when given (no copy), else a copy.
    private func write(_ bytes: UnsafeRawBufferPointer, array: [UInt8]?) -> Int {
        let onLoop = self.loop.inLoop
        // Only a loop-thread write may wait for the end of the round; see RoundWritePolicy.
        let mayDefer = onLoop && !self.writePolicy.countWrite(inRound: self.loop.round)
        var deferFlush = false
        let (buffered, failure) = self.state.withLock { state -> (Int, WebSocketConnectionError?) in
            guard state.phase == .open, let handles = state.handles else { return (0, nil) }
            guard !bytes.isEmpty else { return (state.queue.byteCount, nil) }
            // Queued bytes go first. On the loop thread, writes wait for the end of the round, so the messages a
            // round produces (replies to a batch of reads) leave in one curl_easy_send, except a lone reply
            // (RoundWritePolicy), which leaves at once without being copied or deferred.
            guard state.queue.isEmpty, !mayDefer else {
                state.queue.append(bytes, array: array, from: 0)
                deferFlush = onLoop
                return (state.queue.byteCount, nil)
            }
            var sent = 0
            var failure: WebSocketConnectionError?
            sending: while sent < bytes.count {
                switch self.send(handles, UnsafeRawBufferPointer(rebasing: bytes[sent...])) {
                case .success(let count):
                    sent += count
                    if count == 0 { break sending }
                case .failure(let error):
                    failure = error
                    break sending
                }
            }
            if let failure {
                state.phase = .closed
                state.queue.removeAll()
                self.updateInterest(&state)
                return (0, failure)
            }
            if sent < bytes.count {
                state.queue.append(bytes, array: array, from: sent)
                self.updateInterest(&state)
            }
            return (state.queue.byteCount, nil)
        }
        if let failure {
            self.loop.execute { [self] in self.finish(error: failure) }
        } else if deferFlush && !self.flushDeferred {
            self.flushDeferred = true
            self.loop.deferUntilRoundEnds(self)
        }
        return buffered
    }

    /// The transport has a flush waiting for the end of the loop's round (loop thread only).
    private var flushDeferred = false

    /// The end of a round in which writes were gathered: send them (loop thread).
    func roundDidEnd() {
        self.flushDeferred = false
        self.flush()
    }
    /// Whether a write on the loop thread leaves at once or at the end of the round (loop thread only).
    private var writePolicy = RoundWritePolicy()

    func setReadingPaused(_ paused: Bool) {
        let resumed = self.state.withLock { state -> Bool in
            let wasPaused = state.paused
            state.paused = paused
            self.updateInterest(&state)
            return wasPaused && !paused && state.phase != .closed
        }
        // Bytes libcurl buffered while paused raise no epoll event: look for them.
        if resumed { self.loop.execute { [self] in self.readLoop() } }
    }

    func close() {
        let accepted = self.state.withLock { state -> Bool in
            guard state.phase == .open else { return false }
            state.phase = .closing
            return true
        }
        guard accepted else { return }
        self.loop.execute { [self] in
            guard !self.finished else { return }
            self.logger.debug("closing: flushing \(self.bufferedBytes) buffered bytes")
            self.closeTimer = self.loop.schedule(afterNanoseconds: self.closeFlushNanoseconds) { [self] in
                self.closeTimer = nil
                self.finish(
                    error: WebSocketConnectionError(
                        .timedOut,
                        "the connection to \(self.endpoint) did not take the buffered bytes within "
                            + "\(self.closeFlushSeconds) s of close()"
                    ))
            }
            self.advanceClose()
        }
    }

    func abort() {
        let fd = self.fd
        let accepted = self.state.withLock { state -> Bool in
            guard state.phase != .closed else { return false }
            state.phase = .closed
            state.queue.removeAll()
            self.updateInterest(&state)
            _ = Glibc.shutdown(fd, Int32(SHUT_RDWR))
            return true
        }
        guard accepted else { return }
        self.loop.execute { [self] in self.finish(error: nil) }
    }

    var bufferedBytes: Int { self.state.withLock { $0.queue.byteCount } }

    /// The loop thread that reads this connection: session code that prefers it continues there when a message
    /// arrives.
    var executor: (any TaskExecutor)? { self.loop }

    /// The session's timers run on the loop's timer heap.
    func schedule(after delay: Duration, _ action: @escaping @Sendable () -> Void) -> (any WebSocketTransportTimer)? {
        self.loop.scheduleFromAnyThread(after: delay, action)
    }

    private var closeFlushSeconds: String {
        Duration.nanoseconds(Int64(clamping: self.closeFlushNanoseconds)).secondsText
    }

    // MARK: libcurl I/O (under the Mutex)

    /// One curl_easy_send: `.success(0)` when libcurl cannot take bytes now (CURLE_AGAIN).
    private func send(_ handles: CurlHandles, _ bytes: UnsafeRawBufferPointer) -> Result<Int, WebSocketConnectionError>
    {
        var count = 0
        handles.errorBuffer.clear()
        let code = curl_easy_send(handles.easy, bytes.baseAddress, bytes.count, &count)
        if code == CURLE_OK || code == CURLE_AGAIN { return .success(count) }
        return .failure(self.ioError("writing to", code, handles))
    }

    /// Makes the epoll registration match the state: EPOLLIN while reading is wanted, EPOLLOUT while bytes are
    /// queued, nothing once closed.
    private func updateInterest(_ state: inout Locked) {
        var wanted: UInt32 = 0
        if state.phase != .closed && state.handles != nil {
            if state.reading && !state.paused { wanted |= EPOLLIN.rawValue }
            if !state.queue.isEmpty && (state.phase == .open || state.phase == .closing) { wanted |= EPOLLOUT.rawValue }
        }
        guard wanted != state.interest else { return }
        let result = self.loop.setInterest(
            fd: self.fd, events: wanted, registered: state.interest != 0, registrant: self)
        if result == 0 {
            state.interest = wanted
        } else {
            // Cannot happen for a live socket (ENOMEM aside); finish rather than wait forever.
            let error = systemError("epoll_ctl", result)
            state.phase = .closed
            state.queue.removeAll()
            self.loop.execute { [self] in
                self.finish(
                    error: WebSocketConnectionError(
                        .network, "cannot watch the socket for \(self.endpoint): \(error.text)", underlying: error))
            }
        }
    }

    // MARK: Loop thread

    private func begin(_ handler: any WebSocketTransportHandler) {
        precondition(!self.started, "WebSocketTransport.start(handler:) called twice")
        self.started = true
        if self.finished {
            let error = self.closeErrorBeforeStart
            self.closeErrorBeforeStart = nil
            handler.transportDidClose(error: error)
            return
        }
        self.handler = handler
        self.state.withLock { state in
            state.reading = true
            self.updateInterest(&state)
        }
        self.readLoop()
    }

    /// An epoll event (level-triggered).
    override func handleEvents(_ events: UInt32) {
        guard !self.finished else { return }
        if events & (EPOLLOUT.rawValue | EPOLLERR.rawValue | EPOLLHUP.rawValue) != 0 { self.flush() }
        // Also after EPOLLOUT: a TLS read may have waited for the socket to become writable.
        self.readLoop()
    }

    /// Reads until CURLE_AGAIN, pause, close or the per-wakeup budget, handing each chunk to the handler.
    private func readLoop() {
        guard self.started, !self.finished, let handler = self.handler else { return }
        let buffer = self.loop.readBuffer
        let capacity = self.loop.readBufferSize
        var budget = Self.readsPerWakeup
        while !self.finished {
            let step = self.state.withLock { state -> ReadStep in
                guard state.phase != .closed, let handles = state.handles else { return .stop }
                guard !state.paused else { return .paused }
                // Fill the buffer from several calls (a TLS read returns at most one record).
                var filled = 0
                while filled < capacity {
                    var count = 0
                    handles.errorBuffer.clear()
                    let code = curl_easy_recv(handles.easy, buffer + filled, capacity - filled, &count)
                    let outcome: ReadOutcome
                    if code == CURLE_OK {
                        if count > 0 {
                            let asked = capacity - filled
                            filled += count
                            // Plain TCP copies all it has: a short read drained the socket, and the next bytes
                            // raise a new EPOLLIN (one recv per message instead of two).
                            if self.shortReadDrains && count < asked { return .data(filled, then: .wouldBlock) }
                            continue
                        }
                        outcome = .endOfStream
                    } else if code == CURLE_AGAIN {
                        outcome = .wouldBlock
                    } else {
                        outcome = .failed(self.ioError("reading from", code, handles))
                    }
                    return filled > 0 ? .data(filled, then: outcome) : .done(outcome)
                }
                return .data(filled, then: nil)
            }
            var outcome: ReadOutcome?
            switch step {
            case .paused, .stop:
                return
            case .done(let result):
                outcome = result
            case .data(let count, let then):
                handler.transportDidRead(UnsafeRawBufferPointer(start: buffer, count: count))
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
                self.logger.debug("end of stream from the peer")
                self.finish(error: nil)
                return
            case .failed(let error):
                self.finish(error: self.closeErrorAfterHalfClose(error))
                return
            }
        }
    }

    private func queueReadLoop() {
        guard !self.readTaskQueued else { return }
        self.readTaskQueued = true
        self.loop.execute { [self] in
            self.readTaskQueued = false
            self.readLoop()
        }
    }

    /// Sends queued bytes until the queue is empty or libcurl pushes back; reports drain and advances a close.
    private func flush() {
        let outcome = self.state.withLock { state -> FlushOutcome in
            guard state.phase == .open || state.phase == .closing, let handles = state.handles,
                !state.queue.isEmpty
            else { return .idle }
            while !state.queue.isEmpty {
                let result = state.queue.withFirstChunk { self.send(handles, $0) }
                switch result {
                case .success(let count):
                    if count == 0 {
                        // Watch for EPOLLOUT (bytes queued by a deferred write may not be watched yet).
                        self.updateInterest(&state)
                        return .blocked
                    }
                    state.queue.consume(count)
                case .failure(let error):
                    state.phase = .closed
                    state.queue.removeAll()
                    self.updateInterest(&state)
                    return .failed(error)
                }
            }
            self.updateInterest(&state)
            return .drained(closing: state.phase == .closing)
        }
        switch outcome {
        case .idle, .blocked:
            break
        case .drained(let closing):
            self.handler?.transportDidDrain()
            if closing { self.advanceClose() }
        case .failed(let error):
            self.finish(error: error)
        }
    }

    /// When closing and the queue is empty: FIN, then read until EOF or the grace period ends.
    ///
    /// With TLS no close_notify precedes the FIN: libcurl has no call that sends one on a CONNECT_ONLY connection
    /// (it treats them as aborted when it closes them). The WebSocket close handshake, done by WSCore before it
    /// closes the transport, is what marks the clean end of the stream.
    private func advanceClose() {
        guard !self.finished else { return }
        let fd = self.fd
        let halfClosed = self.state.withLock { state -> Bool in
            guard state.phase == .closing, state.queue.isEmpty else { return false }
            _ = Glibc.shutdown(fd, Int32(SHUT_WR))
            state.phase = .halfClosed
            self.updateInterest(&state)
            return true
        }
        guard halfClosed else { return }
        self.logger.debug("closing: sent FIN, waiting for the peer's end of stream")
        self.closeTimer?.cancel()
        self.closeTimer = self.loop.schedule(afterNanoseconds: self.closeGraceNanoseconds) { [self] in
            self.closeTimer = nil
            self.logger.debug("closing: no end of stream within the grace period")
            self.finish(error: nil)
        }
        self.readLoop()
    }

    /// After we sent FIN, a reset or TLS error is the end of a close we asked for, not a failure.
    private func closeErrorAfterHalfClose(_ error: WebSocketConnectionError) -> WebSocketConnectionError? {
        self.state.withLock { $0.phase == .halfClosed } ? nil : error
    }

    /// Releases the libcurl handles (closing the socket) exactly once and reports `transportDidClose` once
    /// (idempotent; loop thread).
    func finish(error: (any Error)?) {
        guard !self.finished else { return }
        self.finished = true
        self.closeTimer?.cancel()
        self.closeTimer = nil
        self.state.withLock { state in
            state.phase = .closed
            state.queue.removeAll()
            self.updateInterest(&state)
            if let handles = state.handles {
                state.handles = nil
                handles.cleanup()
            }
        }
        self.loop.remove(self)
        if let error {
            self.logger.debug("connection closed", metadata: ["ws.error": "\(error)"])
        } else {
            self.logger.debug("connection closed")
        }
        if self.started {
            let handler = self.handler
            self.handler = nil
            handler?.transportDidClose(error: error)
        } else {
            self.closeErrorBeforeStart = error
        }
    }

    // MARK: Errors

    private func ioError(_ doing: String, _ code: CURLcode, _ handles: CurlHandles) -> WebSocketConnectionError {
        let curlError = CurlError(code, detail: handles.errorBuffer.text)
        let explanation = curlError.summary
        let kind: WebSocketConnectionError.Code =
            cws_curl_error_class(code) == CWS_CURL_ERROR_TLS ? .tlsFailure : .network
        return WebSocketConnectionError(kind, "\(doing) \(self.endpoint) failed: \(explanation)", underlying: curlError)
    }
}
