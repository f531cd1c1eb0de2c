/// The key and accept values of the WebSocket opening handshake (RFC 6455 sections 1.3 and 4.1).
package enum WebSocketHandshake {
    /// The GUID appended to the key before hashing.
    package static let guid = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11"

    /// A fresh `Sec-WebSocket-Key`: base64 of 16 bytes from the kernel CSPRNG (`getrandom(2)`, served in slices of a
    /// shared 256-byte batch: ``SharedKernelRandom``).
    package static func makeKey() -> String {
        var bytes = [UInt8](repeating: 0, count: 16)
        bytes.withUnsafeMutableBytes { fillRandom($0) }
        return Base64.encode(bytes)
    }

    /// A `Sec-WebSocket-Key`: base64 of 16 bytes from `rng` (24 characters).
    /// - Parameter rng: The source of randomness; pass a `SystemRandomNumberGenerator` in production.
    package static func makeKey(using rng: inout some RandomNumberGenerator) -> String {
        var bytes: [UInt8] = []
        bytes.reserveCapacity(16)
        for _ in 0..<2 {
            let word = rng.next()
            for shift in stride(from: 0, to: 64, by: 8) {
                bytes.append(UInt8(truncatingIfNeeded: word >> UInt64(shift)))
            }
        }
        return Base64.encode(bytes)
    }

    /// The `Sec-WebSocket-Accept` value for a key: base64(SHA-1(key + GUID)).
    /// - Parameter key: The `Sec-WebSocket-Key` exactly as sent.
    package static func acceptValue(forKey key: String) -> String {
        Base64.encode(SHA1.hash((key + Self.guid).utf8))
    }

    /// Whether `key` is a valid `Sec-WebSocket-Key`: canonical base64 of exactly 16 bytes (for servers).
    /// - Parameter key: The received header value, without surrounding whitespace.
    package static func isValidKey(_ key: String) -> Bool {
        Base64.decode(key)?.count == 16
    }
}
