// `wsbench-codec --serialization`: throughput of the WSSerialization converters, in messages per second, next to
// JSONEncoder/JSONDecoder alone and the other ways of holding them (formerly a test skipped unless WS_BENCH=1; the
// figures are in Docs/Serialization.md). Each group's variants run interleaved, round after round, and the best round
// of each counts: a noisy, shared machine then slows all variants alike instead of whichever ran during a burst.
// It prints figures and asserts nothing.
import Foundation
import Synchronization
import WSCore
import WSSerialization

/// The message the serialization figures use: a chat line with a user, a text and a timestamp.
struct ChatMessage: Codable, Sendable {
    /// Who wrote it.
    var user: String
    /// What they wrote.
    var message: String
    /// When.
    var timestamp: Date
}

/// Keeps the optimizer from discarding a result.
@inline(never)
private func consume<T>(_ value: T) {
    withExtendedLifetime(value) {}
}

/// One measured operation.
private struct Variant {
    /// The row's name.
    let name: String
    /// One call of the operation.
    let body: () throws -> Void
}

/// Runs the variants interleaved for `rounds` rounds of `iterations` calls each; prints and returns the best
/// rate of each (messages per second), in order.
@discardableResult
private func compare(_ title: String, iterations: Int, rounds: Int = 25, _ variants: [Variant]) throws -> [Double] {
    for variant in variants {  // warm up
        for _ in 0..<max(1, iterations / 4) { try variant.body() }
    }
    var best = Array(repeating: Duration.seconds(1_000_000), count: variants.count)
    for _ in 0..<rounds {
        for (index, variant) in variants.enumerated() {
            let start = ContinuousClock.now
            for _ in 0..<iterations { try variant.body() }
            best[index] = min(best[index], ContinuousClock.now - start)
        }
    }
    print("\(title) (best of \(rounds) interleaved rounds of \(iterations))")
    var rates: [Double] = []
    for (variant, duration) in zip(variants, best) {
        let seconds = Double(duration.components.seconds) + Double(duration.components.attoseconds) / 1e18
        let rate = Double(iterations) / seconds
        rates.append(rate)
        let name = variant.name.padding(toLength: 52, withPad: " ", startingAt: 0)
        print(
            "  \(name) \(String(format: "%9.0f", rate)) msg/s \(String(format: "%8.2f", seconds / Double(iterations) * 1e6)) µs"
        )
    }
    return rates
}

/// Measures serialize, deserialize, a round trip and a 64 KiB message, and prints the rates.
func runSerializationBenchmark() throws {
    let message = ChatMessage(
        user: "alice", message: "Hello, WebSocket! How are you today?",
        timestamp: Date(timeIntervalSince1970: 1_700_000_000.25))
    let encoder = JSONEncoder()
    let decoder = JSONDecoder()
    let converter = JSONWebSocketConverter()
    let binary = JSONWebSocketConverter(frameKind: .binary)
    let plist = PropertyListWebSocketConverter()
    let locked = Mutex(JSONEncoder())
    print(
        "payload: \(try encoder.encode(message).count) bytes of JSON, \(try plist.serialize(message).data.count) bytes of bplist"
    )

    var rates = try compare(
        "serialize a ChatMessage", iterations: 20_000,
        [
            Variant(name: "JSONEncoder.encode alone -> Data") { consume(try encoder.encode(message)) },
            Variant(name: "JSONWebSocketConverter.serialize -> text Frame") {
                consume(try converter.serialize(message))
            },
            Variant(name: "JSONWebSocketConverter(.binary).serialize") { consume(try binary.serialize(message)) },
            Variant(name: "alt: encode, Array(data) -> Frame") {
                consume(Frame(kind: .text, data: Array(try encoder.encode(message))))
            },
            Variant(name: "alt: encode, Data -> String -> Frame.text") {
                consume(Frame.text(String(decoding: try encoder.encode(message), as: UTF8.self)))
            },
            Variant(name: "alt: new JSONEncoder per call") {
                let encoder = JSONEncoder()
                encoder.dateEncodingStrategy = .deferredToDate
                consume(Frame(kind: .text, data: Array(try encoder.encode(message))))
            },
            Variant(name: "alt: Mutex<JSONEncoder>.withLock") {
                consume(Frame(kind: .text, data: Array(try locked.withLock { try $0.encode(message) })))
            },
            Variant(name: "PropertyListWebSocketConverter.serialize") { consume(try plist.serialize(message)) },
        ])
    print("  serialize+frame / encoder alone = \(String(format: "%.3f", rates[1] / rates[0]))\n")

    let frame = try converter.serialize(message)
    let data = Data(frame.data)
    let plistFrame = try plist.serialize(message)
    rates = try compare(
        "deserialize a ChatMessage", iterations: 20_000,
        [
            Variant(name: "JSONDecoder.decode alone <- Data") {
                consume(try decoder.decode(ChatMessage.self, from: data))
            },
            Variant(name: "JSONWebSocketConverter.deserialize <- text Frame") {
                consume(try converter.deserialize(ChatMessage.self, from: frame))
            },
            Variant(name: "alt: no-copy Data(bytesNoCopy:) view + decode") {
                let value = try frame.data.withUnsafeBytes { raw in
                    try decoder.decode(
                        ChatMessage.self,
                        from: Data(
                            bytesNoCopy: UnsafeMutableRawPointer(mutating: raw.baseAddress!), count: raw.count,
                            deallocator: .none))
                }
                consume(value)
            },
            Variant(name: "alt: new JSONDecoder per call") {
                consume(try JSONDecoder().decode(ChatMessage.self, from: Data(frame.data)))
            },
            Variant(name: "PropertyListWebSocketConverter.deserialize") {
                consume(try plist.deserialize(ChatMessage.self, from: plistFrame))
            },
        ])
    print("  deserialize(frame) / decoder alone = \(String(format: "%.3f", rates[1] / rates[0]))\n")

    try compare(
        "serialize + deserialize a ChatMessage", iterations: 10_000, rounds: 10,
        [
            Variant(name: "JSONWebSocketConverter round trip") {
                consume(try converter.deserialize(ChatMessage.self, from: converter.serialize(message)))
            }
        ])
    print()
    let big = (0..<700).map {
        ChatMessage(user: "user\($0)", message: "message \($0) of 700", timestamp: message.timestamp)
    }
    let bytes = try encoder.encode(big).count
    rates = try compare(
        "serialize [ChatMessage] of \(bytes / 1024) KiB", iterations: 20, rounds: 40,
        [
            Variant(name: "JSONEncoder.encode alone -> Data") { consume(try encoder.encode(big)) },
            Variant(name: "JSONWebSocketConverter.serialize -> Frame") { consume(try converter.serialize(big)) },
        ])
    print("  serialize+frame / encoder alone = \(String(format: "%.3f", rates[1] / rates[0]))")
}
