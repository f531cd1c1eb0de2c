/// A frame's opcode (RFC 6455 section 5.2): the low four bits of its first header byte.
///
/// An open set of values rather than an enum: every one of the 16 values a frame can carry is representable,
/// including the reserved ones (0x3–0x7 and 0xB–0xF), so the decoder can name what it refused. The six opcodes
/// RFC 6455 defines are static members, and a `switch` over them reads like one over an enum:
/// ```swift
/// switch frame.opcode {
/// case .ping: answer(frame)
/// case .close: finish(frame)
/// default: assemble(frame)
/// }
/// ```
/// The value is one byte, the opcode as it sits in the header, so carrying it costs nothing over a bare `UInt8`.
package struct Opcode: Sendable, Hashable {
    /// The opcode's value, 0x0–0xF, as it sits in the low four bits of a frame's first byte.
    package let rawValue: UInt8

    /// Creates an opcode from its value; `nil` above 0xF (an opcode has four bits).
    /// - Parameter rawValue: The opcode's value, 0x0–0xF.
    @inlinable
    package init?(rawValue: UInt8) {
        guard rawValue < 0x10 else { return nil }
        self.rawValue = rawValue
    }

    /// The opcode of a frame whose first header byte is `firstByte` (its low four bits; FIN and RSV1–3 are
    /// dropped).
    /// - Parameter firstByte: The first byte of a frame header.
    @inlinable
    package init(firstByte: UInt8) {
        self.rawValue = firstByte & 0x0F
    }

    /// Creates an opcode from a value known to be at most 0xF.
    @inlinable
    init(uncheckedRawValue: UInt8) {
        self.rawValue = uncheckedRawValue
    }

    /// 0x0: a continuation of a fragmented message.
    @inlinable package static var continuation: Opcode { Opcode(uncheckedRawValue: 0x0) }
    /// 0x1: a text message (UTF-8), or its first fragment.
    @inlinable package static var text: Opcode { Opcode(uncheckedRawValue: 0x1) }
    /// 0x2: a binary message, or its first fragment.
    @inlinable package static var binary: Opcode { Opcode(uncheckedRawValue: 0x2) }
    /// 0x8: a close frame.
    @inlinable package static var close: Opcode { Opcode(uncheckedRawValue: 0x8) }
    /// 0x9: a ping.
    @inlinable package static var ping: Opcode { Opcode(uncheckedRawValue: 0x9) }
    /// 0xA: a pong.
    @inlinable package static var pong: Opcode { Opcode(uncheckedRawValue: 0xA) }

    /// Whether this is a control opcode (0x8–0xF): close, ping, pong or a reserved control opcode. Control frames
    /// carry at most 125 bytes and are never fragmented.
    @inlinable
    package var isControl: Bool { self.rawValue & 0x08 != 0 }

    /// Whether RFC 6455 reserves this opcode for future use (0x3–0x7 and 0xB–0xF): a peer that sends one breaks
    /// the protocol.
    @inlinable
    package var isReserved: Bool {
        // The defined opcodes are 0x0–0x2 and 0x8–0xA: exactly those whose low three bits are at most 2.
        self.rawValue & 0x07 > 0x02
    }
}

extension Opcode: CustomStringConvertible {
    /// The opcode's name, as in `text` or `close`; a reserved opcode as `unknownNonControl(0x3)` or
    /// `unknownControl(0xB)`.
    package var description: String {
        switch self {
        case .continuation: "continuation"
        case .text: "text"
        case .binary: "binary"
        case .close: "close"
        case .ping: "ping"
        case .pong: "pong"
        default:
            (self.isControl ? "unknownControl" : "unknownNonControl")
                + "(0x\(String(self.rawValue, radix: 16, uppercase: true)))"
        }
    }
}

extension Opcode {
    /// The opcode of frames of the given kind.
    /// - Parameter kind: The frame's kind.
    @inlinable
    package init(_ kind: Frame.Kind) {
        switch kind {
        case .continuation: self = .continuation
        case .text: self = .text
        case .binary: self = .binary
        case .close: self = .close
        case .ping: self = .ping
        case .pong: self = .pong
        }
    }
}

extension Frame.Kind {
    /// The kind of frames with the given opcode; `nil` for a reserved opcode.
    /// - Parameter opcode: A frame's opcode.
    package init?(_ opcode: Opcode) {
        switch opcode {
        case .continuation: self = .continuation
        case .text: self = .text
        case .binary: self = .binary
        case .close: self = .close
        case .ping: self = .ping
        case .pong: self = .pong
        default: return nil
        }
    }
}
