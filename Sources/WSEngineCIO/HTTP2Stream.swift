// A WebSocket session's stream of an HTTP2Connection, as the session's transport: the session's bytes are the
// stream's DATA. Every mutable field is guarded by the connection's lock; handler callbacks come from the
// connection's delivery pass on the loop thread, outside the lock.
import CWSLazyNghttp2
import Synchronization
import WSCore
import WSPosix

/// One WebSocket stream (RFC 8441) of an ``HTTP2Connection``, implementing the transport contract.
final class HTTP2Stream: WebSocketTransport, @unchecked Sendable {  // Mutable state: `connection.lock`.
    /// Something for the handler.
    enum Event {
        case data([UInt8])
        case drain
        case close((any Error)?)
    }

    let connection: HTTP2Connection
    // Guarded by `connection.lock`:
    var id: Int32 = 0
    var opening: CheckedContinuation<HTTP2Stream, any Error>?
    var openTimer: LoopTimer?
    private var response: EngineOpeningResponse?
    private var handler: (any WebSocketTransportHandler)?
    private var paused = false
    /// Received bytes the handler has not taken yet (at most the stream window).
    var inbound: [UInt8] = []
    /// Bytes the session wrote that nghttp2 has not packed into DATA frames yet.
    private var outbound: [UInt8] = []
    private var outboundOffset = 0
    /// A write returned a positive buffered count: the handler gets a drain when the buffer empties.
    private var reportedBuffered = false
    private var drainPending = false
    /// The server ended its side (END_STREAM).
    var remoteEnded = false
    /// `close()` was called: the stream is reset once its last bytes are packed.
    private var closeRequested = false
    /// `abort()` was called.
    private var aborted = false
    /// Writes are taken (not after close, abort, a reset or the connection's end; still after the server's end).
    private var writable = true
    /// The session wrote its last bytes (the close frame): END_STREAM goes on the DATA frame that carries their end.
    private var endAfterFlush = false
    /// END_STREAM was packed.
    private var localEnded = false
    private var ended = false
    private var endError: (any Error)?
    private var closeReported = false
    /// The stream is in the connection's list of streams with events.
    var listed = false

    init(connection: HTTP2Connection) {
        self.connection = connection
    }

    private var pending: Int { self.outbound.count - self.outboundOffset }

    // MARK: Opening (under the lock)

    /// The server's response to the extended CONNECT arrived.
    func respondedLocked(status: Int, headers: HTTPHeaders) {
        self.response = EngineOpeningResponse(status: status, headers: headers, httpVersion: .http2)
        self.openTimer?.cancel()
        self.openTimer = nil
        self.opening.take()?.resume(returning: self)
    }

    // MARK: WebSocketTransport (any thread)

    var openingResponse: EngineOpeningResponse? { self.connection.lock.withLock { _ in self.response } }

    func start(handler: any WebSocketTransportHandler) {
        self.connection.lock.withLock { _ in
            self.handler = handler
            self.connection.noteEventsLocked(self)
        }
    }

    @discardableResult
    func write(_ bytes: [UInt8]) -> Int {
        bytes.withUnsafeBytes { self.write(bytes: $0) }
    }

    @discardableResult
    func write(bytes: UnsafeRawBufferPointer) -> Int {
        self.connection.lock.withLock { _ -> Int in
            guard self.writable else { return 0 }
            self.outbound.append(contentsOf: bytes)
            self.connection.resumeDataLocked(self)
            let pending = self.pending
            if pending > 0 { self.reportedBuffered = true }
            return pending
        }
    }

    @discardableResult
    func writeLast(_ bytes: [UInt8]) -> Int {
        self.connection.lock.withLock { _ -> Int in
            guard self.writable else { return 0 }
            self.outbound.append(contentsOf: bytes)
            self.writable = false
            self.endAfterFlush = true
            self.connection.resumeDataLocked(self)
            let pending = self.pending
            if pending > 0 { self.reportedBuffered = true }
            return pending
        }
    }

    func setReadingPaused(_ paused: Bool) {
        self.connection.lock.withLock { _ in
            self.paused = paused
            if !paused && (!self.inbound.isEmpty || self.ended) { self.connection.noteEventsLocked(self) }
        }
    }

    /// Sends what is buffered, then, if the stream is still open, resets it (NO_ERROR): the close handshake is over,
    /// and the server's end of the stream is not waited for (some servers never send it).
    func close() {
        self.connection.lock.withLock { _ in
            guard !self.closeRequested, !self.aborted else { return }
            self.closeRequested = true
            self.writable = false
            if !self.isOpenLocked {
                self.endLocked(error: nil)
            } else if self.pending == 0 {
                self.connection.resetLocked(self, code: NGHTTP2_NO_ERROR.rawValue)
                self.endLocked(error: nil)
            } else {
                self.connection.resumeDataLocked(self)
            }
        }
    }

    /// nghttp2 still has the stream open (it is forgotten when nghttp2 closes it).
    var isOpenLocked: Bool { self.id > 0 && self.connection.streams[self.id] === self }

    /// A close waits for this stream's last bytes to be packed: reset it if it is still open then.
    var resetsAfterFlush: Bool { self.closeRequested && self.isOpenLocked }

    /// Resets the stream (CANCEL), dropping buffered bytes.
    func abort() {
        self.connection.lock.withLock { _ in
            guard !self.aborted else { return }
            self.aborted = true
            self.writable = false
            self.outbound = []
            self.outboundOffset = 0
            self.connection.resetLocked(self, code: NGHTTP2_CANCEL.rawValue)
            self.endLocked(error: nil)
        }
    }

    var bufferedBytes: Int { self.connection.lock.withLock { _ in self.pending } }

    var executor: (any TaskExecutor)? { self.connection.loop }

    func schedule(after delay: Duration, _ action: @escaping @Sendable () -> Void) -> (any WebSocketTransportTimer)? {
        LoopTimerHandle(timer: self.connection.loop.scheduleFromAnyThread(after: delay, action))
    }

    // MARK: Under the lock

    /// The stream ended (`nil`: cleanly); the handler hears it after the bytes before it.
    func endLocked(error: (any Error)?) {
        if error != nil { self.writable = false }
        guard !self.ended else { return }
        self.ended = true
        self.endError = error
        self.openTimer?.cancel()
        self.openTimer = nil
        if let opening = self.opening.take() {
            opening.resume(
                throwing: error
                    ?? WebSocketError(
                        .network, "the HTTP/2 stream ended before the server answered the WebSocket request"))
        }
        self.connection.noteEventsLocked(self)
    }

    /// The server ended its side of the stream (END_STREAM): the end of the stream for the session, after its bytes.
    func remoteEndLocked() {
        self.remoteEnded = true
        self.endLocked(error: nil)
    }

    /// Bytes of this stream's DATA arrived.
    func receivedLocked(_ bytes: UnsafeBufferPointer<UInt8>) {
        guard !self.ended else { return }
        self.inbound.append(contentsOf: bytes)
        if self.handler != nil && !self.paused { self.connection.noteEventsLocked(self) }
    }

    /// nghttp2 packs a DATA frame: up to `capacity` bytes into `buffer`; `nil` when there is nothing (deferred).
    func readOutboundLocked(
        into buffer: UnsafeMutablePointer<UInt8>, capacity: Int, flags: UnsafeMutablePointer<UInt32>
    ) -> Int? {
        let count = min(capacity, self.pending)
        guard count > 0 else { return nil }
        self.outbound.withUnsafeBufferPointer { bytes in
            buffer.update(from: bytes.baseAddress! + self.outboundOffset, count: count)
        }
        self.outboundOffset += count
        if self.pending == 0 {
            self.outbound.removeAll(keepingCapacity: self.outbound.count <= 64 * 1024)
            self.outboundOffset = 0
            if self.endAfterFlush && !self.localEnded {
                // END_STREAM on the DATA frame that carries the close frame (never a separate empty one).
                self.localEnded = true
                flags.pointee |= NGHTTP2_DATA_FLAG_EOF.rawValue
            }
            if self.reportedBuffered {
                self.reportedBuffered = false
                self.drainPending = true
                self.connection.noteEventsLocked(self)
            }
            if self.closeRequested { self.connection.pendingResets.append(self) }
        } else if self.outboundOffset >= 64 * 1024 && self.outboundOffset * 2 >= self.outbound.count {
            self.outbound.removeFirst(self.outboundOffset)
            self.outboundOffset = 0
        }
        return count
    }

    /// The next event for the handler, with the handler; `nil` when there is none now.
    func takeEventLocked() -> (any WebSocketTransportHandler, Event)? {
        guard let handler = self.handler, !self.closeReported else {
            self.listed = false
            return nil
        }
        let local = self.closeRequested || self.aborted
        let localEnd = self.ended && self.endError == nil && local
        if !self.inbound.isEmpty && !self.paused && !local {
            defer { self.inbound = [] }
            return (handler, .data(self.inbound))
        }
        if self.drainPending && !self.ended {
            self.drainPending = false
            return (handler, .drain)
        }
        // The end of the stream comes after the unread bytes; an end we caused comes at once.
        if self.ended && (self.inbound.isEmpty || localEnd) {
            self.closeReported = true
            self.handler = nil
            return (handler, .close(self.endError))
        }
        self.listed = false
        return nil
    }

    /// Delivers `event` (loop thread, no lock held).
    func handle(_ event: Event, with handler: any WebSocketTransportHandler) {
        switch event {
        case .data(let bytes):
            bytes.withUnsafeBytes { handler.transportDidRead($0) }
            self.connection.lock.withLock { _ in self.connection.consumedLocked(self, bytes.count) }
        case .drain:
            handler.transportDidDrain()
        case .close(let error):
            handler.transportDidClose(error: error)
            // The server ended its side: unless our END_STREAM is on its way (then nghttp2 closes the stream), the
            // stream's slot is freed with a reset once the session has heard the end.
            self.connection.lock.withLock { _ in
                if self.isOpenLocked && !self.endAfterFlush {
                    self.writable = false
                    self.connection.resetLocked(self, code: NGHTTP2_NO_ERROR.rawValue)
                }
            }
        }
    }
}

/// The nghttp2 callbacks: C functions that find their ``HTTP2Connection`` in the session's user data. They run
/// inside nghttp2 calls the connection makes under its lock, and make no nghttp2 send or receive calls themselves.
enum HTTP2Callbacks {
    private static func connection(_ userData: UnsafeMutableRawPointer?) -> HTTP2Connection {
        Unmanaged<HTTP2Connection>.fromOpaque(userData!).takeUnretainedValue()
    }

    /// Registers the callbacks on `callbacks`.
    static func install(_ callbacks: OpaquePointer) {
        cwsn_nghttp2_session_callbacks_set_on_begin_frame_callback(callbacks) { _, header, userData in
            guard let header else { return 0 }
            let type = cws_h2_hd_type(header)
            guard type == UInt8(NGHTTP2_HEADERS.rawValue) || type == UInt8(NGHTTP2_CONTINUATION.rawValue) else {
                return 0
            }
            let ok = HTTP2Callbacks.connection(userData).headerFrameBegan(
                length: cws_h2_hd_length(header), continuation: type == UInt8(NGHTTP2_CONTINUATION.rawValue))
            return ok ? 0 : NGHTTP2_ERR_CALLBACK_FAILURE.rawValue
        }
        cwsn_nghttp2_session_callbacks_set_on_header_callback(callbacks) {
            _, frame, name, nameLength, value, valueLength, _, userData in
            guard let frame, let name, let value else { return 0 }
            let connection = HTTP2Callbacks.connection(userData)
            let id = cws_h2_frame_stream_id(frame)
            guard connection.streams[id] != nil else { return 0 }
            let nameText = String(decoding: UnsafeBufferPointer(start: name, count: nameLength), as: UTF8.self)
            let valueText = String(decoding: UnsafeBufferPointer(start: value, count: valueLength), as: UTF8.self)
            var entry = connection.pendingHeaders[id] ?? (status: 0, headers: HTTPHeaders(), bytes: 0)
            if nameText == ":status" {
                entry.status = Int(valueText) ?? 0
            } else if !nameText.hasPrefix(":") {
                entry.headers.add(nameText, valueText)
            }
            connection.pendingHeaders[id] = entry
            return 0
        }
        cwsn_nghttp2_session_callbacks_set_on_data_chunk_recv_callback(callbacks) {
            _, _, id, data, length, userData in
            guard let data else { return 0 }
            let connection = HTTP2Callbacks.connection(userData)
            if let stream = connection.streams[id] {
                stream.receivedLocked(UnsafeBufferPointer(start: data, count: length))
            } else {
                // A stream we reset: give the window back.
                connection.lostDataLocked(length)
            }
            return 0
        }
        cwsn_nghttp2_session_callbacks_set_on_frame_recv_callback(callbacks) { _, frame, userData in
            guard let frame else { return 0 }
            HTTP2Callbacks.connection(userData).frameReceivedLocked(frame)
            return 0
        }
        cwsn_nghttp2_session_callbacks_set_on_frame_send_callback(callbacks) { _, frame, userData in
            guard let frame, cws_h2_frame_type(frame) == UInt8(NGHTTP2_GOAWAY.rawValue) else { return 0 }
            let code = cws_h2_goaway_error_code(frame)
            if code != NGHTTP2_NO_ERROR.rawValue {
                let connection = HTTP2Callbacks.connection(userData)
                connection.recordFailure(
                    "HTTP/2 protocol error on the connection to \(connection.origin): the server broke the protocol (we sent GOAWAY \(HTTP2Connection.errorName(code)))"
                )
            }
            return 0
        }
        cwsn_nghttp2_session_callbacks_set_on_stream_close_callback(callbacks) { _, id, code, userData in
            HTTP2Callbacks.connection(userData).streamClosedLocked(id, code: code)
            return 0
        }
    }

    /// The data source of every WebSocket stream: the stream's outbound bytes, deferred while there are none.
    static let readData: nghttp2_data_source_read_callback = { _, id, buffer, length, flags, _, userData in
        let connection = HTTP2Callbacks.connection(userData)
        guard let buffer, let stream = connection.streams[id] else {
            return Int(NGHTTP2_ERR_DEFERRED.rawValue)
        }
        guard let flags, let count = stream.readOutboundLocked(into: buffer, capacity: length, flags: flags) else {
            return Int(NGHTTP2_ERR_DEFERRED.rawValue)
        }
        return count
    }
}

extension HTTP2Connection {
    /// A frame arrived (inside nghttp2_session_mem_recv, under the lock).
    func frameReceivedLocked(_ frame: UnsafePointer<nghttp2_frame>) {
        let type = cws_h2_frame_type(frame)
        let flags = cws_h2_frame_flags(frame)
        let id = cws_h2_frame_stream_id(frame)
        switch UInt32(type) {
        case NGHTTP2_SETTINGS.rawValue:
            guard flags & UInt8(NGHTTP2_FLAG_ACK.rawValue) == 0, let session = self.sessionLocked else { return }
            let enabled = cwsn_nghttp2_session_get_remote_settings(session, NGHTTP2_SETTINGS_ENABLE_CONNECT_PROTOCOL)
            self.resolveReadiness(.success(Readiness(extendedConnect: enabled == 1)))
        case NGHTTP2_HEADERS.rawValue:
            guard let stream = self.streams[id] else { return }
            if flags & UInt8(NGHTTP2_FLAG_END_HEADERS.rawValue) != 0, stream.opening != nil,
                let entry = self.pendingHeaders.removeValue(forKey: id)
            {
                stream.respondedLocked(status: entry.status, headers: entry.headers)
            }
            if flags & UInt8(NGHTTP2_FLAG_END_STREAM.rawValue) != 0 { stream.remoteEndLocked() }
        case NGHTTP2_DATA.rawValue:
            if flags & UInt8(NGHTTP2_FLAG_END_STREAM.rawValue) != 0 { self.streams[id]?.remoteEndLocked() }
        case NGHTTP2_GOAWAY.rawValue:
            self.goAwayReceivedLocked(
                code: cws_h2_goaway_error_code(frame), lastStreamID: cws_h2_goaway_last_stream_id(frame))
        default:
            return
        }
    }

    /// nghttp2 closed a stream (END_STREAM both ways, RST_STREAM either way, or GOAWAY refused it).
    func streamClosedLocked(_ id: Int32, code: UInt32) {
        guard let stream = self.streams[id] else { return }
        if code == NGHTTP2_NO_ERROR.rawValue && stream.remoteEnded {
            stream.endLocked(error: nil)
        } else if code == NGHTTP2_REFUSED_STREAM.rawValue {
            // RST_STREAM(REFUSED_STREAM), or a GOAWAY whose last stream is below this one: the server did not
            // process the request (RFC 9113, 8.7), so an opening session may try again on another stream.
            let error = WebSocketError(
                .network,
                "the server refused the HTTP/2 stream on \(self.origin) (REFUSED_STREAM or GOAWAY) without processing it"
            )
            if let opening = stream.opening.take() { opening.resume(throwing: HTTP2StreamNotProcessed(error: error)) }
            stream.endLocked(error: error)
        } else {
            stream.endLocked(
                error: WebSocketError(
                    .network,
                    "the server reset the HTTP/2 stream of this session on \(self.origin) (RST_STREAM \(Self.errorName(code)))"
                ))
        }
        self.forgetLocked(stream)
    }

    /// DATA for a stream that is gone: its bytes count against the connection window; give them back.
    func lostDataLocked(_ count: Int) {
        if let session = self.sessionLocked { _ = cwsn_nghttp2_session_consume_connection(session, count) }
    }
}
