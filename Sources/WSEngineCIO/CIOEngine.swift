import Glibc
import Synchronization
public import WSCore
import WSPosix

/// The native WebSocket engine for Linux: its own epoll event loops, non-blocking sockets and the system OpenSSL
/// (loaded on the first TLS connection, so a process with only `ws://` connections never maps it).
///
/// - Threading: `eventLoopCount` loop threads (default: one per processor this process may run on; a loop's thread
///   starts when a connection is first assigned to it), each serving many connections (round-robin); name
///   resolution runs on a small separate thread pool, so a slow DNS server never stalls a loop. Handler
///   callbacks arrive on the connection's loop thread.
/// - I/O: sockets are registered edge-triggered once; writes go straight to the kernel from the caller's thread
///   when nothing is queued, and the loop flushes the rest with batched `sendmsg`. Reads use one buffer per loop.
/// - TLS: one `SSL_CTX` per engine, built on the first `wss` connect; certificate chain and host name (or IP
///   address) verification, SNI for host names and TLS 1.2 or newer by default. TLS runs over a socket BIO that
///   sends with `MSG_NOSIGNAL`, so the engine never raises SIGPIPE and never changes the process's signal
///   handling. With `WebSocketTLSConfiguration.resumesSessions` (the default) the engine keeps the sessions servers
///   hand out, in memory, and resumes them on later connections to the same server (TLS 1.3 tickets once each).
///
/// ```swift
/// let engine = CIOEngine(configuration: .init(tls: .init(trustRoots: .file("/etc/my-ca.pem"))))
/// ```
public final class CIOEngine: WebSocketEngine, LoopHoldWatchingEngine {
    /// How the engine runs.
    public struct Configuration: Sendable {
        /// The number of event-loop threads; connections are spread over them round-robin. Default
        /// ``CIOEngine/defaultEventLoopCount``, the processors this process may use (as SwiftNIO's default group):
        /// blocks run on their session's loop by default, so several loops let sessions use several cores. A loop's
        /// thread starts when the rotation first reaches it: one connection starts one thread.
        public var eventLoopCount: Int
        /// TLS settings for `wss` endpoints: trust roots, client identity, minimum version, server name override and
        /// the opt-out of verification, in the engine-neutral shape the Curl engine takes too.
        public var tls: WebSocketTLSConfiguration
        /// The most bytes one read hands to the handler (one buffer of this size per loop). Default 256 KiB:
        /// bulk transfers take a quarter of the system calls they took with 64 KiB, and a loop's untouched pages
        /// cost no memory.
        public var readBufferSize: Int
        /// The most resolved addresses tried, in order, before a connect fails. Default 8.
        public var maxAddressAttempts: Int
        /// The number of name-resolution threads (started on demand). Default 2.
        public var resolverThreadCount: Int
        /// After `close()` flushed and sent FIN, how long to wait for the peer's end of stream before the socket
        /// is closed anyway. Default 2 s.
        public var closeGracePeriod: Duration
        /// How long `close()` may wait for the kernel to take the buffered bytes before it gives up and closes
        /// the socket, reporting `.timedOut`. Default 10 s.
        public var closeFlushTimeout: Duration
        /// WebSockets over HTTP/2 (RFC 8441) for `wss://`: off by default; see ``CIOEngine/HTTP2Mode``.
        public var http2: HTTP2Configuration

        /// Creates a configuration.
        /// - Parameters:
        ///   - eventLoopCount: Event-loop threads (at least 1).
        ///   - tls: TLS settings.
        ///   - readBufferSize: Bytes per read (at least 1 KiB).
        ///   - maxAddressAttempts: Addresses tried per connect (at least 1).
        ///   - resolverThreadCount: Name-resolution threads (at least 1).
        ///   - closeGracePeriod: Wait for the peer's EOF after our FIN.
        ///   - closeFlushTimeout: Wait for buffered bytes to leave on `close()`.
        ///   - http2: WebSockets over HTTP/2.
        public init(
            eventLoopCount: Int = CIOEngine.defaultEventLoopCount,
            tls: WebSocketTLSConfiguration = WebSocketTLSConfiguration(),
            readBufferSize: Int = 256 * 1024,
            maxAddressAttempts: Int = 8,
            resolverThreadCount: Int = 2,
            closeGracePeriod: Duration = .seconds(2),
            closeFlushTimeout: Duration = .seconds(10),
            http2: HTTP2Configuration = HTTP2Configuration()
        ) {
            self.eventLoopCount = eventLoopCount
            self.tls = tls
            self.readBufferSize = readBufferSize
            self.maxAddressAttempts = maxAddressAttempts
            self.resolverThreadCount = resolverThreadCount
            self.closeGracePeriod = closeGracePeriod
            self.closeFlushTimeout = closeFlushTimeout
            self.http2 = http2
        }
    }

    /// The configuration the engine was created with.
    public let configuration: Configuration

    /// The default number of event loops: the processors this process may run on (its CPU affinity mask, which
    /// container CPU sets and `taskset` narrow).
    public static var defaultEventLoopCount: Int { availableProcessorCount() }

    private struct State {
        var loops: [EventLoop] = []
        var nextLoop = 0
        var shutDown = false
        var tls: TLSContext?
        /// One context per trust setting of https:// proxies.
        var proxyTLS: [WebSocketTLSConfiguration: TLSContext] = [:]
    }
    private let state = Mutex(State())
    private let resolver: Resolver
    /// The shared HTTP/2 connections by origin.
    let http2Pool = HTTP2Pool()

    /// Creates an engine. Threads start on the first connect.
    /// - Parameter configuration: How the engine runs.
    public init(configuration: Configuration = Configuration()) {
        self.configuration = configuration
        self.resolver = Resolver(maxThreads: configuration.resolverThreadCount)
    }

    deinit {
        // Without `shutdown()`: stop the loops anyway (aborting open transports) and let their threads end alone.
        let loops = self.state.withLock { $0.shutDown ? [] : $0.loops }
        for loop in loops {
            loop.initiateStop(error: Self.shutdownError)
            pthread_detach(loop.thread)
        }
        self.resolver.stop()
    }

    /// `CIO`.
    public var name: String { "CIO" }

    /// WebSockets and WebSocket extensions are supported: the engine supplies a plain byte stream, so WSCore
    /// carries the reserved bits and extension headers itself. WebSockets over HTTP/2 are supported when
    /// ``Configuration/http2`` turns them on and the loaded libnghttp2 has extended CONNECT (1.41 or later).
    /// - Parameter capability: The capability to check.
    public func isSupported(_ capability: EngineCapability) -> Bool {
        if capability == .webSocketOverHTTP2 {
            return self.configuration.http2.mode != .disabled && Self.nghttp2SupportsExtendedConnect
        }
        return capability == .webSocket || capability == .webSocketExtensions
    }

    /// Why `capability` is unsupported, and what to do; `nil` when it is supported.
    /// - Parameter capability: The capability to explain.
    public func unsupportedReason(_ capability: EngineCapability) -> String? {
        if self.isSupported(capability) { return nil }
        if capability == .webSocketOverHTTP2 {
            if let error = Self.nghttp2LoadError { return "\(error); install libnghttp2 1.41 or later" }
            if !Self.nghttp2SupportsExtendedConnect {
                return "the loaded libnghttp2 \(Self.nghttp2Version) has no extended CONNECT; install 1.41 or later"
            }
            return "WebSockets over HTTP/2 are off; set CIOEngine.Configuration.http2.mode to .preferred or .required"
        }
        return "the CIO engine does not support \(capability)"
    }

    /// Resolves, connects (trying the addresses in order) and runs the TLS handshake for `wss`, all within
    /// `options.connectTimeout`. Cancelling the calling task aborts the attempt. With `options.proxy` it goes through
    /// that proxy: an HTTP `CONNECT` tunnel (over TLS to an `https://` proxy, verified with `options.proxyTLS`) or a
    /// SOCKS5 tunnel, then TLS with the endpoint for `wss`; the timeout covers the whole way.
    /// - Parameters:
    ///   - endpoint: Where to connect.
    ///   - options: The connect timeout and the logger.
    ///
    /// With ``Configuration/http2`` on and an opening request in `options`, a `wss` session becomes a stream of a
    /// shared HTTP/2 connection to the origin when the server allows it (the transport's `openingResponse` is then
    /// the server's answer); otherwise the transport is a plain connection for an HTTP/1.1 upgrade.
    /// - Returns: A connected transport that has not started reading.
    /// - Throws: `WebSocketError` with code `.dnsFailure`, `.connectionRefused`, `.timedOut`,
    ///   `.tlsFailure`, `.proxyFailure` (the proxy refused the tunnel), `.unsupported` (HTTP/2 required but not
    ///   available), `.cancelled` or `.network`.
    public func connect(to endpoint: EngineEndpoint, options: EngineConnectOptions) async throws
        -> any WebSocketTransport
    {
        // The plain path first, with nothing of the HTTP/2 one in this frame: the caller's task keeps the frame
        // memory of its deepest call (in its allocator's slabs) for as long as it lives.
        if options.openingRequest == nil || self.configuration.http2.mode == .disabled {
            return try await self.makeConnector(endpoint, options, alpn: []).connect()
        }
        return try await self.connectOfferingHTTP2(to: endpoint, options: options)
    }

    /// ``connect(to:options:)`` with an opening request and HTTP/2 enabled.
    @inline(never)
    private func connectOfferingHTTP2(to endpoint: EngineEndpoint, options: EngineConnectOptions) async throws
        -> any WebSocketTransport
    {
        if let request = options.openingRequest, endpoint.secure && Self.nghttp2SupportsExtendedConnect {
            return try await self.connectHTTP2(to: endpoint, options: options, request: request)
        }
        if self.configuration.http2.mode == .required {
            throw WebSocketError(
                .unsupported,
                endpoint.secure
                    ? self.unsupportedReason(.webSocketOverHTTP2) ?? "HTTP/2 is not available"
                    : "HTTP/2 is required, but \(endpoint) is not a wss:// endpoint: WebSockets over cleartext HTTP/2 (h2c) are not supported"
            )
        }
        return try await self.connectTransport(to: endpoint, options: options, alpn: [])
    }

    /// Resolves, connects and runs TLS (offering `alpn`, when not empty): a plain connected transport.
    func connectTransport(to endpoint: EngineEndpoint, options: EngineConnectOptions, alpn: [UInt8]) async throws
        -> CIOTransport
    {
        try await self.makeConnector(endpoint, options, alpn: alpn).connect()
    }

    /// The synchronous part of ``connect(to:options:)``, kept out of its async frame (a task keeps the frame memory
    /// of its deepest call while it lives).
    @inline(never)
    private func makeConnector(_ endpoint: EngineEndpoint, _ options: EngineConnectOptions, alpn: [UInt8]) throws
        -> Connector
    {
        var endpoint = endpoint
        if endpoint.host.hasPrefix("[") && endpoint.host.hasSuffix("]") && endpoint.host.count > 2 {
            endpoint.host = String(endpoint.host.dropFirst().dropLast())  // Tolerate a bracketed IPv6 literal.
        }
        if Task.isCancelled {
            let hostPort = hostPortText(host: endpoint.host, port: endpoint.port)
            throw WebSocketError(.cancelled, "connecting to \(hostPort) was cancelled")
        }
        let (loop, tls) = try self.prepare(secure: endpoint.secure, preferred: options.executor)
        var proxyTLS: TLSContext?
        if let proxy = options.proxy, proxy.kind == .https {
            proxyTLS = try self.proxyTLSContext(options.proxyTLS)
        }
        let context = ConnectContext(
            resolver: self.resolver, tls: tls, proxyTLS: proxyTLS,
            maxAddressAttempts: self.configuration.maxAddressAttempts,
            closeGraceNanoseconds: self.configuration.closeGracePeriod.clampedNanoseconds,
            closeFlushNanoseconds: self.configuration.closeFlushTimeout.clampedNanoseconds, alpn: alpn)
        return Connector(loop: loop, endpoint: endpoint, options: options, context: context)
    }

    /// Stops the event loops and the resolver threads; open transports are aborted (their handlers see
    /// `transportDidClose` with a `.network` error) and pending connects fail. Returns once the loop threads have
    /// exited; the waiting happens on a helper thread, not on the cooperative pool. Later calls return at once.
    public func shutdown() async {
        let loops = self.state.withLock { state -> [EventLoop] in
            guard !state.shutDown else { return [] }
            state.shutDown = true
            return state.loops
        }
        self.resolver.stop()
        guard !loops.isEmpty else { return }
        for loop in loops { loop.initiateStop(error: Self.shutdownError) }
        let threads = loops.map(\.thread)
        await withCheckedContinuation { (continuation: CheckedContinuation<Void, Never>) in
            let joiner = startThread(name: "CIO shutdown", detached: true) {
                for thread in threads { pthread_join(thread, nil) }
                continuation.resume()
            }
            if joiner == nil {
                // Out of threads: the loops still stop, on their own; only the wait is skipped.
                for thread in threads { pthread_detach(thread) }
                continuation.resume()
            }
        }
    }

    /// How many `wss` handshakes resumed a kept TLS session so far (``WebSocketTLSConfiguration/resumesSessions``;
    /// for tests and benchmarks).
    package var resumedTLSSessionCount: Int { self.state.withLock { $0.tls?.sessions?.resumedCount ?? 0 } }

    /// The error of a connect or loop after ``shutdown()``.
    static let shutdownError = WebSocketError(.network, "the CIO engine was shut down")

    /// The next loop in the rotation (the loops start on first use); `nil` once the engine is shut down.
    public func executorForNextConnection() -> (any TaskExecutor)? {
        try? self.prepare(secure: false, preferred: nil).0
    }

    /// The next loop in the rotation and a watched executor of it for the session's code, which reports (once) a
    /// job that holds the loop for `limit` or longer; `nil` once the engine is shut down.
    package func executorsForNextConnection(
        reportingHoldsOf limit: Duration, _ report: @escaping @Sendable (Duration) -> Void
    ) -> (connection: any TaskExecutor, session: any TaskExecutor)? {
        guard let loop = try? self.prepare(secure: false, preferred: nil).0 else { return nil }
        return (loop, WatchedLoopExecutor(loop: loop, limit: limit) { report(.nanoseconds($0)) })
    }

    /// The shared TLS context for https:// proxies with these settings (built on first use). The server name
    /// override does not apply to a proxy, which is verified against the host of its URL.
    private func proxyTLSContext(_ configuration: WebSocketTLSConfiguration) throws(WebSocketError) -> TLSContext {
        var settings = configuration
        settings.serverNameOverride = nil
        return try self.state.withLock { state throws(WebSocketError) -> TLSContext in
            if let context = state.proxyTLS[settings] { return context }
            let context = try TLSContext(configuration: settings)
            state.proxyTLS[settings] = context
            return context
        }
    }

    /// Picks `preferred` if it is one of the loops, else the next loop in the rotation (starting its thread when the
    /// rotation first reaches it), and, for TLS, the shared context.
    private func prepare(secure: Bool, preferred: (any TaskExecutor)?) throws(WebSocketError)
        -> (EventLoop, TLSContext?)
    {
        try self.state.withLock { state throws(WebSocketError) -> (EventLoop, TLSContext?) in
            guard !state.shutDown else { throw Self.shutdownError }
            var tls: TLSContext?
            if secure {
                if state.tls == nil { state.tls = try TLSContext(configuration: self.configuration.tls) }
                tls = state.tls
            }
            if let preferred, let loop = state.loops.first(where: { $0 === preferred }) { return (loop, tls) }
            let index = state.nextLoop % max(1, self.configuration.eventLoopCount)
            if index == state.loops.count {
                // The rotation reaches a loop that has not started yet.
                let bufferSize = max(1024, self.configuration.readBufferSize)
                state.loops.append(try EventLoop.start(name: "CIO loop \(index)", readBufferSize: bufferSize))
            }
            let loop = state.loops[index]
            state.nextLoop &+= 1
            return (loop, tls)
        }
    }
}
