import Foundation
import Testing
import WSCore
import WSSerialization

/// Decodes `frame` with `converter` and returns the `WebSocketError` it throws, or records a failure.
private func conversionError<T: Decodable>(
    _ converter: some WebSocketContentConverter, _ type: T.Type, _ frame: Frame,
    sourceLocation: SourceLocation = #_sourceLocation
) -> WebSocketError? {
    do {
        let value = try converter.deserialize(T.self, from: frame)
        Issue.record("decoded \(value) from \(frame)", sourceLocation: sourceLocation)
        return nil
    } catch let error as WebSocketError {
        return error
    } catch {
        Issue.record("threw \(error), not a WebSocketError", sourceLocation: sourceLocation)
        return nil
    }
}

@Suite("JSONWebSocketConverter")
struct JSONWebSocketConverterTests {
    @Test("a small value goes out as a text frame of compact JSON and comes back")
    func chatMessageRoundTrip() throws {
        let converter = JSONWebSocketConverter()
        #expect(converter.frameKind == .text)
        let frame = try converter.serialize(ChatMessage.sample())
        #expect(frame.kind == .text)
        #expect(frame.fin)
        #expect(frame.reservedBits.isEmpty)
        let object = try #require(JSONSerialization.jsonObject(with: Data(frame.data)) as? [String: Any])
        #expect(object["user"] as? String == "alice")
        #expect(object["message"] as? String == "Hello, WebSocket!")
        #expect(try converter.deserialize(ChatMessage.self, from: frame) == .sample())
    }

    @Test("nested values: arrays, sets, dictionaries, enums with payloads, UUID, Data, optionals")
    func nestedRoundTrip() throws {
        let converter = JSONWebSocketConverter()
        let frame = try converter.serialize(Room.sample)
        #expect(try converter.deserialize(Room.self, from: frame) == Room.sample)
        var other = Room.sample
        other.topic = .archived(since: ChatMessage.fixedDate)
        other.avatar = nil
        other.parent = "lobby"
        #expect(try converter.deserialize(Room.self, from: converter.serialize(other)) == other)
        other.topic = .general
        #expect(try converter.deserialize(Room.self, from: converter.serialize(other)) == other)
    }

    @Test("top-level arrays, dictionaries, strings, numbers and booleans")
    func topLevelValues() throws {
        let converter = JSONWebSocketConverter()
        #expect(try converter.serialize([1, 2, 3]).readText() == "[1,2,3]")
        #expect(try converter.serialize("plain").readText() == "\"plain\"")
        #expect(try converter.serialize(42).readText() == "42")
        #expect(try converter.serialize(true).readText() == "true")
        #expect(try converter.deserialize([String: Int].self, from: .text("{\"a\":1,\"b\":2}")) == ["a": 1, "b": 2])
        #expect(try converter.deserialize(Double.self, from: .text("2.5")) == 2.5)
        #expect(try converter.deserialize(String?.self, from: .text("null")) == nil)
    }

    @Test("optionals: nil is omitted, missing and null both decode as nil")
    func optionals() throws {
        struct Profile: Codable, Equatable {
            var name: String
            var nickname: String?
            var age: Int?
        }
        let converter = JSONWebSocketConverter { encoder, _ in encoder.outputFormatting = .sortedKeys }
        #expect(
            try converter.serialize(Profile(name: "a", nickname: nil, age: 3)).readText() == #"{"age":3,"name":"a"}"#)
        #expect(try converter.deserialize(Profile.self, from: .text(#"{"name":"a"}"#)) == Profile(name: "a"))
        #expect(
            try converter.deserialize(Profile.self, from: .text(#"{"name":"a","nickname":null,"age":null}"#))
                == Profile(name: "a"))
        let full = Profile(name: "a", nickname: "b", age: 1)
        #expect(try converter.deserialize(Profile.self, from: converter.serialize(full)) == full)
    }

    @Test(
        "date strategies pass through to the encoder and decoder",
        arguments: [
            ("iso8601", "\"2023-11-14T22:13:20Z\""),
            ("secondsSince1970", "1700000000"),
            ("millisecondsSince1970", "1700000000000"),
            ("deferredToDate", "721692800"),
            ("custom", "\"day 19675\""),
        ]
    )
    func dateStrategies(name: String, expected: String) throws {
        let converter = JSONWebSocketConverter { encoder, decoder in
            switch name {
            case "iso8601":
                encoder.dateEncodingStrategy = .iso8601
                decoder.dateDecodingStrategy = .iso8601
            case "secondsSince1970":
                encoder.dateEncodingStrategy = .secondsSince1970
                decoder.dateDecodingStrategy = .secondsSince1970
            case "millisecondsSince1970":
                encoder.dateEncodingStrategy = .millisecondsSince1970
                decoder.dateDecodingStrategy = .millisecondsSince1970
            case "custom":
                encoder.dateEncodingStrategy = .custom { date, encoder in
                    var container = encoder.singleValueContainer()
                    try container.encode("day \(Int(date.timeIntervalSince1970) / 86_400)")
                }
                decoder.dateDecodingStrategy = .custom { decoder in
                    let text = try decoder.singleValueContainer().decode(String.self)
                    return Date(timeIntervalSince1970: Double(Int(text.dropFirst(4))! * 86_400 + 80_000))
                }
            default:
                break
            }
        }
        let day = Date(timeIntervalSince1970: 1_700_000_000)
        let frame = try converter.serialize(["at": day])
        #expect(try frame.readText() == "{\"at\":\(expected)}")
        #expect(try converter.deserialize([String: Date].self, from: frame) == ["at": day])
    }

    @Test("dates with fractional seconds survive the default strategy exactly")
    func fractionalDates() throws {
        let converter = JSONWebSocketConverter()
        let message = ChatMessage(
            user: "a", message: "b", timestamp: Date(timeIntervalSinceReferenceDate: 721_692_800.123_456_7))
        #expect(try converter.deserialize(ChatMessage.self, from: converter.serialize(message)) == message)
    }

    @Test("key strategies, data strategies and output formatting pass through")
    func keyAndFormattingStrategies() throws {
        struct Event: Codable, Equatable {
            var eventName: String
            var createdAt: Date
            var rawBytes: Data
        }
        let converter = JSONWebSocketConverter { encoder, decoder in
            encoder.keyEncodingStrategy = .convertToSnakeCase
            decoder.keyDecodingStrategy = .convertFromSnakeCase
            encoder.dateEncodingStrategy = .secondsSince1970
            decoder.dateDecodingStrategy = .secondsSince1970
            encoder.dataEncodingStrategy = .custom { data, encoder in
                var container = encoder.singleValueContainer()
                try container.encode(data.map { String($0, radix: 16) }.joined(separator: ":"))
            }
            decoder.dataDecodingStrategy = .custom { decoder in
                let text = try decoder.singleValueContainer().decode(String.self)
                return Data(text.split(separator: ":").map { UInt8($0, radix: 16)! })
            }
            encoder.outputFormatting = [.prettyPrinted, .sortedKeys, .withoutEscapingSlashes]
        }
        let event = Event(eventName: "a/b", createdAt: Date(timeIntervalSince1970: 10), rawBytes: Data([1, 0xAB]))
        let frame = try converter.serialize(event)
        let text = try frame.readText()
        #expect(text.contains("\"created_at\" : 10"))
        #expect(text.contains("\"event_name\" : \"a/b\""))
        #expect(text.contains("\"raw_bytes\" : \"1:ab\""))
        #expect(text.contains("\n"))
        #expect(try converter.deserialize(Event.self, from: frame) == event)
    }

    @Test("unicode: every plane, combining marks, escapes and RTL text round-trip as valid UTF-8")
    func unicode() throws {
        let converter = JSONWebSocketConverter()
        let texts = [
            "héllo wörld ✓ 🎉 — 日本語", "👩‍👩‍👧‍👦🏳️‍🌈", "e\u{301}", "مرحبا بالعالم", "\u{0}\u{1F}\"\\/\n\t\r",
            "\u{FEFF}bom", "𝄞 \u{10FFFF}", String(repeating: "ß", count: 10_000),
        ]
        for text in texts {
            let message = ChatMessage(user: text, message: text, timestamp: ChatMessage.fixedDate)
            let frame = try converter.serialize(message)
            #expect(String(validating: frame.data, as: UTF8.self) != nil)
            #expect(try converter.deserialize(ChatMessage.self, from: frame) == message)
        }
        // Non-ASCII is sent as UTF-8, not as \u escapes.
        #expect(try converter.serialize("日本").data == Array("\"日本\"".utf8))
        // \u escapes from other peers (including surrogate pairs) decode.
        #expect(try converter.deserialize(String.self, from: .text(#""\u00e9\ud83c\udf89""#)) == "é🎉")
    }

    @Test("large arrays: 100,000 numbers and 5,000 messages")
    func largeArrays() throws {
        let converter = JSONWebSocketConverter()
        let numbers = (0..<100_000).map { $0 * 7 - 350_000 }
        let frame = try converter.serialize(numbers)
        #expect(frame.data.count > 500_000)
        #expect(try converter.deserialize([Int].self, from: frame) == numbers)

        let messages = (0..<5_000).map { ChatMessage.sample("user\($0)", "message number \($0)") }
        #expect(try converter.deserialize([ChatMessage].self, from: converter.serialize(messages)) == messages)
    }

    @Test("binary frames on request; both frame kinds are read whatever frameKind says")
    func textAndBinaryFrames() throws {
        let text = JSONWebSocketConverter()
        let binary = JSONWebSocketConverter(frameKind: .binary)
        let binaryWithEncoder = JSONWebSocketConverter(encoder: JSONEncoder(), frameKind: .binary)
        #expect(binary.frameKind == .binary)
        #expect(binary.frameKind.description == "binary")
        let textFrame = try text.serialize(ChatMessage.sample())
        let binaryFrame = try binary.serialize(ChatMessage.sample())
        #expect(textFrame.kind == .text)
        #expect(binaryFrame.kind == .binary)
        #expect(try binaryWithEncoder.serialize(ChatMessage.sample()).kind == .binary)
        // The same UTF-8 JSON either way (key order aside: JSONEncoder orders keys by hash unless .sortedKeys).
        let sorted = JSONWebSocketConverter(frameKind: .binary) { encoder, _ in encoder.outputFormatting = .sortedKeys }
        let sortedText = JSONWebSocketConverter { encoder, _ in encoder.outputFormatting = .sortedKeys }
        #expect(try sorted.serialize(ChatMessage.sample()).data == sortedText.serialize(ChatMessage.sample()).data)
        for converter in [text, binary] {
            #expect(try converter.deserialize(ChatMessage.self, from: textFrame) == .sample())
            #expect(try converter.deserialize(ChatMessage.self, from: binaryFrame) == .sample())
        }
        // A binary frame built elsewhere (Frame.binary) with UTF-8 JSON.
        #expect(try text.deserialize([Int].self, from: .binary(Array("[1,2]".utf8))) == [1, 2])
    }

    @Test("isApplicable: text and binary yes; ping, pong, close and continuation no")
    func isApplicable() {
        let converter = JSONWebSocketConverter()
        #expect(converter.isApplicable(.text("{}")))
        #expect(converter.isApplicable(.binary([0x7B, 0x7D])))
        #expect(!converter.isApplicable(.ping()))
        #expect(!converter.isApplicable(.pong([1])))
        #expect(!converter.isApplicable(.close()))
        #expect(!converter.isApplicable(.continuation([0x7B], fin: true)))
    }

    @Test("deserializing a control frame is a conversion error carrying the frame")
    func controlFrameRejected() throws {
        let converter = JSONWebSocketConverter()
        let close = Frame.close(CloseReason(code: .normal, message: "{}"))
        let error = try #require(conversionError(converter, ChatMessage.self, close))
        #expect(error.code == .conversion)
        #expect(error.frame == close)
        #expect(error.message.contains("ChatMessage"))
        #expect(error.message.contains("close frame"))
    }

    @Test("malformed JSON is a conversion error naming the type, with the frame and the parser's error")
    func malformedJSON() throws {
        let converter = JSONWebSocketConverter()
        for payload in ["not json", "{\"user\":", "", "{\"user\":\"a\",}", "[1,2"] {
            let frame = Frame.text(payload)
            let error = try #require(conversionError(converter, ChatMessage.self, frame))
            #expect(error.code == .conversion)
            #expect(error.message.contains("ChatMessage"), "\(error)")
            #expect(error.message.contains("text frame"))
            #expect(error.frame == frame)
            #expect(error.underlying is DecodingError)
        }
        // Invalid UTF-8 inside a binary frame.
        let bad = Frame.binary([0x22, 0xFF, 0xFE, 0x22])
        let error = try #require(conversionError(converter, String.self, bad))
        #expect(error.message.contains("String"))
        #expect(error.frame == bad)
    }

    @Test("JSON of the wrong shape: the error names the type, the key and where it is")
    func wrongShape() throws {
        let converter = JSONWebSocketConverter()
        let order = try converter.serialize(Order(orderID: 7, items: ["tea"]))
        let missing = try #require(conversionError(converter, ChatMessage.self, order))
        #expect(missing.code == .conversion)
        #expect(missing.message.contains("ChatMessage"))
        #expect(missing.message.contains("missing key \"user\""), "\(missing)")

        let nested = Frame.text(#"[{"user":"a","message":"b","timestamp":0},{"user":5,"message":"b","timestamp":0}]"#)
        let mismatch = try #require(conversionError(converter, [ChatMessage].self, nested))
        #expect(mismatch.message.contains("Array<ChatMessage>"), "\(mismatch)")
        #expect(mismatch.message.contains("type mismatch at [1].user"), "\(mismatch)")

        let null = Frame.text(#"{"user":null,"message":"b","timestamp":0}"#)
        let missingValue = try #require(conversionError(converter, ChatMessage.self, null))
        #expect(missingValue.message.contains("missing value at user"), "\(missingValue)")
    }

    @Test("a value the encoder rejects is a conversion error naming the type")
    func encodingFailure() throws {
        struct Reading: Codable { var value: Double }
        let converter = JSONWebSocketConverter()
        do {
            _ = try converter.serialize(Reading(value: .nan))
            Issue.record("NaN was encoded")
        } catch {
            #expect(error.code == .conversion)
            #expect(error.message.contains("Reading"), "\(error)")
            #expect(error.message.contains("value"))
            #expect(error.frame == nil)
            #expect(error.underlying is EncodingError)
        }
        let lenient = JSONWebSocketConverter { encoder, decoder in
            encoder.nonConformingFloatEncodingStrategy = .convertToString(
                positiveInfinity: "inf", negativeInfinity: "-inf", nan: "nan")
            decoder.nonConformingFloatDecodingStrategy = .convertFromString(
                positiveInfinity: "inf", negativeInfinity: "-inf", nan: "nan")
        }
        #expect(try lenient.deserialize(Reading.self, from: lenient.serialize(Reading(value: .nan))).value.isNaN)
    }

    @Test("userInfo reaches Codable implementations")
    func userInfo() throws {
        struct Scaled: Codable, Equatable {
            static let factor = CodingUserInfoKey(rawValue: "factor")!
            var value: Int
            init(value: Int) { self.value = value }
            init(from decoder: any Decoder) throws {
                let factor = decoder.userInfo[Self.factor] as? Int ?? 1
                self.value = try decoder.singleValueContainer().decode(Int.self) / factor
            }
            func encode(to encoder: any Encoder) throws {
                var container = encoder.singleValueContainer()
                try container.encode(self.value * (encoder.userInfo[Self.factor] as? Int ?? 1))
            }
        }
        let converter = JSONWebSocketConverter { encoder, decoder in
            encoder.userInfo[Scaled.factor] = 10
            decoder.userInfo[Scaled.factor] = 10
        }
        let frame = try converter.serialize(Scaled(value: 4))
        #expect(try frame.readText() == "40")
        #expect(try converter.deserialize(Scaled.self, from: frame) == Scaled(value: 4))
    }

    @Test("one converter is shared safely by many tasks")
    func concurrentUse() async throws {
        let converter = JSONWebSocketConverter { encoder, decoder in
            encoder.dateEncodingStrategy = .iso8601
            decoder.dateDecodingStrategy = .iso8601
        }
        let failures = await withTaskGroup(of: Int.self) { group in
            for task in 0..<8 {
                group.addTask {
                    var failures = 0
                    for index in 0..<2_000 {
                        let message = ChatMessage.sample("task\(task)", "message \(index)")
                        let back = try? converter.deserialize(ChatMessage.self, from: converter.serialize(message))
                        if back != message { failures += 1 }
                    }
                    return failures
                }
            }
            return await group.reduce(0, +)
        }
        #expect(failures == 0)
    }

    @Test("the converter can be installed in the WebSockets plugin")
    func installs() {
        var configuration = WebSockets.Configuration()
        configuration.contentConverter = JSONWebSocketConverter(frameKind: .binary)
        #expect((configuration.contentConverter as? JSONWebSocketConverter)?.frameKind == .binary)
    }
}
