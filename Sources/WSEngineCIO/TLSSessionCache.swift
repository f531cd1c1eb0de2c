// TLS session resumption on the client side: the sessions (TLS 1.3 tickets, TLS 1.2 sessions) servers hand out,
// kept per server in a small bounded store of the engine's TLS context and offered on the next connect to the
// same server (WebSocketTLSConfiguration.resumesSessions).
//
// OpenSSL keeps no client sessions by itself: the context runs with SSL_SESS_CACHE_CLIENT and its internal store
// off, and its new-session callback hands each session to this store. TLS 1.3 tickets arrive after the handshake,
// while the connection reads (the callback then runs inside SSL_read on the connection's loop thread), TLS 1.2
// sessions at the end of the handshake. Connects on any loop thread take from the store: one lock guards it.
//
// Security: OpenSSL does not verify the certificate chain again on a resumed handshake; the session carries the
// result of the full handshake that made it. That is sound only because a session is offered to exactly what it was
// verified for: the store belongs to one TLS context (one trust configuration, one client identity, one
// verification setting), and the key holds the name that was verified (SNI / host name or IP check), the host and
// port connected to, the ALPN offer and the proxy. A server that proves it knows the session's secret is the one
// (or shares the ticket keys of the one) that passed verification for that name.
import CWSLazyOpenSSL
import Glibc
import Synchronization
import WSCore

/// What a kept TLS session may be offered to: the same server, reached the same way, with the same ALPN offer.
struct TLSSessionKey: Hashable, Sendable {
    /// The host connected to (the URL's host, or the proxy's for the TLS connection to an https:// proxy).
    var host: String
    /// The name sent as SNI and verified against the certificate (the server name override, or `host`).
    var serverName: String
    /// The port connected to.
    var port: Int
    /// The ALPN offer in wire format (an HTTP/2 connection's offer differs from an HTTP/1.1 one's).
    var alpn: [UInt8]
    /// The proxy the connection goes through, if any: a session from a direct connection is never shown through a
    /// proxy (it would link the two), nor the other way round.
    var proxy: ProxyServer?
}

/// The client sessions of one TLS context, by server: at most ``maxServers`` servers (least recently used dropped)
/// with at most ``maxSessionsPerServer`` sessions each (oldest dropped).
///
/// A TLS 1.3 ticket is offered once and then forgotten (RFC 8446, appendix C.4: a ticket reused on several
/// connections lets an observer link them); the server sends new ones on every connection, two after a full
/// handshake and one after a resumption with OpenSSL's defaults. A TLS 1.2 session is offered again until it
/// expires or the server replaces it: a resumed TLS 1.2 handshake brings no new session, so a single-use TLS 1.2
/// session would only halve resumption. Expired and non-resumable sessions are dropped when met.
final class TLSSessionCache: Sendable {
    /// The most servers (keys) kept.
    static let maxServers = 32
    /// The most sessions kept per server.
    static let maxSessionsPerServer = 4

    /// One owned SSL_SESSION reference (SSL_SESSION_free when dropped).
    private struct Session: @unchecked Sendable {  // Only touched under `state`'s lock; OpenSSL refcounts it.
        let pointer: OpaquePointer
    }

    private struct Entry {
        /// Oldest first.
        var sessions: [Session] = []
        /// The ``State/tick`` of its last store or take, for least-recently-used eviction.
        var lastUse: UInt64 = 0
    }

    private struct State {
        var entries: [TLSSessionKey: Entry] = [:]
        var tick: UInt64 = 0
        /// Handshakes that resumed an offered session.
        var resumed = 0
    }

    private let state = Mutex(State())

    /// An empty store. Its sessions come from OpenSSL, which a store made outside a ``TLSContext`` (the tests')
    /// makes sure is loaded; `TLSContext` has loaded it already, so this costs one check there.
    init() {
        _ = cwsl_openssl_load(nil)
    }

    deinit {
        self.state.withLock { state in
            for entry in state.entries.values {
                for session in entry.sessions { cwsl_SSL_SESSION_free(session.pointer) }
            }
            state.entries = [:]
        }
    }

    /// A session to offer to `key`'s server, as an owned reference (the caller frees it after SSL_set_session),
    /// or `nil`. A TLS 1.3 ticket leaves the store; a TLS 1.2 session stays, and the caller gets a copy.
    func take(_ key: TLSSessionKey) -> OpaquePointer? {
        let now = time(nil)
        return self.state.withLock { state -> Session? in
            guard var entry = state.entries[key] else { return nil }
            state.tick &+= 1
            entry.lastUse = state.tick
            var found: Session?
            while found == nil, let kept = entry.sessions.last {
                let session = kept.pointer
                guard Self.isUsable(session, now: now) else {
                    entry.sessions.removeLast()
                    cwsl_SSL_SESSION_free(session)
                    continue
                }
                if cwsl_SSL_SESSION_get_protocol_version(session) >= cwsl_tls1_3_version() {
                    entry.sessions.removeLast()  // Single use: the store's reference goes to the caller.
                    found = kept
                } else if let copy = cwsl_SSL_SESSION_dup(session) {
                    found = Session(pointer: copy)  // A copy: see store(_:copying:).
                } else {
                    break
                }
            }
            state.entries[key] = entry.sessions.isEmpty ? nil : entry
            return found
        }?.pointer
    }

    /// Keeps a copy of `session` for `key` (the caller keeps its reference).
    ///
    /// A copy, not the connection's own session object: OpenSSL marks a connection's current session
    /// non-resumable when the connection is freed without having sent close_notify (`ssl_clear_bad_session`), which
    /// is how WebSocket connections usually end (the close handshake, then the TCP close), and that would spoil the
    /// last ticket of every connection. For TLS 1.2, whose sessions are offered again, ``take(_:)`` hands out copies
    /// for the same reason. A session whose connection later fails is still offered: the server decides, and a
    /// server that dropped it answers with a full handshake.
    func store(_ key: TLSSessionKey, copying session: OpaquePointer) {
        let now = time(nil)
        guard Self.isUsable(session, now: now), let copy = cwsl_SSL_SESSION_dup(session) else { return }
        let isTLS13 = cwsl_SSL_SESSION_get_protocol_version(copy) >= cwsl_tls1_3_version()
        let new = Session(pointer: copy)
        let dropped = self.state.withLock { state -> [Session] in
            var dropped: [Session] = []
            state.tick &+= 1
            var entry = state.entries[key] ?? Entry()
            entry.lastUse = state.tick
            if !isTLS13 {
                // The new TLS 1.2 session replaces any older one: the server issued it instead of resuming.
                entry.sessions.removeAll { old in
                    let replace = cwsl_SSL_SESSION_get_protocol_version(old.pointer) < cwsl_tls1_3_version()
                    if replace { dropped.append(old) }
                    return replace
                }
            }
            entry.sessions.append(new)
            if entry.sessions.count > Self.maxSessionsPerServer {
                dropped.append(entry.sessions.removeFirst())
            }
            if state.entries[key] == nil && state.entries.count >= Self.maxServers,
                let oldest = state.entries.min(by: { $0.value.lastUse < $1.value.lastUse })
            {
                dropped.append(contentsOf: oldest.value.sessions)
                state.entries[oldest.key] = nil
            }
            state.entries[key] = entry
            return dropped
        }
        for old in dropped { cwsl_SSL_SESSION_free(old.pointer) }
    }

    /// Counts a handshake that resumed an offered session.
    func noteResumed() {
        self.state.withLock { $0.resumed += 1 }
    }

    /// Handshakes that resumed an offered session so far.
    var resumedCount: Int { self.state.withLock { $0.resumed } }

    /// Sessions kept now, over all servers.
    var sessionCount: Int { self.state.withLock { $0.entries.values.reduce(0) { $0 + $1.sessions.count } } }

    /// Whether `session` can still be offered: resumable and not past its lifetime (for a TLS 1.3 ticket, the
    /// server's ticket_lifetime).
    private static func isUsable(_ session: OpaquePointer, now: time_t) -> Bool {
        guard cwsl_SSL_SESSION_is_resumable(session) == 1 else { return false }
        return cwsl_SSL_SESSION_get_time(session) + cwsl_SSL_SESSION_get_timeout(session) > now
    }

    // MARK: OpenSSL glue

    /// Installs the store on `context`: client-side session caching with OpenSSL's own store off, and the
    /// new-session callback that hands sessions to the store of the connection's ``TLSSessionSlot``.
    static func install(on context: OpaquePointer) {
        _ = cwsl_ssl_ctx_set_client_session_cache(context)
        cwsl_SSL_CTX_sess_set_new_cb(context) { ssl, session in
            // On the thread that runs the connection: in SSL_do_handshake (TLS 1.2) or SSL_read (TLS 1.3).
            guard let ssl, let session, let raw = cwsl_SSL_get_ex_data(ssl, tlsSessionSlotIndex) else { return 0 }
            let slot = Unmanaged<TLSSessionSlot>.fromOpaque(raw).takeUnretainedValue()
            slot.cache.store(slot.key, copying: session)
            return 0  // OpenSSL keeps its own reference (and releases it); the store keeps a copy.
        }
    }

    /// Marks `ssl` as a connection to `key`'s server and offers it a kept session, if there is one.
    func prepare(_ ssl: OpaquePointer, for key: TLSSessionKey) {
        let slot = Unmanaged.passRetained(TLSSessionSlot(cache: self, key: key))
        guard tlsSessionSlotIndex >= 0, cwsl_SSL_set_ex_data(ssl, tlsSessionSlotIndex, slot.toOpaque()) == 1 else {
            slot.release()
            return  // No slot: this connection neither keeps nor offers a session.
        }
        if let session = self.take(key) {
            _ = cwsl_SSL_set_session(ssl, session)  // Takes a reference of its own; a failure only means no resumption.
            cwsl_SSL_SESSION_free(session)
        }
    }
}

/// What a connection's SSL carries for the new-session callback: the store and the key its sessions go to. The SSL
/// holds one reference (its ex_data), released when the SSL is freed.
final class TLSSessionSlot: Sendable {
    /// The store of the connection's TLS context.
    let cache: TLSSessionCache
    /// The server the connection goes to.
    let key: TLSSessionKey

    init(cache: TLSSessionCache, key: TLSSessionKey) {
        self.cache = cache
        self.key = key
    }
}

/// The SSL ex_data index of ``TLSSessionSlot`` (one per process; -1 if OpenSSL could not make one, and then
/// nothing is resumed). The free callback releases the slot when its SSL is freed.
let tlsSessionSlotIndex: Int32 = cwsl_CRYPTO_get_ex_new_index(CRYPTO_EX_INDEX_SSL, 0, nil, nil, nil) {
    _, pointer, _, _, _, _ in
    guard let pointer else { return }
    Unmanaged<TLSSessionSlot>.fromOpaque(pointer).release()
}
