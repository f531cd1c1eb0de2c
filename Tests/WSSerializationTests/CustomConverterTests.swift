// The "writing your own converter" example of Docs/Serialization.md, kept compiling and working here.
import Foundation
import Testing
import WSCore
import WSSerialization

/// `{"type": "<Swift type name>", "data": <value>}`.
private struct Envelope<Payload> {
    var type: String
    var data: Payload
}

extension Envelope: Encodable where Payload: Encodable {}
extension Envelope: Decodable where Payload: Decodable {}

/// Wraps every value in an ``Envelope`` so the receiver can check what arrived.
struct EnvelopeConverter: WebSocketContentConverter {
    private let json = JSONWebSocketConverter()

    func serialize<T: Encodable>(_ value: T) throws -> Frame {
        try self.json.serialize(Envelope(type: "\(T.self)", data: value))
    }

    func deserialize<T: Decodable>(_ type: T.Type, from frame: Frame) throws -> T {
        let envelope = try self.json.deserialize(Envelope<T>.self, from: frame)
        guard envelope.type == "\(T.self)" else {
            throw WebSocketError(.conversion, "expected a \(T.self), got a \(envelope.type)", frame: frame)
        }
        return envelope.data
    }
    // isApplicable: the protocol's default (text and binary frames) fits.
}

@Suite("A converter written outside the module")
struct CustomConverterTests {
    @Test("the envelope converter from the docs round-trips and rejects the wrong type")
    func envelope() throws {
        let converter = EnvelopeConverter()
        let frame = try converter.serialize(ChatMessage.sample())
        #expect(try frame.readText().hasPrefix(#"{"#))
        #expect(try frame.readText().contains(#""type":"ChatMessage""#))
        #expect(try converter.deserialize(ChatMessage.self, from: frame) == .sample())
        #expect(converter.isApplicable(frame))
        #expect(!converter.isApplicable(.ping()))
        #expect(throws: WebSocketError.self) { try converter.deserialize(Order.self, from: frame) }
    }
}
