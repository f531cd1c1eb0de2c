// FrameEncoder.encodedFrame and FrameEncoder.withEncodedFrame (what a session sends) must produce exactly the bytes of
// FrameEncoder.encode, whichever of their paths (append, copy-and-mask in one pass, a temporary buffer) they take.
import Testing
import WSCore

@Suite("Frame encoder: encodedFrame")
struct EncodedFrameTests {
    @Test(
        "encodedFrame equals encode for every length class, masked or not",
        arguments: [0, 1, 5, 125, 126, 1_010, 1_023, 1_024, 1_025, 65_535, 65_536, 70_001] as [Int])
    func sameBytes(length: Int) {
        var rng = SplitMix64(seed: UInt64(length) &+ 11)
        let data = (0..<length).map { _ in UInt8.random(in: 0...255, using: &rng) }
        let key = MaskingKey(0x12, 0x9A, 0x00, 0xFF)
        for frame in [
            Frame(kind: .binary, data: data), Frame(kind: .text, fin: false, data: data),
            Frame(kind: .continuation, data: data, reservedBits: .rsv1),
        ] {
            for maskingKey in [key, nil] as [MaskingKey?] {
                var expected: [UInt8] = []
                FrameEncoder.encode(frame, maskingKey: maskingKey, into: &expected)
                #expect(FrameEncoder.encodedFrame(frame, maskingKey: maskingKey) == expected)
                if let maskingKey, length <= FrameEncoder.maxTemporaryPayload {
                    var temporary: [UInt8] = []
                    let count = FrameEncoder.withEncodedFrame(frame, maskingKey: maskingKey) { bytes in
                        temporary = Array(bytes)
                        return bytes.count
                    }
                    #expect(temporary == expected)
                    #expect(count == expected.count)
                }
            }
        }
    }

    @Test("a masked frame decodes back to its payload with a server-role decoder")
    func roundTrip() throws {
        var decoder = FrameDecoder(maxFrameSize: 1 << 20, role: .server)
        let data = (0..<100_000).map { UInt8(truncatingIfNeeded: $0 &* 7) }
        let bytes = FrameEncoder.encodedFrame(Frame(kind: .binary, data: data), maskingKey: MaskingKey(1, 2, 3, 4))
        bytes.withUnsafeBytes { decoder.append($0) }
        #expect(try decoder.nextFrame()?.payload == data)
    }
}
