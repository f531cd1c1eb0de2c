import Logging
import Synchronization

/// An open WebSocket session: receive from ``incoming``, send with ``send(_:)-(String)`` and friends, end it
/// with ``close(_:)``. Ktor's `DefaultClientWebSocketSession`.
///
/// The session answers pings with pongs, sends pings when a ping interval is set, reassembles fragmented
/// messages, enforces the size limits and runs the close handshake. It is `Sendable`: one task may receive
/// while others send.
///
/// ```swift
/// let session = try await client.webSocketSession("wss://api.example.com/ws")
/// try await session.send("Hello")
/// let frame = try await session.incoming.receive()
/// await session.close()
/// ```
public final class WebSocketSession: Sendable {
    @usableFromInline let connection: Connection
    /// The negotiated extensions, with the parameters the server accepted (empty when none).
    public let extensions: [any WebSocketExtension]
    /// The subprotocol the server selected from ``WebSocketRequestBuilder/subprotocols``, or `nil`.
    public let subprotocol: String?
    /// The server's handshake response (status 101) headers.
    public let responseHeaders: HTTPHeaders
    /// The URL the session is connected to.
    public let url: WebSocketURL
    /// The name of the engine carrying the session, e.g. `CIO`.
    public let engineName: String
    /// The HTTP version that carries the session: ``WebSocketHTTPVersion/http2`` when it is a stream of a shared
    /// HTTP/2 connection (RFC 8441), ``WebSocketHTTPVersion/http1_1`` otherwise.
    public let httpVersion: WebSocketHTTPVersion
    /// The converter for ``sendSerialized(_:)`` and ``receiveDeserialized(_:)``, from the plugin.
    public let contentConverter: (any WebSocketContentConverter)?
    /// The message being streamed in and whether a streamed send runs (WebSocketSession+Streaming.swift).
    let streaming = Mutex(StreamingState())

    init(
        connection: Connection,
        outcome: OpeningHandshake.Outcome,
        url: WebSocketURL,
        engineName: String,
        httpVersion: WebSocketHTTPVersion,
        contentConverter: (any WebSocketContentConverter)?
    ) {
        self.connection = connection
        self.extensions = outcome.extensions
        self.subprotocol = outcome.subprotocol
        self.responseHeaders = outcome.headers
        self.url = url
        self.engineName = engineName
        self.httpVersion = httpVersion
        self.contentConverter = contentConverter
    }

    deinit {
        self.connection.closeDetached()
    }

    /// The frames from the server: whole text and binary messages, pings (already answered) and pongs, and the
    /// server's close frame last. Iterate with `for try await`, or take one at a time with
    /// ``WebSocketIncoming/receive()``. Iteration throws ``WebSocketError`` if the session fails.
    public var incoming: WebSocketIncoming { WebSocketIncoming(session: self) }

    /// The outgoing side: ``WebSocketOutgoing/send(_:)`` sends a frame, as `outgoing.send(frame)` in Ktor.
    public var outgoing: WebSocketOutgoing { WebSocketOutgoing(session: self) }

    /// Sends a text message. Like every send, it returns once the message is queued, after waiting for room when
    /// more than ``WebSockets/Configuration/maxOutgoingBufferBytes`` are buffered (see ``send(_:)-(Frame)``).
    /// - Parameter text: The message.
    /// - Throws: ``WebSocketError`` (``WebSocketError/Code/sessionClosed``) once the session is closing;
    ///   `CancellationError` when the task is cancelled while waiting for room (the message is still sent).
    @inlinable
    nonisolated(nonsending) public func send(_ text: String) async throws {
        try await self.sendData(Frame(kind: .text, data: Array(text.utf8)))
    }

    /// Sends a binary message (waiting for room like ``send(_:)-(Frame)``).
    /// - Parameter bytes: The message, e.g. `[UInt8]` or `Data`.
    /// - Throws: ``WebSocketError`` (``WebSocketError/Code/sessionClosed``) once the session is closing;
    ///   `CancellationError` when the task is cancelled while waiting for room (the message is still sent).
    @inlinable
    nonisolated(nonsending) public func send(_ bytes: some Sequence<UInt8>) async throws {
        try await self.sendData(Frame(kind: .binary, data: Array(bytes)))
    }

    // The send and receive entry points are inlinable: inlined into the caller's async function they cost no async
    // frame of their own (a task-allocator allocation and release per call, ≈ 7 % of a stream of small messages);
    // only the waiting paths below are calls.

    /// Writes a text, binary or continuation frame, then waits for room if the outgoing buffer is over its limit. A new
    /// message while a fragmented one is being sent (e.g. by ``sendStreamingMessage(_:from:)`` on another task) waits
    /// until that one's last fragment is out, so the two never interleave.
    @inlinable
    nonisolated(nonsending) func sendData(_ frame: Frame) async throws {
        do {
            if try self.connection.enqueue(frame) { try await self.waitForRoom() }
        } catch is MessageInProgress {
            try await self.sendAfterMessageInProgress(frame)
        }
    }

    /// The slow path of ``sendData(_:)``: waits for the streamed message being sent to end, then sends. A message
    /// fragmented by hand with ``send(_:)-(Frame)`` is not waited for (its sender may be this very task): that is a
    /// usage error.
    @usableFromInline
    nonisolated(nonsending) func sendAfterMessageInProgress(_ frame: Frame) async throws {
        while true {
            guard self.streaming.withLock({ $0.sending }) else {
                throw WebSocketError(
                    .invalidArgument,
                    "a message fragmented with send(Frame) (fin == false) is not finished; send its continuation frames, the last with fin == true, before another message"
                )
            }
            guard await self.connection.waitForMessageEnd() else { throw CancellationError() }
            do {
                if try self.connection.enqueue(frame) { try await self.waitForRoom() }
                return
            } catch is MessageInProgress {
                continue  // Another fragmented message started first.
            }
        }
    }

    /// Waits until the outgoing buffer is back under ``WebSockets/Configuration/maxOutgoingBufferBytes``.
    /// - Throws: `CancellationError` if the task is cancelled first (what was queued stays queued).
    @usableFromInline
    nonisolated(nonsending) func waitForRoom() async throws {
        guard await self.connection.waitForDrain(above: self.connection.maxOutgoingBufferBytes) else {
            throw CancellationError()
        }
    }

    /// Sends a frame as given: a whole message, a fragment (`fin == false`, then continuation frames), a
    /// ping or a pong. A close frame starts the close handshake without waiting for it to finish.
    ///
    /// Fragments of one message cannot be interleaved with another message: while a message fragmented by hand is
    /// unfinished, a new text or binary frame throws; while ``sendStreamingMessage(_:from:)`` runs, it waits for the
    /// streamed message to end. Pings and pongs may go out between fragments.
    ///
    /// The frame is queued at once; the call then waits while more than
    /// ``WebSockets/Configuration/maxOutgoingBufferBytes`` are buffered (a slow network or server), so a loop of sends
    /// goes at the pace the connection takes. Cancelling the task ends that wait with `CancellationError`; the frame
    /// stays queued and is sent, in order, like every frame queued before the session closes. Cancelled while waiting
    /// for a streamed message to end, the frame is not sent.
    /// - Parameter frame: The frame.
    /// - Throws: ``WebSocketError``: ``WebSocketError/Code/sessionClosed`` once closing,
    ///   ``WebSocketError/Code/invalidArgument`` for a control frame over 125 bytes or not final, a continuation
    ///   frame outside a fragmented message, or a new message inside one; `CancellationError` when the task is
    ///   cancelled while waiting (above).
    @inlinable
    nonisolated(nonsending) public func send(_ frame: Frame) async throws {
        if frame.kind == .close {
            await self.sendClose(frame)
        } else if frame.kind == .ping || frame.kind == .pong {
            if try self.connection.enqueue(frame) { try await self.waitForRoom() }
        } else {
            try await self.sendData(frame)
        }
    }

    /// Sends a close frame: starts the close handshake without waiting for it to finish.
    @usableFromInline
    nonisolated(nonsending) func sendClose(_ frame: Frame) async {
        await self.connection.close(frame.readReason(), waitForEnd: false)
    }

    /// The next frame when none is queued: waits for it; throws ``WebSocketError/Code/sessionClosed`` after the last.
    @usableFromInline
    nonisolated(nonsending) func receiveWaiting() async throws -> Frame {
        if let frame = try await self.connection.receive() { return frame }
        let reason = self.connection.currentCloseReason
        throw WebSocketError(
            .sessionClosed, "the session is closed; no more frames will arrive\(reason.map { " (\($0))" } ?? "")",
            closeCode: reason?.code
        )
    }

    /// Closes the session: sends a close frame with `reason`, waits for the server's close frame and its TCP
    /// close (at most ``WebSockets/Configuration/closeTimeout``), then releases the connection. Does nothing
    /// if the session already ended. Reserved codes (1005, 1006, 1015) are not sent: a close frame without a
    /// code goes out instead.
    /// - Parameter reason: The code and message, `1000 NORMAL` by default.
    nonisolated(nonsending) public func close(_ reason: CloseReason = CloseReason(code: .normal)) async {
        await self.connection.close(reason, waitForEnd: true)
    }

    /// Waits until every byte sent so far has been handed to the operating system, the session has ended, or the task
    /// is cancelled (it then returns at once; the bytes are still sent).
    nonisolated(nonsending) public func flush() async {
        _ = await self.connection.waitForDrain(above: 0)
    }

    /// Why the session ended, once it has: the server's close reason, the reason we sent on a protocol error,
    /// or `1006 ABNORMAL_CLOSURE` if the connection dropped. Waits until the session has ended.
    public var closeReason: CloseReason? {
        get async { await self.connection.closeReasonAfterEnd() }
    }

    /// The task executor of the engine thread that reads this session's connection, if the engine has one (both
    /// bundled engines do). Code that runs with it as its preference continues on that thread when a message
    /// arrives, instead of hopping to another thread, and its replies are gathered into one write per round:
    ///
    /// ```swift
    /// let session = try await client.webSocketSession(url)
    /// try await withTaskExecutorPreference(session.executor) {
    ///     for try await frame in session.incoming { try await session.send(frame) }
    /// }
    /// ```
    ///
    /// The block entry points (``WebSocketClient/webSocket(_:request:_:)-(String,_,_)``, `ws`, `wss`) do this for you unless
    /// ``WebSockets/Configuration/runsBlocksOnEventLoop`` is `false`. Code on it must not block the thread: it
    /// serves every connection of that event loop.
    public var executor: (any TaskExecutor)? { self.connection.transport.executor }

    /// Whether the session has ended (the connection is released).
    public var isClosed: Bool { self.connection.hasEnded }

    /// What the session has carried so far: frames, messages and bytes each way, ping round-trip times and when it
    /// opened. Readable at any time, also after the session ended; each read is a consistent snapshot.
    public var statistics: WebSocketSessionStatistics { self.connection.statistics }

    /// Sends a ping and waits for its pong: the round-trip time to the server and back through its WebSocket stack.
    /// Works beside the automatic keepalive (``WebSockets/Configuration/pingInterval``); both feed
    /// ``WebSocketSessionStatistics/lastRoundTripTime`` and the `websocket_client_ping_rtt_seconds` metric. The pong
    /// is also delivered to ``incoming`` like any other.
    /// - Parameter timeout: How long to wait for the pong (default 10 s).
    /// - Returns: The round-trip time.
    /// - Throws: ``WebSocketError``: ``WebSocketError/Code/pongTimeout`` when no pong came within `timeout` (the
    ///   session stays open), ``WebSocketError/Code/sessionClosed`` when the session is closing or has ended;
    ///   `CancellationError` when the task is cancelled.
    nonisolated(nonsending) public func ping(timeout: Duration = .seconds(10)) async throws -> Duration {
        try await self.connection.ping(timeout: timeout)
    }

    /// Sends `value` through the installed ``WebSockets/Configuration/contentConverter``.
    /// - Parameter value: The value to send.
    /// - Throws: ``WebSocketError/Code/noContentConverter`` if no converter is installed,
    ///   ``WebSocketError/Code/conversion`` if it cannot serialize the value.
    nonisolated(nonsending) public func sendSerialized<T: Encodable>(_ value: T) async throws {
        let converter = try self.requireConverter()
        let frame: Frame
        do {
            frame = try converter.serialize(value)
        } catch let error as WebSocketError where error.code == .conversion {
            throw error
        } catch {
            throw WebSocketError(.conversion, "could not serialize \(T.self): \(error)", underlying: error)
        }
        try await self.send(frame)
    }

    /// Receives the next text or binary message and converts it to `T` with the installed content converter.
    /// Pings and pongs are skipped.
    /// - Parameter type: The type to decode; inferred from context when omitted.
    /// - Returns: The decoded value.
    /// - Throws: ``WebSocketError``: ``WebSocketError/Code/noContentConverter``;
    ///   ``WebSocketError/Code/conversion`` with the undecodable ``WebSocketError/frame`` (the session stays
    ///   open); ``WebSocketError/Code/sessionClosed`` with the close reason when the server closed.
    nonisolated(nonsending) public func receiveDeserialized<T: Decodable>(_ type: T.Type = T.self) async throws -> T {
        let converter = try self.requireConverter()
        while true {
            var frame = try await self.incoming.receive()
            if !frame.fin && (frame.kind == .text || frame.kind == .binary) {
                frame = try await self.collectFragments(frame)  // a streamed message (streamsIncomingMessages)
            }
            switch frame.kind {
            case .ping, .pong, .continuation:
                continue
            case .close:
                let reason = frame.readReason().map { "\($0)" } ?? "no status"
                throw WebSocketError(
                    .sessionClosed, "the server closed the session (\(reason)) while a \(T.self) was expected",
                    closeCode: frame.readReason()?.code ?? .noStatus, frame: frame
                )
            default:
                guard converter.isApplicable(frame) else {
                    throw WebSocketError(
                        .conversion, "the converter cannot read a \(frame.kind) frame as \(T.self)", frame: frame
                    )
                }
                do {
                    return try converter.deserialize(T.self, from: frame)
                } catch let error as WebSocketError where error.code == .conversion {
                    // The converter already said what failed; keep its message and make sure the frame is attached.
                    if error.frame != nil { throw error }
                    throw WebSocketError(
                        .conversion, error.message, closeCode: error.closeCode, frame: frame,
                        underlying: error.underlying
                    )
                } catch {
                    throw WebSocketError(
                        .conversion, "could not decode \(T.self) from a \(frame.kind) frame: \(error)",
                        frame: frame, underlying: error
                    )
                }
            }
        }
    }

    private func requireConverter() throws(WebSocketError) -> any WebSocketContentConverter {
        guard let converter = self.contentConverter else {
            throw WebSocketError(
                .noContentConverter,
                "no content converter is installed: set it in the plugin, e.g. config.install(WebSockets.self) { $0.contentConverter = JSONWebSocketConverter() } (module WSSerialization)"
            )
        }
        return converter
    }
}

/// The frames received on a session, as an `AsyncSequence` (Ktor's `incoming` channel).
///
/// Yields whole text and binary messages, pings (already answered) and pongs, and the server's close frame
/// last; then it ends. If the session fails (a protocol violation, a lost connection, a pong timeout)
/// iteration throws a ``WebSocketError``. Several tasks may receive; each frame goes to one of them.
public struct WebSocketIncoming: AsyncSequence, Sendable {
    /// Each element is a frame.
    public typealias Element = Frame
    @usableFromInline let session: WebSocketSession

    /// The next frame, waiting for it if needed.
    /// - Returns: The next frame.
    /// - Throws: The session's ``WebSocketError`` if it failed; ``WebSocketError/Code/sessionClosed`` after the
    ///   last frame.
    @inlinable
    nonisolated(nonsending) public func receive() async throws -> Frame {
        if let frame = self.session.connection.takeQueuedFrame() { return frame }
        return try await self.session.receiveWaiting()
    }

    /// Creates an iterator.
    public func makeAsyncIterator() -> AsyncIterator { AsyncIterator(session: self.session) }

    /// Iterates the incoming frames.
    public struct AsyncIterator: AsyncIteratorProtocol {
        @usableFromInline let session: WebSocketSession
        /// The next frame, or `nil` after the last.
        @inlinable
        nonisolated(nonsending) public mutating func next() async throws -> Frame? {
            if let frame = self.session.connection.takeQueuedFrame() { return frame }
            return try await self.session.connection.receive()
        }
    }
}

/// The sending side of a session (Ktor's `outgoing` channel).
public struct WebSocketOutgoing: Sendable {
    let session: WebSocketSession
    /// Sends a frame; the same as ``WebSocketSession/send(_:)-(Frame)``.
    /// - Parameter frame: The frame.
    nonisolated(nonsending) public func send(_ frame: Frame) async throws {
        try await self.session.send(frame)
    }
}

/// Everything opening a session needs, decided before its first suspension.
///
/// A class, so the async functions that open a session hold one reference in their frames instead of the request,
/// the settings and the logger: a task keeps the frame memory of its deepest call for its whole life, and with
/// thousands of sessions opening at once that memory is most of the peak.
final class SessionOpening: Sendable {
    let engine: any WebSocketEngine
    /// The WebSockets settings, by reference: usually the client's, shared by all its openings.
    private let sharedSettings: SharedWebSocketSettings
    /// The session's short id in log lines (`ws.session`).
    let sessionID: String
    let logger: Logger
    let endpoint: EngineEndpoint
    let options: EngineConnectOptions
    let handshake: OpeningHandshake
    let openTimeout: Duration
    /// The executor a block entry point runs the session's code on: the connection's executor, or a watched
    /// executor of the same loop that reports a block holding it (``WebSockets/Configuration/eventLoopHoldWarningThreshold``).
    let blockExecutor: (any TaskExecutor)?
    let start = ContinuousClock.now
    /// The client's metrics; `nil` when off.
    let metrics: ClientMetrics?

    init(
        engine: any WebSocketEngine, settings: SharedWebSocketSettings, sessionID: String,
        logger: Logger, options: EngineConnectOptions, handshake: OpeningHandshake, openTimeout: Duration,
        blockExecutor: (any TaskExecutor)?, metrics: ClientMetrics? = nil
    ) {
        self.blockExecutor = blockExecutor
        self.engine = engine
        self.sharedSettings = settings
        self.sessionID = sessionID
        self.logger = logger
        let url = handshake.request.url
        self.endpoint = EngineEndpoint(host: url.host, port: url.port, secure: url.isSecure)
        self.options = options
        self.handshake = handshake
        self.openTimeout = openTimeout
        self.metrics = metrics
    }

    /// The URL (the request's: not stored twice).
    var url: WebSocketURL { self.handshake.request.url }

    /// The WebSockets settings of the session.
    var settings: WebSockets.Configuration { self.sharedSettings.value }

    /// The executor the connection should run on (see ``EngineConnectOptions/executor``).
    var executor: (any TaskExecutor)? { self.options.executor }

    /// Connects, then runs the opening handshake within what is left of the open timeout. With a tracer (or another
    /// instrument) in place, the opening is traced and the trace context goes into the request
    /// (SessionOpening+Tracing.swift).
    /// - Throws: A ``WebSocketError`` marked ``WebSocketError/isConnectionFailure``, whatever its code.
    func open() async throws -> WebSocketSession {
        // The errors are converted in synchronous helpers: a `WebSocketError` matched here would take room in this
        // frame, which every opening task keeps (in its allocator's slabs) for as long as it lives.
        if OpeningTracing.isActive {
            do { return try await self.openTraced() } catch { throw Self.connectionFailure(error) }
        }
        // Two calls, so the frame of each is live only while it runs.
        let transport: any WebSocketTransport
        do { transport = try await self.connect() } catch { throw self.openingFailed(error) }
        do { return try await self.handshake(over: transport, self.handshake) } catch {
            throw self.openingFailed(error)
        }
    }

    /// Counts and logs a failed opening.
    @inline(never)
    func failed(_ error: any Error) {
        self.metrics?.sessionFailed(error)
        self.logger.debug("WebSocket opening failed", metadata: ["ws.error": "\(error)"])
    }

    /// Counts and logs a failed opening and returns its error marked as a connection failure.
    @inline(never)
    private func openingFailed(_ error: any Error) -> any Error {
        self.failed(error)
        return Self.connectionFailure(error)
    }

    /// `error` marked ``WebSocketError/isConnectionFailure`` when it is a ``WebSocketError``.
    @inline(never)
    private static func connectionFailure(_ error: any Error) -> any Error {
        guard let error = error as? WebSocketError else { return error }
        return error.asConnectionFailure
    }

    /// Connects. The engine's connect timeout is at most the open timeout, so a connect that stalls fails with the
    /// engine's own error (which says which phase stalled: DNS, TCP or TLS); the rest of the open timeout bounds the
    /// WebSocket handshake, on the transport's timer (no task races the opening).
    @inline(never)
    func connect() async throws -> any WebSocketTransport {
        // The stored options and endpoint are passed as they are: a temporary copy of them (`options ?? ...`) would
        // sit in the frame of every opening for the whole connect.
        try await self.engine.connect(to: self.endpoint, options: self.options)
    }

    /// Connects with `options` instead of the prepared ones (a traced opening adds its progress events).
    func connect(options: EngineConnectOptions) async throws -> any WebSocketTransport {
        try await self.engine.connect(to: self.endpoint, options: options)
    }

    /// Runs the opening `handshake` over `transport`. Not inlined, like ``connect()``: the frame of `open()` holds
    /// neither's values, and only one of the two frames exists at a time.
    @inline(never)
    func handshake(over transport: any WebSocketTransport, _ handshake: OpeningHandshake) async throws
        -> WebSocketSession
    {
        if let session = try self.openedByEngine(transport, handshake) { return session }
        let connection = self.makeConnection(transport)
        let outcome = try await connection.performHandshake(
            handshake, timeout: self.remainingOpenTime(), timeoutError: self.openTimeoutError())
        return self.makeSession(connection, outcome, httpVersion: .http1_1)
    }

    /// What is left of the open timeout (the connect took the rest).
    @inline(never)
    private func remainingOpenTime() -> Duration {
        max(.zero, self.openTimeout - (ContinuousClock.now - self.start))
    }

    /// Makes the error of an opening that did not complete within the open timeout.
    @inline(never)
    private func openTimeoutError() -> @Sendable () -> WebSocketError {
        // The handshake, not the URL it holds, is captured: a smaller closure for every opening in flight.
        { [handshake = self.handshake, openTimeout = self.openTimeout] in
            WebSocketError(
                .timedOut,
                "opening \(handshake.request.url) did not complete within \(openTimeout) (connect and WebSocket handshake); raise request.timeout.openTimeout if the server is slow"
            )
        }
    }

    /// The session, when the engine already opened it on the transport (an HTTP/2 stream); `nil` for an HTTP/1.1
    /// upgrade, which the caller runs. Synchronous, so the response is not held in the caller's async frame.
    @inline(never)
    private func openedByEngine(_ transport: any WebSocketTransport, _ handshake: OpeningHandshake) throws
        -> WebSocketSession?
    {
        guard let response = transport.openingResponse else { return nil }
        return try self.opened(transport, response, handshake)
    }

    /// Starts the session on a transport the engine already opened it on (an HTTP/2 stream), once its response
    /// passes the checks.
    @inline(never)
    private func opened(
        _ transport: any WebSocketTransport, _ response: EngineOpeningResponse, _ handshake: OpeningHandshake
    ) throws -> WebSocketSession {
        let outcome: OpeningHandshake.Outcome
        do {
            outcome = try handshake.validate(response)
        } catch {
            transport.abort()
            throw error
        }
        let connection = self.makeConnection(transport)
        connection.beginOpened(outcome)
        return self.makeSession(connection, outcome, httpVersion: response.httpVersion)
    }

    /// Creates the connection outside the async frame (its state is large).
    @inline(never)
    private func makeConnection(_ transport: any WebSocketTransport) -> Connection {
        Connection(
            transport: transport, settings: self.settings, limits: self.sharedSettings.limits, logger: self.logger,
            metrics: self.metrics,
            identity: (self.sessionID, self.url))
    }

    @inline(never)
    private func makeSession(
        _ connection: Connection, _ outcome: OpeningHandshake.Outcome, httpVersion: WebSocketHTTPVersion
    ) -> WebSocketSession {
        let session = WebSocketSession(
            connection: connection, outcome: outcome, url: self.url, engineName: self.engine.name,
            httpVersion: httpVersion, contentConverter: self.settings.contentConverter)
        session.streaming.withLock { $0.maxMessageSize = self.settings.maxMessageSize }
        connection.startTimers()
        let duration = ContinuousClock.now - self.start
        self.metrics?.sessionOpened(after: duration)
        self.logger.debug(
            "WebSocket session open",
            metadata: ["ws.subprotocol": "\(outcome.subprotocol ?? "none")", "ws.open_duration": "\(duration)"])
        return session
    }
}

extension WebSocketClient {
    /// Checks the engine's capabilities and prepares the opening of the request `makeRequest` builds.
    /// - Parameters:
    ///   - forBlock: The session is for a block entry point: with ``WebSockets/Configuration/runsBlocksOnEventLoop``
    ///     the engine's executor for the connection is chosen now, so the caller can open and run it there.
    ///   - settings: The WebSockets settings of the session; the client's when `nil`.
    ///   - makeRequest: Builds the request.
    @inline(never)
    func prepareOpening(
        forBlock: Bool, settings: SharedWebSocketSettings? = nil, _ makeRequest: () throws -> WebSocketRequestBuilder
    ) throws -> SessionOpening {
        let request: WebSocketRequestBuilder
        do {
            request = try makeRequest()
        } catch let error as WebSocketError {
            throw error.asConnectionFailure
        }
        let shared = settings ?? self.sharedWebSocketSettings
        let settings = shared.value
        let engine = self.engine
        guard engine.isSupported(.webSocket) else {
            throw WebSocketError(
                .unsupported,
                engine.unsupportedReason(.webSocket) ?? "the \(engine.name) engine does not support WebSockets",
                isConnectionFailure: true
            )
        }
        let factories = settings.extensionsConfiguration.factories
        if !factories.isEmpty && !engine.isSupported(.webSocketExtensions) {
            throw WebSocketError(
                .unsupported,
                (engine.unsupportedReason(.webSocketExtensions)
                    ?? "the \(engine.name) engine cannot carry WebSocket extensions")
                    + "; remove \(factories.map(\.name).joined(separator: ", ")) or use the CIO engine",
                isConnectionFailure: true
            )
        }
        let url = request.url
        let connectTimeout = request.timeout.connectTimeout ?? self.configuration.connectTimeout
        let openTimeout = request.timeout.openTimeout ?? self.configuration.openTimeout
        var logger = self.configuration.logger
        // Every line a session logs carries its short id and the endpoint (never the query string or credentials).
        let sessionID = Logger.makeSessionID()
        logger.setSessionMetadata(url, id: sessionID)
        let proxyConfiguration = self.configuration.proxy
        let proxy = try proxyConfiguration.server(forHost: url.host, port: url.port, secure: url.isSecure)
        var executor: (any TaskExecutor)?
        var blockExecutor: (any TaskExecutor)?
        if forBlock && settings.runsBlocksOnEventLoop {
            if let limit = settings.eventLoopHoldWarningThreshold, let watching = engine as? any LoopHoldWatchingEngine
            {
                let executors = watching.executorsForNextConnection(
                    reportingHoldsOf: limit,
                    Self.loopHoldReport(url: url, sessionID: sessionID, engineName: engine.name, logger: logger))
                (executor, blockExecutor) = (executors?.connection, executors?.session)
            } else {
                executor = engine.executorForNextConnection()
                blockExecutor = executor
            }
        }
        let handshake = OpeningHandshake(request: request, extensionFactories: factories)
        return SessionOpening(
            engine: engine, settings: shared, sessionID: sessionID, logger: logger,
            options: EngineConnectOptions(
                connectTimeout: min(connectTimeout, openTimeout), logger: logger, executor: executor,
                proxying: proxy.map { EngineConnectOptions.Proxying(proxy: $0, tls: proxyConfiguration.tls) }
                    ?? self.directConnection,
                openingRequest: engine.isSupported(.webSocketOverHTTP2) ? handshake.openingRequest() : nil),
            handshake: handshake, openTimeout: openTimeout,
            blockExecutor: blockExecutor, metrics: self.metrics)
    }

    /// The warning for a session's block that held its event loop (logged once per session, on the loop thread).
    private static func loopHoldReport(url: WebSocketURL, sessionID: String, engineName: String, logger: Logger)
        -> @Sendable (Duration) -> Void
    {
        // The endpoint without the query string or credentials, which may hold a token (Observability in the docs).
        let endpoint = Logger.endpoint(of: url)
        return { held in
            let milliseconds = held.components.seconds * 1000 + held.components.attoseconds / 1_000_000_000_000_000
            logger.warning(
                """
                the block of the WebSocket session \(endpoint) held its \(engineName) event loop for \(milliseconds) ms without \
                suspending: meanwhile this session could not read, answer pings or run its timers, nor could the other \
                sessions on that loop. Move blocking work (readLine(), sleep, blocking I/O, long computations) off the \
                loop: read input on a thread of its own and hand it over with an AsyncStream, or set \
                WebSockets.Configuration.runsBlocksOnEventLoop = false. Reported once per session \
                (eventLoopHoldWarningThreshold sets the limit; nil turns the check off).
                """,
                metadata: [
                    "ws.session": "\(sessionID)", "ws.endpoint": "\(endpoint)", "ws.engine": "\(engineName)",
                    "ws.heldMilliseconds": "\(milliseconds)",
                ])
        }
    }
}
