/// One WebSocket frame as the user sees it: a text, binary, ping, pong or close frame with its FIN flag, its
/// reserved bits and its payload.
///
/// Frames that arrive in ``WebSocketSession/incoming`` are whole messages: fragmented messages are reassembled
/// before delivery, so `fin` is `true` there (unless ``WebSockets/Configuration/streamsIncomingMessages`` is set:
/// then the fragments arrive as they are, a text or binary frame followed by continuation frames). Frames you send may have `fin == false` to start a fragmented
/// message; continue it with ``Frame/continuation(_:fin:)``.
///
/// Match on the kind:
/// ```swift
/// switch frame.kind {
/// case .text: print(try frame.readText())
/// case .binary: print(frame.readBytes().count)
/// case .close: print(frame.readReason() ?? "no reason")
/// default: break
/// }
/// ```
public struct Frame: Sendable, Hashable {
    /// What a frame carries; the opcode of RFC 6455 section 5.2.
    public enum Kind: Sendable, Hashable, CustomStringConvertible {
        /// A text message (opcode 0x1), UTF-8.
        case text
        /// A binary message (opcode 0x2).
        case binary
        /// A ping (opcode 0x9); the session answers it with a pong automatically.
        case ping
        /// A pong (opcode 0xA).
        case pong
        /// A close frame (opcode 0x8), with an optional ``CloseReason`` in its payload.
        case close
        /// A continuation of a fragmented message (opcode 0x0). For sending fragments by hand; the session
        /// delivers continuation frames only when it streams incoming messages
        /// (``WebSockets/Configuration/streamsIncomingMessages``).
        case continuation

        /// The opcode on the wire.
        public var opcode: UInt8 { Opcode(self).rawValue }

        /// Creates a kind from a wire opcode; `nil` for the reserved opcodes 0x3–0x7 and 0xB–0xF.
        /// - Parameter opcode: The low four bits of a frame's first byte.
        public init?(opcode: UInt8) {
            guard let kind = Opcode(rawValue: opcode).flatMap(Frame.Kind.init) else { return nil }
            self = kind
        }

        /// Whether this is a control frame (close, ping, pong): at most 125 bytes and never fragmented.
        public var isControl: Bool { Opcode(self).isControl }

        /// The kind's name, as in `text` or `close`.
        public var description: String {
            switch self {
            case .text: "text"
            case .binary: "binary"
            case .ping: "ping"
            case .pong: "pong"
            case .close: "close"
            case .continuation: "continuation"
            }
        }
    }

    /// The three reserved bits of a frame header (RSV1, RSV2, RSV3). They must be zero unless a negotiated
    /// extension claims them; permessage-deflate claims ``rsv1``.
    public struct ReservedBits: OptionSet, Sendable, Hashable {
        /// The raw bits, in the positions they have in the first header byte (0x40, 0x20, 0x10).
        public let rawValue: UInt8
        /// Creates reserved bits from their header-byte positions; other bits are dropped.
        /// - Parameter rawValue: Bits in the positions 0x40 (RSV1), 0x20 (RSV2), 0x10 (RSV3).
        public init(rawValue: UInt8) { self.rawValue = rawValue & 0x70 }
        /// RSV1 (0x40): "compressed" for permessage-deflate.
        public static let rsv1 = ReservedBits(rawValue: 0x40)
        /// RSV2 (0x20).
        public static let rsv2 = ReservedBits(rawValue: 0x20)
        /// RSV3 (0x10).
        public static let rsv3 = ReservedBits(rawValue: 0x10)
        /// All three bits.
        public static let all: ReservedBits = [.rsv1, .rsv2, .rsv3]
    }

    /// The frame's kind.
    public var kind: Kind
    /// Whether this is the final fragment of its message.
    public var fin: Bool
    /// The reserved bits; set by extensions, zero otherwise.
    public var reservedBits: ReservedBits
    /// Whether ``data`` is known to be valid UTF-8: set by the session on the text messages it validated, so that
    /// ``readText()`` does not validate them again. Any change to ``data`` clears it. Not part of equality.
    /// (Declared before `data` so that it fits in the padding after the one-byte fields: a frame stays 16 bytes.)
    package var dataIsValidUTF8 = false
    /// The payload, unmasked.
    public var data: [UInt8] {
        didSet { self.dataIsValidUTF8 = false }
    }

    /// Creates a frame.
    /// - Parameters:
    ///   - kind: Text, binary, ping, pong, close or continuation.
    ///   - fin: Whether this is the final fragment of its message (always `true` for control frames).
    ///   - data: The payload.
    ///   - reservedBits: RSV1–3; leave empty unless you implement an extension.
    public init(kind: Kind, fin: Bool = true, data: [UInt8], reservedBits: ReservedBits = []) {
        self.kind = kind
        self.fin = fin
        self.data = data
        self.reservedBits = reservedBits
    }

    /// Whether RSV1 is set.
    public var rsv1: Bool { self.reservedBits.contains(.rsv1) }
    /// Whether RSV2 is set.
    public var rsv2: Bool { self.reservedBits.contains(.rsv2) }
    /// Whether RSV3 is set.
    public var rsv3: Bool { self.reservedBits.contains(.rsv3) }

    // MARK: Factories, named as Ktor's (Frame.Text, Frame.Binary, ...)

    // Inlinable, so that the copy into the frame's array is specialized for the caller's sequence (for an array: a
    // retain) instead of going through the generic `Array.init` and its value witnesses on every send.

    /// A text frame carrying `text` as UTF-8.
    /// - Parameters:
    ///   - text: The message.
    ///   - fin: `false` to start a fragmented message.
    @inlinable
    public static func text(_ text: String, fin: Bool = true) -> Frame {
        Frame(kind: .text, fin: fin, data: Array(text.utf8))
    }

    /// A binary frame.
    /// - Parameters:
    ///   - bytes: The payload.
    ///   - fin: `false` to start a fragmented message.
    @inlinable
    public static func binary(_ bytes: some Sequence<UInt8>, fin: Bool = true) -> Frame {
        Frame(kind: .binary, fin: fin, data: Array(bytes))
    }

    /// A continuation frame of a fragmented message you are sending by hand.
    /// - Parameters:
    ///   - bytes: This fragment's payload.
    ///   - fin: `true` on the last fragment.
    @inlinable
    public static func continuation(_ bytes: some Sequence<UInt8>, fin: Bool) -> Frame {
        Frame(kind: .continuation, fin: fin, data: Array(bytes))
    }

    /// A ping frame; at most 125 bytes of payload.
    /// - Parameter bytes: Application data the pong will echo.
    @inlinable
    public static func ping(_ bytes: some Sequence<UInt8> = []) -> Frame {
        Frame(kind: .ping, data: Array(bytes))
    }

    /// A pong frame; at most 125 bytes of payload.
    /// - Parameter bytes: The data of the ping it answers, or anything for an unsolicited pong.
    @inlinable
    public static func pong(_ bytes: some Sequence<UInt8> = []) -> Frame {
        Frame(kind: .pong, data: Array(bytes))
    }

    /// A close frame carrying `reason` (code and UTF-8 message), or an empty close frame for `nil`.
    /// - Parameter reason: The close code and message; `nil` sends a close frame without a status code.
    public static func close(_ reason: CloseReason? = CloseReason(code: .normal)) -> Frame {
        Frame(kind: .close, data: reason?.encoded() ?? [])
    }

    // MARK: Reading, as in Ktor (readText, readBytes, readReason)

    /// The payload decoded as UTF-8.
    ///
    /// A text message delivered by a session was validated as it arrived; this returns it without validating
    /// it again.
    /// - Throws: ``WebSocketError`` with code ``WebSocketError/Code/invalidUTF8`` if the payload is not UTF-8.
    public func readText() throws(WebSocketError) -> String {
        if self.dataIsValidUTF8, #available(macOS 26.0, iOS 26.0, watchOS 26.0, tvOS 26.0, visionOS 26.0, *) {
            return Self.string(fromValidUTF8: self.data)
        }
        guard let text = String(validating: self.data, as: UTF8.self) else {
            throw WebSocketError(.invalidUTF8, "the frame's payload is not valid UTF-8")
        }
        return text
    }

    /// A string with the bytes of `utf8`, which the caller knows to be valid UTF-8: one copy, no validation.
    ///
    /// Only an ASCII scan, which stops at the first non-ASCII byte: a string not marked ASCII would be slow to
    /// measure and index in UTF-16 (as Foundation does) for as long as it lives.
    @available(macOS 26.0, iOS 26.0, watchOS 26.0, tvOS 26.0, visionOS 26.0, *)
    private static func string(fromValidUTF8 utf8: [UInt8]) -> String {
        var span = UTF8Span(unchecked: utf8.span)
        _ = span.checkForASCII()
        return String(copying: span)
    }

    /// The payload bytes.
    public func readBytes() -> [UInt8] { self.data }

    /// The close reason in a close frame's payload: `nil` for other kinds or an empty payload.
    public func readReason() -> CloseReason? {
        guard self.kind == .close else { return nil }
        return CloseReason(decoding: self.data)
    }
}

extension Frame {
    /// Whether two frames have the same kind, FIN flag, reserved bits and payload.
    public static func == (lhs: Frame, rhs: Frame) -> Bool {
        lhs.kind == rhs.kind && lhs.fin == rhs.fin && lhs.reservedBits == rhs.reservedBits && lhs.data == rhs.data
    }

    /// Hashes the kind, FIN flag, reserved bits and payload.
    public func hash(into hasher: inout Hasher) {
        hasher.combine(self.kind)
        hasher.combine(self.fin)
        hasher.combine(self.reservedBits)
        hasher.combine(self.data)
    }
}

extension Frame: CustomStringConvertible {
    /// A short description such as `text(fin, 12 bytes)`.
    public var description: String {
        var flags = self.fin ? "fin" : "nofin"
        if self.rsv1 { flags += ",rsv1" }
        if self.rsv2 { flags += ",rsv2" }
        if self.rsv3 { flags += ",rsv3" }
        return "\(self.kind)(\(flags), \(self.data.count) bytes)"
    }
}
