// Types the converter tests send: small, nested, optional, dated, unicode.
import Foundation

/// The seed's chat example message.
struct ChatMessage: Codable, Hashable, Sendable {
    var user: String
    var message: String
    var timestamp: Date
}

/// A nested value: arrays, dictionaries, optionals, enums with associated values, data.
struct Room: Codable, Hashable, Sendable {
    struct Member: Codable, Hashable, Sendable {
        var name: String
        var roles: Set<String>
        var lastSeen: Date?
    }

    enum Topic: Codable, Hashable, Sendable {
        case general
        case project(name: String, priority: Int)
        case archived(since: Date)
    }

    var id: UUID
    var title: String
    var members: [Member]
    var topic: Topic
    var pinned: [ChatMessage]
    var settings: [String: Double]
    var avatar: Data?
    var parent: String?
}

/// A type with the same JSON shape as nothing the tests send.
struct Order: Codable, Hashable, Sendable {
    var orderID: Int
    var items: [String]
}

extension ChatMessage {
    /// A whole-second timestamp (2023-11-14T22:13:20Z), exact in every date strategy.
    static let fixedDate = Date(timeIntervalSince1970: 1_700_000_000)

    static func sample(_ user: String = "alice", _ message: String = "Hello, WebSocket!") -> ChatMessage {
        ChatMessage(user: user, message: message, timestamp: fixedDate)
    }
}

extension Room {
    static let sample = Room(
        id: UUID(uuidString: "E621E1F8-C36C-495A-93FC-0C247A3E6E5F")!,
        title: "Design review",
        members: [
            Member(name: "alice", roles: ["admin", "writer"], lastSeen: ChatMessage.fixedDate),
            Member(name: "bob", roles: [], lastSeen: nil),
        ],
        topic: .project(name: "websocket", priority: 2),
        pinned: [.sample(), .sample("bob", "ok")],
        settings: ["volume": 0.75, "zoom": 1.5],
        avatar: Data([0, 1, 2, 254, 255]),
        parent: nil
    )
}
