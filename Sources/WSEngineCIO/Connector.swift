// One connect attempt, as a state machine on its loop: resolve (on the resolver pool, or not at all for IP
// literals) → try each address with a non-blocking connect (EPOLLOUT + SO_ERROR) → TLS handshake → hand the
// socket to a CIOTransport. One deadline timer bounds the whole attempt.
//
// Through a proxy (options.proxy) the same machine connects to the proxy instead, then: TLS to the proxy for an
// https:// proxy (its own trust settings) → the tunnel (HTTP CONNECT or SOCKS5, ProxyTunnel.swift) → TLS to the
// endpoint for wss, inside the proxy's TLS when there is one. For socks5:// the endpoint's name is resolved first.
// Without a proxy none of these steps runs: `proxy` is nil and every added branch is skipped.
import CWSLazyOpenSSL
import CWSLinux
import Glibc
import Logging
import WSCore
import WSPosix

/// What a connect needs from the engine.
struct ConnectContext: Sendable {
    let resolver: Resolver
    let tls: TLSContext?
    /// The TLS context for an https:// proxy (its own trust settings).
    let proxyTLS: TLSContext?
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
        case idle, resolving
        case connecting(SocketAddress)
        case handshaking(SocketAddress)
        case done
        /// socks5://: resolving the endpoint's name before connecting to the proxy.
        case resolvingTarget
        /// TLS handshake with an https:// proxy.
        case proxyHandshaking(SocketAddress)
        /// The CONNECT or SOCKS5 exchange.
        case tunnelling(SocketAddress)
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
    private var lastError: WebSocketError?
    /// The proxy to go through, or nil for a direct connection.
    private let proxy: ProxyServer?
    /// The TLS connection to an https:// proxy (the endpoint's TLS, if any, runs inside it).
    private var proxySSL: OpaquePointer?
    private var tunnel: ProxyTunnel?
    /// socks5://: the endpoint's address, resolved here.
    private var socksTargetAddress: [UInt8]?
    /// ``EngineConnectOptions/progress``, called at each step on the loop.
    private let progress: (@Sendable (EngineConnectStep) -> Void)?

    init(loop: EventLoop, endpoint: EngineEndpoint, options: EngineConnectOptions, context: ConnectContext) {
        self.loop = loop
        self.endpoint = endpoint
        self.timeout = options.connectTimeout
        var logger = options.logger
        logger.setDebugMetadata("ws.engine", "CIO")
        logger.setDebugMetadata("ws.endpoint", "\(endpoint)")
        if let proxy = options.proxy { logger.setDebugMetadata("ws.proxy", "\(proxy)") }  // Never the credentials.
        self.logger = logger
        self.context = context
        self.progress = options.progress
        self.proxy = options.proxy
    }

    /// The epoll data that routes events to this connector: its address with bit 0 set.
    private var epollData: UInt64 { UInt64(UInt(bitPattern: Unmanaged.passUnretained(self).toOpaque())) | 1 }

    private var hostPort: String {
        hostPortText(host: self.endpoint.host, port: self.endpoint.port)
    }

    /// The host connected to over TCP: the proxy's, or the endpoint's.
    private var connectHost: String { self.proxy?.host ?? self.endpoint.host }
    private var connectPort: Int { self.proxy?.port ?? self.endpoint.port }
    /// What the TCP connect reaches, for messages: `the proxy socks5://127.0.0.1:1080`, or `host:port`.
    private var connectTarget: String { self.proxy.map { "the proxy \($0)" } ?? self.hostPort }

    /// Runs the connect on the loop and waits for it (any thread); cancelling the task cancels the connect.
    func connect() async throws -> CIOTransport {
        try await withTaskCancellationHandler {
            try await withCheckedThrowingContinuation { (continuation: CheckedContinuation<CIOTransport, any Error>) in
                if !self.loop.execute({ self.start(continuation) }) {
                    continuation.resume(throwing: CIOEngine.shutdownError)
                }
            }
        } onCancel: {
            self.loop.execute { self.cancel() }
        }
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
            self.fail(WebSocketError(.network, "cannot connect to \(self.hostPort): invalid port"))
            return
        }
        self.deadline = self.loop.schedule(afterNanoseconds: self.timeout.clampedNanoseconds) { [self] in
            self.timedOut()
        }
        if let proxy = self.proxy, proxy.kind == .socks5, ipAddressBytes(self.endpoint.host) == nil {
            // socks5:// names the endpoint by address: resolve it here first.
            self.phase = .resolvingTarget
            self.resolve(self.endpoint.host, self.endpoint.port) { [self] result in self.targetResolved(result) }
            return
        }
        self.resolveConnectHost()
    }

    /// Resolves the host to connect to (the proxy's or the endpoint's) unless it is an IP literal, then connects.
    private func resolveConnectHost() {
        guard (0...65535).contains(self.connectPort) else {
            self.fail(WebSocketError(.network, "cannot connect to \(self.connectTarget): invalid port"))
            return
        }
        if let address = SocketAddress(ipLiteral: self.connectHost, port: UInt16(self.connectPort)) {
            self.addresses = [address]
            self.attemptNext()
            return
        }
        self.phase = .resolving
        self.logger.debug(self.proxy == nil ? "resolving host name" : "resolving the proxy's host name")
        self.resolve(self.connectHost, self.connectPort) { [self] result in self.resolved(result) }
    }

    private func resolve(_ host: String, _ port: Int, _ then: @escaping @Sendable (ResolveResult) -> Void) {
        let loop = self.loop
        let accepted = self.context.resolver.resolve(host: host, port: port) { result in
            loop.execute { then(result) }
        }
        if !accepted {
            self.fail(
                WebSocketError(
                    .network,
                    "cannot resolve host '\(host)': no resolver thread (the engine is shut down or out of threads)"
                ))
        }
    }

    private func targetResolved(_ result: ResolveResult) {
        guard case .resolvingTarget = self.phase else { return }
        switch result {
        case .success(let addresses):
            self.socksTargetAddress = addresses.first.map(\.addressBytes)
            self.resolveConnectHost()
        case .failure(let error):
            self.fail(error)
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

    private var cancelledError: WebSocketError {
        WebSocketError(.cancelled, "connecting to \(self.hostPort) was cancelled")
    }

    private func resolved(_ result: ResolveResult) {
        guard case .resolving = self.phase else { return }
        switch result {
        case .success(let addresses):
            self.logger.debug("resolved host name", metadata: ["ws.addresses": "\(addresses.count)"])
            self.progress?(.resolved)
            self.addresses = addresses
            self.attemptNext()
        case .failure(let error):
            self.logger.debug("could not resolve host name", metadata: ["ws.error": "\(error.message)"])
            if self.proxy != nil {
                self.fail(
                    WebSocketError(
                        .dnsFailure, "cannot reach \(self.connectTarget): \(error.message)",
                        underlying: error.underlying))
            } else {
                self.fail(error)
            }
        }
    }

    private func timedOut() {
        self.deadline = nil
        var message = "connecting to \(self.hostPort) timed out after \(self.timeout.secondsText) s"
        switch self.phase {
        case .resolving:
            message += self.proxy == nil ? " (resolving the host name)" : " (resolving the proxy's host name)"
        case .resolvingTarget: message += " (resolving the host name)"
        case .connecting where self.proxy != nil: message += " (connecting to \(self.connectTarget))"
        case .proxyHandshaking: message += " (during the TLS handshake with \(self.connectTarget))"
        case .tunnelling: message += " (waiting for \(self.connectTarget) to open the tunnel)"
        case .handshaking: message += " (during the TLS handshake)"
        default: break
        }
        self.logger.debug("connect timed out")
        self.fail(WebSocketError(.timedOut, message))
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
                self.lastError = WebSocketError(
                    .network, "cannot open a socket for \(address): \(error.text)", underlying: error)
                continue
            }
            setSocketOption(fd, Int32(IPPROTO_TCP), TCP_NODELAY, 1)
            let registration = self.loop.register(fd: fd, data: self.epollData)
            guard registration == 0 else {
                closeDescriptor(fd)
                let error = systemError("epoll_ctl", registration)
                self.lastError = WebSocketError(
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
                ?? WebSocketError(.network, "cannot connect to \(self.connectTarget): no address to try"))
    }

    private func attemptFailed(address: SocketAddress, errno code: Int32) {
        self.closeSocket()
        self.phase = .idle
        let error = systemError("connect", code)
        if code == ECONNREFUSED {
            let what = self.proxy.map { "the proxy \($0) (\(address))" } ?? "\(address)"
            self.lastError = WebSocketError(
                .connectionRefused, "connection refused by \(what): nothing is listening there",
                underlying: error)
        } else {
            self.lastError = WebSocketError(
                .network, "connecting to \(self.connectTarget) (\(address)) failed: \(error.text)", underlying: error)
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
        case .proxyHandshaking(let address):
            self.proxyHandshake(address)
        case .tunnelling(let address):
            self.tunnelStep(address)
        default:
            return
        }
    }

    private func connected(to address: SocketAddress) {
        self.logger.debug("TCP connected", metadata: ["ws.address": "\(address)"])
        self.progress?(.connected)
        if let proxy = self.proxy {
            self.connectedToProxy(proxy, address)
            return
        }
        self.startEndpointTLS(address)
    }

    /// TLS with the endpoint for wss (inside the proxy's TLS when there is one), else done.
    private func startEndpointTLS(_ address: SocketAddress) {
        guard self.endpoint.secure else {
            self.succeed()
            return
        }
        guard let tls = self.context.tls else {
            self.fail(WebSocketError(.tlsFailure, "TLS is not configured"))
            return
        }
        let server = TLSSessionKey(
            host: self.endpoint.host, serverName: tls.configuration.serverNameOverride ?? self.endpoint.host,
            port: self.endpoint.port, alpn: self.context.alpn, proxy: self.proxy)
        do {
            if let outer = self.proxySSL {
                self.ssl = try tls.makeSSL(over: outer, server: server)
            } else {
                self.ssl = try tls.makeSSL(fd: self.fd, server: server)
            }
        } catch {
            self.fail(error)
            return
        }
        self.phase = .handshaking(address)
        self.handshake(address)
    }

    // MARK: Through a proxy (loop thread)

    private func connectedToProxy(_ proxy: ProxyServer, _ address: SocketAddress) {
        guard proxy.kind == .https else {
            self.beginTunnel(address)
            return
        }
        guard let tls = self.context.proxyTLS else {
            self.fail(WebSocketError(.tlsFailure, "TLS for the proxy is not configured"))
            return
        }
        do {
            // The proxy's own context (its trust settings), so its sessions are kept apart from the endpoints'.
            let server = TLSSessionKey(
                host: proxy.host, serverName: proxy.host, port: proxy.port, alpn: [], proxy: nil)
            self.proxySSL = try tls.makeSSL(fd: self.fd, server: server)
        } catch {
            self.fail(error)
            return
        }
        self.phase = .proxyHandshaking(address)
        self.proxyHandshake(address)
    }

    private func proxyHandshake(_ address: SocketAddress) {
        guard let ssl = self.proxySSL else { return }
        cwsl_ERR_clear_error()
        errno = 0
        let result = cwsl_SSL_do_handshake(ssl)
        if result == 1 {
            if cwsl_SSL_session_reused(ssl) == 1 { self.context.proxyTLS?.sessions?.noteResumed() }
            self.logger.debug("TLS handshake with the proxy completed")
            self.beginTunnel(address)
            return
        }
        let code = errno
        let sslError = cwsl_SSL_get_error(ssl, result)
        if sslError == SSL_ERROR_WANT_READ || sslError == SSL_ERROR_WANT_WRITE { return }
        let error = tlsFailure(
            "TLS handshake with \(self.connectTarget) (\(address)) failed", ssl: ssl,
            verifying: self.context.proxyTLS?.verifiesPeer ?? true, sslError: sslError, systemErrno: code)
        self.logger.debug("TLS handshake with the proxy failed", metadata: ["ws.error": "\(error.message)"])
        self.fail(error)
    }

    private func beginTunnel(_ address: SocketAddress) {
        guard let proxy = self.proxy else { return }
        do {
            self.tunnel = try ProxyTunnel(
                proxy: proxy, host: self.endpoint.host, port: self.endpoint.port, address: self.socksTargetAddress)
        } catch {
            self.fail(error)
            return
        }
        self.logger.debug("asking the proxy for a tunnel")
        self.phase = .tunnelling(address)
        self.tunnelStep(address)
    }

    private func tunnelStep(_ address: SocketAddress) {
        guard var tunnel = self.tunnel else { return }
        let outcome = tunnel.step(TunnelIO(fd: self.fd, ssl: self.proxySSL))
        self.tunnel = tunnel
        switch outcome {
        case .waiting:
            return
        case .established:
            self.tunnel = nil
            self.logger.debug("proxy tunnel open")
            self.startEndpointTLS(address)
        case .failed(let error):
            self.logger.debug("proxy tunnel failed", metadata: ["ws.error": "\(error.message)"])
            self.fail(error)
        }
    }

    private func handshake(_ address: SocketAddress) {
        guard let ssl = self.ssl else { return }
        cwsl_ERR_clear_error()
        errno = 0
        let result = cwsl_SSL_do_handshake(ssl)
        if result == 1 {
            let resumed = cwsl_SSL_session_reused(ssl) == 1
            if resumed { self.context.tls?.sessions?.noteResumed() }
            if self.logger.logLevel <= .debug {
                let version = String(cString: cwsl_SSL_get_version(ssl))
                let cipher =
                    cwsl_SSL_get_current_cipher(ssl).map { String(cString: cwsl_SSL_CIPHER_get_name($0)) } ?? "?"
                self.logger.debug(
                    "TLS handshake completed",
                    metadata: ["ws.tls": "\(version) \(cipher)\(resumed ? " (session resumed)" : "")"])
            }
            self.progress?(.tlsEstablished)
            self.succeed()
            return
        }
        let code = errno
        let sslError = cwsl_SSL_get_error(ssl, result)
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
            cwsl_SSL_get0_alpn_selected(ssl, &selected, &length)
            if let selected, length > 0 {
                alpn = String(decoding: UnsafeBufferPointer(start: selected, count: Int(length)), as: UTF8.self)
            }
        }
        let transport: CIOTransport
        if let proxySSL = self.proxySSL {
            // ws: the stream is the proxy's TLS; wss: the endpoint's TLS runs inside it.
            let inner = self.ssl
            transport = CIOTransport(
                loop: self.loop, fd: self.fd, ssl: inner ?? proxySSL,
                tls: inner == nil ? self.context.proxyTLS : self.context.tls,
                alpn: alpn, endpoint: self.hostPort, logger: self.logger,
                closeGraceNanoseconds: self.context.closeGraceNanoseconds,
                closeFlushNanoseconds: self.context.closeFlushNanoseconds, tunnelSSL: inner == nil ? nil : proxySSL,
                tunnelTLS: self.context.proxyTLS)
            self.proxySSL = nil
        } else {
            transport = CIOTransport(
                loop: self.loop, fd: self.fd, ssl: self.ssl, tls: self.context.tls, alpn: alpn,
                endpoint: self.hostPort, logger: self.logger, closeGraceNanoseconds: self.context.closeGraceNanoseconds,
                closeFlushNanoseconds: self.context.closeFlushNanoseconds)
        }
        let registration = self.loop.reregister(fd: self.fd, data: transport.epollData)
        self.fd = -1
        self.ssl = nil
        self.loop.remove(self)
        guard registration == 0 else {
            let error = systemError("epoll_ctl", registration)
            transport.finish(error: nil)
            continuation.resume(
                throwing: WebSocketError(
                    .network, "cannot watch the socket for \(self.hostPort): \(error.text)", underlying: error))
            return
        }
        self.loop.add(transport)
        continuation.resume(returning: transport)
    }

    /// Fails the connect (idempotent) and releases the socket.
    func fail(_ error: WebSocketError) {
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
            cwsl_SSL_free(ssl)
            self.ssl = nil
        }
        if let ssl = self.proxySSL {
            cwsl_SSL_free(ssl)  // After the endpoint's SSL, whose BIO reads through it.
            self.proxySSL = nil
        }
        if self.fd >= 0 {
            self.loop.deregister(fd: self.fd)
            closeDescriptor(self.fd)
            self.fd = -1
        }
    }
}
