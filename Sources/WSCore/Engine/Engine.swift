public import Logging

/// Something an engine may or may not be able to do, checked at run time with
/// ``WebSocketClient/isSupported(_:)``. Ktor's `HttpClientEngineCapability`.
public struct EngineCapability: Hashable, Sendable, CustomStringConvertible {
    /// The capability's name, e.g. `WebSocketCapability`.
    public let name: String
    /// Creates a capability; engines and plugins may define their own.
    /// - Parameter name: A unique name.
    public init(name: String) { self.name = name }

    /// The engine can open WebSocket sessions.
    public static let webSocket = EngineCapability(name: "WebSocketCapability")
    /// The engine carries the reserved bits and extension headers that WebSocket extensions such as
    /// permessage-deflate need.
    public static let webSocketExtensions = EngineCapability(name: "WebSocketExtensionsCapability")
    /// The engine can open WebSocket sessions as streams of a shared HTTP/2 connection (RFC 8441 extended CONNECT)
    /// on this machine: its HTTP/2 library is present and recent enough.
    public static let webSocketOverHTTP2 = EngineCapability(name: "WebSocketOverHTTP2Capability")

    /// The capability's name.
    public var description: String { self.name }
}

/// Where an engine connects: a host and port, with or without TLS.
public struct EngineEndpoint: Sendable, Hashable, CustomStringConvertible {
    /// Host name or IP address (no brackets).
    public var host: String
    /// TCP port.
    public var port: Int
    /// Whether to run TLS over the connection (wss).
    public var secure: Bool

    /// Creates an endpoint.
    /// - Parameters:
    ///   - host: Host name or IP address.
    ///   - port: TCP port.
    ///   - secure: Whether to use TLS.
    public init(host: String, port: Int, secure: Bool) {
        self.host = host
        self.port = port
        self.secure = secure
    }

    /// `host:port`, with `tls` when secure.
    public var description: String { "\(self.host):\(self.port)\(self.secure ? " (tls)" : "")" }
}

/// Per-connection options the session passes to an engine.
public struct EngineConnectOptions: Sendable {
    // The values live out of line, in one immutable box: a copy of the options is one word. A session's opening
    // holds them, and every async call that passes them on holds a copy in its frame, which the opening task keeps
    // (in its allocator's slabs) for as long as it lives; inline they were about 240 bytes.
    private struct Values: Sendable {
        var connectTimeout: Duration
        var logger: Logger
        var executor: (any TaskExecutor)?
        var progress: (@Sendable (EngineConnectStep) -> Void)?
        var proxying: Proxying
        var openingRequest: EngineOpeningRequest?
    }

    /// The proxy and the TLS settings for it (≈ 200 bytes together), in a box of their own that the openings of a
    /// client share when they connect without a proxy.
    final class Proxying: Sendable {
        let proxy: ProxyServer?
        let tls: WebSocketTLSConfiguration

        init(proxy: ProxyServer?, tls: WebSocketTLSConfiguration) {
            self.proxy = proxy
            self.tls = tls
        }
    }

    private final class Box: Sendable {
        let values: Values
        init(_ values: Values) { self.values = values }
    }

    private var box: Box

    private mutating func update(_ change: (inout Values) -> Void) {
        var values = self.box.values
        change(&values)
        self.box = Box(values)
    }

    /// How long name resolution, the TCP connect and the TLS handshake may take together.
    public var connectTimeout: Duration {
        get { self.box.values.connectTimeout }
        set { self.update { $0.connectTimeout = newValue } }
    }
    /// The logger of the client.
    public var logger: Logger {
        get { self.box.values.logger }
        set { self.update { $0.logger = newValue } }
    }
    /// The executor the caller wants the connection's transport on: one the engine returned from
    /// ``WebSocketEngine/executorForNextConnection()``, so the code that opens and runs the session already runs on
    /// the thread that will deliver its events. `nil`: the engine chooses. An engine ignores an executor that is not
    /// one of its own.
    public var executor: (any TaskExecutor)? {
        get { self.box.values.executor }
        set { self.update { $0.executor = newValue } }
    }
    /// Called as the connect passes its steps (name resolved, TCP connected, TLS established), for the opening's
    /// trace; `nil` unless a tracer is in place. Engines call it on their own thread; it must return quickly.
    public var progress: (@Sendable (EngineConnectStep) -> Void)? {
        get { self.box.values.progress }
        set { self.update { $0.progress = newValue } }
    }
    /// The proxy to connect through, already chosen for this endpoint from the client's ``ProxyConfiguration``
    /// (and the environment); `nil`: connect directly. The engine never reads the environment itself.
    public var proxy: ProxyServer? {
        get { self.box.values.proxying.proxy }
        set { self.update { $0.proxying = Proxying(proxy: newValue, tls: $0.proxying.tls) } }
    }
    /// The TLS settings for the connection to an `https://` ``proxy`` (`ProxyConfiguration.tls`; its server name
    /// override does not apply to a proxy).
    public var proxyTLS: WebSocketTLSConfiguration {
        get { self.box.values.proxying.tls }
        set { self.update { $0.proxying = Proxying(proxy: $0.proxying.proxy, tls: newValue) } }
    }
    /// The WebSocket opening request, for an engine that can open the session itself (an HTTP/2 engine sends it as
    /// an extended CONNECT and returns the answer in ``WebSocketTransport/openingResponse``). Engines that hand
    /// over a plain byte stream ignore it: the session then sends its HTTP/1.1 upgrade request over the stream.
    public var openingRequest: EngineOpeningRequest? {
        get { self.box.values.openingRequest }
        set { self.update { $0.openingRequest = newValue } }
    }

    /// Creates options.
    /// - Parameters:
    ///   - connectTimeout: The connect timeout (it covers the whole way through a proxy).
    ///   - logger: Where the engine logs.
    ///   - executor: The executor wanted for the transport (see ``executor``).
    ///   - proxy: The proxy to connect through; `nil` for a direct connection.
    ///   - proxyTLS: The TLS settings for an `https://` proxy.
    ///   - openingRequest: The WebSocket opening request, for engines that open sessions themselves.
    public init(
        connectTimeout: Duration, logger: Logger, executor: (any TaskExecutor)? = nil, proxy: ProxyServer? = nil,
        proxyTLS: WebSocketTLSConfiguration = WebSocketTLSConfiguration(), openingRequest: EngineOpeningRequest? = nil
    ) {
        self.init(
            connectTimeout: connectTimeout, logger: logger, executor: executor,
            proxying: Proxying(proxy: proxy, tls: proxyTLS), openingRequest: openingRequest)
    }

    /// Options with the proxy and its TLS settings in a box that may be shared.
    init(
        connectTimeout: Duration, logger: Logger, executor: (any TaskExecutor)?, proxying: Proxying,
        openingRequest: EngineOpeningRequest?
    ) {
        self.box = Box(
            Values(
                connectTimeout: connectTimeout, logger: logger, executor: executor, progress: nil, proxying: proxying,
                openingRequest: openingRequest))
    }
}

/// The HTTP version that carries a WebSocket session.
public struct WebSocketHTTPVersion: Hashable, Sendable, CustomStringConvertible {
    private let name: String
    private init(_ name: String) { self.name = name }

    // swift-format-ignore: AlwaysUseLowerCamelCase
    /// HTTP/1.1: the session owns a TCP (and TLS) connection, opened with an `Upgrade: websocket` request.
    public static let http1_1 = WebSocketHTTPVersion("HTTP/1.1")
    /// HTTP/2: the session is one stream of a connection it may share with other sessions to the same origin,
    /// opened with an extended CONNECT (RFC 8441).
    public static let http2 = WebSocketHTTPVersion("HTTP/2")

    /// `HTTP/1.1` or `HTTP/2`.
    public var description: String { self.name }
}

/// A WebSocket opening request in the form an engine that opens sessions itself needs: the target and the header
/// fields the session would send in its upgrade request, without the HTTP/1.1 connection-specific ones (`Host`,
/// `Upgrade`, `Connection`, `Sec-WebSocket-Key`, `Sec-WebSocket-Version`).
public struct EngineOpeningRequest: Sendable {
    /// The path and query, e.g. `/chat?room=1`.
    public var path: String
    /// The authority: the host, with the port when it is not the scheme's default (the `Host` header's value).
    public var authority: String
    /// The header fields to send: subprotocols, extension offers, authorization and the user's headers.
    public var headers: HTTPHeaders

    /// Creates a request.
    /// - Parameters:
    ///   - path: The path and query.
    ///   - authority: The authority (`host[:port]`).
    ///   - headers: The header fields to send.
    public init(path: String, authority: String, headers: HTTPHeaders) {
        self.path = path
        self.authority = authority
        self.headers = headers
    }
}

/// The server's answer to an opening request an engine sent itself (an HTTP/2 extended CONNECT's response).
public struct EngineOpeningResponse: Sendable {
    /// The HTTP status; a 2xx opened the session.
    public var status: Int
    /// The response header fields (pseudo-headers removed).
    public var headers: HTTPHeaders
    /// The HTTP version that carries the session.
    public var httpVersion: WebSocketHTTPVersion

    /// Creates a response.
    /// - Parameters:
    ///   - status: The HTTP status.
    ///   - headers: The response header fields.
    ///   - httpVersion: The HTTP version that carries the session.
    public init(status: Int, headers: HTTPHeaders, httpVersion: WebSocketHTTPVersion) {
        self.status = status
        self.headers = headers
        self.httpVersion = httpVersion
    }
}

/// A step of an engine's connect, reported through ``EngineConnectOptions/progress``.
public struct EngineConnectStep: Hashable, Sendable, CustomStringConvertible {
    private enum Base: String, Hashable, Sendable {
        case resolved, connected, tlsEstablished
    }
    private let base: Base
    private init(_ base: Base) { self.base = base }

    /// The host name was resolved (skipped for an IP address).
    public static let resolved = EngineConnectStep(.resolved)
    /// The TCP connection is established (to the server, or to the proxy).
    public static let connected = EngineConnectStep(.connected)
    /// The TLS handshake completed (`wss` only).
    public static let tlsEstablished = EngineConnectStep(.tlsEstablished)

    /// The step's name, as in `tlsEstablished`.
    public var description: String { self.base.rawValue }
}

/// A WebSocket engine: it supplies connected byte streams (TCP, TLS, proxies); WSCore does the opening
/// handshake, the framing and the session logic on top, identically for every engine.
///
/// Implementations: `CIOEngine` (WSEngineCIO, native epoll + OpenSSL) and `CurlEngine` (WSEngineCurl).
public protocol WebSocketEngine: AnyObject, Sendable {
    /// A short name for messages and logs, e.g. `CIO`.
    var name: String { get }

    /// Whether the engine can do `capability` on this machine (e.g. the loaded libcurl has WebSockets).
    /// - Parameter capability: The capability to check.
    func isSupported(_ capability: EngineCapability) -> Bool

    /// Why `capability` is unsupported, and what to use instead; `nil` when it is supported.
    /// - Parameter capability: The capability to explain.
    func unsupportedReason(_ capability: EngineCapability) -> String?

    /// Opens a byte stream to `endpoint`: resolves the name, connects, and runs TLS when `endpoint.secure`.
    /// - Parameters:
    ///   - endpoint: Where to connect.
    ///   - options: Timeouts and logger.
    /// - Returns: A transport that has not started reading yet.
    /// - Throws: ``WebSocketError`` (``WebSocketError/Code/dnsFailure``,
    ///   ``WebSocketError/Code/connectionRefused``, ``WebSocketError/Code/timedOut``,
    ///   ``WebSocketError/Code/tlsFailure``, ...).
    func connect(to endpoint: EngineEndpoint, options: EngineConnectOptions) async throws -> any WebSocketTransport

    /// The executor (event-loop thread) the engine will give the next connection, for callers that want to open
    /// and run the session on it: they run under it with `withTaskExecutorPreference` and pass it back in
    /// ``EngineConnectOptions/executor``, so the connect, the handshake, the session's code and the close all
    /// resume on the thread that delivers their events, with no thread hop. Each call takes the next executor in
    /// the engine's rotation. `nil` (the default): the engine has no executors of its own.
    func executorForNextConnection() -> (any TaskExecutor)?

    /// Releases the engine's threads and resources; called by ``WebSocketClient/close()``. Open transports are
    /// aborted.
    func shutdown() async
}

/// An engine whose event loops can time the jobs of one session's code: the package's engines adopt it, so that a
/// block that holds its loop too long (blocking I/O, `sleep`) is reported instead of silently freezing its session.
package protocol LoopHoldWatchingEngine: WebSocketEngine {
    /// Like ``WebSocketEngine/executorForNextConnection()``, plus an executor for the session's own code that runs
    /// its jobs on that loop, times each, and calls `report` once, on the loop thread, with the first job that held
    /// the loop for `limit` or longer.
    /// - Parameters:
    ///   - limit: The shortest hold reported.
    ///   - report: Receives the length of that hold.
    /// - Returns: The loop (for ``EngineConnectOptions/executor``) and the watched executor for the session's code;
    ///   `nil` when the engine is shut down.
    func executorsForNextConnection(
        reportingHoldsOf limit: Duration, _ report: @escaping @Sendable (Duration) -> Void
    ) -> (connection: any TaskExecutor, session: any TaskExecutor)?
}

extension WebSocketEngine {
    /// Default: no executors of its own.
    public func executorForNextConnection() -> (any TaskExecutor)? { nil }

    /// Default: every capability this engine supports has no reason.
    public func unsupportedReason(_ capability: EngineCapability) -> String? {
        self.isSupported(capability) ? nil : "the \(self.name) engine does not support \(capability)"
    }
}

/// A connected byte stream supplied by an engine.
///
/// This is what a third engine implements (besides ``WebSocketEngine/connect(to:options:)``); the session does
/// everything above the bytes. The rules the session relies on:
/// - ``write(_:)``, ``write(bytes:)``, ``setReadingPaused(_:)``, ``close()``, ``abort()``, ``bufferedBytes`` and
///   ``schedule(after:_:)`` may be called from any thread, including from inside a handler callback, and while the
///   session holds a lock of its own: the transport's own lock is innermost (it takes no other lock and calls out to
///   nothing while holding it).
/// - None of those calls invokes the handler before it returns: every callback comes later, from the engine's thread.
///   (The session calls `write` while holding its lock, and a callback takes that lock.)
/// - The handler's callbacks arrive serially (never two at once), and so do the actions of timers from
///   ``schedule(after:_:)``, which may be called before ``start(handler:)`` (the opening handshake's timeout is).
/// - While reading is paused, no bytes are delivered; the end of the stream and a connection error that arrive behind
///   unread bytes are reported after those bytes, once reading resumes. The end that ``close()`` or ``abort()``
///   brings is reported whether reading is paused or not.
/// - ``WebSocketTransportHandler/transportDidClose(error:)`` comes exactly once, and nothing after it.
public protocol WebSocketTransport: AnyObject, Sendable {
    /// Starts delivering events to `handler`. Called exactly once; bytes that arrived earlier are delivered
    /// first.
    /// - Parameter handler: Receives bytes, drain and close events. Held strongly until the transport closes.
    func start(handler: any WebSocketTransportHandler)

    /// Queues `bytes` for sending and sends what the socket takes at once. Never blocks.
    /// - Parameter bytes: Bytes to send, in order after every earlier write.
    /// - Returns: How many bytes are buffered in user space after this call (0 when all went to the kernel).
    ///   Writes after ``close()``/``abort()`` or after the transport failed are dropped and return 0.
    @discardableResult
    func write(_ bytes: [UInt8]) -> Int

    /// Queues a copy of `bytes` for sending, like ``write(_:)``: for small frames that the session encodes in a
    /// temporary buffer, so a transport that gathers small writes into a buffer of its own copies them there and no
    /// array is made per message. The default makes an array and calls ``write(_:)``.
    /// - Parameter bytes: Bytes to send, valid only during the call.
    /// - Returns: How many bytes are buffered in user space after this call.
    @discardableResult
    func write(bytes: UnsafeRawBufferPointer) -> Int

    /// Queues the last bytes the session sends, its close frame, like ``write(_:)``; nothing is written after them. A
    /// transport that is one stream of a multiplexed connection ends its side of the stream with them (HTTP/2:
    /// END_STREAM on the DATA frame that carries them), as RFC 8441 asks. The default calls ``write(_:)``.
    /// - Parameter bytes: The last bytes to send.
    /// - Returns: How many bytes are buffered in user space after this call.
    @discardableResult
    func writeLast(_ bytes: [UInt8]) -> Int

    /// Stops (`true`) or resumes (`false`) reading from the network: the backpressure of a slow consumer.
    /// - Parameter paused: Whether reading is paused.
    func setReadingPaused(_ paused: Bool)

    /// Sends every buffered byte, then closes the connection (TLS close_notify, then TCP FIN) and reports
    /// ``WebSocketTransportHandler/transportDidClose(error:)``.
    func close()

    /// Closes the connection at once, dropping buffered bytes, and reports
    /// ``WebSocketTransportHandler/transportDidClose(error:)`` if not yet reported.
    func abort()

    /// The number of bytes buffered in user space, not yet accepted by the kernel.
    var bufferedBytes: Int { get }
    /// The executor of the thread that delivers this transport's events, if the engine offers one. Session code
    /// that prefers it (`withTaskExecutorPreference`) resumes on that thread when a message arrives, with no thread
    /// hop, and its writes can be gathered per event-loop round. `nil` (the default): the caller's executor.
    var executor: (any TaskExecutor)? { get }
    /// Runs `action` once after `delay` on the engine's thread, unless cancelled first: the session's timers (open,
    /// ping, pong and close timeouts) then cost a timer-heap entry on the event loop instead of a sleeping task.
    /// Callable from any thread. `nil` (the default): the engine has no timers and the session uses tasks.
    /// - Parameters:
    ///   - delay: How long to wait.
    ///   - action: What to run; it must not block.
    /// - Returns: A handle to cancel the timer, or `nil` if the engine has no timers.
    func schedule(after delay: Duration, _ action: @escaping @Sendable () -> Void) -> (any WebSocketTransportTimer)?
    /// The server's answer when the engine already opened the WebSocket session on this transport (an HTTP/2 stream
    /// opened with ``EngineConnectOptions/openingRequest``): the session then skips its HTTP/1.1 handshake, checks
    /// this response (subprotocol, extensions) and starts exchanging frames at once. `nil` (the default): the
    /// transport is a plain byte stream and the session sends its upgrade request.
    var openingResponse: EngineOpeningResponse? { get }
}

extension WebSocketTransport {
    /// Default: an array of the bytes, to ``write(_:)``.
    @discardableResult
    public func write(bytes: UnsafeRawBufferPointer) -> Int { self.write([UInt8](bytes)) }

    /// Default: ``write(_:)``.
    @discardableResult
    public func writeLast(_ bytes: [UInt8]) -> Int { self.write(bytes) }

    /// Default: no executor of its own.
    public var executor: (any TaskExecutor)? { nil }

    /// Default: a plain byte stream; the session runs the HTTP/1.1 handshake.
    public var openingResponse: EngineOpeningResponse? { nil }

    /// Default: no timers; the session sleeps in tasks.
    public func schedule(after delay: Duration, _ action: @escaping @Sendable () -> Void)
        -> (any WebSocketTransportTimer)?
    {
        nil
    }
}

/// A timer started with ``WebSocketTransport/schedule(after:_:)``.
public protocol WebSocketTransportTimer: Sendable {
    /// Stops the timer from firing if it has not fired yet. Callable from any thread, more than once.
    func cancel()
}

/// Receives a transport's events, serially, on the engine's thread. Callbacks must not block.
public protocol WebSocketTransportHandler: AnyObject, Sendable {
    /// Bytes arrived. The buffer is valid only during the call.
    /// - Parameter bytes: The bytes read, in order.
    func transportDidRead(_ bytes: UnsafeRawBufferPointer)

    /// Every buffered byte has been handed to the kernel (``WebSocketTransport/bufferedBytes`` became 0 after
    /// having been positive).
    func transportDidDrain()

    /// The connection ended: `nil` for a clean end of stream from the peer, an error otherwise. Called once;
    /// no callback follows.
    /// - Parameter error: Why the connection ended, or `nil` for a clean EOF.
    func transportDidClose(error: (any Error)?)
}

extension Logger {
    /// Sets the metadata `key` only when this logger logs debug messages, where the SDK's connection context is read:
    /// every message the SDK logs with it is at debug or trace level. Setting metadata is not free (swift-log's
    /// default `StreamLogHandler` renders all of its metadata again on each change, several string allocations), and
    /// a connection sets it on the way to every open.
    /// - Parameters:
    ///   - key: The metadata key.
    ///   - value: The value, evaluated only when it is set.
    package mutating func setDebugMetadata(_ key: String, _ value: @autoclosure () -> String) {
        guard self.logLevel <= .debug else { return }
        self[metadataKey: key] = .string(value())
    }
}
