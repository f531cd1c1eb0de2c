import Glibc
import Synchronization
import WSCore
import WSExtensions

/// A small WebSocket server for tests and demos, in the spirit of OkHttp's MockWebServer.
///
/// It listens on a loopback address (a free port by default), performs the RFC 6455 opening handshake, and
/// runs a ``Handler`` for each upgraded connection on a thread of its own. It favours simplicity and
/// robustness over speed: blocking I/O, one thread per connection. Optional TLS uses the system OpenSSL.
///
/// ```swift
/// let server = try WebSocketTestServer.start()          // echo handler, free port
/// defer { server.stop() }
/// let session = try await client.webSocketSession(server.url)
/// ```
///
/// Stop the server with ``stop()``; dropping the last reference stops it too. Handlers must return once
/// ``ServerSession/receive()`` returns `nil` or throws, or ``stop()`` waits for them. The server never changes
/// the process's signal handling.
public final class WebSocketTestServer: Sendable {
    /// Where the server listens and how it behaves.
    public struct Configuration: Sendable {
        /// The address to bind: an IPv4 or IPv6 literal (`127.0.0.1`, `::1`) or `localhost` (127.0.0.1).
        public var host = "127.0.0.1"
        /// The port to bind; 0 picks a free port (read it back from ``WebSocketTestServer/port``).
        public var port = 0
        /// A PEM certificate chain file; with ``tlsPrivateKeyFile`` the server speaks TLS (wss).
        public var tlsCertificateFile: String?
        /// The PEM private key of ``tlsCertificateFile``.
        public var tlsPrivateKeyFile: String?
        /// The subprotocols the server supports; it selects the first one the client offers that is listed here.
        public var subprotocols: [String] = []
        /// The largest frame and message the server accepts; bigger ones are refused with close code 1009.
        public var maxMessageSize = 64 << 20
        /// How long a client may take to send its upgrade request (and to finish the TLS handshake).
        public var handshakeTimeout: Duration = .seconds(10)
        /// How the server answers a valid upgrade request: ``HandshakeBehavior/accept`` (the default), or a
        /// misbehaviour for testing a client's error handling (refuse, a wrong `Sec-WebSocket-Accept`, a delay).
        public var handshake: HandshakeBehavior = .accept
        /// When `true`, the built-in ``Handler/echo`` and ``Handler/broadcast`` handlers never answer the
        /// client's close frame: they keep the connection open, reading and discarding, until the client drops
        /// it (so the client's close timeout runs out). Default `false`.
        public var ignoresClose = false

        /// When `true`, a client that offers permessage-deflate (RFC 7692) gets it, without parameters (context
        /// takeover, 15-bit windows): messages are then compressed both ways. Default `false`.
        public var perMessageDeflate = false

        /// Creates a configuration: 127.0.0.1, a free port, no TLS, no subprotocols, 64 MiB messages.
        public init() {}

        /// Creates a configuration.
        /// - Parameters:
        ///   - host: The address to bind.
        ///   - port: The port; 0 for a free one.
        ///   - tlsCertificateFile: A PEM certificate chain file for TLS.
        ///   - tlsPrivateKeyFile: The PEM private key for TLS.
        ///   - subprotocols: The supported subprotocols.
        ///   - maxMessageSize: The largest frame and message accepted.
        public init(
            host: String = "127.0.0.1",
            port: Int = 0,
            tlsCertificateFile: String? = nil,
            tlsPrivateKeyFile: String? = nil,
            subprotocols: [String] = [],
            maxMessageSize: Int = 64 << 20
        ) {
            self.host = host
            self.port = port
            self.tlsCertificateFile = tlsCertificateFile
            self.tlsPrivateKeyFile = tlsPrivateKeyFile
            self.subprotocols = subprotocols
            self.maxMessageSize = maxMessageSize
        }
    }

    /// How the server answers a valid upgrade request; set ``Configuration/handshake``. The misbehaving
    /// answers test a client's handshake error handling.
    public enum HandshakeBehavior: Sendable, Hashable {
        /// Upgrades with a correct `101 Switching Protocols` response.
        case accept
        /// Refuses the upgrade with an HTTP error `status` (e.g. 403) and a plain-text `body`; the request is
        /// recorded with that status and the connection closed.
        case reject(status: Int, body: String = "")
        /// Answers `101` with a `Sec-WebSocket-Accept` value that does not match the client's key.
        case wrongAccept
        /// Waits `delay` before answering `101` (then runs the handler as usual), to trip the client's open
        /// timeout. Stopping the server cuts the wait short.
        case delay(Duration)
    }

    /// What the server does with each upgraded connection.
    public enum Handler: Sendable {
        /// Echoes every text and binary message back (whole messages, same kind and bytes), answers a close
        /// frame with the same code and message, then closes.
        case echo
        /// Sends every text and binary message to every connected broadcast client, the sender included;
        /// answers a close frame like ``echo``.
        case broadcast
        /// Runs the closure on the connection's thread. When it returns (or throws) and the session is still
        /// open, the server closes it with 1000 (or 1011 when it threw).
        case custom(@Sendable (ServerSession) throws -> Void)
    }

    private let core: ServerCore

    private init(core: ServerCore) {
        self.core = core
    }

    deinit {
        self.core.stop()
    }

    /// Binds, listens and starts accepting connections on a thread of its own.
    /// - Parameters:
    ///   - configuration: Address, port, TLS files, subprotocols and limits.
    ///   - handler: What to do with each connection; ``Handler/echo`` by default.
    /// - Returns: The running server.
    /// - Throws: ``WebSocketTestServerError`` when the address cannot be bound or the TLS files cannot be
    ///   loaded.
    public static func start(_ configuration: Configuration = .init(), handler: Handler = .echo) throws
        -> WebSocketTestServer
    {
        WebSocketTestServer(core: try ServerCore.start(configuration, handler: handler))
    }

    /// The port the server listens on.
    public var port: Int { self.core.port }

    /// Whether the server speaks TLS.
    public var isSecure: Bool { self.core.tls != nil }

    /// The server's URL with path `/`: `ws://127.0.0.1:PORT/`, or `wss://localhost:PORT/` with TLS (so
    /// that the host matches a certificate for `localhost`).
    public var url: String { self.url(path: "/") }

    /// The server's URL with another path and query.
    /// - Parameter path: The path and query, e.g. `/chat?room=1`.
    public func url(path: String) -> String {
        let path = path.hasPrefix("/") ? path : "/" + path
        var host = self.core.configuration.host
        if self.isSecure && (host == "127.0.0.1" || host == "localhost") { host = "localhost" }
        if host.contains(":") { host = "[\(host)]" }
        return "\(self.isSecure ? "wss" : "ws")://\(host):\(self.port)\(path)"
    }

    /// Every upgrade request received so far, in order, including those the server refused.
    public var requests: [RecordedRequest] { self.core.state.withLock { $0.requests } }

    /// The number of connections currently open.
    public var connectionCount: Int { self.core.state.withLock { $0.channels.count } }

    /// Stops the server: closes the listener, sends a 1001 close frame to each open session (when it can do so
    /// at once) and drops every connection, then waits for all threads to finish. Idempotent; safe from a
    /// handler.
    public func stop() {
        self.core.stop()
    }
}

/// The state shared by the accept thread and the connection threads. Threads hold the core, never the public
/// ``WebSocketTestServer``, so that dropping the server's last reference stops it.
final class ServerCore: Sendable {
    struct State {
        var stopped = false
        var requests: [RecordedRequest] = []
        var nextID = 0
        var channels: [Int: Channel] = [:]
        var sessions: [Int: ServerSession] = [:]
        var broadcastSessions: [Int: ServerSession] = [:]
        var acceptThread: pthread_t?
        var threads: [Int: pthread_t] = [:]
        var finishedThreads: [pthread_t] = []
    }

    let configuration: WebSocketTestServer.Configuration
    let handler: WebSocketTestServer.Handler
    let tls: TLSServerContext?
    let port: Int
    let state = Mutex(State())
    private let listenFD: Int32
    private let wakeRead: Int32
    private let wakeWrite: Int32

    private init(
        configuration: WebSocketTestServer.Configuration, handler: WebSocketTestServer.Handler,
        tls: TLSServerContext?, listenFD: Int32, port: Int, wakeRead: Int32, wakeWrite: Int32
    ) {
        self.configuration = configuration
        self.handler = handler
        self.tls = tls
        self.listenFD = listenFD
        self.port = port
        self.wakeRead = wakeRead
        self.wakeWrite = wakeWrite
    }

    static func start(_ configuration: WebSocketTestServer.Configuration, handler: WebSocketTestServer.Handler)
        throws(WebSocketTestServerError) -> ServerCore
    {
        var tls: TLSServerContext?
        switch (configuration.tlsCertificateFile, configuration.tlsPrivateKeyFile) {
        case (nil, nil): break
        case (let cert?, let key?):
            tls = try TLSServerContext(certificateFile: cert, privateKeyFile: key)
        default:
            throw WebSocketTestServerError("TLS needs both tlsCertificateFile and tlsPrivateKeyFile")
        }
        let (listenFD, port) = try Listener.bind(host: configuration.host, port: configuration.port)
        var fds: [Int32] = [-1, -1]
        guard pipe(&fds) == 0 else {
            let error = systemError("pipe")
            Glibc.close(listenFD)
            throw WebSocketTestServerError("cannot create the wake-up pipe", underlying: error)
        }
        let core = ServerCore(
            configuration: configuration, handler: handler, tls: tls, listenFD: listenFD, port: port,
            wakeRead: fds[0], wakeWrite: fds[1])
        for fd in fds { _ = fcntl(fd, F_SETFD, FD_CLOEXEC) }
        do {
            let thread = try startThread { core.acceptLoop() }
            core.state.withLock { $0.acceptThread = thread }
        } catch {
            core.state.withLock { $0.stopped = true }
            core.closeDescriptors()
            throw WebSocketTestServerError("cannot start the accept thread", underlying: error)
        }
        return core
    }

    // MARK: Accepting

    private func acceptLoop() {
        var pfds = [
            pollfd(fd: self.listenFD, events: Int16(POLLIN), revents: 0),
            pollfd(fd: self.wakeRead, events: Int16(POLLIN), revents: 0),
        ]
        while true {
            pfds[0].revents = 0
            pfds[1].revents = 0
            let rc = poll(&pfds, 2, -1)
            if rc < 0 {
                if errno == EINTR { continue }
                return
            }
            if pfds[1].revents != 0 { return }
            if pfds[0].revents == 0 { continue }
            let fd = accept(self.listenFD, nil, nil)
            if fd < 0 {
                if errno == EMFILE || errno == ENFILE { usleep(10_000) }
                continue
            }
            _ = fcntl(fd, F_SETFD, FD_CLOEXEC)
            _ = fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) | O_NONBLOCK)
            var one: Int32 = 1
            _ = setsockopt(fd, Int32(IPPROTO_TCP), Int32(TCP_NODELAY), &one, socklen_t(MemoryLayout<Int32>.size))
            self.spawnConnection(fd: fd)
            self.reapFinishedThreads()
        }
    }

    private func spawnConnection(fd: Int32) {
        let ssl: OpaquePointer?
        if let tls = self.tls {
            guard let made = tls.makeSSL(fd: fd) else {
                Glibc.close(fd)
                return
            }
            ssl = made
        } else {
            ssl = nil
        }
        let channel = Channel(fd: fd, ssl: ssl)
        self.state.withLock { state in
            guard !state.stopped else { return }
            let id = state.nextID
            state.nextID += 1
            do {
                let thread = try startThread { [self] in
                    self.runConnection(id: id, channel: channel)
                }
                state.channels[id] = channel
                state.threads[id] = thread
            } catch {
                // Out of threads: drop the connection (the channel closes its descriptor).
            }
        }
    }

    /// Joins the connection threads that have finished, so that a long-running server does not pile them up.
    private func reapFinishedThreads() {
        let finished = self.state.withLock { state -> [pthread_t] in
            defer { state.finishedThreads.removeAll() }
            return state.finishedThreads
        }
        for thread in finished { pthread_join(thread, nil) }
    }

    // MARK: A connection

    private func runConnection(id: Int, channel: Channel) {
        defer {
            channel.abort()
            self.state.withLock { state in
                state.channels[id] = nil
                state.sessions[id] = nil
                state.broadcastSessions[id] = nil
                if let thread = state.threads.removeValue(forKey: id) { state.finishedThreads.append(thread) }
            }
        }
        let deadline = ContinuousClock.now + self.configuration.handshakeTimeout
        guard let (session, response) = self.handshake(channel: channel, until: deadline) else { return }
        // Registered before the 101 goes out, so that a client that saw the 101 can count on stop() and
        // broadcasts reaching this session.
        let registered = self.state.withLock { state -> Bool in
            if state.stopped { return false }
            state.sessions[id] = session
            if case .broadcast = self.handler { state.broadcastSessions[id] = session }
            return true
        }
        guard registered else { return }
        var writeDeadline = deadline
        if case .delay(let delay) = self.configuration.handshake {
            let end = ContinuousClock.now + delay
            while ContinuousClock.now < end && !channel.isAborted { usleep(5_000) }
            if channel.isAborted { return }
            writeDeadline = .now + self.configuration.handshakeTimeout
        }
        do {
            try response.withUnsafeBytes { bytes in try channel.write(bytes, until: writeDeadline) }
        } catch {
            return
        }
        var handlerError: (any Error)?
        do {
            switch self.handler {
            case .echo: try Self.echo(session, ignoresClose: self.configuration.ignoresClose)
            case .broadcast: try self.broadcast(session, ignoresClose: self.configuration.ignoresClose)
            case .custom(let body): try body(session)
            }
        } catch {
            handlerError = error
        }
        session.finishAfterHandler(error: handlerError)
    }

    private static func echo(_ session: ServerSession, ignoresClose: Bool) throws {
        while let frame = try session.receive() {
            switch frame.kind {
            case .text, .binary:
                try session.send(Frame(kind: frame.kind, data: frame.data))
            case .close:
                if ignoresClose { session.waitForDisconnect() } else { try session.answerClose(frame) }
            default:
                break
            }
        }
    }

    private func broadcast(_ session: ServerSession, ignoresClose: Bool) throws {
        while let frame = try session.receive() {
            switch frame.kind {
            case .text, .binary:
                let message = Frame(kind: frame.kind, data: frame.data)
                let everyone = self.state.withLock { state in state.broadcastSessions.sorted { $0.key < $1.key } }
                for (_, other) in everyone { try? other.send(message) }
            case .close:
                if ignoresClose { session.waitForDisconnect() } else { try session.answerClose(frame) }
            default:
                break
            }
        }
    }

    /// Runs the TLS handshake and reads the upgrade request; returns the session and the 101 response to send,
    /// or answers an error status and returns `nil`.
    private func handshake(channel: Channel, until deadline: ContinuousClock.Instant) -> (ServerSession, [UInt8])? {
        do {
            try channel.handshake(until: deadline)
        } catch {
            return nil
        }
        var parser = HTTPRequestParser()
        var buffer = [UInt8](repeating: 0, count: 16 * 1024)
        var parsed: (head: HTTPRequestHead, leftover: [UInt8])?
        while parsed == nil {
            let count: Int
            do {
                count = try buffer.withUnsafeMutableBytes { bytes in
                    try channel.read(into: bytes, until: deadline)
                }
            } catch {
                return nil
            }
            if count == 0 { return nil }
            do {
                parsed = try buffer.withUnsafeBytes { bytes in
                    let chunk = UnsafeRawBufferPointer(rebasing: bytes[..<count])
                    guard let result = try parser.feed(chunk) else { return nil }
                    return (result.head, Array(chunk[result.consumed...]))
                }
            } catch {
                Self.respond(
                    channel, status: 400, reason: "Bad Request",
                    body: "\((error as? WebSocketError)?.message ?? "\(error)")\n")
                return nil
            }
        }
        guard let head = parsed?.head, let leftover = parsed?.leftover else { return nil }

        let offered = httpTokenList(head.headers.values(for: "Sec-WebSocket-Protocol"))
        let selected = offered.first { self.configuration.subprotocols.contains($0) }
        var record = RecordedRequest(
            method: head.method, target: head.target, version: head.version, headers: head.headers,
            offeredSubprotocols: offered, selectedSubprotocol: selected)

        var refusal = Self.checkUpgrade(head)
        if refusal == nil, case .reject(let status, let body) = self.configuration.handshake {
            refusal = (status, Self.reasonPhrase(status), body)
        }
        if let refusal {
            record.selectedSubprotocol = nil
            record.status = refusal.status
        }
        self.state.withLock { $0.requests.append(record) }
        if let refusal {
            Self.respond(
                channel, status: refusal.status, reason: refusal.reason,
                body: refusal.body.isEmpty || refusal.body.hasSuffix("\n") ? refusal.body : refusal.body + "\n",
                extraHeaders: refusal.status == 426 ? "Sec-WebSocket-Version: 13\r\n" : "")
            return nil
        }

        let key = head.headers["Sec-WebSocket-Key"]!.trimmingSpaces
        var response = "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
        let accept =
            self.configuration.handshake == .wrongAccept
            ? WebSocketHandshake.acceptValue(forKey: "dGhpcyBpcyBub3QgaXQhIQ==")
            : WebSocketHandshake.acceptValue(forKey: key)
        response += "Sec-WebSocket-Accept: \(accept)\r\n"
        if let selected { response += "Sec-WebSocket-Protocol: \(selected)\r\n" }
        var deflate: (any WebSocketExtension)?
        if self.configuration.perMessageDeflate,
            let offers = try? WebSocketExtensionHeader.parse(head.headers.values(for: "Sec-WebSocket-Extensions")),
            offers.contains(where: { HTTPHeaders.equalNames($0.name, "permessage-deflate") })
        {
            // Accepted without parameters, both directions use the same settings, so the client-side extension
            // object serves the server too: its compressor and decompressor are symmetric here.
            let accepted = WebSocketExtensionHeader(name: "permessage-deflate")
            deflate = try? PerMessageDeflate().negotiate(response: accepted)
            if deflate != nil { response += "Sec-WebSocket-Extensions: \(accepted)\r\n" }
        }
        response += "\r\n"
        let session = ServerSession(
            request: record, channel: channel, maxMessageSize: self.configuration.maxMessageSize,
            leftover: leftover, deflate: deflate)
        return (session, Array(response.utf8))
    }

    /// Why an upgrade request is refused, or `nil` when it is a valid WebSocket upgrade.
    private static func checkUpgrade(_ head: HTTPRequestHead) -> (status: Int, reason: String, body: String)? {
        let headers = head.headers
        guard head.method == "GET" else {
            return (400, "Bad Request", "a WebSocket upgrade must use GET, not \(head.method)")
        }
        guard httpTokenList(headers.values(for: "Upgrade")).contains(where: { HTTPHeaders.equalNames($0, "websocket") })
        else {
            return (400, "Bad Request", "missing 'Upgrade: websocket' (got \(headers["Upgrade"] ?? "none"))")
        }
        guard
            httpTokenList(headers.values(for: "Connection")).contains(where: { HTTPHeaders.equalNames($0, "upgrade") })
        else {
            return (400, "Bad Request", "the Connection header does not contain 'upgrade'")
        }
        guard headers["Sec-WebSocket-Version"]?.trimmingSpaces == "13" else {
            return (426, "Upgrade Required", "only Sec-WebSocket-Version 13 is supported")
        }
        guard let key = headers["Sec-WebSocket-Key"]?.trimmingSpaces, key.utf8.count == 24, key.hasSuffix("==")
        else {
            return (400, "Bad Request", "missing or malformed Sec-WebSocket-Key")
        }
        return nil
    }

    /// The standard reason phrase of an HTTP error status.
    static func reasonPhrase(_ status: Int) -> String {
        switch status {
        case 400: "Bad Request"
        case 401: "Unauthorized"
        case 403: "Forbidden"
        case 404: "Not Found"
        case 426: "Upgrade Required"
        case 429: "Too Many Requests"
        case 500: "Internal Server Error"
        case 502: "Bad Gateway"
        case 503: "Service Unavailable"
        default: "Error"
        }
    }

    /// Writes a plain-text HTTP error response and closes the connection.
    private static func respond(
        _ channel: Channel, status: Int, reason: String, body: String, extraHeaders: String = ""
    ) {
        let bodyBytes = Array(body.utf8)
        var text = "HTTP/1.1 \(status) \(reason)\r\nContent-Type: text/plain; charset=utf-8\r\n"
        text += "Content-Length: \(bodyBytes.count)\r\nConnection: close\r\n\(extraHeaders)\r\n"
        let bytes = Array(text.utf8) + bodyBytes
        _ = bytes.withUnsafeBytes { channel.tryWrite($0, until: .now + .seconds(2)) }
        channel.shutdownWrite()
        var scratch = [UInt8](repeating: 0, count: 4096)
        let deadline = ContinuousClock.now + .seconds(1)
        scratch.withUnsafeMutableBytes { buffer in
            while let count = try? channel.read(into: buffer, until: deadline), count > 0 {}
        }
    }

    // MARK: Stopping

    func stop() {
        let snapshot = self.state.withLock { state -> (State)? in
            if state.stopped { return nil }
            state.stopped = true
            let copy = state
            state.acceptThread = nil
            state.threads = [:]
            state.finishedThreads = []
            return copy
        }
        guard let snapshot else { return }
        var one: UInt8 = 1
        _ = Glibc.write(self.wakeWrite, &one, 1)
        for (id, channel) in snapshot.channels {
            if let session = snapshot.sessions[id] {
                session.shutDownForServerStop()
            } else {
                channel.abort()
            }
        }
        if let accept = snapshot.acceptThread { joinOrDetach(accept) }
        self.closeDescriptors()
        for thread in snapshot.threads.values { joinOrDetach(thread) }
        for thread in snapshot.finishedThreads { joinOrDetach(thread) }
    }

    /// Closes the listener and the wake-up pipe; called once, after the accept thread ended.
    private func closeDescriptors() {
        Glibc.close(self.listenFD)
        Glibc.close(self.wakeRead)
        Glibc.close(self.wakeWrite)
    }
}

extension String {
    /// The string without leading and trailing spaces and tabs.
    fileprivate var trimmingSpaces: String {
        let isSpace: (Character) -> Bool = { $0 == " " || $0 == "\t" }
        return String(self.drop(while: isSpace).reversed().drop(while: isSpace).reversed())
    }
}

/// Creating the listening socket.
enum Listener {
    /// Binds and listens on `host`:`port`; returns the descriptor and the bound port.
    static func bind(host: String, port: Int) throws(WebSocketTestServerError) -> (Int32, Int) {
        guard (0...65535).contains(port) else { throw WebSocketTestServerError("port \(port) is out of range") }
        let address = host == "localhost" ? "127.0.0.1" : host
        var storage = sockaddr_storage()
        let length: socklen_t
        let family: Int32
        if address.contains(":") {
            var sin6 = sockaddr_in6()
            sin6.sin6_family = sa_family_t(AF_INET6)
            sin6.sin6_port = in_port_t(UInt16(port)).bigEndian
            guard inet_pton(AF_INET6, address, &sin6.sin6_addr) == 1 else {
                throw WebSocketTestServerError("'\(host)' is not an IPv6 address")
            }
            withUnsafeMutableBytes(of: &storage) { $0.storeBytes(of: sin6, as: sockaddr_in6.self) }
            length = socklen_t(MemoryLayout<sockaddr_in6>.size)
            family = AF_INET6
        } else {
            var sin = sockaddr_in()
            sin.sin_family = sa_family_t(AF_INET)
            sin.sin_port = in_port_t(UInt16(port)).bigEndian
            guard inet_pton(AF_INET, address, &sin.sin_addr) == 1 else {
                throw WebSocketTestServerError("'\(host)' is not an IPv4 or IPv6 address (or localhost)")
            }
            withUnsafeMutableBytes(of: &storage) { $0.storeBytes(of: sin, as: sockaddr_in.self) }
            length = socklen_t(MemoryLayout<sockaddr_in>.size)
            family = AF_INET
        }
        let fd = socket(family, Int32(SOCK_STREAM.rawValue | SOCK_CLOEXEC.rawValue), 0)
        guard fd >= 0 else {
            throw WebSocketTestServerError("cannot create a socket", underlying: systemError("socket"))
        }
        var one: Int32 = 1
        _ = setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, socklen_t(MemoryLayout<Int32>.size))
        let bound = withUnsafePointer(to: &storage) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { Glibc.bind(fd, $0, length) }
        }
        guard bound == 0 else {
            let error = systemError("bind")
            Glibc.close(fd)
            throw WebSocketTestServerError("cannot bind \(host):\(port)", underlying: error)
        }
        // Non-blocking, so that accept never blocks when a connection is reset between poll and accept.
        _ = fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) | O_NONBLOCK)
        guard listen(fd, 128) == 0 else {
            let error = systemError("listen")
            Glibc.close(fd)
            throw WebSocketTestServerError("cannot listen on \(host):\(port)", underlying: error)
        }
        var actual = sockaddr_storage()
        var actualLength = socklen_t(MemoryLayout<sockaddr_storage>.size)
        _ = withUnsafeMutablePointer(to: &actual) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { getsockname(fd, $0, &actualLength) }
        }
        let boundPort = withUnsafeBytes(of: &actual) { raw -> Int in
            if family == AF_INET6 {
                return Int(UInt16(bigEndian: raw.load(as: sockaddr_in6.self).sin6_port))
            }
            return Int(UInt16(bigEndian: raw.load(as: sockaddr_in.self).sin_port))
        }
        return (fd, boundPort)
    }
}
