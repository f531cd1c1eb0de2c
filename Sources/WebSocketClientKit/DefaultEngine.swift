// The client with its default engine: one import, one line, as Ktor's `HttpClient(CIO) { install(WebSockets) }`.
@_exported public import WSCore
@_exported public import WSEngineCIO

extension WebSocketClient {
    /// Creates a client on the native engine (`CIOEngine` with its default configuration) and runs the
    /// configuration block; Ktor's `HttpClient(CIO) { install(WebSockets) { ... } }`.
    ///
    /// ```swift
    /// import WebSocketClientKit
    ///
    /// let client = WebSocketClient { $0.install(WebSockets.self) { $0.pingInterval = .seconds(20) } }
    /// ```
    /// Each client gets an engine of its own, and `close()` shuts it down. The engine starts its
    /// threads on the first connect (one event-loop thread per connection until there is one per processor, and
    /// up to two name-resolution threads); a client that never connects starts none. Create one client and share
    /// it: every session of the client runs on the same few threads. To choose the engine or its settings (TLS
    /// trust roots, event loops), pass it: `WebSocketClient(engine: CIOEngine(configuration: ...))`, or
    /// `WebSocketClient(engine: CurlEngine())` from `WSEngineCurl`.
    /// - Parameter configure: Installs plugins and sets the logger and timeouts.
    public convenience init(_ configure: (inout Configuration) throws -> Void) rethrows {
        try self.init(engine: CIOEngine(), configure)
    }

    /// Creates a client on the native engine (`CIOEngine` with its default configuration) with default settings;
    /// the WebSockets plugin's defaults apply. The client owns its engine, as with `init(_:)`.
    ///
    /// ```swift
    /// let client = WebSocketClient()
    /// try await client.webSocket("wss://echo.example.com") { session in try await session.send("Hello") }
    /// await client.close()
    /// ```
    public convenience init() {
        self.init(engine: CIOEngine())
    }
}
