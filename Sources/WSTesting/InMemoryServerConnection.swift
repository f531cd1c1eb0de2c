import Synchronization
public import WSCore

/// The server side of one connection of an ``InMemoryEngine``: a test scripts it (receive this frame, send that
/// one, close, drop) while the client's session runs over an in-memory byte stream, with no sockets and no
/// threads.
///
/// You get one in the engine's handler (`InMemoryEngine { server in ... }`) or from
/// ``InMemoryEngine/nextConnection()``. Its methods may be called from any task.
///
/// - The opening handshake: ``request`` is the client's upgrade request. ``accept(subprotocol:headers:)`` or
///   ``reject(status:body:headers:)`` answers it; with a handler, the first ``receive()``, ``send(_:)`` or
///   ``close(_:)`` accepts it if the handler has not answered yet; without a handler the engine accepts every
///   request at once.
/// - Frames from the client: ``receive()`` returns them as the client sent them, unmasked, one frame at a time
///   (fragments are not reassembled; the SDK sends each message as one frame), pings, pongs and the close frame
///   included. Like a correct server, the connection answers pings with a pong and the client's close frame with
///   a close frame of the same code followed by the end of the connection, the moment they arrive; set
///   ``answersPings`` or ``answersClose`` to `false` to misbehave or to answer yourself.
/// - Frames to the client: ``send(_:)`` and friends return once the client's session has read the frame (unless
///   the client paused reading), so what the session does in reaction has happened when they return.
/// - The network: ``pauseReading()`` stops the server from taking the client's bytes, so they pile up in the
///   client's transport (``clientBufferedBytes``) and the client's sends feel backpressure; ``drop()`` loses the
///   connection.
public final class InMemoryServerConnection: Sendable {
    /// What the client's transport is told, in order, by the connection's serial event delivery.
    enum Event {
        /// Bytes from the server; held while the client paused reading.
        case read([UInt8])
        /// The server ended the stream: `nil` for a clean end (after a close), an error when it dropped the
        /// connection. Held while the client paused reading, like bytes.
        case streamEnd((any Error)?)
        /// The client closed or aborted the transport: report the close.
        case closeReport
        /// The client's buffered bytes were all taken.
        case drain
        /// A timer fell due.
        case timer(InMemoryTimer, @Sendable () -> Void)

        var isStream: Bool {
            switch self {
            case .read, .streamEnd: true
            default: false
            }
        }
    }

    /// Everything, under one lock. The lock is never held while the client's handler, a timer action or a
    /// continuation runs.
    struct State {
        // The client's side of the stream.
        var handler: (any WebSocketTransportHandler)?
        var started = false
        var clientPaused = false
        var events: [Event] = []
        var pumping = false
        /// `transportDidClose` was delivered: nothing more goes to the handler.
        var closeReported = false
        /// The client called `close()` or `abort()`: its writes are dropped.
        var clientClosed = false
        /// The client closed while the server was not reading: report the close once its bytes are taken.
        var closeAfterFlush = false

        // Client to server.
        var serverPaused = false
        /// What the client wrote and the server has not taken (while it does not read).
        var outgoing: [UInt8] = []
        var parser: HTTPRequestParser? = HTTPRequestParser()
        var request: RecordedRequest?
        var key = ""
        var decoder = FrameDecoder(maxFrameSize: 64 << 20, role: .server)
        var inbox: [Frame] = []
        var decodeError: (any Error)?
        var clientCloseFrame: Frame?
        /// The client's close frame was returned by `receive()`: it returns `nil` from then on.
        var closeFrameReturned = false
        /// The client's side of the stream has ended (closed or aborted, and its bytes taken).
        var clientEOF = false

        // Server to client.
        var answered = false
        var accepted = false
        var answersPings = true
        var answersClose = true
        var serverCloseSent = false
        /// The server closed its side (after a close, a rejection or a drop): client writes are dropped.
        var serverClosed = false

        var nextWaiterID: UInt64 = 0
        var waiters: [UInt64: CheckedContinuation<Void, Never>] = [:]

        /// The index of the next event the client can be given now.
        var nextDeliverable: Int? {
            self.events.firstIndex { event in
                switch event {
                case .timer: true
                case .read, .streamEnd: self.started && !self.closeReported && !self.clientPaused
                case .closeReport, .drain: self.started && !self.closeReported
                }
            }
        }
    }

    let state = Mutex(State())
    let clock: InMemoryClock
    /// What runs the server side, or `nil` for a connection the test takes with ``InMemoryEngine/nextConnection()``.
    private let handler: InMemoryEngine.Handler?
    /// Called once the client's upgrade request has arrived.
    private let onRequest: @Sendable (InMemoryServerConnection) -> Void

    init(
        clock: InMemoryClock, handler: InMemoryEngine.Handler?,
        onRequest: @escaping @Sendable (InMemoryServerConnection) -> Void
    ) {
        self.clock = clock
        self.handler = handler
        self.onRequest = onRequest
    }

    // MARK: The opening handshake

    /// The client's upgrade request: method, target (path and query), headers, offered subprotocols, and once
    /// answered the selected subprotocol and status.
    public var request: RecordedRequest {
        self.state.withLock { $0.request } ?? RecordedRequest(method: "", target: "", headers: HTTPHeaders())
    }

    /// Accepts the upgrade with `101 Switching Protocols`.
    /// - Parameters:
    ///   - subprotocol: The subprotocol to select (`Sec-WebSocket-Protocol`), normally one the client offered.
    ///   - headers: More response headers, e.g. `Sec-WebSocket-Extensions: permessage-deflate`. When it names an
    ///     extension, the client's frames may carry reserved bits; ``receive()`` returns them as sent (the server
    ///     side does not compress or decompress).
    /// - Throws: `WebSocketError` (`WebSocketError.Code.invalidArgument`) when the request was answered already.
    public func accept(subprotocol: String? = nil, headers: HTTPHeaders = HTTPHeaders()) throws {
        try self.answer { s in
            var response = "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
            response += "Sec-WebSocket-Accept: \(WebSocketHandshake.acceptValue(forKey: s.key))\r\n"
            if let subprotocol { response += "Sec-WebSocket-Protocol: \(subprotocol)\r\n" }
            for field in headers { response += "\(field.name): \(field.value)\r\n" }
            response += "\r\n"
            if headers.contains("Sec-WebSocket-Extensions") { s.decoder.allowedReservedBits = .all }
            s.accepted = true
            s.request?.selectedSubprotocol = subprotocol
            s.request?.status = 101
            self.enqueue(.read(Array(response.utf8)), &s)
        }
    }

    /// Refuses the upgrade with an HTTP error response, then ends the connection: the client's open fails with
    /// `WebSocketError` `WebSocketError.Code.upgradeRejected` and this `status`.
    /// - Parameters:
    ///   - status: The HTTP status, e.g. 403.
    ///   - body: A plain-text body.
    ///   - headers: More response headers.
    /// - Throws: `WebSocketError` (`WebSocketError.Code.invalidArgument`) when the request was answered already.
    public func reject(status: Int, body: String = "", headers: HTTPHeaders = HTTPHeaders()) throws {
        try self.answer { s in
            let bodyBytes = Array(body.utf8)
            var response = "HTTP/1.1 \(status) \(ServerCore.reasonPhrase(status))\r\n"
            response += "Content-Type: text/plain; charset=utf-8\r\nContent-Length: \(bodyBytes.count)\r\n"
            for field in headers { response += "\(field.name): \(field.value)\r\n" }
            response += "Connection: close\r\n\r\n"
            s.request?.status = status
            s.request?.selectedSubprotocol = nil
            self.enqueue(.read(Array(response.utf8) + bodyBytes), &s)
            self.endStream(nil, &s)
        }
    }

    private func answer(_ body: (inout State) -> Void) throws(WebSocketError) {
        try self.state.withLock { s throws(WebSocketError) in
            guard s.request != nil else {
                throw WebSocketError(.invalidArgument, "the client's upgrade request has not arrived yet")
            }
            guard !s.answered else {
                throw WebSocketError(.invalidArgument, "the upgrade request was answered already")
            }
            s.answered = true
            body(&s)
        }
        self.kick()
    }

    /// Accepts the upgrade unless it was answered: what the first receive or send of a handler does.
    private func acceptIfUnanswered() {
        let unanswered = self.state.withLock { $0.request != nil && !$0.answered }
        if unanswered { try? self.accept() }
    }

    // MARK: Receiving

    /// Whether pings from the client are answered with a pong at once, as a server must (default `true`). Set it
    /// to `false` to play a server that stops answering, so the client's pong timeout runs out.
    public var answersPings: Bool {
        get { self.state.withLock { $0.answersPings } }
        set { self.state.withLock { $0.answersPings = newValue } }
    }

    /// Whether the client's close frame is answered at once, as a server must (default `true`): with a close frame
    /// carrying the same code, then the end of the connection. Set it to `false` to answer it yourself with
    /// ``close(_:)``, or to play a server that never answers, so the client's close timeout runs out.
    public var answersClose: Bool {
        get { self.state.withLock { $0.answersClose } }
        set { self.state.withLock { $0.answersClose = newValue } }
    }

    /// Waits for the next frame from the client, as it was sent, unmasked.
    ///
    /// Returns data frames (text, binary, continuation), pings (already answered unless ``answersPings`` is
    /// `false`), pongs and the client's close frame. After the close frame, or once the client has closed the
    /// connection and every frame was returned, it returns `nil`.
    /// - Returns: The next frame, or `nil` at the end.
    /// - Throws: `WebSocketError` (`WebSocketError.Code.protocolViolation` and friends, with the close code
    ///   a server would send) when the client's bytes break RFC 6455; `CancellationError` when the task is
    ///   cancelled.
    public func receive() async throws -> Frame? {
        self.acceptIfUnanswered()
        var result: Result<Frame?, any Error>?
        try await self.wait { s in
            if s.closeFrameReturned {
                result = .success(nil)
            } else if !s.inbox.isEmpty {
                let frame = s.inbox.removeFirst()
                if frame.kind == .close { s.closeFrameReturned = true }
                result = .success(frame)
            } else if let error = s.decodeError {
                result = .failure(error)
            } else if s.clientEOF || s.serverClosed {
                result = .success(nil)
            }
            return result != nil
        }
        return try result!.get()
    }

    /// The next frame from the client if one has arrived, without waiting: `nil` when none is there (yet).
    /// - Returns: The frame, as ``receive()`` would return it.
    public func nextFrameIfAvailable() -> Frame? {
        self.state.withLock { s in
            guard !s.closeFrameReturned, !s.inbox.isEmpty else { return nil }
            let frame = s.inbox.removeFirst()
            if frame.kind == .close { s.closeFrameReturned = true }
            return frame
        }
    }

    // MARK: Sending

    /// Sends a frame as it is, unmasked: any kind, FIN flag and reserved bits (fragments, invalid frames). Returns
    /// once the client's session has read it, or at once while the client has paused reading.
    /// - Parameter frame: The frame.
    /// - Throws: `WebSocketError`: `WebSocketError.Code.sessionClosed` after a close frame was sent,
    ///   `WebSocketError.Code.connectionLost` once the connection has ended.
    public func send(_ frame: Frame) async throws {
        self.acceptIfUnanswered()
        try self.state.withLock { s throws(WebSocketError) in
            if s.serverCloseSent {
                throw WebSocketError(.sessionClosed, "a close frame was already sent on this connection")
            }
            try self.checkOpen(s)
            if frame.kind == .close { s.serverCloseSent = true }
            var bytes: [UInt8] = []
            FrameEncoder.encode(frame, maskingKey: nil, into: &bytes)
            self.enqueue(.read(bytes), &s)
        }
        self.kick()
        await self.settle()
    }

    /// Sends a text message (one final text frame), as ``send(_:)`` does.
    /// - Parameter text: The message.
    /// - Throws: `WebSocketError` as ``send(_:)`` does.
    public func send(text: String) async throws {
        try await self.send(Frame.text(text))
    }

    /// Sends a binary message (one final binary frame), as ``send(_:)`` does.
    /// - Parameter bytes: The message.
    /// - Throws: `WebSocketError` as ``send(_:)`` does.
    public func send(bytes: [UInt8]) async throws {
        try await self.send(Frame.binary(bytes))
    }

    /// Sends bytes as they are, without framing, for misbehaviour tests (a bad opcode, a masked frame, half a
    /// frame). Returns once the client's session has read them.
    /// - Parameter bytes: The bytes.
    /// - Throws: `WebSocketError` (`WebSocketError.Code.connectionLost`) once the connection has ended.
    public func sendRaw(_ bytes: [UInt8]) async throws {
        self.acceptIfUnanswered()
        try self.state.withLock { s throws(WebSocketError) in
            try self.checkOpen(s)
            self.enqueue(.read(bytes), &s)
        }
        self.kick()
        await self.settle()
    }

    private func checkOpen(_ s: State) throws(WebSocketError) {
        if s.serverClosed || s.clientEOF || s.closeReported {
            throw WebSocketError(.connectionLost, "the connection has ended")
        }
    }

    /// Waits until the client's session has read everything sent so far: returns at once while the client has
    /// paused reading (what is held stays held).
    public func settle() async {
        await self.waitNonThrowing { !$0.pumping }
    }

    // MARK: Closing

    /// Runs the server's side of the close handshake: sends a close frame with `reason` (unless one was sent),
    /// waits for the client's close frame (or for the client to end the connection), then ends the connection,
    /// which the client sees as the server's TCP close. Frames the client sent before its close frame stay
    /// available to ``receive()``.
    /// - Parameter reason: The code and message; `1000 NORMAL` by default. `nil` sends a close frame without a code.
    /// - Returns: The client's close reason (`nil` when its close frame had no code or never came).
    /// - Throws: `CancellationError` when the task is cancelled while waiting.
    @discardableResult
    public func close(_ reason: CloseReason? = CloseReason(code: .normal)) async throws -> CloseReason? {
        self.acceptIfUnanswered()
        self.state.withLock { s in
            guard !s.serverCloseSent, !s.serverClosed, !s.closeReported else { return }
            s.serverCloseSent = true
            var bytes: [UInt8] = []
            FrameEncoder.encode(.close(reason), maskingKey: nil, into: &bytes)
            self.enqueue(.read(bytes), &s)
        }
        self.kick()
        var clientClose: CloseReason?
        try await self.wait { s in
            guard s.clientCloseFrame != nil || s.clientEOF || s.serverClosed || s.closeReported else { return false }
            clientClose = s.clientCloseFrame?.readReason()
            self.endStream(nil, &s)
            return true
        }
        self.kick()
        await self.settle()
        return clientClose
    }

    /// Drops the connection without a close handshake, as a lost network does: the client reads what was sent
    /// before, then its session ends with close code 1006 (`WebSocketError.Code.connectionLost`).
    public func drop() async {
        self.state.withLock { s in
            self.endStream(InMemoryConnectionDropped(), &s)
        }
        self.kick()
        await self.settle()
    }

    /// Waits until the client has closed or dropped the connection. With ``answersClose`` set to `false`, it
    /// plays a server that never answers the client's close frame, so the client's close timeout runs out.
    public func waitForDisconnect() async {
        await self.waitNonThrowing { $0.clientEOF || $0.closeReported }
    }

    /// Whether the client has closed or dropped the connection.
    public var isClientDisconnected: Bool { self.state.withLock { $0.clientEOF || $0.closeReported } }

    /// Ends the server's side of the stream (once); `error` makes it a drop.
    private func endStream(_ error: (any Error)?, _ s: inout State) {
        guard !s.serverClosed else { return }
        s.serverClosed = true
        self.enqueue(.streamEnd(error), &s)
    }

    // MARK: The network

    /// Stops taking the client's bytes, as a server that does not read (or a slow network): what the client
    /// writes stays buffered in its transport (``clientBufferedBytes``), so its sends wait once the buffer is over
    /// `maxOutgoingBufferBytes`. Pings are not answered meanwhile, since they are not read.
    public func pauseReading() {
        self.state.withLock { $0.serverPaused = true }
    }

    /// Takes every byte the client wrote while reading was paused, reports the drain to the client, and reads on.
    public func resumeReading() {
        self.state.withLock { s in
            s.serverPaused = false
            guard !s.outgoing.isEmpty else { return }
            let bytes = s.outgoing
            s.outgoing = []
            _ = self.take(bytes, &s)
            if !s.clientClosed { self.enqueue(.drain, &s) }
            if s.closeAfterFlush {
                s.closeAfterFlush = false
                s.clientEOF = true
                self.enqueue(.closeReport, &s)
            }
        }
        self.kick()
        self.notify()
    }

    /// The bytes the client wrote that the server has not taken, because it paused reading: the client
    /// transport's `bufferedBytes`.
    public var clientBufferedBytes: Int { self.state.withLock { $0.outgoing.count } }

    /// Waits until the client has written at least `count` bytes that the server has not taken (see
    /// ``pauseReading()``).
    /// - Parameter count: The byte count to wait for.
    public func waitForClientBufferedBytes(atLeast count: Int) async {
        await self.waitNonThrowing { $0.outgoing.count >= count }
    }

    /// The bytes sent to the client that it has not read yet because it paused reading (see
    /// ``isClientReadingPaused``): they are delivered, in order, when it reads on.
    public var heldBytes: Int {
        self.state.withLock { s in
            s.events.reduce(0) { total, event in
                if case .read(let bytes) = event { total + bytes.count } else { total }
            }
        }
    }

    /// Whether the client's session has paused reading (its incoming buffer is full): frames sent meanwhile are
    /// held and delivered when it resumes.
    public var isClientReadingPaused: Bool { self.state.withLock { $0.clientPaused } }

    // MARK: The client's transport

    func clientStart(_ handler: any WebSocketTransportHandler) {
        self.state.withLock { s in
            s.handler = handler
            s.started = true
        }
        self.kick()
    }

    func clientWrite(_ bytes: [UInt8]) -> Int {
        var requestArrived = false
        let buffered = self.state.withLock { s -> Int in
            if s.clientClosed || s.serverClosed || s.closeReported { return 0 }
            if s.serverPaused {
                s.outgoing += bytes
                return s.outgoing.count
            }
            requestArrived = self.take(bytes, &s)
            return 0
        }
        self.kick()
        self.notify()
        if requestArrived { self.onRequest(self) }
        return buffered
    }

    func clientSetReadingPaused(_ paused: Bool) {
        self.state.withLock { $0.clientPaused = paused }
        self.kick()
        self.notify()
    }

    func clientClose() {
        self.state.withLock { s in
            guard !s.clientClosed, !s.closeReported else { return }
            s.clientClosed = true
            if s.outgoing.isEmpty {
                s.clientEOF = true
                self.enqueue(.closeReport, &s)
            } else {
                s.closeAfterFlush = true
            }
        }
        self.kick()
        self.notify()
    }

    func clientAbort() {
        self.state.withLock { s in
            guard !s.closeReported, !s.events.contains(where: { if case .closeReport = $0 { true } else { false } })
            else { return }
            s.clientClosed = true
            s.closeAfterFlush = false
            s.outgoing = []
            s.clientEOF = true
            s.events.removeAll { $0.isStream }
            self.enqueue(.closeReport, &s)
        }
        self.kick()
        self.notify()
    }

    var clientBuffered: Int { self.state.withLock { $0.outgoing.count } }

    func schedule(after delay: Duration, _ action: @escaping @Sendable () -> Void) -> InMemoryTimer {
        InMemoryTimer(clock: self.clock, after: delay, action: action) { [self] timer, action in
            self.state.withLock { s in self.enqueue(.timer(timer, action), &s) }
            self.kick()
        }
    }

    /// The server takes bytes from the client: the upgrade request, then frames. Answers pings. Returns whether
    /// the upgrade request has just arrived.
    private func take(_ bytes: [UInt8], _ s: inout State) -> Bool {
        var arrived = false
        var rest = bytes[...]
        if var parser = s.parser {
            let parsed: (head: HTTPRequestHead, consumed: Int)?
            do {
                parsed = try bytes.withUnsafeBytes { try parser.feed($0) }
            } catch {
                s.parser = nil
                s.decodeError = error
                return false
            }
            guard let (head, consumed) = parsed else {
                s.parser = parser
                return false
            }
            s.parser = nil
            let offered = httpTokenList(head.headers.values(for: "Sec-WebSocket-Protocol"))
            s.request = RecordedRequest(
                method: head.method, target: head.target, version: head.version, headers: head.headers,
                offeredSubprotocols: offered, selectedSubprotocol: nil, status: 0)
            s.key = head.headers["Sec-WebSocket-Key"].map { String($0.filter { $0 != " " && $0 != "\t" }) } ?? ""
            rest = bytes[consumed...]
            arrived = true
        }
        guard s.decodeError == nil, !rest.isEmpty else { return arrived }
        rest.withUnsafeBytes { s.decoder.append($0) }
        do {
            while let parsed = try s.decoder.nextFrame() {
                guard let kind = parsed.kind else { continue }
                let frame = Frame(kind: kind, fin: parsed.fin, data: parsed.payload, reservedBits: parsed.reservedBits)
                if kind == .ping && s.answersPings && !s.serverCloseSent && !s.serverClosed {
                    var pong: [UInt8] = []
                    FrameEncoder.encode(.pong(parsed.payload), maskingKey: nil, into: &pong)
                    self.enqueue(.read(pong), &s)
                }
                if kind == .close && s.clientCloseFrame == nil {
                    s.clientCloseFrame = frame
                    if s.answersClose && !s.serverCloseSent && !s.serverClosed {
                        // Echo the code (RFC 6455 section 5.5.1), then end the stream as a server does.
                        s.serverCloseSent = true
                        var close: [UInt8] = []
                        FrameEncoder.encode(
                            .close(frame.readReason().map { CloseReason(code: $0.code) }), maskingKey: nil, into: &close
                        )
                        self.enqueue(.read(close), &s)
                        self.endStream(nil, &s)
                    }
                }
                s.inbox.append(frame)
            }
        } catch {
            s.decodeError = WebSocketError(
                error.closeCode == .messageTooBig
                    ? .messageTooBig
                    : error.closeCode == .invalidPayload ? .invalidUTF8 : .protocolViolation,
                "the client broke the protocol: \(error.message)", closeCode: error.closeCode)
        }
        return arrived
    }

    // MARK: Event delivery

    /// Queues an event for the client (under the lock).
    private func enqueue(_ event: Event, _ s: inout State) {
        s.events.append(event)
    }

    /// Starts the serial delivery if an event can be delivered and none is running.
    private func kick() {
        let start = self.state.withLock { s -> Bool in
            guard !s.pumping, s.nextDeliverable != nil else { return false }
            s.pumping = true
            self.clock.beginActivity()
            return true
        }
        if start { Task { self.pump() } }
    }

    /// Delivers events one at a time, never two at once and never under the lock, until none is deliverable.
    private func pump() {
        while true {
            let next = self.state.withLock { s -> (Event, (any WebSocketTransportHandler)?)? in
                guard let index = s.nextDeliverable else {
                    s.pumping = false
                    return nil
                }
                let event = s.events.remove(at: index)
                let handler = s.handler
                switch event {
                case .streamEnd, .closeReport:
                    s.closeReported = true
                    s.handler = nil
                    s.clientEOF = true
                    s.events.removeAll { if case .timer = $0 { false } else { true } }
                default:
                    break
                }
                return (event, handler)
            }
            guard let (event, handler) = next else { break }
            switch event {
            case .read(let bytes): bytes.withUnsafeBytes { handler?.transportDidRead($0) }
            case .streamEnd(let error): handler?.transportDidClose(error: error)
            case .closeReport: handler?.transportDidClose(error: nil)
            case .drain: handler?.transportDidDrain()
            case .timer(let timer, let action): if !timer.isCancelled { action() }
            }
            self.notify()
        }
        self.notify()
        self.clock.endActivity()
    }

    // MARK: Waiting

    /// Wakes every waiter to check its condition again.
    private func notify() {
        let waiters = self.state.withLock { s -> [CheckedContinuation<Void, Never>] in
            defer { s.waiters = [:] }
            return Array(s.waiters.values)
        }
        for waiter in waiters { waiter.resume() }
    }

    /// Waits until `ready` (run under the lock) returns `true`; throws `CancellationError` when cancelled.
    private func wait(_ ready: (inout State) -> Bool) async throws {
        while true {
            try Task.checkCancellation()
            var id: UInt64 = 0
            let done = self.state.withLock { s -> Bool in
                if ready(&s) { return true }
                s.nextWaiterID += 1
                id = s.nextWaiterID
                return false
            }
            if done { return }
            await withTaskCancellationHandler {
                await withCheckedContinuation { (continuation: CheckedContinuation<Void, Never>) in
                    let resumeNow = self.state.withLock { s -> Bool in
                        // Checked again: a change between the first check and now would otherwise be missed.
                        if Task.isCancelled || ready(&s) { return true }
                        s.waiters[id] = continuation
                        return false
                    }
                    if resumeNow { continuation.resume() }
                }
            } onCancel: { [id] in
                let waiter = self.state.withLock { $0.waiters.removeValue(forKey: id) }
                waiter?.resume()
            }
        }
    }

    private func waitNonThrowing(_ ready: (State) -> Bool) async {
        try? await self.wait { ready($0) }
    }
}

/// The error a client's transport reports when ``InMemoryServerConnection/drop()`` dropped the connection.
public struct InMemoryConnectionDropped: Error, Sendable, CustomStringConvertible {
    /// Creates the error.
    public init() {}

    /// `the in-memory server dropped the connection`.
    public var description: String { "the in-memory server dropped the connection" }
}

/// The client's end of an in-memory connection.
final class InMemoryTransport: WebSocketTransport {
    let server: InMemoryServerConnection

    init(server: InMemoryServerConnection) {
        self.server = server
    }

    func start(handler: any WebSocketTransportHandler) { self.server.clientStart(handler) }

    @discardableResult
    func write(_ bytes: [UInt8]) -> Int { self.server.clientWrite(bytes) }

    func setReadingPaused(_ paused: Bool) { self.server.clientSetReadingPaused(paused) }

    func close() { self.server.clientClose() }

    func abort() { self.server.clientAbort() }

    var bufferedBytes: Int { self.server.clientBuffered }

    func schedule(after delay: Duration, _ action: @escaping @Sendable () -> Void) -> (any WebSocketTransportTimer)? {
        self.server.schedule(after: delay, action)
    }
}
