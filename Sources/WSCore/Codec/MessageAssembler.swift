/// Reassembles data frames into whole messages and enforces the fragmentation rules of RFC 6455 section 5.4,
/// the message size limits, and (optionally) UTF-8 validity of text messages, failing fast.
///
/// Control frames never come here: the session handles them between fragments.
package struct MessageAssembler {
    /// The largest message, in bytes, summed over its fragments; more fails with 1009.
    package var maxMessageSize: Int
    /// The most fragments one message may have; more fails with 1009.
    package var maxFragments: Int

    private var kind: Frame.Kind?
    private var reservedBits: Frame.ReservedBits = []
    private var data: [UInt8] = []
    private var fragmentCount = 0
    private var validatesUTF8 = false
    private var validator = UTF8Validator()

    /// Creates an assembler with nothing in progress.
    /// - Parameters:
    ///   - maxMessageSize: The largest message in bytes.
    ///   - maxFragments: The most fragments per message.
    package init(maxMessageSize: Int, maxFragments: Int) {
        self.maxMessageSize = maxMessageSize
        self.maxFragments = maxFragments
    }

    /// Whether a fragmented message is in progress (its first frame had no FIN).
    package var isAssembling: Bool { self.kind != nil }

    /// Feeds a data frame (continuation, text or binary).
    ///
    /// Returns the complete message when this frame has FIN: a ``Frame`` of kind `.text` or `.binary` with `fin`
    /// set, the reserved bits of the message's first frame and the whole payload. An unfragmented frame's payload
    /// is moved into the message, not copied. A text message validated here is marked as such
    /// (``Frame/dataIsValidUTF8``), so reading it as a string does not validate it again.
    ///
    /// A continuation frame without a message in progress, or a text or binary frame while one is in progress,
    /// fails with 1002; a message over ``maxMessageSize`` bytes or ``maxFragments`` fragments fails with 1009.
    /// With `validateUTF8`, a text message is validated fragment by fragment as it arrives and fails with 1007 at
    /// the first fragment that cannot be completed into valid UTF-8, or at FIN if it ends mid-character. Pass
    /// `false` when an extension (permessage-deflate) transforms the message first. After an error the
    /// assembler is reset.
    /// - Parameters:
    ///   - frame: A data frame from the decoder (consumed: its payload moves into the message, with no retain).
    ///   - validateUTF8: Whether to validate a text message's UTF-8 here.
    /// - Returns: The complete message, or `nil` if more fragments are needed.
    /// - Throws: ``ProtocolViolation`` with the close code to send.
    package mutating func push(_ frame: consuming ParsedFrame, validateUTF8: Bool) throws(ProtocolViolation) -> Frame? {
        switch frame.opcode {
        case .continuation:
            guard let kind = self.kind else {
                throw self.fail(.protocolError, "continuation frame without a message to continue")
            }
            self.fragmentCount += 1
            if self.fragmentCount > self.maxFragments {
                throw self.fail(.messageTooBig, "message has more than \(self.maxFragments) fragments")
            }
            if frame.payload.count > self.maxMessageSize &- self.data.count {
                throw self.fail(
                    .messageTooBig,
                    "message of more than \(self.maxMessageSize) bytes (\(self.data.count + frame.payload.count) so far)"
                )
            }
            if self.validatesUTF8 {
                let valid = frame.payload.withUnsafeBytes { self.validator.feed($0) }
                if !valid { throw self.fail(.invalidPayload, "text message is not valid UTF-8") }
                if frame.fin && !self.validator.isAtCharacterBoundary {
                    throw self.fail(.invalidPayload, "text message ends in the middle of a UTF-8 character")
                }
            }
            self.data.append(contentsOf: frame.payload)
            guard frame.fin else { return nil }
            var message = Frame(kind: kind, fin: true, data: self.data, reservedBits: self.reservedBits)
            message.dataIsValidUTF8 = self.validatesUTF8
            self.reset()
            return message

        case .text, .binary:
            let kind: Frame.Kind = frame.opcode == .text ? .text : .binary
            if let current = self.kind {
                throw self.fail(
                    .protocolError,
                    "\(kind) frame while a fragmented \(current) message is in progress (expected a continuation frame)"
                )
            }
            if frame.payload.count > self.maxMessageSize {
                throw self.fail(
                    .messageTooBig,
                    "message of \(frame.payload.count) bytes exceeds the limit of \(self.maxMessageSize) bytes"
                )
            }
            let validate = validateUTF8 && kind == .text
            if frame.fin {
                if validate && !frame.payload.withUnsafeBytes({ UTF8Validator.validate($0) }) {
                    throw self.fail(.invalidPayload, "text message is not valid UTF-8")
                }
                var message = Frame(kind: kind, fin: true, data: frame.payload, reservedBits: frame.reservedBits)
                message.dataIsValidUTF8 = validate
                return message
            }
            if self.maxFragments < 1 {
                throw self.fail(.messageTooBig, "message has more than \(self.maxFragments) fragments")
            }
            if validate {
                self.validator.reset()
                if !frame.payload.withUnsafeBytes({ self.validator.feed($0) }) {
                    throw self.fail(.invalidPayload, "text message is not valid UTF-8")
                }
            }
            self.kind = kind
            self.reservedBits = frame.reservedBits
            self.validatesUTF8 = validate
            self.fragmentCount = 1
            self.data = frame.payload
            return nil

        default:
            throw self.fail(.protocolError, "opcode 0x\(String(frame.opcode.rawValue, radix: 16)) is not a data frame")
        }
    }

    /// A validator primed for the payload of a data frame that has only partly arrived, or `nil` when that
    /// payload is not validated (binary, or transformed by an extension first). For a continuation frame it
    /// carries the state after the earlier fragments.
    /// - Parameters:
    ///   - opcode: The partial frame's opcode.
    ///   - validateUTF8: Whether a text message starting with this frame would be validated.
    package func validatorForPartialFrame(opcode: Opcode, validateUTF8: Bool) -> UTF8Validator? {
        switch opcode {
        case .text where validateUTF8 && self.kind == nil: UTF8Validator()
        case .continuation where self.kind == .text && self.validatesUTF8: self.validator
        default: nil
        }
    }

    /// Abandons any message in progress.
    package mutating func reset() {
        self.kind = nil
        self.reservedBits = []
        self.data = []
        self.fragmentCount = 0
        self.validatesUTF8 = false
        self.validator.reset()
    }

    private mutating func fail(_ code: CloseReason.Code, _ message: String) -> ProtocolViolation {
        self.reset()
        return ProtocolViolation(code, message)
    }
}
