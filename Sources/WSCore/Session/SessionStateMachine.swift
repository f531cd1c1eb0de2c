import DequeModule

/// Carries out what a ``SessionStateMachine`` decides, in the order it decides it.
protocol SessionActionSink {
    /// The bytes the transport holds in user space, not yet taken by the network (decides whether a pong is held).
    var outgoingBufferedBytes: Int { get }
    /// Carries out `action`.
    /// - Parameter action: What the machine decided.
    mutating func perform(_ action: SessionStateMachine.Action)
}

/// The rules of one client session as a value: events in (bytes read, user sends and closes, consumers asking and
/// cancelling, timers firing, the transport draining and closing), ``Action``s out (to a ``SessionActionSink``).
/// No locks, no I/O, no clocks, no continuations: consumers are ids and timers are kinds; `Connection` maps them to
/// continuations and transport timers and performs the actions.
///
/// Phases: idle → handshaking (HTTP/1.1 Upgrade, ``beginHandshake(_:timeout:_:)``) → open → closed; a transport
/// whose handshake happened elsewhere (an HTTP/2 extended CONNECT stream) starts at open with ``opened(_:)``.
///
/// Every event emits its actions through the sink as it decides them, so a read that answers pings and queues
/// messages allocates no action list: pongs and our close frame go out before any delivery of the same event (so a
/// consumer's reply cannot overtake them), and one waiting consumer gets the first message of a read inline while
/// the rest stay queued for it.
struct SessionStateMachine {
    /// Identifies a task waiting in ``receive(_:isCancelled:_:)``.
    typealias ConsumerID = UInt64

    /// The session's timers; at most one of each kind runs (arming a kind again replaces it).
    enum TimerKind: Hashable, Sendable, CaseIterable {
        /// The opening handshake's deadline (its error is made by the caller).
        case open
        /// The next keepalive ping.
        case ping
        /// The deadline for the pong of our keepalive ping.
        case pong
        /// The deadline for the server to finish the close handshake; then the connection is aborted.
        case close
        /// The grace period of a deferred violation (see ``read(_:_:)``).
        case pendingFailure
    }

    /// What the machine decided; performed by the sink in the order emitted.
    enum Action {
        /// Write this ping or pong frame.
        case writeControl(Frame)
        /// Write our close frame with this reason (`nil`: no status code). Emitted at most once.
        case sendClose(CloseReason?)
        /// Hand this frame to the waiting consumer.
        case deliver(Frame, to: ConsumerID)
        /// Tell the waiting consumer that incoming ended: normally (`nil`) or with the session's failure.
        case endIncoming(WebSocketError?, to: ConsumerID)
        /// Stop (`true`) or resume (`false`) reading from the transport.
        case setReadingPaused(Bool)
        /// Start the timer of this kind (replacing a running one) and call ``timerFired(_:_:)`` when it fires.
        case armTimer(TimerKind, after: Duration)
        /// Stop the timer of this kind if it runs.
        case cancelTimer(TimerKind)
        /// Flush what is buffered, then close the transport.
        case closeTransport
        /// Close the transport at once.
        case abortTransport
        /// The opening handshake succeeded.
        case finishHandshake(OpeningHandshake.Outcome)
        /// The opening handshake failed with this error.
        case failHandshake(any Error)
        /// Resume the tasks waiting for the transport to drain.
        case resumeDrainWaiters
        /// The transport has closed: resume every waiter (end and drain) and stop every timer.
        case connectionEnded
        /// A pong answered our ping after `roundTrip`: a keepalive ping (`nil`) or the ping of ``sendPing(_:at:_:)``.
        case pongReceived(PingID?, roundTrip: Duration)
    }

    /// What ``receive(_:isCancelled:_:)`` found.
    enum ReceiveResult {
        /// The next frame.
        case frame(Frame)
        /// Incoming has ended: normally (`nil`) or with the session's failure.
        case end(WebSocketError?)
        /// The task was cancelled before it waited.
        case cancelled
        /// The consumer waits; a later action delivers to it.
        case waiting
    }

    private enum Phase {
        case idle
        indirect case handshaking(HandshakeResponseReader)
        case open
        case closed
    }

    /// How long a deferred violation waits for the consumer.
    static let pendingFailureGrace: Duration = .seconds(1)

    /// How many received pings and pongs `incoming` holds at most while the consumer does not take them.
    static let maxQueuedControlFrames = 16

    /// What the machine needs of the configuration: a copy of all of it per connection would cost memory. Immutable
    /// and shared: the sessions of a client refer to one (``SharedWebSocketSettings``) instead of holding ≈ 100
    /// bytes each.
    final class Limits: Sendable {
        let maxIncomingBufferMessages: Int
        let maxIncomingBufferBytes: Int
        let maxOutgoingBufferBytes: Int
        let maxMessageSize: Int
        let pingInterval: Duration?
        let pongTimeout: Duration?
        let closeTimeout: Duration

        init(_ configuration: WebSockets.Configuration) {
            self.maxIncomingBufferMessages = configuration.maxIncomingBufferMessages
            self.maxIncomingBufferBytes = configuration.maxIncomingBufferBytes
            self.maxOutgoingBufferBytes = configuration.maxOutgoingBufferBytes
            self.maxMessageSize = configuration.maxMessageSize
            self.pingInterval = configuration.pingInterval
            self.pongTimeout = configuration.effectivePongTimeout
            self.closeTimeout = configuration.closeTimeout
        }
    }

    /// An optional value kept out of line: `nil`, as it is in almost every session, costs one word in the machine
    /// instead of the value's size (88 bytes for an error), and the machine lives in every connection. For fields
    /// set rarely (once per session or per keepalive ping): setting one allocates.
    @propertyWrapper
    struct OutOfLine<Value: Sendable> {
        private final class Box: Sendable {
            let value: Value
            init(_ value: Value) { self.value = value }
        }
        private var box: Box?

        init(wrappedValue: Value?) { self.box = wrappedValue.map(Box.init) }

        var wrappedValue: Value? {
            get { self.box?.value }
            set { self.box = newValue.map(Box.init) }
        }
    }

    private let limits: Limits
    private var phase: Phase = .idle
    private var pipeline: InboundPipeline

    // Incoming.
    private var queue = Deque<Frame>()
    /// Payload bytes of the queued data (and close) frames; pings and pongs are bounded by count instead.
    private var queuedBytes = 0
    /// How many of the queued frames are pings and pongs.
    private var queuedControl = 0
    private var consumers = Deque<ConsumerID>()
    private var lastConsumerID: ConsumerID = 0
    /// Set once incoming has delivered its last frame; `incomingError` is its failure (nil: ended normally).
    private var incomingEnded = false
    @OutOfLine private var incomingError: WebSocketError? = nil
    /// Whether reading from the transport is paused (the queue is full).
    private(set) var readingPaused = false
    /// Parsing stopped when the queue filled up, with received bytes left in the pipeline: they are parsed before
    /// reading resumes, so one read cannot queue more than the limits (a read of compressed messages could inflate
    /// to hundreds of megabytes).
    private var inputLeftUnparsed = false
    /// When the bytes left unparsed were read (as passed to ``read(_:at:_:)``): a pong among them, parsed later,
    /// gets the round-trip time of its arrival.
    @OutOfLine private var unparsedInputReadAt: StoredInstant? = nil
    /// A violation found after frames that are still queued: it fails the session once they are consumed, so nothing
    /// accepted before it is lost.
    @OutOfLine private var pendingFailure: WebSocketError? = nil

    // Lifecycle.
    /// We sent a close frame: nothing more is sent, and data frames that still arrive are dropped.
    private var closeSent = false
    /// A data frame with `fin == false` was sent and the frame with `fin == true` that ends its message was not yet.
    private var sendingFragmentedMessage = false
    private var receivedClose = false
    /// The session is a stream of a multiplexed connection (opened with ``opened(_:)``): once our close frame is
    /// answered, the transport is closed at once instead of waiting for the server's end of the stream, which an
    /// HTTP/2 server may never send.
    private var closesAfterHandshake = false
    /// Why the session ended (or is ending); `nil` while open.
    @OutOfLine private(set) var closeReason: CloseReason? = nil
    @OutOfLine private var failure: WebSocketError? = nil
    /// The transport has closed.
    private(set) var hasEnded = false

    // Keepalive.
    /// Numbers our pings (keepalive and application ones), so each payload is unique.
    var pingCounter: UInt64 = 0
    /// The payload of our ping whose pong has not arrived.
    private var awaitingPong: [UInt8]?
    /// When the keepalive ping in `awaitingPong` was sent, if the caller said (see ``timerFired(_:at:_:)``).
    @OutOfLine var keepaliveSentAt: StoredInstant? = nil
    /// The pings of ``sendPing(_:at:_:)`` waiting for their pong, oldest first.
    var userPings: [UserPing] = []
    /// The received side of the statistics and the round-trip times (the glue counts what it writes).
    var received = ReceivedCounters()
    /// The pong for the latest ping, held back while the server does not read what we send.
    private var heldPong: [UInt8]?
    /// Pong bytes written while the transport already held unsent bytes (see `writePong`).
    private var pongBytesQueued = 0

    /// How many bytes of pongs may wait behind unsent bytes before only the latest pong is kept.
    static let maxQueuedPongBytes = 64 << 10

    /// Creates a machine in the idle phase.
    /// - Parameters:
    ///   - configuration: The session's limits and timeouts.
    ///   - limits: The limits of `configuration` made already (shared by the sessions of a client); made here when
    ///     `nil`.
    init(configuration: WebSockets.Configuration, limits: Limits? = nil) {
        self.limits = limits ?? Limits(configuration)
        self.pipeline = InboundPipeline(configuration: configuration)
    }

    /// The limits in effect (for tests: the sessions of a client share them).
    var sharedLimits: Limits { self.limits }

    /// The negotiated extensions (empty before the session is open).
    var extensions: [any WebSocketExtension] { self.pipeline.extensions }

    /// Whether nothing more may be sent: the session is not open, our close was sent or the transport closed.
    var closeSentOrEnded: Bool {
        guard case .open = self.phase else { return true }
        return self.closeSent || self.hasEnded
    }

    /// Frames decoded so far, and the payload bytes of the data frames among them (for the statistics).
    var pipelineFramesDecoded: Int { self.pipeline.framesDecoded }
    var pipelineDataPayloadBytesDecoded: Int { self.pipeline.dataPayloadBytesDecoded }

    // MARK: - Opening

    /// The upgrade request is about to be sent: reads the response from now on, within `timeout`.
    mutating func beginHandshake(_ handshake: OpeningHandshake, timeout: Duration, _ sink: inout some SessionActionSink)
    {
        guard case .idle = self.phase else { return }
        self.phase = .handshaking(HandshakeResponseReader(handshake: handshake))
        self.arm(.open, after: timeout, &sink)
    }

    /// Opens the session with an outcome negotiated elsewhere (e.g. an HTTP/2 extended CONNECT stream), skipping the
    /// HTTP/1.1 handshake.
    /// - Parameter outcome: The subprotocol and extensions in effect.
    mutating func opened(_ outcome: OpeningHandshake.Outcome) {
        guard case .idle = self.phase else { return }
        self.closesAfterHandshake = true
        self.open(outcome)
    }

    private mutating func open(_ outcome: OpeningHandshake.Outcome) {
        self.pipeline.install(outcome.extensions)
        self.phase = .open
    }

    /// Fails the opening handshake (its timeout, or the caller gave up) if it is still running.
    mutating func failHandshake(_ error: any Error, _ sink: inout some SessionActionSink) {
        guard case .handshaking = self.phase else { return }
        self.phase = .closed
        sink.perform(.cancelTimer(.open))
        sink.perform(.failHandshake(error))
        sink.perform(.abortTransport)
    }

    /// The session object exists: starts the keepalive pings if configured.
    mutating func startKeepalive(_ sink: inout some SessionActionSink) {
        if let interval = self.limits.pingInterval { self.arm(.ping, after: interval, &sink) }
    }

    // MARK: - Transport events

    /// Bytes arrived.
    /// - Parameter now: When the bytes were read; the caller passes it while ``isAwaitingPong`` (round-trip times).
    mutating func read(
        _ bytes: UnsafeRawBufferPointer, at now: ContinuousClock.Instant? = nil, _ sink: inout some SessionActionSink
    ) {
        switch self.phase {
        case .handshaking(var reader):
            let step = reader.read(bytes)
            switch step {
            case .needMore:
                self.phase = .handshaking(reader)
            case .failed(let error):
                self.phase = .closed
                sink.perform(.cancelTimer(.open))
                sink.perform(.failHandshake(error))
                sink.perform(.abortTransport)
            case .upgraded(let outcome, let consumed):
                self.open(outcome)
                sink.perform(.cancelTimer(.open))
                sink.perform(.finishHandshake(outcome))
                if consumed < bytes.count {
                    self.readFrames(UnsafeRawBufferPointer(rebasing: bytes[consumed...]), at: now, &sink)
                }
            }
        case .open:
            self.readFrames(bytes, at: now, &sink)
        case .idle, .closed:
            break
        }
    }

    /// The transport's buffer drained: sends a held pong and resumes the drain waiters.
    mutating func transportDrained(_ sink: inout some SessionActionSink) {
        self.pongBytesQueued = 0
        if let pong = self.heldPong.take(), !self.closeSent {
            sink.perform(.writeControl(Frame(kind: .pong, data: pong)))
        }
        sink.perform(.resumeDrainWaiters)
    }

    /// The transport closed (`error`: why, if it failed).
    mutating func transportClosed(_ error: (any Error)?, _ sink: inout some SessionActionSink) {
        switch self.phase {
        case .handshaking(let reader):
            sink.perform(.failHandshake(reader.closedError(error)))
        case .open:
            if let pending = self.pendingFailure.take() {
                self.failure = pending
                self.closeReason = CloseReason(code: pending.closeCode ?? .protocolError, message: pending.message)
                self.endIncoming(error: pending)
            } else if !self.receivedClose && self.failure == nil {
                let message =
                    error.map { "the connection was lost: \($0)" }
                    ?? "the server closed the connection without a close frame"
                self.closeReason = CloseReason(code: .abnormalClosure, message: message)
                let failure = WebSocketError(.connectionLost, message, closeCode: .abnormalClosure, underlying: error)
                self.failure = failure
                self.endIncoming(error: failure)
            } else {
                self.endIncoming(error: self.failure)
            }
        case .idle, .closed:
            break
        }
        self.phase = .closed
        self.hasEnded = true
        self.deliver(&sink)
        sink.perform(.connectionEnded)
    }

    /// A timer armed with ``Action/armTimer(_:after:)`` fired (and was not re-armed or cancelled since).
    /// - Parameter now: When it fired; a keepalive ping sent now measures its round trip from it.
    mutating func timerFired(
        _ kind: TimerKind, at now: ContinuousClock.Instant? = nil, _ sink: inout some SessionActionSink
    ) {
        guard !self.hasEnded else { return }
        switch kind {
        case .open:
            break  // the caller fails the handshake with its own error (failHandshake)
        case .ping:
            self.sendPing(at: now, &sink)
        case .pong:
            guard case .open = self.phase, self.awaitingPong != nil, !self.readingPaused,
                let timeout = self.limits.pongTimeout
            else { return }
            self.fail(
                WebSocketError(
                    .pongTimeout,
                    "no pong arrived within \(timeout) of a ping: the server or the network is not responding",
                    closeCode: .internalError),
                &sink)
        case .close:
            if !self.receivedClose && self.failure == nil {
                let message = "the server did not complete the close handshake within \(self.limits.closeTimeout)"
                self.closeReason = CloseReason(code: .abnormalClosure, message: message)
                self.failure = WebSocketError(.closeTimeout, message, closeCode: .abnormalClosure)
            }
            sink.perform(.abortTransport)
        case .pendingFailure:
            if let failure = self.pendingFailure.take() { self.fail(failure, &sink) }
        }
    }

    /// Sends the next keepalive ping unless one is unanswered (its pong timeout decides), and re-arms the ping timer.
    private mutating func sendPing(at now: ContinuousClock.Instant?, _ sink: inout some SessionActionSink) {
        self.pingCounter &+= 1
        if case .open = self.phase, !self.closeSent, !self.receivedClose, self.awaitingPong == nil {
            let payload = withUnsafeBytes(of: self.pingCounter.bigEndian) { Array($0) }
            self.awaitingPong = payload
            self.keepaliveSentAt = now.map(StoredInstant.init)
            sink.perform(.writeControl(Frame(kind: .ping, data: payload)))
            if let timeout = self.limits.pongTimeout { self.arm(.pong, after: timeout, &sink) }
        }
        if let interval = self.limits.pingInterval { self.arm(.ping, after: interval, &sink) }
    }

    // MARK: - Reading frames

    private mutating func readFrames(
        _ bytes: UnsafeRawBufferPointer, at now: ContinuousClock.Instant?, _ sink: inout some SessionActionSink
    ) {
        var bytes = bytes
        while true {
            self.parse(bytes, at: now, &sink)
            self.deliver(&sink)
            // Stopped at a full queue that a waiting consumer then drained: go on with what is left.
            guard self.inputLeftUnparsed, !self.queueIsFull else { break }
            bytes = UnsafeRawBufferPointer(start: nil, count: 0)
        }
        if !self.readingPaused && !self.incomingEnded && self.queueIsFull {
            self.setReadingPaused(true, &sink)
        }
    }

    /// Parses `bytes` (after what the pipeline holds) into queued frames, answers pings, handles the close; stops
    /// once the queue is full, leaving the rest in the pipeline (``inputLeftUnparsed``).
    private mutating func parse(
        _ bytes: UnsafeRawBufferPointer, at now: ContinuousClock.Instant?, _ sink: inout some SessionActionSink
    ) {
        self.inputLeftUnparsed = false
        guard !self.receivedClose, self.failure == nil, self.pendingFailure == nil else { return }
        self.received.wireBytes &+= bytes.count
        // Frames are parsed straight out of the engine's read buffer; what is left of it is copied at the end.
        self.pipeline.beginInput(bytes)
        var violation: WebSocketError?
        do {
            events: while true {
                // A stream of small whole messages takes the fast path: straight from the input to the queue.
                if !self.closeSent && !self.incomingEnded,
                    try self.pipeline.queueSmallMessages(
                        into: &self.queue, queuedBytes: &self.queuedBytes, counters: &self.received,
                        maxCount: self.limits.maxIncomingBufferMessages + self.queuedControl,
                        maxBytes: self.limits.maxIncomingBufferBytes)
                {
                    self.inputLeftUnparsed = true
                    self.unparsedInputReadAt = now.map(StoredInstant.init)
                    break events
                }
                guard let event = try self.pipeline.next(dropData: self.closeSent) else { break }
                switch event {
                case .ping(let payload):
                    if !self.closeSent { self.writePong(payload, &sink) }
                    self.enqueueControl(Frame(kind: .ping, data: payload))
                case .pong(let payload):
                    if let expected = self.awaitingPong, expected == payload {
                        self.awaitingPong = nil
                        sink.perform(.cancelTimer(.pong))
                        self.keepalivePongArrived(at: now, &sink)
                    } else if !self.userPings.isEmpty {
                        self.userPongArrived(payload, at: now, &sink)
                    }
                    self.enqueueControl(Frame(kind: .pong, data: payload))
                case .close(let reason, let payload):
                    let answersOurClose = self.closeSent
                    self.receivedClose = true
                    if self.failure == nil { self.closeReason = reason ?? CloseReason(code: .noStatus) }
                    self.enqueue(Frame(kind: .close, data: payload))
                    self.endIncoming(error: nil)
                    // Echo the peer's code (RFC 6455 section 5.5.1); a close without a code is answered the same way.
                    self.sendClose(reason.map { CloseReason(code: $0.code) }, &sink)
                    self.arm(.close, after: self.limits.closeTimeout, &sink)
                    if answersOurClose && self.closesAfterHandshake { sink.perform(.closeTransport) }
                    // Reading continues so the server's TCP close is seen; nothing after a close frame is parsed.
                    if self.readingPaused { self.setReadingPaused(false, &sink) }
                    break events
                case .message(let message):
                    self.received.countMessage(message)
                    self.enqueue(message)
                    if self.queueIsFull && !self.incomingEnded {
                        self.inputLeftUnparsed = true
                        self.unparsedInputReadAt = now.map(StoredInstant.init)
                        break events
                    }
                }
            }
            try self.pipeline.finishInput(checkPartialFrame: !self.receivedClose)
        } catch {
            self.pipeline.abandonInput()
            violation = InboundPipeline.sessionError(for: error)
        }
        if let violation {
            if self.queue.isEmpty && !self.consumers.isEmpty {
                self.fail(violation, &sink)
            } else {
                // Frames before the violation are still queued, or the consumer is busy with the last one: fail
                // when it asks for more (or closes), at the latest after a short grace period.
                self.pendingFailure = violation
                self.arm(.pendingFailure, after: min(Self.pendingFailureGrace, self.limits.closeTimeout), &sink)
            }
        }
    }

    /// Answers a ping. A server that floods pings and does not read our pongs must not grow our memory: above the
    /// outgoing limit only the pong of the latest ping is kept, and sent once the transport drains (RFC 6455
    /// section 5.5.3 allows answering only the most recent ping).
    ///
    /// Pongs are also bounded on their own: once 64 KiB of them wait behind unsent bytes, only the latest is kept, so
    /// a ping flood at a server that does not read costs 64 KiB of pongs, not the whole outgoing buffer. The count
    /// starts again whenever the transport holds nothing unsent (pongs that went straight to the network cost nothing).
    private mutating func writePong(_ payload: [UInt8], _ sink: inout some SessionActionSink) {
        let buffered = sink.outgoingBufferedBytes
        if buffered == 0 { self.pongBytesQueued = 0 }
        if buffered > self.limits.maxOutgoingBufferBytes || self.pongBytesQueued >= Self.maxQueuedPongBytes {
            self.heldPong = payload
        } else {
            sink.perform(.writeControl(Frame(kind: .pong, data: payload)))
            if buffered > 0 { self.pongBytesQueued += payload.count &+ 6 }  // header and masking key
        }
    }

    private mutating func enqueue(_ frame: Frame) {
        guard !self.incomingEnded else { return }
        self.queue.append(frame)
        self.queuedBytes += frame.data.count
    }

    /// Queues a received ping or pong. They do not count toward the incoming buffer limits, so they never pause
    /// reading (a paused session could not read the pongs of its own keepalive); beyond ``maxQueuedControlFrames``
    /// undelivered ones the oldest is dropped (it was already answered or matched).
    private mutating func enqueueControl(_ frame: Frame) {
        guard !self.incomingEnded else { return }
        if self.queuedControl >= Self.maxQueuedControlFrames,
            let oldest = self.queue.firstIndex(where: { $0.kind == .ping || $0.kind == .pong })
        {
            self.queue.remove(at: oldest)
            self.queuedControl -= 1
        }
        self.queue.append(frame)
        self.queuedControl += 1
    }

    /// Takes the first queued frame, keeping the queue's counts.
    private mutating func dequeue() -> Frame? {
        guard let frame = self.queue.popFirst() else { return nil }
        if frame.kind == .ping || frame.kind == .pong {
            self.queuedControl -= 1
        } else {
            self.queuedBytes -= frame.data.count
        }
        return frame
    }

    /// Whether the data frames waiting in `incoming` reached a buffer limit (reading pauses).
    private var queueIsFull: Bool {
        self.queue.count - self.queuedControl >= self.limits.maxIncomingBufferMessages
            || self.queuedBytes >= self.limits.maxIncomingBufferBytes
    }

    private mutating func setReadingPaused(_ paused: Bool, _ sink: inout some SessionActionSink) {
        self.readingPaused = paused
        sink.perform(.setReadingPaused(paused))
        // The pong of an unanswered ping could not be read while paused: give the server its full time again.
        if !paused, self.awaitingPong != nil, let timeout = self.limits.pongTimeout {
            self.arm(.pong, after: timeout, &sink)
        }
    }

    private mutating func resumeReadingIfBelowLimit(_ sink: inout some SessionActionSink) {
        guard self.readingPaused else { return }
        if self.queue.count - self.queuedControl <= self.limits.maxIncomingBufferMessages / 2
            && self.queuedBytes <= self.limits.maxIncomingBufferBytes / 2
        {
            self.resumeReading(&sink)
        }
    }

    /// Resumes reading, after parsing what a full queue left in the pipeline. When that fills the queue again, reading
    /// stays paused: no resume and pause in one step, so the transport hears nothing (in a stream of small messages
    /// this happens every `maxIncomingBufferMessages / 2` messages received).
    ///
    /// Not inlined: it passes an optional `ContinuousClock.Instant`, whose size is known only at run time, so inlined
    /// into ``takeQueuedFrame(_:)`` it made every receive look up that type's metadata to size its stack frame.
    @inline(never)
    private mutating func resumeReading(_ sink: inout some SessionActionSink) {
        if self.inputLeftUnparsed {
            self.readFrames(UnsafeRawBufferPointer(start: nil, count: 0), at: self.unparsedInputReadAt?.instant, &sink)
            // A close frame or a failure among those bytes resumed reading already.
            guard self.readingPaused, !self.queueIsFull || self.incomingEnded else { return }
        }
        self.setReadingPaused(false, &sink)
    }

    /// Hands queued frames to waiting consumers; then a deferred failure or the end, once the queue is empty.
    private mutating func deliver(_ sink: inout some SessionActionSink) {
        while let id = self.consumers.first, let frame = self.dequeue() {
            self.consumers.removeFirst()
            sink.perform(.deliver(frame, to: id))
        }
        // A deferred failure fires once the frames before it are consumed and the consumer asks for more: by
        // then it has handled them (e.g. sent its replies) as it would have without the violation behind them.
        if self.queue.isEmpty, !self.consumers.isEmpty, let failure = self.pendingFailure.take() {
            self.fail(failure, &sink)
            return
        }
        if self.queue.isEmpty && self.incomingEnded {
            while let id = self.consumers.popFirst() {
                sink.perform(.endIncoming(self.incomingError, to: id))
            }
        }
    }

    /// Marks incoming as ended after the frames already queued (the caller delivers).
    private mutating func endIncoming(error: WebSocketError?) {
        guard !self.incomingEnded else { return }
        self.incomingEnded = true
        self.incomingError = error
    }

    /// Fails the connection (RFC 6455 section 7.1.7): send a close with the error's code, then close the transport.
    private mutating func fail(_ error: WebSocketError, _ sink: inout some SessionActionSink) {
        guard self.failure == nil, !self.hasEnded else { return }
        self.failure = error
        let code = error.closeCode ?? .protocolError
        self.closeReason = CloseReason(code: code, message: error.message)
        self.endIncoming(error: error)
        if code.isValidOnWire {
            self.sendClose(CloseReason(code: code, message: Self.truncated(error.message)), &sink)
        }
        sink.perform(.closeTransport)
        self.arm(.close, after: self.limits.closeTimeout, &sink)
        if self.readingPaused { self.setReadingPaused(false, &sink) }
        self.deliver(&sink)
    }

    private static func truncated(_ message: String) -> String {
        String(decoding: Array(message.utf8.prefix(CloseReason.maxMessageBytes)), as: UTF8.self)
    }

    private mutating func sendClose(_ reason: CloseReason?, _ sink: inout some SessionActionSink) {
        guard !self.closeSent else { return }
        self.closeSent = true
        sink.perform(.sendClose(reason))
    }

    private func arm(_ kind: TimerKind, after delay: Duration, _ sink: inout some SessionActionSink) {
        guard !self.hasEnded else { return }
        sink.perform(.armTimer(kind, after: delay))
    }

    // MARK: - Consumers

    /// The next queued frame if one is waiting and no earlier consumer is: the fast path of receiving.
    mutating func takeQueuedFrame(_ sink: inout some SessionActionSink) -> Frame? {
        guard self.consumers.isEmpty, let frame = self.dequeue() else { return nil }
        if self.readingPaused { self.resumeReadingIfBelowLimit(&sink) }
        return frame
    }

    /// A new id for a consumer about to wait.
    mutating func makeConsumerID() -> ConsumerID {
        self.lastConsumerID &+= 1
        return self.lastConsumerID
    }

    /// Consumer `id` asks for the next frame.
    /// - Parameter isCancelled: Whether its task is cancelled (it does not wait then).
    mutating func receive(_ id: ConsumerID, isCancelled: Bool, _ sink: inout some SessionActionSink) -> ReceiveResult {
        if self.consumers.isEmpty, let frame = self.dequeue() {
            self.resumeReadingIfBelowLimit(&sink)
            return .frame(frame)
        }
        if self.queue.isEmpty, let failure = self.pendingFailure.take() {
            self.fail(failure, &sink)
        }
        if self.queue.isEmpty && self.incomingEnded { return .end(self.incomingError) }
        if isCancelled { return .cancelled }
        self.consumers.append(id)
        return .waiting
    }

    /// Consumer `id` stopped waiting (its task was cancelled).
    /// - Returns: Whether it was waiting (then the caller ends its wait); `false` if a frame or the end was already
    ///   delivered to it.
    mutating func cancelReceive(_ id: ConsumerID) -> Bool {
        guard let index = self.consumers.firstIndex(of: id) else { return false }
        self.consumers.remove(at: index)
        return true
    }

    /// Whether the queue's counters match its contents (for tests).
    var queueCountersAreConsistent: Bool {
        let control = self.queue.count(where: { $0.kind == .ping || $0.kind == .pong })
        let bytes = self.queue.reduce(0) { $0 + ($1.kind == .ping || $1.kind == .pong ? 0 : $1.data.count) }
        return control == self.queuedControl && bytes == self.queuedBytes && control <= Self.maxQueuedControlFrames
    }

    /// How many frames wait in the queue (for tests).
    var queuedFrameCount: Int { self.queue.count }

    // MARK: - Sending and closing

    /// Whether a fragmented message is being sent (its first frame went out with `fin == false`, its last has not):
    /// another data message cannot start before it ends. `false` once the session is closing.
    var isSendingFragmentedMessage: Bool { self.sendingFragmentedMessage && !self.closeSent && !self.hasEnded }

    /// Checks a frame the user sends and applies the extensions: the frame to write.
    /// - Throws: ``WebSocketError`` (`invalidArgument` for a bad control frame or a continuation frame outside a
    ///   message, `sessionClosed` once our close was sent or the transport closed), ``MessageInProgress`` for a new
    ///   data message while a fragmented one is being sent (the caller waits for its end), or an extension's error.
    mutating func prepareSend(_ frame: Frame) throws -> Frame {
        try self.checkSend(frame) ?? frame
    }

    /// ``prepareSend(_:)`` without a copy of the frame when it goes out as given: checks it and applies the
    /// extensions.
    /// - Returns: The frame the extensions made of it, or `nil` when no extension applies (write `frame` itself).
    /// - Throws: As ``prepareSend(_:)``.
    mutating func checkSend(_ frame: Frame) throws -> Frame? {
        switch frame.kind {
        case .close:
            preconditionFailure("close frames go through close(_:_:)")
        case .ping, .pong:
            guard frame.data.count <= 125 else {
                throw WebSocketError(
                    .invalidArgument, "a \(frame.kind) frame carries at most 125 bytes, not \(frame.data.count)")
            }
            guard frame.fin else {
                throw WebSocketError(.invalidArgument, "control frames cannot be fragmented: fin must be true")
            }
            guard !self.closeSent, !self.hasEnded else { throw self.closedError() }
            return nil
        case .text, .binary, .continuation:
            guard !self.closeSent, !self.hasEnded else { throw self.closedError() }
            if frame.kind == .continuation {
                guard self.sendingFragmentedMessage else {
                    throw WebSocketError(
                        .invalidArgument,
                        "a continuation frame belongs to a message in progress; start the message with a text or binary frame with fin == false"
                    )
                }
            } else if self.sendingFragmentedMessage {
                throw MessageInProgress()
            }
            let extensions = self.pipeline.extensions
            if extensions.isEmpty {
                self.sendingFragmentedMessage = !frame.fin
                return nil
            }
            var prepared = frame
            let context = WebSocketExtensionContext(maxMessageSize: self.limits.maxMessageSize)
            for ext in extensions { prepared = try ext.processOutgoing(prepared, context: context) }
            self.sendingFragmentedMessage = !frame.fin
            return prepared
        }
    }

    /// The error for a send after the session closed.
    func closedError() -> WebSocketError {
        if let failure = self.failure {
            return WebSocketError(
                .sessionClosed, "the session has failed: \(failure.message)", closeCode: failure.closeCode,
                underlying: failure)
        }
        let reason = self.closeReason.map { " (\($0))" } ?? ""
        return WebSocketError(
            .sessionClosed, "the session is closed; nothing more can be sent\(reason)",
            closeCode: self.closeReason?.code)
    }

    /// The user closes with `reason` (`nil`: no status code). A code that may not be sent on the wire (1005, 1006,
    /// 1015) is dropped: a close frame without a code goes out instead. Closing again does nothing.
    mutating func close(_ reason: CloseReason?, _ sink: inout some SessionActionSink) {
        var reason = reason
        if let code = reason?.code, !code.isValidOnWire { reason = nil }
        if let failure = self.pendingFailure.take() {
            // The server broke the protocol after frames the user has now stopped reading: fail as RFC 6455 says.
            self.fail(failure, &sink)
            return
        }
        guard case .open = self.phase, !self.closeSent, self.failure == nil else { return }
        if !self.receivedClose { self.closeReason = reason ?? CloseReason(code: .noStatus) }
        self.endIncoming(error: nil)
        if self.readingPaused { self.setReadingPaused(false, &sink) }
        self.sendClose(reason, &sink)
        self.arm(.close, after: self.limits.closeTimeout, &sink)
        // What a full queue left unparsed may hold the server's close: look for it now (data is dropped).
        if self.inputLeftUnparsed {
            self.readFrames(UnsafeRawBufferPointer(start: nil, count: 0), at: self.unparsedInputReadAt?.instant, &sink)
        }
        self.deliver(&sink)
    }

    /// The session was released without closing: sends a going-away close and closes the transport.
    mutating func closeDetached(_ sink: inout some SessionActionSink) {
        guard case .open = self.phase, !self.closeSent, self.failure == nil else { return }
        self.sendClose(CloseReason(code: .goingAway, message: "session released"), &sink)
        sink.perform(.closeTransport)
    }
}

/// Thrown by ``SessionStateMachine/prepareSend(_:)`` for a new data message while a fragmented one is being sent: its
/// fragments may not be interleaved with another message (RFC 6455 section 5.4), so the sender waits for its end.
@usableFromInline
struct MessageInProgress: Error {
    @usableFromInline init() {}
}
