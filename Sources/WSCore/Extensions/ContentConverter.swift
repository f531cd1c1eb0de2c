/// Converts values to and from frames for ``WebSocketSession/sendSerialized(_:)`` and
/// ``WebSocketSession/receiveDeserialized(_:)``. Ktor's `WebsocketContentConverter`; the JSON converter is in
/// WSSerialization.
public protocol WebSocketContentConverter: Sendable {
    /// Serializes a value into a frame (text or binary).
    /// - Parameter value: The value to send.
    /// - Returns: The frame to send.
    func serialize<T: Encodable>(_ value: T) throws -> Frame
    /// Deserializes a frame into a value.
    /// - Parameters:
    ///   - type: The type to decode.
    ///   - frame: A text or binary frame.
    /// - Returns: The decoded value.
    func deserialize<T: Decodable>(_ type: T.Type, from frame: Frame) throws -> T
    /// Whether this converter can read `frame` (e.g. a JSON converter reads text and binary frames).
    /// - Parameter frame: A received frame.
    func isApplicable(_ frame: Frame) -> Bool
}

extension WebSocketContentConverter {
    /// Default: text and binary frames are applicable.
    public func isApplicable(_ frame: Frame) -> Bool { frame.kind == .text || frame.kind == .binary }
}
