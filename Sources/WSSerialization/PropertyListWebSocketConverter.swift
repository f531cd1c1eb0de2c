public import WSCore

#if canImport(FoundationEssentials)
public import FoundationEssentials
#else
public import Foundation
#endif

/// A content converter that sends values as binary property lists in binary frames, with Foundation's
/// `PropertyListEncoder` and `PropertyListDecoder`.
///
/// A compact binary alternative to ``JSONWebSocketConverter`` for peers that speak property lists (Apple
/// platforms), and proof that `WebSocketContentConverter` is not tied to JSON or to text:
/// ```swift
/// config.install(WebSockets.self) { $0.contentConverter = PropertyListWebSocketConverter() }
/// ```
///
/// Frames are always binary. By default the encoder writes the binary property-list format (`bplist00`); an
/// encoder set to `.xml` still sends its output in binary frames. Only binary frames are read
/// (``isApplicable(_:)`` is `false` for text frames).
///
/// Like the JSON converter it shares its `Sendable` encoder and decoder between calls, and throws
/// `WebSocketError`s with code `WebSocketError.Code.conversion` that name the type.
public struct PropertyListWebSocketConverter: WebSocketContentConverter {
    /// The encoder; its `outputFormat` is `.binary` unless you pass one set otherwise.
    public let encoder: PropertyListEncoder
    /// The decoder; it reads binary and XML property lists.
    public let decoder: PropertyListDecoder

    /// Creates a converter with the given encoder and decoder.
    ///
    /// The converter keeps these instances: do not change their options while the converter is in use.
    /// - Parameters:
    ///   - encoder: Encodes values; a new binary-format `PropertyListEncoder` when omitted.
    ///   - decoder: Decodes values; a new `PropertyListDecoder` when omitted.
    public init(encoder: PropertyListEncoder? = nil, decoder: PropertyListDecoder = PropertyListDecoder()) {
        if let encoder {
            self.encoder = encoder
        } else {
            let encoder = PropertyListEncoder()
            encoder.outputFormat = .binary
            self.encoder = encoder
        }
        self.decoder = decoder
    }

    /// Creates a converter with a fresh binary-format encoder and a decoder that `configure` sets up.
    /// - Parameter configure: Sets the options of the new encoder and decoder; called once, here.
    /// - Throws: What `configure` throws.
    public init(_ configure: (_ encoder: PropertyListEncoder, _ decoder: PropertyListDecoder) throws -> Void) rethrows {
        let encoder = PropertyListEncoder()
        encoder.outputFormat = .binary
        let decoder = PropertyListDecoder()
        try configure(encoder, decoder)
        self.init(encoder: encoder, decoder: decoder)
    }

    /// Encodes `value` as a property list into a binary frame (one copy from the encoder's `Data`).
    /// - Parameter value: The value to send.
    /// - Returns: A binary frame.
    /// - Throws: `WebSocketError` (`WebSocketError.Code.conversion`) naming `T` when the encoder
    ///   fails.
    public func serialize<T: Encodable>(_ value: T) throws(WebSocketError) -> Frame {
        let plist: Data
        do {
            plist = try self.encoder.encode(value)
        } catch {
            throw .encoding(T.self, as: "a property list", error)
        }
        return Frame(kind: .binary, data: PayloadBytes.array(from: plist))
    }

    /// Decodes a binary frame holding a property list into a `T`.
    /// - Parameters:
    ///   - type: The type to decode.
    ///   - frame: A binary frame.
    /// - Returns: The decoded value.
    /// - Throws: `WebSocketError` (`WebSocketError.Code.conversion`) naming `T` and carrying
    ///   `frame`, when the payload is not a property list or does not match `T`, or the frame is not binary.
    public func deserialize<T: Decodable>(_ type: T.Type, from frame: Frame) throws(WebSocketError) -> T {
        guard self.isApplicable(frame) else {
            throw .unreadable(T.self, converter: "PropertyListWebSocketConverter", reads: "binary frames", frame: frame)
        }
        do {
            return try self.decoder.decode(T.self, from: PayloadBytes.data(from: frame.data))
        } catch {
            throw .decoding(T.self, as: "property list", from: frame, error)
        }
    }

    /// Whether `frame` may hold a property list: `true` for binary frames only.
    /// - Parameter frame: A received frame.
    public func isApplicable(_ frame: Frame) -> Bool {
        frame.kind == .binary
    }
}
