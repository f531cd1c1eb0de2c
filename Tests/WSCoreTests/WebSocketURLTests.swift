// WebSocketURL's parser and the texts made from it, where the standard library's character searches replaced
// _StringProcessing's `firstRange(of:)` and `contains(_:)` (Docs/notes/performance-history.md, 2026-12-08): the
// results must be the same, compared character by character (a combining mark makes another character).
import Logging
import Testing

@testable import WSCore

@Suite("WebSocketURL")
struct WebSocketURLTests {
    /// The parse error's message, or `nil` if `text` parses.
    private func parseError(_ text: String) -> String? {
        do {
            _ = try WebSocketURL(parsing: text)
            return nil
        } catch {
            #expect(error.code == .invalidURL)
            return error.message
        }
    }

    @Test("the scheme ends at the first '://', compared as characters")
    func schemeSeparator() throws {
        let url = try WebSocketURL(parsing: "WSS://example.com:8443/feed?next=ws://other/")
        #expect(url.scheme == "wss" && url.host == "example.com" && url.port == 8443)
        #expect(url.pathAndQuery == "/feed?next=ws://other/")
        // A colon that is not followed by "//" is skipped, and so is the scheme it would end.
        #expect(parseError("ws:x://host/")?.contains("unsupported scheme 'ws:x'") == true)
        #expect(parseError("ws:/host/")?.contains("expected scheme://host") == true)
        #expect(parseError("ws:host")?.contains("expected scheme://host") == true)
        #expect(parseError("")?.contains("expected scheme://host") == true)
        // A combining mark after a slash makes another character: no "://" there (as with `firstRange(of:)`); a byte
        // search would find one and accept a host that starts with the mark.
        #expect(parseError("ws://\u{301}host/")?.contains("expected scheme://host") == true)
        #expect(parseError("ws:/\u{301}/host/")?.contains("expected scheme://host") == true)
        // The same after a later colon: the first "://" is found past it.
        #expect(try WebSocketURL(parsing: "ws://h:1/a://\u{301}b").pathAndQuery == "/a://\u{301}b")
        // A separator at the very end leaves an empty authority.
        #expect(parseError("ws://")?.contains("missing host") == true)
    }

    @Test("IPv6 hosts are bracketed in the Host header, the description and host:port texts")
    func ipv6Brackets() throws {
        let v6 = try WebSocketURL(parsing: "ws://[::1]:8080/chat")
        #expect(v6.host == "::1")
        #expect(v6.hostHeader == "[::1]:8080")
        #expect(v6.description == "ws://[::1]:8080/chat")
        #expect(Logger.endpoint(of: v6) == "ws://[::1]:8080/chat")
        let name = try WebSocketURL(parsing: "wss://example.com/chat")
        #expect(name.hostHeader == "example.com")
        #expect(name.description == "wss://example.com:443/chat")
        #expect(ProxyServer(.http, host: "::1", port: 3128).hostPort == "[::1]:3128")
        #expect(ProxyServer(.http, host: "proxy.example", port: 3128).hostPort == "proxy.example:3128")
        // A colon followed by a combining mark is another character, not a colon.
        #expect("a:\u{301}b".isIPv6Literal == false)
        #expect("fe80::1".isIPv6Literal)
    }

    @Test("session ids: 8 lower-case hex digits, zero-padded, most significant first")
    func sessionIDDigits() {
        #expect(Logger.hexDigits(0) == "00000000")
        #expect(Logger.hexDigits(0xff) == "000000ff")
        #expect(Logger.hexDigits(0xdead_beef) == "deadbeef")
        #expect(Logger.hexDigits(0x0123_4567) == "01234567")
        #expect(Logger.hexDigits(0x89ab_cdef) == "89abcdef")
        #expect(Logger.hexDigits(.max) == "ffffffff")
        for value: UInt32 in [1, 0x10, 0xa, 0x1000_0000, 0x7fff_ffff, 0x8000_0000] {
            let expected = String(value, radix: 16)
            #expect(Logger.hexDigits(value) == String(repeating: "0", count: 8 - expected.count) + expected)
        }
    }
}
