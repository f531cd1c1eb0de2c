/// Base64 with the standard alphabet and padding (RFC 4648 section 4), for handshake keys.
package enum Base64 {
    private static let alphabet: [UInt8] = Array(
        "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/".utf8)

    /// Encodes bytes as padded base64.
    /// - Parameter bytes: The bytes to encode.
    /// - Returns: The base64 text, e.g. `AQID` for `[1, 2, 3]`.
    package static func encode(_ bytes: some Collection<UInt8>) -> String {
        let input = Array(bytes)
        let outputCount = (input.count + 2) / 3 * 4
        guard outputCount > 0 else { return "" }
        return Self.alphabet.withUnsafeBufferPointer { alphabet in
            String(unsafeUninitializedCapacity: outputCount) { output in
                var o = 0
                var i = 0
                while i + 3 <= input.count {
                    let chunk = UInt32(input[i]) << 16 | UInt32(input[i + 1]) << 8 | UInt32(input[i + 2])
                    output[o] = alphabet[Int(chunk >> 18 & 0x3F)]
                    output[o + 1] = alphabet[Int(chunk >> 12 & 0x3F)]
                    output[o + 2] = alphabet[Int(chunk >> 6 & 0x3F)]
                    output[o + 3] = alphabet[Int(chunk & 0x3F)]
                    i += 3
                    o += 4
                }
                let rest = input.count - i
                if rest > 0 {
                    let chunk = UInt32(input[i]) << 16 | (rest == 2 ? UInt32(input[i + 1]) << 8 : 0)
                    output[o] = alphabet[Int(chunk >> 18 & 0x3F)]
                    output[o + 1] = alphabet[Int(chunk >> 12 & 0x3F)]
                    output[o + 2] = rest == 2 ? alphabet[Int(chunk >> 6 & 0x3F)] : UInt8(ascii: "=")
                    output[o + 3] = UInt8(ascii: "=")
                    o += 4
                }
                return o
            }
        }
    }

    /// Decodes padded base64 strictly: the length must be a multiple of 4, only the standard alphabet is allowed
    /// (no whitespace), `=` only as one or two final padding characters, and the unused bits before padding
    /// must be zero (so every byte string has exactly one accepted encoding).
    /// - Parameter string: The base64 text.
    /// - Returns: The decoded bytes, or `nil` if `string` is not canonical base64.
    package static func decode(_ string: String) -> [UInt8]? {
        let input = Array(string.utf8)
        guard input.count % 4 == 0 else { return nil }
        guard !input.isEmpty else { return [] }
        var padding = 0
        if input[input.count - 1] == UInt8(ascii: "=") { padding += 1 }
        if input[input.count - 2] == UInt8(ascii: "=") { padding += 1 }
        if padding == 1 && input[input.count - 2] == UInt8(ascii: "=") { return nil }
        var output: [UInt8] = []
        output.reserveCapacity(input.count / 4 * 3 - padding)
        var i = 0
        while i < input.count {
            let isLast = i + 4 == input.count
            let used = isLast ? 4 - padding : 4
            var chunk: UInt32 = 0
            for k in 0..<4 {
                chunk <<= 6
                guard k < used else { continue }
                guard let value = Self.value(of: input[i + k]) else { return nil }
                chunk |= UInt32(value)
            }
            output.append(UInt8(truncatingIfNeeded: chunk >> 16))
            if used >= 3 { output.append(UInt8(truncatingIfNeeded: chunk >> 8)) }
            if used == 4 { output.append(UInt8(truncatingIfNeeded: chunk)) }
            // Non-canonical: bits that the padding drops must be zero.
            if used == 3 && chunk & 0xFF != 0 { return nil }
            if used == 2 && chunk & 0xFFFF != 0 { return nil }
            i += 4
        }
        return output
    }

    private static func value(of c: UInt8) -> UInt8? {
        switch c {
        case UInt8(ascii: "A")...UInt8(ascii: "Z"): c - UInt8(ascii: "A")
        case UInt8(ascii: "a")...UInt8(ascii: "z"): c - UInt8(ascii: "a") + 26
        case UInt8(ascii: "0")...UInt8(ascii: "9"): c - UInt8(ascii: "0") + 52
        case UInt8(ascii: "+"): 62
        case UInt8(ascii: "/"): 63
        default: nil
        }
    }
}
