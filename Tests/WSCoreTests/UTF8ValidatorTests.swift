import Testing
import WSCore

/// A reference fail-fast checker written from the Unicode table of well-formed byte sequences (Table 3-7): the
/// index of the first byte after which the input can no longer become valid UTF-8, or `nil`; plus whether it
/// ends at a character boundary.
private func referenceCheck(_ bytes: [UInt8]) -> (failIndex: Int?, complete: Bool) {
    var remaining = 0
    var low: UInt8 = 0x80
    var high: UInt8 = 0xBF
    for (i, b) in bytes.enumerated() {
        if remaining == 0 {
            switch b {
            case 0x00...0x7F: continue
            case 0xC2...0xDF:
                remaining = 1
                low = 0x80
                high = 0xBF
            case 0xE0:
                remaining = 2
                low = 0xA0
                high = 0xBF
            case 0xE1...0xEC, 0xEE...0xEF:
                remaining = 2
                low = 0x80
                high = 0xBF
            case 0xED:
                remaining = 2
                low = 0x80
                high = 0x9F
            case 0xF0:
                remaining = 3
                low = 0x90
                high = 0xBF
            case 0xF1...0xF3:
                remaining = 3
                low = 0x80
                high = 0xBF
            case 0xF4:
                remaining = 3
                low = 0x80
                high = 0x8F
            default: return (i, false)
            }
        } else {
            guard b >= low && b <= high else { return (i, false) }
            remaining -= 1
            low = 0x80
            high = 0xBF
        }
    }
    return (nil, remaining == 0)
}

/// Feeds `bytes` one byte at a time; the index of the first byte for which `feed` returned false.
private func firstFailureFedByteByByte(_ bytes: [UInt8]) -> (failIndex: Int?, complete: Bool) {
    var validator = UTF8Validator()
    for (i, byte) in bytes.enumerated() {
        if ![byte].withUnsafeBytes({ validator.feed($0) }) { return (i, false) }
    }
    return (nil, validator.isAtCharacterBoundary)
}

private func validate(_ bytes: [UInt8]) -> Bool {
    bytes.withUnsafeBytes { UTF8Validator.validate($0) }
}

/// A test vector: bytes, whether they are valid, and where a fail-fast validator must first reject them.
struct UTF8ValidatorVector: Sendable, CustomTestStringConvertible {
    var name: String
    var bytes: [UInt8]
    /// The byte at which validation must fail, `nil` if no byte makes the input unfixable.
    var failIndex: Int?
    /// Whether the whole input is valid (then `failIndex` is nil).
    var valid: Bool
    var testDescription: String { self.name }

    static func valid(_ name: String, _ bytes: [UInt8]) -> UTF8ValidatorVector {
        UTF8ValidatorVector(name: name, bytes: bytes, failIndex: nil, valid: true)
    }
    static func invalid(_ name: String, _ bytes: [UInt8], failAt: Int?) -> UTF8ValidatorVector {
        UTF8ValidatorVector(name: name, bytes: bytes, failIndex: failAt, valid: false)
    }
}

private let kosme: [UInt8] = [0xCE, 0xBA, 0xE1, 0xBD, 0xB9, 0xCF, 0x83, 0xCE, 0xBC, 0xCE, 0xB5]

private let vectors: [UTF8ValidatorVector] = [
    .valid("empty", []),
    .valid("ASCII", Array("Hello, world".utf8)),
    .valid("kosme (Autobahn 6.2)", kosme),
    .valid("Hello-µ@ßöäüàá-UTF-8!!", Array("Hello-µ@ßöäüàá-UTF-8!!".utf8)),
    .valid("U+0000", [0x00]),
    .valid("U+007F", [0x7F]),
    .valid("U+0080", [0xC2, 0x80]),
    .valid("U+07FF", [0xDF, 0xBF]),
    .valid("U+0800", [0xE0, 0xA0, 0x80]),
    .valid("U+D7FF", [0xED, 0x9F, 0xBF]),
    .valid("U+E000", [0xEE, 0x80, 0x80]),
    .valid("U+FFFD", [0xEF, 0xBF, 0xBD]),
    .valid("U+FFFF", [0xEF, 0xBF, 0xBF]),
    .valid("U+10000", [0xF0, 0x90, 0x80, 0x80]),
    .valid("U+10FFFF", [0xF4, 0x8F, 0xBF, 0xBF]),
    .valid(
        "long ASCII then multibyte", Array(String(repeating: "abcdefgh", count: 5).utf8) + [0xF0, 0x9F, 0x98, 0x80]),
    .invalid("overlong NUL C0 80", [0xC0, 0x80], failAt: 0),
    .invalid("overlong C1 BF", [0xC1, 0xBF], failAt: 0),
    .invalid("overlong 3-byte E0 80 80", [0xE0, 0x80, 0x80], failAt: 1),
    .invalid("overlong 3-byte E0 9F BF", [0xE0, 0x9F, 0xBF], failAt: 1),
    .invalid("overlong 4-byte F0 80 80 80", [0xF0, 0x80, 0x80, 0x80], failAt: 1),
    .invalid("overlong 4-byte F0 8F BF BF", [0xF0, 0x8F, 0xBF, 0xBF], failAt: 1),
    .invalid("surrogate U+D800 ED A0 80", [0xED, 0xA0, 0x80], failAt: 1),
    .invalid("surrogate U+DFFF ED BF BF", [0xED, 0xBF, 0xBF], failAt: 1),
    .invalid("surrogate pair ED A0 80 ED B0 80", [0xED, 0xA0, 0x80, 0xED, 0xB0, 0x80], failAt: 1),
    .invalid("above U+10FFFF F4 90 80 80", [0xF4, 0x90, 0x80, 0x80], failAt: 1),
    .invalid("F5 lead", [0xF5, 0x80, 0x80, 0x80], failAt: 0),
    .invalid("FE", [0xFE], failAt: 0),
    .invalid("FF", [0xFF], failAt: 0),
    .invalid("lone continuation 80", [0x80], failAt: 0),
    .invalid("lone continuation BF after ASCII", [0x41, 0xBF], failAt: 1),
    .invalid("two-byte lead then ASCII", [0xC2, 0x41], failAt: 1),
    .invalid("three-byte sequence cut by ASCII", [0xE1, 0x80, 0x41], failAt: 2),
    .invalid("four-byte sequence cut by ASCII", [0xF1, 0x80, 0x80, 0x41], failAt: 3),
    .invalid(
        "Autobahn 6.3.1: kosme + surrogate + 'edited'", kosme + [0xED, 0xA0, 0x80] + Array("edited".utf8), failAt: 12),
    .invalid(
        "Autobahn 6.4.1-style: kosme + F4 90 80 80 + 'edited'",
        kosme + [0xF4, 0x90, 0x80, 0x80] + Array("edited".utf8), failAt: 12),
    .invalid("invalid after 40 ASCII bytes", Array(String(repeating: "x", count: 40).utf8) + [0xFF], failAt: 40),
    .invalid("truncated two-byte C2", [0xC2], failAt: nil),
    .invalid("truncated three-byte E0 A0", [0xE0, 0xA0], failAt: nil),
    .invalid("truncated four-byte F0 90 80", [0xF0, 0x90, 0x80], failAt: nil),
    .invalid("ASCII then truncated euro sign", Array("abc".utf8) + [0xE2, 0x82], failAt: nil),
]

@Suite("UTF-8 validator")
struct UTF8ValidatorTests {
    @Test("each vector's verdict, whole and fed byte by byte, fails at the right byte", arguments: vectors)
    func vectorVerdicts(_ vector: UTF8ValidatorVector) {
        #expect(validate(vector.bytes) == vector.valid)
        #expect(
            (String(validating: vector.bytes, as: UTF8.self) != nil) == vector.valid, "vector disagrees with the stdlib"
        )
        let fed = firstFailureFedByteByByte(vector.bytes)
        #expect(fed.failIndex == vector.failIndex)
        #expect(fed.complete == vector.valid)
        #expect(referenceCheck(vector.bytes).failIndex == vector.failIndex, "vector disagrees with the reference")
    }

    @Test("each vector split at every byte boundary gives the same verdict", arguments: vectors)
    func everySplit(_ vector: UTF8ValidatorVector) {
        for cut in 0...vector.bytes.count {
            var validator = UTF8Validator()
            let first = Array(vector.bytes[..<cut])
            let second = Array(vector.bytes[cut...])
            let firstOK = first.withUnsafeBytes { validator.feed($0) }
            let secondOK = second.withUnsafeBytes { validator.feed($0) }
            // The first chunk fails exactly when it contains the failing byte.
            #expect(firstOK == (vector.failIndex.map { $0 >= cut } ?? true), "cut \(cut)")
            #expect((firstOK && secondOK && validator.isAtCharacterBoundary) == vector.valid, "cut \(cut)")
        }
    }

    @Test("a failed validator stays failed until reset")
    func failureIsSticky() {
        var validator = UTF8Validator()
        #expect(!([0xC0] as [UInt8]).withUnsafeBytes { validator.feed($0) })
        #expect(validator.isInvalid)
        #expect(!Array("fine".utf8).withUnsafeBytes { validator.feed($0) })
        #expect(!validator.isAtCharacterBoundary)
        validator.reset()
        #expect(validator.isAtCharacterBoundary)
        #expect(!validator.isInvalid)
        #expect(Array("fine".utf8).withUnsafeBytes { validator.feed($0) })
        #expect(validator.isAtCharacterBoundary)
    }

    @Test("a character split across feeds is fine; the boundary flag follows it")
    func characterAcrossFeeds() {
        var validator = UTF8Validator()
        #expect(([0x61, 0xF0, 0x9F] as [UInt8]).withUnsafeBytes { validator.feed($0) })
        #expect(!validator.isAtCharacterBoundary)
        #expect(([0x98] as [UInt8]).withUnsafeBytes { validator.feed($0) })
        #expect(!validator.isAtCharacterBoundary)
        #expect(([0x80, 0x62] as [UInt8]).withUnsafeBytes { validator.feed($0) })
        #expect(validator.isAtCharacterBoundary)
    }

    @Test("every one- and two-byte input agrees with the stdlib and the fail-fast reference")
    func exhaustiveShortInputs() {
        for a in 0...255 {
            let one = [UInt8(a)]
            #expect(validate(one) == (String(validating: one, as: UTF8.self) != nil))
            for b in 0...255 {
                let two = [UInt8(a), UInt8(b)]
                let expected = referenceCheck(two)
                let fed = firstFailureFedByteByByte(two)
                if validate(two) != (String(validating: two, as: UTF8.self) != nil)
                    || fed.failIndex != expected.failIndex
                {
                    Issue.record("disagreement on \(two)")
                    return
                }
            }
        }
    }

    @Test("three-byte inputs around every lead byte agree with the stdlib and the fail-fast reference")
    func exhaustiveThreeByteInputs() {
        let interesting: [UInt8] = [
            0x00, 0x41, 0x7F, 0x80, 0x8F, 0x90, 0x9F, 0xA0, 0xBF, 0xC0, 0xC1, 0xC2, 0xDF, 0xE0, 0xE1,
            0xEC, 0xED, 0xEE, 0xEF, 0xF0, 0xF1, 0xF3, 0xF4, 0xF5, 0xFF,
        ]
        for a in interesting {
            for b in interesting {
                for c in interesting {
                    for d in [UInt8(0x41), 0x80, 0xBF] {
                        let bytes = [a, b, c, d]
                        let expected = referenceCheck(bytes)
                        let fed = firstFailureFedByteByByte(bytes)
                        if validate(bytes) != (String(validating: bytes, as: UTF8.self) != nil)
                            || fed.failIndex != expected.failIndex
                        {
                            Issue.record("disagreement on \(bytes)")
                            return
                        }
                    }
                }
            }
        }
    }

    @Test("differential: random byte strings agree with String(validating:as:)", arguments: [UInt64(11), 12, 13])
    func differentialAgainstStdlib(seed: UInt64) {
        var rng = SplitMix64(seed: seed)
        var validCount = 0
        for _ in 0..<3_000 {
            var bytes: [UInt8] = []
            if Bool.random(using: &rng) {
                // Valid text from random scalars of every length class, then one byte corrupted half of the time.
                for _ in 0..<Int.random(in: 0...20, using: &rng) {
                    switch Int.random(in: 0..<3, using: &rng) {
                    case 0: bytes.append(UInt8.random(in: 0...0x7F, using: &rng))
                    case 1: bytes += Array(String(Unicode.Scalar(UInt8.random(in: 0x80...0xFF, using: &rng))).utf8)
                    default:
                        let value = UInt32.random(in: 0x800...0x10FFFF, using: &rng)
                        if let scalar = Unicode.Scalar(value) { bytes += Array(String(scalar).utf8) }
                    }
                }
                if !bytes.isEmpty && Bool.random(using: &rng) {
                    bytes[Int.random(in: 0..<bytes.count, using: &rng)] = UInt8.random(in: 0...255, using: &rng)
                }
            } else {
                // Short random strings over the bytes that matter: leads, continuations, invalid bytes, ASCII.
                let alphabet: [UInt8] = [
                    0x41, 0x7F, 0x80, 0x8F, 0x90, 0x9F, 0xA0, 0xBF, 0xC0, 0xC2, 0xDF, 0xE0, 0xE1, 0xED,
                    0xEF, 0xF0, 0xF1, 0xF4, 0xF5, 0xFF,
                ]
                for _ in 0..<Int.random(in: 0...6, using: &rng) { bytes.append(alphabet.randomElement(using: &rng)!) }
            }
            let expected = String(validating: bytes, as: UTF8.self) != nil
            if expected { validCount += 1 }
            #expect(validate(bytes) == expected, "bytes \(bytes)")
            let fed = firstFailureFedByteByByte(bytes)
            #expect(fed.failIndex == referenceCheck(bytes).failIndex, "bytes \(bytes)")
            #expect((fed.failIndex == nil && fed.complete) == expected)
        }
        // Both verdicts are exercised.
        #expect(validCount > 300 && validCount < 2_700)
    }

    @Test("the ASCII fast path notices a non-ASCII byte at every position of a long run")
    func fastPathPositions() {
        for position in 0..<40 {
            var bytes = [UInt8](repeating: 0x61, count: 40)
            bytes[position] = 0x80
            #expect(firstFailureFedByteByByte(bytes).failIndex == position)
            var validator = UTF8Validator()
            #expect(!bytes.withUnsafeBytes { validator.feed($0) })
            bytes[position] = 0xC3
            if position < 39 {
                bytes[position + 1] = 0xA9
                #expect(validate(bytes))
            } else {
                #expect(!validate(bytes))
            }
        }
    }
}
