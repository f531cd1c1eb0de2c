// Hostile input from the server (RELIABILITY.md section 3.1, rows B2–B9), on both engines: every case asserts the
// error and close code a user sees, and where the attack is about growth, that resident memory stays bounded.
// Cases MisbehavingServerTests, BrokenHandshakeTests, WSTestingMisbehaviourTests and the deflate suites already
// cover are not repeated here (Docs/Reliability.md maps every row to its test).
import Foundation
import Synchronization
import Testing
import WSCore
import WSExtensions
import WSTesting

#if canImport(Glibc)
import Glibc
#endif

/// A frame header declaring a 64-bit payload length, with nothing after it.
private func header64(_ first: UInt8, length: UInt64) -> [UInt8] {
    [first, 127] + (0..<8).reversed().map { UInt8(truncatingIfNeeded: length >> (UInt64($0) * 8)) }
}

/// A session that fails: the error `incoming` threw, the close reason and what the server received.
private func expectFailure(
    _ outcome: Outcome, _ error: WebSocketError.Code, _ code: CloseReason.Code, _ what: String,
    serverMustReceive: Bool = true, sourceLocation: SourceLocation = #_sourceLocation
) {
    #expect(
        outcome.webSocketError?.code == error, "\(what): got \(String(describing: outcome.error))",
        sourceLocation: sourceLocation)
    #expect(outcome.webSocketError?.closeCode == code, "\(what)", sourceLocation: sourceLocation)
    #expect(
        outcome.closeReason?.code == code, "\(what): closeReason \(String(describing: outcome.closeReason))",
        sourceLocation: sourceLocation)
    if serverMustReceive {
        #expect(
            outcome.serverReceived?.code == code, "\(what): the client must send close \(code)",
            sourceLocation: sourceLocation)
    }
}

// MARK: - B2 huge and MSB-set lengths

@Suite("Hostile input: frame lengths (B2)")
struct HugeLengthTests {
    /// A declared length and what the client must do about it.
    struct Case: Sendable, CustomStringConvertible {
        /// The case's name.
        let description: String
        /// What the server sends.
        let bytes: [UInt8]
        /// The error `incoming` must throw.
        let error: WebSocketError.Code
        /// The close code the client must send and report.
        let code: CloseReason.Code
    }

    static let cases: [Case] = [
        Case(
            description: "binary, 2^63-1 bytes", bytes: header64(0x82, length: UInt64(Int64.max)),
            error: .messageTooBig, code: .messageTooBig),
        Case(
            description: "binary, 2^60 bytes", bytes: header64(0x82, length: 1 << 60), error: .messageTooBig,
            code: .messageTooBig),
        Case(
            description: "text, 2^32 bytes", bytes: header64(0x81, length: 1 << 32), error: .messageTooBig,
            code: .messageTooBig),
        Case(
            description: "binary, maxFrameSize + 1", bytes: header64(0x82, length: (1 << 20) + 1),
            error: .messageTooBig, code: .messageTooBig),
        Case(
            description: "first fragment, 2^62 bytes", bytes: header64(0x02, length: 1 << 62), error: .messageTooBig,
            code: .messageTooBig),
        Case(
            description: "MSB set (2^63)", bytes: header64(0x82, length: 1 << 63), error: .protocolViolation,
            code: .protocolError),
        Case(
            description: "MSB set (all ones)", bytes: header64(0x82, length: .max), error: .protocolViolation,
            code: .protocolError),
        Case(
            description: "MSB set on a text frame", bytes: header64(0x81, length: (1 << 63) | 5),
            error: .protocolViolation, code: .protocolError),
        Case(
            description: "ping with a 64-bit length", bytes: header64(0x89, length: 1 << 40), error: .protocolViolation,
            code: .protocolError),
    ]

    @Test(
        "a declared length is refused from the header, without allocating it",
        .enabled(if: MemoryIsolation.isChild, MemoryIsolation.skipReason), arguments: TestEngine.allCases, cases)
    func declaredLength(engine: TestEngine, testCase: Case) async throws {
        let bytes = testCase.bytes
        let start = ContinuousClock.now
        // Only the header is sent and the connection stays open: waiting for the payload would hang the test.
        let (outcome, growth) = try await ResidentMemory.peakGrowth("\(engine) \(testCase)") {
            try await exchange(engine) { session in try session.sendRaw(bytes) }
        }
        expectFailure(outcome, testCase.error, testCase.code, testCase.description)
        #expect(ContinuousClock.now - start < .seconds(10), "decided from the header, not after a timeout")
        #expect(growth < 8 << 20, "\(testCase): resident memory grew by \(mebibytes(growth))")
    }

    @Test("a 16-bit length over a small maxFrameSize is refused from the header", arguments: TestEngine.allCases)
    func sixteenBitLength(engine: TestEngine) async throws {
        let outcome = try await exchange(engine, configure: { $0.maxFrameSize = 1000 }) { session in
            try session.sendRaw([0x82, 126, 0xFF, 0xFF])
        }
        expectFailure(outcome, .messageTooBig, .messageTooBig, "65535-byte frame over a 1000-byte limit")
        #expect(outcome.webSocketError?.message.contains("maxFrameSize") == true, "the message names the setting")
    }
}

// MARK: - B3 endless fragments

@Suite("Hostile input: endless fragments (B3)")
struct FragmentFloodTests {
    /// One flood: the fragment payload size and how many continuation frames the server tries to send.
    struct Flood: Sendable, CustomStringConvertible {
        /// The flood's name.
        let description: String
        /// The payload size of each fragment.
        let fragmentSize: Int
        /// How many fragments the server tries to send.
        let fragments: Int
    }

    static let floods = [
        Flood(description: "10^6 one-byte fragments, FIN never sent", fragmentSize: 1, fragments: 1_000_000),
        Flood(description: "10^6 empty fragments, FIN never sent", fragmentSize: 0, fragments: 1_000_000),
        Flood(description: "64 KiB fragments past the 1 MiB message limit", fragmentSize: 64 << 10, fragments: 100),
    ]

    @Test(
        "an endless fragmented message ends with 1009 at the fragment or size cap; memory stays bounded",
        .enabled(if: MemoryIsolation.isChild, MemoryIsolation.skipReason), arguments: TestEngine.allCases, floods)
    func endless(engine: TestEngine, flood: Flood) async throws {
        let start = ContinuousClock.now
        let (outcome, growth) = try await ResidentMemory.peakGrowth("\(engine) \(flood)") {
            try await exchange(engine) { session in
                let fragment = rawFrame(0x00, [UInt8](repeating: 0x61, count: flood.fragmentSize))
                try session.sendRaw(rawFrame(0x01, [UInt8](repeating: 0x61, count: flood.fragmentSize)))
                // In batches of up to ~64 KiB; the client closes long before the end, which ends the writes.
                let perBatch = max(1, (64 << 10) / fragment.count)
                var batch: [UInt8] = []
                for _ in 0..<perBatch { batch += fragment }
                var count = 1
                while count < flood.fragments {
                    // After its close the client discards what still arrives, until the server closes.
                    do { try session.sendRaw(batch) } catch { return }
                    count += perBatch
                }
            }
        }
        // The server may be mid-write when the client gives up, so its reading of our close is best effort.
        expectFailure(outcome, .messageTooBig, .messageTooBig, flood.description, serverMustReceive: false)
        // The cap that trips: the fragment count for tiny fragments, the message size for big ones.
        let cap = flood.fragmentSize <= 1 ? "more than 65536 fragments" : "\(1 << 20)"
        #expect(outcome.webSocketError?.message.contains(cap) == true, "\(flood): \(String(describing: outcome.error))")
        #expect(growth < 8 << 20, "\(flood): resident memory grew by \(mebibytes(growth))")
        #expect(ContinuousClock.now - start < .seconds(20))
    }

    @Test(
        "the fragment cap counts frames, not bytes: maxFragments + 1 empty fragments fail, maxFragments pass",
        arguments: TestEngine.allCases)
    func exactCap(engine: TestEngine) async throws {
        let fragments = { (count: Int) -> [UInt8] in
            rawFrame(0x01, [0x61]) + Array([[UInt8]](repeating: rawFrame(0x00, []), count: count - 2).joined())
                + rawFrame(0x80, [0x62])
        }
        let atCap = fragments(100)
        let ok = try await exchange(engine, configure: { $0.maxFragments = 100 }) { session in
            try session.sendRaw(atCap)
            try session.send("after")
            try session.sendRaw(rawFrame(0x88, [0x03, 0xE8]))
        }
        #expect(ok.error == nil, "\(String(describing: ok.error))")
        #expect(ok.frames.map(\.kind) == [.text, .text, .close])
        #expect(ok.frames.prefix(2).map { try? $0.readText() } == ["ab", "after"])
        let overCap = fragments(101)
        let failed = try await exchange(engine, configure: { $0.maxFragments = 100 }) { session in
            try session.sendRaw(overCap)
        }
        expectFailure(failed, .messageTooBig, .messageTooBig, "101 fragments over a cap of 100")
    }
}

// MARK: - B4 deflate bombs

@Suite("Hostile input: deflate bombs (B4)")
struct DeflateBombTests {
    /// 25 × 4 MiB of zeros: about 100 KiB compressed, 100 MiB inflated.
    static let bomb: [UInt8] = (try? compressedMessage(25, of: [UInt8](repeating: 0, count: 4 << 20))) ?? []

    /// The bomb as frames: one RSV1 frame, or RSV1 on the first of `fragments` and continuations after it.
    static func frames(fragments: Int) -> [UInt8] {
        if fragments == 1 { return rawFrame(0xC2, bomb) }
        let size = (bomb.count + fragments - 1) / fragments
        var bytes: [UInt8] = []
        for (i, start) in stride(from: 0, to: bomb.count, by: size).enumerated() {
            let chunk = Array(bomb[start..<min(start + size, bomb.count)])
            let last = start + size >= bomb.count
            let first: UInt8 = (i == 0 ? 0x42 : 0x00) | (last ? 0x80 : 0x00)
            bytes += rawFrame(first, chunk)
        }
        return bytes
    }

    @Test(
        "a 100 KiB → 100 MiB bomb ends with 1009 at the 1 MiB limit; inflation never exceeds it",
        .enabled(if: MemoryIsolation.isChild, MemoryIsolation.skipReason), arguments: TestEngine.allCases, [1, 400])
    func bomb(engine: TestEngine, fragments: Int) async throws {
        #expect(Self.bomb.count < 120 << 10 && !Self.bomb.isEmpty)
        var configuration = WebSocketTestServer.Configuration()
        configuration.perMessageDeflate = true
        let frames = Self.frames(fragments: fragments)
        let received = Mutex<CloseReason?>(nil)
        let server = try WebSocketTestServer.start(
            configuration,
            handler: .custom { session in
                try session.sendRaw(frames)
                while let frame = try? session.receive() {
                    if frame.kind == .close { received.withLock { $0 = frame.readReason() } }
                }
            })
        defer { server.stop() }
        let client = engine.client { ws in try? ws.extensions { try $0.install(.perMessageDeflate()) } }
        let start = ContinuousClock.now
        let (error, growth) = try await ResidentMemory.peakGrowth("\(engine) bomb in \(fragments) frames") {
            try await withClient(client) { client -> WebSocketError? in
                let session = try await client.webSocketSession(server.url)
                #expect(session.extensions.map(\.name) == ["permessage-deflate"])
                do {
                    for try await _ in session.incoming {}
                    return nil
                } catch let error as WebSocketError {
                    #expect(await session.closeReason?.code == .messageTooBig)
                    return error
                }
            }
        }
        #expect(error?.code == .messageTooBig, "\(String(describing: error))")
        #expect(error?.closeCode == .messageTooBig)
        #expect(growth < 12 << 20, "inflating must stop at the limit; resident memory grew by \(mebibytes(growth))")
        #expect(ContinuousClock.now - start < .seconds(10))
        for _ in 0..<100 where received.withLock({ $0 }) == nil { try await Task.sleep(for: .milliseconds(20)) }
        #expect(received.withLock { $0 }?.code == .messageTooBig, "the server must receive close 1009")
    }
}

extension DeflateBombTests {
    @Test(
        "150 compressed 1 MB messages in one read (150 KiB → 150 MB) queue at most the 4 MiB limit; all arrive",
        .enabled(if: MemoryIsolation.isChild, MemoryIsolation.skipReason), arguments: TestEngine.allCases)
    func manyInOneRead(engine: TestEngine) async throws {
        let message = try compressedMessage(1, of: [UInt8](repeating: 0, count: 1_000_000))
        #expect(message.count < 2 << 10)
        let count = 150
        let frames = (0..<count).flatMap { _ in rawFrame(0xC2, message) }
        var configuration = WebSocketTestServer.Configuration()
        configuration.perMessageDeflate = true
        let server = try WebSocketTestServer.start(
            configuration,
            handler: .custom { session in
                try session.sendRaw(frames)
                while (try? session.receive()) != nil {}
            })
        defer { server.stop() }
        let client = engine.client { ws in try? ws.extensions { try $0.install(.perMessageDeflate()) } }
        let (received, growth) = try await ResidentMemory.peakGrowth("\(engine) \(count) bombs in one read") {
            try await withClient(client) { client -> Int in
                let session = try await client.webSocketSession(server.url)
                var received = 0
                for try await frame in session.incoming where frame.kind == .binary {
                    #expect(frame.data.count == 1_000_000)
                    received += 1
                    if received == count { break }
                }
                await session.close()
                return received
            }
        }
        #expect(received == count, "every message the server sent must arrive")
        #expect(growth < 24 << 20, "one read must not inflate past the incoming limits; grew by \(mebibytes(growth))")
    }
}

// MARK: - B5 bad extension negotiation

@Suite("Hostile input: extension negotiation (B5)")
struct ExtensionNegotiationTests {
    static let badResponses = [
        "permessage-deflate; server_max_window_bits=7",
        "permessage-deflate; server_max_window_bits=0",
        "permessage-deflate; server_max_window_bits=08",
        "permessage-deflate; client_max_window_bits=16",
        "permessage-deflate; server_max_window_bits=10; server_max_window_bits=11",
        "permessage-deflate; server_max_window_bits=\"1\"0",
        "permessage-deflate;;",
        "x-webkit-deflate-frame",
    ]

    @Test(
        "a response the offer does not allow fails the handshake with invalidHandshake", arguments: TestEngine.allCases,
        badResponses)
    func badParameters(engine: TestEngine, response: String) async throws {
        let server = try ScriptedServer { connection in
            try connection.acceptUpgrade(extraHeaders: "Sec-WebSocket-Extensions: \(response)\r\n")
            connection.drainUntilEnd()
        }
        defer { server.stop() }
        let client = engine.client { ws in try? ws.extensions { try $0.install(.perMessageDeflate()) } }
        try await withClient(client) { client in
            let error = await #expect(throws: WebSocketError.self, "\(response)") {
                _ = try await client.webSocketSession(server.url)
            }
            #expect(error?.code == .invalidHandshake, "\(response): \(String(describing: error))")
        }
    }

    @Test(
        "permessage-deflate accepted although nothing was offered is invalidHandshake", arguments: TestEngine.allCases)
    func notOffered(engine: TestEngine) async throws {
        let server = try ScriptedServer { connection in
            try connection.acceptUpgrade(extraHeaders: "Sec-WebSocket-Extensions: permessage-deflate\r\n")
            connection.drainUntilEnd()
        }
        defer { server.stop() }
        try await withClient(engine.client()) { client in
            let error = await #expect(throws: WebSocketError.self) {
                _ = try await client.webSocketSession(server.url)
            }
            #expect(error?.code == .invalidHandshake)
            #expect(error?.message.contains("not offered") == true, "\(String(describing: error))")
        }
    }

    /// RSV bits the negotiated extension does not own, or on frames where RSV1 has no meaning.
    static let rsvCases: [(String, [UInt8])] = [
        ("RSV2 with permessage-deflate", rawFrame(0xA1, Array("x".utf8))),
        ("RSV1 on a continuation frame", rawFrame(0x01, Array("a".utf8)) + rawFrame(0xC0, Array("b".utf8))),
        ("RSV1 on a ping", rawFrame(0xC9, [])),
    ]

    @Test(
        "with permessage-deflate negotiated, a reserved bit it does not own is 1002", arguments: TestEngine.allCases,
        0..<3)
    func foreignReservedBits(engine: TestEngine, index: Int) async throws {
        let (what, bytes) = Self.rsvCases[index]
        var configuration = WebSocketTestServer.Configuration()
        configuration.perMessageDeflate = true
        let received = Mutex<CloseReason?>(nil)
        let server = try WebSocketTestServer.start(
            configuration,
            handler: .custom { session in
                try session.sendRaw(bytes)
                while let frame = try? session.receive() {
                    if frame.kind == .close { received.withLock { $0 = frame.readReason() } }
                }
            })
        defer { server.stop() }
        let client = engine.client { ws in try? ws.extensions { try $0.install(.perMessageDeflate()) } }
        try await withClient(client) { client in
            let session = try await client.webSocketSession(server.url)
            #expect(session.extensions.map(\.name) == ["permessage-deflate"])
            let error = await #expect(throws: WebSocketError.self, "\(what)") {
                for try await _ in session.incoming {}
            }
            #expect(error?.code == .protocolViolation, "\(what): \(String(describing: error))")
            #expect(await session.closeReason?.code == .protocolError)
        }
        for _ in 0..<100 where received.withLock({ $0 }) == nil { try await Task.sleep(for: .milliseconds(20)) }
        #expect(received.withLock { $0 }?.code == .protocolError, "\(what): the server must receive 1002")
    }
}

// MARK: - B6 invalid UTF-8 anywhere

@Suite("Hostile input: invalid UTF-8 split anywhere (B6)")
struct InvalidUTF8Tests {
    /// Invalid sequences inside otherwise valid multi-byte text.
    static let invalidSequences: [(String, [UInt8])] = [
        ("a code point above U+10FFFF", [0xF4, 0x90, 0x80, 0x80]),
        ("a UTF-16 surrogate", [0xED, 0xA0, 0x80]),
        ("an overlong '/'", [0xC0, 0xAF]),
        ("a truncated 3-byte sequence", [0xE2, 0x82, 0x20]),
        ("a lone continuation byte", [0x80]),
        ("0xFF", [0xFF]),
    ]

    static func message(_ invalid: [UInt8]) -> [UInt8] { Array("κόσμε €𝄞 ".utf8) + invalid + Array(" tail".utf8) }

    @Test("invalid text split into two fragments at every byte is 1007", arguments: TestEngine.allCases, 0..<6)
    func splitAcrossFragments(engine: TestEngine, index: Int) async throws {
        let (what, invalid) = Self.invalidSequences[index]
        let message = Self.message(invalid)
        for split in 1..<message.count {
            let bytes = rawFrame(0x01, Array(message[..<split])) + rawFrame(0x80, Array(message[split...]))
            let outcome = try await exchange(engine) { session in try session.sendRaw(bytes) }
            expectFailure(outcome, .invalidUTF8, .invalidPayload, "\(what), fragments split at \(split)")
        }
    }

    @Test(
        "invalid text in one frame split across two TCP reads at every byte is 1007", arguments: TestEngine.allCases,
        [0, 1, 2])
    func splitAcrossReads(engine: TestEngine, index: Int) async throws {
        let (what, invalid) = Self.invalidSequences[index]
        let frame = rawFrame(0x81, Self.message(invalid))
        let splits = Array(2..<frame.count)
        let received = Mutex<[Int: CloseReason??]>([:])
        let order = Atomic<Int>(0)
        let server = try ScriptedServer(connections: splits.count) { connection in
            let split = splits[order.add(1, ordering: .relaxed).oldValue]
            try connection.acceptUpgrade()
            try connection.write(Array(frame[..<split]))
            // The first part is read on its own: the second goes out only once the client has read it.
            guard connection.waitUntilClientRead() else {
                throw RawConnectionError(
                    description: "TCP split at \(split): the client did not read the first part within 10 s")
            }
            try? connection.write(Array(frame[split...]))
            let reason = connection.readUntilClose()
            received.withLock { $0[split] = reason }
        }
        defer { server.stop() }
        try await withClient(engine.client()) { client in
            for split in splits {
                let session = try await client.webSocketSession(server.url)
                let error = await #expect(throws: WebSocketError.self) { for try await _ in session.incoming {} }
                #expect(error?.code == .invalidUTF8, "\(what), TCP split at \(split): \(String(describing: error))")
                #expect(await session.closeReason?.code == .invalidPayload)
            }
        }
        await server.waitUntilFinished(timeout: .seconds(15))
        #expect(server.scriptErrors.isEmpty, "\(what): \(server.scriptErrors)")
        let codes = received.withLock { $0 }
        for split in splits {
            let reason: CloseReason? = (codes[split] ?? nil) ?? nil
            #expect(reason?.code == .invalidPayload, "\(what), TCP split at \(split): the server must receive 1007")
        }
    }

    @Test(
        "invalid text fails fast: before the rest of a large frame or the final fragment arrives",
        arguments: TestEngine.allCases, [true, false])
    func failFast(engine: TestEngine, fragmented: Bool) async throws {
        // A 64 KiB text frame (or a first fragment) whose first bytes are invalid; the rest never comes.
        let payload = [UInt8](Array("ok ".utf8) + [0xED, 0xA0, 0x80] + [UInt8](repeating: 0x61, count: 65_530))
        var header: [UInt8] = [fragmented ? 0x01 : 0x81, 127]
        header += (0..<8).reversed().map { UInt8(truncatingIfNeeded: payload.count >> ($0 * 8)) }
        let partial = header + payload.prefix(100)
        let whole = rawFrame(0x01, Array(payload.prefix(100)))
        let start = ContinuousClock.now
        let outcome = try await exchange(engine) { session in try session.sendRaw(fragmented ? whole : partial) }
        expectFailure(outcome, .invalidUTF8, .invalidPayload, fragmented ? "first fragment" : "partial frame")
        #expect(ContinuousClock.now - start < .seconds(10), "must not wait for the rest of the message")
    }

    @Test(
        "valid multi-byte text split at every byte, across fragments and TCP reads, arrives intact",
        arguments: TestEngine.allCases)
    func validSplits(engine: TestEngine) async throws {
        let text = "aé€𝄞z"
        let bytes = Array(text.utf8)
        for split in 1..<bytes.count {
            let frames = rawFrame(0x01, Array(bytes[..<split])) + rawFrame(0x80, Array(bytes[split...]))
            // A raw close frame: exchange() then records the client's answer (ServerSession.close() would consume it).
            let outcome = try await exchange(engine) { session in
                try session.sendRaw(frames + rawFrame(0x88, [0x03, 0xE8]))
            }
            #expect(outcome.error == nil, "split at \(split): \(String(describing: outcome.error))")
            #expect(outcome.frames.first.flatMap { try? $0.readText() } == text, "split at \(split)")
        }
        let frame = rawFrame(0x81, bytes)
        let splits = Array(2..<frame.count)
        let order = Atomic<Int>(0)
        let server = try ScriptedServer(connections: splits.count) { connection in
            let split = splits[order.add(1, ordering: .relaxed).oldValue]
            try connection.acceptUpgrade()
            try connection.write(Array(frame[..<split]))
            guard connection.waitUntilClientRead() else {  // the first part is read on its own
                throw RawConnectionError(
                    description: "TCP split at \(split): the client did not read the first part within 10 s")
            }
            try connection.write(Array(frame[split...]))
            _ = connection.readUntilClose()
            try? connection.write(rawFrame(0x88, [0x03, 0xE8]))
        }
        defer { server.stop() }
        try await withClient(engine.client()) { client in
            for split in splits {
                let session = try await client.webSocketSession(server.url)
                #expect(try await nextMessage(session).readText() == text, "TCP split at \(split)")
                await session.close()
            }
        }
        #expect(await server.waitUntilFinished())
        #expect(server.scriptErrors.isEmpty, "\(server.scriptErrors)")
    }
}

// MARK: - B7 handshake abuse

@Suite("Hostile input: handshake abuse (B7)")
struct HandshakeAbuseTests {
    /// A scripted handshake response and the connection error it must produce.
    struct Case: Sendable, CustomStringConvertible {
        /// The case's name.
        let description: String
        /// The connection error the client must report.
        let error: WebSocketError.Code
        /// The response bytes, given the client's Sec-WebSocket-Key.
        let response: @Sendable (String) -> [UInt8]
    }

    static let fillerLines = (0..<129).map { "X-Filler-\($0): v\r\n" }.joined()

    static let cases: [Case] = [
        Case(description: "200 OK instead of 101", error: .upgradeRejected) { _ in
            Array("HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello".utf8)
        },
        Case(description: "302 redirect", error: .upgradeRejected) { _ in
            Array("HTTP/1.1 302 Found\r\nLocation: wss://elsewhere.example/\r\nContent-Length: 0\r\n\r\n".utf8)
        },
        Case(description: "101 without Connection", error: .invalidHandshake) { key in
            Array(
                "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nSec-WebSocket-Accept: \(RawHandshakeServer.accept(for: key))\r\n\r\n"
                    .utf8)
        },
        Case(description: "101 with Connection: keep-alive", error: .invalidHandshake) { key in
            Array(
                "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: keep-alive\r\nSec-WebSocket-Accept: \(RawHandshakeServer.accept(for: key))\r\n\r\n"
                    .utf8)
        },
        Case(description: "accept value in lower case", error: .invalidHandshake) { key in
            Array(
                "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: \(RawHandshakeServer.accept(for: key).lowercased())\r\n\r\n"
                    .utf8)
        },
        Case(description: "accept value of the key without the GUID", error: .invalidHandshake) { key in
            Array(
                "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: \(RawHandshakeServer.accept(for: key))x\r\n\r\n"
                    .utf8)
        },
        Case(description: "a 20 KiB header line", error: .invalidHandshake) { key in
            switchingProtocols(key: key, extraHeaders: "X-Long: \(String(repeating: "a", count: 20 << 10))\r\n")
        },
        Case(description: "129 header fields", error: .invalidHandshake) { key in
            switchingProtocols(key: key, extraHeaders: fillerLines)
        },
        Case(description: "obsolete line folding", error: .invalidHandshake) { key in
            switchingProtocols(key: key, extraHeaders: "X-Folded: a\r\n b\r\n")
        },
        Case(description: "a NUL in a header value", error: .invalidHandshake) { key in
            switchingProtocols(key: key, extraHeaders: "X-Nul: a\u{0}b\r\n")
        },
        Case(description: "binary garbage", error: .invalidHandshake) { _ in
            (0..<200).map { UInt8(truncatingIfNeeded: $0 &* 37) } + Array("\r\n\r\n".utf8)
        },
        Case(description: "HTTP/2 connection preface", error: .invalidHandshake) { _ in
            Array("PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n".utf8)
        },
    ]

    @Test("a broken handshake response is a typed connection error", arguments: TestEngine.allCases, cases)
    func brokenResponse(engine: TestEngine, testCase: Case) async throws {
        let server = try RawHandshakeServer { key in testCase.response(key) }
        defer { server.stop() }
        try await withClient(engine.client()) { client in
            let error = await #expect(throws: WebSocketError.self, "\(testCase)") {
                _ = try await client.webSocketSession("ws://127.0.0.1:\(server.port)/") {
                    $0.timeout.openTimeout = .seconds(20)
                }
            }
            #expect(error?.code == testCase.error, "\(testCase): \(String(describing: error))")
            if testCase.description == "302 redirect" {
                #expect(error?.status == 302)
                #expect(error?.message.contains("elsewhere.example") == true, "the message shows the Location")
            }
        }
    }

    /// What a response-head flood sends: 1 MiB of header lines at once, an endless stream of header lines, or one
    /// endless header line.
    enum Flood: String, Sendable, CaseIterable, CustomStringConvertible {
        case oneMiBOfHeaders = "1 MiB of header lines"
        case endlessHeaders = "an endless stream of header lines (64 MiB offered)"
        case endlessLine = "one endless header line (64 MiB offered)"
        var description: String { self.rawValue }
    }

    @Test(
        "oversized response heads fail fast with a clear invalidHandshake; memory stays bounded",
        .enabled(if: MemoryIsolation.isChild, MemoryIsolation.skipReason), arguments: TestEngine.allCases,
        Flood.allCases)
    func oversizedHead(engine: TestEngine, flood: Flood) async throws {
        let written = Atomic<Int>(0)
        let server = try ScriptedServer { connection in
            try connection.readHead()
            try connection.write(
                Array("HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n".utf8))
            let lines = (0..<1024).map { "X-Filler-\($0): \(String(repeating: "v", count: 48))\r\n" }.joined()
            let chunk = flood == .endlessLine ? [UInt8](repeating: 0x61, count: 64 << 10) : Array(lines.utf8)
            if flood == .endlessLine { try connection.write(Array("X-Endless: ".utf8)) }
            let total = flood == .oneMiBOfHeaders ? 1 << 20 : 64 << 20
            while written.load(ordering: .relaxed) < total {
                do { try connection.write(chunk) } catch { return }
                written.add(chunk.count, ordering: .relaxed)
            }
            if flood == .oneMiBOfHeaders { try? connection.write(Array("\r\n".utf8)) }
            connection.drainUntilEnd()
        }
        defer { server.stop() }
        let start = ContinuousClock.now
        let (error, growth) = try await ResidentMemory.peakGrowth("\(engine) \(flood)") {
            try await withClient(engine.client()) { client -> WebSocketError? in
                do {
                    let session = try await client.webSocketSession(server.url) {
                        $0.timeout.openTimeout = .seconds(30)
                    }
                    await session.close()
                    return nil
                } catch let error as WebSocketError {
                    return error
                }
            }
        }
        #expect(error?.code == .invalidHandshake, "\(flood): \(String(describing: error))")
        #expect(
            error?.message.contains("exceed") == true,
            "\(flood): the message says the head is too big: \(String(describing: error))")
        #expect(ContinuousClock.now - start < .seconds(15), "the limit trips, not the 30 s open timeout")
        #expect(growth < 8 << 20, "\(flood): resident memory grew by \(mebibytes(growth))")
        if flood != .oneMiBOfHeaders {
            #expect(written.load(ordering: .relaxed) < 32 << 20, "the client must hang up instead of reading on")
        }
    }

    @Test("a 101 response drip-fed one byte every 100 ms trips the open timeout", arguments: TestEngine.allCases)
    func slowloris(engine: TestEngine) async throws {
        let dripped = Atomic<Int>(0)
        let server = try ScriptedServer { connection in
            try connection.readHead()
            // About 300 bytes: 30 s at one byte per 100 ms.
            let response = switchingProtocols(
                key: connection.key, extraHeaders: "X-Padding: \(String(repeating: "p", count: 160))\r\n")
            dripped.store(connection.drip(response, every: .milliseconds(100)), ordering: .relaxed)
        }
        defer { server.stop() }
        let start = ContinuousClock.now
        try await withClient(engine.client()) { client in
            let error = await #expect(throws: WebSocketError.self) {
                _ = try await client.webSocketSession(server.url) { $0.timeout.openTimeout = .seconds(1) }
            }
            #expect(error?.code == .timedOut, "\(String(describing: error))")
            #expect(error?.message.contains("did not complete within") == true)
        }
        let elapsed = ContinuousClock.now - start
        // About 1 s on an idle machine; far below the 30 s the drip takes.
        #expect(
            elapsed >= .milliseconds(900) && elapsed < .seconds(20),
            "the 1 s open timeout ends it, not the drip: \(elapsed)")
        // The dripping stops at the first write after the client hung up.
        #expect(await server.waitUntilFinished(timeout: .seconds(10)), "the client must hang up")
        #expect(
            dripped.load(ordering: .relaxed) < 200, "the client hung up after \(dripped.load(ordering: .relaxed)) bytes"
        )
    }

    @Test(
        "a response sent on accept, before the request, is read when it arrives: the open fails at once",
        arguments: TestEngine.allCases)
    func responseBeforeRequest(engine: TestEngine) async throws {
        let server = try ScriptedServer { connection in
            // On accept, before the client's request: a complete rejection, then silence (no FIN, nothing more).
            // The bytes may reach the client while it is still connecting, before the transport takes the socket.
            try connection.write(Array("HTTP/1.1 503 Service Unavailable\r\nContent-Length: 0\r\n\r\n".utf8))
            connection.drainUntilEnd()
        }
        defer { server.stop() }
        let start = ContinuousClock.now
        try await withClient(engine.client()) { client in
            let error = await #expect(throws: WebSocketError.self) {
                _ = try await client.webSocketSession(server.url) { $0.timeout.openTimeout = .seconds(10) }
            }
            #expect(error?.code == .upgradeRejected, "\(String(describing: error))")
        }
        #expect(ContinuousClock.now - start < .seconds(5), "read when it arrived, not found at the 10 s open timeout")
    }

    @Test("a non-HTTP banner, then silence, fails within the open timeout", arguments: TestEngine.allCases)
    func banner(engine: TestEngine) async throws {
        let server = try ScriptedServer { connection in
            try connection.readHead()
            try connection.write(Array("SSH-2.0-OpenSSH_9.2p1 Debian-2\r\n".utf8))
            connection.drainUntilEnd()
        }
        defer { server.stop() }
        let start = ContinuousClock.now
        try await withClient(engine.client()) { client in
            let error = await #expect(throws: WebSocketError.self) {
                _ = try await client.webSocketSession(server.url) { $0.timeout.openTimeout = .seconds(1) }
            }
            // The status line is only parsed once the head is complete, so the open timeout ends this.
            #expect(error?.code == .invalidHandshake || error?.code == .timedOut, "\(String(describing: error))")
        }
        #expect(ContinuousClock.now - start < .seconds(20), "ended by the 1 s open timeout, not by the server")
    }
}

// MARK: - B8 control-frame abuse

@Suite("Hostile input: control-frame abuse (B8)")
struct ControlFrameAbuseTests {
    static let cases: [MisbehavingServerTests.Case] = [
        .init(
            description: "pong over 125 bytes", bytes: rawFrame(0x8A, [UInt8](repeating: 1, count: 126)),
            error: .protocolViolation, closeCode: .protocolError),
        .init(
            description: "close over 125 bytes",
            bytes: rawFrame(0x88, [0x03, 0xE8] + [UInt8](repeating: 0x61, count: 124)), error: .protocolViolation,
            closeCode: .protocolError),
        .init(
            description: "fragmented close", bytes: rawFrame(0x08, [0x03, 0xE8]), error: .protocolViolation,
            closeCode: .protocolError),
        .init(
            description: "ping with RSV1", bytes: rawFrame(0xC9, []), error: .protocolViolation,
            closeCode: .protocolError),
        .init(
            description: "close with RSV2", bytes: rawFrame(0xA8, [0x03, 0xE8]), error: .protocolViolation,
            closeCode: .protocolError),
        .init(
            description: "reserved control opcode 0xF", bytes: rawFrame(0x8F, []), error: .protocolViolation,
            closeCode: .protocolError),
        .init(
            description: "masked ping", bytes: rawFrame(0x89, [1, 2], masked: true), error: .protocolViolation,
            closeCode: .protocolError),
    ]

    @Test("a malformed control frame is 1002", arguments: TestEngine.allCases, cases)
    func malformed(engine: TestEngine, testCase: MisbehavingServerTests.Case) async throws {
        let bytes = testCase.bytes
        let outcome = try await exchange(engine) { session in try session.sendRaw(bytes) }
        expectFailure(outcome, testCase.error, testCase.closeCode, testCase.description)
    }

    /// 125-byte pings (or pongs) in batches of 512 frames (64 KiB).
    static func controlBatch(opcode: UInt8) -> [UInt8] {
        Array([[UInt8]](repeating: rawFrame(0x80 | opcode, [UInt8](repeating: 0x70, count: 125)), count: 512).joined())
    }

    @Test(
        "a 250k ping flood while the server never reads our pongs: memory bounded, still responsive",
        .enabled(if: MemoryIsolation.isChild, MemoryIsolation.skipReason), arguments: TestEngine.allCases)
    func pingFloodUnreadPongs(engine: TestEngine) async throws {
        // Above the outgoing limit (4 MiB) only the pong of the latest ping is kept until the transport drains.
        try await self.flood(engine, opcode: 0x9, count: 250_000)
    }

    @Test(
        "a 250k unsolicited pong flood (the control case): memory bounded, still responsive",
        .enabled(if: MemoryIsolation.isChild, MemoryIsolation.skipReason), arguments: TestEngine.allCases)
    func pongFlood(engine: TestEngine) async throws {
        try await self.flood(engine, opcode: 0xA, count: 250_000)
    }

    /// Floods `count` control frames at a reading client; the server never reads (a 4 KiB receive buffer), then sends
    /// a text message, reads everything and answers the close.
    private func flood(_ engine: TestEngine, opcode: UInt8, count: Int) async throws {
        let batch = Self.controlBatch(opcode: opcode)
        let batches = count / 512 + 1
        let server = try ScriptedServer(receiveBufferSize: 4096) { connection in
            try connection.acceptUpgrade()
            for _ in 0..<batches { try connection.write(batch) }
            try connection.write(rawFrame(0x81, Array("after the flood".utf8)))
            _ = connection.readUntilClose()
            try? connection.write(rawFrame(0x88, [0x03, 0xE8]))
        }
        defer { server.stop() }
        let client = engine.client { $0.closeTimeout = .seconds(5) }
        let start = ContinuousClock.now
        let (seen, growth) = try await ResidentMemory.peakGrowth("\(engine) flood of opcode \(opcode)") {
            try await withClient(client) { client -> Int in
                let session = try await client.webSocketSession(server.url)
                var seen = 0
                while true {
                    let frame = try await session.incoming.receive()
                    if frame.kind == .text {
                        #expect(try frame.readText() == "after the flood")
                        break
                    }
                    seen += 1
                }
                // Still responsive: a message out and the close handshake complete.
                try await session.send("still here")
                await session.close()
                #expect(await session.closeReason?.code == .normal)
                return seen
            }
        }
        // Pings and pongs never pause reading: those the consumer falls more than 16 behind on are dropped.
        #expect(seen > 0 && seen <= batches * 512, "\(seen) control frames delivered")
        // Buffering every pong costs about 110 bytes per ping (24 to 28 MiB for 250k); a bounded queue a few MiB.
        #expect(growth < 8 << 20, "a \(count)-frame flood grew resident memory by \(mebibytes(growth))")
        #expect(ContinuousClock.now - start < .seconds(30))
        #expect(server.scriptErrors.isEmpty, "\(server.scriptErrors)")
    }

    @Test(
        "a ping flood while the client does not read: reading goes on, memory stays flat, 16 pings wait at most",
        .enabled(if: MemoryIsolation.isChild, MemoryIsolation.skipReason), arguments: TestEngine.allCases)
    func pingFloodWhileNotReading(engine: TestEngine) async throws {
        let total = 20_000
        let lastPayload = [UInt8](repeating: 0x71, count: 125)
        let answered = Atomic<Bool>(false)
        let server = try ScriptedServer { connection in
            connection.setReceiveTimeout(.seconds(30))
            try connection.acceptUpgrade()
            let batch = Array(
                [[UInt8]](repeating: rawFrame(0x89, [UInt8](repeating: 0x70, count: 125)), count: 100).joined())
            for _ in 0..<(total / 100 - 1) { try connection.write(batch) }
            try connection.write(
                Array([[UInt8]](repeating: rawFrame(0x89, [UInt8](repeating: 0x70, count: 125)), count: 99).joined()))
            try connection.write(rawFrame(0x89, lastPayload))
            // The client answered the last ping: it read the whole flood although nobody consumed incoming.
            while let frame = try connection.readFrame(), !(frame.opcode == 0xA && frame.payload == lastPayload) {}
            answered.store(true, ordering: .releasing)
            try connection.write(rawFrame(0x81, Array("done".utf8)))
            _ = connection.readUntilClose()
            try? connection.write(rawFrame(0x88, [0x03, 0xE8]))
        }
        defer { server.stop() }
        try await withClient(engine.client()) { client in
            let session = try await client.webSocketSession(server.url)
            let (_, growth) = try await ResidentMemory.peakGrowth("\(engine) ping flood, not reading") {
                let deadline = ContinuousClock.now + .seconds(30)
                while !answered.load(ordering: .acquiring) && ContinuousClock.now < deadline {
                    try await Task.sleep(for: .milliseconds(10))
                }
            }
            let flooded = answered.load(ordering: .acquiring)
            #expect(flooded, "reading stopped: the last ping was never answered")
            #expect(growth < 8 << 20, "resident memory grew by \(mebibytes(growth)) while not reading")
            var pings: [[UInt8]] = []
            while true {
                let frame = try await session.incoming.receive()
                if frame.kind == .text { break }
                #expect(frame.kind == .ping)
                pings.append(frame.data)
            }
            #expect(pings.count <= 16, "\(pings.count) of \(total) pings waited in incoming")
            #expect(pings.last == lastPayload, "the newest ping is kept")
            await session.close()
            #expect(await session.closeReason?.code == .normal)
        }
    }
}

// MARK: - B9 close edge cases

@Suite("Hostile input: close frames (B9)")
struct CloseEdgeCaseTests {
    /// A close code that may not be sent: RFC 6455 section 7.4 (1005, 1006 and 1015 are local-only; 0–999 unused;
    /// 1004 and 1016–2999 reserved; 5000+ undefined).
    static let invalidCodes: [UInt16] = [0, 1, 999, 1004, 1005, 1006, 1015, 1016, 1100, 2000, 2999, 5000, 65535]

    // The codes run one after another inside each test: a case is a few milliseconds, and dozens of parallel
    // cases would each hold an engine, a server and their descriptors at once.

    @Test("a close code that may not be sent is 1002", arguments: TestEngine.allCases)
    func invalidCode(engine: TestEngine) async throws {
        for code in Self.invalidCodes {
            let outcome = try await exchange(engine) { session in
                try session.sendRaw(rawFrame(0x88, [UInt8(code >> 8), UInt8(code & 0xFF)] + Array("why".utf8)))
            }
            expectFailure(outcome, .protocolViolation, .protocolError, "close code \(code)")
        }
    }

    /// Codes a server may send (Autobahn 7.7.x plus the later IANA registrations 1012–1014).
    static let validCodes: [UInt16] = [
        1000, 1001, 1002, 1003, 1007, 1008, 1009, 1010, 1011, 1012, 1013, 1014, 3000, 3999, 4000, 4999,
    ]

    @Test("a valid close code ends the session cleanly and is echoed", arguments: TestEngine.allCases)
    func validCode(engine: TestEngine) async throws {
        for code in Self.validCodes {
            let outcome = try await exchange(engine) { session in
                try session.sendRaw(rawFrame(0x88, [UInt8(code >> 8), UInt8(code & 0xFF)] + Array("bye".utf8)))
            }
            #expect(outcome.error == nil, "close \(code): \(String(describing: outcome.error))")
            #expect(outcome.closeReason == CloseReason(code: CloseReason.Code(code), message: "bye"), "close \(code)")
            #expect(outcome.frames.last?.kind == .close, "close \(code)")
            #expect(outcome.serverReceived?.code == CloseReason.Code(code), "the client echoes \(code)")
        }
    }

    /// Invalid UTF-8 in close reasons.
    static let invalidReasons: [[UInt8]] = [
        [0xC3], [0xED, 0xA0, 0x80], [0xC0, 0xAF], Array("ok".utf8) + [0xF8, 0x88, 0x80, 0x80, 0x80],
    ]

    @Test("a close reason that is not UTF-8 is 1007", arguments: TestEngine.allCases, invalidReasons)
    func invalidReason(engine: TestEngine, reason: [UInt8]) async throws {
        let outcome = try await exchange(engine) { session in
            try session.sendRaw(rawFrame(0x88, [0x03, 0xE8] + reason))
        }
        expectFailure(outcome, .invalidUTF8, .invalidPayload, "reason \(reason)")
    }

    @Test("a 125-byte close (code and a 123-byte UTF-8 reason) is valid", arguments: TestEngine.allCases)
    func maximalClose(engine: TestEngine) async throws {
        let reason = String(repeating: "é", count: 61) + "x"  // 123 bytes
        let outcome = try await exchange(engine) { session in
            try session.sendRaw(rawFrame(0x88, [0x0F, 0xA0] + Array(reason.utf8)))
        }
        #expect(outcome.error == nil, "\(String(describing: outcome.error))")
        #expect(outcome.closeReason == CloseReason(code: 4000, message: reason))
        #expect(outcome.serverReceived?.code == CloseReason.Code(4000))
    }

    @Test("an empty close is 1005 locally and answered with an empty close", arguments: TestEngine.allCases)
    func emptyClose(engine: TestEngine) async throws {
        let outcome = try await exchange(engine) { session in try session.sendRaw(rawFrame(0x88, [])) }
        #expect(outcome.error == nil)
        #expect(outcome.closeReason?.code == .noStatus)
        #expect(outcome.serverReceived?.code == .noStatus, "an empty close frame goes back (recorded as 1005)")
    }

    @Test("nothing after the server's close frame is delivered", arguments: TestEngine.allCases)
    func dataAfterClose(engine: TestEngine) async throws {
        let outcome = try await exchange(engine) { session in
            try session.sendRaw(rawFrame(0x88, [0x03, 0xE8]) + rawFrame(0x81, Array("late".utf8)) + rawFrame(0x89, []))
        }
        #expect(outcome.error == nil)
        #expect(outcome.frames.map(\.kind) == [.close], "got \(outcome.frames.map(\.kind))")
        #expect(outcome.closeReason?.code == .normal)
    }
}

// MARK: - The memory tests, in a process of their own

@Suite("Bounded memory under hostile input (a process of its own)")
struct MemoryBoundTests {
    @Test(
        "every memory-bounded case passes in a child process where nothing else allocates",
        .enabled(if: !MemoryIsolation.isChild && !FaultTests.isDNSChild))
    func isolatedRun() async throws {
        let result = try await ChildTestRun.run(
            filter: MemoryIsolation.filter, environment: [MemoryIsolation.variable: "1", "WS_TEST_PRINT_RSS": "1"],
            parallel: false, timeout: .seconds(300))
        let lines = result.output.split(separator: "\n")
        let report = lines.filter { $0.contains("RSS growth") || $0.contains("✘") || $0.contains("Test run with") }
            .joined(separator: "\n")
        #expect(
            result.status == 0,
            "the memory tests failed in their own process:\n\(report)\n\(result.output.suffix(4000))")
        // 8 tests, 9 with network namespaces (the throttled link); a cancelled one still counts as run.
        let count = ChildTestRun.testCount(in: result.output) ?? 0
        #expect(count >= 8, "the child ran \(count) tests:\n\(report)")
        #expect(!lines.contains { $0.contains("✘") }, "\(report)")
    }
}
