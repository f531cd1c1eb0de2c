/// An HTTP method for the opening handshake. RFC 6455 requires `GET`; other methods are sent as given for
/// servers that accept them.
public struct HTTPMethod: RawRepresentable, Sendable, Hashable, CustomStringConvertible {
    /// The method token, e.g. `GET`.
    public let rawValue: String
    /// Creates a method from its token.
    /// - Parameter rawValue: The method token.
    public init(rawValue: String) { self.rawValue = rawValue }
    /// `GET`, the method of every WebSocket handshake.
    public static let get = HTTPMethod(rawValue: "GET")
    /// The method token.
    public var description: String { self.rawValue }
}

/// The opening handshake request, edited in the `request` block of the entry points (Ktor's
/// `HttpRequestBuilder`).
///
/// ```swift
/// let session = try await client.webSocketSession("wss://api.example.com/ws") { request in
///     request.headers["Authorization"] = "Bearer \(token)"
///     request.subprotocols = ["chat.v2", "chat.v1"]
///     request.timeout.openTimeout = .seconds(5)
/// }
/// ```
public struct WebSocketRequestBuilder: Sendable {
    /// Per-request timeouts; `nil` uses the client's ``WebSocketClient/Configuration``.
    public struct Timeout: Sendable {
        /// How long resolving, connecting and TLS may take.
        public var connectTimeout: Duration?
        /// How long the whole opening (connect and WebSocket handshake) may take.
        public var openTimeout: Duration?
        /// Creates timeouts that defer to the client's.
        public init(connectTimeout: Duration? = nil, openTimeout: Duration? = nil) {
            self.connectTimeout = connectTimeout
            self.openTimeout = openTimeout
        }
    }

    /// The request method, `GET` by default.
    public var method: HTTPMethod = .get
    /// Where to connect: scheme, host, port, path and query.
    public var url: WebSocketURL
    /// Extra request headers (e.g. `Authorization`, `Cookie`, `Origin`). The handshake headers (`Host`,
    /// `Upgrade`, `Connection`, `Sec-WebSocket-Key`, `Sec-WebSocket-Version`) are set by the session and
    /// replace any given here.
    public var headers = HTTPHeaders()
    /// The subprotocols to offer in `Sec-WebSocket-Protocol`, most preferred first. The server's choice is
    /// ``WebSocketSession/subprotocol``; a choice that was not offered fails the handshake.
    public var subprotocols: [String] = []
    /// The timeouts of this request.
    public var timeout = Timeout()

    /// Creates a request for `url`.
    /// - Parameter url: The URL.
    public init(url: WebSocketURL) { self.url = url }

    /// Replaces the URL by parsing `string`.
    /// - Parameter string: A ws, wss, http or https URL.
    /// - Throws: ``WebSocketError`` with code ``WebSocketError/Code/invalidURL``.
    public mutating func url(_ string: String) throws(WebSocketError) {
        self.url = try WebSocketURL(parsing: string)
    }
}
