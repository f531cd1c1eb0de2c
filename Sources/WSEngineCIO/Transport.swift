// A connected TCP (+TLS) byte stream on one loop.
//
// Writes: `write(_:)` runs on the caller's thread under the connection's Mutex. With nothing queued it sends at
// once (send(MSG_NOSIGNAL), or SSL_write through the no-SIGPIPE BIO); what the kernel does not take is queued
// and flushed by the loop on the next EPOLLOUT edge, batching queued buffers into one sendmsg (up to IOV_MAX).
// Reads: on the loop thread, into the loop's one buffer, handed to the handler outside the lock.
// All SSL use happens under the Mutex; the fd is closed only on the loop thread, after `phase` became `.closed`
// under the Mutex, so a thread that sees another phase under the Mutex may use the fd.
import CWSLinux
import CWSOpenSSL
import Glibc
import Logging
import Synchronization
import WSCore
import WSPosix

/// An OpenSSL `SSL*` owned by one transport.
struct SSLHandle: @unchecked Sendable {  // Used only under the owning CIOTransport's `state` Mutex.
    let pointer: OpaquePointer
}

/// The engine's ``WebSocketTransport``.
final class CIOTransport: WebSocketTransport, RoundEndFlushing, @unchecked Sendable {  // `state` Mutex + `loop`-thread confinement.
    // Thread rules: fields in `state` are guarded by that Mutex; the fields marked "loop" are confined to
    // `loop`'s thread; the rest are immutable.

    private enum Phase: Equatable {
        /// Reading and writing.
        case open
        /// `close()` was called: flushing the queue; writes are dropped.
        case closing
        /// The queue was flushed and FIN (and close_notify) sent; reading until EOF or the grace period ends.
        case halfClosed
        /// Aborted, failed or finished: no more I/O.
        case closed
    }

    private struct Locked {
        var phase = Phase.open
        var paused = false
        var queue = WriteQueue()
        var ssl: SSLHandle?
        /// A fatal TLS error happened: SSL_shutdown must not be called.
        var sslBroken = false
        /// SSL_read needs the socket to become writable.
        var readWantsWrite = false
        /// SSL_write needs the socket to become readable.
        var writeWantsRead = false
    }

    private enum ReadStep {
        case data(Int)
        /// TLS: bytes, and the socket has no more for now.
        case dataThenWouldBlock(Int)
        case wouldBlock
        /// TLS: SSL_read must wait for the socket to become writable; the socket may still hold input.
        case blockedOnWrite
        case paused
        case stop
        case endOfStream
        case failed(WebSocketConnectionError)
    }

    private enum FlushOutcome {
        case idle
        case blocked
        case drained(closing: Bool)
        case failed(WebSocketConnectionError)
    }

    /// Reads per wakeup before yielding to other connections (the rest continues in a loop task).
    private static let readsPerWakeup = 16

    let loop: EventLoop
    private let fd: Int32
    private let isTLS: Bool
    /// Keeps the SSL_CTX and the BIO method alive as long as the SSL object.
    private let tls: TLSContext?
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
    /// An EPOLLIN edge arrived and no read has returned EAGAIN (or a short read) since. It starts `false` on plain
    /// TCP: the connector hands the socket over with EPOLL_CTL_MOD, which re-arms the edge, so input already waiting
    /// is reported as an event (no read that can only return EAGAIN when the session starts); `true` with TLS, where
    /// the handshake may have left bytes inside OpenSSL.
    private var readable: Bool
    /// EPOLLRDHUP, EPOLLHUP or EPOLLERR arrived: no further edge will come, so reads go on until EOF or EAGAIN
    /// instead of stopping at a short read.
    private var readToEnd = false
    private var readTaskQueued = false
    private var closeTimer: LoopTimer?

    init(
        loop: EventLoop, fd: Int32, ssl: OpaquePointer?, tls: TLSContext?, endpoint: String, logger: Logger,
        closeGraceNanoseconds: UInt64, closeFlushNanoseconds: UInt64
    ) {
        self.loop = loop
        self.fd = fd
        self.isTLS = ssl != nil
        self.readable = ssl != nil
        self.tls = tls
        self.endpoint = endpoint
        self.logger = logger
        self.closeGraceNanoseconds = closeGraceNanoseconds
        self.closeFlushNanoseconds = closeFlushNanoseconds
        var locked = Locked()
        locked.ssl = ssl.map(SSLHandle.init(pointer:))
        self.state = Mutex(locked)
    }

    /// The epoll data that routes events to this transport: its address (bit 0 clear).
    var epollData: UInt64 { UInt64(UInt(bitPattern: Unmanaged.passUnretained(self).toOpaque())) }

    // MARK: WebSocketTransport (any thread)

    func start(handler: any WebSocketTransportHandler) {
        let accepted = self.loop.execute { [self] in self.begin(handler) }
        if !accepted {
            handler.transportDidClose(
                error: WebSocketConnectionError(.network, "the connection to \(self.endpoint) was closed: the CIO engine is shut down"))
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
        let fd = self.fd
        var needsLoopFlush = false
        var deferFlush = false
        let onLoop = !self.isTLS && self.loop.inLoop
        // Only a loop-thread write may wait for the end of the round (a plain-TCP one for CIO); see RoundWritePolicy.
        let mayDefer = onLoop && !self.writePolicy.countWrite(inRound: self.loop.round)
        let (buffered, failure) = self.state.withLock { state -> (Int, WebSocketConnectionError?) in
            guard state.phase == .open else { return (0, nil) }
            guard !bytes.isEmpty else { return (state.queue.byteCount, nil) }
            // Queued bytes go first. On the loop thread, plain-TCP writes wait for the end of the round, so the
            // messages a round produces (replies to a batch of reads) leave in one sendmsg, except a lone reply
            // (RoundWritePolicy), which leaves at once without being copied or deferred.
            guard state.queue.isEmpty, !mayDefer else {
                state.queue.append(bytes, array: array, from: 0)
                if onLoop { deferFlush = true }
                return (state.queue.byteCount, nil)
            }
            var sent = 0
            var failure: WebSocketConnectionError?
            if let ssl = state.ssl?.pointer {
                while sent < bytes.count {
                    ERR_clear_error()
                    errno = 0
                    let result = SSL_write(ssl, bytes.baseAddress! + sent, Int32(clamping: bytes.count - sent))
                    if result > 0 {
                        sent += Int(result)
                        continue
                    }
                    let code = errno
                    let sslError = SSL_get_error(ssl, result)
                    if sslError == SSL_ERROR_WANT_WRITE { break }
                    if sslError == SSL_ERROR_WANT_READ {
                        // The input it waits for may already be in the socket (no new edge): retry on the loop.
                        state.writeWantsRead = true
                        needsLoopFlush = true
                        break
                    }
                    failure = self.tlsError("writing to", ssl: ssl, sslError: sslError, errno: code)
                    state.sslBroken = true
                    break
                }
            } else {
                while sent < bytes.count {
                    let result = send(fd, bytes.baseAddress! + sent, bytes.count - sent, Int32(MSG_NOSIGNAL))
                    if result >= 0 {
                        sent += result
                        continue
                    }
                    let code = errno
                    if code == EINTR { continue }
                    if code == EAGAIN || code == EWOULDBLOCK { break }
                    failure = self.ioError("send", "writing to", code)
                    break
                }
            }
            if let failure {
                state.phase = .closed
                state.queue.removeAll()
                return (0, failure)
            }
            if sent < bytes.count { state.queue.append(bytes, array: array, from: sent) }
            return (state.queue.byteCount, nil)
        }
        if let failure {
            self.loop.execute { [self] in self.finish(error: failure) }
        } else if needsLoopFlush {
            self.loop.execute { [self] in self.flush() }
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
            return wasPaused && !paused && state.phase != .closed
        }
        // Edge-triggered: data that arrived while paused raises no new edge, so the loop continues reading.
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
                            + "\(Duration.nanoseconds(Int64(clamping: self.closeFlushNanoseconds)).secondsText) s of close()"
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
            _ = Glibc.shutdown(fd, Int32(SHUT_RDWR))
            return true
        }
        guard accepted else { return }
        self.loop.execute { [self] in self.finish(error: nil) }
    }

    var bufferedBytes: Int { self.state.withLock { $0.queue.byteCount } }

    /// The loop thread that reads this connection: session code that prefers it continues there when a message
    /// arrives, and its writes are gathered per round.
    var executor: (any TaskExecutor)? { self.loop }

    /// The session's timers run on the loop's timer heap.
    func schedule(after delay: Duration, _ action: @escaping @Sendable () -> Void) -> (any WebSocketTransportTimer)? {
        self.loop.scheduleFromAnyThread(after: delay, action)
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
        self.readLoop()
    }

    /// An epoll event (edge-triggered).
    func handleEvents(_ events: UInt32) {
        guard !self.finished else { return }
        if events & (EPOLLIN.rawValue | EPOLLRDHUP.rawValue | EPOLLHUP.rawValue | EPOLLERR.rawValue) != 0 {
            self.readable = true
        }
        if events & (EPOLLRDHUP.rawValue | EPOLLHUP.rawValue | EPOLLERR.rawValue) != 0 { self.readToEnd = true }
        // TLS: a write may wait for input (WANT_READ), and a read for output (WANT_WRITE).
        if events & (EPOLLOUT.rawValue | EPOLLERR.rawValue | EPOLLHUP.rawValue) != 0 || self.isTLS {
            self.flush()
        }
        if self.readable || self.isTLS { self.readLoop() }
    }

    /// Reads until EAGAIN, pause, close or the per-wakeup budget, handing each chunk to the handler.
    private func readLoop() {
        guard self.started, !self.finished, let handler = self.handler else { return }
        let buffer = self.loop.readBuffer
        let capacity = self.loop.readBufferSize
        var budget = Self.readsPerWakeup
        while !self.finished {
            let step: ReadStep
            if self.isTLS {
                let readable = self.readable
                step = self.state.withLock { state -> ReadStep in
                    guard state.phase != .closed, let ssl = state.ssl?.pointer else { return .stop }
                    guard !state.paused else { return .paused }
                    guard !state.readWantsWrite else { return .blockedOnWrite }
                    guard readable || SSL_has_pending(ssl) == 1 else { return .wouldBlock }
                    // Fill the buffer from several records (each SSL_read returns at most one); a condition that
                    // stops the filling after some bytes is met again by the next SSL_read.
                    var filled = 0
                    var result: Int32 = 0
                    while filled < capacity {
                        ERR_clear_error()
                        errno = 0
                        result = SSL_read(ssl, buffer + filled, Int32(clamping: capacity - filled))
                        guard result > 0 else { break }
                        filled += Int(result)
                    }
                    if filled == capacity { return .data(filled) }
                    let code = errno
                    let sslError = SSL_get_error(ssl, result)
                    if filled > 0 {
                        if sslError == SSL_ERROR_WANT_READ { return .dataThenWouldBlock(filled) }
                        if sslError == SSL_ERROR_WANT_WRITE { state.readWantsWrite = true }
                        return .data(filled)
                    }
                    switch sslError {
                    case SSL_ERROR_WANT_READ:
                        return .wouldBlock
                    case SSL_ERROR_WANT_WRITE:
                        state.readWantsWrite = true
                        return .blockedOnWrite
                    case SSL_ERROR_ZERO_RETURN:
                        return .endOfStream
                    case SSL_ERROR_SYSCALL where code == 0:
                        return .endOfStream
                    default:
                        state.sslBroken = true
                        return .failed(self.tlsError("reading from", ssl: ssl, sslError: sslError, errno: code))
                    }
                }
                switch step {
                case .wouldBlock, .dataThenWouldBlock: self.readable = false
                default: break
                }
            } else {
                guard self.readable else { return }
                let (phase, paused) = self.state.withLock { ($0.phase, $0.paused) }
                if phase == .closed {
                    step = .stop
                } else if paused {
                    step = .paused
                } else {
                    let result = recv(self.fd, buffer, capacity, 0)
                    if result > 0 {
                        step = .data(result)
                        // A short read drained the socket (TCP copies all it has): the next data raises a new
                        // edge. Not after RDHUP/HUP/ERR, which raise no further edge: then read to EOF/EAGAIN.
                        if result < capacity && !self.readToEnd { self.readable = false }
                    } else if result == 0 {
                        step = .endOfStream
                    } else {
                        let code = errno
                        if code == EINTR { continue }
                        if code == EAGAIN || code == EWOULDBLOCK {
                            self.readable = false
                            step = .wouldBlock
                        } else {
                            step = .failed(self.ioError("recv", "reading from", code))
                        }
                    }
                }
            }
            switch step {
            case .data(let count), .dataThenWouldBlock(let count):
                handler.transportDidRead(UnsafeRawBufferPointer(start: buffer, count: count))
                budget -= 1
                if budget == 0 {
                    self.queueReadLoop()
                    return
                }
            case .wouldBlock, .blockedOnWrite, .paused, .stop:
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

    /// Sends queued bytes until the queue is empty or the kernel pushes back; reports drain and advances a close.
    private func flush() {
        let fd = self.fd
        let iovecs = self.loop.iovecs
        let iovecLimit = self.loop.iovecCount
        var readAgain = false
        let outcome = self.state.withLock { state -> FlushOutcome in
            if state.readWantsWrite {
                state.readWantsWrite = false
                readAgain = true
            }
            guard state.phase == .open || state.phase == .closing, !state.queue.isEmpty else { return .idle }
            if let ssl = state.ssl?.pointer {
                state.writeWantsRead = false
                while !state.queue.isEmpty {
                    ERR_clear_error()
                    errno = 0
                    let result = state.queue.withFirstChunk { chunk in
                        SSL_write(ssl, chunk.baseAddress!, Int32(clamping: chunk.count))
                    }
                    if result > 0 {
                        state.queue.consume(Int(result))
                        continue
                    }
                    let code = errno
                    let sslError = SSL_get_error(ssl, result)
                    if sslError == SSL_ERROR_WANT_WRITE { return .blocked }
                    if sslError == SSL_ERROR_WANT_READ {
                        state.writeWantsRead = true
                        return .blocked
                    }
                    state.sslBroken = true
                    state.phase = .closed
                    state.queue.removeAll()
                    return .failed(self.tlsError("writing to", ssl: ssl, sslError: sslError, errno: code))
                }
            } else {
                while !state.queue.isEmpty {
                    let result = state.queue.withIOVecs(iovecs, limit: iovecLimit) { count -> Int in
                        var message = msghdr()
                        message.msg_iov = iovecs
                        message.msg_iovlen = count
                        return sendmsg(fd, &message, Int32(MSG_NOSIGNAL))
                    }
                    if result >= 0 {
                        state.queue.consume(result)
                        continue
                    }
                    let code = errno
                    if code == EINTR { continue }
                    if code == EAGAIN || code == EWOULDBLOCK { return .blocked }
                    state.phase = .closed
                    state.queue.removeAll()
                    return .failed(self.ioError("sendmsg", "writing to", code))
                }
            }
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
            return
        }
        if readAgain { self.readLoop() }
    }

    /// When closing and the queue is empty: close_notify, FIN, then read until EOF or the grace period ends.
    private func advanceClose() {
        guard !self.finished else { return }
        let fd = self.fd
        let halfClosed = self.state.withLock { state -> Bool in
            guard state.phase == .closing, state.queue.isEmpty else { return false }
            if let ssl = state.ssl?.pointer, !state.sslBroken {
                ERR_clear_error()
                _ = SSL_shutdown(ssl)  // Best effort: a close_notify the kernel cannot take now is dropped.
                ERR_clear_error()
            }
            _ = Glibc.shutdown(fd, Int32(SHUT_WR))
            state.phase = .halfClosed
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

    /// Releases the socket and SSL exactly once and reports `transportDidClose` once (idempotent; loop thread).
    func finish(error: (any Error)?) {
        guard !self.finished else { return }
        self.finished = true
        self.closeTimer?.cancel()
        self.closeTimer = nil
        self.state.withLock { state in
            state.phase = .closed
            state.queue.removeAll()
            if let ssl = state.ssl?.pointer {
                SSL_free(ssl)
                state.ssl = nil
            }
        }
        self.loop.deregister(fd: self.fd)
        closeDescriptor(self.fd)
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

    private func ioError(_ call: String, _ doing: String, _ code: Int32) -> WebSocketConnectionError {
        let error = systemError(call, code)
        let what = code == ECONNRESET ? "the peer reset the connection" : error.text
        return WebSocketConnectionError(.network, "\(doing) \(self.endpoint) failed: \(what)", underlying: error)
    }

    private func tlsError(_ doing: String, ssl: OpaquePointer, sslError: Int32, errno code: Int32)
        -> WebSocketConnectionError
    {
        tlsFailure(
            "TLS error \(doing) \(self.endpoint)", ssl: ssl, verifying: false, sslError: sslError, systemErrno: code)
    }
}
