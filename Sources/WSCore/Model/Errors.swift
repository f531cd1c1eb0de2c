/// An error on an established WebSocket session, or a misuse of the API: a protocol violation by the peer, a
/// message over a limit, a missing pong, a send after close, a missing capability. Ktor's
/// `WebSocketException`.
///
/// Match on ``code``; new codes may be added in later versions, so keep a `default` branch:
/// ```swift
/// catch let error as WebSocketError where error.code == .messageTooBig { ... }
/// ```
public struct WebSocketError: Error, Sendable, CustomStringConvertible {
    /// What went wrong. Extensible: compare with `==`, do not switch exhaustively.
    public struct Code: Hashable, Sendable, CustomStringConvertible {
        private enum Base: String, Hashable, Sendable {
            case protocolViolation, invalidUTF8, messageTooBig, pongTimeout, closeTimeout, sessionClosed
            case connectionLost, unsupported, invalidArgument, extensionFailure, noContentConverter, conversion
            case invalidURL, unexpectedMessageKind, notConnected, sendQueueFull
        }
        private let base: Base
        private init(_ base: Base) { self.base = base }

        /// The peer broke RFC 6455 (bad opcode, RSV bits, control-frame rules, close code, ...). Close code 1002.
        public static let protocolViolation = Code(.protocolViolation)
        /// A text message or close reason was not valid UTF-8. Close code 1007.
        public static let invalidUTF8 = Code(.invalidUTF8)
        /// A frame or message exceeded ``WebSockets/Configuration/maxFrameSize`` or
        /// ``WebSockets/Configuration/maxMessageSize``. Close code 1009.
        public static let messageTooBig = Code(.messageTooBig)
        /// No pong arrived within the pong timeout after a ping. Close code 1011.
        public static let pongTimeout = Code(.pongTimeout)
        /// The peer did not answer our close frame in time; the connection was dropped.
        public static let closeTimeout = Code(.closeTimeout)
        /// The session is closed: sending is no longer possible.
        public static let sessionClosed = Code(.sessionClosed)
        /// The transport failed or closed without a close handshake (close code 1006).
        public static let connectionLost = Code(.connectionLost)
        /// The engine lacks a capability the request needs (WebSockets, extensions).
        public static let unsupported = Code(.unsupported)
        /// An argument was invalid (e.g. a control frame over 125 bytes, a reserved close code).
        public static let invalidArgument = Code(.invalidArgument)
        /// An extension failed to negotiate or to process a frame.
        public static let extensionFailure = Code(.extensionFailure)
        /// `sendSerialized` or `receiveDeserialized` was called with no content converter installed.
        public static let noContentConverter = Code(.noContentConverter)
        /// A content converter failed to serialize or deserialize a value.
        public static let conversion = Code(.conversion)
        /// The URL is not a valid ws, wss, http or https URL.
        public static let invalidURL = Code(.invalidURL)
        /// A message of the other kind arrived: ``WebSocketSession/receiveText()`` received a binary message, or
        /// ``WebSocketSession/receiveBinary()`` a text message. The message is in ``WebSocketError/frame``; the
        /// session stays open.
        public static let unexpectedMessageKind = Code(.unexpectedMessageKind)
        /// A ``ReconnectingWebSocketSession`` in fail-fast mode has no open connection: the message was not sent.
        public static let notConnected = Code(.notConnected)
        /// A ``ReconnectingWebSocketSession``'s queue of messages waiting for a connection is full: the message was
        /// not queued.
        public static let sendQueueFull = Code(.sendQueueFull)

        /// The code's name, as in `messageTooBig`.
        public var description: String { self.base.rawValue }
    }

    /// What went wrong.
    public let code: Code
    /// A sentence saying what happened and, where it helps, what to do.
    public let message: String
    /// The close code the session sent or received because of this error, if any. For
    /// ``Code/sessionClosed``: the code the session ended with (the peer's, or yours if you closed first).
    public let closeCode: CloseReason.Code?
    /// The frame involved, e.g. the frame a converter could not decode; it is not lost to the caller.
    public let frame: Frame?
    /// The underlying error, if any.
    public let underlying: (any Error)?

    /// Creates an error.
    /// - Parameters:
    ///   - code: What went wrong.
    ///   - message: What happened and what to do.
    ///   - closeCode: The close code involved.
    ///   - frame: The frame involved.
    ///   - underlying: The underlying error.
    public init(
        _ code: Code,
        _ message: String,
        closeCode: CloseReason.Code? = nil,
        frame: Frame? = nil,
        underlying: (any Error)? = nil
    ) {
        self.code = code
        self.message = message
        self.closeCode = closeCode
        self.frame = frame
        self.underlying = underlying
    }

    /// Whether this error only says that the session ended normally: it is ``Code/sessionClosed`` after a close
    /// handshake with code 1000 (normal), 1001 (going away) or no status code, whichever side started it. The
    /// equivalent of Python websockets' `ConnectionClosedOK`; `false` for every failure (a protocol violation, a
    /// lost connection, a pong timeout, a close with an error code such as 1011).
    ///
    /// A server may send its last message and its close frame together; by the time you answer the message, the
    /// session is closed and the send throws. Treat that as the end of the conversation, not as a failure:
    /// ```swift
    /// do {
    ///     for try await message in session.messages { try await session.send(message) }
    /// } catch let error as WebSocketError where error.isNormalClosure {
    ///     // the server said goodbye
    /// }
    /// ```
    public var isNormalClosure: Bool {
        guard self.code == .sessionClosed, self.underlying == nil, let closeCode = self.closeCode else { return false }
        return closeCode == .normal || closeCode == .goingAway || closeCode == .noStatus
    }

    /// `WebSocketError(code): message`, with the close code and underlying error when present.
    public var description: String {
        var text = "WebSocketError(\(self.code)): \(self.message)"
        if let closeCode { text += " [close \(closeCode)]" }
        if let underlying, !self.message.contains("\(underlying)") { text += " (\(underlying))" }
        return text
    }
}

/// The connection could not be established: name resolution, TCP connect, TLS, a timeout, or a server that
/// answered without upgrading. Ktor's `WebSocketConnectionException`.
///
/// When the server answered with an HTTP response other than `101 Switching Protocols`, ``status``,
/// ``headers`` and a bounded prefix of the ``body`` say what it said.
public struct WebSocketConnectionError: Error, Sendable, CustomStringConvertible {
    /// Why the connection failed. Extensible: compare with `==`, do not switch exhaustively.
    public struct Code: Hashable, Sendable, CustomStringConvertible {
        private enum Base: String, Hashable, Sendable {
            case dnsFailure, connectionRefused, timedOut, tlsFailure, upgradeRejected, invalidHandshake, network
            case unsupported, cancelled
        }
        private let base: Base
        private init(_ base: Base) { self.base = base }

        /// The host name could not be resolved.
        public static let dnsFailure = Code(.dnsFailure)
        /// Nothing listens on the host and port (ECONNREFUSED).
        public static let connectionRefused = Code(.connectionRefused)
        /// The connect or the opening handshake took longer than its timeout.
        public static let timedOut = Code(.timedOut)
        /// The TLS handshake failed: untrusted certificate, wrong host name, protocol version, ...
        public static let tlsFailure = Code(.tlsFailure)
        /// The server answered with an HTTP status other than 101; see ``status``, ``headers``, ``body``.
        public static let upgradeRejected = Code(.upgradeRejected)
        /// The server's 101 response broke RFC 6455 (wrong `Sec-WebSocket-Accept`, an unoffered subprotocol or
        /// extension, malformed or oversized headers).
        public static let invalidHandshake = Code(.invalidHandshake)
        /// Another network error (unreachable, reset, closed during the handshake).
        public static let network = Code(.network)
        /// The engine cannot do what the request needs.
        public static let unsupported = Code(.unsupported)
        /// The connecting task was cancelled.
        public static let cancelled = Code(.cancelled)

        /// The code's name, as in `connectionRefused`.
        public var description: String { self.base.rawValue }
    }

    /// The most response body bytes kept in ``body``.
    public static let maxBodyBytes = 4096

    /// Why the connection failed.
    public let code: Code
    /// A sentence saying what happened and what to do.
    public let message: String
    /// The HTTP status when the server answered without upgrading.
    public let status: Int?
    /// The response headers when the server answered.
    public let headers: HTTPHeaders
    /// Up to ``maxBodyBytes`` of the response body when the server answered without upgrading.
    public let body: [UInt8]
    /// The underlying error (an OS error, a TLS error), if any.
    public let underlying: (any Error)?

    /// Creates a connection error.
    /// - Parameters:
    ///   - code: Why the connection failed.
    ///   - message: What happened and what to do.
    ///   - status: The HTTP status, if the server answered.
    ///   - headers: The response headers, if the server answered.
    ///   - body: The start of the response body (truncated to ``maxBodyBytes``).
    ///   - underlying: The underlying error.
    public init(
        _ code: Code,
        _ message: String,
        status: Int? = nil,
        headers: HTTPHeaders = HTTPHeaders(),
        body: [UInt8] = [],
        underlying: (any Error)? = nil
    ) {
        self.code = code
        self.message = message
        self.status = status
        self.headers = headers
        self.body = Array(body.prefix(Self.maxBodyBytes))
        self.underlying = underlying
    }

    /// The body decoded as UTF-8 (invalid bytes repaired), for messages and logs.
    public var bodyText: String { String(decoding: self.body, as: UTF8.self) }

    /// `WebSocketConnectionError(code): message`, with the status and the start of the body when present.
    public var description: String {
        var text = "WebSocketConnectionError(\(self.code)): \(self.message)"
        if let status { text += " [HTTP \(status)]" }
        if !self.body.isEmpty { text += " body: \(self.bodyText.prefix(200))" }
        if let underlying, !self.message.contains("\(underlying)") { text += " (\(underlying))" }
        return text
    }
}

/// An operating-system error (`errno`) from an engine, with the call that failed.
public struct SystemError: Error, Sendable, Hashable, CustomStringConvertible {
    /// The `errno` value.
    public let errno: Int32
    /// The call that failed, e.g. `connect`.
    public let call: String
    /// The text of the error (`strerror`).
    public let text: String

    /// Creates a system error.
    /// - Parameters:
    ///   - errno: The `errno` value.
    ///   - call: The system call that failed.
    ///   - text: The `strerror` text.
    public init(errno: Int32, call: String, text: String) {
        self.errno = errno
        self.call = call
        self.text = text
    }

    /// `call: text (errno N)`.
    public var description: String { "\(self.call): \(self.text) (errno \(self.errno))" }
}
