import Testing

@testable import WSCore

/// The obvious definition: byte `i` of the payload is XORed with key byte `(offset + i) % 4`.
private func naiveMask(_ bytes: [UInt8], key: MaskingKey, offset: Int) -> [UInt8] {
    let k = [key.b0, key.b1, key.b2, key.b3]
    return bytes.enumerated().map { i, byte in byte ^ k[(offset + i) % 4] }
}

@Suite("Masking")
struct MaskingTests {
    @Test("applyMask equals the naive byte loop at every offset and length, from every alignment", arguments: 0..<4)
    func matchesNaiveLoop(offset: Int) {
        var rng = SplitMix64(seed: UInt64(offset) + 100)
        for length in 0...70 {
            let key = MaskingKey(
                .random(in: 0...255, using: &rng), .random(in: 0...255, using: &rng),
                .random(in: 0...255, using: &rng), .random(in: 0...255, using: &rng))
            let payload = (0..<length).map { _ in UInt8.random(in: 0...255, using: &rng) }
            let expected = naiveMask(payload, key: key, offset: offset)
            // Start the buffer at 0...7 bytes into an allocation so unaligned loads and stores are exercised.
            for misalignment in 0..<8 {
                var storage = [UInt8](repeating: 0xA5, count: misalignment) + payload + [0x5A, 0x5A]
                storage.withUnsafeMutableBytes { all in
                    applyMask(
                        key, to: UnsafeMutableRawBufferPointer(rebasing: all[misalignment..<misalignment + length]),
                        offset: offset)
                }
                #expect(
                    Array(storage[misalignment..<misalignment + length]) == expected,
                    "length \(length), misalignment \(misalignment)")
                #expect(storage.prefix(misalignment).allSatisfy { $0 == 0xA5 }, "wrote before the buffer")
                #expect(storage.suffix(2) == [0x5A, 0x5A], "wrote after the buffer")
            }
        }
    }

    @Test("offsets beyond 3 rotate like offset % 4")
    func largeOffsets() {
        let key = MaskingKey(1, 2, 3, 4)
        let payload = [UInt8](repeating: 0, count: 19)
        for offset in [4, 5, 6, 7, 1001, 1 << 40] {
            var bytes = payload
            applyMask(key, to: &bytes, offset: offset)
            #expect(bytes == naiveMask(payload, key: key, offset: offset % 4))
        }
    }

    @Test("a known vector: the RFC 6455 'Hello' with key 37 fa 21 3d")
    func knownVector() {
        var bytes = Array("Hello".utf8)
        applyMask(MaskingKey(0x37, 0xFA, 0x21, 0x3D), to: &bytes)
        #expect(bytes == [0x7F, 0x9F, 0x4D, 0x51, 0x58])
    }

    @Test("masking twice restores the input, and masking in pieces equals masking at once")
    func involutionAndPieces() {
        var rng = SplitMix64(seed: 7)
        let payload = (0..<1000).map { _ in UInt8.random(in: 0...255, using: &rng) }
        let key = MaskingKey(0xDE, 0xAD, 0xBE, 0xEF)
        var whole = payload
        applyMask(key, to: &whole)
        #expect(whole != payload)
        for cut in [0, 1, 2, 3, 5, 8, 13, 500, 999, 1000] {
            var pieces = payload
            pieces.withUnsafeMutableBytes { all in
                applyMask(key, to: UnsafeMutableRawBufferPointer(rebasing: all[..<cut]), offset: 0)
                applyMask(key, to: UnsafeMutableRawBufferPointer(rebasing: all[cut...]), offset: cut)
            }
            #expect(pieces == whole, "cut at \(cut)")
        }
        applyMask(key, to: &whole)
        #expect(whole == payload)
    }

    @Test("an empty buffer is left alone")
    func emptyBuffer() {
        var empty: [UInt8] = []
        applyMask(MaskingKey(1, 2, 3, 4), to: &empty, offset: 3)
        #expect(empty.isEmpty)
        applyMask(MaskingKey(1, 2, 3, 4), to: UnsafeMutableRawBufferPointer(start: nil, count: 0))
    }

    @Test("MaskingKey subscript picks b0...b3 by index % 4")
    func keySubscript() {
        let key = MaskingKey(10, 20, 30, 40)
        #expect((0..<8).map { key[$0] } == [10, 20, 30, 40, 10, 20, 30, 40])
    }

    @Test("the generator's keys are varied: few duplicates, every byte value, balanced bits, distinct streams")
    func generatorVariety() {
        var generator = MaskingKeyGenerator()
        var keys: [MaskingKey] = []
        for _ in 0..<10_000 { keys.append(generator.next()) }  // 64 bytes, then 256, 1,024 and 4,096 per refill.
        // 10 000 random 32-bit keys collide with probability ~1.2%; three or more collisions are ~1e-8.
        #expect(Set(keys).count >= 9_998)

        let bytes = keys.flatMap { [$0.b0, $0.b1, $0.b2, $0.b3] }
        var histogram = [Int](repeating: 0, count: 256)
        for byte in bytes { histogram[Int(byte)] += 1 }
        // 40 000 bytes: each value is expected 156 times (standard deviation ~12.5).
        #expect(histogram.min()! >= 90, "a byte value is too rare: \(histogram.min()!)")
        #expect(histogram.max()! <= 230, "a byte value is too common: \(histogram.max()!)")
        // Each of the 32 bit positions of a key is set about half of the time (20 000 ± 100 per byte position).
        for position in 0..<4 {
            for bit in 0..<8 {
                let ones = keys.count(where: { key in [key.b0, key.b1, key.b2, key.b3][position] >> bit & 1 == 1 })
                #expect((4_500...5_500).contains(ones), "bit \(bit) of byte \(position) set \(ones) times")
            }
        }
        // Two generators do not produce the same stream.
        var other = MaskingKeyGenerator()
        let otherKeys = (0..<16).map { _ in other.next() }
        #expect(otherKeys != Array(keys.prefix(16)))
        #expect(Set(otherKeys).count == 16)
    }

    @Test(
        "the generator's batches: 16 keys, then four times more per refill up to 1,024, every byte used once in order")
    func generatorBatches() {
        var generator = MaskingKeyGenerator()
        var rng = SystemRandomNumberGenerator()
        var produced: [UInt8] = []
        var requests: [Int] = []
        var drawn: [UInt8] = []
        var sizes: [Int] = []
        // 16 + 64 + 256 + 1,024 + 1,024 keys: exactly five batches.
        for _ in 0..<2_384 {
            let key = generator.next { buffer in
                requests.append(buffer.count)
                for i in 0..<buffer.count {
                    buffer[i] = rng.next()
                    produced.append(buffer[i])
                }
            }
            drawn += [key.b0, key.b1, key.b2, key.b3]
            sizes.append(generator.batchSize)
        }
        #expect(requests == [64, 256, 1_024, 4_096, 4_096])
        #expect(MaskingKeyGenerator.largestBatchSize == 4_096)
        // Every byte fetched became a key byte once, in order: none skipped, none reused.
        let mismatch = drawn.indices.first { $0 >= produced.count || drawn[$0] != produced[$0] }
        #expect(
            drawn.count == produced.count && mismatch == nil, "key bytes and fetched bytes differ at \(mismatch ?? -1)")
        #expect(sizes[15] == 64 && sizes[16] == 256 && sizes[80] == 1_024 && sizes[336] == 4_096)
        #expect(sizes.last == 4_096)
    }

    @Test("the generator's real source: a small first batch, growing while the session keeps sending")
    func generatorBatchSizes() {
        var generator = MaskingKeyGenerator()
        #expect(generator.batchSize == 0)
        var keys: [MaskingKey] = []
        for _ in 0..<16 { keys.append(generator.next()) }
        #expect(generator.batchSize == 64)
        keys.append(generator.next())
        #expect(generator.batchSize == 256)
        for _ in 0..<(64 + 256 + 1_024 + 100) { keys.append(generator.next()) }
        #expect(generator.batchSize == 4_096)
        // Pairs of consecutive keys are 64 random bits: a repeated pair means reused bytes.
        let pairs = (0..<keys.count - 1).map { [keys[$0], keys[$0 + 1]] }
        #expect(Set(pairs).count == pairs.count)
    }

    @Test("kernel randomness of any size fills the whole buffer (getrandom past 256 bytes)")
    func kernelRandomSizes() {
        for size in [256, 257, 1_000, 4_096, 5_000, 65_536] {
            var a = [UInt8](repeating: 0, count: size)
            var b = [UInt8](repeating: 0, count: size)
            a.withUnsafeMutableBytes { fillFromKernel($0) }
            b.withUnsafeMutableBytes { fillFromKernel($0) }
            #expect(a != b)
            // The last and the first 32 bytes are filled (32 zero bytes by chance: 2^-256).
            for bytes in [a, b] {
                #expect(!bytes.suffix(32).allSatisfy { $0 == 0 }, "size \(size): the tail was not filled")
                #expect(!bytes.prefix(32).allSatisfy { $0 == 0 }, "size \(size): the head was not filled")
            }
        }
    }

    @Test("the shared kernel random pool hands every byte out once, across refills and threads")
    func sharedKernelRandom() async {
        // 4 tasks × 1,000 handshake-key-sized slices (16 bytes: 16 per refill of 256) and odd sizes that straddle
        // refills: a byte handed out twice, or a pool that is not refilled, shows up as a repeated slice.
        let slices = await withTaskGroup(of: [[UInt8]].self) { group in
            for task in 0..<4 {
                group.addTask {
                    (0..<1_000).map { i in
                        let size = task == 3 ? 1 + (i * 37) % 255 : 16
                        var bytes = [UInt8](repeating: 0, count: size)
                        bytes.withUnsafeMutableBytes { fillRandom($0) }
                        return bytes
                    }
                }
            }
            var all: [[UInt8]] = []
            for await batch in group { all += batch }
            return all
        }
        let sixteen = slices.filter { $0.count == 16 }
        #expect(sixteen.count >= 3_000)
        #expect(Set(sixteen).count == sixteen.count, "a 16-byte slice was handed out twice")
        let long = slices.filter { $0.count >= 16 }
        #expect(Set(long.map { Array($0.prefix(16)) }).count == long.count)
        // Not zeros (the pool clears what it hands out: a slice taken twice would be all zeros the second time).
        #expect(!slices.contains { $0.count >= 8 && $0.allSatisfy { $0 == 0 } })
    }
}
