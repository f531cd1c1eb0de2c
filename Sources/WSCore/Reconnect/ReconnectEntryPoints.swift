// The entry points of reconnecting sessions, beside the plain ones (EntryPoints.swift).

extension WebSocketClient {
    /// Opens a reconnecting session configured entirely by the request block, which runs before every connection
    /// attempt (put a fresh token in each handshake there).
    ///
    /// Returns at once, in the ``ReconnectingWebSocketSession/State/connecting`` state: the first connection is
    /// opened, and reopened, in the background; watch ``ReconnectingWebSocketSession/states``. Sends before it
    /// is open are queued (see ``ReconnectingWebSocketSession/Configuration/sendsWhileDisconnected``). Call
    /// ``ReconnectingWebSocketSession/close(_:)`` when done.
    /// - Parameters:
    ///   - configuration: The reconnect policy, the send queue, the keepalive and the connection hook.
    ///   - request: Sets the URL (`try request.url("wss://...")`), headers, subprotocols and timeouts, for each
    ///     attempt. An error it throws counts as a failed attempt (not retried by default).
    /// - Returns: The session.
    /// - Throws: ``WebSocketError`` when the engine lacks a needed capability (WebSockets, extensions).
    public func reconnectingWebSocketSession(
        configuration: ReconnectingWebSocketSession.Configuration = .init(),
        _ request: @escaping @Sendable (inout WebSocketRequestBuilder) async throws -> Void
    ) throws -> ReconnectingWebSocketSession {
        try self.makeReconnectingSession(WebSocketURL(secure: false, host: "localhost"), configuration, request)
    }

    /// Opens a reconnecting session to a URL built from components; see
    /// ``reconnectingWebSocketSession(configuration:_:)``.
    /// - Parameters:
    ///   - method: The request method, `GET` by default.
    ///   - host: The host, `localhost` by default.
    ///   - port: The port; `nil` (the default) for the scheme's: 80 for ws.
    ///   - path: The path and query, `/` by default.
    ///   - configuration: The reconnect policy, the send queue, the keepalive and the connection hook.
    ///   - request: Edits the request, before each attempt.
    /// - Returns: The session.
    /// - Throws: ``WebSocketError`` when the engine lacks a needed capability.
    public func reconnectingWebSocketSession(
        method: HTTPMethod = .get,
        host: String = "localhost",
        port: Int? = nil,
        path: String = "/",
        configuration: ReconnectingWebSocketSession.Configuration = .init(),
        _ request: @escaping @Sendable (inout WebSocketRequestBuilder) async throws -> Void = { _ in }
    ) throws -> ReconnectingWebSocketSession {
        let url = WebSocketURL(secure: false, host: host, port: port, path: path)
        return try self.makeReconnectingSession(url, configuration) { builder in
            builder.method = method
            try await request(&builder)
        }
    }

    /// Opens a reconnecting session to a URL string; see ``reconnectingWebSocketSession(configuration:_:)``.
    ///
    /// ```swift
    /// let session = try client.reconnectingWebSocketSession("wss://feed.example.com/ws") { request in
    ///     request.headers["Authorization"] = "Bearer \(try await tokens.current())"
    /// }
    /// ```
    /// - Parameters:
    ///   - urlString: A ws, wss, http or https URL.
    ///   - configuration: The reconnect policy, the send queue, the keepalive and the connection hook.
    ///   - request: Edits the request (headers, subprotocols, timeouts), before each attempt.
    /// - Returns: The session.
    /// - Throws: ``WebSocketError``: ``WebSocketError/Code/invalidURL``, or a missing engine capability.
    public func reconnectingWebSocketSession(
        _ urlString: String,
        configuration: ReconnectingWebSocketSession.Configuration = .init(),
        _ request: @escaping @Sendable (inout WebSocketRequestBuilder) async throws -> Void = { _ in }
    ) throws -> ReconnectingWebSocketSession {
        try self.makeReconnectingSession(WebSocketURL(parsing: urlString), configuration, request)
    }

    /// Opens a reconnecting session to a URL string, runs `block` with it, and closes the session when the block
    /// returns or throws (1000; 1001 when the task was cancelled). Cancelling the task that runs this stops
    /// reconnecting at once, from any state.
    ///
    /// ```swift
    /// try await client.reconnectingWebSocket("wss://feed.example.com/ws", configuration: configuration) { feed in
    ///     for try await message in feed.messages { handle(message) }
    /// }
    /// ```
    /// - Parameters:
    ///   - urlString: A ws, wss, http or https URL.
    ///   - configuration: The reconnect policy, the send queue, the keepalive and the connection hook.
    ///   - request: Edits the request, before each attempt.
    ///   - block: Works with the session.
    /// - Returns: What `block` returns.
    /// - Throws: What `block` throws, or what ``reconnectingWebSocketSession(_:configuration:_:)`` throws.
    public func reconnectingWebSocket<Result>(
        _ urlString: String,
        configuration: ReconnectingWebSocketSession.Configuration = .init(),
        request: @escaping @Sendable (inout WebSocketRequestBuilder) async throws -> Void = { _ in },
        _ block: (ReconnectingWebSocketSession) async throws -> Result
    ) async throws -> Result {
        let session = try self.reconnectingWebSocketSession(urlString, configuration: configuration, request)
        let outcome: Swift.Result<Result, any Error>
        do {
            outcome = .success(
                try await withTaskCancellationHandler {
                    try await block(session)
                } onCancel: {
                    session.core.closeDetached(CloseReason(code: .goingAway, message: "the task was cancelled"))
                })
        } catch {
            outcome = .failure(error)
        }
        if case .failure(let error) = outcome, error is CancellationError {
            await session.close(CloseReason(code: .goingAway, message: "the task was cancelled"))
        } else {
            await session.close()
        }
        return try outcome.get()
    }

    /// Checks the engine's capabilities now (so a session that could never connect fails here), then starts the
    /// session.
    private func makeReconnectingSession(
        _ url: WebSocketURL, _ configuration: ReconnectingWebSocketSession.Configuration,
        _ request: @escaping @Sendable (inout WebSocketRequestBuilder) async throws -> Void
    ) throws -> ReconnectingWebSocketSession {
        _ = try self.prepareOpening(forBlock: false) { WebSocketRequestBuilder(url: url) }
        let core = ReconnectCore(client: self, configuration: configuration) {
            var builder = WebSocketRequestBuilder(url: url)
            try await request(&builder)
            return builder
        }
        let session = ReconnectingWebSocketSession(core: core)
        core.start()
        return session
    }
}
