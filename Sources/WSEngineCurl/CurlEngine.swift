import CWSCurl
import CWSLinux
import Glibc
import Synchronization
public import WSCore
import WSPosix

/// The libcurl WebSocket engine for Linux: libcurl makes the connection, WSCore speaks WebSocket over it.
///
/// libcurl does what it is good at — name resolution, TCP with happy eyeballs, TLS with its backend and CA store,
/// client certificates, and HTTP, HTTPS and SOCKS proxies (including the proxy environment variables) — and then
/// hands over the raw byte stream: each connect is a `CURLOPT_CONNECT_ONLY` transfer to `http://host:port/` (or
/// `https://` for `wss`), tunnelled with `CONNECT` through an HTTP proxy (`CURLOPT_HTTPPROXYTUNNEL`) for `ws` as
/// well as `wss`. WSCore then sends the upgrade request and does the framing, masking, ping/pong and close logic
/// exactly as with every other engine, over `curl_easy_send`/`curl_easy_recv`.
///
/// Why not libcurl's own WebSocket API: it does not check `Sec-WebSocket-Accept` nor the negotiated subprotocol
/// and extensions, rejects frames with RSV bits (so no permessage-deflate), leaves the close handshake to the
/// caller, reused one masking key per connection before 8.16, and could lose bytes that arrived with the 101
/// response before 8.21. None of that applies here, because libcurl only carries bytes; for the same reason this
/// engine supports `EngineCapability.webSocketExtensions`.
///
/// - Threading: a few epoll loop threads (``Configuration/eventLoopCount``, by default one per processor) serve
///   every connection, round-robin (no thread per connection). Connects run concurrently on their loop through
///   libcurl's multi-socket API (`curl_multi_socket_action`). Each connection has its own multi handle, because a `CONNECT_ONLY` easy handle must stay in its multi handle while it is used and
///   libcurl looks the connection up in that multi's pool on every send and receive: with a private multi, the
///   pair is only ever used by one thread at a time. Once connected, the socket from `CURLINFO_ACTIVESOCKET` is
///   watched level-triggered; `CURLE_AGAIN` waits for `EPOLLIN`/`EPOLLOUT` and never busy-polls. Writes go to
///   libcurl from the caller's thread when nothing is queued; handler callbacks arrive on the loop thread.
///   A connection without TLS (`ws` directly, or through an `http://` or SOCKS proxy) needs nothing more from
///   libcurl once connected: the engine keeps its socket (libcurl closes its sockets through
///   `CURLOPT_CLOSESOCKETFUNCTION`, which leaves that one open), releases both handles at once, and moves the bytes
///   with `send`/`recv` itself.
/// - Cost: for `wss` (or an `https://` proxy), the socket plus the multi handle's wakeup descriptor and its
///   handles for the connection's life; for `ws` without TLS on the path, the socket alone once connected. No DNS
///   cache across connections.
/// - Sharing between connections: the engine keeps the TLS sessions servers hand out in one libcurl share handle
///   and resumes them on later connections to the same server with the same settings
///   (`WebSocketTLSConfiguration.resumesSessions`), and, when libcurl's TLS backend is the OpenSSL this process
///   links, parses the trust store once and gives it to every connection (otherwise libcurl loads it per
///   connection). Neither is shared between engines.
/// - Availability: WebSockets are reported as supported only when the loaded libcurl lists `ws` and `wss` among
///   its protocols (7.86+ built with WebSockets; default-on since 8.11). Debian 12's stock libcurl 7.88 does not:
///   install `libcurl4-openssl-dev` from bookworm-backports, or use the CIO engine.
/// - Closing: `close()` flushes, sends FIN and waits up to 2 s for the peer's end of stream. libcurl sends no TLS
///   close_notify for a `CONNECT_ONLY` connection; the WebSocket close handshake marks the clean end instead.
///
/// ```swift
/// let client = WebSocketClient(engine: CurlEngine()) { config in
///     config.proxy = try ProxyConfiguration(url: "http://proxy.internal:3128")
/// }
/// ```
public final class CurlEngine: WebSocketEngine, LoopHoldWatchingEngine {
    /// A TLS protocol version; now `WebSocketTLSConfiguration.Version`.
    @available(*, deprecated, renamed: "WebSocketTLSConfiguration.Version")
    public typealias TLSVersion = WebSocketTLSConfiguration.Version

    /// How the engine configures libcurl. Secure by default: libcurl's built-in CA store, peer and host name
    /// verification, TLS 1.2 or newer, and the proxy environment variables honoured.
    public struct Configuration: Sendable {
        /// TLS settings for `wss` endpoints, in the engine-neutral shape the CIO engine takes too: trust roots
        /// (`CURLOPT_CAINFO`, `CURLOPT_CAPATH`, `CURLOPT_CAINFO_BLOB`, or, when libcurl runs on this process's
        /// OpenSSL, one store per engine given to each connection from `CURLOPT_SSL_CTX_FUNCTION`), client identity
        /// (`CURLOPT_SSLCERT`, `CURLOPT_SSLKEY` or their `_BLOB` forms, `CURLOPT_KEYPASSWD`), minimum version
        /// (`CURLOPT_SSLVERSION`), server name override (`CURLOPT_CONNECT_TO`: the URL names the override, the connection goes to the
        /// endpoint's host), the opt-out (`CURLOPT_SSL_VERIFYPEER` and `CURLOPT_SSL_VERIFYHOST` 0) and session
        /// resumption (`CURLOPT_SSL_SESSIONID_CACHE`, sessions kept in the engine's share handle). They apply
        /// to the endpoint only: an `https://` proxy is verified with `ProxyConfiguration.tls` (the `CURLOPT_PROXY_*`
        /// options).
        public var tls: WebSocketTLSConfiguration
        /// The proxy as a libcurl string (`CURLOPT_PROXY`), overriding the client's
        /// `WebSocketClient.Configuration.proxy` for this engine; `""` means no proxy. `nil` (the default): the
        /// client's setting, which both engines honour alike.
        @available(
            *, deprecated,
            message: "set WebSocketClient.Configuration.proxy (a ProxyConfiguration), which every engine honours"
        )
        public var proxy: String? {
            get { self.legacyProxy }
            set { self.legacyProxy = newValue }
        }
        /// Hosts that bypass the deprecated ``proxy`` string (`CURLOPT_NOPROXY`).
        @available(
            *, deprecated, message: "use ProxyConfiguration(url:noProxy:) in WebSocketClient.Configuration.proxy"
        )
        public var noProxy: String? {
            get { self.legacyNoProxy }
            set { self.legacyNoProxy = newValue }
        }
        /// Storage of the deprecated ``proxy``.
        var legacyProxy: String?
        /// Storage of the deprecated ``noProxy``.
        var legacyNoProxy: String?
        /// Routes libcurl's verbose trace (`CURLOPT_VERBOSE` + `CURLOPT_DEBUGFUNCTION`) into the connection's
        /// logger: informational lines at `.debug`, proxy request and response header lines at `.trace` with
        /// every header value removed (so credentials never reach a log). Transferred data is never logged.
        /// Default `false`.
        public var verbose: Bool
        /// The most bytes one read hands to the handler (one buffer of this size per event loop). Default 256 KiB;
        /// at least 1 KiB is used.
        public var readBufferSize: Int
        /// The number of event-loop threads; connections are spread over them round-robin. Default
        /// ``CurlEngine/defaultEventLoopCount``, the processors this process may use. A loop's thread starts when the
        /// rotation first reaches it: one connection starts one thread.
        public var eventLoopCount: Int

        /// Creates a configuration; every argument defaults to the secure choice. Proxies are set on the client
        /// (`WebSocketClient.Configuration.proxy`), alike for every engine.
        /// - Parameters:
        ///   - tls: TLS settings for `wss` endpoints.
        ///   - verbose: Log libcurl's trace (without header values) at `.debug`/`.trace`.
        ///   - readBufferSize: Bytes per read.
        ///   - eventLoopCount: Event-loop threads (at least 1).
        public init(
            tls: WebSocketTLSConfiguration = WebSocketTLSConfiguration(),
            verbose: Bool = false,
            readBufferSize: Int = 256 * 1024,
            eventLoopCount: Int = CurlEngine.defaultEventLoopCount
        ) {
            self.tls = tls
            self.verbose = verbose
            self.readBufferSize = readBufferSize
            self.eventLoopCount = eventLoopCount
        }

        /// Creates a configuration with the deprecated proxy strings.
        /// - Parameters:
        ///   - tls: TLS settings for `wss` endpoints.
        ///   - proxy: The proxy URL as libcurl reads it, `""` for none; `nil` for the client's setting.
        ///   - noProxy: Hosts that bypass that proxy.
        ///   - verbose: Log libcurl's trace (without header values) at `.debug`/`.trace`.
        ///   - readBufferSize: Bytes per read.
        ///   - eventLoopCount: Event-loop threads (at least 1).
        @available(
            *, deprecated,
            message: "set WebSocketClient.Configuration.proxy (a ProxyConfiguration) instead of proxy strings"
        )
        public init(
            tls: WebSocketTLSConfiguration = WebSocketTLSConfiguration(),
            proxy: String?,
            noProxy: String? = nil,
            verbose: Bool = false,
            readBufferSize: Int = 256 * 1024,
            eventLoopCount: Int = CurlEngine.defaultEventLoopCount
        ) {
            self.tls = tls
            self.legacyProxy = proxy
            self.legacyNoProxy = noProxy
            self.verbose = verbose
            self.readBufferSize = readBufferSize
            self.eventLoopCount = eventLoopCount
        }
    }

    /// After `close()` flushed and sent FIN, how long to wait for the peer's end of stream.
    static let closeGracePeriod = Duration.seconds(2)
    /// How long `close()` may wait for libcurl to take the buffered bytes before the connection is dropped.
    static let closeFlushTimeout = Duration.seconds(10)

    /// The configuration the engine was created with.
    public let configuration: Configuration

    /// The default number of event loops: the processors this process may run on (its CPU affinity mask, which
    /// container CPU sets and `taskset` narrow).
    public static var defaultEventLoopCount: Int { availableProcessorCount() }

    private struct State {
        var loops: [CurlEventLoop] = []
        var nextLoop = 0
        var shutDown = false
    }
    private let state = Mutex(State())
    /// The TLS session cache and trust store every connection shares.
    private let shared: SharedTLS

    /// Creates an engine. libcurl is initialized once per process (`curl_global_init`); the loop thread starts on
    /// the first connect.
    /// - Parameter configuration: How the engine configures libcurl.
    public init(configuration: Configuration = Configuration()) {
        self.configuration = configuration
        _ = LoadedCurl.initializationFailure
        self.shared = SharedTLS(configuration: configuration.tls)
    }

    deinit {
        // Without `shutdown()`: stop the loops anyway (aborting open transports) and let their threads end alone.
        for loop in self.state.withLock({ $0.shutDown ? [] : $0.loops }) {
            loop.initiateStop(error: Self.shutdownError)
            pthread_detach(loop.thread)
        }
    }

    /// `Curl`.
    public var name: String { "Curl" }

    /// The version of the libcurl loaded into this process, e.g. `8.14.1`.
    public static var libcurlVersion: String { LoadedCurl.version }

    /// The libcurl easy handles alive in this process: connects in progress, and open connections whose socket
    /// libcurl carries (for tests).
    package static var liveEasyHandles: Int { liveCurlEasyHandles.load(ordering: .relaxed) }

    /// The libcurl multi handles alive in this process: one per connection (or connect) that keeps libcurl's
    /// handles, and one per event loop that has connected without TLS on the path (for tests).
    package static var liveMultiHandles: Int { liveCurlMultiHandles.load(ordering: .relaxed) }

    /// The libcurl multi handles created in this process so far (for tests).
    package static var createdMultiHandles: Int { createdCurlMultiHandles.load(ordering: .relaxed) }

    /// Connections whose socket was taken over but whose libcurl connection outlived the removal of their easy handle
    /// from the loop's multi handle (for tests: none with libcurl 8.x).
    package static var connectionsKeptByLibcurl: Int { curlConnectionsKeptByLibcurl.load(ordering: .relaxed) }

    /// Whether `transport` (one of this engine's) moves its bytes on its own socket, libcurl's handles released;
    /// `nil` for another engine's transport (for tests).
    package static func ownsSocket(_ transport: any WebSocketTransport) -> Bool? {
        (transport as? CurlTransport)?.ownsSocket
    }

    /// Whether the loaded libcurl lists both `ws` and `wss` in `curl_version_info()->protocols` (7.86+ built with
    /// WebSockets). The engine does not use libcurl's WebSocket API, but follows this product rule so that a
    /// libcurl without WebSockets, such as Debian 12's stock 7.88, is reported as such.
    public static var supportsWebSockets: Bool { LoadedCurl.hasWebSockets && LoadedCurl.initializationFailure == nil }

    /// `EngineCapability.webSocket` and `EngineCapability.webSocketExtensions` are supported when
    /// ``supportsWebSockets`` is `true`: WSCore runs its own codec over libcurl's byte stream, so the reserved bits
    /// and extension headers pass through untouched.
    /// - Parameter capability: The capability to check.
    public func isSupported(_ capability: EngineCapability) -> Bool {
        guard capability == .webSocket || capability == .webSocketExtensions else { return false }
        return Self.supportsWebSockets
    }

    /// Why `capability` is unsupported — for WebSockets, which libcurl was loaded and what to install or use
    /// instead; `nil` when it is supported.
    /// - Parameter capability: The capability to explain.
    public func unsupportedReason(_ capability: EngineCapability) -> String? {
        guard !self.isSupported(capability) else { return nil }
        if capability == .webSocket || capability == .webSocketExtensions,
            let reason = LoadedCurl.webSocketUnsupportedReason
        {
            return reason
        }
        return "the Curl engine does not support \(capability)"
    }

    /// Resolves, connects (through the configured or environment proxy) and runs the TLS handshake for `wss`,
    /// all with libcurl within `options.connectTimeout` (`CURLOPT_CONNECTTIMEOUT_MS`). Cancelling the calling task
    /// aborts the attempt.
    /// - Parameters:
    ///   - endpoint: Where to connect.
    ///   - options: The connect timeout and the logger.
    /// - Returns: A connected transport that has not started reading.
    /// - Throws: `WebSocketError` with code `.dnsFailure` (host or proxy name), `.connectionRefused`
    ///   (ECONNREFUSED), `.timedOut`, `.tlsFailure`, `.cancelled`, `.unsupported` (the loaded libcurl lacks
    ///   WebSockets or TLS) or `.network`; its message carries `curl_easy_strerror` and libcurl's error detail.
    public func connect(to endpoint: EngineEndpoint, options: EngineConnectOptions) async throws
        -> any WebSocketTransport
    {
        let connector = try self.makeConnector(endpoint, options)
        let loop = connector.loop
        return try await withTaskCancellationHandler {
            try await withCheckedThrowingContinuation {
                (continuation: CheckedContinuation<CurlTransport, any Error>) in
                if !loop.execute({ connector.start(continuation) }) {
                    continuation.resume(throwing: Self.shutdownError)
                }
            }
        } onCancel: {
            loop.execute { connector.cancel() }
        }
    }

    /// The synchronous part of ``connect(to:options:)``, kept out of its async frame: inlined there, the connector's
    /// set-up made that frame 2.3 KB, which the calling task keeps (in its allocator's slabs) for as long as it lives.
    @inline(never)
    private func makeConnector(_ endpoint: EngineEndpoint, _ options: EngineConnectOptions) throws -> CurlConnector {
        let hostPort = hostPortText(host: endpoint.host, port: endpoint.port)
        if Task.isCancelled {
            throw WebSocketError(.cancelled, "connecting to \(hostPort) was cancelled")
        }
        if let reason = LoadedCurl.webSocketUnsupportedReason {
            throw WebSocketError(.unsupported, "cannot connect to \(hostPort): \(reason)")
        }
        if endpoint.secure && !LoadedCurl.hasHTTPS {
            throw WebSocketError(
                .unsupported,
                "cannot connect to \(hostPort) with TLS: the loaded libcurl \(LoadedCurl.version) has no TLS backend")
        }
        let loop = try self.prepareLoop(preferred: options.executor)
        return CurlConnector(
            loop: loop, endpoint: endpoint, options: options, configuration: self.configuration, shared: self.shared)
    }

    /// Stops the loop threads; open transports are aborted (their handlers see `transportDidClose` with a
    /// `.network` error) and pending connects fail. Returns once the loop threads have exited; the waiting happens
    /// on a helper thread, not on the cooperative pool. Later calls return at once.
    public func shutdown() async {
        let loops = self.state.withLock { state -> [CurlEventLoop] in
            guard !state.shutDown else { return [] }
            state.shutDown = true
            return state.loops
        }
        guard !loops.isEmpty else { return }
        for loop in loops { loop.initiateStop(error: Self.shutdownError) }
        let threads = loops.map(\.thread)
        await withCheckedContinuation { (continuation: CheckedContinuation<Void, Never>) in
            startThread(name: "Curl shutdown", detached: true) {
                for thread in threads { pthread_join(thread, nil) }
                continuation.resume()
            }
        }
    }

    private static let shutdownError = WebSocketError(.network, "the Curl engine was shut down")

    /// The next loop in the rotation (started when first reached); `nil` once the engine is shut down.
    public func executorForNextConnection() -> (any TaskExecutor)? {
        try? self.prepareLoop(preferred: nil)
    }

    /// The next loop in the rotation and a watched executor of it for the session's code, which reports (once) a
    /// job that holds the loop for `limit` or longer; `nil` once the engine is shut down.
    package func executorsForNextConnection(
        reportingHoldsOf limit: Duration, _ report: @escaping @Sendable (Duration) -> Void
    ) -> (connection: any TaskExecutor, session: any TaskExecutor)? {
        guard let loop = try? self.prepareLoop(preferred: nil) else { return nil }
        return (loop, WatchedLoopExecutor(loop: loop, limit: limit) { report(.nanoseconds($0)) })
    }

    /// `preferred` if it is one of the loops, else the next loop in the rotation (its thread started when the rotation
    /// first reaches it).
    private func prepareLoop(preferred: (any TaskExecutor)?) throws(WebSocketError) -> CurlEventLoop {
        try self.state.withLock { state throws(WebSocketError) -> CurlEventLoop in
            guard !state.shutDown else { throw Self.shutdownError }
            if let preferred, let loop = state.loops.first(where: { $0 === preferred }) { return loop }
            let index = state.nextLoop % max(1, self.configuration.eventLoopCount)
            if index == state.loops.count {
                state.loops.append(
                    CurlEventLoop.start(
                        name: "Curl loop \(index)", readBufferSize: max(1024, self.configuration.readBufferSize)))
            }
            state.nextLoop &+= 1
            return state.loops[index]
        }
    }
}
