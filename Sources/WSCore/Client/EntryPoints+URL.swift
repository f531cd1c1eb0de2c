// The entry points that take a URL string, also taking Foundation's `URL`. FoundationEssentials where the toolchain
// has it (Linux, Swift 6): `URL` without the rest of Foundation (ICU, formatters); it is the same type your code
// sees through `import Foundation`. Only with the package trait FoundationURL (on by default): without it WSCore
// links nothing of Foundation.
#if FoundationURL
#if canImport(FoundationEssentials)
public import FoundationEssentials
#else
public import Foundation
#endif

extension WebSocketURL {
    /// Creates a WebSocket URL from a Foundation `URL`.
    /// - Parameter url: A ws, wss, http or https URL.
    /// - Throws: ``WebSocketError`` with code ``WebSocketError/Code/invalidURL`` saying what is wrong.
    public init(_ url: URL) throws(WebSocketError) {
        try self.init(parsing: url.absoluteString)
    }
}

extension WebSocketRequestBuilder {
    /// Replaces the URL with a Foundation `URL`.
    /// - Parameter url: A ws, wss, http or https URL.
    /// - Throws: ``WebSocketError`` with code ``WebSocketError/Code/invalidURL``.
    public mutating func url(_ url: URL) throws(WebSocketError) {
        self.url = try WebSocketURL(url)
    }
}

extension WebSocketClient {
    /// Opens a session to a Foundation `URL`; the same as ``webSocketSession(_:_:)-(String,_)``.
    /// - Parameters:
    ///   - url: A ws, wss, http or https URL.
    ///   - request: Edits the request (headers, subprotocols, timeouts).
    /// - Returns: The open session.
    /// - Throws: ``WebSocketError`` (``WebSocketError/isConnectionFailure`` when no session opened).
    public func webSocketSession(
        _ url: URL,
        _ request: (inout WebSocketRequestBuilder) throws -> Void = { _ in }
    ) async throws -> WebSocketSession {
        try await self.webSocketSession(url.absoluteString, request)
    }

    /// Opens a session to a Foundation `URL`, runs `block`, and closes the session when it returns or throws; the
    /// same as ``webSocket(_:request:_:)-(String,_,_)``.
    /// - Parameters:
    ///   - url: A ws, wss, http or https URL.
    ///   - request: Edits the request.
    ///   - block: Works with the session.
    /// - Returns: What `block` returns.
    /// - Throws: What `block` throws, ``WebSocketError`` (``WebSocketError/isConnectionFailure`` when no session opened).
    public func webSocket<Result>(
        _ url: URL,
        request: (inout WebSocketRequestBuilder) throws -> Void = { _ in },
        _ block: (WebSocketSession) async throws -> Result
    ) async throws -> Result {
        try await self.webSocket(url.absoluteString, request: request, block)
    }

    /// The short alias of ``webSocket(_:request:_:)-(URL,_,_)``.
    /// - Parameters:
    ///   - url: A ws, wss, http or https URL.
    ///   - request: Edits the request.
    ///   - block: Works with the session.
    /// - Returns: What `block` returns.
    /// - Throws: What `block` throws, ``WebSocketError`` (``WebSocketError/isConnectionFailure`` when no session opened).
    public func ws<Result>(
        _ url: URL,
        request: (inout WebSocketRequestBuilder) throws -> Void = { _ in },
        _ block: (WebSocketSession) async throws -> Result
    ) async throws -> Result {
        try await self.webSocket(url.absoluteString, request: request, block)
    }

    /// A secure session to a Foundation `URL`; the scheme must be wss or https.
    /// - Parameters:
    ///   - url: A wss or https URL.
    ///   - request: Edits the request.
    ///   - block: Works with the session.
    /// - Returns: What `block` returns.
    /// - Throws: ``WebSocketError`` (``WebSocketError/Code/invalidURL``) for a ws/http URL, and what
    ///   ``webSocket(_:request:_:)-(URL,_,_)`` throws.
    public func wss<Result>(
        _ url: URL,
        request: (inout WebSocketRequestBuilder) throws -> Void = { _ in },
        _ block: (WebSocketSession) async throws -> Result
    ) async throws -> Result {
        try await self.wss(url.absoluteString, request: request, block)
    }
}
#endif
