import Testing
import WSCore

private func randomBytes(_ count: Int, using rng: inout SplitMix64) -> [UInt8] {
    var bytes: [UInt8] = []
    bytes.reserveCapacity(count + 8)
    while bytes.count < count {
        withUnsafeBytes(of: rng.next()) { bytes.append(contentsOf: $0) }
    }
    bytes.removeLast(bytes.count - count)
    return bytes
}

private let hello: [UInt8] = Array("Hello".utf8)
private let rfcKey = MaskingKey(0x37, 0xFA, 0x21, 0x3D)

/// One example frame of RFC 6455 section 5.7 with its exact wire bytes.
struct RFC6455FrameExample: Sendable, CustomTestStringConvertible {
    var name: String
    var opcode: Opcode
    var fin: Bool
    var payload: [UInt8]
    var key: MaskingKey?
    var wire: [UInt8]
    var testDescription: String { self.name }
}

private let rfcExamples: [RFC6455FrameExample] = [
    RFC6455FrameExample(
        name: "single-frame unmasked text", opcode: .text, fin: true, payload: hello, key: nil,
        wire: [0x81, 0x05, 0x48, 0x65, 0x6C, 0x6C, 0x6F]
    ),
    RFC6455FrameExample(
        name: "single-frame masked text", opcode: .text, fin: true, payload: hello, key: rfcKey,
        wire: [0x81, 0x85, 0x37, 0xFA, 0x21, 0x3D, 0x7F, 0x9F, 0x4D, 0x51, 0x58]
    ),
    RFC6455FrameExample(
        name: "first fragment 'Hel'", opcode: .text, fin: false, payload: Array("Hel".utf8), key: nil,
        wire: [0x01, 0x03, 0x48, 0x65, 0x6C]
    ),
    RFC6455FrameExample(
        name: "last fragment 'lo'", opcode: .continuation, fin: true, payload: Array("lo".utf8), key: nil,
        wire: [0x80, 0x02, 0x6C, 0x6F]
    ),
    RFC6455FrameExample(
        name: "unmasked ping", opcode: .ping, fin: true, payload: hello, key: nil,
        wire: [0x89, 0x05, 0x48, 0x65, 0x6C, 0x6C, 0x6F]
    ),
    RFC6455FrameExample(
        name: "masked pong", opcode: .pong, fin: true, payload: hello, key: rfcKey,
        wire: [0x8A, 0x85, 0x37, 0xFA, 0x21, 0x3D, 0x7F, 0x9F, 0x4D, 0x51, 0x58]
    ),
    RFC6455FrameExample(
        name: "256-byte binary (16-bit length)", opcode: .binary, fin: true,
        payload: (0..<256).map { UInt8(truncatingIfNeeded: $0) }, key: nil,
        wire: [0x82, 0x7E, 0x01, 0x00] + (0..<256).map { UInt8(truncatingIfNeeded: $0) }
    ),
    RFC6455FrameExample(
        name: "64 KiB binary (64-bit length)", opcode: .binary, fin: true,
        payload: (0..<65536).map { UInt8(truncatingIfNeeded: $0 &* 7) }, key: nil,
        wire: [0x82, 0x7F, 0x00, 0x00, 0x00, 0x00, 0x00, 0x01, 0x00, 0x00]
            + (0..<65536).map { UInt8(truncatingIfNeeded: $0 &* 7) }
    ),
]

private func encode(
    opcode: Opcode,
    fin: Bool = true,
    rsv: Frame.ReservedBits = [],
    payload: [UInt8],
    key: MaskingKey? = nil
) -> [UInt8] {
    var out: [UInt8] = []
    payload.withUnsafeBytes {
        FrameEncoder.encode(opcode: opcode, fin: fin, reservedBits: rsv, payload: $0, maskingKey: key, into: &out)
    }
    return out
}

/// Feeds `chunks` one after the other, draining frames after each; returns the frames or the first error.
private func decode(
    _ chunks: [[UInt8]],
    role: FrameDecoder.Role,
    maxFrameSize: Int = 1 << 24,
    allowedReservedBits: Frame.ReservedBits = []
) -> (frames: [ParsedFrame], error: ProtocolViolation?, buffered: Int) {
    var decoder = FrameDecoder(maxFrameSize: maxFrameSize, role: role)
    decoder.allowedReservedBits = allowedReservedBits
    var frames: [ParsedFrame] = []
    for chunk in chunks {
        chunk.withUnsafeBytes { decoder.append($0) }
        do {
            while let frame = try decoder.nextFrame() { frames.append(frame) }
        } catch {
            return (frames, error, decoder.bufferedByteCount)
        }
    }
    return (frames, nil, decoder.bufferedByteCount)
}

@Suite("Frame encoder and decoder")
struct FrameCodecTests {
    @Test("RFC 6455 section 5.7 examples encode byte-exact", arguments: rfcExamples)
    func encodesRFC6455FrameExamples(_ example: RFC6455FrameExample) {
        #expect(
            encode(opcode: example.opcode, fin: example.fin, payload: example.payload, key: example.key) == example.wire
        )
    }

    @Test("RFC 6455 section 5.7 examples decode exactly", arguments: rfcExamples)
    func decodesRFC6455FrameExamples(_ example: RFC6455FrameExample) {
        let result = decode([example.wire], role: example.key == nil ? .client : .server)
        #expect(result.error == nil)
        #expect(result.frames == [ParsedFrame(fin: example.fin, opcode: example.opcode, payload: example.payload)])
        #expect(result.buffered == 0)
    }

    @Test(
        "header sizes for 7-, 16- and 64-bit lengths",
        arguments: [
            (0, 2), (1, 2), (125, 2), (126, 4), (127, 4), (65535, 4), (65536, 10), (1 << 20, 10), (Int(Int32.max), 10),
        ]
    )
    func headerSizes(length: Int, expected: Int) {
        #expect(FrameEncoder.headerSize(payloadLength: length, masked: false) == expected)
        #expect(FrameEncoder.headerSize(payloadLength: length, masked: true) == expected + 4)
    }

    @Test("length encodings at the 7/16/64-bit boundaries", arguments: [0, 125, 126, 65535, 65536, 70000])
    func lengthBoundaries(length: Int) {
        let payload = (0..<length).map { UInt8(truncatingIfNeeded: $0 % 253) }
        let wire = encode(opcode: .binary, payload: payload)
        let expectedHeader: [UInt8]
        switch length {
        case ...125: expectedHeader = [0x82, UInt8(length)]
        case ...65535: expectedHeader = [0x82, 126, UInt8(length >> 8), UInt8(length & 0xFF)]
        default:
            expectedHeader = [
                0x82, 127, 0, 0, 0, 0, UInt8(length >> 24), UInt8(length >> 16 & 0xFF),
                UInt8(length >> 8 & 0xFF), UInt8(length & 0xFF),
            ]
        }
        #expect(Array(wire.prefix(expectedHeader.count)) == expectedHeader)
        #expect(wire.count == expectedHeader.count + length)
        #expect(FrameEncoder.headerSize(payloadLength: length, masked: false) == expectedHeader.count)
        let result = decode([wire], role: .client)
        #expect(result.frames == [ParsedFrame(fin: true, opcode: .binary, payload: payload)])
    }

    @Test("masking with a fixed key XORs the payload with the rotating key, after the key")
    func fixedKeyMasking() {
        let key = MaskingKey(0x01, 0x02, 0x04, 0x80)
        let payload: [UInt8] = [0x00, 0x00, 0x00, 0x00, 0xFF, 0xFF, 0xFF, 0xFF, 0x10]
        let wire = encode(opcode: .binary, payload: payload, key: key)
        #expect(wire == [0x82, 0x89, 0x01, 0x02, 0x04, 0x80, 0x01, 0x02, 0x04, 0x80, 0xFE, 0xFD, 0xFB, 0x7F, 0x11])
        #expect(decode([wire], role: .server).frames == [ParsedFrame(fin: true, opcode: .binary, payload: payload)])
    }

    @Test("masked 16-bit and 64-bit frames put the key after the extended length")
    func maskedExtendedLengths() {
        let key = MaskingKey(0xAA, 0xBB, 0xCC, 0xDD)
        let short = encode(opcode: .text, payload: [UInt8](repeating: 0, count: 300), key: key)
        #expect(Array(short.prefix(8)) == [0x81, 0xFE, 0x01, 0x2C, 0xAA, 0xBB, 0xCC, 0xDD])
        #expect(Array(short[8..<12]) == [0xAA, 0xBB, 0xCC, 0xDD])
        let long = encode(opcode: .binary, payload: [UInt8](repeating: 0, count: 65536), key: key)
        #expect(Array(long.prefix(14)) == [0x82, 0xFF, 0, 0, 0, 0, 0, 1, 0, 0, 0xAA, 0xBB, 0xCC, 0xDD])
        #expect(long.count == 14 + 65536)
        #expect(Array(long.suffix(4)) == [0xAA, 0xBB, 0xCC, 0xDD])
    }

    @Test("flags: FIN, RSV1-3 and the opcode land in the first byte")
    func firstByteFlags() {
        #expect(encode(opcode: .text, fin: false, rsv: [.rsv1], payload: [])[0] == 0x41)
        #expect(encode(opcode: .binary, fin: true, rsv: .all, payload: [])[0] == 0xF2)
        #expect(encode(opcode: .continuation, fin: false, rsv: [.rsv2, .rsv3], payload: []) == [0x30, 0x00])
    }

    @Test("encoding a Frame equals encoding its parts, and appends to existing bytes")
    func encodesFrameValues() {
        let frame = Frame(kind: .text, fin: false, data: Array("héllo".utf8), reservedBits: .rsv1)
        var out: [UInt8] = [0xEE]
        FrameEncoder.encode(frame, maskingKey: rfcKey, into: &out)
        #expect(out == [0xEE] + encode(opcode: .text, fin: false, rsv: .rsv1, payload: frame.data, key: rfcKey))
        var close: [UInt8] = []
        FrameEncoder.encode(.close(CloseReason(code: .normal)), maskingKey: nil, into: &close)
        #expect(close == [0x88, 0x02, 0x03, 0xE8])
    }

    @Test("control frames of exactly 125 bytes and frames of exactly maxFrameSize are accepted")
    func limitsAreInclusive() {
        let ping = encode(opcode: .ping, payload: [UInt8](repeating: 7, count: 125))
        #expect(decode([ping], role: .client).frames.first?.payload.count == 125)
        let binary = encode(opcode: .binary, payload: [UInt8](repeating: 1, count: 1000))
        let result = decode([binary], role: .client, maxFrameSize: 1000)
        #expect(result.error == nil)
        #expect(result.frames.first?.payload.count == 1000)
    }

    @Test("an allowed reserved bit passes through")
    func allowedReservedBits() {
        let wire = encode(opcode: .text, rsv: .rsv1, payload: [1, 2, 3])
        let result = decode([wire], role: .client, allowedReservedBits: .rsv1)
        #expect(result.frames == [ParsedFrame(fin: true, reservedBits: .rsv1, opcode: .text, payload: [1, 2, 3])])
        #expect(result.frames.first?.kind == .text)
    }

    /// A malformed header and the close code the decoder must answer with.
    struct BadHeader: Sendable, CustomTestStringConvertible {
        var name: String
        var bytes: [UInt8]
        var role: FrameDecoder.Role = .client
        var maxFrameSize = 1 << 20
        var allowed: Frame.ReservedBits = []
        var code: CloseReason.Code
        var message: String
        var testDescription: String { self.name }
    }

    static let badHeaders: [BadHeader] =
        [0x3, 0x4, 0x5, 0x6, 0x7, 0xB, 0xC, 0xD, 0xE, 0xF].map { (opcode: UInt8) in
            BadHeader(
                name: "reserved opcode \(opcode)",
                bytes: [0x80 | opcode],
                code: .protocolError,
                message: "reserved opcode 0x\(String(opcode, radix: 16, uppercase: true))"
            )
        } + [
            BadHeader(name: "RSV1 not negotiated", bytes: [0xC1], code: .protocolError, message: "RSV1"),
            BadHeader(name: "RSV2 not negotiated", bytes: [0xA1], code: .protocolError, message: "RSV2"),
            BadHeader(name: "RSV3 not negotiated", bytes: [0x91], code: .protocolError, message: "RSV3"),
            BadHeader(
                name: "RSV2 while only RSV1 negotiated", bytes: [0xE1], allowed: .rsv1, code: .protocolError,
                message: "reserved bit RSV2 set"
            ),
            BadHeader(name: "close without FIN", bytes: [0x08], code: .protocolError, message: "fragmented control"),
            BadHeader(name: "ping without FIN", bytes: [0x09], code: .protocolError, message: "fragmented control"),
            BadHeader(name: "pong without FIN", bytes: [0x0A], code: .protocolError, message: "fragmented control"),
            BadHeader(
                name: "ping with 126-byte length", bytes: [0x89, 0x7E], code: .protocolError, message: "over 125 bytes"
            ),
            BadHeader(
                name: "close with 64-bit length", bytes: [0x88, 0x7F], code: .protocolError, message: "over 125 bytes"
            ),
            BadHeader(
                name: "masked frame to a client", bytes: [0x81, 0x80], code: .protocolError,
                message: "the server sent a masked frame"
            ),
            BadHeader(
                name: "unmasked frame to a server", bytes: [0x81, 0x00], role: .server, code: .protocolError,
                message: "the client sent an unmasked frame"
            ),
            BadHeader(
                name: "64-bit length with the MSB set", bytes: [0x82, 0x7F, 0x80, 0, 0, 0, 0, 0, 0, 0],
                code: .protocolError, message: "most significant bit"
            ),
            BadHeader(
                name: "64-bit length 2^63-1 over the limit",
                bytes: [0x82, 0x7F, 0x7F, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF],
                code: .messageTooBig, message: "exceeds the limit of 1048576 bytes"
            ),
            BadHeader(
                name: "64-bit length one over the limit", bytes: [0x82, 0x7F, 0, 0, 0, 0, 0, 0x10, 0x00, 0x01],
                code: .messageTooBig, message: "frame payload of 1048577 bytes exceeds the limit of 1048576 bytes"
            ),
            BadHeader(
                name: "16-bit length over the limit", bytes: [0x82, 0x7E, 0x01, 0x00], maxFrameSize: 255,
                code: .messageTooBig, message: "frame payload of 256 bytes exceeds the limit of 255 bytes"
            ),
            BadHeader(
                name: "7-bit length over the limit", bytes: [0x81, 0x0B], maxFrameSize: 10, code: .messageTooBig,
                message: "frame payload of 11 bytes"
            ),
            BadHeader(
                name: "masked 16-bit length over the limit (server)", bytes: [0x82, 0xFE, 0x01, 0x00], role: .server,
                maxFrameSize: 255, code: .messageTooBig, message: "256 bytes"
            ),
        ]

    @Test("every header error fails with its close code before the payload arrives", arguments: badHeaders)
    func headerErrors(_ bad: BadHeader) throws {
        // Only the header bytes are fed: the error must not wait for the payload.
        let result = decode(
            [bad.bytes], role: bad.role, maxFrameSize: bad.maxFrameSize, allowedReservedBits: bad.allowed)
        #expect(result.frames.isEmpty)
        let error = try #require(result.error)
        #expect(error.closeCode == bad.code)
        #expect(error.message.contains(bad.message), "message: \(error.message)")
    }

    @Test("a header error after good frames still delivers the good frames first")
    func errorAfterGoodFrames() {
        let wire = encode(opcode: .text, payload: hello) + encode(opcode: .ping, payload: []) + [0x83, 0x00]
        let result = decode([wire], role: .client)
        #expect(result.frames.map(\.opcode) == [.text, .ping])
        #expect(result.error?.closeCode == .protocolError)
    }

    @Test("after an error the decoder stays failed, throws the same error and drops input")
    func failureIsSticky() throws {
        var decoder = FrameDecoder(maxFrameSize: 100, role: .client)
        ([0x83, 0x00] as [UInt8]).withUnsafeBytes { decoder.append($0) }
        let first: ProtocolViolation
        do {
            _ = try decoder.nextFrame()
            Issue.record("expected an error")
            return
        } catch {
            first = error
        }
        #expect(first == ProtocolViolation(.protocolError, "reserved opcode 0x3"))
        encode(opcode: .text, payload: hello).withUnsafeBytes { decoder.append($0) }
        #expect(decoder.bufferedByteCount == 0)
        for _ in 0..<3 {
            #expect(throws: first) { try decoder.nextFrame() }
        }
    }

    @Test("returns nil until the frame is complete and counts buffered bytes")
    func incompleteFrames() throws {
        var decoder = FrameDecoder(maxFrameSize: 1 << 20, role: .server)
        let wire = encode(opcode: .binary, payload: [UInt8](repeating: 9, count: 300), key: rfcKey)
        for (i, byte) in wire.enumerated() {
            [byte].withUnsafeBytes { decoder.append($0) }
            if i < wire.count - 1 {
                #expect(try decoder.nextFrame() == nil)
                #expect(decoder.bufferedByteCount == i + 1)
            }
        }
        let frame = try #require(try decoder.nextFrame())
        #expect(frame.payload == [UInt8](repeating: 9, count: 300))
        #expect(decoder.bufferedByteCount == 0)
        #expect(try decoder.nextFrame() == nil)
    }

    @Test(
        "large frames (filled directly while they arrive) decode with chunk boundaries anywhere",
        arguments: [
            3, 1000, 65_535, 65_536, 1 << 20,
        ])
    func largeFramesInChunks(chunkSize: Int) {
        var rng = SplitMix64(seed: UInt64(chunkSize))
        for (role, key) in [(FrameDecoder.Role.server, MaskingKey(9, 8, 7, 6) as MaskingKey?), (.client, nil)] {
            let frames = [
                ParsedFrame(fin: false, opcode: .binary, payload: randomBytes(100_001, using: &rng)),
                ParsedFrame(fin: true, opcode: .ping, payload: [1, 2]),
                ParsedFrame(fin: true, opcode: .continuation, payload: randomBytes(65_536, using: &rng)),
                ParsedFrame(fin: true, opcode: .text, payload: Array("tail".utf8)),
                ParsedFrame(fin: true, reservedBits: .rsv1, opcode: .binary, payload: randomBytes(70_000, using: &rng)),
            ]
            var wire: [UInt8] = []
            for frame in frames {
                wire += encode(
                    opcode: frame.opcode, fin: frame.fin, rsv: frame.reservedBits, payload: frame.payload, key: key)
            }
            let chunks = stride(from: 0, to: wire.count, by: chunkSize).map {
                Array(wire[$0..<min(wire.count, $0 + chunkSize)])
            }
            let result = decode(chunks, role: role, allowedReservedBits: .rsv1)
            #expect(result.error == nil)
            #expect(result.frames == frames)
            #expect(result.buffered == 0)
        }
    }

    @Test("bufferedByteCount counts a large frame's bytes while they arrive")
    func bufferedCountDuringLargeFrame() throws {
        let payload = [UInt8](repeating: 0x33, count: 80_000)
        let wire =
            encode(opcode: .binary, payload: payload, key: rfcKey) + encode(opcode: .ping, payload: [7], key: rfcKey)
        var decoder = FrameDecoder(maxFrameSize: 1 << 20, role: .server)
        var fed = 0
        for size in [1, 5, 9, 50_000, 29_999, 1, 6] {
            Array(wire[fed..<fed + size]).withUnsafeBytes { decoder.append($0) }
            fed += size
            if fed < 80_014 {
                #expect(try decoder.nextFrame() == nil)
                #expect(decoder.bufferedByteCount == fed)
            }
        }
        #expect(fed == wire.count)
        #expect(try decoder.nextFrame() == ParsedFrame(fin: true, opcode: .binary, payload: payload))
        #expect(decoder.bufferedByteCount == 7)
        #expect(try decoder.nextFrame() == ParsedFrame(fin: true, opcode: .ping, payload: [7]))
        #expect(decoder.bufferedByteCount == 0)
        #expect(try decoder.nextFrame() == nil)
    }

    /// A few frames, masked or not, for the chunk-split tests.
    static let splitStreams: [(FrameDecoder.Role, [ParsedFrame], [MaskingKey?])] = [
        (
            .client,
            [
                ParsedFrame(fin: false, opcode: .text, payload: Array("Hel".utf8)),
                ParsedFrame(fin: true, opcode: .ping, payload: []),
                ParsedFrame(fin: true, opcode: .continuation, payload: Array("lo".utf8)),
                ParsedFrame(fin: true, opcode: .binary, payload: (0..<130).map { UInt8($0) }),
            ],
            [nil, nil, nil, nil]
        ),
        (
            .server,
            [
                ParsedFrame(fin: true, opcode: .text, payload: hello),
                ParsedFrame(fin: true, opcode: .close, payload: [0x03, 0xE8]),
                ParsedFrame(fin: true, opcode: .binary, payload: (0..<127).map { UInt8($0 ^ 0x5A) }),
            ],
            [rfcKey, MaskingKey(1, 2, 3, 4), MaskingKey(0xFF, 0, 0xFF, 0)]
        ),
    ]

    @Test("every split into two and three chunks decodes the same frames", arguments: 0..<2)
    func everyChunkSplit(_ streamIndex: Int) {
        let (role, frames, keys) = Self.splitStreams[streamIndex]
        var wire: [UInt8] = []
        for (frame, key) in zip(frames, keys) {
            wire += encode(opcode: frame.opcode, fin: frame.fin, payload: frame.payload, key: key)
        }
        // Byte by byte.
        #expect(decode(wire.map { [$0] }, role: role).frames == frames)
        // Every two-way and three-way split.
        for i in 0...wire.count {
            let two = decode([Array(wire[..<i]), Array(wire[i...])], role: role)
            #expect(two.frames == frames, "split at \(i)")
            #expect(two.buffered == 0)
            for j in i...wire.count {
                let three = decode([Array(wire[..<i]), Array(wire[i..<j]), Array(wire[j...])], role: role)
                if three.frames != frames {
                    Issue.record(
                        "split at \(i), \(j) gave \(three.frames.count) frames, error \(String(describing: three.error))"
                    )
                    return
                }
            }
        }
    }

    @Test(
        "randomized round trips: random frames encoded, concatenated, fed in random chunks",
        arguments: [
            UInt64(1), 2, 3, 0xDEAD_BEEF,
        ])
    func randomizedRoundTrips(seed: UInt64) throws {
        var rng = SplitMix64(seed: seed)
        let opcodes: [Opcode] = [.continuation, .text, .binary, .close, .ping, .pong]
        for role in [FrameDecoder.Role.client, .server] {
            var expected: [ParsedFrame] = []
            var wire: [UInt8] = []
            for _ in 0..<120 {
                let opcode = opcodes.randomElement(using: &rng)!
                let isControl = opcode.isControl
                let length: Int
                switch Int.random(in: 0..<10, using: &rng) {
                case 0: length = 0
                case 1..<6: length = Int.random(in: 0...125, using: &rng)
                case 6..<9: length = isControl ? 125 : Int.random(in: 126...70_000, using: &rng)
                default: length = isControl ? 0 : Int.random(in: 65_530...66_000, using: &rng)
                }
                let payload = randomBytes(length, using: &rng)
                let fin = isControl || Bool.random(using: &rng)
                let rsv = Frame.ReservedBits(rawValue: UInt8.random(in: 0...7, using: &rng) << 4)
                let key =
                    role == .server
                    ? MaskingKey(
                        .random(in: 0...255, using: &rng), .random(in: 0...255, using: &rng),
                        .random(in: 0...255, using: &rng), .random(in: 0...255, using: &rng))
                    : nil
                let frame = ParsedFrame(fin: fin, reservedBits: rsv, opcode: opcode, payload: payload)
                expected.append(frame)
                let before = wire.count
                wire += encode(opcode: opcode, fin: fin, rsv: rsv, payload: payload, key: key)
                #expect(
                    wire.count - before == FrameEncoder.headerSize(payloadLength: length, masked: key != nil) + length)
            }
            var chunks: [[UInt8]] = []
            var index = 0
            while index < wire.count {
                let size =
                    Bool.random(using: &rng)
                    ? Int.random(in: 1...20, using: &rng) : Int.random(in: 1...100_000, using: &rng)
                let end = min(wire.count, index + size)
                chunks.append(Array(wire[index..<end]))
                index = end
            }
            let result = decode(chunks, role: role, allowedReservedBits: .all)
            #expect(result.error == nil)
            #expect(result.frames.count == expected.count)
            #expect(result.frames == expected)
            #expect(result.buffered == 0)
        }
    }

    @Test("reserved bits are rejected by default even on otherwise valid random frames")
    func reservedBitsRejectedByDefault() {
        let result = decode([encode(opcode: .binary, rsv: .rsv3, payload: [1])], role: .client)
        #expect(
            result.error == ProtocolViolation(.protocolError, "reserved bit RSV3 set without a negotiated extension"))
    }

    @Test("ParsedFrame exposes its kind and whether it is a control frame")
    func parsedFrameHelpers() {
        #expect(ParsedFrame(fin: true, opcode: .close, payload: []).kind == .close)
        #expect(ParsedFrame(fin: true, opcode: .close, payload: []).isControl)
        #expect(!ParsedFrame(fin: true, opcode: .continuation, payload: []).isControl)
        #expect(ParsedFrame(fin: true, opcode: Opcode(rawValue: 0x3)!, payload: []).kind == nil)
    }
}
