// sendSerialized / receiveDeserialized end to end, with WSSerialization's converters, against the Python
// websockets server (/echo, /close and /broadcast of Tests/Fixtures/ws_server.py).
import Foundation
import Testing
import WSCore
import WSSerialization

/// The seed's chat example message.
private struct ChatMessage: Codable, Hashable, Sendable {
    var user: String
    var message: String
    var timestamp: Date
}

/// A type that is not a ChatMessage.
private struct Order: Codable, Hashable, Sendable {
    var orderID: Int
    var items: [String]
}

/// A whole-second date, exact in every date strategy.
private let noon = Date(timeIntervalSince1970: 1_700_000_000)

/// Runs `body` and returns the `WebSocketError` it throws, or records an issue.
private func webSocketError(
    sourceLocation: SourceLocation = #_sourceLocation,
    _ body: () async throws -> Void
) async -> WebSocketError? {
    do {
        try await body()
        Issue.record("no error was thrown", sourceLocation: sourceLocation)
        return nil
    } catch let error as WebSocketError {
        return error
    } catch {
        Issue.record("threw \(error), not a WebSocketError", sourceLocation: sourceLocation)
        return nil
    }
}

@Suite("Serialization: sendSerialized and receiveDeserialized", .timeLimit(.minutes(2)))
struct SerializationTests {
    @Test("Codable values round-trip through the echo server, the type inferred", arguments: TestEngine.allCases)
    func roundTrip(engine: TestEngine) async throws {
        let peer = try await PythonPeer.start()
        defer { peer.stop() }
        let client = engine.client { $0.contentConverter = JSONWebSocketConverter() }
        try await withClient(client) { client in
            try await client.webSocket(peer.url(path: "/echo")) { session in
                #expect(session.contentConverter is JSONWebSocketConverter)
                let sent = ChatMessage(user: "alice", message: "Hello, 世界 🎉", timestamp: Date())
                try await session.sendSerialized(sent)
                let message: ChatMessage = try await session.receiveDeserialized()
                #expect(message == sent)

                // The frame on the wire is a text frame of JSON.
                try await session.sendSerialized(sent)
                let frame = try await nextMessage(session)
                #expect(frame.kind == .text)
                #expect(try frame.readText().contains("\"user\":\"alice\""))

                // An explicit type, a top-level array, and a large message (about 400 KiB).
                try await session.sendSerialized([sent, sent])
                #expect(try await session.receiveDeserialized([ChatMessage].self) == [sent, sent])
                let many = (0..<5_000).map { ChatMessage(user: "user\($0)", message: "message \($0)", timestamp: noon) }
                try await session.sendSerialized(many)
                let echoed: [ChatMessage] = try await session.receiveDeserialized()
                #expect(echoed == many)
            }
        }
    }

    @Test(
        "binary JSON frames and property lists round-trip too",
        arguments: TestEngine.allCases, [SerializationTests.Variant.binaryJSON, .propertyList, .iso8601Text]
    )
    func otherConverters(engine: TestEngine, variant: Variant) async throws {
        let peer = try await PythonPeer.start()
        defer { peer.stop() }
        let client = engine.client { $0.contentConverter = variant.converter }
        try await withClient(client) { client in
            try await client.webSocket(peer.url(path: "/echo")) { session in
                let sent = ChatMessage(user: "bob", message: "binary or not", timestamp: noon)
                try await session.sendSerialized(sent)
                let frame = try await nextMessage(session)
                #expect(frame.kind == variant.frameKind)
                try await session.send(frame)  // echo it once more, to read it with receiveDeserialized
                let message: ChatMessage = try await session.receiveDeserialized()
                #expect(message == sent)
            }
        }
    }

    /// A converter configuration under test.
    enum Variant: String, CaseIterable, Sendable, CustomStringConvertible {
        case binaryJSON, propertyList, iso8601Text

        var description: String { self.rawValue }

        var converter: any WebSocketContentConverter {
            switch self {
            case .binaryJSON: JSONWebSocketConverter(frameKind: .binary)
            case .propertyList: PropertyListWebSocketConverter()
            case .iso8601Text:
                JSONWebSocketConverter { encoder, decoder in
                    encoder.dateEncodingStrategy = .iso8601
                    decoder.dateDecodingStrategy = .iso8601
                }
            }
        }

        var frameKind: Frame.Kind {
            switch self {
            case .binaryJSON, .propertyList: .binary
            case .iso8601Text: .text
            }
        }
    }

    @Test(
        "a malformed message is a conversion error carrying the frame; the session stays open",
        arguments: TestEngine.allCases)
    func malformedMessage(engine: TestEngine) async throws {
        let peer = try await PythonPeer.start()
        defer { peer.stop() }
        let client = engine.client { $0.contentConverter = JSONWebSocketConverter() }
        try await withClient(client) { client in
            try await client.webSocket(peer.url(path: "/echo")) { session in
                try await session.send("not json")
                let error = try #require(
                    await webSocketError {
                        let _: ChatMessage = try await session.receiveDeserialized()
                    })
                #expect(error.code == .conversion)
                #expect(error.message.contains("ChatMessage"), "\(error)")
                let frame = try #require(error.frame)
                #expect(frame.kind == .text)
                #expect(try frame.readText() == "not json")
                #expect(error.underlying != nil)
                #expect(!session.isClosed)

                // The session goes on.
                let sent = ChatMessage(user: "alice", message: "still here", timestamp: noon)
                try await session.sendSerialized(sent)
                let message: ChatMessage = try await session.receiveDeserialized()
                #expect(message == sent)
            }
        }
    }

    @Test(
        "a message of the wrong type is a conversion error naming the type and the missing key",
        arguments: TestEngine.allCases)
    func wrongType(engine: TestEngine) async throws {
        let peer = try await PythonPeer.start()
        defer { peer.stop() }
        let client = engine.client { $0.contentConverter = JSONWebSocketConverter() }
        try await withClient(client) { client in
            try await client.webSocket(peer.url(path: "/echo")) { session in
                let order = Order(orderID: 42, items: ["tea", "scone"])
                try await session.sendSerialized(order)
                let error = try #require(
                    await webSocketError {
                        let _: ChatMessage = try await session.receiveDeserialized()
                    })
                #expect(error.code == .conversion)
                #expect(error.message.contains("ChatMessage"), "\(error)")
                #expect(error.message.contains("\"user\""), "\(error)")
                // The frame is not lost: it decodes as what it is.
                let frame = try #require(error.frame)
                #expect(try JSONWebSocketConverter().deserialize(Order.self, from: frame) == order)

                // A binary frame of non-JSON: the same error, and the session still works.
                try await session.send([0xFF, 0x00, 0x01] as [UInt8])
                let binaryError = try #require(
                    await webSocketError {
                        _ = try await session.receiveDeserialized(ChatMessage.self)
                    })
                #expect(binaryError.code == .conversion)
                #expect(binaryError.frame?.kind == .binary)
                #expect(binaryError.frame?.data == [0xFF, 0x00, 0x01])
                try await session.sendSerialized(order)
                #expect(try await session.receiveDeserialized(Order.self) == order)
            }
        }
    }

    @Test("a text frame reaches a binary-only converter as a conversion error", arguments: TestEngine.allCases)
    func notApplicable(engine: TestEngine) async throws {
        let peer = try await PythonPeer.start()
        defer { peer.stop() }
        let client = engine.client { $0.contentConverter = PropertyListWebSocketConverter() }
        try await withClient(client) { client in
            try await client.webSocket(peer.url(path: "/echo")) { session in
                try await session.send("text, not a property list")
                let error = try #require(
                    await webSocketError {
                        let _: ChatMessage = try await session.receiveDeserialized()
                    })
                #expect(error.code == .conversion)
                #expect(error.message.contains("ChatMessage"), "\(error)")
                #expect(error.frame?.kind == .text)
                #expect(!session.isClosed)
            }
        }
    }

    @Test(
        "without a converter both calls fail with noContentConverter, naming JSONWebSocketConverter",
        arguments: TestEngine.allCases)
    func noConverter(engine: TestEngine) async throws {
        let peer = try await PythonPeer.start()
        defer { peer.stop() }
        try await withClient(engine.client()) { client in
            try await client.webSocket(peer.url(path: "/echo")) { session in
                #expect(session.contentConverter == nil)
                let sendError = try #require(
                    await webSocketError {
                        try await session.sendSerialized(ChatMessage(user: "a", message: "b", timestamp: noon))
                    })
                #expect(sendError.code == .noContentConverter)
                #expect(sendError.message.contains("JSONWebSocketConverter()"), "\(sendError)")
                #expect(sendError.message.contains("WSSerialization"))

                let receiveError = try #require(
                    await webSocketError {
                        let _: ChatMessage = try await session.receiveDeserialized()
                    })
                #expect(receiveError.code == .noContentConverter)

                // Nothing was sent or consumed: the session works as before.
                try await session.send("plain")
                #expect(try await nextMessage(session).readText() == "plain")
            }
        }
    }

    @Test(
        "a server close while a value is expected is sessionClosed with the close reason",
        arguments: TestEngine.allCases)
    func serverCloses(engine: TestEngine) async throws {
        let peer = try await PythonPeer.start()
        defer { peer.stop() }
        let client = engine.client { $0.contentConverter = JSONWebSocketConverter() }
        try await withClient(client) { client in
            let session = try await client.webSocketSession(peer.url(path: "/close?code=4001&reason=bye"))
            let error = try #require(
                await webSocketError {
                    let _: ChatMessage = try await session.receiveDeserialized()
                })
            #expect(error.code == .sessionClosed)
            #expect(error.closeCode == CloseReason.Code(4001))
            #expect(error.message.contains("bye"), "\(error)")
            #expect(error.message.contains("ChatMessage"))
            await session.close()
        }
    }

    @Test("the seed's chat: two sessions exchange ChatMessages through /broadcast", arguments: TestEngine.allCases)
    func chat(engine: TestEngine) async throws {
        let peer = try await PythonPeer.start()
        defer { peer.stop() }
        let client = engine.client { $0.contentConverter = JSONWebSocketConverter() }
        try await withClient(client) { client in
            let alice = try await client.webSocketSession(peer.url(path: "/broadcast"))
            let bob = try await client.webSocketSession(peer.url(path: "/broadcast"))

            // The server registers a /broadcast client after the handshake; a client whose own message came back
            // is registered. Join one after the other so both are before the chat starts.
            for (session, user) in [(alice, "alice"), (bob, "bob")] {
                let join = ChatMessage(user: user, message: "joined", timestamp: noon)
                try await session.sendSerialized(join)
                while try await session.receiveDeserialized(ChatMessage.self) != join {}
            }

            let fromAlice = ChatMessage(user: "alice", message: "Hello everyone!", timestamp: Date())
            let fromBob = ChatMessage(user: "bob", message: "Hi Alice 👋", timestamp: Date())
            async let aliceSent: Void = alice.sendSerialized(fromAlice)
            async let bobSent: Void = bob.sendSerialized(fromBob)
            try await aliceSent
            try await bobSent

            func chatMessages(_ session: WebSocketSession) async throws -> Set<ChatMessage> {
                var received: Set<ChatMessage> = []
                while received.count < 2 {
                    let message: ChatMessage = try await session.receiveDeserialized()
                    if message.message != "joined" { received.insert(message) }
                }
                return received
            }
            #expect(try await chatMessages(alice) == [fromAlice, fromBob])
            #expect(try await chatMessages(bob) == [fromAlice, fromBob])

            await alice.close()
            await bob.close()
            #expect(await alice.closeReason?.code == .normal)
            #expect(await bob.closeReason?.code == .normal)
        }
    }
}
