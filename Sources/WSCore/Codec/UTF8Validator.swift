/// An incremental UTF-8 validator: a Bjoern Hoehrmann-style DFA, with fast paths that skip ASCII 8 bytes at a
/// time and whole valid multibyte characters at once.
///
/// It rejects overlong encodings, surrogates (U+D800–U+DFFF) and code points above U+10FFFF, and it fails fast:
/// ``feed(_:)`` returns `false` at the first byte after which the input can no longer be completed into valid
/// UTF-8 (e.g. at `A0` in `ED A0`, or at `90` in `F4 90`), as RFC 6455 section 8.1 and Autobahn case 6.x expect.
/// Whether the input ended mid-character is ``isAtCharacterBoundary``.
package struct UTF8Validator: Sendable {
    private static let accept: UInt8 = 0
    private static let reject: UInt8 = 12

    /// Bytes 0–255: the byte's character class. Bytes 256...: the transition table, indexed by
    /// `256 + state + class`, where states are multiples of 12 (0 accept, 12 reject, 24 one continuation byte
    /// left, 36 two left, 48 after E0, 60 after ED, 72 after F0, 84 after F1–F3, 96 after F4).
    private static let table: [UInt8] = [
        // 00–7F: ASCII.
        0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0,
        0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0,
        0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0,
        0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0,
        // 80–8F: class 1, 90–9F: class 9, A0–BF: class 7 (continuation bytes).
        1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 9, 9, 9, 9, 9, 9, 9, 9, 9, 9, 9, 9, 9, 9, 9, 9,
        7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7,
        // C0–C1: class 8 (always overlong), C2–DF: class 2 (two-byte lead).
        8, 8, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2,
        // E0: 10, E1–EC: 3, ED: 4, EE–EF: 3, F0: 11, F1–F3: 6, F4: 5, F5–FF: 8 (invalid).
        10, 3, 3, 3, 3, 3, 3, 3, 3, 3, 3, 3, 3, 4, 3, 3, 11, 6, 6, 6, 5, 8, 8, 8, 8, 8, 8, 8, 8, 8, 8, 8,
        // Transitions; columns are classes 0–11.
        0, 12, 24, 36, 60, 96, 84, 12, 12, 12, 48, 72,  // 0: accept
        12, 12, 12, 12, 12, 12, 12, 12, 12, 12, 12, 12,  // 12: reject
        12, 0, 12, 12, 12, 12, 12, 0, 12, 0, 12, 12,  // 24: one continuation byte left
        12, 24, 12, 12, 12, 12, 12, 24, 12, 24, 12, 12,  // 36: two continuation bytes left
        12, 12, 12, 12, 12, 12, 12, 24, 12, 12, 12, 12,  // 48: after E0, A0–BF
        12, 24, 12, 12, 12, 12, 12, 12, 12, 24, 12, 12,  // 60: after ED, 80–9F
        12, 12, 12, 12, 12, 12, 12, 36, 12, 36, 12, 12,  // 72: after F0, 90–BF
        12, 36, 12, 12, 12, 12, 12, 36, 12, 36, 12, 12,  // 84: after F1–F3, 80–BF
        12, 36, 12, 12, 12, 12, 12, 12, 12, 12, 12, 12,  // 96: after F4, 80–8F
    ]

    private var state: UInt8 = UTF8Validator.accept

    /// Creates a validator at a character boundary.
    package init() {}

    /// Whether everything fed so far is valid and complete: no character is cut off at the end.
    package var isAtCharacterBoundary: Bool { self.state == Self.accept }

    /// Whether the input has been found invalid; it stays invalid until ``reset()``.
    package var isInvalid: Bool { self.state == Self.reject }

    /// Validates the next bytes of the input.
    /// - Parameter bytes: The next bytes; a character may span calls.
    /// - Returns: `false` as soon as the input so far cannot be completed into valid UTF-8, and on every call
    ///   after that; `true` otherwise (possibly in the middle of a character).
    package mutating func feed(_ bytes: UnsafeRawBufferPointer) -> Bool {
        var state = self.state
        if state == Self.reject { return false }
        guard let base = bytes.baseAddress else { return true }
        let count = bytes.count
        let valid = Self.table.withUnsafeBufferPointer { table -> Bool in
            var i = 0
            while i < count {
                if state == Self.accept {
                    // ASCII fast path: skip 8 bytes at a time while their high bits are all clear.
                    while count &- i >= 8,
                        base.loadUnaligned(fromByteOffset: i, as: UInt64.self) & 0x8080_8080_8080_8080 == 0
                    {
                        i &+= 8
                    }
                    while i < count, base.load(fromByteOffset: i, as: UInt8.self) < 0x80 { i &+= 1 }
                    // Multibyte fast path: skip whole, valid characters while 4 bytes are available.
                    var skipped = false
                    while count &- i >= 4 {
                        let length = Self.validSequenceLength(base + i)
                        if length == 0 { break }
                        i &+= length
                        skipped = true
                    }
                    if skipped { continue }  // Back to the ASCII path.
                    if i == count { break }
                }
                // The DFA, one byte at a time: at the end of the input, inside a character split across calls,
                // and to find the exact byte at which invalid input fails.
                let byte = base.load(fromByteOffset: i, as: UInt8.self)
                state = table[256 &+ Int(state) &+ Int(table[Int(byte)])]
                if state == Self.reject { return false }
                i &+= 1
            }
            return true
        }
        self.state = valid ? state : Self.reject
        return valid
    }

    /// The length (2–4) of the valid multibyte character at `p` (4 readable bytes), or 0 if `p` starts with an
    /// ASCII byte or with anything but a complete, valid character.
    @inline(__always)
    private static func validSequenceLength(_ p: UnsafeRawPointer) -> Int {
        let b0 = p.load(as: UInt8.self)
        let b1 = p.load(fromByteOffset: 1, as: UInt8.self)
        switch b0 {
        case 0xC2...0xDF:
            return b1 & 0xC0 == 0x80 ? 2 : 0
        case 0xE0...0xEF:
            let b2 = p.load(fromByteOffset: 2, as: UInt8.self)
            let low: UInt8 = b0 == 0xE0 ? 0xA0 : 0x80
            let high: UInt8 = b0 == 0xED ? 0x9F : 0xBF
            return b1 >= low && b1 <= high && b2 & 0xC0 == 0x80 ? 3 : 0
        case 0xF0...0xF4:
            let b2 = p.load(fromByteOffset: 2, as: UInt8.self)
            let b3 = p.load(fromByteOffset: 3, as: UInt8.self)
            let low: UInt8 = b0 == 0xF0 ? 0x90 : 0x80
            let high: UInt8 = b0 == 0xF4 ? 0x8F : 0xBF
            return b1 >= low && b1 <= high && b2 & 0xC0 == 0x80 && b3 & 0xC0 == 0x80 ? 4 : 0
        default:
            return 0
        }
    }

    /// Returns to the initial state, forgetting any error.
    package mutating func reset() {
        self.state = Self.accept
    }

    /// Whether `bytes` is complete, valid UTF-8.
    /// - Parameter bytes: The whole input.
    package static func validate(_ bytes: UnsafeRawBufferPointer) -> Bool {
        var validator = UTF8Validator()
        return validator.feed(bytes) && validator.isAtCharacterBoundary
    }
}
