/// A session that connects again when its connection is lost: messages, `send` and `close` keep working across
/// reconnections, and ``states`` tells what is happening (connecting, open, reconnecting, closed). Opened with
/// ``WebSocketClient/reconnectingWebSocketSession(_:configuration:_:)`` or, tied to a task,
/// ``WebSocketClient/reconnectingWebSocket(_:configuration:request:_:)``.
///
/// ```swift
/// var configuration = ReconnectingWebSocketSession.Configuration()
/// configuration.onConnect = { session in                    // every connection, before queued sends go out
///     try await session.send(#"{"subscribe": "prices"}"#)
/// }
/// let feed = try client.reconnectingWebSocketSession("wss://feed.example.com/ws", configuration: configuration) {
///     request in request.headers["Authorization"] = "Bearer \(try await tokens.current())"  // each attempt
/// }
/// Task { for await state in feed.states { statusBar.show(state) } }
/// for try await message in feed.messages { handle(message) }
/// ```
///
/// What is guaranteed: a message is sent on at most one connection and never twice. One that `send` accepted
/// while a connection was open is lost if that connection dies before the server reads it (at most once).
/// Messages go out in the order `send` accepted them, queued ones before any sent later, so the server sees a
/// subsequence of them in order. Received messages are delivered in the order they arrived, those of an ended
/// connection before those of the next.
///
/// The session keeps a keepalive (``Configuration/pingInterval``, on by default) so that a silently dropped
/// network is noticed. ``close(_:)`` stops it from any state, at once while it waits to reconnect.
public final class ReconnectingWebSocketSession: Sendable {
    let core: ReconnectCore

    init(core: ReconnectCore) {
        self.core = core
    }

    /// How many `send` calls wait for the streamed message being sent to end (fail-fast mode); for tests.
    package var sendsWaitingForStreamEnd: Int { self.core.sendsWaitingForStreamEnd }

    deinit {
        self.core.closeDetached()
    }

    /// The state now: ``State/connecting`` until the first connection is open, then ``State/open(subprotocol:extensions:)``,
    /// ``State/reconnecting(attempt:delay:cause:)`` during an outage, and ``State/closed(_:)`` for good.
    public var state: State { self.core.currentState }

    /// The state changes, as an `AsyncSequence`: the state now first, then each change, ending after
    /// ``State/closed(_:)``. Each iteration gets its own sequence; one that falls far behind keeps the newest 64.
    ///
    /// ```swift
    /// for await state in session.states {
    ///     indicator.isOnline = state.isOpen
    /// }
    /// ```
    public var states: AsyncStream<State> { self.core.makeStateStream() }

    /// Waits until the session has ended for good and returns why.
    public var closeCause: Cause {
        get async { await self.core.waitForEnd() }
    }

    /// What the open connection has carried so far (frames, messages and bytes each way, ping round-trip times, when
    /// it opened), or `nil` while no connection is open. Each connection starts from zero: the figures are the
    /// current connection's, not the session's since it was made.
    public var connectionStatistics: WebSocketSessionStatistics? { self.core.openConnectionIfAny?.statistics }

    /// Sends a ping on the open connection and waits for its pong: the round-trip time to the server, as
    /// ``WebSocketSession/ping(timeout:)`` measures it. It runs beside the session's own keepalive
    /// (``Configuration/pingInterval``) and does not reconnect by itself: a pong that does not come is reported
    /// here, and the keepalive decides whether the connection is dead.
    /// - Parameter timeout: How long to wait for the pong (default 10 s).
    /// - Returns: The round-trip time.
    /// - Throws: ``WebSocketError``: ``WebSocketError/Code/notConnected`` while no connection is open (connecting,
    ///   reconnecting, or the hook still running), ``WebSocketError/Code/pongTimeout`` when no pong came within
    ///   `timeout`, ``WebSocketError/Code/sessionClosed`` once the session has ended or when the connection ended
    ///   during the ping; `CancellationError` when the task is cancelled.
    nonisolated(nonsending) public func ping(timeout: Duration = .seconds(10)) async throws -> Duration {
        try await self.core.openConnection().ping(timeout: timeout)
    }

    /// Sends a text message: on the open connection, or queued while there is none (see
    /// ``Configuration/sendsWhileDisconnected``). Returning means accepted, not delivered (see the guarantee above).
    /// - Parameter text: The message.
    /// - Throws: ``WebSocketError``: ``WebSocketError/Code/notConnected`` while disconnected in fail-fast mode,
    ///   ``WebSocketError/Code/sendQueueFull`` when the queue is full, ``WebSocketError/Code/sessionClosed`` once
    ///   the session has ended.
    nonisolated(nonsending) public func send(_ text: String) async throws {
        try await self.core.send(Frame(kind: .text, data: Array(text.utf8)))
    }

    /// Sends a binary message, as ``send(_:)-(String)`` sends text.
    /// - Parameter bytes: The message.
    /// - Throws: What ``send(_:)-(String)`` throws.
    nonisolated(nonsending) public func send(_ bytes: some Sequence<UInt8>) async throws {
        try await self.core.send(Frame(kind: .binary, data: Array(bytes)))
    }

    /// Sends a text or binary message, as ``send(_:)-(String)`` does.
    /// - Parameter message: The message.
    /// - Throws: What ``send(_:)-(String)`` throws.
    nonisolated(nonsending) public func send(_ message: WebSocketMessage) async throws {
        try await self.core.send(message.frame)
    }

    /// Sends `value` through the client's ``WebSockets/Configuration/contentConverter``.
    /// - Parameter value: The value.
    /// - Throws: ``WebSocketError/Code/noContentConverter``, ``WebSocketError/Code/conversion``, or what
    ///   ``send(_:)-(String)`` throws.
    nonisolated(nonsending) public func sendSerialized<T: Encodable>(_ value: T) async throws {
        let converter = try self.core.requireConverter()
        let frame: Frame
        do {
            frame = try converter.serialize(value)
        } catch let error as WebSocketError where error.code == .conversion {
            throw error
        } catch {
            throw WebSocketError(.conversion, "could not serialize \(T.self): \(error)", underlying: error)
        }
        try await self.core.send(frame)
    }

    /// Receives the next text or binary message, from whichever connection is open, waiting through outages.
    /// - Returns: The message.
    /// - Throws: ``WebSocketError/Code/sessionClosed`` once the session has ended: with
    ///   ``WebSocketError/isNormalClosure`` `true` after ``close(_:)`` or a server's normal close (1000, no
    ///   status), and with the last failure in ``WebSocketError/underlying`` when it gave up.
    nonisolated(nonsending) public func receiveMessage() async throws -> WebSocketMessage {
        guard let frame = try await self.core.receiveDataFrame() else { throw self.core.endError() }
        return frame.kind == .text ? .text(try frame.readText()) : .binary(frame.data)
    }

    /// Receives the next message and decodes it with the client's content converter.
    /// - Parameter type: The type to decode; inferred from context when omitted.
    /// - Returns: The value.
    /// - Throws: ``WebSocketError/Code/noContentConverter``, ``WebSocketError/Code/conversion`` (the message is
    ///   in ``WebSocketError/frame``), or what ``receiveMessage()`` throws.
    nonisolated(nonsending) public func receiveDeserialized<T: Decodable>(_ type: T.Type = T.self) async throws -> T {
        let converter = try self.core.requireConverter()
        guard let frame = try await self.core.receiveDataFrame() else { throw self.core.endError() }
        guard converter.isApplicable(frame) else {
            throw WebSocketError(
                .conversion, "the converter cannot read a \(frame.kind) frame as \(T.self)", frame: frame)
        }
        do {
            return try converter.deserialize(T.self, from: frame)
        } catch let error as WebSocketError where error.code == .conversion && error.frame != nil {
            throw error
        } catch {
            throw WebSocketError(
                .conversion, "could not decode \(T.self) from a \(frame.kind) frame: \(error)", frame: frame,
                underlying: error)
        }
    }

    /// Receives the next text or binary message as a stream of chunks, from whichever connection is open, waiting
    /// through outages; see ``WebSocketSession/receiveStreamingMessage()``. With
    /// ``WebSockets/Configuration/streamsIncomingMessages`` set each chunk is handed over as its fragment arrives.
    ///
    /// A message is never continued on another connection: if the connection drops in the middle of it, iterating
    /// its ``WebSocketStreamingMessage/chunks`` throws the connection's ``WebSocketError``, the rest of that message
    /// is lost (at most once), and the next call receives from the next connection.
    /// - Returns: The message: its kind and its chunks.
    /// - Throws: What ``receiveMessage()`` throws.
    nonisolated(nonsending) public func receiveStreamingMessage() async throws -> WebSocketStreamingMessage {
        guard let message = try await self.core.receiveStreamingMessage() else { throw self.core.endError() }
        return message
    }

    /// Sends one message from an asynchronous sequence of chunks on the open connection, a fragment per chunk,
    /// with backpressure; see ``WebSocketSession/sendStreamingMessage(_:from:)``.
    ///
    /// A streamed message is never queued nor resent: it needs an open connection when it starts, and if that
    /// connection is lost before its last fragment, this throws and the message is lost (the next connection
    /// never sees part of it). Messages sent with `send` meanwhile go out after it: queued, or in fail-fast mode
    /// by `send` waiting for its end, as on a plain session. A producer error or a cancellation after
    /// the first fragment closes that connection with 1011, and the session reconnects.
    /// - Parameters:
    ///   - kind: `.text` (the chunks, joined, must be UTF-8) or `.binary`.
    ///   - chunks: The message's bytes in order.
    /// - Throws: ``WebSocketError``: ``WebSocketError/Code/notConnected`` when no connection is open,
    ///   ``WebSocketError/Code/invalidArgument`` while another streamed message is being sent, what
    ///   ``WebSocketSession/sendStreamingMessage(_:from:)`` throws.
    nonisolated(nonsending) public func sendStreamingMessage<Chunks: AsyncSequence>(
        _ kind: Frame.Kind = .binary, from chunks: Chunks
    ) async throws where Chunks.Element == [UInt8] {
        try await self.core.sendStreaming { session in try await session.sendStreamingMessage(kind, from: chunks) }
    }

    /// Sends a file's contents as one binary message on the open connection, read and written chunk by chunk, with
    /// the rules of ``sendStreamingMessage(_:from:)``; see ``WebSocketSession/sendFile(atPath:chunkSize:)``.
    /// - Parameters:
    ///   - path: The file's path.
    ///   - chunkSize: Bytes per read and per fragment (default 256 KiB).
    /// - Throws: What ``sendStreamingMessage(_:from:)`` and ``WebSocketSession/sendFile(atPath:chunkSize:)`` throw.
    nonisolated(nonsending) public func sendFile(atPath path: String, chunkSize: Int = 256 << 10) async throws {
        try await self.core.sendStreaming { session in try await session.sendFile(atPath: path, chunkSize: chunkSize) }
    }

    /// The text and binary messages from every connection, in order, as an `AsyncSequence`. It ends after
    /// ``close(_:)`` or a server's normal close, and throws ``WebSocketError/Code/sessionClosed`` with the last
    /// failure when the session gave up.
    public var messages: ReconnectingWebSocketMessages { ReconnectingWebSocketMessages(session: self) }

    /// Closes the session for good, from any state: sends a close frame with `reason` on the open connection and
    /// waits for its close handshake (at most ``WebSockets/Configuration/closeTimeout``); during a connection
    /// attempt or a backoff delay it stops at once. Nothing reconnects afterwards; messages still queued are
    /// dropped.
    /// - Parameter reason: The code and message, `1000 NORMAL` by default.
    nonisolated(nonsending) public func close(_ reason: CloseReason = CloseReason(code: .normal)) async {
        await self.core.close(reason)
    }
}

/// The messages of a ``ReconnectingWebSocketSession``, across its connections; see
/// ``ReconnectingWebSocketSession/messages``.
public struct ReconnectingWebSocketMessages: AsyncSequence, Sendable {
    /// Each element is a whole message.
    public typealias Element = WebSocketMessage
    let session: ReconnectingWebSocketSession

    /// Creates an iterator.
    public func makeAsyncIterator() -> AsyncIterator { AsyncIterator(session: self.session) }

    /// Iterates the messages.
    public struct AsyncIterator: AsyncIteratorProtocol {
        let session: ReconnectingWebSocketSession

        /// The next message; `nil` once the session was closed normally.
        nonisolated(nonsending) public mutating func next() async throws -> WebSocketMessage? {
            guard let frame = try await self.session.core.receiveDataFrame() else {
                let error = self.session.core.endError()
                if error.isNormalClosure { return nil }
                throw error
            }
            return frame.kind == .text ? .text(try frame.readText()) : .binary(frame.data)
        }
    }
}

extension ReconnectingWebSocketSession {
    /// Where a reconnecting session is; what a status indicator shows.
    public enum State: Sendable, CustomStringConvertible {
        /// The first connection is being opened.
        case connecting
        /// A connection is open, your ``Configuration/onConnect`` hook has run, and sends go straight to it.
        /// - Parameters:
        ///   - subprotocol: The subprotocol the server selected, or `nil`.
        ///   - extensions: The extensions negotiated on this connection.
        case open(subprotocol: String?, extensions: [any WebSocketExtension])
        /// The connection was lost or an attempt failed; attempt `attempt` comes after `delay` (and may be in
        /// progress already).
        /// - Parameters:
        ///   - attempt: The number of the next attempt in this outage: 1, 2, ...
        ///   - delay: The wait before it, backoff and jitter included.
        ///   - cause: Why the connection ended or the previous attempt failed.
        case reconnecting(attempt: Int, delay: Duration, cause: Cause)
        /// The session has ended for good.
        /// - Parameter cause: Why: ``Cause/closedByClient(_:)`` after ``close(_:)``, else the failure or close
        ///   the policy did not retry, or the last one when its limits were reached.
        case closed(Cause)

        /// Whether this is ``open(subprotocol:extensions:)``.
        public var isOpen: Bool {
            if case .open = self { return true }
            return false
        }

        /// Whether this is ``closed(_:)``.
        public var isClosed: Bool {
            if case .closed = self { return true }
            return false
        }

        /// A short sentence, e.g. `reconnecting (attempt 2 in 1.5 s) after 1006 ABNORMAL_CLOSURE`.
        public var description: String {
            switch self {
            case .connecting:
                return "connecting"
            case .open(let subprotocol, let extensions):
                var details: [String] = []
                if let subprotocol { details.append("subprotocol \(subprotocol)") }
                if !extensions.isEmpty {
                    details.append("extensions \(extensions.map(\.name).joined(separator: ", "))")
                }
                return details.isEmpty ? "open" : "open (\(details.joined(separator: "; ")))"
            case .reconnecting(let attempt, let delay, let cause):
                let seconds = (delay.secondsAsDouble * 1000).rounded() / 1000
                return "reconnecting (attempt \(attempt) in \(seconds) s) after \(cause)"
            case .closed(let cause):
                return "closed: \(cause)"
            }
        }
    }

    /// Why a connection ended, an attempt failed, or the session closed.
    public enum Cause: Sendable, CustomStringConvertible {
        /// An attempt failed (connect, TLS, the opening handshake, your request block) or your
        /// ``Configuration/onConnect`` hook threw: the error says why (a ``WebSocketError`` with
        /// ``WebSocketError/isConnectionFailure`` set for the connection and the handshake).
        case failure(any Error)
        /// The connection ended with this reason: the server's close code, `1006` when it dropped without a close
        /// frame, or the code the session sent when it failed it (`1011` when no pong came, `1002` for a protocol
        /// violation).
        case closed(CloseReason)
        /// You closed the session with this reason (`1001` when the task that owned it was cancelled or it was
        /// released without being closed).
        case closedByClient(CloseReason)

        /// The error of ``failure(_:)``, else `nil`.
        public var error: (any Error)? {
            if case .failure(let error) = self { return error }
            return nil
        }

        /// The close code of ``closed(_:)`` and ``closedByClient(_:)``, or the one a ``WebSocketError`` carries;
        /// `nil` for other failures.
        public var closeCode: CloseReason.Code? {
            switch self {
            case .failure(let error): (error as? WebSocketError)?.closeCode
            case .closed(let reason), .closedByClient(let reason): reason.code
            }
        }

        /// E.g. `1012 SERVICE_RESTART: restarting`, or the error's description.
        public var description: String {
            switch self {
            case .failure(let error): "\(error)"
            case .closed(let reason): "\(reason)"
            case .closedByClient(let reason): "closed by the client (\(reason))"
            }
        }
    }

    /// What `send` does while no connection is open.
    public enum SendsWhileDisconnected: Sendable, Hashable {
        /// Queue up to `maxMessages` messages and `maxBytes` bytes of payload, sent in order on the next
        /// connection after your ``Configuration/onConnect`` hook; beyond either limit `send` throws
        /// ``WebSocketError/Code/sendQueueFull``. Queued messages are dropped if the session closes for good.
        case queue(maxMessages: Int, maxBytes: Int)
        /// Throw ``WebSocketError/Code/notConnected`` at once: for messages that are worthless late (orders,
        /// game input), so the caller decides.
        case failFast
    }

    /// How a reconnecting session behaves. The client's ``WebSockets`` settings (limits, extensions, the content
    /// converter, the close timeout, streaming) and its proxy apply to each connection, except the keepalive, set
    /// here.
    public struct Configuration: Sendable {
        /// When to reconnect and how long to wait.
        public var policy = ReconnectPolicy()
        /// What `send` does while disconnected (default: queue up to 1,000 messages and 1 MiB).
        public var sendsWhileDisconnected = SendsWhileDisconnected.queue(maxMessages: 1_000, maxBytes: 1 << 20)
        /// How often each connection sends a ping (default 20 s; `nil` disables the keepalive, and a network that
        /// drops silently is then noticed only when TCP gives up, which can take many minutes). Replaces
        /// ``WebSockets/Configuration/pingInterval`` for this session.
        public var pingInterval: Duration? = .seconds(20)
        /// How long to wait for a pong before the connection counts as dead and is replaced (default: the ping
        /// interval). Replaces ``WebSockets/Configuration/pongTimeout`` for this session.
        public var pongTimeout: Duration? = nil
        /// Runs on every new connection before it counts as open and before queued messages go out:
        /// re-authenticate, re-subscribe. It may send and receive on the connection it is given. If it throws,
        /// the connection is closed (1011) and the error is judged by the policy (not retried by default, unless
        /// the connection dropped meanwhile).
        public var onConnect: (@Sendable (WebSocketSession) async throws -> Void)? = nil
        /// The clock of the backoff delays and the stability time (default `ContinuousClock()`). Tests pass a
        /// virtual one (WSTesting's `InMemoryClock.swiftClock`).
        public var clock: any Clock<Duration> = ContinuousClock()

        /// Creates the default configuration.
        public init() {}
    }
}
