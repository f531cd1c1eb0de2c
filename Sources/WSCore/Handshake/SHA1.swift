/// SHA-1 (FIPS 180-4) in pure Swift, for the `Sec-WebSocket-Accept` computation of the opening handshake.
///
/// SHA-1 is not collision resistant; RFC 6455 uses it only to prove that the server understood the handshake.
package enum SHA1 {
    /// The 20-byte SHA-1 digest of `bytes`.
    /// - Parameter bytes: The message, e.g. `string.utf8`.
    package static func hash(_ bytes: some Sequence<UInt8>) -> [UInt8] {
        var message = Array(bytes)
        let bitLength = UInt64(message.count) &* 8
        message.append(0x80)
        let padding = (56 &- message.count % 64 + 64) % 64
        message.append(contentsOf: repeatElement(0, count: padding))
        for shift in stride(from: 56, through: 0, by: -8) {
            message.append(UInt8(truncatingIfNeeded: bitLength >> UInt64(shift)))
        }

        var h0: UInt32 = 0x6745_2301
        var h1: UInt32 = 0xEFCD_AB89
        var h2: UInt32 = 0x98BA_DCFE
        var h3: UInt32 = 0x1032_5476
        var h4: UInt32 = 0xC3D2_E1F0
        var w = [UInt32](repeating: 0, count: 80)
        message.withUnsafeBufferPointer { m in
            w.withUnsafeMutableBufferPointer { w in
                var chunk = 0
                while chunk < m.count {
                    for t in 0..<16 {
                        let i = chunk &+ t &* 4
                        w[t] = UInt32(m[i]) << 24 | UInt32(m[i &+ 1]) << 16 | UInt32(m[i &+ 2]) << 8 | UInt32(m[i &+ 3])
                    }
                    for t in 16..<80 {
                        w[t] = rotateLeft(w[t &- 3] ^ w[t &- 8] ^ w[t &- 14] ^ w[t &- 16], 1)
                    }
                    var a = h0
                    var b = h1
                    var c = h2
                    var d = h3
                    var e = h4
                    for t in 0..<80 {
                        let f: UInt32
                        let k: UInt32
                        switch t {
                        case 0..<20:
                            f = (b & c) | (~b & d)
                            k = 0x5A82_7999
                        case 20..<40:
                            f = b ^ c ^ d
                            k = 0x6ED9_EBA1
                        case 40..<60:
                            f = (b & c) | (b & d) | (c & d)
                            k = 0x8F1B_BCDC
                        default:
                            f = b ^ c ^ d
                            k = 0xCA62_C1D6
                        }
                        let temp = rotateLeft(a, 5) &+ f &+ e &+ k &+ w[t]
                        e = d
                        d = c
                        c = rotateLeft(b, 30)
                        b = a
                        a = temp
                    }
                    h0 &+= a
                    h1 &+= b
                    h2 &+= c
                    h3 &+= d
                    h4 &+= e
                    chunk &+= 64
                }
            }
        }

        var digest: [UInt8] = []
        digest.reserveCapacity(20)
        for word in [h0, h1, h2, h3, h4] {
            digest.append(UInt8(truncatingIfNeeded: word >> 24))
            digest.append(UInt8(truncatingIfNeeded: word >> 16))
            digest.append(UInt8(truncatingIfNeeded: word >> 8))
            digest.append(UInt8(truncatingIfNeeded: word))
        }
        return digest
    }

    @inline(__always)
    private static func rotateLeft(_ value: UInt32, _ count: UInt32) -> UInt32 {
        (value << count) | (value >> (32 &- count))
    }
}
