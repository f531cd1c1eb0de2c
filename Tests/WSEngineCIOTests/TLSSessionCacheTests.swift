// The CIO engine's client TLS session store: its bounds, single use of TLS 1.3 tickets, reuse of TLS 1.2 sessions,
// and expiry, with real OpenSSL session objects (made here, not by a handshake; TLSResumptionTests covers the
// handshakes).
import CWSOpenSSL
import Glibc
import Testing
import WSCore

@testable import WSEngineCIO

/// A resumable session with a 32-byte id of `tag` bytes, for `version`, `age` seconds old, valid for `lifetime`.
private func makeSession(tag: UInt8, version: Int32, lifetime: Int = 3600, age: Int = 0) -> OpaquePointer {
    let session = SSL_SESSION_new()!
    let id = [UInt8](repeating: tag, count: 32)
    let key = [UInt8](repeating: 7, count: 48)
    _ = SSL_SESSION_set1_id(session, id, 32)
    _ = SSL_SESSION_set1_master_key(session, key, 48)
    _ = SSL_SESSION_set_protocol_version(session, version)
    _ = SSL_SESSION_set_time(session, time(nil) - age)
    _ = SSL_SESSION_set_timeout(session, lifetime)
    return session
}

/// The tag of a session made by `makeSession` (the first byte of its id), and frees it.
private func tagAndFree(_ session: OpaquePointer?) -> UInt8? {
    guard let session else { return nil }
    defer { SSL_SESSION_free(session) }
    var length: UInt32 = 0
    guard let id = SSL_SESSION_get_id(session, &length), length > 0 else { return nil }
    return id[0]
}

/// Stores a new session of `tag` for `key` (the store keeps a copy; ours is freed).
private func store(_ cache: TLSSessionCache, _ key: TLSSessionKey, tag: UInt8, version: Int32, age: Int = 0) {
    let session = makeSession(tag: tag, version: version, age: age)
    cache.store(key, copying: session)
    SSL_SESSION_free(session)
}

private func key(_ port: Int, host: String = "example.com") -> TLSSessionKey {
    TLSSessionKey(host: host, serverName: host, port: port, alpn: [], proxy: nil)
}

@Suite("TLS session store")
struct TLSSessionCacheTests {
    @Test("TLS 1.3 tickets: newest first, each once, at most four per server")
    func tls13() {
        let cache = TLSSessionCache()
        for tag in UInt8(1)...6 { store(cache, key(443), tag: tag, version: cws_tls1_3_version()) }
        #expect(cache.sessionCount == TLSSessionCache.maxSessionsPerServer)
        let taken = (0..<5).map { _ in tagAndFree(cache.take(key(443))) }
        #expect(taken == [6, 5, 4, 3, nil])
        #expect(cache.sessionCount == 0)
    }

    @Test("a TLS 1.2 session is offered again until a newer one replaces it")
    func tls12() {
        let cache = TLSSessionCache()
        store(cache, key(443), tag: 1, version: cws_tls1_2_version())
        #expect(tagAndFree(cache.take(key(443))) == 1)
        #expect(tagAndFree(cache.take(key(443))) == 1)
        store(cache, key(443), tag: 2, version: cws_tls1_2_version())
        #expect(cache.sessionCount == 1)
        #expect(tagAndFree(cache.take(key(443))) == 2)
    }

    @Test("expired sessions are not kept")
    func expired() {
        let cache = TLSSessionCache()
        store(cache, key(443), tag: 1, version: cws_tls1_3_version(), age: 7200)
        #expect(cache.sessionCount == 0)
        #expect(cache.take(key(443)) == nil)
    }

    @Test("at most 32 servers; the least recently used one goes")
    func serverBound() {
        let cache = TLSSessionCache()
        for port in 1...TLSSessionCache.maxServers {
            store(cache, key(port), tag: UInt8(port), version: cws_tls1_2_version())
        }
        // Port 1 used again (a TLS 1.2 session stays), so port 2 is now the least recently used.
        #expect(tagAndFree(cache.take(key(1))) == 1)
        store(cache, key(1000), tag: 200, version: cws_tls1_2_version())
        #expect(cache.sessionCount == TLSSessionCache.maxServers)
        #expect(cache.take(key(2)) == nil)
        #expect(tagAndFree(cache.take(key(1))) == 1)
        #expect(tagAndFree(cache.take(key(1000))) == 200)
        #expect(tagAndFree(cache.take(key(3))) == 3)
    }

    @Test("keys differ by host, name, port, ALPN and proxy")
    func keys() throws {
        let cache = TLSSessionCache()
        let base = key(443)
        store(cache, base, tag: 1, version: cws_tls1_2_version())
        var otherName = base
        otherName.serverName = "other.example"
        var otherHost = base
        otherHost.host = "192.0.2.1"
        var otherALPN = base
        otherALPN.alpn = [2] + Array("h2".utf8)
        var proxied = base
        proxied.proxy = try ProxyServer(url: "http://proxy.example:3128")
        for other in [key(444), otherName, otherHost, otherALPN, proxied] {
            #expect(cache.take(other) == nil, "\(other)")
        }
        #expect(tagAndFree(cache.take(base)) == 1)
    }
}
