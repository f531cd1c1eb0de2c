// Unit tests of permessage-deflate (RFC 7692): negotiation, framing, RFC examples, context takeover, limits.
import Testing
import WSCore

@testable import WSExtensions

#if canImport(Glibc)
import Glibc
#endif

// MARK: - Helpers

/// Parses a `Sec-WebSocket-Extensions` element, e.g. `permessage-deflate; server_max_window_bits=10`.
private func element(_ text: String) throws -> WebSocketExtensionHeader {
    let elements = try WebSocketExtensionHeader.parse([text])
    return try #require(elements.first)
}

/// Negotiates `configuration` against the server response `response` and returns the connection's extension.
private func negotiated(
    _ configuration: PerMessageDeflate.Configuration = .init(), response: String = "permessage-deflate"
) throws -> PerMessageDeflateExtension {
    let factory = try PerMessageDeflate(configuration)
    let ext = try factory.negotiate(response: try element(response))
    return try #require(ext as? PerMessageDeflateExtension)
}

private let oneMiB = 1 << 20
private let context = WebSocketExtensionContext(maxMessageSize: 64 << 20)

private func hex(_ text: String) -> [UInt8] {
    text.split(separator: " ").map { UInt8($0, radix: 16)! }
}

/// Deterministic text-like bytes with repetition at many distances (compressible, but not trivially).
private func sampleText(_ count: Int, seed: UInt64 = 1) -> [UInt8] {
    let words = [
        "alpha", "beta", "gamma", "delta", "\"id\":", "{\"name\":", "value", "websocket", "deflate", " ", ",", "\n",
    ]
    .map { Array($0.utf8) }
    var state = seed
    var out: [UInt8] = []
    out.reserveCapacity(count + 16)
    while out.count < count {
        state = state &* 6_364_136_223_846_793_005 &+ 1_442_695_040_888_963_407
        let word = words[Int(state >> 33) % words.count]
        out.append(contentsOf: word)
        if state & 0x7 == 0 { out.append((UInt8(truncatingIfNeeded: state >> 40) & 0x5F) | 0x20) }
    }
    return Array(out.prefix(count))
}

/// Deterministic incompressible bytes.
private func noise(_ count: Int, seed: UInt64 = 7) -> [UInt8] {
    var state = seed
    return (0..<count).map { _ in
        state = state &* 6_364_136_223_846_793_005 &+ 1_442_695_040_888_963_407
        return UInt8(truncatingIfNeeded: state >> 56)
    }
}

/// The process's peak resident set size, in bytes.
private func peakRSS() -> Int {
    var usage = rusage()
    getrusage(Int32(RUSAGE_SELF.rawValue), &usage)
    return usage.ru_maxrss * 1024
}

// MARK: - API and configuration

@Suite("permessage-deflate: API and offers")
struct DeflateAPITests {
    @Test("the static-member spelling installs the factory; a second RSV1 user is refused")
    func install() throws {
        var configuration = WebSocketExtensionsConfiguration()
        try configuration.install(.perMessageDeflate())
        #expect(configuration.factories.map(\.name) == ["permessage-deflate"])
        #expect(configuration.factories[0].reservedBits == .rsv1)
        #expect(throws: WebSocketError.self) { try configuration.install(.perMessageDeflate()) }

        var plugin = WebSockets.Configuration()
        try plugin.extensions { try $0.install(.perMessageDeflate(.init(compressionLevel: 1))) }
        #expect(plugin.extensionsConfiguration.factories.count == 1)
    }

    /// An engine that can open WebSockets but not carry extensions (as a libcurl engine in its own framing mode).
    final class NoExtensionsEngine: WebSocketEngine {
        let name = "Plain"
        func isSupported(_ capability: EngineCapability) -> Bool { capability == .webSocket }
        func connect(to endpoint: EngineEndpoint, options: EngineConnectOptions) async throws -> any WebSocketTransport
        {
            throw WebSocketError(.network, "this test engine never connects")
        }
        func shutdown() async {}
    }

    @Test("an engine without webSocketExtensions refuses the session before connecting, naming the CIO engine")
    func unsupportedEngine() async throws {
        let client = try WebSocketClient(engine: NoExtensionsEngine()) { config in
            try config.install(WebSockets.self) { try $0.extensions { try $0.install(.perMessageDeflate()) } }
        }
        #expect(!client.isSupported(.webSocketExtensions))
        let error = await #expect(throws: WebSocketError.self) {
            _ = try await client.webSocketSession("ws://127.0.0.1:9/")
        }
        #expect(error?.code == .unsupported)
        #expect(
            error?.message.contains("permessage-deflate") == true && error?.message.contains("CIO engine") == true,
            "\(String(describing: error))")
        await client.close()
    }

    @Test("offers: the defaults offer a bare client_max_window_bits; every option appears")
    func offers() throws {
        #expect(
            try PerMessageDeflate().makeOffers().map(\.description) == ["permessage-deflate; client_max_window_bits"])
        let all = try PerMessageDeflate(
            .init(
                clientNoContextTakeover: true, serverNoContextTakeover: true, clientMaxWindowBits: 10,
                serverMaxWindowBits: 12))
        #expect(
            all.makeOffers().map(\.description) == [
                "permessage-deflate; client_no_context_takeover; server_no_context_takeover; server_max_window_bits=12; client_max_window_bits=10"
            ])
    }

    @Test(
        "invalid configurations are refused with invalidArgument",
        arguments: [
            PerMessageDeflate.Configuration(compressionLevel: 10),
            PerMessageDeflate.Configuration(compressionLevel: -1),
            PerMessageDeflate.Configuration(memoryLevel: 0),
            PerMessageDeflate.Configuration(memoryLevel: 10),
            PerMessageDeflate.Configuration(clientMaxWindowBits: 7),
            PerMessageDeflate.Configuration(clientMaxWindowBits: 16),
            PerMessageDeflate.Configuration(serverMaxWindowBits: 7),
            PerMessageDeflate.Configuration(serverMaxWindowBits: 16),
            PerMessageDeflate.Configuration(compressionThreshold: -1),
        ])
    func invalidConfiguration(configuration: PerMessageDeflate.Configuration) {
        #expect {
            try PerMessageDeflate.perMessageDeflate(configuration)
        } throws: { error in
            (error as? WebSocketError)?.code == .invalidArgument
        }
    }
}

// MARK: - Negotiation

@Suite("permessage-deflate: negotiation (RFC 7692 section 7.1)")
struct DeflateNegotiationTests {
    struct Accepted: Sendable, CustomStringConvertible {
        var offer: DeflateOffer
        var response: String
        var expected: DeflateAgreement
        var description: String { "\(self.offer.header) ← \(self.response)" }
    }

    static let plain = DeflateOffer()
    static let accepted: [Accepted] = [
        Accepted(
            offer: plain, response: "permessage-deflate",
            expected: .init(
                clientNoContextTakeover: false, serverNoContextTakeover: false, clientWindowBits: 15,
                serverWindowBits: 15)),
        Accepted(
            offer: plain, response: "PerMessage-Deflate; Server_No_Context_Takeover",
            expected: .init(
                clientNoContextTakeover: false, serverNoContextTakeover: true, clientWindowBits: 15,
                serverWindowBits: 15)),
        Accepted(
            offer: plain, response: "permessage-deflate; client_no_context_takeover",
            expected: .init(
                clientNoContextTakeover: true, serverNoContextTakeover: false, clientWindowBits: 15,
                serverWindowBits: 15)),
        // The server may limit its own window without being asked, and pick ours after a bare offer.
        Accepted(
            offer: plain, response: "permessage-deflate; server_max_window_bits=12; client_max_window_bits=8",
            expected: .init(
                clientNoContextTakeover: false, serverNoContextTakeover: false, clientWindowBits: 8,
                serverWindowBits: 12)),
        Accepted(
            offer: plain, response: "permessage-deflate; server_max_window_bits=\"9\"",
            expected: .init(
                clientNoContextTakeover: false, serverNoContextTakeover: false, clientWindowBits: 15,
                serverWindowBits: 9)),
        // Same or smaller than offered.
        Accepted(
            offer: DeflateOffer(serverMaxWindowBits: 10, clientMaxWindowBits: .bits(11)),
            response: "permessage-deflate; server_max_window_bits=10; client_max_window_bits=9",
            expected: .init(
                clientNoContextTakeover: false, serverNoContextTakeover: false, clientWindowBits: 9,
                serverWindowBits: 10)),
        Accepted(
            offer: DeflateOffer(serverMaxWindowBits: 10, clientMaxWindowBits: .bits(11)),
            response: "permessage-deflate; server_max_window_bits=8",
            expected: .init(
                clientNoContextTakeover: false, serverNoContextTakeover: false, clientWindowBits: 11,
                serverWindowBits: 8)),
        // Our own client_no_context_takeover applies even when the server does not repeat it.
        Accepted(
            offer: DeflateOffer(clientNoContextTakeover: true, serverNoContextTakeover: true),
            response: "permessage-deflate; server_no_context_takeover",
            expected: .init(
                clientNoContextTakeover: true, serverNoContextTakeover: true, clientWindowBits: 15,
                serverWindowBits: 15)),
    ]

    @Test("accepted responses", arguments: accepted)
    func accept(_ row: Accepted) throws {
        #expect(try row.offer.accept(element(row.response)) == row.expected)
    }

    struct Rejected: Sendable, CustomStringConvertible {
        var offer: DeflateOffer
        var response: String
        var reason: String
        var description: String { "\(self.offer.header) ← \(self.response)" }
    }

    static let rejected: [Rejected] = [
        Rejected(offer: plain, response: "permessage-deflate; foo", reason: "unknown parameter"),
        Rejected(offer: plain, response: "permessage-deflate; foo=1", reason: "unknown parameter"),
        Rejected(
            offer: plain, response: "permessage-deflate; server_no_context_takeover; server_no_context_takeover",
            reason: "more than once"),
        Rejected(
            offer: plain, response: "permessage-deflate; server_max_window_bits=10; server_max_window_bits=10",
            reason: "more than once"),
        Rejected(offer: plain, response: "permessage-deflate; server_no_context_takeover=1", reason: "takes no value"),
        Rejected(
            offer: plain, response: "permessage-deflate; client_no_context_takeover=\"x\"", reason: "takes no value"),
        Rejected(offer: plain, response: "permessage-deflate; server_max_window_bits", reason: "needs a value"),
        Rejected(offer: plain, response: "permessage-deflate; client_max_window_bits", reason: "needs a value"),
        Rejected(offer: plain, response: "permessage-deflate; server_max_window_bits=7", reason: "not a window size"),
        Rejected(offer: plain, response: "permessage-deflate; server_max_window_bits=16", reason: "not a window size"),
        Rejected(offer: plain, response: "permessage-deflate; server_max_window_bits=010", reason: "not a window size"),
        Rejected(offer: plain, response: "permessage-deflate; server_max_window_bits=+9", reason: "not a window size"),
        Rejected(offer: plain, response: "permessage-deflate; client_max_window_bits=abc", reason: "not a window size"),
        Rejected(
            offer: DeflateOffer(clientMaxWindowBits: .notOffered),
            response: "permessage-deflate; client_max_window_bits=10", reason: "was not offered"),
        Rejected(
            offer: DeflateOffer(clientMaxWindowBits: .bits(10)),
            response: "permessage-deflate; client_max_window_bits=11", reason: "more than the 10 offered"),
        Rejected(
            offer: DeflateOffer(serverMaxWindowBits: 10),
            response: "permessage-deflate; server_max_window_bits=11", reason: "more than the 10 offered"),
        Rejected(
            offer: DeflateOffer(serverMaxWindowBits: 10), response: "permessage-deflate",
            reason: "did not accept"),
        Rejected(
            offer: DeflateOffer(serverNoContextTakeover: true), response: "permessage-deflate",
            reason: "did not accept"),
        Rejected(offer: plain, response: "x-webkit-deflate-frame", reason: "not permessage-deflate"),
    ]

    @Test("rejected responses throw extensionFailure saying why", arguments: rejected)
    func reject(_ row: Rejected) throws {
        let response = try element(row.response)
        #expect {
            _ = try row.offer.accept(response)
        } throws: { error in
            guard let error = error as? WebSocketError else { return false }
            return error.code == .extensionFailure && error.message.contains(row.reason)
        }
    }

    @Test("the negotiated extension shows the server's element as its header")
    func header() throws {
        let ext = try negotiated(response: "permessage-deflate; server_max_window_bits=12; client_max_window_bits=12")
        #expect(ext.name == "permessage-deflate")
        #expect(ext.reservedBits == .rsv1)
        #expect(ext.header.description == "permessage-deflate; server_max_window_bits=12; client_max_window_bits=12")
        #expect(ext.header.parameter("server_max_window_bits") == .some("12"))
        #expect(ext.agreement.clientWindowBits == 12 && ext.agreement.serverWindowBits == 12)
    }
}

// MARK: - Framing

@Suite("permessage-deflate: framing and RFC 7692 section 7.2.3 examples")
struct DeflateFramingTests {
    let everything = PerMessageDeflate.Configuration(compressionThreshold: 0)

    @Test(
        "7.2.3.1/7.2.3.2: \"Hello\" compresses to f2 48 cd c9 c9 07 00, then to f2 00 11 00 00 with the shared window")
    func helloSharedWindow() throws {
        let ext = try negotiated(everything)
        let first = try ext.processOutgoing(.text("Hello"), context: context)
        #expect(first.data == hex("f2 48 cd c9 c9 07 00"))
        #expect(first.reservedBits == .rsv1 && first.fin && first.kind == .text)
        let second = try ext.processOutgoing(.text("Hello"), context: context)
        #expect(second.data == hex("f2 00 11 00 00"))
        #expect(second.rsv1)
    }

    @Test("client_no_context_takeover: every message is compressed on its own")
    func noContextTakeoverOutgoing() throws {
        let ext = try negotiated(everything, response: "permessage-deflate; client_no_context_takeover")
        // (Longer than "Hello", which would not shrink and so go out uncompressed.)
        for _ in 0..<3 {
            let sent = try ext.processOutgoing(.text("Hello, Hello, Hello, Hello!"), context: context)
            #expect(sent.data == hex("f2 48 cd c9 c9 d7 51 f0 c0 a4 14 01 00") && sent.rsv1)
        }
        // With context takeover the second refers back to the first (bytes as Python's zlib makes them).
        let shared = try negotiated(everything)
        _ = try shared.processOutgoing(.text("Hello, Hello, Hello, Hello!"), context: context)
        #expect(
            try shared.processOutgoing(.text("Hello, Hello, Hello, Hello!"), context: context).data
                == hex("c2 22 06 93 02 00"))
    }

    static let rfcMessages: [(name: String, payloads: [String], texts: [String])] = [
        ("7.2.3.1 one compressed block", ["f2 48 cd c9 c9 07 00"], ["Hello"]),
        ("7.2.3.2 shared window", ["f2 48 cd c9 c9 07 00", "f2 00 11 00 00"], ["Hello", "Hello"]),
        ("7.2.3.3 stored block", ["00 05 00 fa ff 48 65 6c 6c 6f 00"], ["Hello"]),
        ("7.2.3.4 BFINAL block, window kept", ["f3 48 cd c9 c9 07 00 00", "f2 00 11 00 00"], ["Hello", "Hello"]),
        ("7.2.3.5 two blocks", ["f2 48 05 00 00 00 ff ff ca c9 c9 07 00"], ["Hello"]),
        ("7.2.3.6 empty message", ["00", "f2 48 cd c9 c9 07 00"], ["", "Hello"]),
        // Not valid (no block header before the appended tail), but read as empty without disturbing the stream.
        ("empty payload", ["", "f2 48 cd c9 c9 07 00", "", "f2 00 11 00 00"], ["", "Hello", "", "Hello"]),
    ]

    @Test("incoming RFC examples decompress", arguments: rfcMessages.indices)
    func rfcIncoming(index: Int) throws {
        let example = Self.rfcMessages[index]
        let ext = try negotiated()
        for (payload, text) in zip(example.payloads, example.texts) {
            let message = Frame(kind: .text, data: hex(payload), reservedBits: .rsv1)
            let result = try ext.processIncoming(message, context: context)
            #expect(try result.readText() == text, "\(example.name)")
            #expect(result.reservedBits.isEmpty)
        }
    }

    @Test("7.2.3.1 fragmented: the reassembled payload of 41 03 f2 48 cd / 80 04 c9 c9 07 00 is \"Hello\"")
    func rfcFragmentedIncoming() throws {
        let ext = try negotiated()
        let payload = hex("f2 48 cd") + hex("c9 c9 07 00")
        let result = try ext.processIncoming(Frame(kind: .text, data: payload, reservedBits: .rsv1), context: context)
        #expect(try result.readText() == "Hello")
    }

    @Test("messages without RSV1 pass through untouched")
    func uncompressedIncoming() throws {
        let ext = try negotiated()
        let message = Frame(kind: .binary, data: [1, 2, 3])
        #expect(try ext.processIncoming(message, context: context) == message)
        // ...and do not disturb the window of compressed ones.
        let hello = Frame(kind: .text, data: hex("f2 48 cd c9 c9 07 00"), reservedBits: .rsv1)
        #expect(try ext.processIncoming(hello, context: context).readText() == "Hello")
        #expect(try ext.processIncoming(Frame.text("plain"), context: context).readText() == "plain")
        let again = Frame(kind: .text, data: hex("f2 00 11 00 00"), reservedBits: .rsv1)
        #expect(try ext.processIncoming(again, context: context).readText() == "Hello")
    }

    @Test("below the threshold, or declined by shouldCompress: sent as it is, without RSV1")
    func thresholdAndPredicate() throws {
        let ext = try negotiated(
            .init(compressionThreshold: 32, shouldCompress: { $0.kind != .binary }))
        let small = Frame.text(String(repeating: "a", count: 31))
        #expect(try ext.processOutgoing(small, context: context) == small)
        let big = Frame.text(String(repeating: "a", count: 32))
        let compressed = try ext.processOutgoing(big, context: context)
        #expect(compressed.rsv1 && compressed.data.count < 32)
        let binary = Frame.binary(sampleText(4096))
        #expect(try ext.processOutgoing(binary, context: context) == binary)
        // A declined fragmented message goes out uncompressed, continuations included.
        let first = Frame.binary(sampleText(100), fin: false)
        #expect(try ext.processOutgoing(first, context: context) == first)
        let last = Frame.continuation(sampleText(100), fin: true)
        #expect(try ext.processOutgoing(last, context: context) == last)
        // Control frames never change.
        #expect(try ext.processOutgoing(.ping([1]), context: context) == .ping([1]))
    }

    @Test("without context takeover, an incompressible message goes out uncompressed")
    func incompressible() throws {
        let data = noise(1000)
        let plain = try negotiated(.init(clientNoContextTakeover: true))
        #expect(try plain.processOutgoing(.binary(data), context: context) == .binary(data))
        // With context takeover it must be compressed anyway (the window has seen it).
        let shared = try negotiated()
        let sent = try shared.processOutgoing(.binary(data), context: context)
        #expect(sent.rsv1)
        #expect(try shared.processIncoming(sent, context: context).data == data)
    }

    @Test("a frame with RSV1 already set is refused")
    func userRSV1() throws {
        let ext = try negotiated()
        #expect(throws: WebSocketError.self) {
            try ext.processOutgoing(Frame(kind: .text, data: Array("x".utf8), reservedBits: .rsv1), context: context)
        }
    }

    @Test("user fragments: RSV1 on the first only, sync-flush markers kept until the last, which loses its tail")
    func fragmentedOutgoing() throws {
        let ext = try negotiated()
        let parts = [sampleText(5000, seed: 1), sampleText(3000, seed: 2), [], sampleText(7000, seed: 3)]
        var frames: [Frame] = []
        for (i, part) in parts.enumerated() {
            let frame =
                i == 0
                ? Frame(kind: .text, fin: false, data: part)
                : Frame.continuation(part, fin: i == parts.count - 1)
            frames.append(try ext.processOutgoing(frame, context: context))
        }
        #expect(frames[0].rsv1)
        #expect(frames.dropFirst().allSatisfy { !$0.rsv1 })
        #expect(frames.map(\.fin) == [false, false, false, true])
        for frame in frames.dropLast() where !frame.data.isEmpty {
            #expect(Array(frame.data.suffix(4)) == [0, 0, 0xFF, 0xFF])
        }
        #expect(Array(frames[3].data.suffix(4)) != [0, 0, 0xFF, 0xFF])
        // The receiver reassembles and inflates the whole.
        let payload = frames.flatMap(\.data)
        let message = Frame(kind: .text, data: payload, reservedBits: .rsv1)
        #expect(try ext.processIncoming(message, context: context).data == parts.flatMap { $0 })
        // The window carries on into the next message.
        let next = try ext.processOutgoing(
            .text(String(decoding: sampleText(2000, seed: 1), as: UTF8.self)), context: context)
        #expect(try ext.processIncoming(next, context: context).data == sampleText(2000, seed: 1))
    }

    @Test("empty messages and an empty last fragment compress to 00 (RFC 7692 section 7.2.3.6) and read back")
    func emptyMessages() throws {
        let ext = try negotiated(everything)
        for _ in 0..<3 {
            let sent = try ext.processOutgoing(.text(""), context: context)
            #expect(sent.data == [0x00] && sent.rsv1)
            #expect(try ext.processIncoming(sent, context: context).data.isEmpty)
        }
        let first = try ext.processOutgoing(.text("Hello, fragments", fin: false), context: context)
        let last = try ext.processOutgoing(.continuation([], fin: true), context: context)
        #expect(last.data == [0x00] && !last.rsv1)
        let whole = Frame(kind: .text, data: first.data + last.data, reservedBits: .rsv1)
        #expect(try ext.processIncoming(whole, context: context).readText() == "Hello, fragments")
        let after = try ext.processOutgoing(.text("Hello, fragments"), context: context)
        #expect(try ext.processIncoming(after, context: context).readText() == "Hello, fragments")
    }

    struct RoundTrip: Sendable, CustomStringConvertible {
        var response: String
        var level: Int
        var description: String { "\(self.response) level \(self.level)" }
    }

    @Test(
        "round trips through the deflater and an inflater of the agreed window",
        arguments: [
            RoundTrip(response: "permessage-deflate", level: 6),
            RoundTrip(response: "permessage-deflate; client_no_context_takeover; server_no_context_takeover", level: 6),
            RoundTrip(response: "permessage-deflate; client_max_window_bits=9; server_max_window_bits=9", level: 9),
            // zlib deflates with 9 for 8; the 8-bit inflater must still read it.
            RoundTrip(response: "permessage-deflate; client_max_window_bits=8; server_max_window_bits=8", level: 9),
            RoundTrip(response: "permessage-deflate; client_max_window_bits=8; server_max_window_bits=8", level: 1),
            RoundTrip(response: "permessage-deflate; client_max_window_bits=12; server_max_window_bits=12", level: 0),
        ])
    func roundTrip(_ row: RoundTrip) throws {
        // One extension plays both ends: its deflater uses client_max_window_bits, its inflater
        // server_max_window_bits, and the rows keep them equal.
        let ext = try negotiated(.init(compressionLevel: row.level, compressionThreshold: 0), response: row.response)
        let sizes = [0, 1, 5, 31, 32, 200, 255, 256, 257, 1000, 4096, 65_536, 300_000]
        var total = 0
        var compressedTotal = 0
        for (i, size) in sizes.enumerated() {
            let data = i % 3 == 2 ? noise(size, seed: UInt64(i)) : sampleText(size, seed: UInt64(i % 2))
            let kind: Frame.Kind = i % 2 == 0 ? .text : .binary
            let sent = try ext.processOutgoing(Frame(kind: kind, data: data), context: context)
            total += size
            compressedTotal += sent.data.count
            let received = try ext.processIncoming(sent, context: context)
            #expect(received.data == data, "size \(size)")
            #expect(received.kind == kind && received.reservedBits.isEmpty)
        }
        if row.level > 0 { #expect(compressedTotal < total) }
    }

    @Test("server_no_context_takeover resets the inflater: a reference to the last message then fails")
    func serverNoContextTakeover() throws {
        let ext = try negotiated(response: "permessage-deflate; server_no_context_takeover")
        let hello = Frame(kind: .text, data: hex("f2 48 cd c9 c9 07 00"), reservedBits: .rsv1)
        #expect(try ext.processIncoming(hello, context: context).readText() == "Hello")
        let backReference = Frame(kind: .text, data: hex("f2 00 11 00 00"), reservedBits: .rsv1)
        #expect {
            try ext.processIncoming(backReference, context: context)
        } throws: { error in
            (error as? WebSocketError)?.code == .protocolViolation
        }
    }
}

// MARK: - Limits and corrupt data

@Suite("permessage-deflate: limits and corrupt data")
struct DeflateLimitTests {
    @Test("corrupt DEFLATE data fails with protocolViolation and close code 1002")
    func corrupt() throws {
        let ext = try negotiated()
        // BTYPE 11 is reserved in RFC 1951.
        let message = Frame(kind: .binary, data: [0xFF, 0xFF, 0xFF, 0xFF], reservedBits: .rsv1)
        #expect {
            try ext.processIncoming(message, context: context)
        } throws: { error in
            guard let error = error as? WebSocketError else { return false }
            return error.code == .protocolViolation && error.closeCode == .protocolError
        }
    }

    @Test("a message of exactly the limit passes; one byte more fails with 1009")
    func exactLimit() throws {
        let data = sampleText(100_000)
        let sender = try negotiated()
        let compressed = try sender.processOutgoing(.binary(data), context: context)
        let receiver = try negotiated()
        let exact = WebSocketExtensionContext(maxMessageSize: data.count)
        #expect(try receiver.processIncoming(compressed, context: exact).data == data)
        let fresh = try negotiated()
        #expect {
            try fresh.processIncoming(compressed, context: WebSocketExtensionContext(maxMessageSize: data.count - 1))
        } throws: { error in
            guard let error = error as? WebSocketError else { return false }
            return error.code == .messageTooBig && error.closeCode == .messageTooBig
        }
    }

    @Test("a 1 GiB bomb against a 1 MiB limit stops at the limit, quickly and without growing memory")
    func bomb() throws {
        // About 1 MiB of DEFLATE that inflates to 1 GiB of zeros.
        let deflater = try ZlibDeflater(level: 9, windowBits: 15, memoryLevel: 9)
        let zeros = [UInt8](repeating: 0, count: 4 << 20)
        var bomb: [UInt8] = []
        for i in 0..<256 { bomb += try deflater.compress(zeros, removingTail: i == 255) }
        #expect(bomb.count < 2 * oneMiB)

        let ext = try negotiated()
        let before = peakRSS()
        let clock = ContinuousClock()
        let start = clock.now
        #expect {
            try ext.processIncoming(
                Frame(kind: .binary, data: bomb, reservedBits: .rsv1),
                context: WebSocketExtensionContext(maxMessageSize: oneMiB))
        } throws: { error in
            guard let error = error as? WebSocketError else { return false }
            return error.code == .messageTooBig && error.closeCode == .messageTooBig
        }
        let elapsed = clock.now - start
        // Inflation stopped one byte past the limit, not after a gigabyte.
        #expect(ext.inflatedByteCount == oneMiB + 1)
        #expect(elapsed < .seconds(1), "took \(elapsed)")
        // Peak RSS is a high-water mark shared with concurrent tests: a gigabyte would show, a few MiB not.
        #expect(peakRSS() - before < 256 * oneMiB)
    }
}
