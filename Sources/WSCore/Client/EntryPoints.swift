// The connection functions, as Ktor's: webSocketSession (3 forms), webSocket (3 forms), ws and wss.

extension WebSocketClient {
    /// Opens a session configured entirely by the request block.
    ///
    /// The session stays open until you call ``WebSocketSession/close(_:)`` or the server closes it.
    /// - Parameter request: Sets the URL (`try request.url("ws://...")`), headers, subprotocols, timeouts.
    /// - Returns: The open session.
    /// - Throws: ``WebSocketError`` with ``WebSocketError/isConnectionFailure`` set when the connection or
    ///   handshake fails, the engine lacks a needed capability or the URL is invalid.
    public func webSocketSession(
        _ request: (inout WebSocketRequestBuilder) throws -> Void
    ) async throws -> WebSocketSession {
        try await self.prepareOpening(forBlock: false) {
            try Self.makeRequest(WebSocketURL(secure: false, host: "localhost"), request)
        }.open()
    }

    /// Opens a session to a URL built from components.
    /// - Parameters:
    ///   - method: The request method, `GET` by default.
    ///   - host: The host, `localhost` by default.
    ///   - port: The port; `nil` (the default) for the scheme's: 80 for ws.
    ///   - path: The path and query, `/` by default.
    ///   - request: Edits the request further.
    /// - Returns: The open session.
    /// - Throws: ``WebSocketError`` (``WebSocketError/isConnectionFailure`` when no session opened).
    public func webSocketSession(
        method: HTTPMethod = .get,
        host: String = "localhost",
        port: Int? = nil,
        path: String = "/",
        _ request: (inout WebSocketRequestBuilder) throws -> Void = { _ in }
    ) async throws -> WebSocketSession {
        try await self.prepareOpening(forBlock: false) {
            try Self.makeRequest(
                WebSocketURL(secure: false, host: host, port: port, path: path), method: method, request)
        }.open()
    }

    /// Opens a session to a URL string.
    /// - Parameters:
    ///   - urlString: A ws, wss, http or https URL.
    ///   - request: Edits the request (headers, subprotocols, timeouts).
    /// - Returns: The open session.
    /// - Throws: ``WebSocketError`` (``WebSocketError/isConnectionFailure`` when no session opened).
    public func webSocketSession(
        _ urlString: String,
        _ request: (inout WebSocketRequestBuilder) throws -> Void = { _ in }
    ) async throws -> WebSocketSession {
        try await self.prepareOpening(forBlock: false) {
            try Self.makeRequest(WebSocketURL(parsing: urlString), request)
        }.open()
    }

    /// Opens a session, runs `block` with it, and closes it (code 1000) when the block returns or throws.
    /// - Parameters:
    ///   - request: Sets the URL, headers, subprotocols and timeouts.
    ///   - block: Works with the session.
    /// - Returns: What `block` returns.
    /// - Throws: What `block` throws, ``WebSocketError`` (``WebSocketError/isConnectionFailure`` when no session opened).
    public func webSocket<Result>(
        request: (inout WebSocketRequestBuilder) throws -> Void = { _ in },
        _ block: (WebSocketSession) async throws -> Result
    ) async throws -> Result {
        try await self.run(
            self.prepareOpening(forBlock: true) {
                try Self.makeRequest(WebSocketURL(secure: false, host: "localhost"), request)
            }, block)
    }

    /// Opens a session to a URL string, runs `block`, and closes the session when it returns or throws.
    /// - Parameters:
    ///   - urlString: A ws, wss, http or https URL.
    ///   - request: Edits the request.
    ///   - block: Works with the session.
    /// - Returns: What `block` returns.
    /// - Throws: What `block` throws, ``WebSocketError`` (``WebSocketError/isConnectionFailure`` when no session opened).
    public func webSocket<Result>(
        _ urlString: String,
        request: (inout WebSocketRequestBuilder) throws -> Void = { _ in },
        _ block: (WebSocketSession) async throws -> Result
    ) async throws -> Result {
        // The opening is prepared in a synchronous call of its own: this frame stays small (see `run`).
        try await self.run(self.prepareBlockOpening(urlString, request), block)
    }

    /// The opening of a block session to `urlString`; not inlined, so its temporaries stay out of async frames.
    @inline(never)
    private func prepareBlockOpening(
        _ urlString: String, _ request: (inout WebSocketRequestBuilder) throws -> Void
    ) throws -> SessionOpening {
        try self.prepareOpening(forBlock: true) { try Self.makeRequest(WebSocketURL(parsing: urlString), request) }
    }

    /// Opens a session to a URL built from components, runs `block`, and closes the session when it returns
    /// or throws.
    /// - Parameters:
    ///   - method: The request method, `GET` by default.
    ///   - host: The host, `localhost` by default.
    ///   - port: The port; `nil` (the default) for the scheme's: 80 for ws.
    ///   - path: The path and query, `/` by default.
    ///   - request: Edits the request.
    ///   - block: Works with the session.
    /// - Returns: What `block` returns.
    /// - Throws: What `block` throws, ``WebSocketError`` (``WebSocketError/isConnectionFailure`` when no session opened).
    public func webSocket<Result>(
        method: HTTPMethod = .get,
        host: String = "localhost",
        port: Int? = nil,
        path: String = "/",
        request: (inout WebSocketRequestBuilder) throws -> Void = { _ in },
        _ block: (WebSocketSession) async throws -> Result
    ) async throws -> Result {
        try await self.run(
            self.prepareOpening(forBlock: true) {
                try Self.makeRequest(
                    WebSocketURL(secure: false, host: host, port: port, path: path), method: method, request)
            }, block)
    }

    /// A short alias: the same as ``webSocket(_:request:_:)-(String,_,_)``.
    /// - Parameters:
    ///   - urlString: A ws, wss, http or https URL.
    ///   - request: Edits the request.
    ///   - block: Works with the session.
    /// - Returns: What `block` returns.
    /// - Throws: What `block` throws, ``WebSocketError`` (``WebSocketError/isConnectionFailure`` when no session opened).
    public func ws<Result>(
        _ urlString: String,
        request: (inout WebSocketRequestBuilder) throws -> Void = { _ in },
        _ block: (WebSocketSession) async throws -> Result
    ) async throws -> Result {
        try await self.webSocket(urlString, request: request, block)
    }

    /// A plain (ws://) session to a URL built from components; the companion of ``wss(method:host:port:path:request:_:)``
    /// and the same as ``webSocket(method:host:port:path:request:_:)``.
    /// - Parameters:
    ///   - method: The request method, `GET` by default.
    ///   - host: The host, `localhost` by default.
    ///   - port: The port; `nil` (the default) for the scheme's: 80.
    ///   - path: The path and query, `/` by default.
    ///   - request: Edits the request.
    ///   - block: Works with the session.
    /// - Returns: What `block` returns.
    /// - Throws: What `block` throws, ``WebSocketError`` (``WebSocketError/isConnectionFailure`` when no session opened).
    public func ws<Result>(
        method: HTTPMethod = .get,
        host: String = "localhost",
        port: Int? = nil,
        path: String = "/",
        request: (inout WebSocketRequestBuilder) throws -> Void = { _ in },
        _ block: (WebSocketSession) async throws -> Result
    ) async throws -> Result {
        try await self.webSocket(method: method, host: host, port: port, path: path, request: request, block)
    }

    /// A secure (wss://) session to a URL string; the scheme must be wss or https.
    /// - Parameters:
    ///   - urlString: A wss or https URL.
    ///   - request: Edits the request.
    ///   - block: Works with the session.
    /// - Returns: What `block` returns.
    /// - Throws: ``WebSocketError`` (``WebSocketError/Code/invalidURL``) for a ws/http URL, and what
    ///   ``webSocket(_:request:_:)-(String,_,_)`` throws.
    public func wss<Result>(
        _ urlString: String,
        request: (inout WebSocketRequestBuilder) throws -> Void = { _ in },
        _ block: (WebSocketSession) async throws -> Result
    ) async throws -> Result {
        let url = try WebSocketURL(parsing: urlString)
        guard url.isSecure else {
            throw WebSocketError(
                .invalidURL, "wss(\"\(url)\") needs a wss:// or https:// URL; use ws() for plain connections")
        }
        return try await self.webSocket(urlString, request: request, block)
    }

    /// A short alias: a TLS session to a URL built from components.
    /// - Parameters:
    ///   - method: The request method, `GET` by default.
    ///   - host: The host, `localhost` by default.
    ///   - port: The port; `nil` (the default) for the scheme's: 443.
    ///   - path: The path and query, `/` by default.
    ///   - request: Edits the request (headers, subprotocols, timeouts).
    ///   - block: Works with the session.
    /// - Returns: What `block` returns.
    /// - Throws: What `block` throws, ``WebSocketError`` (``WebSocketError/isConnectionFailure`` when no session opened).
    public func wss<Result>(
        method: HTTPMethod = .get,
        host: String = "localhost",
        port: Int? = nil,
        path: String = "/",
        request: (inout WebSocketRequestBuilder) throws -> Void = { _ in },
        _ block: (WebSocketSession) async throws -> Result
    ) async throws -> Result {
        try await self.run(
            self.prepareOpening(forBlock: true) {
                try Self.makeRequest(
                    WebSocketURL(secure: true, host: host, port: port, path: path), method: method, request)
            }, block)
    }

    /// The request for `url` with `method`, edited by `request`.
    private static func makeRequest(
        _ url: WebSocketURL, method: HTTPMethod = .get, _ request: (inout WebSocketRequestBuilder) throws -> Void
    ) throws -> WebSocketRequestBuilder {
        var builder = WebSocketRequestBuilder(url: url)
        builder.method = method
        try request(&builder)
        return builder
    }

    /// Opens the session `opening` prepared, runs `block` with it and closes the session afterwards, whether the block
    /// returned or threw.
    ///
    /// With ``WebSockets/Configuration/runsBlocksOnEventLoop`` (the default) all of it — connect, handshake, the
    /// block and the close — runs with the engine's event loop for this connection as task-executor preference, so
    /// each step resumes on the thread that delivered its event, in the same loop round, with no thread hop.
    ///
    /// The calling task keeps the frame memory of its deepest chain of calls (in its allocator's slabs of about 1 KB)
    /// for as long as it lives, and with thousands of sessions opening at once that memory is most of the peak; so
    /// this chain passes class references and keeps its values in ``PendingOpening``.
    @inline(never)
    private func run<Result>(
        _ opening: consuming SessionOpening,
        _ block: (WebSocketSession) async throws -> Result
    ) async throws -> Result {
        // The opening (request, settings, handshake) is released once the session is open, not when the block ends.
        let pending = PendingOpening(opening)
        return try await withTaskExecutorPreference(pending.blockExecutor) { try await pending.run(block) }
    }
}

/// Holds an opening until it runs, so that nothing keeps it after the session is open, and what running the block
/// needs afterwards.
private final class PendingOpening {
    private var opening: SessionOpening?
    /// The executor the connection was asked for.
    let executor: (any TaskExecutor)?
    /// The executor the block runs on (the opening's `blockExecutor`).
    let blockExecutor: (any TaskExecutor)?
    /// ``WebSockets/Configuration/runsBlocksOnEventLoop``.
    let onEventLoop: Bool

    init(_ opening: consuming SessionOpening) {
        self.executor = opening.executor
        self.blockExecutor = opening.blockExecutor
        self.onEventLoop = opening.settings.runsBlocksOnEventLoop
        self.opening = opening
    }

    /// Opens the session (once), runs `block` with it and closes it afterwards (code 1000, or 1001 when the block
    /// was cancelled), whether the block returned or threw.
    ///
    /// The task keeps the memory of its deepest chain of frames for its whole life, so this frame, under both the
    /// opening's calls and the block's, holds little: the opening and the block run in functions of their own.
    func run<Result>(_ block: (WebSocketSession) async throws -> Result) async throws -> Result {
        try await self.run(block, try await self.open())
    }

    /// Runs `block` with the open `session` and closes the session afterwards; the close and the rare executor hop
    /// are in functions of their own, so this frame, live under the block's calls, stays small.
    @inline(never)
    private func run<Result>(_ block: (WebSocketSession) async throws -> Result, _ session: WebSocketSession)
        async throws -> Result
    {
        let result: Result
        do {
            if let actual = self.executorToHop(to: session) {
                result = try await Self.run(block, session, on: actual)
            } else {
                result = try await block(session)
            }
        } catch {
            await Self.close(session, after: error)
            throw error
        }
        await Self.close(session, after: nil)
        return result
    }

    /// The executor to run the block on when it is not the one this task prefers already: with
    /// ``WebSockets/Configuration/runsBlocksOnEventLoop``, the session's own when the engine offered no executor or
    /// did not honour it.
    private func executorToHop(to session: WebSocketSession) -> (any TaskExecutor)? {
        guard self.onEventLoop, let actual = session.executor, actual !== self.executor else { return nil }
        return actual
    }

    /// Runs `block` with `session` on `executor`.
    @inline(never)
    private static func run<Result>(
        _ block: (WebSocketSession) async throws -> Result, _ session: WebSocketSession, on executor: any TaskExecutor
    ) async throws -> Result {
        try await withTaskExecutorPreference(executor) { try await block(session) }
    }

    /// Closes `session` after its block returned (`error` is `nil`) or threw: 1000, or 1001 when the block was
    /// cancelled.
    @inline(never)
    private static nonisolated(nonsending) func close(_ session: WebSocketSession, after error: (any Error)?) async {
        let cancelled = error is CancellationError
        await session.close(CloseReason(code: cancelled ? .goingAway : .normal))
    }

    /// Opens the session (once).
    @inline(never)
    private func open() async throws -> WebSocketSession {
        guard let opening = self.opening.take() else { preconditionFailure("the opening ran already") }
        return try await opening.open()
    }
}
