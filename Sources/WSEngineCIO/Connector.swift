// One connect attempt, as a state machine on its loop: resolve (on the resolver pool, or not at all for IP
// literals) → try each address with a non-blocking connect (EPOLLOUT + SO_ERROR) → TLS handshake → hand the
// socket to a CIOTransport. One deadline timer bounds the whole attempt.
import CWSLinux
import CWSOpenSSL
import Glibc
import Logging
import WSCore
import WSPosix

/// What a connect needs from the engine.
struct ConnectContext: Sendable {
    let resolver: Resolver
    let tls: TLSContext?
    let maxAddressAttempts: Int
    let closeGraceNanoseconds: UInt64
    let closeFlushNanoseconds: UInt64
    /// The ALPN protocol list to offer in the TLS handshake (wire format), or empty for none.
    var alpn: [UInt8] = []
}

/// Drives one `connect(to:options:)` on its loop and resumes the caller's continuation exactly once.
final class Connector: @unchecked Sendable {  // Mutable state is confined to `loop`'s thread.
    // Thread rules: every mutable field is confined to `loop`'s thread (every entry point is a loop task or an
    // epoll event); the immutable ones are set in init.

    private enum Phase {
        case idle, resolving, connecting(SocketAddress), handshaking(SocketAddress), done
    }

    let loop: EventLoop
    private let endpoint: EngineEndpoint
    private let timeout: Duration
    private let logger: Logger
    private let context: ConnectContext

    private var continuation: CheckedContinuation<CIOTransport, any Error>?
    private var phase = Phase.idle
    private var deadline: LoopTimer?
    private var addresses: [SocketAddress] = []
    private var nextAddress = 0
    private var fd: Int32 = -1
    private var ssl: OpaquePointer?
    private var lastError: WebSocketConnectionError?

    init(loop: EventLoop, endpoint: EngineEndpoint, options: EngineConnectOptions, context: ConnectContext) {
        self.loop = loop
        self.endpoint = endpoint
        self.timeout = options.connectTimeout
        var logger = options.logger
        logger.setDebugMetadata("ws.engine", "CIO")
        logger.setDebugMetadata("ws.endpoint", "\(endpoint)")
        self.logger = logger
        self.context = context
    }

    /// The epoll data that routes events to this connector: its address with bit 0 set.
    private var epollData: UInt64 { UInt64(UInt(bitPattern: Unmanaged.passUnretained(self).toOpaque())) | 1 }

    private var hostPort: String {
        hostPortText(host: self.endpoint.host, port: self.endpoint.port)
    }

    // MARK: Entry points (loop thread)

    /// Starts connecting; `continuation` is resumed exactly once.
    func start(_ continuation: CheckedContinuation<CIOTransport, any Error>) {
        if case .done = self.phase {
            continuation.resume(throwing: self.lastError ?? self.cancelledError)
            return
        }
        if let stopReason = self.loop.stopReason {
            self.phase = .done
            continuation.resume(throwing: stopReason)
            return
        }
        self.continuation = continuation
        self.loop.add(self)
        guard (0...65535).contains(self.endpoint.port) else {
            self.fail(WebSocketConnectionError(.network, "cannot connect to \(self.hostPort): invalid port"))
            return
        }
        self.deadline = self.loop.schedule(afterNanoseconds: self.timeout.clampedNanoseconds) { [self] in
            self.timedOut()
        }
        if let address = SocketAddress(ipLiteral: self.endpoint.host, port: UInt16(self.endpoint.port)) {
            self.addresses = [address]
            self.attemptNext()
            return
        }
        self.phase = .resolving
        self.logger.debug("resolving host name")
        let loop = self.loop
        let accepted = self.context.resolver.resolve(host: self.endpoint.host, port: self.endpoint.port) {
            [self] result in
            loop.execute { self.resolved(result) }
        }
        if !accepted {
            self.fail(
                WebSocketConnectionError(
                    .network,
                    "cannot resolve host '\(self.endpoint.host)': no resolver thread (the engine is shut down or out of threads)"
                ))
        }
    }

    /// The connecting task was cancelled.
    func cancel() {
        if case .done = self.phase { return }
        if self.continuation == nil {
            // Cancelled before `start` ran: `start` will see `.done` and throw.
            self.phase = .done
            self.lastError = self.cancelledError
            return
        }
        self.logger.debug("connect cancelled")
        self.fail(self.cancelledError)
    }

    private var cancelledError: WebSocketConnectionError {
        WebSocketConnectionError(.cancelled, "connecting to \(self.hostPort) was cancelled")
    }

    private func resolved(_ result: ResolveResult) {
        guard case .resolving = self.phase else { return }
        switch result {
        case .success(let addresses):
            self.logger.debug("resolved host name", metadata: ["ws.addresses": "\(addresses.count)"])
            self.addresses = addresses
            self.attemptNext()
        case .failure(let error):
            self.logger.debug("could not resolve host name", metadata: ["ws.error": "\(error.message)"])
            self.fail(error)
        }
    }

    private func timedOut() {
        self.deadline = nil
        var message = "connecting to \(self.hostPort) timed out after \(self.timeout.secondsText) s"
        switch self.phase {
        case .resolving: message += " (resolving the host name)"
        case .handshaking: message += " (during the TLS handshake)"
        default: break
        }
        self.logger.debug("connect timed out")
        self.fail(WebSocketConnectionError(.timedOut, message))
    }

    /// Tries the next address, or fails with the last error when none is left.
    private func attemptNext() {
        let limit = min(self.addresses.count, max(1, self.context.maxAddressAttempts))
        while self.nextAddress < limit {
            let address = self.addresses[self.nextAddress]
            self.nextAddress += 1
            let fd = socket(address.family, streamSocketType, Int32(IPPROTO_TCP))
            guard fd >= 0 else {
                let error = systemError("socket")
                self.lastError = WebSocketConnectionError(
                    .network, "cannot open a socket for \(address): \(error.text)", underlying: error)
                continue
            }
            setSocketOption(fd, Int32(IPPROTO_TCP), TCP_NODELAY, 1)
            let registration = self.loop.register(fd: fd, data: self.epollData)
            guard registration == 0 else {
                closeDescriptor(fd)
                let error = systemError("epoll_ctl", registration)
                self.lastError = WebSocketConnectionError(
                    .network, "cannot watch a socket for \(address): \(error.text)", underlying: error)
                continue
            }
            self.fd = fd
            self.phase = .connecting(address)
            self.logger.trace("connecting", metadata: ["ws.address": "\(address)"])
            let result = address.withSockAddr { Glibc.connect(fd, $0, $1) }
            if result == 0 {
                self.connected(to: address)
                return
            }
            let code = errno
            if code == EINPROGRESS || code == EINTR { return }  // EPOLLOUT tells when it is done.
            self.attemptFailed(address: address, errno: code)
        }
        self.fail(
            self.lastError
                ?? WebSocketConnectionError(.network, "cannot connect to \(self.hostPort): no address to try"))
    }

    private func attemptFailed(address: SocketAddress, errno code: Int32) {
        self.closeSocket()
        self.phase = .idle
        let error = systemError("connect", code)
        if code == ECONNREFUSED {
            self.lastError = WebSocketConnectionError(
                .connectionRefused, "connection refused by \(address): nothing is listening there",
                underlying: error)
        } else {
            self.lastError = WebSocketConnectionError(
                .network, "connecting to \(self.hostPort) (\(address)) failed: \(error.text)", underlying: error)
        }
        self.logger.debug("connect attempt failed", metadata: ["ws.address": "\(address)", "ws.errno": "\(code)"])
    }

    /// An epoll event for the socket being connected or handshaking.
    func handleEvents(_ events: UInt32) {
        switch self.phase {
        case .connecting(let address):
            guard events & (EPOLLOUT.rawValue | EPOLLERR.rawValue | EPOLLHUP.rawValue) != 0 else { return }
            var code: Int32 = 0
            var length = socklen_t(MemoryLayout<Int32>.size)
            if getsockopt(self.fd, SOL_SOCKET, SO_ERROR, &code, &length) != 0 { code = errno }
            if code == 0 {
                self.connected(to: address)
            } else {
                self.attemptFailed(address: address, errno: code)
                // Next attempt after this event batch, so that stale events of the closed socket cannot reach it.
                self.loop.execute { [self] in
                    if case .idle = self.phase { self.attemptNext() }
                }
            }
        case .handshaking(let address):
            self.handshake(address)
        default:
            return
        }
    }

    private func connected(to address: SocketAddress) {
        self.logger.debug("TCP connected", metadata: ["ws.address": "\(address)"])
        guard self.endpoint.secure else {
            self.succeed()
            return
        }
        guard let tls = self.context.tls else {
            self.fail(WebSocketConnectionError(.tlsFailure, "TLS is not configured"))
            return
        }
        let serverName = tls.configuration.serverNameOverride ?? self.endpoint.host
        do {
            self.ssl = try tls.makeSSL(fd: self.fd, serverName: serverName, alpn: self.context.alpn)
        } catch {
            self.fail(error)
            return
        }
        self.phase = .handshaking(address)
        self.handshake(address)
    }

    private func handshake(_ address: SocketAddress) {
        guard let ssl = self.ssl else { return }
        ERR_clear_error()
        errno = 0
        let result = SSL_do_handshake(ssl)
        if result == 1 {
            if self.logger.logLevel <= .debug {
                let version = String(cString: SSL_get_version(ssl))
                let cipher = SSL_get_current_cipher(ssl).map { String(cString: SSL_CIPHER_get_name($0)) } ?? "?"
                self.logger.debug("TLS handshake completed", metadata: ["ws.tls": "\(version) \(cipher)"])
            }
            self.succeed()
            return
        }
        let code = errno
        let sslError = SSL_get_error(ssl, result)
        if sslError == SSL_ERROR_WANT_READ || sslError == SSL_ERROR_WANT_WRITE { return }
        let error = tlsFailure(
            "TLS handshake with \(self.hostPort) (\(address)) failed", ssl: ssl,
            verifying: self.context.tls?.verifiesPeer ?? true, sslError: sslError, systemErrno: code)
        self.logger.debug("TLS handshake failed", metadata: ["ws.error": "\(error.message)"])
        self.fail(error)
    }

    // MARK: Completion

    private func succeed() {
        guard let continuation = self.continuation else { return }
        self.continuation = nil
        self.phase = .done
        self.deadline?.cancel()
        self.deadline = nil
        var alpn: String?
        if let ssl = self.ssl, !self.context.alpn.isEmpty {
            var selected: UnsafePointer<UInt8>?
            var length: UInt32 = 0
            SSL_get0_alpn_selected(ssl, &selected, &length)
            if let selected, length > 0 {
                alpn = String(decoding: UnsafeBufferPointer(start: selected, count: Int(length)), as: UTF8.self)
            }
        }
        let transport = CIOTransport(
            loop: self.loop, fd: self.fd, ssl: self.ssl, tls: self.context.tls, alpn: alpn, endpoint: self.hostPort,
            logger: self.logger, closeGraceNanoseconds: self.context.closeGraceNanoseconds,
            closeFlushNanoseconds: self.context.closeFlushNanoseconds)
        let registration = self.loop.reregister(fd: self.fd, data: transport.epollData)
        self.fd = -1
        self.ssl = nil
        self.loop.remove(self)
        guard registration == 0 else {
            let error = systemError("epoll_ctl", registration)
            transport.finish(error: nil)
            continuation.resume(
                throwing: WebSocketConnectionError(
                    .network, "cannot watch the socket for \(self.hostPort): \(error.text)", underlying: error))
            return
        }
        self.loop.add(transport)
        continuation.resume(returning: transport)
    }

    /// Fails the connect (idempotent) and releases the socket.
    func fail(_ error: WebSocketConnectionError) {
        if case .done = self.phase { return }
        self.phase = .done
        self.lastError = error
        self.deadline?.cancel()
        self.deadline = nil
        self.closeSocket()
        self.loop.remove(self)
        if let continuation = self.continuation {
            self.continuation = nil
            continuation.resume(throwing: error)
        }
    }

    private func closeSocket() {
        if let ssl = self.ssl {
            SSL_free(ssl)
            self.ssl = nil
        }
        if self.fd >= 0 {
            self.loop.deregister(fd: self.fd)
            closeDescriptor(self.fd)
            self.fd = -1
        }
    }
}
