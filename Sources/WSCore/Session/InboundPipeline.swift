import DequeModule

/// The receiving half of a session's protocol: frame decoder, message assembler, UTF-8 checks (including the
/// fail-fast check of a text frame that has only partly arrived) and the negotiated extensions' `processIncoming`.
/// Turns received bytes into ``Event``s; holds no session policy (what to answer, what to queue). Pure: no I/O,
/// locks or clocks.
///
/// Use: ``beginInput(_:)``, then ``next(dropData:)`` until it returns `nil` (or the caller stops), then
/// ``finishInput(checkPartialFrame:)``; after a thrown error call ``abandonInput()``.
struct InboundPipeline {
    /// What the received bytes carried.
    enum Event {
        /// A ping with its payload.
        case ping([UInt8])
        /// A pong with its payload.
        case pong([UInt8])
        /// A valid close frame: its reason (`nil`: no status code) and its raw payload.
        case close(CloseReason?, payload: [UInt8])
        /// A whole text or binary message, after the extensions.
        case message(Frame)
    }

    private var decoder: FrameDecoder
    private var assembler: MessageAssembler
    /// Hands messages over fragment by fragment instead (``WebSockets/Configuration/streamsIncomingMessages``).
    var streamer: StreamingAssembler?
    /// Whether the message being streamed is transformed by an extension (its UTF-8 is checked after it).
    var streamedMessageIsTransformed = false
    let maxMessageSize: Int
    /// Whether the message being assembled is checked for UTF-8 as it arrives (not when an extension transforms it).
    private var messageValidatesUTF8 = true
    /// UTF-8 checking of a text frame that has only partly arrived.
    private var partialCheck: PartialCheck?
    /// The negotiated extensions, in negotiation order (applied in reverse on receive). The session's only copy:
    /// the sending side uses them too.
    private(set) var extensions: [any WebSocketExtension] = []
    /// Frames decoded so far, and the payload bytes of the data frames among them (as received: compressed).
    private(set) var framesDecoded = 0
    private(set) var dataPayloadBytesDecoded = 0
    /// Whether ``nextSmallMessage()`` may take messages: no streaming and no extension (see there).
    private var takesSmallMessages: Bool

    private enum PartialCheck {
        case validating(UTF8Validator, checked: Int)
        case skip
    }

    /// Creates the pipeline with the limits of `configuration`.
    /// - Parameter configuration: Frame, message and fragment limits.
    init(configuration: WebSockets.Configuration) {
        self.decoder = FrameDecoder(maxFrameSize: configuration.maxFrameSize, role: .client)
        self.assembler = MessageAssembler(
            maxMessageSize: configuration.maxMessageSize, maxFragments: configuration.maxFragments)
        self.maxMessageSize = configuration.maxMessageSize
        if configuration.streamsIncomingMessages {
            self.streamer = StreamingAssembler(maxMessageSize: configuration.maxStreamedMessageSize)
        }
        self.takesSmallMessages = !configuration.streamsIncomingMessages
    }

    /// Installs the negotiated extensions: their reserved bits become allowed on the first frame of a message.
    /// - Parameter extensions: The extensions, in negotiation order.
    mutating func install(_ extensions: [any WebSocketExtension]) {
        self.extensions = extensions
        self.takesSmallMessages = self.streamer == nil && extensions.isEmpty
        self.decoder.allowedReservedBits = extensions.reduce(into: []) { $0.formUnion($1.reservedBits) }
    }

    /// Starts parsing `bytes` in place; they must stay valid until ``finishInput(checkPartialFrame:)`` or
    /// ``abandonInput()``.
    /// - Parameter bytes: Bytes read from the connection.
    mutating func beginInput(_ bytes: UnsafeRawBufferPointer) {
        self.decoder.beginInput(bytes)
    }

    /// The next event in the input, or `nil` when more bytes are needed.
    /// - Parameter dropData: Our close was sent: complete messages are dropped here (not passed to the extensions).
    /// - Throws: ``ProtocolViolation``, ``WebSocketError`` or an extension's error: the session must fail.
    mutating func next(dropData: Bool) throws -> Event? {
        while let frame = try self.decoder.nextFrame() {
            self.partialCheck = nil
            self.framesDecoded &+= 1
            // Extensions claim reserved bits on the first frame of a data message only (RFC 7692 section 6.1):
            // on a control or continuation frame they are a protocol error even when an extension allows them.
            if !frame.reservedBits.isEmpty && (frame.opcode.isControl || frame.opcode == .continuation) {
                throw ProtocolViolation(
                    .protocolError,
                    "reserved bits set on a \(frame.opcode == .continuation ? "continuation" : "control") frame")
            }
            // Not `switch frame.opcode`: that would borrow `frame` across the `consume` below.
            let opcode = frame.opcode
            switch opcode {
            case .ping:
                return .ping(frame.payload)
            case .pong:
                return .pong(frame.payload)
            case .close:
                return .close(try Self.validateClosePayload(frame.payload), payload: frame.payload)
            default:  // data: continuation, text, binary
                self.dataPayloadBytesDecoded &+= frame.payload.count
                if self.streamer != nil {
                    guard let fragment = try self.nextStreamed(frame, dropData: dropData) else { continue }
                    return .message(fragment)
                }
                if opcode != .continuation {
                    self.messageValidatesUTF8 = self.extensions.isEmpty || frame.reservedBits.isEmpty
                }
                // `consume`: the payload moves into the message (no retain and release per message).
                guard var message = try self.assembler.push(consume frame, validateUTF8: self.messageValidatesUTF8)
                else {
                    continue
                }
                if dropData { continue }
                if !self.extensions.isEmpty {
                    let context = WebSocketExtensionContext(maxMessageSize: self.maxMessageSize)
                    for ext in self.extensions.reversed() {
                        message = try ext.processIncoming(message, context: context)
                    }
                    if message.kind == .text && !self.messageValidatesUTF8 {
                        guard message.data.withUnsafeBytes({ UTF8Validator.validate($0) }) else {
                            throw ProtocolViolation(.invalidPayload, "a text message is not valid UTF-8")
                        }
                        message.dataIsValidUTF8 = true  // readText() need not validate it again
                    }
                }
                return .message(message)
            }
        }
        return nil
    }

    /// The fast path of ``next(dropData:)`` for a stream of small messages: takes the frames that are each a whole
    /// text or binary message (final, unmasked, no reserved bits, within the frame and message size limits, complete
    /// in the input) while nothing else is in progress (no fragmented message being assembled, no streaming
    /// (``WebSockets/Configuration/streamsIncomingMessages``), no extension), and appends them to `queue` as
    /// messages, text validated as UTF-8, with the statistics ``next(dropData:)`` keeps; it stops at the first other
    /// frame (left for ``next(dropData:)``) or once the queue is full.
    /// - Parameters:
    ///   - queue: The session's incoming queue.
    ///   - queuedBytes: The payload bytes counted against the queue's byte limit; the messages' are added.
    ///   - counters: The received statistics; the messages are counted.
    ///   - maxCount: The queue is full at this many frames.
    ///   - maxBytes: The queue is full at this many `queuedBytes`.
    /// - Returns: Whether it stopped because the queue is full.
    /// - Throws: ``ProtocolViolation`` (1007) for a text message that is not valid UTF-8, as ``next(dropData:)``; the
    ///   messages before it stay queued.
    mutating func queueSmallMessages(
        into queue: inout Deque<Frame>, queuedBytes: inout Int, counters: inout ReceivedCounters, maxCount: Int,
        maxBytes: Int
    ) throws(ProtocolViolation) -> Bool {
        guard self.takesSmallMessages, !self.assembler.isAssembling else { return false }
        while let (isText, payload) = self.decoder.nextSmallDataFrame(maxPayload: self.maxMessageSize) {
            self.partialCheck = nil
            self.messageValidatesUTF8 = true
            let count = payload.count
            self.framesDecoded &+= 1
            self.dataPayloadBytesDecoded &+= count
            var message = Frame(kind: isText ? .text : .binary, fin: true, data: payload)
            if isText {
                guard message.data.withUnsafeBytes({ UTF8Validator.validate($0) }) else {
                    throw ProtocolViolation(.invalidPayload, "text message is not valid UTF-8")
                }
                message.dataIsValidUTF8 = true
            }
            counters.countWholeMessage(isText: isText, bytes: count)
            queuedBytes += count
            queue.append(message)
            if queue.count >= maxCount || queuedBytes >= maxBytes { return true }
        }
        return false
    }

    /// Ends the input: keeps the unparsed bytes and, if asked, checks the UTF-8 of a text frame that has only
    /// partly arrived, so invalid text fails as soon as it is seen (RFC 6455 section 8.1), not when it is complete.
    /// - Parameter checkPartialFrame: Whether to check the partial frame (not after a close frame).
    /// - Throws: ``ProtocolViolation`` for invalid UTF-8.
    mutating func finishInput(checkPartialFrame: Bool) throws(ProtocolViolation) {
        self.decoder.endInput()
        if checkPartialFrame { try self.checkPartialFrame() }
    }

    /// Ends the input after a failure.
    mutating func abandonInput() {
        self.decoder.endInput()
    }

    private mutating func checkPartialFrame() throws(ProtocolViolation) {
        guard let header = self.decoder.partialFrameHeader else { return }
        if self.partialCheck == nil, let streamer = self.streamer {
            let validates =
                header.opcode == .text
                ? (self.extensions.isEmpty || header.reservedBits.isEmpty) : !self.streamedMessageIsTransformed
            self.partialCheck =
                (validates ? streamer.validatorForPartialFrame(opcode: header.opcode) : nil)
                .map { .validating($0, checked: 0) } ?? .skip
        }
        if self.partialCheck == nil {
            let validates =
                header.opcode == .text
                ? (self.extensions.isEmpty || header.reservedBits.isEmpty) : self.messageValidatesUTF8
            self.partialCheck =
                self.assembler.validatorForPartialFrame(opcode: header.opcode, validateUTF8: validates)
                .map { .validating($0, checked: 0) } ?? .skip
        }
        guard case .validating(var validator, let checked) = self.partialCheck else { return }
        let fresh = self.decoder.partialPayload(from: checked)
        guard !fresh.isEmpty else { return }
        guard fresh.withUnsafeBytes({ validator.feed($0) }) else {
            throw ProtocolViolation(.invalidPayload, "text message is not valid UTF-8")
        }
        self.partialCheck = .validating(validator, checked: checked + fresh.count)
    }

    /// Checks a received close payload (RFC 6455 sections 5.5.1 and 7.4): empty, or a valid code and UTF-8.
    static func validateClosePayload(_ payload: [UInt8]) throws(ProtocolViolation) -> CloseReason? {
        if payload.isEmpty { return nil }
        guard payload.count >= 2 else {
            throw ProtocolViolation(.protocolError, "a close frame has a 1-byte payload; a status code needs 2 bytes")
        }
        let code = CloseReason.Code(UInt16(payload[0]) << 8 | UInt16(payload[1]))
        guard code.isValidOnWire else {
            throw ProtocolViolation(
                .protocolError, "the server sent close code \(code.rawValue), which may not be sent")
        }
        let message = payload[2...]
        guard
            let text = message.withUnsafeBytes({
                UTF8Validator.validate($0) ? String(decoding: $0, as: UTF8.self) : nil
            })
        else {
            throw ProtocolViolation(.invalidPayload, "the close reason is not valid UTF-8")
        }
        return CloseReason(code: code, message: text)
    }

    /// The session error for a failure thrown by ``next(dropData:)`` or ``finishInput(checkPartialFrame:)``.
    static func sessionError(for error: any Error) -> WebSocketError {
        if let violation = error as? ProtocolViolation {
            let code: WebSocketError.Code =
                switch violation.closeCode {
                case .invalidPayload: .invalidUTF8
                case .messageTooBig: .messageTooBig
                default: .protocolViolation
                }
            var message = violation.message
            if violation.closeCode == .messageTooBig {
                message +=
                    " (raise WebSockets.Configuration.maxFrameSize, maxMessageSize or maxFragments if this is expected)"
            }
            return WebSocketError(code, message, closeCode: violation.closeCode)
        }
        if let error = error as? WebSocketError { return error }
        return WebSocketError(
            .extensionFailure, "an extension failed: \(error)", closeCode: .protocolError, underlying: error)
    }
}
