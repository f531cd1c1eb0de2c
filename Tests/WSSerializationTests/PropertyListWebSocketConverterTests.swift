import Foundation
import Testing
import WSCore
import WSSerialization

@Suite("PropertyListWebSocketConverter")
struct PropertyListWebSocketConverterTests {
    @Test("values go out as binary frames of binary property lists and come back")
    func roundTrip() throws {
        let converter = PropertyListWebSocketConverter()
        #expect(converter.encoder.outputFormat == .binary)
        let frame = try converter.serialize(Room.sample)
        #expect(frame.kind == .binary)
        #expect(frame.data.starts(with: Array("bplist00".utf8)))
        #expect(try converter.deserialize(Room.self, from: frame) == Room.sample)
        let message = ChatMessage(
            user: "日本 🎉", message: "e\u{301}", timestamp: Date(timeIntervalSinceReferenceDate: 0.125))
        #expect(try converter.deserialize(ChatMessage.self, from: converter.serialize(message)) == message)
        let numbers = Array(0..<50_000)
        #expect(try converter.deserialize([Int].self, from: converter.serialize(numbers)) == numbers)
    }

    @Test("an XML encoder still sends binary frames, and the decoder reads both formats")
    func xmlFormat() throws {
        let xml = PropertyListWebSocketConverter { encoder, _ in encoder.outputFormat = .xml }
        let frame = try xml.serialize(ChatMessage.sample())
        #expect(frame.kind == .binary)
        #expect(try frame.readText().contains("<plist"))
        #expect(try PropertyListWebSocketConverter().deserialize(ChatMessage.self, from: frame) == .sample())
        let custom = PropertyListWebSocketConverter(encoder: PropertyListEncoder(), decoder: PropertyListDecoder())
        #expect(try custom.deserialize(ChatMessage.self, from: custom.serialize(ChatMessage.sample())) == .sample())
    }

    @Test("only binary frames are applicable; others are conversion errors carrying the frame")
    func applicability() throws {
        let converter = PropertyListWebSocketConverter()
        #expect(converter.isApplicable(.binary([1])))
        for frame in [Frame.text("x"), .ping(), .pong(), .close(), .continuation([1], fin: true)] {
            #expect(!converter.isApplicable(frame))
            #expect {
                try converter.deserialize(ChatMessage.self, from: frame)
            } throws: { error in
                let error = error as? WebSocketError
                return error?.code == .conversion && error?.frame == frame
                    && error?.message.contains("ChatMessage") == true
            }
        }
    }

    @Test("a corrupt or mismatched property list is a conversion error naming the type")
    func malformed() throws {
        let converter = PropertyListWebSocketConverter()
        let garbage = Frame.binary(Array("bplist00 but not really".utf8))
        #expect {
            try converter.deserialize(ChatMessage.self, from: garbage)
        } throws: { error in
            let error = error as? WebSocketError
            return error?.code == .conversion && error?.frame == garbage
                && error?.message.contains("ChatMessage") == true && error?.message.contains("property list") == true
        }
        let order = try converter.serialize(Order(orderID: 1, items: []))
        #expect {
            try converter.deserialize(ChatMessage.self, from: order)
        } throws: { error in
            (error as? WebSocketError)?.message.contains("missing key \"user\"") == true
        }
    }
}
