// The decoder's in-place input (`beginInput`/`endInput`): frames parsed straight out of the caller's read buffer
// must be exactly the frames the copying `append` yields, however the stream is split.
import Testing
import WSCore

@Suite("Frame decoder: in-place input")
struct FrameDecoderInputTests {
    /// A stream of unmasked server frames of many sizes (tiny, 16-bit and 64-bit lengths, over the direct-fill size).
    static func stream(seed: UInt64) -> (bytes: [UInt8], payloads: [[UInt8]]) {
        var rng = SplitMix64(seed: seed)
        var bytes: [UInt8] = []
        var payloads: [[UInt8]] = []
        let sizes = [0, 1, 5, 125, 126, 127, 300, 65_535, 65_536, 70_000, 3, 200_000, 17]
        for size in sizes.shuffled(using: &rng) {
            let payload = (0..<size).map { _ in UInt8.random(in: 0...255, using: &rng) }
            payload.withUnsafeBytes {
                FrameEncoder.encode(
                    opcode: .binary, fin: true, reservedBits: [], payload: $0, maskingKey: nil, into: &bytes)
            }
            payloads.append(payload)
        }
        return (bytes, payloads)
    }

    /// Feeds `bytes` in chunks of the sizes `cut` picks, in place, collecting payloads.
    static func decodeInPlace(_ bytes: [UInt8], chunks cut: (Int) -> Int) throws -> [[UInt8]] {
        var decoder = FrameDecoder(maxFrameSize: 1 << 20, role: .client)
        var payloads: [[UInt8]] = []
        var offset = 0
        while offset < bytes.count {
            let n = min(max(1, cut(offset)), bytes.count - offset)
            try bytes.withUnsafeBytes { all in
                decoder.beginInput(UnsafeRawBufferPointer(rebasing: all[offset..<offset + n]))
                defer { decoder.endInput() }
                while let frame = try decoder.nextFrame() { payloads.append(frame.payload) }
            }
            offset += n
        }
        #expect(decoder.bufferedByteCount == 0)
        return payloads
    }

    @Test(
        "whole stream at once, byte by byte, and random splits all yield the same frames",
        arguments: [1, 2, 3] as [UInt64])
    func splits(seed: UInt64) throws {
        let (bytes, expected) = Self.stream(seed: seed)
        #expect(try Self.decodeInPlace(bytes) { _ in Int.max } == expected)
        var rng = SplitMix64(seed: seed &* 7)
        #expect(try Self.decodeInPlace(bytes) { _ in Int.random(in: 1...70_000, using: &rng) } == expected)
        #expect(try Self.decodeInPlace(bytes) { _ in Int.random(in: 1...9, using: &rng) } == expected)
        #expect(try Self.decodeInPlace(bytes) { _ in 65_536 } == expected)
    }

    @Test("a violation inside lent input fails the decoder and keeps nothing of the input")
    func violationInLentInput() throws {
        var decoder = FrameDecoder(maxFrameSize: 1 << 20, role: .client)
        let bytes: [UInt8] = [0x82, 0x01, 0xAA, 0x83, 0x00, 0x82, 0x01, 0xBB]  // binary, reserved opcode 0x3, binary
        var first: [UInt8]?
        var thrown: ProtocolViolation?
        bytes.withUnsafeBytes { all in
            decoder.beginInput(all)
            defer { decoder.endInput() }
            do {
                first = try decoder.nextFrame()?.payload
                _ = try decoder.nextFrame()
            } catch let error as ProtocolViolation {
                thrown = error
            } catch {
                Issue.record("unexpected \(error)")
            }
        }
        #expect(first == [0xAA])
        #expect(thrown?.closeCode == .protocolError)
        #expect(decoder.bufferedByteCount == 0)
        #expect(throws: ProtocolViolation.self) { try decoder.nextFrame() }
    }

    @Test("an incomplete frame left in lent input is copied at endInput and completed by the next input")
    func leftoverCopied() throws {
        var decoder = FrameDecoder(maxFrameSize: 1 << 20, role: .client)
        var stream: [UInt8] = []
        let payload = Array("hello, world".utf8)
        payload.withUnsafeBytes {
            FrameEncoder.encode(opcode: .text, fin: true, reservedBits: [], payload: $0, maskingKey: nil, into: &stream)
        }
        var first = Array(stream[..<5])
        first.withUnsafeBytes { decoder.beginInput($0) }
        #expect(try decoder.nextFrame() == nil)
        decoder.endInput()
        // The caller's buffer is reused for the next read: the decoder must have kept its own copy.
        for i in first.indices { first[i] = 0 }
        #expect(decoder.bufferedByteCount == 5)
        let frame = try stream[5...].withUnsafeBytes { rest -> ParsedFrame? in
            decoder.beginInput(rest)
            defer { decoder.endInput() }
            return try decoder.nextFrame()
        }
        #expect(frame?.payload == payload)
    }

    @Test("a huge declared length under a huge maxFrameSize reserves nothing like it (found by fuzzing)")
    func hugeDeclaredLength() throws {
        var decoder = FrameDecoder(maxFrameSize: Int.max, role: .client)
        // Binary, 64-bit length 2^48, then 100 payload bytes: it used to reserve 256 TiB up front and crash.
        let bytes: [UInt8] =
            [0x82, 0x7F, 0x00, 0x01, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00] + [UInt8](repeating: 1, count: 100)
        bytes.withUnsafeBytes { decoder.append($0) }
        #expect(try decoder.nextFrame() == nil)
        #expect(decoder.bufferedByteCount == 110)
    }

    /// Frames of every kind the general path handles (RSV1 allowed, fragments, control frames, 16- and 64-bit lengths,
    /// payloads just under and over the fast path's limit) with the small whole text and binary frames it takes.
    static func mixedStream(seed: UInt64) -> [UInt8] {
        var rng = SplitMix64(seed: seed)
        var bytes: [UInt8] = []
        let opcodes: [Opcode] = [.text, .binary, .text, .binary, .continuation, .ping, .pong]
        for i in 0..<300 {
            let opcode = opcodes.randomElement(using: &rng)!
            // One frame with a 64-bit length, filled directly; the rest small or 16-bit.
            let size =
                opcode.isControl
                ? Int.random(in: 0...125, using: &rng)
                : i == 150 ? 70_000 : [0, 1, 7, 125, 126, 127, 299, 300, 301, 1_000].randomElement(using: &rng)!
            let payload = (0..<size).map { _ in UInt8.random(in: 0...255, using: &rng) }
            let fin = opcode.isControl || Int.random(in: 0..<4, using: &rng) > 0
            let rsv1 = !opcode.isControl && Int.random(in: 0..<6, using: &rng) == 0
            payload.withUnsafeBytes {
                FrameEncoder.encode(
                    opcode: opcode, fin: fin, reservedBits: rsv1 ? .rsv1 : [], payload: $0, maskingKey: nil,
                    into: &bytes)
            }
        }
        return bytes
    }

    /// Decodes `bytes` cut by `cut`, in place or with `append`, taking frames with `nextSmallDataFrame` first when
    /// `fast`, and checking that a frame it declines leaves the input untouched.
    static func decodeMixed(_ bytes: [UInt8], fast: Bool, inPlace: Bool, chunks cut: (Int) -> Int) throws
        -> [ParsedFrame]
    {
        var decoder = FrameDecoder(maxFrameSize: 1 << 20, role: .client)
        decoder.allowedReservedBits = .rsv1
        var frames: [ParsedFrame] = []
        func drain() throws {
            while true {
                let before = decoder.bufferedByteCount
                if fast, let (isText, payload) = decoder.nextSmallDataFrame(maxPayload: 300) {
                    frames.append(ParsedFrame(fin: true, opcode: isText ? .text : .binary, payload: payload))
                    continue
                }
                #expect(decoder.bufferedByteCount == before, "a declined frame must not be consumed")
                guard let frame = try decoder.nextFrame() else { return }
                frames.append(frame)
            }
        }
        var offset = 0
        while offset < bytes.count {
            let n = min(max(1, cut(offset)), bytes.count - offset)
            try bytes.withUnsafeBytes { all in
                let input = UnsafeRawBufferPointer(rebasing: all[offset..<offset + n])
                if inPlace {
                    decoder.beginInput(input)
                    defer { decoder.endInput() }
                    try drain()
                } else {
                    decoder.append(input)
                    try drain()
                }
            }
            offset += n
        }
        #expect(decoder.bufferedByteCount == 0)
        return frames
    }

    @Test(
        "the small-frame fast path yields exactly the frames nextFrame does, from lent input and from the buffer",
        arguments: [1, 2, 3, 4] as [UInt64])
    func smallFrameFastPath(seed: UInt64) throws {
        let bytes = Self.mixedStream(seed: seed)
        let expected = try Self.decodeMixed(bytes, fast: false, inPlace: true) { _ in Int.max }
        #expect(expected.count == 300)
        var rng = SplitMix64(seed: seed &* 13)
        for inPlace in [true, false] {
            #expect(try Self.decodeMixed(bytes, fast: true, inPlace: inPlace) { _ in Int.max } == expected)
            #expect(
                try Self.decodeMixed(bytes, fast: true, inPlace: inPlace) { _ in Int.random(in: 1...2_000, using: &rng)
                }
                    == expected)
            #expect(
                try Self.decodeMixed(bytes, fast: true, inPlace: inPlace) { _ in Int.random(in: 1...9, using: &rng) }
                    == expected)
        }
    }

    @Test("the small-frame fast path declines masked frames and frames over maxFrameSize; nextFrame fails them")
    func smallFrameFastPathDeclines() {
        for (bytes, maxFrameSize) in [([0x82, 0x81, 1, 2, 3, 4, 9] as [UInt8], 1 << 20), ([0x82, 0x03, 1, 2, 3], 2)] {
            var decoder = FrameDecoder(maxFrameSize: maxFrameSize, role: .client)
            bytes.withUnsafeBytes { input in
                decoder.beginInput(input)
                defer { decoder.endInput() }
                #expect(decoder.nextSmallDataFrame(maxPayload: 300) == nil)
                #expect(throws: ProtocolViolation.self) { try decoder.nextFrame() }
            }
        }
    }
}
