/// Every failure the SDK reports, in one family: the connection could not be established (name resolution, TCP
/// connect, TLS, a timeout, a server that answered without upgrading), the session failed (a protocol violation by
/// the peer, a message over a limit, a missing pong, a lost connection), or the API was misused (a send after
/// close, a missing capability). Ktor's `WebSocketException` and its subclass `WebSocketConnectionException`.
///
/// One `catch` sees them all; ``isConnectionFailure`` tells "the connection could not be established" from "the
/// session failed", and when the server answered without upgrading, ``status``, ``headers`` and a bounded prefix
/// of the ``body`` say what it said:
/// ```swift
/// do {
///     try await client.webSocket("wss://api.example.com/ws") { session in ... }
/// } catch let error as WebSocketError where error.code == .upgradeRejected {
///     print("HTTP \(error.status ?? 0): \(error.bodyText)")
/// } catch let error as WebSocketError where error.isConnectionFailure {
///     print("could not connect: \(error.message)")  // dnsFailure, connectionRefused, tlsFailure, timedOut, ...
/// } catch let error as WebSocketError {
///     print("the session failed: \(error.message)")  // protocolViolation, connectionLost, pongTimeout, ...
/// }
/// ```
/// Match on ``code``; new codes may be added in later versions, so keep a `default` branch.
public struct WebSocketError: Error, Sendable, CustomStringConvertible {
    /// What went wrong. Extensible: compare with `==`, do not switch exhaustively.
    public struct Code: Hashable, Sendable, CustomStringConvertible {
        private enum Base: String, Hashable, Sendable {
            case protocolViolation, invalidUTF8, messageTooBig, pongTimeout, closeTimeout, sessionClosed
            case connectionLost, unsupported, invalidArgument, extensionFailure, noContentConverter, conversion
            case invalidURL, unexpectedMessageKind, notConnected, sendQueueFull
            case dnsFailure, connectionRefused, timedOut, tlsFailure, upgradeRejected, invalidHandshake, network
            case cancelled, proxyFailure
        }
        private let base: Base
        private init(_ base: Base) { self.base = base }

        // MARK: Connecting

        /// The host name could not be resolved.
        public static let dnsFailure = Code(.dnsFailure)
        /// Nothing listens on the host and port (ECONNREFUSED).
        public static let connectionRefused = Code(.connectionRefused)
        /// The connect or the opening handshake took longer than its timeout.
        public static let timedOut = Code(.timedOut)
        /// The TLS handshake failed: untrusted certificate, wrong host name, protocol version, ...
        public static let tlsFailure = Code(.tlsFailure)
        /// The server answered with an HTTP status other than 101; see ``WebSocketError/status``,
        /// ``WebSocketError/headers`` and ``WebSocketError/body``.
        public static let upgradeRejected = Code(.upgradeRejected)
        /// The server's 101 response broke RFC 6455 (wrong `Sec-WebSocket-Accept`, an unoffered subprotocol or
        /// extension, malformed or oversized headers).
        public static let invalidHandshake = Code(.invalidHandshake)
        /// Another network error (unreachable, reset, closed during the handshake).
        public static let network = Code(.network)
        /// The connecting task was cancelled.
        public static let cancelled = Code(.cancelled)
        /// The proxy did not open the tunnel: an HTTP proxy refused the `CONNECT` (``WebSocketError/status`` is its
        /// status, e.g. 407 when it wants credentials, with its `Proxy-Authenticate` challenge in
        /// ``WebSocketError/headers``; 403; 502 when it could not reach the host), a SOCKS5 proxy refused (the
        /// message names its reply), or the proxy's reply was malformed, too large or cut short.
        public static let proxyFailure = Code(.proxyFailure)

        // MARK: The session

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
        /// An extension failed to negotiate or to process a frame.
        public static let extensionFailure = Code(.extensionFailure)
        /// `sendSerialized` or `receiveDeserialized` was called with no content converter installed.
        public static let noContentConverter = Code(.noContentConverter)
        /// A content converter failed to serialize or deserialize a value.
        public static let conversion = Code(.conversion)
        /// A message of the other kind arrived: ``WebSocketSession/receiveText()`` received a binary message, or
        /// ``WebSocketSession/receiveBinary()`` a text message. The message is in ``WebSocketError/frame``; the
        /// session stays open.
        public static let unexpectedMessageKind = Code(.unexpectedMessageKind)
        /// A ``ReconnectingWebSocketSession`` in fail-fast mode has no open connection: the message was not sent.
        public static let notConnected = Code(.notConnected)
        /// A ``ReconnectingWebSocketSession``'s queue of messages waiting for a connection is full: the message was
        /// not queued.
        public static let sendQueueFull = Code(.sendQueueFull)

        // MARK: Either

        /// The engine lacks a capability the request needs (WebSockets, extensions) or cannot do what it asks.
        public static let unsupported = Code(.unsupported)
        /// An argument was invalid (e.g. a control frame over 125 bytes, a reserved close code).
        public static let invalidArgument = Code(.invalidArgument)
        /// The URL is not a valid ws, wss, http or https URL.
        public static let invalidURL = Code(.invalidURL)

        /// Whether only establishing a connection fails with this code; errors made with it are connection
        /// failures unless their creator says otherwise.
        var isConnectingCode: Bool {
            switch self.base {
            case .dnsFailure, .connectionRefused, .timedOut, .tlsFailure, .upgradeRejected, .invalidHandshake, .network,
                .cancelled, .proxyFailure:
                return true
            default:
                return false
            }
        }

        /// The code's name, as in `messageTooBig`.
        public var description: String { self.base.rawValue }
    }

    /// The most response body bytes kept in ``body``.
    public static let maxBodyBytes = 4096

    /// What went wrong.
    public let code: Code
    /// A sentence saying what happened and, where it helps, what to do.
    public let message: String
    /// Whether the connection could not be established: the error ended the opening of a session, so no session
    /// exists and the block of a `webSocket` call never ran. `false` when an
    /// open session failed or was misused.
    ///
    /// Every error that `webSocket`, `webSocketSession`, `ws` or `wss` throw before the session is open has it
    /// set, whatever its code (a DNS failure, a refused connect, a TLS failure, a timeout, an HTTP 403, an
    /// invalid URL, a capability the engine lacks); an error the session or your block throws has it clear.
    /// Ktor's `WebSocketConnectionException`.
    public let isConnectionFailure: Bool
    /// The close code the session sent or received because of this error, if any. For
    /// ``Code/sessionClosed``: the code the session ended with (the peer's, or yours if you closed first).
    public let closeCode: CloseReason.Code?
    /// The frame involved, e.g. the frame a converter could not decode; it is not lost to the caller.
    public let frame: Frame?
    /// The HTTP status when the server answered the opening handshake without upgrading (and for
    /// ``Code/invalidHandshake``, the status of the response that broke the rules).
    public let status: Int?
    /// The response headers when the server answered the opening handshake; empty otherwise.
    public let headers: HTTPHeaders
    /// Up to ``maxBodyBytes`` of the response body when the server answered without upgrading; empty otherwise.
    public let body: [UInt8]
    /// The underlying error (an OS error, a TLS error, a converter's error), if any.
    public let underlying: (any Error)?

    /// Creates an error.
    /// - Parameters:
    ///   - code: What went wrong.
    ///   - message: What happened and what to do.
    ///   - closeCode: The close code involved.
    ///   - frame: The frame involved.
    ///   - status: The HTTP status, if the server answered the opening handshake.
    ///   - headers: The response headers, if the server answered.
    ///   - body: The start of the response body (truncated to ``maxBodyBytes``).
    ///   - underlying: The underlying error.
    ///   - isConnectionFailure: Whether the connection could not be established; `nil` (the default) decides by
    ///     `code`: `true` for the connecting codes (``Code/dnsFailure`` to ``Code/cancelled``), `false` for the
    ///     others. An engine's transport passes `false` for a connection that failed after it was established.
    public init(
        _ code: Code,
        _ message: String,
        closeCode: CloseReason.Code? = nil,
        frame: Frame? = nil,
        status: Int? = nil,
        headers: HTTPHeaders = HTTPHeaders(),
        body: [UInt8] = [],
        underlying: (any Error)? = nil,
        isConnectionFailure: Bool? = nil
    ) {
        self.code = code
        self.message = message
        self.closeCode = closeCode
        self.frame = frame
        self.status = status
        self.headers = headers
        self.body = body.count > Self.maxBodyBytes ? Array(body.prefix(Self.maxBodyBytes)) : body
        self.underlying = underlying
        self.isConnectionFailure = isConnectionFailure ?? code.isConnectingCode
    }

    /// This error, marked as a failure to establish the connection (see ``isConnectionFailure``).
    var asConnectionFailure: WebSocketError {
        if self.isConnectionFailure { return self }
        return WebSocketError(
            self.code, self.message, closeCode: self.closeCode, frame: self.frame, status: self.status,
            headers: self.headers, body: self.body, underlying: self.underlying, isConnectionFailure: true)
    }

    /// The body decoded as UTF-8 (invalid bytes repaired), for messages and logs.
    public var bodyText: String { String(decoding: self.body, as: UTF8.self) }

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

    /// `WebSocketError(code): message`, with the close code, the HTTP status, the start of the body and the
    /// underlying error when present.
    public var description: String {
        var text = "WebSocketError(\(self.code)): \(self.message)"
        if let closeCode { text += " [close \(closeCode)]" }
        if let status { text += " [HTTP \(status)]" }
        if !self.body.isEmpty { text += " body: \(self.bodyText.prefix(200))" }
        if let underlying, !self.message.contains("\(underlying)") { text += " (\(underlying))" }
        return text
    }
}

/// The error type connection failures had before they joined ``WebSocketError``; the same type now. A
/// `catch let error as WebSocketConnectionError` still catches every connection failure and reads its
/// ``WebSocketError/status``, ``WebSocketError/headers`` and ``WebSocketError/body``, but it catches session
/// failures too: add `where error.isConnectionFailure` to catch only the former.
@available(*, deprecated, renamed: "WebSocketError")
public typealias WebSocketConnectionError = WebSocketError

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
