/// Writes RFC 6455 frames (section 5.2) into a byte buffer.
///
/// The encoder writes exactly what it is asked to: it does not check control-frame sizes, fragmentation rules or
/// reserved bits (the session does), so a test server can also produce deliberately malformed frames.
package enum FrameEncoder {
    /// The size of a frame header for a payload: 2, 4 or 10 bytes (7-, 16- or 64-bit length), plus 4 if masked.
    /// - Parameters:
    ///   - payloadLength: The payload size in bytes.
    ///   - masked: Whether the frame carries a masking key.
    package static func headerSize(payloadLength: Int, masked: Bool) -> Int {
        let base = payloadLength <= 125 ? 2 : (payloadLength <= 0xFFFF ? 4 : 10)
        return masked ? base + 4 : base
    }

    /// Appends one complete frame to `buffer`: the header, the masking key if one is given, and the payload
    /// (masked with that key). Reserves capacity once and copies the payload once.
    /// - Parameters:
    ///   - opcode: The opcode (low four bits; higher bits are ignored).
    ///   - fin: Whether this is the final fragment of its message.
    ///   - reservedBits: RSV1–3.
    ///   - payload: The unmasked payload.
    ///   - maskingKey: The key to mask with (every client frame needs one), or `nil` for an unmasked frame.
    ///   - buffer: The buffer to append to.
    package static func encode(
        opcode: UInt8,
        fin: Bool,
        reservedBits: Frame.ReservedBits,
        payload: UnsafeRawBufferPointer,
        maskingKey: MaskingKey?,
        into buffer: inout [UInt8]
    ) {
        let length = payload.count
        let masked = maskingKey != nil
        buffer.reserveCapacity(buffer.count + Self.headerSize(payloadLength: length, masked: masked) + length)

        buffer.append((fin ? 0x80 : 0) | reservedBits.rawValue | (opcode & 0x0F))
        let maskBit: UInt8 = masked ? 0x80 : 0
        if length <= 125 {
            buffer.append(maskBit | UInt8(truncatingIfNeeded: length))
        } else if length <= 0xFFFF {
            buffer.append(maskBit | 126)
            buffer.append(UInt8(truncatingIfNeeded: length >> 8))
            buffer.append(UInt8(truncatingIfNeeded: length))
        } else {
            buffer.append(maskBit | 127)
            let wide = UInt64(length)
            for shift in stride(from: 56, through: 0, by: -8) {
                buffer.append(UInt8(truncatingIfNeeded: wide >> UInt64(shift)))
            }
        }
        guard let key = maskingKey else {
            buffer.append(contentsOf: payload)
            return
        }
        buffer.append(key.b0)
        buffer.append(key.b1)
        buffer.append(key.b2)
        buffer.append(key.b3)
        let payloadStart = buffer.count
        buffer.append(contentsOf: payload)
        buffer.withUnsafeMutableBytes { all in
            applyMask(key, to: UnsafeMutableRawBufferPointer(rebasing: all[payloadStart...]))
        }
    }

    /// Appends one complete frame for `frame` (its kind's opcode, FIN, reserved bits and data) to `buffer`.
    /// - Parameters:
    ///   - frame: The frame to encode.
    ///   - maskingKey: The key to mask with, or `nil` for an unmasked frame.
    ///   - buffer: The buffer to append to.
    package static func encode(_ frame: Frame, maskingKey: MaskingKey?, into buffer: inout [UInt8]) {
        frame.data.withUnsafeBytes { payload in
            Self.encode(
                opcode: frame.kind.opcode,
                fin: frame.fin,
                reservedBits: frame.reservedBits,
                payload: payload,
                maskingKey: maskingKey,
                into: &buffer
            )
        }
    }
}
