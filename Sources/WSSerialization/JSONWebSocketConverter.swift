public import WSCore

#if canImport(FoundationEssentials)
public import FoundationEssentials
#else
public import Foundation
#endif

/// A content converter that sends values as JSON, with Foundation's `JSONEncoder` and `JSONDecoder`. What
/// `KotlinxWebsocketSerializationConverter(Json)` is in Ktor.
///
/// Install it in the `WebSockets` plugin, then send and receive `Codable` values:
/// ```swift
/// let client = WebSocketClient(engine: CIOEngine()) { config in
///     config.install(WebSockets.self) { $0.contentConverter = JSONWebSocketConverter() }
/// }
/// try await client.webSocket("wss://chat.example.com/ws") { session in
///     try await session.sendSerialized(ChatMessage(user: "alice", message: "Hi", timestamp: .now))
///     let reply: ChatMessage = try await session.receiveDeserialized()
/// }
/// ```
///
/// Values go out as text frames by default (``FrameKind/text``), or as binary frames holding the same UTF-8 JSON
/// (``FrameKind/binary``). Both kinds are read back whatever ``frameKind`` says.
///
/// Configure the encoder and decoder (date, data, key and float strategies, output formatting, `userInfo`) in
/// the configuration block, or pass your own instances:
/// ```swift
/// let converter = JSONWebSocketConverter { encoder, decoder in
///     encoder.dateEncodingStrategy = .iso8601
///     decoder.dateDecodingStrategy = .iso8601
///     encoder.keyEncodingStrategy = .convertToSnakeCase
///     decoder.keyDecodingStrategy = .convertFromSnakeCase
/// }
/// ```
///
/// The converter shares one encoder and one decoder between all sessions and tasks. That is safe: Foundation's
/// `JSONEncoder` and `JSONDecoder` are `Sendable` (they guard their options with a lock and keep no state
/// between calls), and sharing them measured faster than making an encoder per call or serializing calls
/// behind a mutex (Docs/Serialization.md). Changing the encoder's options after installing the converter is
/// thread-safe but affects messages already being sent; configure them before.
///
/// Errors are `WebSocketError`s with code `WebSocketError.Code.conversion` that name the type,
/// say where in the value the problem is (e.g. `missing key "user" at messages[2]`) and, when decoding, carry
/// the frame.
public struct JSONWebSocketConverter: WebSocketContentConverter {
    /// The kind of frame ``JSONWebSocketConverter/serialize(_:)`` produces.
    public enum FrameKind: Sendable, Hashable, CustomStringConvertible {
        /// Text frames (opcode 0x1), the default: JSON is UTF-8 text, and text is what browsers and most servers
        /// expect for JSON.
        case text
        /// Binary frames (opcode 0x2) carrying the same UTF-8 JSON bytes, for servers that want binary messages.
        case binary

        /// `text` or `binary`.
        public var description: String {
            switch self {
            case .text: "text"
            case .binary: "binary"
            }
        }

        /// The frame kind in WSCore's terms.
        var frameKind: Frame.Kind {
            switch self {
            case .text: .text
            case .binary: .binary
            }
        }
    }

    /// The encoder that turns values into JSON. Shared by all calls; see the type's discussion.
    public let encoder: JSONEncoder
    /// The decoder that reads JSON into values. Shared by all calls; see the type's discussion.
    public let decoder: JSONDecoder
    /// The kind of frame ``serialize(_:)`` produces: ``FrameKind/text`` unless set otherwise.
    public let frameKind: FrameKind

    /// Creates a converter with the given encoder and decoder.
    ///
    /// The converter keeps these instances (they are classes): do not change their options while the converter
    /// is in use, unless every message may see the change.
    /// - Parameters:
    ///   - encoder: Encodes values; a default `JSONEncoder()` when omitted.
    ///   - decoder: Decodes values; a default `JSONDecoder()` when omitted.
    ///   - frameKind: Whether to send text (the default) or binary frames.
    public init(
        encoder: JSONEncoder = JSONEncoder(),
        decoder: JSONDecoder = JSONDecoder(),
        frameKind: FrameKind = .text
    ) {
        self.encoder = encoder
        self.decoder = decoder
        self.frameKind = frameKind
    }

    /// Creates a converter with a fresh encoder and decoder that `configure` sets up, e.g. their date and key
    /// strategies or `outputFormatting`.
    /// - Parameters:
    ///   - frameKind: Whether to send text (the default) or binary frames.
    ///   - configure: Sets the options of the new encoder and decoder; called once, here.
    /// - Throws: What `configure` throws.
    public init(
        frameKind: FrameKind = .text,
        _ configure: (_ encoder: JSONEncoder, _ decoder: JSONDecoder) throws -> Void
    ) rethrows {
        let encoder = JSONEncoder()
        let decoder = JSONDecoder()
        try configure(encoder, decoder)
        self.init(encoder: encoder, decoder: decoder, frameKind: frameKind)
    }

    /// Encodes `value` as JSON into a ``frameKind`` frame. The JSON bytes are copied once, from the encoder's
    /// `Data` into the frame's payload.
    /// - Parameter value: The value to send.
    /// - Returns: A text or binary frame holding UTF-8 JSON.
    /// - Throws: `WebSocketError` (`WebSocketError.Code.conversion`) naming `T` when the encoder
    ///   fails, e.g. on a `Double.nan` with the default float strategy.
    public func serialize<T: Encodable>(_ value: T) throws(WebSocketError) -> Frame {
        let json: Data
        do {
            json = try self.encoder.encode(value)
        } catch {
            throw .encoding(T.self, as: "JSON", error)
        }
        return Frame(kind: self.frameKind.frameKind, data: PayloadBytes.array(from: json))
    }

    /// Decodes a text or binary frame holding UTF-8 JSON into a `T`.
    /// - Parameters:
    ///   - type: The type to decode.
    ///   - frame: A text or binary frame.
    /// - Returns: The decoded value.
    /// - Throws: `WebSocketError` (`WebSocketError.Code.conversion`) naming `T` and carrying
    ///   `frame`, when the payload is not JSON or does not match `T`, or when the frame is not text or binary.
    public func deserialize<T: Decodable>(_ type: T.Type, from frame: Frame) throws(WebSocketError) -> T {
        guard self.isApplicable(frame) else {
            throw .unreadable(
                T.self, converter: "JSONWebSocketConverter", reads: "text and binary frames", frame: frame)
        }
        do {
            return try self.decoder.decode(T.self, from: PayloadBytes.data(from: frame.data))
        } catch {
            throw .decoding(T.self, as: "JSON", from: frame, error)
        }
    }

    /// Whether `frame` may hold JSON: `true` for text and binary frames, `false` for ping, pong, close and
    /// continuation frames.
    /// - Parameter frame: A received frame.
    public func isApplicable(_ frame: Frame) -> Bool {
        frame.kind == .text || frame.kind == .binary
    }
}
