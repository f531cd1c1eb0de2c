import DequeModule
import Logging
import Synchronization

/// The engine-independent heart of a session: it drives the opening handshake over a transport, parses
/// frames, answers pings and closes, reassembles and queues messages, and sends frames. Engines supply the
/// transport only.
///
/// Locking: `state` guards everything the read path touches (parser, decoder, queue, lifecycle); `sender`
/// guards the outgoing path (masking keys, outgoing extension state, "close sent") and is held while a frame
/// is written so frames reach the transport in the order their extension state saw them. Lock order:
/// `sender` before `state`; the transport's own lock is innermost. Continuations are resumed and the
/// transport is called outside `state`.
@usableFromInline
final class Connection: WebSocketTransportHandler, Sendable {
    let transport: any WebSocketTransport
    let settings: WebSockets.Configuration
    let logger: Logger
    private let state: Mutex<State>
    private let sender: Mutex<SenderState>

    init(transport: any WebSocketTransport, settings: WebSockets.Configuration, logger: Logger) {
        self.transport = transport
        self.settings = settings
        self.logger = logger
        self.state = Mutex(State(settings: settings))
        self.sender = Mutex(SenderState())
    }

    // MARK: - State

    private enum Phase {
        case handshaking
        /// The server answered without upgrading; its body is being collected for the error.
        case rejected
        case open
        case closed
    }

    /// What only the opening handshake needs: a box of its own, released once the session is open, so an open
    /// session does not carry the response parser and the rejection fields. Used under `state`'s lock only.
    private final class OpeningState: @unchecked Sendable {  // only used inside `Connection.state`'s Mutex
        var parser = HTTPResponseParser()
        var handshake: OpeningHandshake?
        var continuation: CheckedContinuation<OpeningHandshake.Outcome, any Error>?
        var rejectedHead: HTTPResponseHead?
        var rejectedBody: [UInt8] = []
        var rejectedBodyExpected = WebSocketConnectionError.maxBodyBytes
    }

    private struct State {
        var phase: Phase = .handshaking
        /// The opening handshake's state; `nil` once the session is open.
        var opening: OpeningState? = OpeningState()

        var decoder: FrameDecoder
        var assembler: MessageAssembler
        var messageValidatesUTF8 = true
        /// UTF-8 checking of a text frame that has only partly arrived (fail fast before it is complete).
        var partialCheck: PartialCheck?
        /// A violation found after frames that are still queued: it fails the session once they are consumed,
        /// so nothing accepted before it is lost.
        var pendingFailure: WebSocketError?
        var extensions: [any WebSocketExtension] = []

        var queue = Deque<Frame>()
        /// Payload bytes of the queued data (and close) frames; pings and pongs are bounded by count instead.
        var queuedBytes = 0
        /// How many of the queued frames are pings and pongs: they never pause reading (see `enqueueControl`).
        var queuedControl = 0
        var consumers = Deque<(id: UInt64, continuation: UnsafeContinuation<Frame?, any Error>)>()
        var nextConsumerID: UInt64 = 0
        /// Set once incoming has delivered its last frame: `nil` error means it ended normally.
        var incomingEnded = false
        var incomingError: WebSocketError?
        var readingPaused = false
        /// Counts changes of `readingPaused`, so a stale pause or resume applied to the transport after a newer
        /// decision is noticed and corrected (see `syncReadingPaused`).
        var pauseGeneration: UInt64 = 0

        /// We sent a close frame: data frames that still arrive are dropped.
        var closeSent = false
        var receivedClose = false
        var closeReason: CloseReason?
        var failure: WebSocketError?
        var ended = false
        var endWaiters: [CheckedContinuation<Void, Never>] = []
        var drainWaiters: [CheckedContinuation<Void, Never>] = []

        var awaitingPong: [UInt8]?
        /// Control replies (pongs) of the last read are not written yet: consumers must not take queued frames.
        var controlFence = false
        /// The pong for the latest ping, held back while the server does not read what we send (see `perform`).
        var heldPong: [UInt8]?
        /// The running timers, one per kind (a new one replaces and cancels the old); cancelled when the connection ends.
        var timers: [TimerKind: any WebSocketTransportTimer] = [:]

        init(settings: WebSockets.Configuration) {
            self.decoder = FrameDecoder(maxFrameSize: settings.maxFrameSize, role: .client)
            self.assembler = MessageAssembler(maxMessageSize: settings.maxMessageSize, maxFragments: settings.maxFragments)
        }
    }

    private enum PartialCheck {
        case validating(UTF8Validator, checked: Int)
        case skip
    }

    private struct SenderState {
        var keys = MaskingKeyGenerator()
        var closeSent = false
        /// The transport closed: nothing can be sent any more.
        var ended = false
        var extensions: [any WebSocketExtension] = []
    }

    /// Work decided under the state lock and carried out after it is released.
    private struct Actions {
        var handshakeResult: Result<OpeningHandshake.Outcome, any Error>?
        var handshakeContinuation: CheckedContinuation<OpeningHandshake.Outcome, any Error>?
        /// The first delivery to a waiting consumer, kept out of `moreDeliveries` (there is rarely more than one
        /// consumer waiting, and an array would be allocated per delivered message).
        var delivery: (UnsafeContinuation<Frame?, any Error>, Result<Frame?, any Error>)?
        var moreDeliveries: [(UnsafeContinuation<Frame?, any Error>, Result<Frame?, any Error>)] = []
        var controlFrames: [Frame] = []
        /// Send this close frame (if none was sent yet).
        var sendClose: CloseReason??
        /// After sending, flush and close the transport (failing the connection).
        var closeTransport = false
        var abortTransport = false
        var startCloseTimer = false
        var startPendingFailureTimer = false
        /// Reading resumed while a ping is unanswered: its pong deadline starts again (see `setReadingPaused`).
        var restartPongTimer: [UInt8]?
        /// `readingPaused` changed: apply it to the transport.
        var syncReadingPaused = false
        var endWaiters: [CheckedContinuation<Void, Never>] = []
        var drainWaiters: [CheckedContinuation<Void, Never>] = []
        var timersToCancel: [any WebSocketTransportTimer] = []

        mutating func deliver(_ result: Result<Frame?, any Error>, to continuation: UnsafeContinuation<Frame?, any Error>) {
            if self.delivery == nil {
                self.delivery = (continuation, result)
            } else {
                self.moreDeliveries.append((continuation, result))
            }
        }
    }

    // MARK: - Opening handshake

    /// Sends the upgrade request and waits for a valid 101 response.
    /// - Parameters:
    ///   - handshake: The request and what the response must satisfy.
    ///   - timeout: How long the response may take; then the handshake fails with `timeoutError`.
    ///   - timeoutError: Makes the error of a handshake that took longer than `timeout`.
    func performHandshake(
        _ handshake: OpeningHandshake, timeout: Duration,
        timeoutError: @escaping @Sendable () -> WebSocketConnectionError
    ) async throws -> OpeningHandshake.Outcome {
        defer { self.cancelTimer(.open) }
        return try await withTaskCancellationHandler {
            try await withCheckedThrowingContinuation { (continuation: CheckedContinuation<OpeningHandshake.Outcome, any Error>) in
                self.beginHandshake(handshake, continuation, timeout: timeout, timeoutError: timeoutError)
            }
        } onCancel: {
            self.transport.abort()
        }
    }

    /// The synchronous part of ``performHandshake(_:timeout:timeoutError:)``, kept out of its async frame.
    @inline(never)
    private func beginHandshake(
        _ handshake: OpeningHandshake, _ continuation: CheckedContinuation<OpeningHandshake.Outcome, any Error>,
        timeout: Duration, timeoutError: @escaping @Sendable () -> WebSocketConnectionError
    ) {
        self.state.withLock { s in
            s.opening?.handshake = handshake
            s.opening?.continuation = continuation
        }
        self.startTimer(.open, after: timeout) { connection in connection.failHandshake(timeoutError()) }
        self.transport.start(handler: self)
        self.transport.write(handshake.requestBytes())
    }

    /// Fails the opening handshake with `error` if it is still running, and drops the connection.
    private func failHandshake(_ error: WebSocketConnectionError) {
        let continuation = self.state.withLock { s -> CheckedContinuation<OpeningHandshake.Outcome, any Error>? in
            guard s.phase == .handshaking || s.phase == .rejected else { return nil }
            s.phase = .closed
            return s.opening?.continuation.take()
        }
        guard let continuation else { return }
        continuation.resume(throwing: error)
        self.transport.abort()
    }

    /// Cancels the timer of `kind`, if one runs.
    private func cancelTimer(_ kind: TimerKind) {
        self.state.withLock { $0.timers.removeValue(forKey: kind) }?.cancel()
    }

    /// Called once the session object exists: starts the ping timer if configured.
    func startTimers() {
        self.schedulePing(counter: 1)
    }

    /// The session's timers.
    enum TimerKind: Hashable {
        case ping, pong, close, pendingFailure, open
    }

    /// Runs `action` after `delay` on the engine's timer heap (or in a task if the engine has none), replacing the
    /// timer of the same kind. The timer holds the connection until it fires or is cancelled, which every timer is
    /// when the connection ends (a released session closes it). Not a weak reference: that would give the connection
    /// a side table and slow down every retain and release of it on the message path.
    private func startTimer(_ kind: TimerKind, after delay: Duration, _ action: @escaping @Sendable (Connection) -> Void) {
        let fire: @Sendable () -> Void = { action(self) }
        let timer = self.transport.schedule(after: delay, fire) ?? TaskTimer(after: delay, fire)
        let (cancelNow, replaced) = self.state.withLock { s -> (Bool, (any WebSocketTransportTimer)?) in
            if s.ended { return (true, nil) }
            return (false, s.timers.updateValue(timer, forKey: kind))
        }
        replaced?.cancel()
        if cancelNow { timer.cancel() }
    }

    /// Sends ping `counter` after the ping interval, then schedules the next.
    private func schedulePing(counter: UInt64) {
        guard let interval = self.settings.pingInterval else { return }
        self.startTimer(.ping, after: interval) { connection in
            connection.sendPing(counter: counter)
            connection.schedulePing(counter: counter &+ 1)
        }
    }

    private func sendPing(counter: UInt64) {
        let payload = withUnsafeBytes(of: counter.bigEndian) { Array($0) }
        let proceed = self.state.withLock { s -> Bool in
            // While a ping is unanswered no new one is sent: its pong timeout decides.
            guard s.phase == .open, !s.closeSent, !s.receivedClose, s.awaitingPong == nil else { return false }
            s.awaitingPong = payload
            return true
        }
        guard proceed else { return }
        _ = self.writeControl(Frame(kind: .ping, data: payload))
        self.startPongTimer(for: payload)
    }

    /// Fails the session if the pong for `payload` has not arrived within the pong timeout. The deadline measures
    /// the server, not our own consumer: while reading is paused because `incoming` is not being consumed, the pong
    /// cannot be read, so a deadline that passes then is not a failure; it starts again when reading resumes.
    private func startPongTimer(for payload: [UInt8]) {
        guard let timeout = self.settings.effectivePongTimeout else { return }
        self.startTimer(.pong, after: timeout) { connection in
            let missed = connection.state.withLock {
                $0.awaitingPong == payload && $0.phase == .open && !$0.readingPaused
            }
            if missed {
                connection.fail(
                    WebSocketError(
                        .pongTimeout,
                        "no pong arrived within \(timeout) of a ping: the server or the network is not responding",
                        closeCode: .internalError
                    )
                )
            }
        }
    }

    // MARK: - Transport events

    @usableFromInline
    func transportDidRead(_ bytes: UnsafeRawBufferPointer) {
        var actions = Actions()
        self.state.withLock { s in
            switch s.phase {
            case .handshaking:
                self.readHandshake(bytes, &s, &actions)
            case .rejected:
                self.collectRejectionBody(bytes, &s, &actions)
            case .open:
                self.readFrames(bytes, &s, &actions)
            case .closed:
                break
            }
            // Frames queued behind a ping stay out of consumers' reach until its pong is written (see `perform`):
            // a consumer taking the next message straight from the queue must not send its reply before the pong.
            if !actions.controlFrames.isEmpty { s.controlFence = true }
        }
        self.perform(actions)
        if !actions.controlFrames.isEmpty {
            var released = Actions()
            self.state.withLock { s in
                s.controlFence = false
                self.deliver(&s, &released)
            }
            self.perform(released)
        }
    }

    @usableFromInline
    func transportDidDrain() {
        let (waiters, pong) = self.state.withLock { s -> ([CheckedContinuation<Void, Never>], [UInt8]?) in
            defer { s.drainWaiters = [] }
            return (s.drainWaiters, s.heldPong.take())
        }
        if let pong { self.writeControl(Frame(kind: .pong, data: pong)) }
        for waiter in waiters { waiter.resume() }
    }

    @usableFromInline
    func transportDidClose(error: (any Error)?) {
        var actions = Actions()
        self.state.withLock { s in
            switch s.phase {
            case .handshaking:
                actions.handshakeContinuation = s.opening?.continuation.take()
                actions.handshakeResult = .failure(
                    WebSocketConnectionError(
                        .network,
                        "the server closed the connection during the opening handshake"
                            + (error.map { ": \($0)" } ?? " without answering"),
                        underlying: error
                    )
                )
            case .rejected:
                actions.handshakeContinuation = s.opening?.continuation.take()
                actions.handshakeResult = .failure(self.rejectionError(s))
            case .open:
                if let pending = s.pendingFailure.take() {
                    s.failure = pending
                    s.closeReason = CloseReason(code: pending.closeCode ?? .protocolError, message: pending.message)
                    self.endIncoming(&s, &actions, error: pending)
                } else if !s.receivedClose && s.failure == nil {
                    let message = error.map { "the connection was lost: \($0)" }
                        ?? "the server closed the connection without a close frame"
                    s.closeReason = CloseReason(code: .abnormalClosure, message: message)
                    let failure = WebSocketError(.connectionLost, message, closeCode: .abnormalClosure, underlying: error)
                    s.failure = failure
                    self.endIncoming(&s, &actions, error: failure)
                } else if !s.incomingEnded {
                    self.endIncoming(&s, &actions, error: s.failure)
                }
            case .closed:
                break
            }
            s.phase = .closed
            s.ended = true
            actions.endWaiters = s.endWaiters
            s.endWaiters = []
            actions.drainWaiters = s.drainWaiters
            s.drainWaiters = []
            actions.timersToCancel = Array(s.timers.values)
            s.timers = [:]
        }
        self.sender.withLock { $0.ended = true }
        self.perform(actions)
    }

    // MARK: - Reading

    private func readHandshake(_ bytes: UnsafeRawBufferPointer, _ s: inout State, _ actions: inout Actions) {
        guard let opening = s.opening else { return }
        let parsed: (head: HTTPResponseHead, consumed: Int)?
        do {
            parsed = try opening.parser.feed(bytes)
        } catch {
            actions.handshakeContinuation = opening.continuation.take()
            actions.handshakeResult = .failure(error)
            actions.abortTransport = true
            s.phase = .closed
            return
        }
        guard let (head, consumed) = parsed else { return }
        let rest = UnsafeRawBufferPointer(rebasing: bytes[consumed...])
        guard head.status == 101 else {
            s.phase = .rejected
            opening.rejectedHead = head
            if let length = head.headers["Content-Length"].flatMap({ Int($0.trimmingASCIIWhitespace()) }) {
                opening.rejectedBodyExpected = min(max(length, 0), WebSocketConnectionError.maxBodyBytes)
            }
            self.collectRejectionBody(rest, &s, &actions)
            return
        }
        do {
            guard let handshake = opening.handshake else { return }
            let outcome = try handshake.validate(head)
            s.extensions = outcome.extensions
            s.decoder.allowedReservedBits = outcome.extensions.reduce(into: []) { $0.formUnion($1.reservedBits) }
            s.phase = .open
            actions.handshakeContinuation = opening.continuation.take()
            actions.handshakeResult = .success(outcome)
            s.opening = nil
            if !rest.isEmpty { self.readFrames(rest, &s, &actions) }
        } catch {
            actions.handshakeContinuation = opening.continuation.take()
            actions.handshakeResult = .failure(error)
            actions.abortTransport = true
            s.phase = .closed
        }
    }

    private func collectRejectionBody(_ bytes: UnsafeRawBufferPointer, _ s: inout State, _ actions: inout Actions) {
        guard let opening = s.opening else { return }
        let room = opening.rejectedBodyExpected - opening.rejectedBody.count
        if room > 0 { opening.rejectedBody.append(contentsOf: bytes.prefix(room)) }
        if opening.rejectedBody.count >= opening.rejectedBodyExpected {
            actions.handshakeContinuation = opening.continuation.take()
            actions.handshakeResult = .failure(self.rejectionError(s))
            actions.abortTransport = true
            s.phase = .closed
        }
    }

    private func rejectionError(_ s: State) -> WebSocketConnectionError {
        let head = s.opening?.rejectedHead
        let status = head?.status ?? 0
        let hint: String =
            switch status {
            case 401, 403: " (check the credentials or Origin the server expects)"
            case 404: " (check the URL path)"
            case 426: " (the server wants another protocol version)"
            case 300..<400: " (redirects are not followed; Location: \(head?.headers["Location"] ?? "none"))"
            default: ""
            }
        return WebSocketConnectionError(
            .upgradeRejected,
            "the server refused the WebSocket upgrade with HTTP \(status) \(head?.reason ?? "")\(hint)",
            status: status,
            headers: head?.headers ?? HTTPHeaders(),
            body: s.opening?.rejectedBody ?? []
        )
    }

    private func readFrames(_ bytes: UnsafeRawBufferPointer, _ s: inout State, _ actions: inout Actions) {
        guard !s.receivedClose, s.failure == nil, s.pendingFailure == nil else { return }
        // Frames are parsed straight out of the engine's read buffer; what is left of it is copied at `endInput`.
        s.decoder.beginInput(bytes)
        var failure: WebSocketError?
        do {
            defer { s.decoder.endInput() }
            while let frame = try s.decoder.nextFrame() {
                s.partialCheck = nil
                try self.handle(frame, &s, &actions)
                if s.receivedClose { break }
            }
            s.decoder.endInput()
            if !s.receivedClose { try self.checkPartialFrame(&s) }
        } catch let violation as ProtocolViolation {
            failure = Self.error(for: violation)
        } catch let error as WebSocketError {
            failure = error
        } catch {
            failure = WebSocketError(
                .extensionFailure, "an extension failed: \(error)", closeCode: .protocolError, underlying: error
            )
        }
        if let failure {
            if s.queue.isEmpty && !s.consumers.isEmpty {
                self.failLocked(failure, &s, &actions)
            } else {
                // Frames before the violation are still queued, or the consumer is busy with the last one: fail
                // when it asks for more (or closes), at the latest after a short grace period.
                s.pendingFailure = failure
                actions.startPendingFailureTimer = true
            }
        }
        self.deliver(&s, &actions)
        if !s.readingPaused && !s.incomingEnded && self.queueIsFull(s) {
            self.setReadingPaused(true, &s, &actions)
        }
    }

    /// Validates the UTF-8 of a text frame that has only partly arrived, so invalid text fails as soon as it is
    /// seen (RFC 6455 section 8.1, Autobahn cases 6.4.x), not when the whole frame is in.
    private func checkPartialFrame(_ s: inout State) throws(ProtocolViolation) {
        guard let header = s.decoder.partialFrameHeader else { return }
        if s.partialCheck == nil {
            let validates =
                header.opcode == .text ? (s.extensions.isEmpty || header.reservedBits.isEmpty) : s.messageValidatesUTF8
            s.partialCheck =
                s.assembler.validatorForPartialFrame(opcode: header.opcode, validateUTF8: validates)
                .map { .validating($0, checked: 0) } ?? .skip
        }
        guard case .validating(var validator, let checked) = s.partialCheck else { return }
        let fresh = s.decoder.partialPayload(from: checked)
        guard !fresh.isEmpty else { return }
        guard fresh.withUnsafeBytes({ validator.feed($0) }) else {
            throw ProtocolViolation(.invalidPayload, "text message is not valid UTF-8")
        }
        s.partialCheck = .validating(validator, checked: checked + fresh.count)
    }

    private func handle(_ frame: ParsedFrame, _ s: inout State, _ actions: inout Actions) throws {
        // Extensions claim reserved bits on the first frame of a data message only (RFC 7692 section 6.1):
        // on a control or continuation frame they are a protocol error even when an extension allows them.
        if !frame.reservedBits.isEmpty && (frame.opcode.isControl || frame.opcode == .continuation) {
            throw ProtocolViolation(
                .protocolError,
                "reserved bits set on a \(frame.opcode == .continuation ? "continuation" : "control") frame"
            )
        }
        switch frame.opcode {
        case .ping:
            if !s.closeSent { actions.controlFrames.append(Frame(kind: .pong, data: frame.payload)) }
            self.enqueueControl(Frame(kind: .ping, data: frame.payload), &s)
        case .pong:
            if let expected = s.awaitingPong, expected == frame.payload { s.awaitingPong = nil }
            self.enqueueControl(Frame(kind: .pong, data: frame.payload), &s)
        case .close:
            let reason = try Self.validateClosePayload(frame.payload)
            s.receivedClose = true
            if s.failure == nil { s.closeReason = reason ?? CloseReason(code: .noStatus) }
            self.enqueue(Frame(kind: .close, data: frame.payload), &s)
            self.endIncoming(&s, &actions, error: nil)
            if !s.closeSent {
                // Echo the peer's code (RFC 6455 section 5.5.1); a close without a code is answered the same way.
                actions.sendClose = .some(reason.map { CloseReason(code: $0.code) })
            }
            actions.startCloseTimer = true
            // Reading continues so the server's TCP close is seen; nothing after a close frame is parsed.
            if s.readingPaused { self.setReadingPaused(false, &s, &actions) }
        default:  // data: continuation, text, binary
            if frame.opcode != .continuation {
                s.messageValidatesUTF8 = s.extensions.isEmpty || frame.reservedBits.isEmpty
            }
            guard var message = try s.assembler.push(frame, validateUTF8: s.messageValidatesUTF8) else { return }
            if s.closeSent { return }
            if !s.extensions.isEmpty {
                let context = WebSocketExtensionContext(maxMessageSize: self.settings.maxMessageSize)
                for ext in s.extensions.reversed() {
                    message = try ext.processIncoming(message, context: context)
                }
                if message.kind == .text && !s.messageValidatesUTF8 {
                    let valid = message.data.withUnsafeBytes { UTF8Validator.validate($0) }
                    guard valid else {
                        throw ProtocolViolation(.invalidPayload, "a text message is not valid UTF-8")
                    }
                }
            }
            self.enqueue(message, &s)
        }
    }

    /// Checks a received close payload (RFC 6455 sections 5.5.1 and 7.4): empty, or a valid code and UTF-8.
    private static func validateClosePayload(_ payload: [UInt8]) throws(ProtocolViolation) -> CloseReason? {
        if payload.isEmpty { return nil }
        guard payload.count >= 2 else {
            throw ProtocolViolation(.protocolError, "a close frame has a 1-byte payload; a status code needs 2 bytes")
        }
        let code = CloseReason.Code(UInt16(payload[0]) << 8 | UInt16(payload[1]))
        guard code.isValidOnWire else {
            throw ProtocolViolation(.protocolError, "the server sent close code \(code.rawValue), which may not be sent")
        }
        let message = payload[2...]
        guard let text = message.withUnsafeBytes({ UTF8Validator.validate($0) ? String(decoding: $0, as: UTF8.self) : nil })
        else {
            throw ProtocolViolation(.invalidPayload, "the close reason is not valid UTF-8")
        }
        return CloseReason(code: code, message: text)
    }

    private static func error(for violation: ProtocolViolation) -> WebSocketError {
        let code: WebSocketError.Code =
            switch violation.closeCode {
            case .invalidPayload: .invalidUTF8
            case .messageTooBig: .messageTooBig
            default: .protocolViolation
            }
        var message = violation.message
        if violation.closeCode == .messageTooBig {
            message += " (raise WebSockets.Configuration.maxFrameSize, maxMessageSize or maxFragments if this is expected)"
        }
        return WebSocketError(code, message, closeCode: violation.closeCode)
    }

    private func enqueue(_ frame: Frame, _ s: inout State) {
        guard !s.incomingEnded else { return }
        s.queue.append(frame)
        s.queuedBytes += frame.data.count
    }

    /// How many received pings and pongs `incoming` holds at most while the consumer does not take them.
    static let maxQueuedControlFrames = 16

    /// Queues a received ping or pong for `incoming`. They do not count toward the incoming buffer limits, so they
    /// never pause reading (a paused session could not read the pongs of its own keepalive); beyond
    /// ``maxQueuedControlFrames`` undelivered ones the oldest is dropped (it was already answered or matched), so a
    /// ping or pong flood cannot grow memory either.
    private func enqueueControl(_ frame: Frame, _ s: inout State) {
        guard !s.incomingEnded else { return }
        if s.queuedControl >= Self.maxQueuedControlFrames,
            let oldest = s.queue.firstIndex(where: { $0.kind == .ping || $0.kind == .pong })
        {
            s.queue.remove(at: oldest)
            s.queuedControl -= 1
        }
        s.queue.append(frame)
        s.queuedControl += 1
    }

    /// Takes the first queued frame, keeping the queue's counts.
    private func dequeue(_ s: inout State) -> Frame? {
        guard let frame = s.queue.popFirst() else { return nil }
        if frame.kind == .ping || frame.kind == .pong {
            s.queuedControl -= 1
        } else {
            s.queuedBytes -= frame.data.count
        }
        return frame
    }

    /// Whether the data frames waiting in `incoming` reached a buffer limit (reading pauses).
    private func queueIsFull(_ s: State) -> Bool {
        s.queue.count - s.queuedControl >= self.settings.maxIncomingBufferMessages
            || s.queuedBytes >= self.settings.maxIncomingBufferBytes
    }

    /// Hands queued frames to waiting consumers.
    private func deliver(_ s: inout State, _ actions: inout Actions) {
        while !s.consumers.isEmpty, let frame = self.dequeue(&s) {
            actions.deliver(.success(frame), to: s.consumers.removeFirst().continuation)
        }
        // A deferred failure fires once the frames before it are consumed and the consumer asks for more: by
        // then it has handled them (e.g. sent its replies) as it would have without the violation behind them.
        if s.queue.isEmpty, !s.consumers.isEmpty, let failure = s.pendingFailure.take() {
            self.failLocked(failure, &s, &actions)
            return
        }
        if s.queue.isEmpty && s.incomingEnded {
            while let consumer = s.consumers.popFirst() {
                actions.deliver(Self.endResult(s), to: consumer.continuation)
            }
        }
    }

    private static func endResult(_ s: State) -> Result<Frame?, any Error> {
        if let error = s.incomingError { return .failure(error) }
        return .success(nil)
    }

    /// Marks incoming as ended after the frames already queued.
    private func endIncoming(_ s: inout State, _ actions: inout Actions, error: WebSocketError?) {
        guard !s.incomingEnded else { return }
        s.incomingEnded = true
        s.incomingError = error
        // Frames already queued are still delivered; the end (or the error) follows them.
        self.deliver(&s, &actions)
    }

    /// Fails the connection (RFC 6455 section 7.1.7): send a close with the error's code, then close TCP.
    private func failLocked(_ error: WebSocketError, _ s: inout State, _ actions: inout Actions) {
        guard s.failure == nil, !s.ended else { return }
        s.failure = error
        let code = error.closeCode ?? .protocolError
        s.closeReason = CloseReason(code: code, message: error.message)
        self.endIncoming(&s, &actions, error: error)
        if code.isValidOnWire && !s.closeSent {
            actions.sendClose = .some(CloseReason(code: code, message: Self.truncated(error.message)))
        }
        actions.closeTransport = true
        actions.startCloseTimer = true
        if s.readingPaused { self.setReadingPaused(false, &s, &actions) }
    }

    /// Fails the connection from outside the read path (pong timeout).
    func fail(_ error: WebSocketError) {
        var actions = Actions()
        self.state.withLock { s in
            guard s.phase == .open else { return }
            self.failLocked(error, &s, &actions)
        }
        self.perform(actions)
    }

    private static func truncated(_ message: String) -> String {
        String(decoding: Array(message.utf8.prefix(CloseReason.maxMessageBytes)), as: UTF8.self)
    }

    // MARK: - Carrying out actions

    private func perform(_ actions: Actions) {
        if let continuation = actions.handshakeContinuation, let result = actions.handshakeResult {
            continuation.resume(with: result)
        }
        // Pongs and closes go out before consumers wake, so a reply the consumer sends cannot overtake them.
        for frame in actions.controlFrames {
            // A server that floods pings and does not read our pongs must not grow our memory: above the outgoing
            // limit only the pong of the latest ping is kept, and sent once the transport drains (RFC 6455 section
            // 5.5.3 allows answering only the most recent ping).
            if frame.kind == .pong && self.transport.bufferedBytes > self.settings.maxOutgoingBufferBytes {
                self.state.withLock { $0.heldPong = frame.data }
                if self.transport.bufferedBytes == 0 { self.transportDidDrain() }  // drained in between
                continue
            }
            self.writeControl(frame)
        }
        if let close = actions.sendClose { self.sendCloseFrame(close) }
        if let (continuation, result) = actions.delivery { continuation.resume(with: result) }
        for (continuation, result) in actions.moreDeliveries { continuation.resume(with: result) }
        if actions.syncReadingPaused { self.syncReadingPaused() }
        if actions.closeTransport { self.transport.close() }
        if actions.abortTransport { self.transport.abort() }
        if actions.startCloseTimer { self.startCloseTimer() }
        if actions.startPendingFailureTimer { self.startPendingFailureTimer() }
        if let payload = actions.restartPongTimer { self.startPongTimer(for: payload) }
        for waiter in actions.endWaiters { waiter.resume() }
        for waiter in actions.drainWaiters { waiter.resume() }
        for timer in actions.timersToCancel { timer.cancel() }
    }

    /// Fails the session with a deferred violation if the consumer has not asked for more within the grace period.
    private func startPendingFailureTimer() {
        let grace = min(Self.pendingFailureGrace, self.settings.closeTimeout)
        self.startTimer(.pendingFailure, after: grace) { connection in
            var actions = Actions()
            connection.state.withLock { s in
                if let failure = s.pendingFailure.take() { connection.failLocked(failure, &s, &actions) }
            }
            connection.perform(actions)
        }
    }

    /// How long a deferred violation waits for the consumer.
    static let pendingFailureGrace: Duration = .seconds(1)

    private func setReadingPaused(_ paused: Bool, _ s: inout State, _ actions: inout Actions) {
        s.readingPaused = paused
        s.pauseGeneration &+= 1
        actions.syncReadingPaused = true
        // The pong of an unanswered ping could not be read while paused: give the server its full time again.
        if !paused, let payload = s.awaitingPong { actions.restartPongTimer = payload }
    }

    /// Applies the latest pause decision to the transport. The decision is made under the state lock but
    /// applied after it is released, so a reader pausing and a consumer resuming can apply in the wrong order;
    /// re-checking the generation after applying repairs that (the last apply always sees the latest decision).
    private func syncReadingPaused() {
        while true {
            let (paused, generation) = self.state.withLock { ($0.readingPaused, $0.pauseGeneration) }
            self.transport.setReadingPaused(paused)
            if self.state.withLock({ $0.pauseGeneration == generation }) { return }
        }
    }

    private func startCloseTimer() {
        let timeout = self.settings.closeTimeout
        self.startTimer(.close, after: timeout) { connection in
            connection.state.withLock { s in
                guard !s.ended else { return }
                if !s.receivedClose && s.failure == nil {
                    let message = "the server did not complete the close handshake within \(timeout)"
                    s.closeReason = CloseReason(code: .abnormalClosure, message: message)
                    s.failure = WebSocketError(.closeTimeout, message, closeCode: .abnormalClosure)
                }
            }
            connection.transport.abort()
        }
    }

    // MARK: - Writing

    /// Writes a control frame unless our close was already sent. Returns the buffered byte count.
    @discardableResult
    private func writeControl(_ frame: Frame) -> Int {
        self.sender.withLock { sender in
            guard !sender.closeSent else { return 0 }
            var bytes: [UInt8] = []
            FrameEncoder.encode(frame, maskingKey: sender.keys.next(), into: &bytes)
            return self.transport.write(bytes)
        }
    }

    /// Sends a close frame once; `.some(nil)` sends a close without a status code.
    private func sendCloseFrame(_ reason: CloseReason?) {
        let sent = self.sender.withLock { sender -> Bool in
            guard !sender.closeSent else { return false }
            sender.closeSent = true
            var bytes: [UInt8] = []
            FrameEncoder.encode(Frame.close(reason), maskingKey: sender.keys.next(), into: &bytes)
            self.transport.write(bytes)
            return true
        }
        if sent {
            self.state.withLock { $0.closeSent = true }
        }
    }

    /// Encodes and writes a data, ping or pong frame from the user, without waiting.
    /// - Returns: Whether more than ``WebSockets/Configuration/maxOutgoingBufferBytes`` are now buffered (the caller
    ///   should wait for the transport to drain).
    @usableFromInline
    func enqueue(_ frame: Frame) throws -> Bool {
        switch frame.kind {
        case .close:
            preconditionFailure("close frames go through close(_:waitForEnd:)")
        case .ping, .pong:
            guard frame.data.count <= 125 else {
                throw WebSocketError(.invalidArgument, "a \(frame.kind) frame carries at most 125 bytes, not \(frame.data.count)")
            }
            guard frame.fin else {
                throw WebSocketError(.invalidArgument, "control frames cannot be fragmented: fin must be true")
            }
        case .text, .binary, .continuation:
            break
        }
        let buffered = try self.sender.withLock { sender throws -> Int in
            guard !sender.closeSent, !sender.ended else { throw self.closedError() }
            var frame = frame
            if !sender.extensions.isEmpty && !frame.kind.isControl {
                let context = WebSocketExtensionContext(maxMessageSize: self.settings.maxMessageSize)
                for ext in sender.extensions { frame = try ext.processOutgoing(frame, context: context) }
            }
            let key = sender.keys.next()
            if frame.data.count <= FrameEncoder.maxTemporaryPayload {
                // Small frames are encoded in a temporary buffer that the transport copies into its write buffer
                // (where a burst of small messages is gathered anyway): no array per message.
                return FrameEncoder.withEncodedFrame(frame, maskingKey: key) { self.transport.write(bytes: $0) }
            }
            return self.transport.write(FrameEncoder.encodedFrame(frame, maskingKey: key))
        }
        return buffered > self.settings.maxOutgoingBufferBytes
    }

    private func closedError() -> WebSocketError {
        self.state.withLock { s in
            if let failure = s.failure {
                return WebSocketError(
                    .sessionClosed, "the session has failed: \(failure.message)", closeCode: failure.closeCode,
                    underlying: failure
                )
            }
            let reason = s.closeReason.map { " (\($0))" } ?? ""
            return WebSocketError(
                .sessionClosed, "the session is closed; nothing more can be sent\(reason)", closeCode: s.closeReason?.code
            )
        }
    }

    /// Waits until the transport's buffer is at most `limit` bytes, or the connection ended.
    nonisolated(nonsending) func waitForDrain(above limit: Int) async {
        await withCheckedContinuation { (continuation: CheckedContinuation<Void, Never>) in
            let resumeNow = self.state.withLock { s -> Bool in
                if s.ended || self.transport.bufferedBytes <= limit { return true }
                s.drainWaiters.append(continuation)
                return false
            }
            if resumeNow { continuation.resume() }
        }
    }

    /// Installs the negotiated extensions on the sending side.
    func setOutgoingExtensions(_ extensions: [any WebSocketExtension]) {
        self.sender.withLock { $0.extensions = extensions }
    }

    // MARK: - Closing

    /// Starts the close handshake with `reason` (nil: no status code) and, if asked, waits until the
    /// connection has ended (the server's close and TCP close, or the close timeout).
    nonisolated(nonsending) func close(_ reason: CloseReason?, waitForEnd: Bool) async {
        self.beginClose(reason)
        if waitForEnd { await self.waitForEnd() }
    }

    /// The synchronous part of ``close(_:waitForEnd:)``, kept out of its async frame.
    @inline(never)
    private func beginClose(_ reason: CloseReason?) {
        var reason = reason
        if let code = reason?.code, !code.isValidOnWire {
            self.logger.warning("close code \(code) may not be sent on the wire; sending a close frame without a code")
            reason = nil
        }
        var actions = Actions()
        let proceed = self.state.withLock { s -> Bool in
            if let failure = s.pendingFailure.take() {
                // The server broke the protocol after frames the user has now stopped reading: fail as RFC 6455 says.
                self.failLocked(failure, &s, &actions)
                return false
            }
            guard s.phase == .open, !s.closeSent, s.failure == nil else { return false }
            if !s.receivedClose { s.closeReason = reason ?? CloseReason(code: .noStatus) }
            self.endIncoming(&s, &actions, error: nil)
            if s.readingPaused { self.setReadingPaused(false, &s, &actions) }
            return true
        }
        self.perform(actions)
        if proceed {
            self.sendCloseFrame(reason)
            self.startCloseTimer()
        }
    }

    /// Closes without waiting, for a session dropped without `close()`.
    func closeDetached() {
        let open = self.state.withLock { $0.phase == .open && !$0.closeSent && $0.failure == nil }
        guard open else { return }
        self.sendCloseFrame(CloseReason(code: .goingAway, message: "session released"))
        self.transport.close()
    }

    /// Waits until the transport has closed.
    nonisolated(nonsending) func waitForEnd() async {
        await withCheckedContinuation { (continuation: CheckedContinuation<Void, Never>) in
            let ended = self.state.withLock { s -> Bool in
                if s.ended { return true }
                s.endWaiters.append(continuation)
                return false
            }
            if ended { continuation.resume() }
        }
    }

    /// The close reason once the session has ended.
    nonisolated(nonsending) func closeReasonAfterEnd() async -> CloseReason? {
        await self.waitForEnd()
        return self.state.withLock { $0.closeReason }
    }

    /// The close reason now: `nil` while open.
    var currentCloseReason: CloseReason? { self.state.withLock { $0.closeReason } }

    /// Whether the connection has ended.
    var hasEnded: Bool { self.state.withLock { $0.ended } }

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
        var resumed: Actions?
        let frame = self.state.withLock { s -> Frame? in
            guard !s.controlFence, s.consumers.isEmpty, let frame = self.dequeue(&s) else { return nil }
            if s.readingPaused {
                // Only a paused connection has anything to do here: no action list per message otherwise.
                var actions = Actions()
                self.resumeReadingIfBelowLimit(&s, &actions)
                resumed = actions
            }
            return frame
        }
        if let resumed { self.perform(resumed) }
        return frame
    }

    /// The slow path of ``receive()``: waits for the next frame (or the end).
    private nonisolated(nonsending) func waitForFrame() async throws -> Frame? {
        let id = self.state.withLock { s -> UInt64 in
            s.nextConsumerID += 1
            return s.nextConsumerID
        }
        // Continuations are resumed exactly once: by a delivery, by the cancellation handler (after removing it
        // from `consumers` under the lock), or right here.
        return try await withTaskCancellationHandler {
            try await withUnsafeThrowingContinuation { (continuation: UnsafeContinuation<Frame?, any Error>) in
                var actions = Actions()
                let immediate: Result<Frame?, any Error>? = self.state.withLock { s in
                    if !s.controlFence, s.consumers.isEmpty, let frame = self.dequeue(&s) {
                        self.resumeReadingIfBelowLimit(&s, &actions)
                        return .success(frame)
                    }
                    if s.queue.isEmpty, let failure = s.pendingFailure.take() {
                        self.failLocked(failure, &s, &actions)
                    }
                    if s.queue.isEmpty && s.incomingEnded { return Self.endResult(s) }
                    if Task.isCancelled { return .failure(CancellationError()) }
                    s.consumers.append((id, continuation))
                    return nil
                }
                if let immediate { continuation.resume(with: immediate) }
                self.perform(actions)
            }
        } onCancel: {
            let cancelled = self.state.withLock { s -> UnsafeContinuation<Frame?, any Error>? in
                guard let index = s.consumers.firstIndex(where: { $0.id == id }) else { return nil }
                return s.consumers.remove(at: index).continuation
            }
            cancelled?.resume(throwing: CancellationError())
        }
    }

    private func resumeReadingIfBelowLimit(_ s: inout State, _ actions: inout Actions) {
        guard s.readingPaused else { return }
        if s.queue.count - s.queuedControl <= self.settings.maxIncomingBufferMessages / 2
            && s.queuedBytes <= self.settings.maxIncomingBufferBytes / 2
        {
            self.setReadingPaused(false, &s, &actions)
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
