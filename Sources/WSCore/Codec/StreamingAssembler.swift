/// Hands a message over fragment by fragment instead of reassembling it: the streaming counterpart of
/// ``MessageAssembler``, with the same fragmentation rules (RFC 6455 section 5.4) and the same close codes, but
/// without holding the message.
///
/// A frame goes through in two steps, so an extension can transform the payload between them:
/// ``begin(_:)`` checks the frame against the message in progress (a continuation without a message, or a new
/// message while one is in progress, fails with 1002) and says whether it starts a message; ``chunk(_:fin:)``
/// counts the (transformed) payload against the streamed-message limit (1009) and, for text, validates the UTF-8
/// (1007, failing at the first byte that cannot be completed, or at the end if the message ends mid-character) and
/// cuts the chunk at the last character boundary: the bytes of a character that is not complete yet are carried
/// over to the next chunk, so every chunk handed over is valid UTF-8 on its own.
///
/// Pure: no I/O, locks or clocks. After an error the assembler is reset.
package struct StreamingAssembler {
    /// The largest streamed message in bytes (after extensions), or `nil` for no limit; more fails with 1009.
    package var maxMessageSize: Int?

    /// The kind of the message in progress (`nil` between messages).
    private(set) package var kind: Frame.Kind?
    /// Whether the message's text is validated here (not when it is binary).
    private var validatesUTF8 = false
    private var validator = UTF8Validator()
    /// The bytes of a character cut at the end of the last chunk, handed over with the next one (at most 3).
    private var carry: [UInt8] = []
    /// Bytes of the message counted so far.
    private(set) package var byteCount = 0

    /// Creates an assembler with nothing in progress.
    /// - Parameter maxMessageSize: The largest streamed message, or `nil` for no limit.
    package init(maxMessageSize: Int?) {
        self.maxMessageSize = maxMessageSize
    }

    /// Whether a message is in progress (its first frame arrived, its last has not).
    package var isStreaming: Bool { self.kind != nil }

    /// Checks a data frame's opcode against the message in progress.
    /// - Parameter opcode: The frame's opcode: continuation, text or binary.
    /// - Returns: The message's kind and whether this frame starts it.
    /// - Throws: ``ProtocolViolation`` 1002 for a continuation without a message, or a text or binary frame while
    ///   a message is in progress; the same messages as ``MessageAssembler``.
    package mutating func begin(_ opcode: Opcode) throws(ProtocolViolation) -> (kind: Frame.Kind, isFirst: Bool) {
        switch opcode {
        case .continuation:
            guard let kind = self.kind else {
                throw self.fail(.protocolError, "continuation frame without a message to continue")
            }
            return (kind, false)
        case .text, .binary:
            let kind: Frame.Kind = opcode == .text ? .text : .binary
            if let current = self.kind {
                throw self.fail(
                    .protocolError,
                    "\(kind) frame while a fragmented \(current) message is in progress (expected a continuation frame)"
                )
            }
            self.kind = kind
            self.validatesUTF8 = kind == .text
            self.validator.reset()
            self.carry = []
            self.byteCount = 0
            return (kind, true)
        default:
            throw self.fail(.protocolError, "opcode 0x\(String(opcode.rawValue, radix: 16)) is not a data frame")
        }
    }

    /// Counts and checks the payload of the frame ``begin(_:)`` accepted, and returns the chunk to hand over.
    ///
    /// Binary payloads come back as they are. Text comes back cut at the last complete character (the rest is
    /// carried to the next chunk), so it may be shorter or, with a carried character in front, longer than
    /// `payload`; it may be empty. With `fin` the message ends and the assembler is ready for the next one.
    /// - Parameters:
    ///   - payload: The frame's payload, after any extension transformed it.
    ///   - fin: Whether the frame ends the message.
    /// - Returns: The bytes to hand over.
    /// - Throws: ``ProtocolViolation``: 1009 beyond ``maxMessageSize``, 1007 for invalid UTF-8.
    package mutating func chunk(_ payload: [UInt8], fin: Bool) throws(ProtocolViolation) -> [UInt8] {
        if let limit = self.maxMessageSize, payload.count > limit &- self.byteCount {
            throw self.fail(
                .messageTooBig,
                "streamed message of more than \(limit) bytes (\(self.byteCount + payload.count) so far)")
        }
        self.byteCount += payload.count
        guard self.validatesUTF8 else {
            if fin { self.reset() }
            return payload
        }
        guard payload.withUnsafeBytes({ self.validator.feed($0) }) else {
            throw self.fail(.invalidPayload, "text message is not valid UTF-8")
        }
        if fin {
            guard self.validator.isAtCharacterBoundary else {
                throw self.fail(.invalidPayload, "text message ends in the middle of a UTF-8 character")
            }
            let out = self.carry.isEmpty ? payload : self.carry + payload
            self.reset()
            return out
        }
        var out = self.carry.isEmpty ? payload : self.carry + payload
        self.carry = []
        if !self.validator.isAtCharacterBoundary && !out.isEmpty {
            // Everything before is valid, so the unfinished character starts at the last lead byte (at most 3 back).
            let cut = Self.lastCharacterStart(out)
            self.carry = Array(out[cut...])
            out.removeSubrange(cut...)
        }
        return out
    }

    /// A validator primed for the payload of a data frame that has only partly arrived (to fail invalid text
    /// before the frame is complete), or `nil` when that payload is not validated here.
    /// - Parameter opcode: The partial frame's opcode.
    package func validatorForPartialFrame(opcode: Opcode) -> UTF8Validator? {
        switch opcode {
        case .text where self.kind == nil: UTF8Validator()
        case .continuation where self.kind == .text && self.validatesUTF8: self.validator
        default: nil
        }
    }

    /// Abandons any message in progress.
    package mutating func reset() {
        self.kind = nil
        self.validatesUTF8 = false
        self.validator.reset()
        self.carry = []
        self.byteCount = 0
    }

    /// The index of the last UTF-8 lead byte (or ASCII byte) in `bytes`: where a character cut off at the end
    /// begins. `bytes` ends mid-character, so that byte is within its last 4.
    static func lastCharacterStart(_ bytes: [UInt8]) -> Int {
        var index = bytes.count - 1
        while index > 0 && index > bytes.count - 4 && bytes[index] & 0xC0 == 0x80 { index -= 1 }
        return index
    }

    private mutating func fail(_ code: CloseReason.Code, _ message: String) -> ProtocolViolation {
        self.reset()
        return ProtocolViolation(code, message)
    }
}
