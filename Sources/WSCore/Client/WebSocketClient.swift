public import CoreMetrics
public import Logging

/// A plugin installed in a client's configuration block, as Ktor's `HttpClientPlugin`. The WebSocket
/// support itself is the ``WebSockets`` plugin.
public protocol ClientPlugin {
    /// The plugin's settings, edited in the `install` block.
    associatedtype Configuration: Sendable
    /// A unique key for the plugin, e.g. `WebSocket`.
    static var key: String { get }
    /// The settings before the `install` block runs.
    static func defaultConfiguration() -> Configuration
}

/// The client: an engine plus the installed plugins. Ktor's `HttpClient`, reduced to what a WebSocket
/// SDK needs.
///
/// ```swift
/// let client = WebSocketClient(engine: CIOEngine()) { config in
///     config.install(WebSockets.self) { ws in
///         ws.pingInterval = .seconds(20)
///         ws.maxFrameSize = 1 << 20
///     }
/// }
/// defer { Task { await client.close() } }
/// try await client.webSocket("wss://echo.example.com") { session in
///     try await session.send("Hello WebSocket!")
/// }
/// ```
/// The engine is chosen per client. Create one client and share it: it is `Sendable` and its engine
/// multiplexes many sessions on a few threads. ``close()`` releases the engine.
public final class WebSocketClient: Sendable {
    /// The client's settings: logger, timeouts and installed plugins.
    public struct Configuration: Sendable {
        /// Where the client and its engine log. Handshake header values are never logged.
        public var logger: Logger = Logger(label: "websocket.client")
        /// How long resolving, connecting and the TLS handshake may take together (default 10 s).
        public var connectTimeout: Duration = .seconds(10)
        /// How long the whole opening, connect and WebSocket handshake included, may take (default 10 s).
        public var openTimeout: Duration = .seconds(10)
        /// Whether the client's sessions report metrics through swift-metrics (default `true`). They do nothing
        /// unless the application bootstrapped a backend with `MetricsSystem.bootstrap` before creating the client
        /// (or set ``metricsFactory``); `false` turns them off for this client. See Observability in the docs.
        public var metricsEnabled = true
        /// The metrics backend of this client; `nil` (the default) uses the one bootstrapped with
        /// `MetricsSystem.bootstrap` when the client is created. Set it to give one client its own backend, e.g. a
        /// `TestMetrics` in tests.
        public var metricsFactory: (any MetricsFactory)? = nil
        /// Which proxy connections go through, on every engine alike. Default ``ProxyConfiguration/environment``:
        /// the `*_proxy` and `no_proxy` environment variables, read as curl reads them, when the session opens;
        /// ``ProxyConfiguration/direct`` ignores them. The connect timeout covers the way through the proxy.
        public var proxy: ProxyConfiguration = .environment
        private var plugins: [String: any Sendable] = [:]

        /// Creates a configuration with no plugin installed.
        public init() {}

        /// Installs a plugin and edits its settings, as Ktor's `install(WebSockets) { ... }`. Installing a
        /// plugin twice edits the same settings.
        /// - Parameters:
        ///   - plugin: The plugin type, e.g. `WebSockets.self`.
        ///   - configure: Edits the plugin's settings.
        public mutating func install<P: ClientPlugin>(
            _ plugin: P.Type,
            _ configure: (inout P.Configuration) throws -> Void
        ) rethrows {
            var settings = (self.plugins[P.key] as? P.Configuration) ?? P.defaultConfiguration()
            try configure(&settings)
            self.plugins[P.key] = settings
        }

        /// Installs a plugin with its default settings.
        /// - Parameter plugin: The plugin type, e.g. `WebSockets.self`.
        public mutating func install<P: ClientPlugin>(_ plugin: P.Type) {
            self.install(plugin) { _ in }
        }

        /// The settings of an installed plugin, or `nil` if it is not installed.
        /// - Parameter plugin: The plugin type.
        public func settings<P: ClientPlugin>(of plugin: P.Type) -> P.Configuration? {
            self.plugins[P.key] as? P.Configuration
        }
    }

    /// The engine this client opens connections with.
    public let engine: any WebSocketEngine
    /// The client's settings.
    public let configuration: Configuration
    /// The metric objects, or `nil` when metrics are off (or no backend is bootstrapped).
    let metrics: ClientMetrics?
    /// The WebSockets settings in effect (``webSocketSettings``), made once: every opening refers to them.
    let sharedWebSocketSettings: SharedWebSocketSettings
    /// No proxy, with the proxy TLS settings of ``configuration``: shared by the openings that connect directly.
    let directConnection: EngineConnectOptions.Proxying

    /// Creates a client on `engine` and runs the configuration block.
    /// - Parameters:
    ///   - engine: The engine, e.g. `CIOEngine()` (native) or `CurlEngine()` (libcurl).
    ///   - configure: Installs plugins and sets the logger and timeouts.
    public init(engine: any WebSocketEngine, _ configure: (inout Configuration) throws -> Void) rethrows {
        var configuration = Configuration()
        try configure(&configuration)
        self.engine = engine
        self.configuration = configuration
        self.metrics = ClientMetrics.make(
            enabled: configuration.metricsEnabled, factory: configuration.metricsFactory, engine: engine.name)
        self.sharedWebSocketSettings = SharedWebSocketSettings(
            configuration.settings(of: WebSockets.self) ?? WebSockets.defaultConfiguration())
        self.directConnection = EngineConnectOptions.Proxying(proxy: nil, tls: configuration.proxy.tls)
    }

    /// Creates a client on `engine` with default settings (the WebSockets plugin's defaults apply).
    /// - Parameter engine: The engine, e.g. `CIOEngine()` (native) or `CurlEngine()` (libcurl).
    public convenience init(engine: any WebSocketEngine) {
        self.init(engine: engine) { _ in }
    }

    /// Whether the engine supports `capability` on this machine, checked at run time, e.g.
    /// `client.isSupported(.webSocket)`.
    /// - Parameter capability: ``EngineCapability/webSocket`` or ``EngineCapability/webSocketExtensions``.
    public func isSupported(_ capability: EngineCapability) -> Bool {
        self.engine.isSupported(capability)
    }

    /// Why the engine does not support `capability` on this machine, and what to use instead; `nil` when it does.
    /// E.g. `client.unsupportedReason(.webSocket)` names the libcurl version that lacks WebSockets.
    /// - Parameter capability: ``EngineCapability/webSocket`` or ``EngineCapability/webSocketExtensions``.
    public func unsupportedReason(_ capability: EngineCapability) -> String? {
        self.engine.unsupportedReason(capability)
    }

    /// Releases the engine: its threads stop and open sessions end abnormally. Close sessions first for a
    /// clean close handshake.
    public func close() async {
        await self.engine.shutdown()
    }

    /// The WebSockets settings in effect: the installed plugin's, or the defaults when it is not installed
    /// (the entry points work without an explicit `install`).
    var webSocketSettings: WebSockets.Configuration { self.sharedWebSocketSettings.value }
}

/// WebSockets settings held once and referenced by every opening that uses them: the configuration is about 200
/// bytes, and thousands of sessions opening at once each held a copy until their handshake ended.
final class SharedWebSocketSettings: Sendable {
    let value: WebSockets.Configuration
    /// What a session's machine needs of them, shared by the sessions too.
    let limits: SessionStateMachine.Limits

    init(_ value: WebSockets.Configuration) {
        self.value = value
        self.limits = SessionStateMachine.Limits(value)
    }
}
