public import WSCore

/// An opening-handshake request the test server received, as recorded in ``WebSocketTestServer/requests``.
///
/// Every request whose head could be parsed is recorded, including those the server refused
/// (see ``status``).
public struct RecordedRequest: Sendable, Hashable, CustomStringConvertible {
    /// The request method, e.g. `GET`.
    public var method: String
    /// The request target: the path and query, e.g. `/chat?room=1`.
    public var target: String
    /// The HTTP version, e.g. `HTTP/1.1`.
    public var version: String
    /// The request headers in order.
    public var headers: HTTPHeaders
    /// The subprotocols the client offered in `Sec-WebSocket-Protocol`, in order.
    public var offeredSubprotocols: [String]
    /// The subprotocol the server selected, or `nil` when none was offered or supported.
    public var selectedSubprotocol: String?
    /// The status the server answered with: 101 when it upgraded, 400 or 426 when it refused an invalid request,
    /// or the status of ``WebSocketTestServer/HandshakeBehavior/reject(status:body:)``.
    public var status: Int

    /// Creates a recorded request.
    /// - Parameters:
    ///   - method: The request method.
    ///   - target: The path and query.
    ///   - version: The HTTP version.
    ///   - headers: The request headers.
    ///   - offeredSubprotocols: The subprotocols the client offered.
    ///   - selectedSubprotocol: The subprotocol the server selected.
    ///   - status: The response status.
    public init(
        method: String,
        target: String,
        version: String = "HTTP/1.1",
        headers: HTTPHeaders,
        offeredSubprotocols: [String] = [],
        selectedSubprotocol: String? = nil,
        status: Int = 101
    ) {
        self.method = method
        self.target = target
        self.version = version
        self.headers = headers
        self.offeredSubprotocols = offeredSubprotocols
        self.selectedSubprotocol = selectedSubprotocol
        self.status = status
    }

    /// The path part of ``target``, without the query.
    public var path: String {
        String(self.target.prefix { $0 != "?" })
    }

    /// The query part of ``target`` after `?`, or `nil` when there is none.
    public var query: String? {
        guard let mark = self.target.firstIndex(of: "?") else { return nil }
        return String(self.target[self.target.index(after: mark)...])
    }

    /// `GET /path -> 101`.
    public var description: String { "\(self.method) \(self.target) -> \(self.status)" }
}

/// The test server could not start: the address is in use, the TLS files cannot be loaded, ...
public struct WebSocketTestServerError: Error, Sendable, CustomStringConvertible {
    /// What went wrong.
    public let message: String
    /// The underlying error, if any.
    public let underlying: (any Error)?

    /// Creates an error.
    /// - Parameters:
    ///   - message: What went wrong.
    ///   - underlying: The underlying error.
    public init(_ message: String, underlying: (any Error)? = nil) {
        self.message = message
        self.underlying = underlying
    }

    /// The message, with the underlying error when present.
    public var description: String {
        if let underlying { return "WebSocketTestServerError: \(self.message) (\(underlying))" }
        return "WebSocketTestServerError: \(self.message)"
    }
}
