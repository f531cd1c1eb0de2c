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
    ///   - opcode: The opcode, reserved ones included.
    ///   - fin: Whether this is the final fragment of its message.
    ///   - reservedBits: RSV1–3.
    ///   - payload: The unmasked payload.
    ///   - maskingKey: The key to mask with (every client frame needs one), or `nil` for an unmasked frame.
    ///   - buffer: The buffer to append to.
    package static func encode(
        opcode: Opcode,
        fin: Bool,
        reservedBits: Frame.ReservedBits,
        payload: UnsafeRawBufferPointer,
        maskingKey: MaskingKey?,
        into buffer: inout [UInt8]
    ) {
        let length = payload.count
        let masked = maskingKey != nil
        buffer.reserveCapacity(buffer.count + Self.headerSize(payloadLength: length, masked: masked) + length)

        buffer.append((fin ? 0x80 : 0) | reservedBits.rawValue | opcode.rawValue)
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

    /// One complete frame in a new array: header, masking key and the payload masked while it is copied (one pass
    /// over the payload). What a sender hands to the transport.
    /// - Parameters:
    ///   - frame: The frame.
    ///   - maskingKey: The key to mask with, or `nil`.
    /// - Returns: The frame's bytes.
    package static func encodedFrame(_ frame: Frame, maskingKey: MaskingKey?) -> [UInt8] {
        let length = frame.data.count
        guard length >= Self.singlePassThreshold, let key = maskingKey else {
            var bytes: [UInt8] = []
            bytes.reserveCapacity(length + 14)
            Self.encode(frame, maskingKey: maskingKey, into: &bytes)
            return bytes
        }
        let size = Self.headerSize(payloadLength: length, masked: true) + length
        return [UInt8](unsafeUninitializedCapacity: size) { out, initialized in
            initialized = Self.encode(frame, maskingKey: key, to: UnsafeMutableRawPointer(out.baseAddress!))
        }
    }

    /// The largest payload ``withEncodedFrame(_:maskingKey:_:)`` takes: its frame fits the 1 KiB stack buffer.
    package static let maxTemporaryPayload = 1_010

    /// Calls `body` with one complete masked frame in a stack buffer: for a sender that hands small frames to a
    /// transport which copies them into its own write buffer, with no array of their own.
    /// - Parameters:
    ///   - frame: The frame; its payload at most ``maxTemporaryPayload`` bytes.
    ///   - maskingKey: The key to mask with.
    ///   - body: Receives the frame's bytes, valid only during the call (not generic, so that a caller in another
    ///     module needs no generic specialization).
    /// - Returns: What `body` returns.
    package static func withEncodedFrame(
        _ frame: Frame, maskingKey: MaskingKey, _ body: (UnsafeRawBufferPointer) -> Int
    ) -> Int {
        precondition(frame.data.count <= Self.maxTemporaryPayload, "a temporary frame's payload is at most 1,010 bytes")
        // A constant size: the buffer is on the stack without the run-time stack-space check a variable size needs.
        return withUnsafeTemporaryAllocation(byteCount: 1_024, alignment: 8) { buffer in
            let count = Self.encode(frame, maskingKey: maskingKey, to: buffer.baseAddress!)
            return body(UnsafeRawBufferPointer(start: buffer.baseAddress!, count: count))
        }
    }

    /// Writes one complete masked frame to `base`, which must have room for its header and payload, masking the
    /// payload while copying it.
    /// - Returns: The number of bytes written.
    private static func encode(_ frame: Frame, maskingKey key: MaskingKey, to base: UnsafeMutableRawPointer) -> Int {
        let length = frame.data.count
        base.storeBytes(
            of: (frame.fin ? 0x80 : 0) | frame.reservedBits.rawValue | Opcode(frame.kind).rawValue, as: UInt8.self)
        let keyOffset: Int
        if length <= 125 {
            base.storeBytes(of: 0x80 | UInt8(truncatingIfNeeded: length), toByteOffset: 1, as: UInt8.self)
            keyOffset = 2
        } else if length <= 0xFFFF {
            base.storeBytes(of: 0x80 | 126, toByteOffset: 1, as: UInt8.self)
            base.storeBytes(of: UInt16(truncatingIfNeeded: length).bigEndian, toByteOffset: 2, as: UInt16.self)
            keyOffset = 4
        } else {
            base.storeBytes(of: 0x80 | 127, toByteOffset: 1, as: UInt8.self)
            base.storeBytes(of: UInt64(length).bigEndian, toByteOffset: 2, as: UInt64.self)
            keyOffset = 10
        }
        base.storeBytes(of: key.b0, toByteOffset: keyOffset, as: UInt8.self)
        base.storeBytes(of: key.b1, toByteOffset: keyOffset &+ 1, as: UInt8.self)
        base.storeBytes(of: key.b2, toByteOffset: keyOffset &+ 2, as: UInt8.self)
        base.storeBytes(of: key.b3, toByteOffset: keyOffset &+ 3, as: UInt8.self)
        let payloadOffset = keyOffset &+ 4
        if length > 0 {
            frame.data.withUnsafeBytes { payload in
                applyMask(key, from: payload.baseAddress!, to: base + payloadOffset, count: length)
            }
        }
        return payloadOffset &+ length
    }

    /// From this payload size, ``encodedFrame(_:maskingKey:)`` masks while copying; below it the header-by-append
    /// path is cheaper (a new array of exact size costs a metadata lookup, about 20 ns).
    static let singlePassThreshold = 1_024

    /// Appends one complete frame for `frame` (its kind's opcode, FIN, reserved bits and data) to `buffer`.
    /// - Parameters:
    ///   - frame: The frame to encode.
    ///   - maskingKey: The key to mask with, or `nil` for an unmasked frame.
    ///   - buffer: The buffer to append to.
    package static func encode(_ frame: Frame, maskingKey: MaskingKey?, into buffer: inout [UInt8]) {
        frame.data.withUnsafeBytes { payload in
            Self.encode(
                opcode: Opcode(frame.kind),
                fin: frame.fin,
                reservedBits: frame.reservedBits,
                payload: payload,
                maskingKey: maskingKey,
                into: &buffer
            )
        }
    }
}
