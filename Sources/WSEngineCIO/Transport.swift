// A connected TCP (+TLS) byte stream on one loop: WSPosix's transport skeleton (`PosixTransport`: phases, read
// loop, flush, close, pause, abort, round write policy) over this engine's backend, the socket and OpenSSL.
//
// Writes: `write(_:)` runs on the caller's thread under the connection's Mutex. With nothing queued it sends at
// once (send(MSG_NOSIGNAL), or SSL_write through the no-SIGPIPE BIO); what the kernel does not take is queued
// and flushed by the loop on the next EPOLLOUT edge, batching queued buffers into one sendmsg (up to IOV_MAX),
// or over TLS into full records (one SSL_write per 16 KiB of plaintext, not one per queued write).
// Reads: on the loop thread, into the loop's one buffer, handed to the handler outside the lock.
// All SSL use happens under the Mutex; the fd is closed only on the loop thread, after `phase` became `.closed`
// under the Mutex, so a thread that sees another phase under the Mutex may use the fd.
import CWSLazyOpenSSL
import CWSLinux
import Glibc
import Logging
import Synchronization
import WSCore
import WSPosix

/// An OpenSSL `SSL*` owned by one transport.
struct SSLHandle: @unchecked Sendable {  // Used only under the owning CIOTransport's `state` Mutex.
    let pointer: OpaquePointer
}

// @unchecked Sendable: the `state` Mutex and confinement to the `loop` thread.
/// The engine's `WebSocketTransport`.
final class CIOTransport: PosixTransport, WebSocketTransport, @unchecked Sendable {
    // Thread rules: fields in `state` are guarded by that Mutex; `loopState`, `readable` and `readToEnd` are
    // confined to `loop`'s thread; the rest are immutable.

    /// The TLS state under the Mutex (unused on plain TCP).
    struct IO {
        var ssl: SSLHandle?
        /// The TLS connection to an https:// proxy that `ssl` runs inside (wss through such a proxy); freed after it.
        var tunnelSSL: SSLHandle?
        /// A fatal TLS error happened: SSL_shutdown must not be called.
        var sslBroken = false
        /// SSL_read needs the socket to become writable.
        var readWantsWrite = false
        /// SSL_write needs the socket to become readable.
        var writeWantsRead = false
    }

    static var engineName: String { "CIO" }

    let loop: EventLoop
    let fd: Int32
    private let isTLS: Bool
    /// Keeps the SSL_CTX and the BIO method alive as long as the SSL object.
    private let tls: TLSContext?
    /// The protocol the server selected with ALPN (`h2`, `http/1.1`), or `nil` when none was offered or selected.
    let alpn: String?
    /// Keeps the https:// proxy's SSL_CTX alive as long as `tunnelSSL`.
    private let tunnelTLS: TLSContext?
    let settings: TransportSettings
    let state: Mutex<TransportLockedState<IO>>
    /// Loop thread only. Unchecked: the skeleton never holds an access to it across a call that can reach it again
    /// (it copies the handler out before calling it), and the runtime checks would cost a call per read and write.
    @exclusivity(unchecked) var loopState = TransportLoopState<any WebSocketTransportHandler>()

    // loop:
    /// An EPOLLIN edge arrived and no read has returned EAGAIN (or a short read) since. It starts `false` on plain
    /// TCP: the connector hands the socket over with EPOLL_CTL_MOD, which re-arms the edge, so input already waiting
    /// is reported as an event (no read that can only return EAGAIN when the session starts); `true` with TLS, where
    /// the handshake may have left bytes inside OpenSSL.
    private var readable: Bool
    /// EPOLLRDHUP, EPOLLHUP or EPOLLERR arrived: no further edge will come, so reads go on until EOF or EAGAIN
    /// instead of stopping at a short read.
    private var readToEnd = false

    init(
        loop: EventLoop, fd: Int32, ssl: OpaquePointer?, tls: TLSContext?, alpn: String? = nil, endpoint: String,
        logger: Logger, closeGraceNanoseconds: UInt64, closeFlushNanoseconds: UInt64, tunnelSSL: OpaquePointer? = nil,
        tunnelTLS: TLSContext? = nil
    ) {
        self.loop = loop
        self.alpn = alpn
        self.fd = fd
        self.isTLS = ssl != nil
        self.readable = ssl != nil
        self.tls = tls
        self.settings = TransportSettings(
            endpoint: endpoint, logger: logger, closeGraceNanoseconds: closeGraceNanoseconds,
            closeFlushNanoseconds: closeFlushNanoseconds)
        self.tunnelTLS = tunnelTLS
        self.state = Mutex(
            TransportLockedState(
                io: IO(ssl: ssl.map(SSLHandle.init(pointer:)), tunnelSSL: tunnelSSL.map(SSLHandle.init(pointer:)))))
        // From now on (the handshake is done) OpenSSL's read-ahead buffer takes up to three full records per recv
        // instead of one: a busy connection makes about half the recv calls (what the socket holds is often less
        // than three records). SSL_MODE_RELEASE_BUFFERS still frees it whenever it empties: an idle one keeps none.
        if let ssl { cwsl_SSL_set_default_read_buffer_len(ssl, Self.tlsReadAheadBytes) }
    }

    /// OpenSSL's read-ahead buffer on an open connection: three records of the largest size (16 KiB of plaintext
    /// and at most 325 bytes of header, padding and tag each), under the 64 KiB from which glibc's `free`
    /// consolidates its arena (the buffer is freed and reallocated whenever it empties).
    static let tlsReadAheadBytes = 3 * (16_384 + 325)

    // MARK: WebSocketTransport (any thread; the rest is PosixTransport's)

    @discardableResult
    func write(_ bytes: [UInt8]) -> Int {
        bytes.withUnsafeBytes { self.send($0, array: bytes) }
    }

    @discardableResult
    func write(bytes: UnsafeRawBufferPointer) -> Int {
        self.send(bytes, array: nil)
    }

    /// The loop thread that reads this connection: session code that prefers it continues there when a message
    /// arrives, and its writes are gathered per round.
    var executor: (any TaskExecutor)? { self.loop }

    /// The session's timers run on the loop's timer heap.
    func schedule(after delay: Duration, _ action: @escaping @Sendable () -> Void) -> (any WebSocketTransportTimer)? {
        LoopTimerHandle(timer: self.loop.scheduleFromAnyThread(after: delay, action))
    }

    // MARK: Events (loop thread)

    /// An epoll event (edge-triggered).
    func handleEvents(_ events: UInt32) {
        guard !self.loopState.finished else { return }
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

    // MARK: Backend: socket and OpenSSL I/O

    /// Writes on the loop thread are gathered per round (a burst leaves as few full TLS records, not one each).
    var gathersLoopWrites: Bool { true }

    func sendNow(_ bytes: UnsafeRawBufferPointer, _ state: inout TransportLockedState<IO>)
        -> TransportSendOutcome<WebSocketError>
    {
        var sent = 0
        if let ssl = state.io.ssl?.pointer {
            while sent < bytes.count {
                cwsl_ERR_clear_error()
                errno = 0
                let result = cwsl_SSL_write(ssl, bytes.baseAddress! + sent, Int32(clamping: bytes.count - sent))
                if result > 0 {
                    sent += Int(result)
                    continue
                }
                let code = errno
                let sslError = cwsl_SSL_get_error(ssl, result)
                if sslError == SSL_ERROR_WANT_WRITE { break }
                if sslError == SSL_ERROR_WANT_READ {
                    // The input it waits for may already be in the socket (no new edge): retry on the loop.
                    state.io.writeWantsRead = true
                    return .sentRetryOnLoop(sent)
                }
                state.io.sslBroken = true
                return .failed(self.tlsError("writing to", ssl: ssl, sslError: sslError, errno: code))
            }
        } else {
            switch plainSend(self.fd, bytes) {
            case .sent(let count), .sentRetryOnLoop(let count): sent = count
            case .failed(let code): return .failed(self.ioError("send", "writing to", code))
            }
        }
        return .sent(sent)
    }

    func sendQueued(_ state: inout TransportLockedState<IO>) -> TransportQueueOutcome<WebSocketError> {
        if let ssl = state.io.ssl?.pointer {
            state.io.writeWantsRead = false
            while !state.queue.isEmpty {
                cwsl_ERR_clear_error()
                errno = 0
                let result = self.writeRecord(ssl, &state.queue)
                if result > 0 {
                    state.queue.consume(Int(result), spares: self.loop.writeChunks)
                    continue
                }
                let code = errno
                let sslError = cwsl_SSL_get_error(ssl, result)
                if sslError == SSL_ERROR_WANT_WRITE { return .blocked }
                if sslError == SSL_ERROR_WANT_READ {
                    state.io.writeWantsRead = true
                    return .blocked
                }
                state.io.sslBroken = true
                return .failed(self.tlsError("writing to", ssl: ssl, sslError: sslError, errno: code))
            }
        } else {
            switch plainSendQueue(self.fd, &state.queue, self.loop.iovecScratch, spares: self.loop.writeChunks) {
            case .drained: return .drained
            case .blocked: return .blocked
            case .failed(let code): return .failed(self.ioError("sendmsg", "writing to", code))
            }
        }
        return .drained
    }

    /// One SSL_write of the queue's head, as a full TLS record where the queue holds enough: a head chunk of at least
    /// a record is written from where it lies; a smaller one is gathered with what follows it into the loop's
    /// record buffer (up to a record), so a burst of small messages costs one record and one send, not one each.
    ///
    /// A retry after WANT_WRITE or WANT_READ passes the same leading bytes again and at least as many (the queue
    /// is consumed only by what SSL_write took and otherwise only grows), which is what OpenSSL checks; the buffer
    /// may differ, as TLSContext sets SSL_MODE_ACCEPT_MOVING_WRITE_BUFFER (with SSL_MODE_ENABLE_PARTIAL_WRITE, so
    /// each call returns after one record).
    private func writeRecord(_ ssl: OpaquePointer, _ queue: inout WriteQueue) -> Int32 {
        let recordSize = CIOLoopDispatcher.tlsRecordSize
        let scratch = self.loop.tlsRecordBuffer
        // Small writes are already gathered into the queue's own chunks: a few chunks fill a record.
        return queue.withIOVecs(self.loop.iovecs, limit: min(32, self.loop.iovecCount)) { count -> Int32 in
            let iovecs = self.loop.iovecs
            if count == 1 || iovecs[0].iov_len >= recordSize {
                return cwsl_SSL_write(ssl, iovecs[0].iov_base, Int32(clamping: iovecs[0].iov_len))
            }
            var length = 0
            for index in 0..<count where length < recordSize {
                let take = min(iovecs[index].iov_len, recordSize - length)
                (scratch + length).copyMemory(from: iovecs[index].iov_base, byteCount: take)
                length += take
            }
            return cwsl_SSL_write(ssl, scratch, Int32(length))
        }
    }

    /// TLS: an SSL_read that waited for writability reads again after the flush.
    func flushWillStart(_ state: inout TransportLockedState<IO>) -> Bool {
        guard state.io.readWantsWrite else { return false }
        state.io.readWantsWrite = false
        return true
    }

    func readStep(into buffer: UnsafeMutableRawPointer, capacity: Int) -> TransportReadStep<WebSocketError> {
        if self.isTLS {
            let readable = self.readable
            // The socket has no more input for now (WANT_READ): wait for the next edge.
            var drained = false
            let step = self.state.withLock { state -> TransportReadStep<WebSocketError> in
                guard state.phase != .closed, let ssl = state.io.ssl?.pointer else { return .stop }
                guard !state.paused else { return .paused }
                // SSL_read must wait for the socket to become writable; the socket may still hold input.
                guard !state.io.readWantsWrite else { return .stop }
                guard readable || cwsl_SSL_has_pending(ssl) == 1 else {
                    drained = true
                    return .done(.wouldBlock)
                }
                // Fill the buffer from several records (each SSL_read returns at most one); a condition that
                // stops the filling after some bytes is met again by the next SSL_read.
                var filled = 0
                var result: Int32 = 0
                while filled < capacity {
                    cwsl_ERR_clear_error()
                    errno = 0
                    result = cwsl_SSL_read(ssl, buffer + filled, Int32(clamping: capacity - filled))
                    guard result > 0 else { break }
                    filled += Int(result)
                }
                if filled == capacity { return .data(filled, then: nil) }
                let code = errno
                let sslError = cwsl_SSL_get_error(ssl, result)
                if filled > 0 {
                    // Bytes, then no more in the socket for now: the next step finds nothing pending. Any other
                    // condition is met again by the next SSL_read.
                    if sslError == SSL_ERROR_WANT_READ {
                        drained = true
                        return .data(filled, then: nil)
                    }
                    if sslError == SSL_ERROR_WANT_WRITE { state.io.readWantsWrite = true }
                    return .data(filled, then: nil)
                }
                switch sslError {
                case SSL_ERROR_WANT_READ:
                    drained = true
                    return .done(.wouldBlock)
                case SSL_ERROR_WANT_WRITE:
                    state.io.readWantsWrite = true
                    return .stop
                case SSL_ERROR_ZERO_RETURN:
                    return .done(.endOfStream)
                case SSL_ERROR_SYSCALL where code == 0:
                    return .done(.endOfStream)
                default:
                    state.io.sslBroken = true
                    return .done(.failed(self.tlsError("reading from", ssl: ssl, sslError: sslError, errno: code)))
                }
            }
            if drained { self.readable = false }
            return step
        }
        guard self.readable else { return .stop }
        let (phase, paused) = self.state.withLock { ($0.phase, $0.paused) }
        if phase == .closed { return .stop }
        if paused { return .paused }
        switch plainReceive(self.fd, buffer, capacity) {
        case .data(let count):
            // A short read drained the socket (TCP copies all it has): the next data raises a new edge. Not after
            // RDHUP/HUP/ERR, which raise no further edge: then read to EOF/EAGAIN.
            if count < capacity && !self.readToEnd { self.readable = false }
            return .data(count, then: nil)
        case .endOfStream:
            return .done(.endOfStream)
        case .wouldBlock:
            self.readable = false
            return .done(.wouldBlock)
        case .failed(let code):
            return .done(.failed(self.ioError("recv", "reading from", code)))
        }
    }

    /// Edge-triggered and registered once: nothing to update.
    @inline(__always)
    func interestMayHaveChanged(_ state: inout TransportLockedState<IO>) {}

    /// Registered by the connector: nothing to do.
    @inline(__always)
    func willStartReading() {}

    /// TLS: close_notify before the FIN.
    func willShutDownOutput(_ state: inout TransportLockedState<IO>) {
        if let ssl = state.io.ssl?.pointer, !state.io.sslBroken {
            cwsl_ERR_clear_error()
            _ = cwsl_SSL_shutdown(ssl)  // Best effort: a close_notify the kernel cannot take now is dropped.
            if let tunnel = state.io.tunnelSSL?.pointer { _ = cwsl_SSL_shutdown(tunnel) }
            cwsl_ERR_clear_error()
        }
    }

    func release(_ state: inout TransportLockedState<IO>) {
        if let ssl = state.io.ssl?.pointer {
            cwsl_SSL_free(ssl)
            state.io.ssl = nil
        }
        if let tunnel = state.io.tunnelSSL?.pointer {
            cwsl_SSL_free(tunnel)
            state.io.tunnelSSL = nil
        }
    }

    /// Removes the socket from epoll and closes it.
    func didRelease() {
        self.loop.deregister(fd: self.fd)
        closeDescriptor(self.fd)
    }

    // MARK: Backend: handler and errors

    @inline(__always)
    func deliver(_ bytes: UnsafeRawBufferPointer, to handler: any WebSocketTransportHandler) {
        handler.transportDidRead(bytes)
    }

    @inline(__always)
    func deliverDrain(to handler: any WebSocketTransportHandler) { handler.transportDidDrain() }

    func deliverClose(error: (any Error)?, to handler: any WebSocketTransportHandler) {
        handler.transportDidClose(error: error)
    }

    func makeError(_ kind: TransportErrorKind, _ message: String) -> WebSocketError {
        WebSocketError(kind == .timedOut ? .timedOut : .network, message, isConnectionFailure: false)
    }

    private func ioError(_ call: String, _ doing: String, _ code: Int32) -> WebSocketError {
        let error = systemError(call, code)
        let what = code == ECONNRESET ? "the peer reset the connection" : error.text
        return WebSocketError(
            .network, "\(doing) \(self.settings.endpoint) failed: \(what)", underlying: error,
            isConnectionFailure: false)
    }

    private func tlsError(_ doing: String, ssl: OpaquePointer, sslError: Int32, errno code: Int32)
        -> WebSocketError
    {
        tlsFailure(
            "TLS error \(doing) \(self.settings.endpoint)", ssl: ssl, verifying: false, sslError: sslError,
            systemErrno: code)
    }
}
