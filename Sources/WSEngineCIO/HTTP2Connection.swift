// One HTTP/2 connection (libnghttp2 over a CIOTransport with ALPN h2) carrying WebSocket sessions as streams opened
// with an extended CONNECT (RFC 8441). The connection is the CIOTransport's handler: bytes read go into
// nghttp2_session_mem_recv, and what nghttp2_session_mem_send produces goes to the transport, while the transport
// holds less than `outputHighWater` unsent bytes (the rest waits in nghttp2 until the transport drains).
//
// Locking: `lock` guards the nghttp2 session and every mutable field here and in the streams; nghttp2 callbacks run
// inside nghttp2 calls made under it. Stream handlers are called only on the loop thread, never under the lock, in
// a delivery pass (after a read, or as a loop task), so a handler may call back into its stream. Lock order: the
// session's lock, then this lock, then the CIOTransport's lock (innermost).
//
// Flow control is each session's backpressure: automatic WINDOW_UPDATEs are off, and a stream's bytes are consumed
// (nghttp2_session_consume_*) only once its handler has taken them. A paused session keeps its bytes buffered here,
// at most its stream window, while the other streams go on.
import CWSLazyNghttp2
import Logging
import Synchronization
import WSCore
import WSPosix

// @unchecked Sendable: mutable state under `lock`; handlers on the loop thread.
/// An HTTP/2 connection to one origin, shared by the WebSocket sessions opened on it.
final class HTTP2Connection: WebSocketTransportHandler, @unchecked Sendable {
    /// The connection's phase.
    enum Phase {
        /// Waiting for the server's first SETTINGS.
        case starting
        /// Streams may be opened.
        case ready
        /// No new streams (GOAWAY received or sent, idle close); open ones finish.
        case draining
        /// The connection ended.
        case closed
    }

    /// What the server's SETTINGS allow.
    struct Readiness: Sendable {
        /// SETTINGS_ENABLE_CONNECT_PROTOCOL = 1: WebSockets may be opened with an extended CONNECT.
        var extendedConnect: Bool
    }

    let transport: CIOTransport
    let loop: EventLoop
    let origin: String
    let logger: Logger
    private let settings: CIOEngine.HTTP2Configuration
    /// Told once when the connection takes no new streams (draining or closed), so the pool forgets it.
    private let onRetire: @Sendable (HTTP2Connection) -> Void
    let lock = Mutex(())

    // Guarded by `lock`:
    private var session: OpaquePointer?
    private(set) var phase = Phase.starting
    var streams: [Int32: HTTP2Stream] = [:]
    /// Streams promised to sessions that are about to open them (counted against the server's limit).
    private var reserved = 0
    private var readinessWaiters: [CheckedContinuation<Readiness, any Error>] = []
    private var readiness: Result<Readiness, WebSocketError>?
    /// Why the connection failed, for the streams' errors.
    private var failure: WebSocketError?
    private var retired = false
    /// Bytes and frames of the header block being received (HEADERS + CONTINUATION), for the limit.
    private var headerBlockBytes = 0
    private var deliveryScheduled = false
    private var idleTimer: LoopTimer?
    /// The response headers of streams whose HEADERS are being received.
    var pendingHeaders: [Int32: (status: Int, headers: HTTPHeaders, bytes: Int)] = [:]

    /// Unsent bytes in the transport above which nghttp2 output waits for the transport to drain.
    static let outputHighWater = 256 * 1024

    init(
        transport: CIOTransport, origin: String, settings: CIOEngine.HTTP2Configuration, logger: Logger,
        onRetire: @escaping @Sendable (HTTP2Connection) -> Void
    ) throws(WebSocketError) {
        self.transport = transport
        self.loop = transport.loop
        self.origin = origin
        self.settings = settings
        self.logger = logger
        self.onRetire = onRetire
        // Loaded already by the capability check that led here (`nghttp2SupportsExtendedConnect`).
        var loadError: UnsafePointer<CChar>?
        guard cwsn_nghttp2_load(&loadError) == 1 else {
            throw WebSocketError(.unsupported, loadError.map { String(cString: $0) } ?? "libnghttp2 is not available")
        }
        var callbacks: OpaquePointer?
        guard cwsn_nghttp2_session_callbacks_new(&callbacks) == 0, let callbacks else {
            throw WebSocketError(.network, "cannot create the HTTP/2 session callbacks (out of memory)")
        }
        defer { cwsn_nghttp2_session_callbacks_del(callbacks) }
        HTTP2Callbacks.install(callbacks)
        var option: OpaquePointer?
        guard cwsn_nghttp2_option_new(&option) == 0, let option else {
            throw WebSocketError(.network, "cannot create the HTTP/2 session options (out of memory)")
        }
        defer { cwsn_nghttp2_option_del(option) }
        cwsn_nghttp2_option_set_no_auto_window_update(option, 1)
        cwsn_nghttp2_option_set_max_continuations(option, 8)
        var session: OpaquePointer?
        let created = cwsn_nghttp2_session_client_new2(
            &session, callbacks, Unmanaged.passUnretained(self).toOpaque(), option)
        guard created == 0, let session else {
            throw WebSocketError(.network, "cannot create the HTTP/2 session: \(Self.text(Int32(created)))")
        }
        self.session = session
        var entries = [
            nghttp2_settings_entry(settings_id: Int32(NGHTTP2_SETTINGS_ENABLE_PUSH.rawValue), value: 0),
            nghttp2_settings_entry(
                settings_id: Int32(NGHTTP2_SETTINGS_INITIAL_WINDOW_SIZE.rawValue),
                value: UInt32(settings.streamWindowSize)),
            nghttp2_settings_entry(
                settings_id: Int32(NGHTTP2_SETTINGS_MAX_HEADER_LIST_SIZE.rawValue),
                value: UInt32(settings.maxHeaderListSize)),
        ]
        _ = cwsn_nghttp2_submit_settings(session, UInt8(NGHTTP2_FLAG_NONE.rawValue), &entries, entries.count)
        // The connection window is not the backpressure (the streams' windows are): open it wide, so that paused
        // sessions never hold up the others.
        _ = cwsn_nghttp2_session_set_local_window_size(session, UInt8(NGHTTP2_FLAG_NONE.rawValue), 0, Int32.max)
    }

    deinit {
        if let session { cwsn_nghttp2_session_del(session) }
    }

    /// The nghttp2 session (under the lock).
    var sessionLocked: OpaquePointer? { self.session }

    /// Sends the connection preface and starts reading; the server's SETTINGS must come within `timeout`.
    func start(timeout: Duration) {
        self.lock.withLock { _ in self.flushOutput() }
        self.transport.start(handler: self)
        _ = self.loop.scheduleFromAnyThread(after: timeout) { [self] in
            self.lock.withLock { _ in
                guard self.phase == .starting else { return }
                self.failLocked(
                    WebSocketError(
                        .timedOut, "the server sent no HTTP/2 SETTINGS within \(timeout) on \(self.origin)"))
            }
        }
    }

    /// Closes a connection no session will use (GOAWAY, then the transport's close).
    func closeUnused() {
        self.lock.withLock { _ in self.closeGracefullyLocked() }
    }

    // MARK: Readiness and streams (any thread)

    /// Waits for the server's SETTINGS.
    func waitUntilReady() async throws -> Readiness {
        try await withCheckedThrowingContinuation { (continuation: CheckedContinuation<Readiness, any Error>) in
            let result = self.lock.withLock { _ -> Result<Readiness, WebSocketError>? in
                if let readiness = self.readiness { return readiness }
                self.readinessWaiters.append(continuation)
                return nil
            }
            if let result { continuation.resume(with: result.mapError { $0 }) }
        }
    }

    /// Takes a stream slot if the connection is ready and below the server's stream limit.
    func reserveStream() -> Bool {
        self.lock.withLock { _ -> Bool in
            guard self.phase == .ready, let session = self.session else { return false }
            let limit = cwsn_nghttp2_session_get_remote_settings(session, NGHTTP2_SETTINGS_MAX_CONCURRENT_STREAMS)
            guard self.streams.count + self.reserved < Int(limit) else { return false }
            self.reserved += 1
            self.idleTimer?.cancel()
            self.idleTimer = nil
            return true
        }
    }

    /// Whether new streams may open (the server's stream limit aside): not closed, not draining.
    var takesStreams: Bool { self.lock.withLock { _ in self.phase == .ready } }

    /// Why no new stream opens here: the connection's failure, or that it stopped taking streams.
    var noNewStreamsError: WebSocketError { self.lock.withLock { _ in self.noNewStreamsErrorLocked } }

    private var noNewStreamsErrorLocked: WebSocketError {
        self.failure ?? WebSocketError(.network, "the HTTP/2 connection to \(self.origin) no longer takes new streams")
    }

    /// Opens a WebSocket stream with an extended CONNECT on a slot taken with ``reserveStream()``; returns once the
    /// server answered (any status: the session checks it). Throws ``HTTP2StreamNotProcessed`` when the server
    /// did not process the request (it may be sent again), `WebSocketError` otherwise.
    func openStream(_ request: EngineOpeningRequest, timeout: Duration) async throws -> HTTP2Stream {
        let stream = HTTP2Stream(connection: self)
        return try await withCheckedThrowingContinuation {
            (continuation: CheckedContinuation<HTTP2Stream, any Error>) in
            let failure = self.lock.withLock { _ -> (any Error)? in
                self.reserved -= 1
                guard self.phase == .ready || self.phase == .starting, let session = self.session else {
                    // Nothing was sent for this session: another connection may take it.
                    return HTTP2StreamNotProcessed(error: self.noNewStreamsErrorLocked)
                }
                let id = Self.withHeaderFields(request, authority: request.authority) { fields, count in
                    cws_h2_submit_request(session, fields, count, HTTP2Callbacks.readData)
                }
                guard id > 0 else {
                    self.scheduleIdleCheck()
                    return WebSocketError(
                        .network, "cannot open an HTTP/2 stream to \(self.origin): \(Self.text(id))")
                }
                stream.id = id
                stream.opening = continuation
                self.streams[id] = stream
                // Armed under the lock: the response (which cancels it under the lock on the loop thread) may come
                // as soon as the request is flushed.
                stream.openTimer = self.loop.scheduleFromAnyThread(after: timeout) { [self] in
                    self.openTimedOut(stream, after: timeout)
                }
                self.flushOutput()
                return nil
            }
            if let failure { continuation.resume(throwing: failure) }
        }
    }

    private func openTimedOut(_ stream: HTTP2Stream, after timeout: Duration) {
        self.lock.withLock { _ in
            guard let continuation = stream.opening.take() else { return }
            continuation.resume(
                throwing: WebSocketError(
                    .timedOut,
                    "the server did not answer the HTTP/2 WebSocket request on \(self.origin) within \(timeout)"))
            self.resetLocked(stream, code: NGHTTP2_CANCEL.rawValue)
        }
    }

    /// Builds the extended CONNECT's header fields (lower-case names, as HTTP/2 requires) and passes them to `body`.
    private static func withHeaderFields<R>(
        _ request: EngineOpeningRequest, authority: String,
        _ body: (UnsafePointer<nghttp2_nv>, Int) -> R
    ) -> R {
        var pairs: [(String, String)] = [
            (":method", "CONNECT"), (":protocol", "websocket"), (":scheme", "https"), (":path", request.path),
            (":authority", authority), ("sec-websocket-version", "13"),
        ]
        let excluded: Set<String> = [
            "host", "connection", "upgrade", "keep-alive", "proxy-connection", "transfer-encoding", "te",
            "sec-websocket-key", "sec-websocket-version",
        ]
        for field in request.headers {
            let name = HTTPHeaders.lowercase(field.name)
            if !excluded.contains(name) { pairs.append((name, field.value)) }
        }
        var storage: [UInt8] = []
        var ranges: [(Int, Int, Int, Int)] = []
        for (name, value) in pairs {
            let nameStart = storage.count
            storage.append(contentsOf: name.utf8)
            let valueStart = storage.count
            storage.append(contentsOf: value.utf8)
            ranges.append((nameStart, valueStart - nameStart, valueStart, storage.count - valueStart))
        }
        storage.append(0)  // Never empty, so the base address exists.
        return storage.withUnsafeMutableBufferPointer { bytes in
            let base = bytes.baseAddress!
            let fields = ranges.map { range in
                nghttp2_nv(
                    name: base + range.0, value: base + range.2, namelen: range.1, valuelen: range.3,
                    flags: UInt8(NGHTTP2_NV_FLAG_NONE.rawValue))
            }
            return fields.withUnsafeBufferPointer { body($0.baseAddress!, $0.count) }
        }
    }

    // MARK: Stream operations (any thread; called by HTTP2Stream under `lock`)

    /// Tells nghttp2 that a deferred stream has data again, and sends.
    func resumeDataLocked(_ stream: HTTP2Stream) {
        guard let session = self.session, stream.id > 0 else { return }
        _ = cwsn_nghttp2_session_resume_data(session, stream.id)
        self.flushOutput()
    }

    /// Resets `stream` with `code` (NO_ERROR after a finished close handshake, CANCEL on abort) and forgets it.
    func resetLocked(_ stream: HTTP2Stream, code: UInt32) {
        if let session = self.session, stream.isOpenLocked, self.phase != .closed {
            _ = cwsn_nghttp2_submit_rst_stream(session, UInt8(NGHTTP2_FLAG_NONE.rawValue), stream.id, code)
            self.flushOutput()
        }
        self.forgetLocked(stream)
    }

    /// Removes a stream that ended; the connection may become idle.
    func forgetLocked(_ stream: HTTP2Stream) {
        if self.streams[stream.id] === stream { self.streams[stream.id] = nil }
        self.pendingHeaders[stream.id] = nil
        self.scheduleIdleCheck()
    }

    /// The stream's handler took `count` bytes: give the server that much window back.
    func consumedLocked(_ stream: HTTP2Stream, _ count: Int) {
        guard let session = self.session, count > 0 else { return }
        _ = cwsn_nghttp2_session_consume_connection(session, count)
        if self.streams[stream.id] === stream { _ = cwsn_nghttp2_session_consume_stream(session, stream.id, count) }
        self.flushOutput()
    }

    /// Streams whose close waits for their last DATA to be packed: reset once it is.
    var pendingResets: [HTTP2Stream] = []

    /// Hands nghttp2's output to the transport while it has room. Never called from inside an nghttp2 callback.
    func flushOutput() {
        guard let session = self.session, self.phase != .closed else { return }
        self.send(session)
        while !self.pendingResets.isEmpty && self.phase != .closed {
            let streams = self.pendingResets
            self.pendingResets = []
            for stream in streams {
                // Only a stream nghttp2 still has open: a reset of a closed stream upsets some servers.
                if stream.resetsAfterFlush {
                    _ = cwsn_nghttp2_submit_rst_stream(
                        session, UInt8(NGHTTP2_FLAG_NONE.rawValue), stream.id, NGHTTP2_NO_ERROR.rawValue)
                    self.forgetLocked(stream)
                }
                stream.endLocked(error: nil)
            }
            self.send(session)
        }
    }

    private func send(_ session: OpaquePointer) {
        while self.transport.bufferedBytes < Self.outputHighWater {
            var data: UnsafePointer<UInt8>?
            let length = cwsn_nghttp2_session_mem_send(session, &data)
            if length < 0 {
                self.failLocked(
                    WebSocketError(
                        .network, "HTTP/2 error on the connection to \(self.origin): \(Self.text(Int32(length)))"))
                return
            }
            guard length > 0, let data else { break }
            self.transport.write(bytes: UnsafeRawBufferPointer(start: data, count: length))
        }
        if cwsn_nghttp2_session_want_read(session) == 0 && cwsn_nghttp2_session_want_write(session) == 0 {
            // GOAWAY exchanged and nothing left to do.
            self.failLocked(
                self.failure
                    ?? WebSocketError(
                        .network, "the HTTP/2 connection to \(self.origin) was closed"))
        }
    }

    /// Asks for a delivery pass on the loop thread (once until it runs).
    func scheduleDeliveryLocked() {
        guard !self.deliveryScheduled else { return }
        self.deliveryScheduled = true
        if !self.loop.execute({ [self] in self.deliver() }) { self.deliveryScheduled = false }
    }

    // MARK: Transport events (loop thread)

    func transportDidRead(_ bytes: UnsafeRawBufferPointer) {
        self.lock.withLock { _ in
            guard let session = self.session, self.phase != .closed else { return }
            let result = cwsn_nghttp2_session_mem_recv(
                session, bytes.baseAddress?.assumingMemoryBound(to: UInt8.self), bytes.count)
            if result < 0 {
                self.failLocked(
                    self.failure
                        ?? WebSocketError(
                            .network, "HTTP/2 error on the connection to \(self.origin): \(Self.text(Int32(result)))"))
                return
            }
            self.flushOutput()
        }
        self.deliver()
    }

    func transportDidDrain() {
        self.lock.withLock { _ in self.flushOutput() }
        self.deliver()
    }

    func transportDidClose(error: (any Error)?) {
        self.lock.withLock { _ in
            let reason: WebSocketError
            if let failure = self.failure {
                reason = failure
            } else if let error {
                reason = WebSocketError(
                    .network, "the HTTP/2 connection to \(self.origin) failed: \(error)", underlying: error)
            } else {
                reason = WebSocketError(.network, "the server closed the HTTP/2 connection to \(self.origin)")
            }
            self.failLocked(reason)
        }
        self.deliver()
    }

    /// Ends the connection: every stream ends with `error`, waiters fail, the transport is aborted.
    func failLocked(_ error: WebSocketError) {
        guard self.phase != .closed else { return }
        if self.failure == nil { self.failure = error }
        self.phase = .closed
        self.idleTimer?.cancel()
        self.idleTimer = nil
        self.resolveReadiness(.failure(error))
        for stream in self.streams.values { stream.endLocked(error: error) }
        self.streams = [:]
        self.retireLocked()
        let transport = self.transport
        // After the lock: the transport may report its close right away.
        self.loop.execute { transport.abort() }
        self.scheduleDeliveryLocked()
    }

    private func retireLocked() {
        guard !self.retired else { return }
        self.retired = true
        let onRetire = self.onRetire
        self.loop.execute { [self] in onRetire(self) }
    }

    func resolveReadiness(_ result: Result<Readiness, WebSocketError>) {
        guard self.readiness == nil else { return }
        self.readiness = result
        if case .success = result, self.phase == .starting { self.phase = .ready }
        for waiter in self.readinessWaiters { waiter.resume(with: result.mapError { $0 }) }
        self.readinessWaiters = []
    }

    /// A GOAWAY from the server: no new streams here; the streams it processes finish.
    func goAwayReceivedLocked(code: UInt32, lastStreamID: Int32) {
        self.logger.debug(
            "HTTP/2 GOAWAY received",
            metadata: ["ws.h2.error": "\(Self.errorName(code))", "ws.h2.lastStream": "\(lastStreamID)"])
        if self.phase == .ready || self.phase == .starting { self.phase = .draining }
        if code != NGHTTP2_NO_ERROR.rawValue && self.failure == nil {
            self.failure = WebSocketError(
                .network, "the server ended the HTTP/2 connection to \(self.origin) (GOAWAY \(Self.errorName(code)))")
        }
        self.resolveReadiness(
            .failure(WebSocketError(.network, "the server sent GOAWAY before its SETTINGS")))
        self.retireLocked()
        self.scheduleIdleCheck()
    }

    /// The header block being received grew by a frame of `length` bytes; `false` when it exceeds the limit.
    func headerFrameBegan(length: Int, continuation: Bool) -> Bool {
        self.headerBlockBytes = (continuation ? self.headerBlockBytes : 0) + length + 9
        guard self.headerBlockBytes <= self.settings.maxHeaderListSize else {
            self.failure = WebSocketError(
                .network,
                "the server sent an HTTP/2 header block larger than \(self.settings.maxHeaderListSize) bytes on the connection to \(self.origin); the connection was closed"
            )
            return false
        }
        return true
    }

    /// Records a fatal condition found in a callback (the callback then fails the session).
    func recordFailure(_ message: String) {
        if self.failure == nil { self.failure = WebSocketError(.network, message) }
    }

    // MARK: Idle close

    /// Arms the idle timer when no stream is open or promised.
    private func scheduleIdleCheck() {
        guard self.streams.isEmpty, self.reserved == 0, self.idleTimer == nil, self.phase != .closed else { return }
        if self.phase == .draining {
            // Nothing left to finish: close after this call (this may run inside an nghttp2 callback).
            self.loop.execute { [self] in
                self.lock.withLock { _ in
                    guard self.streams.isEmpty, self.reserved == 0, self.phase == .draining else { return }
                    self.closeGracefullyLocked()
                }
            }
            return
        }
        self.idleTimer = self.loop.scheduleFromAnyThread(after: self.settings.idleTimeout) { [self] in
            self.lock.withLock { _ in
                self.idleTimer = nil
                guard self.streams.isEmpty, self.reserved == 0, self.phase == .ready else { return }
                self.logger.debug("closing the idle HTTP/2 connection")
                self.closeGracefullyLocked()
            }
        }
    }

    /// GOAWAY(NO_ERROR), then the transport closes after flushing it.
    private func closeGracefullyLocked() {
        guard let session = self.session, self.phase != .closed else { return }
        self.phase = .closed
        self.retireLocked()
        _ = cwsn_nghttp2_submit_goaway(session, UInt8(NGHTTP2_FLAG_NONE.rawValue), 0, NGHTTP2_NO_ERROR.rawValue, nil, 0)
        var data: UnsafePointer<UInt8>?
        while true {
            let length = cwsn_nghttp2_session_mem_send(session, &data)
            guard length > 0, let data else { break }
            self.transport.write(bytes: UnsafeRawBufferPointer(start: data, count: length))
        }
        self.resolveReadiness(.failure(WebSocketError(.network, "the HTTP/2 connection was closed")))
        let transport = self.transport
        self.loop.execute { transport.close() }
    }

    // MARK: Delivery (loop thread, no lock held)

    /// Delivers what the streams have for their handlers, and gives the server window for what they took.
    func deliver() {
        while true {
            let events = self.lock.withLock { _ -> [(HTTP2Stream, any WebSocketTransportHandler, HTTP2Stream.Event)] in
                self.deliveryScheduled = false
                var events: [(HTTP2Stream, any WebSocketTransportHandler, HTTP2Stream.Event)] = []
                for stream in self.streamsWithEvents {
                    while let (handler, event) = stream.takeEventLocked() { events.append((stream, handler, event)) }
                }
                self.streamsWithEvents = []
                return events
            }
            if events.isEmpty { return }
            for (stream, handler, event) in events { stream.handle(event, with: handler) }
        }
    }

    /// Streams that have something for their handlers (guarded by `lock`).
    var streamsWithEvents: [HTTP2Stream] = []

    /// Marks `stream` as having events and schedules a pass.
    func noteEventsLocked(_ stream: HTTP2Stream) {
        if !stream.listed {
            stream.listed = true
            self.streamsWithEvents.append(stream)
        }
        self.scheduleDeliveryLocked()
    }

    // MARK: Text

    static func text(_ code: Int32) -> String { String(cString: cwsn_nghttp2_strerror(code)) }

    static func errorName(_ code: UInt32) -> String { String(cString: cwsn_nghttp2_http2_strerror(code)) }
}
