// WebSockets over HTTP/2 on the CIO engine: the setting, the per-origin pool of shared connections, and the opening
// of a session as a stream (extended CONNECT, RFC 8441) with the fallback to HTTP/1.1.
import CWSLazyNghttp2
import Logging
import Synchronization
import WSCore
import WSPosix

extension CIOEngine {
    /// Whether `wss://` sessions may run over HTTP/2 (RFC 8441): each session becomes one stream of a TLS connection
    /// shared with the other sessions to the same origin.
    public struct HTTP2Mode: Sendable, Hashable, CustomStringConvertible {
        private enum Base: String, Sendable, Hashable {
            case disabled, preferred, required
        }
        private let base: Base
        private init(_ base: Base) { self.base = base }

        /// HTTP/1.1 only: every session has its own connection (the default).
        public static let disabled = HTTP2Mode(.disabled)
        /// Offer `h2` and `http/1.1` with ALPN; use HTTP/2 when the server selects it and enables extended CONNECT,
        /// else fall back to HTTP/1.1 (the reason is logged at debug level).
        public static let preferred = HTTP2Mode(.preferred)
        /// Use HTTP/2 or fail with a `WebSocketError` of code `unsupported` saying why it is not available.
        public static let required = HTTP2Mode(.required)

        /// `disabled`, `preferred` or `required`.
        public var description: String { self.base.rawValue }

        /// Parses `disabled`, `preferred` or `required` (as `wsc --http2` takes it).
        /// - Parameter text: The mode's name.
        public init?(_ text: String) {
            guard let base = Base(rawValue: text) else { return nil }
            self.base = base
        }
    }

    /// How the engine uses HTTP/2 for WebSockets.
    public struct HTTP2Configuration: Sendable, Hashable {
        /// Whether sessions may run over HTTP/2. Default ``HTTP2Mode/disabled``.
        public var mode: HTTP2Mode
        /// How long a connection without sessions stays open for new ones. Default 2 s.
        public var idleTimeout: Duration
        /// Each stream's receive window: the most bytes the server may send a session that does not read (the
        /// backpressure of a slow consumer, per session). Default 256 KiB.
        public var streamWindowSize: Int
        /// The largest response header block accepted (announced as SETTINGS_MAX_HEADER_LIST_SIZE and enforced);
        /// a bigger one ends the connection with an error. Default 64 KiB.
        public var maxHeaderListSize: Int

        /// Creates an HTTP/2 configuration.
        /// - Parameters:
        ///   - mode: Whether sessions may run over HTTP/2.
        ///   - idleTimeout: How long an unused connection stays open.
        ///   - streamWindowSize: Each stream's receive window in bytes (at least 16 KiB).
        ///   - maxHeaderListSize: The largest response header block in bytes (at least 4 KiB).
        public init(
            mode: HTTP2Mode = .disabled, idleTimeout: Duration = .seconds(2), streamWindowSize: Int = 256 * 1024,
            maxHeaderListSize: Int = 64 * 1024
        ) {
            self.mode = mode
            self.idleTimeout = idleTimeout
            self.streamWindowSize = min(max(streamWindowSize, 16 * 1024), Int(Int32.max))
            self.maxHeaderListSize = min(max(maxHeaderListSize, 4 * 1024), Int(Int32.max))
        }
    }

    /// The loaded libnghttp2's version, e.g. `1.52.0`, or `unavailable` when it cannot be loaded. The engine loads
    /// libnghttp2 when it is first needed (this property, or the first session that may use HTTP/2), not at start.
    public static var nghttp2Version: String { String(cString: cws_h2_runtime_version()) }

    /// Why libnghttp2 cannot be loaded (`nil` when it can); loads it if that was not done yet.
    static var nghttp2LoadError: String? {
        var error: UnsafePointer<CChar>?
        guard cwsn_nghttp2_load(&error) == 0 else { return nil }
        return error.map { String(cString: $0) } ?? "libnghttp2 could not be loaded"
    }

    /// Whether the loaded libnghttp2 has client-side extended CONNECT (1.41.0 or later).
    static var nghttp2SupportsExtendedConnect: Bool { cws_h2_runtime_version_num() >= 0x01_29_00 }
}

/// A connection being set up, that other sessions to the origin wait for.
final class PendingHTTP2Connection: Sendable {
    private let state = Mutex<(done: Bool, waiters: [CheckedContinuation<Void, Never>])>((false, []))

    /// Waits until the connection is ready or failed.
    func wait() async {
        await withCheckedContinuation { (continuation: CheckedContinuation<Void, Never>) in
            let done = self.state.withLock { state -> Bool in
                if state.done { return true }
                state.waiters.append(continuation)
                return false
            }
            if done { continuation.resume() }
        }
    }

    /// Wakes the waiters.
    func finish() {
        let waiters = self.state.withLock { state -> [CheckedContinuation<Void, Never>] in
            state.done = true
            defer { state.waiters = [] }
            return state.waiters
        }
        for waiter in waiters { waiter.resume() }
    }
}

/// The engine's HTTP/2 connections by origin and the proxy they go through.
final class HTTP2Pool: Sendable {
    /// What connections are shared by: the origin (`host:port`), and the proxy with its trust settings (a tunnel
    /// through one proxy is not a connection to the origin through another, or a direct one).
    struct Key: Hashable, Sendable {
        var origin: String
        var proxy: ProxyServer?
        var proxyTLS: WebSocketTLSConfiguration?
    }

    private struct Origin {
        var connections: [HTTP2Connection] = []
        var pending: PendingHTTP2Connection?
        /// Why this origin takes WebSockets over HTTP/1.1 only (remembered for the engine's life).
        var http1Reason: String?
    }

    /// What a session does next.
    enum Plan {
        case use(HTTP2Connection)
        case wait(PendingHTTP2Connection)
        case connect(PendingHTTP2Connection)
        case http1(reason: String)
    }

    private let origins = Mutex<[Key: Origin]>([:])

    /// Picks a connection with a free stream slot (taking it), or says what to do instead.
    func plan(_ key: Key) -> Plan {
        self.origins.withLock { origins -> Plan in
            var origin = origins[key] ?? Origin()
            defer { origins[key] = origin }
            if let reason = origin.http1Reason { return .http1(reason: reason) }
            for connection in origin.connections where connection.reserveStream() { return .use(connection) }
            if let pending = origin.pending { return .wait(pending) }
            let pending = PendingHTTP2Connection()
            origin.pending = pending
            return .connect(pending)
        }
    }

    /// Ends the setup of `pending`: `connection` joins the pool, or `http1Reason` marks the origin HTTP/1.1 only.
    /// Takes a stream slot on `connection` for the session that set it up, before the waiters wake; returns whether
    /// it got one. A connection that no longer takes streams (the server closed it or sent GOAWAY meanwhile) does
    /// not join: its retirement may already have passed the pool.
    @discardableResult
    func finish(
        _ key: Key, _ pending: PendingHTTP2Connection, connection: HTTP2Connection?, http1Reason: String?
    ) -> Bool {
        let reserved = self.origins.withLock { origins -> Bool in
            var origin = origins[key] ?? Origin()
            defer { origins[key] = origin }
            if origin.pending === pending { origin.pending = nil }
            if let http1Reason { origin.http1Reason = http1Reason }
            guard let connection else { return false }
            // Under the pool's lock: a retirement that follows this check reaches the pool after the append.
            let reserved = connection.reserveStream()
            if reserved || connection.takesStreams { origin.connections.append(connection) }
            return reserved
        }
        pending.finish()
        return reserved
    }

    /// Forgets a connection that takes no new streams.
    func retire(_ key: Key, _ connection: HTTP2Connection) {
        self.origins.withLock { origins in
            origins[key]?.connections.removeAll { $0 === connection }
        }
    }

    /// The number of pooled connections to `origin` (`host:port`), direct or through any proxy (for tests).
    func connectionCount(_ origin: String) -> Int {
        self.origins.withLock { origins in
            origins.reduce(0) { $0 + ($1.key.origin == origin ? $1.value.connections.count : 0) }
        }
    }
}

extension CIOEngine {
    /// Opens a WebSocket session over HTTP/2 when the origin allows it, else (preferred) over HTTP/1.1.
    func connectHTTP2(
        to endpoint: EngineEndpoint, options: EngineConnectOptions, request: EngineOpeningRequest
    ) async throws -> any WebSocketTransport {
        let required = self.configuration.http2.mode == .required
        let origin = hostPortText(host: endpoint.host, port: endpoint.port)
        // Through a proxy, the connection is a tunnel to the origin: TLS and ALPN are end to end, so HTTP/2 works
        // the same; connections are shared only by sessions that go through the same proxy.
        let key = HTTP2Pool.Key(
            origin: origin, proxy: options.proxy, proxyTLS: options.proxy?.kind == .https ? options.proxyTLS : nil)
        var logger = options.logger
        logger.setDebugMetadata("ws.endpoint", "\(endpoint)")
        if let proxy = options.proxy { logger.setDebugMetadata("ws.proxy", "\(proxy)") }
        func fallback(_ reason: String) async throws -> any WebSocketTransport {
            if required {
                throw WebSocketError(
                    .unsupported, "HTTP/2 is required but not available for WebSockets on \(origin): \(reason)")
            }
            logger.debug("WebSocket over HTTP/1.1: \(reason)")
            return try await self.connectTransport(to: endpoint, options: options, alpn: Self.alpnHTTP1)
        }
        // Every request the server did not process (a refused stream, a connection set up for this session that
        // stopped taking streams before the request went out) counts: the session tries again a bounded number
        // of times, never on an endless series of connections.
        var refusals = 0
        func notProcessed(_ error: WebSocketError) throws {
            refusals += 1
            guard refusals <= Self.http2Retries else { throw error }
            logger.debug("HTTP/2 stream not processed, trying again (\(refusals)): \(error)")
        }
        while true {
            switch self.http2Pool.plan(key) {
            case .use(let connection):
                do {
                    return try await connection.openStream(request, timeout: options.connectTimeout)
                } catch let refused as HTTP2StreamNotProcessed {
                    // The server did not process the request: safe to send it again, on this connection or
                    // another.
                    try notProcessed(refused.error)
                }
            case .wait(let pending):
                await pending.wait()
            case .http1(let reason):
                return try await fallback(reason)
            case .connect(let pending):
                let transport: CIOTransport
                do {
                    transport = try await self.connectTransport(to: endpoint, options: options, alpn: Self.alpnH2)
                } catch {
                    self.http2Pool.finish(key, pending, connection: nil, http1Reason: nil)
                    throw error
                }
                guard transport.alpn == "h2" else {
                    let reason = "the server selected \(transport.alpn.map { "'\($0)'" } ?? "no protocol") with ALPN"
                    self.http2Pool.finish(key, pending, connection: nil, http1Reason: reason)
                    if required {
                        transport.abort()
                        return try await fallback(reason)
                    }
                    logger.debug("WebSocket over HTTP/1.1: \(reason)")
                    return transport
                }
                let connection: HTTP2Connection
                let readiness: HTTP2Connection.Readiness
                do {
                    let pool = self.http2Pool
                    connection = try HTTP2Connection(
                        transport: transport, origin: origin, settings: self.configuration.http2, logger: logger,
                        onRetire: { pool.retire(key, $0) })
                    connection.start(timeout: options.connectTimeout)
                    readiness = try await connection.waitUntilReady()
                } catch {
                    transport.abort()
                    self.http2Pool.finish(key, pending, connection: nil, http1Reason: nil)
                    throw error
                }
                guard readiness.extendedConnect else {
                    let reason = "the server's HTTP/2 SETTINGS do not enable extended CONNECT (RFC 8441)"
                    connection.closeUnused()
                    self.http2Pool.finish(key, pending, connection: nil, http1Reason: reason)
                    return try await fallback(reason)
                }
                logger.debug("HTTP/2 connection ready for WebSockets")
                // The session that set the connection up opens its stream there, ahead of the waiters.
                if self.http2Pool.finish(key, pending, connection: connection, http1Reason: nil) {
                    do {
                        return try await connection.openStream(request, timeout: options.connectTimeout)
                    } catch let refused as HTTP2StreamNotProcessed {
                        try notProcessed(refused.error)
                    }
                } else {
                    // Closed or GOAWAY between its SETTINGS and this session's request (e.g. a server's idle
                    // timeout while this process stalled): the server saw no request.
                    try notProcessed(connection.noNewStreamsError)
                }
            }
        }
    }

    /// How many times an opening session tries again after the server did not process its stream
    /// (REFUSED_STREAM, a GOAWAY below it, a connection that stopped taking streams before the request went out,
    /// including a new connection closed before its first stream).
    static let http2Retries = 3

    /// ALPN `h2`, `http/1.1` (wire format).
    static let alpnH2: [UInt8] = [2] + Array("h2".utf8) + [8] + Array("http/1.1".utf8)
    /// ALPN `http/1.1` only (wire format): the fallback connection.
    static let alpnHTTP1: [UInt8] = [8] + Array("http/1.1".utf8)
}

/// An HTTP/2 stream the server did not process (RFC 9113, 8.7): the request may be sent again; `error` says why
/// when it is not.
struct HTTP2StreamNotProcessed: Error {
    /// What the session's opening fails with when it is not tried again.
    let error: WebSocketError
}
