/// Why a WebSocket connection closed: a status code and a UTF-8 message (RFC 6455 section 7.4).
///
/// ```swift
/// try await session.close(CloseReason(code: .normal, message: "Client disconnecting"))
/// if let reason = await session.closeReason, reason.code == .goingAway { ... }
/// ```
public struct CloseReason: Sendable, Hashable, CustomStringConvertible {
    /// A close status code. The named codes are those of RFC 6455 (Ktor's `CloseReason.Codes`); any other
    /// value in 1000–4999 can be expressed with ``init(rawValue:)``.
    public struct Code: RawRepresentable, Sendable, Hashable, CustomStringConvertible {
        /// The numeric code on the wire.
        public let rawValue: UInt16
        /// Creates a code from its number.
        /// - Parameter rawValue: The status code, e.g. 1000 or an application code in 4000–4999.
        public init(rawValue: UInt16) { self.rawValue = rawValue }
        /// Creates a code from its number.
        /// - Parameter rawValue: The status code.
        public init(_ rawValue: UInt16) { self.rawValue = rawValue }

        /// 1000: the purpose of the connection was fulfilled.
        public static let normal = Code(1000)
        /// 1001: the endpoint is going away (server shutdown, page navigation).
        public static let goingAway = Code(1001)
        /// 1002: the endpoint saw a protocol error.
        public static let protocolError = Code(1002)
        /// 1003: the endpoint received a kind of data it cannot accept.
        public static let unsupportedData = Code(1003)
        /// 1005: no status code was present. Reserved: never sent on the wire.
        public static let noStatus = Code(1005)
        /// 1006: the connection closed without a close frame. Reserved: never sent on the wire.
        public static let abnormalClosure = Code(1006)
        /// 1007: a message's data was inconsistent with its type (e.g. a text message that is not UTF-8).
        public static let invalidPayload = Code(1007)
        /// 1008: a message violated the endpoint's policy.
        public static let policyViolation = Code(1008)
        /// 1009: a message was too big to process.
        public static let messageTooBig = Code(1009)
        /// 1010: the client expected the server to negotiate an extension it did not.
        public static let mandatoryExtension = Code(1010)
        /// 1011: the server hit an unexpected condition.
        public static let internalError = Code(1011)
        /// 1012: the server is restarting.
        public static let serviceRestart = Code(1012)
        /// 1013: try again later.
        public static let tryAgainLater = Code(1013)
        /// 1015: the TLS handshake failed. Reserved: never sent on the wire.
        public static let tlsHandshakeFailed = Code(1015)

        /// The name of a known code, such as `NORMAL`, or `nil` for other codes.
        public var knownName: String? {
            switch self.rawValue {
            case 1000: "NORMAL"
            case 1001: "GOING_AWAY"
            case 1002: "PROTOCOL_ERROR"
            case 1003: "UNSUPPORTED_DATA"
            case 1005: "NO_STATUS"
            case 1006: "ABNORMAL_CLOSURE"
            case 1007: "INVALID_PAYLOAD"
            case 1008: "POLICY_VIOLATION"
            case 1009: "MESSAGE_TOO_BIG"
            case 1010: "MANDATORY_EXTENSION"
            case 1011: "INTERNAL_ERROR"
            case 1012: "SERVICE_RESTART"
            case 1013: "TRY_AGAIN_LATER"
            case 1015: "TLS_HANDSHAKE_FAILED"
            default: nil
            }
        }

        /// Whether a peer may send this code in a close frame (RFC 6455 section 7.4): the defined codes other than
        /// 1005, 1006 and 1015, and the registered and private ranges 3000–4999.
        public var isValidOnWire: Bool {
            switch self.rawValue {
            case 1000...1003, 1007...1014: true
            case 3000...4999: true
            default: false
            }
        }

        /// The code and its name, as in `1000 NORMAL`.
        public var description: String {
            if let name = self.knownName { return "\(self.rawValue) \(name)" }
            return "\(self.rawValue)"
        }
    }

    /// The most bytes of UTF-8 a close message can have: a control frame carries 125 bytes, two are the code.
    public static let maxMessageBytes = 123

    /// The status code.
    public var code: Code
    /// The message; at most ``maxMessageBytes`` bytes of UTF-8 on the wire (longer messages are truncated at a
    /// character boundary when sent).
    public var message: String

    /// Creates a close reason.
    /// - Parameters:
    ///   - code: The status code, ``Code/normal`` by default.
    ///   - message: A human-readable reason; truncated to 123 UTF-8 bytes on the wire.
    public init(code: Code = .normal, message: String = "") {
        self.code = code
        self.message = message
    }

    /// Creates a close reason from a raw code, as Ktor's `CloseReason(code: Short, message)`.
    /// - Parameters:
    ///   - code: The numeric status code.
    ///   - message: A human-readable reason.
    public init(code: UInt16, message: String = "") {
        self.init(code: Code(code), message: message)
    }

    /// The code and message, as in `1000 NORMAL: bye`.
    public var description: String {
        self.message.isEmpty ? self.code.description : "\(self.code): \(self.message)"
    }

    /// The close frame payload: the code in network byte order followed by the message, truncated at a
    /// character boundary to fit 125 bytes.
    package func encoded() -> [UInt8] {
        var bytes: [UInt8] = [UInt8(self.code.rawValue >> 8), UInt8(self.code.rawValue & 0xFF)]
        var budget = Self.maxMessageBytes
        for scalar in self.message.unicodeScalars {
            let utf8 = Array(String(scalar).utf8)
            if utf8.count > budget { break }
            budget -= utf8.count
            bytes.append(contentsOf: utf8)
        }
        return bytes
    }

    /// Decodes a close payload leniently (for ``Frame/readReason()``): `nil` when it has no code; an invalid
    /// UTF-8 message is repaired. Strict validation happens in the session.
    package init?(decoding payload: [UInt8]) {
        guard payload.count >= 2 else { return nil }
        let code = UInt16(payload[0]) << 8 | UInt16(payload[1])
        self.init(code: Code(code), message: String(decoding: payload[2...], as: UTF8.self))
    }
}
