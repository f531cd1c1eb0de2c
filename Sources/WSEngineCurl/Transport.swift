// A connected byte stream over a libcurl CONNECT_ONLY connection, on the engine's loop: WSPosix's transport skeleton
// (`PosixTransport`: phases, read loop, flush, close, pause, abort, round write policy) over this engine's backend,
// which is one of two:
// - libcurl's (wss://, or ws:// through an https:// proxy): curl_easy_send and curl_easy_recv on the connection's
//   easy handle, which stays in its multi handle until the transport releases both;
// - the socket's own (ws:// directly or through an http:// or SOCKS proxy, where libcurl adds nothing to the byte
//   stream once connected): the connector took the socket over and released libcurl's handles, and the transport
//   uses send/sendmsg/recv on it as the CIO engine does (WSPosix's PlainSocket), closing it itself at the end.
//
// Every libcurl call on the connection (curl_easy_send, curl_easy_recv, cleanup) happens under `state`, the
// connection's Mutex, so the easy handle is used by one thread at a time. Handler callbacks happen on the loop
// thread and never under the Mutex.
// Writes: `write(_:)` runs on the caller's thread. With nothing queued it calls curl_easy_send (or send) at once;
// what is not taken (CURLE_AGAIN, EAGAIN) is queued and flushed by the loop on EPOLLOUT: with libcurl, head chunk
// first, on an owned socket in one sendmsg of up to IOV_MAX chunks.
// Reads: on the loop thread, into the loop's one buffer, until CURLE_AGAIN — libcurl/OpenSSL may hold decrypted
// bytes that epoll cannot see, so "one read per EPOLLIN" would stall a TLS stream. Only on a plain connection
// (an owned socket, or libcurl's without a proxy), where every byte comes straight from recv(2) (no released
// libcurl buffers socket reads), does a short read end the reading: level-triggered epoll reports whatever arrives
// next.
// epoll interest is level-triggered and updated under the Mutex whenever it changes (see CurlEventLoop); the
// socket is closed (by libcurl's cleanup, or by the transport when it owns it) only after `phase` became `.closed`
// under the Mutex, so whoever sees another phase under the Mutex may use the handle and the descriptor.
import CWSCurl
import CWSLinux
import Glibc
import Logging
import Synchronization
import WSCore
import WSPosix

/// The engine's `WebSocketTransport`.
final class CurlTransport: PosixTransport, WebSocketTransport, @unchecked Sendable {  // `state` Mutex + loop thread.
    // Thread rules: fields in `state` are guarded by that Mutex; `loopState` is confined to `loop`'s thread; the
    // rest are immutable.

    /// The libcurl state under the Mutex.
    struct IO {
        /// The handles; `nil` once cleaned up, and from the start when the transport owns the socket.
        var handles: CurlHandles?
        /// The socket is open (libcurl's or the transport's own) until ``release(_:)``.
        var open = true
        /// `start(handler:)` ran: reading is wanted (unless paused).
        var reading = false
        /// The epoll events currently registered for the socket; 0 when not registered.
        var interest: UInt32 = 0
    }

    static var engineName: String { "Curl" }

    let loop: CurlEventLoop
    let fd: Int32
    /// The transport owns the socket (libcurl's handles were released when it connected): plain socket I/O, and the
    /// transport closes the descriptor.
    let ownsSocket: Bool
    /// A short read means the socket is drained: plain TCP without a proxy (see the file comment).
    private let shortReadDrains: Bool
    let settings: TransportSettings
    let state: Mutex<TransportLockedState<IO>>
    /// Loop thread only. Unchecked: the skeleton never holds an access to it across a call that can reach it again
    /// (it copies the handler out before calling it), and the runtime checks would cost a call per read and write.
    @exclusivity(unchecked) var loopState = TransportLoopState<any WebSocketTransportHandler>()

    /// A transport over libcurl's `handles`, or over the socket `fd` itself when `handles` is `nil` (which it then
    /// closes).
    init(
        loop: CurlEventLoop, handles: CurlHandles?, fd: Int32, shortReadDrains: Bool, endpoint: String, logger: Logger,
        closeGraceNanoseconds: UInt64, closeFlushNanoseconds: UInt64
    ) {
        self.loop = loop
        self.fd = fd
        self.ownsSocket = handles == nil
        self.shortReadDrains = shortReadDrains
        self.settings = TransportSettings(
            endpoint: endpoint, logger: logger, closeGraceNanoseconds: closeGraceNanoseconds,
            closeFlushNanoseconds: closeFlushNanoseconds)
        self.state = Mutex(TransportLockedState(io: IO(handles: handles)))
    }

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
    /// arrives.
    var executor: (any TaskExecutor)? { self.loop }

    /// The session's timers run on the loop's timer heap.
    func schedule(after delay: Duration, _ action: @escaping @Sendable () -> Void) -> (any WebSocketTransportTimer)? {
        LoopTimerHandle(timer: self.loop.scheduleFromAnyThread(after: delay, action))
    }

    // MARK: Events (loop thread)

    /// An epoll event (level-triggered).
    func handleEvents(_ events: UInt32) {
        guard !self.loopState.finished else { return }
        if events & (EPOLLOUT.rawValue | EPOLLERR.rawValue | EPOLLHUP.rawValue) != 0 { self.flush() }
        // Also after EPOLLOUT: a TLS read may have waited for the socket to become writable.
        self.readLoop()
    }

    // MARK: Backend: libcurl I/O (under the Mutex)

    /// Writes on the loop thread are gathered per round.
    var gathersLoopWrites: Bool { true }

    /// One curl_easy_send: `.success(0)` when libcurl cannot take bytes now (CURLE_AGAIN).
    private func send(_ handles: CurlHandles, _ bytes: UnsafeRawBufferPointer) -> Result<Int, WebSocketError> {
        var count = 0
        handles.errorBuffer.clear()
        let code = curl_easy_send(handles.easy, bytes.baseAddress, bytes.count, &count)
        if code == CURLE_OK || code == CURLE_AGAIN { return .success(count) }
        return .failure(self.ioError("writing to", code, handles))
    }

    func sendNow(_ bytes: UnsafeRawBufferPointer, _ state: inout TransportLockedState<IO>)
        -> TransportSendOutcome<WebSocketError>
    {
        if self.ownsSocket {
            guard state.io.open else { return .sent(0) }
            switch plainSend(self.fd, bytes) {
            case .sent(let count), .sentRetryOnLoop(let count): return .sent(count)
            case .failed(let code): return .failed(self.socketError(sending: true, code))
            }
        }
        guard let handles = state.io.handles else { return .sent(0) }
        var sent = 0
        while sent < bytes.count {
            switch self.send(handles, UnsafeRawBufferPointer(rebasing: bytes[sent...])) {
            case .success(let count):
                sent += count
                if count == 0 { return .sent(sent) }
            case .failure(let error):
                return .failed(error)
            }
        }
        return .sent(sent)
    }

    /// Sends the head chunk as one piece, so a send libcurl reported as blocked is retried with the same bytes.
    func sendQueued(_ state: inout TransportLockedState<IO>) -> TransportQueueOutcome<WebSocketError> {
        if self.ownsSocket {
            guard state.io.open else { return .blocked }
            // Loop thread (the flush runs there): the loop's scratch iovecs.
            switch plainSendQueue(self.fd, &state.queue, self.loop.iovecScratch, spares: self.loop.writeChunks) {
            case .drained: return .drained
            case .blocked: return .blocked
            case .failed(let code): return .failed(self.socketError(sending: true, code))
            }
        }
        guard let handles = state.io.handles else { return .blocked }
        while !state.queue.isEmpty {
            switch state.queue.withFirstChunk({ self.send(handles, $0) }) {
            case .success(let count):
                // 0: watch for EPOLLOUT (bytes queued by a deferred write may not be watched yet).
                if count == 0 { return .blocked }
                state.queue.consume(count, spares: self.loop.writeChunks)
            case .failure(let error):
                return .failed(error)
            }
        }
        return .drained
    }

    /// No read waits for writability here (libcurl retries it on the next read).
    @inline(__always)
    func flushWillStart(_ state: inout TransportLockedState<IO>) -> Bool { false }

    func readStep(into buffer: UnsafeMutableRawPointer, capacity: Int) -> TransportReadStep<WebSocketError> {
        if self.ownsSocket {
            // The descriptor is closed only on this (the loop) thread: it can be read outside the Mutex.
            let (phase, paused) = self.state.withLock { ($0.phase, $0.paused) }
            if phase == .closed { return .stop }
            if paused { return .paused }
            switch plainReceive(self.fd, buffer, capacity) {
            case .data(let count):
                // TCP copies all it has: a short read drained the socket, and the next bytes raise a new EPOLLIN.
                return .data(count, then: count < capacity ? .wouldBlock : nil)
            case .endOfStream: return .done(.endOfStream)
            case .wouldBlock: return .done(.wouldBlock)
            case .failed(let code): return .done(.failed(self.socketError(sending: false, code)))
            }
        }
        return self.state.withLock { state -> TransportReadStep<WebSocketError> in
            guard state.phase != .closed, let handles = state.io.handles else { return .stop }
            guard !state.paused else { return .paused }
            // Fill the buffer from several calls (a TLS read returns at most one record).
            var filled = 0
            while filled < capacity {
                var count = 0
                handles.errorBuffer.clear()
                let code = curl_easy_recv(handles.easy, buffer + filled, capacity - filled, &count)
                let outcome: TransportReadOutcome<WebSocketError>
                if code == CURLE_OK {
                    if count > 0 {
                        let asked = capacity - filled
                        filled += count
                        // Plain TCP copies all it has: a short read drained the socket, and the next bytes raise a
                        // new EPOLLIN (one recv per message instead of two).
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
    }

    /// Makes the epoll registration match the state: EPOLLIN while reading is wanted, EPOLLOUT while bytes are
    /// queued, nothing once closed.
    func interestMayHaveChanged(_ state: inout TransportLockedState<IO>) {
        var wanted: UInt32 = 0
        if state.phase != .closed && state.io.open {
            if state.io.reading && !state.paused { wanted |= EPOLLIN.rawValue }
            if !state.queue.isEmpty && (state.phase == .open || state.phase == .closing) { wanted |= EPOLLOUT.rawValue }
        }
        guard wanted != state.io.interest else { return }
        let result = self.loop.setInterest(
            fd: self.fd, events: wanted, registered: state.io.interest != 0, data: self.epollData)
        if result == 0 {
            state.io.interest = wanted
        } else {
            // Cannot happen for a live socket (ENOMEM aside); finish rather than wait forever.
            let error = systemError("epoll_ctl", result)
            state.phase = .closed
            state.queue.removeAll()
            self.loop.execute { [self] in
                self.finish(
                    error: WebSocketError(
                        .network, "cannot watch the socket for \(self.settings.endpoint): \(error.text)",
                        underlying: error, isConnectionFailure: false))
            }
        }
    }

    /// Reading is wanted from now on: watch for input.
    func willStartReading() {
        self.state.withLock { state in
            state.io.reading = true
            self.interestMayHaveChanged(&state)
        }
    }

    /// No close_notify precedes the FIN with TLS: libcurl has no call that sends one on a CONNECT_ONLY connection (it
    /// treats them as aborted when it closes them). The WebSocket close handshake, done by WSCore before it closes
    /// the transport, is what marks the clean end of the stream.
    @inline(__always)
    func willShutDownOutput(_ state: inout TransportLockedState<IO>) {}

    /// Releases the libcurl handles, which closes libcurl's socket.
    func release(_ state: inout TransportLockedState<IO>) {
        state.io.open = false
        if let handles = state.io.handles {
            state.io.handles = nil
            handles.cleanup()
        }
    }

    /// Closes an owned socket (its epoll registration was removed with the interest); libcurl's cleanup closed any
    /// other.
    func didRelease() {
        if self.ownsSocket { closeDescriptor(self.fd) }
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

    /// A failed send or recv on an owned socket, worded as libcurl words it (lib/cf-socket.c: CURLE_SEND_ERROR with
    /// "Send failure: <strerror>", CURLE_RECV_ERROR with "Recv failure: <strerror>"), so that a connection reports
    /// the same error whichever of the two reads its socket.
    private func socketError(sending: Bool, _ code: Int32) -> WebSocketError {
        let curlError = CurlError(
            sending ? CURLE_SEND_ERROR : CURLE_RECV_ERROR,
            detail: "\(sending ? "Send" : "Recv") failure: \(errnoText(code))")
        return WebSocketError(
            .network,
            "\(sending ? "writing to" : "reading from") \(self.settings.endpoint) failed: \(curlError.summary)",
            underlying: curlError, isConnectionFailure: false)
    }

    private func ioError(_ doing: String, _ code: CURLcode, _ handles: CurlHandles) -> WebSocketError {
        let curlError = CurlError(code, detail: handles.errorBuffer.text)
        let explanation = curlError.summary
        // A TLS protocol error on a read or write (an alert such as "tlsv13 alert certificate required") comes as
        // CURLE_RECV_ERROR/CURLE_SEND_ERROR with OpenSSL's error text ("SSL routines") in the detail; the CIO engine
        // reports those as TLS failures too.
        let tlsAlert =
            (code == CURLE_RECV_ERROR || code == CURLE_SEND_ERROR) && curlError.detail.contains("SSL routines")
        let kind: WebSocketError.Code =
            cws_curl_error_class(code) == CWS_CURL_ERROR_TLS || tlsAlert ? .tlsFailure : .network
        return WebSocketError(
            kind, "\(doing) \(self.settings.endpoint) failed: \(explanation)", underlying: curlError,
            isConnectionFailure: false)
    }
}
