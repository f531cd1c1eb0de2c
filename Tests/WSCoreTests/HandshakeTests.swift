import Testing
import WSCore

/// A generator that returns fixed words, to pin down exactly which bytes a key is made of.
private struct FixedWordsRNG: RandomNumberGenerator {
    var words: [UInt64]
    mutating func next() -> UInt64 { self.words.removeFirst() }
}

private func hex(_ bytes: [UInt8]) -> String {
    bytes.map { ($0 < 16 ? "0" : "") + String($0, radix: 16) }.joined()
}

@Suite("Handshake helpers")
struct HandshakeTests {
    @Test("RFC 6455 section 1.3: the accept value of dGhlIHNhbXBsZSBub25jZQ==")
    func rfcAcceptExample() {
        #expect(WebSocketHandshake.guid == "258EAFA5-E914-47DA-95CA-C5AB0DC85B11")
        // RFC 6455 section 1.3 prints s3pPLMBiTxaQ9kYGzzhZRbK+xOo= for this key (base64 of
        // b3 7a 4f 2c c0 62 4f 16 90 f6 46 06 cf 38 59 45 b2 be c4 ea).
        #expect(WebSocketHandshake.acceptValue(forKey: "dGhlIHNhbXBsZSBub25jZQ==") == "s3pPLMBiTxaQ9kYGzzhZRbK+xOo=")
        #expect(WebSocketHandshake.acceptValue(forKey: "x3JJHMbDL1EzLkh9GBhXDw==") == "HSmrc0sMlYUkAGmm5OPpG2HaGWk=")
    }

    @Test(
        "SHA-1 of standard vectors",
        arguments: [
            ("", "da39a3ee5e6b4b0d3255bfef95601890afd80709"),
            ("abc", "a9993e364706816aba3e25717850c26c9cd0d89d"),
            ("abcdbcdecdefdefgefghfghighijhijkijkljklmklmnlmnomnopnopq", "84983e441c3bd26ebaae4aa1f95129e5e54670f1"),
            ("The quick brown fox jumps over the lazy dog", "2fd4e1c67a2d28fced849ee1bb76e7391b93eb12"),
        ]
    )
    func sha1Vectors(input: String, digest: String) {
        let hash = SHA1.hash(input.utf8)
        #expect(hash.count == 20)
        #expect(hex(hash) == digest)
    }

    @Test(
        "SHA-1 at the padding boundaries (lengths 0-1000, bytes i % 251)",
        arguments: [
            (0, "da39a3ee5e6b4b0d3255bfef95601890afd80709"),
            (1, "5ba93c9db0cff93f52b521d7420e43f6eda2784f"),
            (55, "8ae2d46729cfe68ff927af5eec9c7d1b66d65ac2"),
            (56, "636e2ec698dac903498e648bd2f3af641d3c88cb"),
            (63, "6d942da0c4392b123528f2905c713a3ce28364bd"),
            (64, "c6138d514ffa2135bfce0ed0b8fac65669917ec7"),
            (65, "69bd728ad6e13cd76ff19751fde427b00e395746"),
            (119, "41c89d06001bab4ab78736b44efe7ce18ce6ae08"),
            (120, "d3dbd653bd8597b7475321b60a36891278e6a04a"),
            (128, "e6434bc401f98603d7eda504790c98c67385d535"),
            (1000, "c9c960a0b925474fab83942cc27d504fc24ac37b"),
        ]
    )
    func sha1PaddingBoundaries(length: Int, digest: String) {
        let bytes = (0..<length).map { UInt8($0 % 251) }
        #expect(hex(SHA1.hash(bytes)) == digest)
        // A non-contiguous sequence gives the same digest.
        #expect(hex(SHA1.hash(bytes.lazy.map { $0 })) == digest)
    }

    @Test("SHA-1 of a million 'a'")
    func sha1Million() {
        #expect(
            hex(SHA1.hash(repeatElement(UInt8(ascii: "a"), count: 1_000_000)))
                == "34aa973cd4c4daa4f61eeb2bdbad27316534016f")
    }

    @Test(
        "Base64 RFC 4648 vectors both ways",
        arguments: [
            ("", ""), ("f", "Zg=="), ("fo", "Zm8="), ("foo", "Zm9v"), ("foob", "Zm9vYg=="), ("fooba", "Zm9vYmE="),
            ("foobar", "Zm9vYmFy"),
        ]
    )
    func base64Vectors(plain: String, encoded: String) {
        #expect(Base64.encode(Array(plain.utf8)) == encoded)
        #expect(Base64.decode(encoded) == Array(plain.utf8))
    }

    @Test("Base64 uses + and / and round-trips random bytes of every length 0...100")
    func base64RoundTrips() {
        #expect(Base64.encode([0xFB, 0xFF, 0xBF]) == "+/+/")
        #expect(Base64.decode("+/+/") == [0xFB, 0xFF, 0xBF])
        var rng = SplitMix64(seed: 42)
        for length in 0...100 {
            let bytes = (0..<length).map { _ in UInt8.random(in: 0...255, using: &rng) }
            let encoded = Base64.encode(bytes)
            #expect(encoded.utf8.count == (length + 2) / 3 * 4)
            #expect(Base64.decode(encoded) == bytes, "length \(length)")
        }
        #expect(Base64.encode((0..<16).map { UInt8($0) }[...]) == "AAECAwQFBgcICQoLDA0ODw==")
    }

    @Test(
        "Base64 decoding is strict",
        arguments: [
            "Zg", "Zg=", "Zm9", "Z===", "====", "=Zg=", "Zg=a", "Zm-v", "Zm9v\n", " Zm9v", "Zm9v====", "Zh==", "Zm9=",
            "Zm 9v", "Zm9vYg=\u{3D}x",
        ]
    )
    func base64Rejects(input: String) {
        #expect(Base64.decode(input) == nil)
    }

    @Test("makeKey: 16 bytes from the generator, base64 encoded")
    func makeKey() {
        var fixed = FixedWordsRNG(words: [0x0706_0504_0302_0100, 0x0F0E_0D0C_0B0A_0908])
        #expect(WebSocketHandshake.makeKey(using: &fixed) == "AAECAwQFBgcICQoLDA0ODw==")

        var a = SplitMix64(seed: 1)
        var b = SplitMix64(seed: 1)
        let key = WebSocketHandshake.makeKey(using: &a)
        #expect(key.utf8.count == 24)
        #expect(Base64.decode(key)?.count == 16)
        #expect(WebSocketHandshake.isValidKey(key))
        #expect(WebSocketHandshake.makeKey(using: &b) == key)
        #expect(WebSocketHandshake.makeKey(using: &a) != key)

        var system = SystemRandomNumberGenerator()
        let keys = Set((0..<100).map { _ in WebSocketHandshake.makeKey(using: &system) })
        #expect(keys.count == 100)
    }

    @Test("makeKey(): fresh 16 bytes from the kernel CSPRNG for every key, base64 encoded")
    func makeKernelKey() {
        let keys = (0..<1_000).map { _ in WebSocketHandshake.makeKey() }
        #expect(Set(keys).count == 1_000)
        #expect(keys.allSatisfy { $0.utf8.count == 24 && WebSocketHandshake.isValidKey($0) })
        // Every byte value turns up among the 16,000 key bytes (each is expected about 62 times).
        let bytes = keys.flatMap { Base64.decode($0) ?? [] }
        #expect(Set(bytes).count == 256)
    }

    @Test("isValidKey requires canonical base64 of 16 bytes")
    func validKeys() {
        #expect(WebSocketHandshake.isValidKey("dGhlIHNhbXBsZSBub25jZQ=="))
        #expect(!WebSocketHandshake.isValidKey("dGhlIHNhbXBsZSBub25jZQ"))
        #expect(!WebSocketHandshake.isValidKey("Zm9vYmFy"))
        #expect(!WebSocketHandshake.isValidKey(""))
    }
}
