// One connect attempt, driven by libcurl's multi-socket API on the engine's loop thread (see ConnectMulti).
//
// A connect with TLS on its path (wss://, or an https:// proxy) gets its OWN multi handle. libcurl looks a
// CONNECT_ONLY connection up in the connection pool of the multi handle the easy handle is added to, on every
// curl_easy_send/curl_easy_recv, and removing the easy handle from that multi closes the connection (multi.c:
// "Better close the connection here, at once"). So the easy handle stays added for the connection's whole life, and
// if several such connections shared one multi, a curl_easy_send from a writer thread would walk a pool that the loop
// thread is changing in curl_multi_socket_action for another connect. With one multi per connection, the easy handle
// + multi pair is used by exactly one thread at a time: the loop while connecting, then whoever holds the transport's
// lock. TLS sessions and the trust store are shared through the engine's SharedTLS instead (a share handle and one
// X509_STORE, see SharedTLS.swift).
//
// A connect with no TLS on its path (`takesSocketOver`: ws:// directly or through an http:// or SOCKS proxy) is
// driven by its loop's shared multi handle instead: libcurl is used for it only while connecting, on the loop thread.
// Once connected, its easy handle is removed (libcurl closes the connection through the close-socket callback, which
// keeps the socket) and cleaned up, and the transport reads and writes the socket itself.
//
// Flow: curl_multi_add_handle → libcurl asks for sockets and timeouts (ConnectMulti) → CURLMSG_DONE: with CURLE_OK
// the connection (TCP, proxy CONNECT, TLS) is up, CURLINFO_ACTIVESOCKET names its socket, and a CurlTransport takes
// over; otherwise the CURLcode is mapped to a WebSocketError.
import CWSCurl
import CWSLinux
import Glibc
import Logging
import Synchronization
import WSCore
import WSPosix

/// Drives one `connect(to:options:)` on its loop and resumes the caller's continuation exactly once.
final class CurlConnector: @unchecked Sendable {  // Mutable state confined to the loop thread.
    // Thread rules: every mutable field is confined to `loop`'s thread (every entry point is a loop task, an epoll
    // event, a loop timer, or a libcurl callback made from inside one of those); the immutable ones are set in init.

    private enum Phase {
        case idle, connecting, done
    }

    let loop: CurlEventLoop
    private let endpoint: EngineEndpoint
    private let hostPort: String
    private let timeout: Duration
    private let logger: Logger
    private let configuration: CurlEngine.Configuration
    /// The proxy chosen by the session (`nil`: direct), unless the deprecated string settings override it.
    private let proxy: ProxyServer?
    /// The TLS settings for an `https://` ``proxy``.
    private let proxyTLS: WebSocketTLSConfiguration
    /// The engine's TLS session cache and trust store.
    private let shared: SharedTLS

    private var continuation: CheckedContinuation<CurlTransport, any Error>?
    private var phase = Phase.idle
    private var handles: CurlHandles?
    /// The multi handle driving this connect: the loop's shared one, or its own (see the file comment).
    private var driver: ConnectMulti?
    private var deadline: LoopTimer?
    private var cancelledEarly = false
    /// ``EngineConnectOptions/progress``: libcurl does the steps inside one call, so they are reported together.
    private let progress: (@Sendable (EngineConnectStep) -> Void)?

    init(
        loop: CurlEventLoop, endpoint: EngineEndpoint, options: EngineConnectOptions,
        configuration: CurlEngine.Configuration, shared: SharedTLS
    ) {
        self.loop = loop
        self.shared = shared
        self.endpoint = endpoint
        self.hostPort = hostPortText(host: endpoint.host, port: endpoint.port)
        self.timeout = options.connectTimeout
        var logger = options.logger
        logger.setDebugMetadata("ws.engine", "Curl")
        logger.setDebugMetadata("ws.endpoint", "\(endpoint)")
        self.configuration = configuration
        self.progress = options.progress
        self.proxy = options.proxy
        self.proxyTLS = options.proxyTLS
        if let proxy = options.proxy, configuration.legacyProxy == nil {
            logger.setDebugMetadata("ws.proxy", "\(proxy)")  // Never the credentials.
        }
        self.logger = logger
    }

    /// Whether the connection goes through a proxy named in the configuration or the options.
    private var proxied: Bool {
        if let legacy = self.configuration.legacyProxy { return !legacy.isEmpty }
        return self.proxy != nil
    }

    /// Whether the TLS connection with an `https://` proxy could come from the deprecated proxy string or the
    /// session's proxy: its TLS is configured apart from the endpoint's.
    private var proxyUsesTLS: Bool {
        if let legacy = self.configuration.legacyProxy { return !legacy.isEmpty }  // Any scheme: libcurl's rules.
        return self.proxy?.kind == .https
    }

    /// Whether no TLS is on the path, so that libcurl adds nothing to the byte stream once it has connected: a
    /// `ws://` endpoint, directly or through an `http://` (CONNECT) or SOCKS proxy, whose negotiation is over by
    /// then. The transport then takes the socket over and libcurl's handles are released at once. A deprecated
    /// proxy string counts only when its scheme says plainly that it is one of those.
    private var takesSocketOver: Bool {
        guard !self.endpoint.secure else { return false }
        if let legacy = self.configuration.legacyProxy {
            let lowercased = legacy.lowercased()
            return legacy.isEmpty
                || ["http://", "socks4://", "socks4a://", "socks5://", "socks5h://"].contains {
                    lowercased.hasPrefix($0)
                }
        }
        guard let proxy = self.proxy else { return true }
        return [ProxyServer.Kind.http, .socks5, .socks5h].contains(proxy.kind)
    }

    /// Whether libcurl may keep the TLS sessions of this connection and offer one (CURLOPT_SSL_SESSIONID_CACHE,
    /// which covers the endpoint's and an `https://` proxy's TLS alike). libcurl keys a session by host name, port,
    /// the TLS options that go into verification and the client certificate, but not by every setting (a key's
    /// password, or trust roots given through the engine's store, are not in it): a proxy whose TLS settings differ
    /// from the endpoint's keeps sessions off, so that a session of one is never offered under the other's
    /// settings, and `resumesSessions` off on either side wins.
    private var keepsSessions: Bool {
        guard self.configuration.tls.resumesSessions else { return false }
        if let legacy = self.configuration.legacyProxy {
            return legacy.isEmpty || !legacy.lowercased().hasPrefix("https:")
        }
        guard self.proxy?.kind == .https else { return true }
        return self.proxyTLS == self.configuration.tls
    }

    private var cancelledError: WebSocketError {
        WebSocketError(.cancelled, "connecting to \(self.hostPort) was cancelled")
    }

    // MARK: Entry points (loop thread)

    /// Starts connecting; `continuation` is resumed exactly once.
    func start(_ continuation: CheckedContinuation<CurlTransport, any Error>) {
        if self.cancelledEarly {
            self.phase = .done
            continuation.resume(throwing: self.cancelledError)
            return
        }
        if let stopReason = self.loop.stopReason {
            self.phase = .done
            continuation.resume(throwing: stopReason)
            return
        }
        self.continuation = continuation
        self.phase = .connecting
        self.loop.add(self)
        do throws(CurlOptionError) {
            try self.setUp()
        } catch {
            self.fail(error.error)
            return
        }
        // libcurl enforces CURLOPT_CONNECTTIMEOUT_MS; this deadline only guards against a stuck state machine.
        self.deadline = self.loop.schedule(afterNanoseconds: self.timeout.clampedNanoseconds &+ 1_000_000_000) {
            [self] in
            self.deadline = nil
            self.fail(
                WebSocketError(
                    .timedOut, "connecting to \(self.hostPort) timed out after \(self.timeout.secondsText) s"))
        }
        guard let handles = self.handles, let driver = self.driver else { return }
        let added = driver.add(self, easy: handles.easy)
        if added != CURLM_OK {
            self.fail(
                WebSocketError(
                    .network,
                    "cannot connect to \(self.hostPort): curl_multi_add_handle failed: "
                        + String(cString: curl_multi_strerror(added))))
        }
        // curl_multi_add_handle asked for a timeout of 0 through the timer callback: the transfer starts there.
    }

    /// The connecting task was cancelled.
    func cancel() {
        switch self.phase {
        case .done:
            return
        case .idle:
            self.cancelledEarly = true  // `start` has not run yet: it will throw.
        case .connecting:
            self.logger.debug("connect cancelled")
            self.fail(self.cancelledError)
        }
    }

    /// Creates the handles and sets every option.
    private func setUp() throws(CurlOptionError) {
        if let failure = LoadedCurl.initializationFailure {
            throw CurlOptionError(error: WebSocketError(.unsupported, failure))
        }
        guard (1...65535).contains(self.endpoint.port) else {
            throw CurlOptionError(
                error: WebSocketError(.network, "cannot connect to \(self.hostPort): invalid port"))
        }
        // The host goes into a URL: refuse anything that could change the URL's meaning.
        guard isSafeURLHost(self.endpoint.host) else {
            throw CurlOptionError(
                error: WebSocketError(.network, "cannot connect to \(self.hostPort): invalid host name"))
        }
        // A server name override is the URL's host (SNI and verification use it); CURLOPT_CONNECT_TO sends the
        // connection to the endpoint's host.
        let serverName = self.endpoint.secure ? self.configuration.tls.serverNameOverride : nil
        if let serverName, !isSafeURLHost(serverName) {
            throw CurlOptionError(
                error: WebSocketError(
                    .tlsFailure, "TLS configuration: invalid server name override '\(serverName)'"))
        }
        let outOfMemory = CurlOptionError(
            error: WebSocketError(.network, "cannot connect to \(self.hostPort): libcurl is out of memory"))
        let driver = self.takesSocketOver ? self.loop.sharedConnectMulti : ConnectMulti(loop: self.loop, shared: false)
        guard let driver else { throw outOfMemory }
        self.driver = driver
        guard let easy = curl_easy_init() else {
            if !driver.shared { driver.close() }
            throw outOfMemory
        }
        liveCurlEasyHandles.add(1, ordering: .relaxed)
        let errorBuffer = ErrorBuffer.allocate()
        var debugContext: UnsafeMutableRawPointer?
        if self.configuration.verbose {
            debugContext = Unmanaged.passRetained(CurlDebugContext(logger: self.logger)).toOpaque()
        }
        // From here on, the handles (and a private multi handle) are released with them by `fail`.
        self.handles = CurlHandles(
            easy: easy, multi: driver.shared ? nil : driver.multi, errorBuffer: errorBuffer, debugContext: debugContext)

        let options = EasyOptions(easy: easy)
        let configuration = self.configuration
        let scheme = self.endpoint.secure ? "https" : "http"
        let urlHostPort = serverName.map { hostPortText(host: $0, port: self.endpoint.port) } ?? self.hostPort
        try options.set(CURLOPT_URL, "\(scheme)://\(urlHostPort)/", "CURLOPT_URL")
        if serverName != nil {
            // Any host and port of the URL connect to the endpoint (the override then never leaves this process).
            var code = CURLE_OK
            let list = cws_curl_set_connect_to(easy, "::\(self.hostPort)", &code)
            guard let list else {
                throw CurlOptionError(
                    error: WebSocketError(
                        .unsupported,
                        "libcurl \(LoadedCurl.version) rejected CURLOPT_CONNECT_TO: "
                            + String(cString: curl_easy_strerror(code))))
            }
            self.handles?.connectTo = list
        }
        if driver.shared {
            // libcurl closes its sockets through this callback, so the one the transport takes over stays open.
            try options.check(driver.keepSockets(of: easy), "CURLOPT_CLOSESOCKETFUNCTION")
        }
        // Connect (resolve, TCP, proxy CONNECT, TLS) and stop: WSCore sends the upgrade request itself.
        try options.set(CURLOPT_CONNECT_ONLY, 1, "CURLOPT_CONNECT_ONLY")
        try options.set(CURLOPT_NOSIGNAL, 1, "CURLOPT_NOSIGNAL")
        try options.set(
            CURLOPT_ERRORBUFFER, pointer: UnsafeMutableRawPointer(errorBuffer.pointer), "CURLOPT_ERRORBUFFER")
        try options.set(CURLOPT_CONNECTTIMEOUT_MS, self.timeout.curlMilliseconds, "CURLOPT_CONNECTTIMEOUT_MS")
        try options.set(CURLOPT_TCP_NODELAY, 1, "CURLOPT_TCP_NODELAY")
        // An HTTP proxy must tunnel (CONNECT) for ws:// too, not forward a GET in absolute form.
        try options.set(CURLOPT_HTTPPROXYTUNNEL, 1, "CURLOPT_HTTPPROXYTUNNEL")
        // ALPN offers only http/1.1: a server that picked h2 would not understand our HTTP/1.1 upgrade.
        try options.set(CURLOPT_HTTP_VERSION, cws_curl_http_version_1_1(), "CURLOPT_HTTP_VERSION")
        // Not CURLOPT_FORBID_REUSE: libcurl would close the connection as soon as the CONNECT_ONLY transfer is
        // done. A fresh connection every time: no connect reuses another's (libcurl does not reuse a CONNECT_ONLY
        // connection either, and removes it from the shared multi at once).
        try options.set(CURLOPT_FRESH_CONNECT, 1, "CURLOPT_FRESH_CONNECT")
        if let legacy = configuration.legacyProxy {
            // The deprecated string settings: libcurl's own rules, as before.
            try options.set(CURLOPT_PROXY, legacy, "CURLOPT_PROXY")
            if let noProxy = configuration.legacyNoProxy {
                try options.set(CURLOPT_NOPROXY, noProxy, "CURLOPT_NOPROXY")
            }
        } else if let proxy = self.proxy {
            // The session chose this proxy (from the client's ProxyConfiguration and the environment): libcurl must
            // not apply its own environment rules on top. Credentials go in their own options, unencoded.
            try options.set(CURLOPT_PROXY, "\(proxy.kind.scheme)://\(proxy.hostPort)", "CURLOPT_PROXY")
            try options.set(CURLOPT_NOPROXY, "", "CURLOPT_NOPROXY")
            if proxy.hasCredentials {
                try options.set(CURLOPT_PROXYUSERNAME, proxy.username ?? "", "CURLOPT_PROXYUSERNAME")
                try options.set(CURLOPT_PROXYPASSWORD, proxy.password ?? "", "CURLOPT_PROXYPASSWORD")
            }
            if proxy.kind == .https {
                // The proxy's own TLS settings (its serverNameOverride does not apply: the proxy URL's host is verified).
                try setTLSOptions(self.proxyTLS, options, .proxy)
            }
        } else {
            try options.set(CURLOPT_PROXY, "", "CURLOPT_PROXY")  // Direct: ignore the environment.
        }

        // TLS with the endpoint (an https:// proxy has its own settings, set above). CURLOPT_SSL_CTX_FUNCTION runs for
        // a proxy's TLS too, so the engine's trust store is only used without a TLS proxy.
        var trustStore: SharedTrustStore?
        if self.endpoint.secure && !self.proxyUsesTLS {
            do throws(WebSocketError) {
                trustStore = try self.shared.trustStore()
            } catch {
                throw CurlOptionError(error: error)
            }
        }
        if let trustStore {
            let code = cws_curl_setopt_ssl_ctx_function(
                easy, useSharedTrustStore, UnsafeMutableRawPointer(trustStore.store))
            guard code == CURLE_OK else {
                throw CurlOptionError(
                    error: WebSocketError(
                        .tlsFailure,
                        "libcurl \(LoadedCurl.version) rejected CURLOPT_SSL_CTX_FUNCTION: "
                            + String(cString: curl_easy_strerror(code))))
            }
            self.handles?.trustStore = trustStore
        }
        try setTLSOptions(self.configuration.tls, options, engineTrustStore: trustStore != nil)
        // TLS sessions: kept in the engine's share handle, so that the next connection to the same server resumes.
        if let share = self.shared.share, cws_curl_setopt_share(easy, share.pointer) == CURLE_OK {
            self.handles?.share = share
        }
        try options.set(CURLOPT_SSL_SESSIONID_CACHE, self.keepsSessions ? 1 : 0, "CURLOPT_SSL_SESSIONID_CACHE")

        if let debugContext {
            try options.set(CURLOPT_DEBUGDATA, pointer: debugContext, "CURLOPT_DEBUGDATA")
            let code = cws_curl_setopt_debugfunction(easy) { _, type, data, size, userdata in
                guard let data, let userdata else { return 0 }
                Unmanaged<CurlDebugContext>.fromOpaque(userdata).takeUnretainedValue()
                    .log(type: type, bytes: UnsafeRawBufferPointer(start: data, count: size))
                return 0
            }
            if code == CURLE_OK { try options.set(CURLOPT_VERBOSE, 1, "CURLOPT_VERBOSE") }
        }

        self.logger.debug(
            "connecting with libcurl",
            metadata: [
                "ws.libcurl": "\(LoadedCurl.version) \(LoadedCurl.sslVersion)",
                "ws.proxy":
                    "\(configuration.legacyProxy.map { $0.isEmpty ? "none" : redactingCredentials($0) } ?? self.proxy.map { "\($0)" } ?? "none")",
            ])
    }

    // MARK: Driving libcurl (loop thread)

    /// The multi handle failed (ConnectMulti).
    func multiFailed(_ text: String) {
        self.fail(WebSocketError(.network, "connecting to \(self.hostPort) failed: curl_multi_socket_action: \(text)"))
    }

    /// A socket libcurl asked for could not be watched (ConnectMulti; called right after the callback).
    func cannotWatch(error: SystemError) {
        self.logger.debug("cannot watch a socket", metadata: ["ws.error": "\(error)"])
        self.fail(
            WebSocketError(.network, "cannot watch a socket for \(self.hostPort): \(error.text)", underlying: error))
    }

    /// libcurl's CURLMSG_DONE for this connect (ConnectMulti).
    func transferDone(_ result: CURLcode) {
        guard case .connecting = self.phase, let handles = self.handles else { return }
        if result == CURLE_OK {
            self.connected(handles)
        } else {
            let detail = handles.errorBuffer.text
            var connectCode = 0
            _ = cws_curl_getinfo_long(handles.easy, CURLINFO_HTTP_CONNECTCODE, &connectCode)
            self.logger.debug(
                "connect failed",
                metadata: [
                    "ws.curlcode": "\(result.rawValue)", "ws.error": "\(detail)", "ws.connectcode": "\(connectCode)",
                ])
            if connectCode >= 300 {
                // The HTTP proxy refused the CONNECT: the same error the CIO engine reports.
                let proxyText = self.proxy.map { "\($0)" } ?? "(from the configuration)"
                let message =
                    connectCode == 407 || connectCode == 401
                    ? "the proxy \(proxyText) requires authentication or rejected the credentials (\(connectCode))"
                    : "the proxy \(proxyText) refused to open a tunnel to \(self.hostPort) (\(connectCode))"
                self.fail(WebSocketError(.proxyFailure, message, status: connectCode))
                return
            }
            if let proxy = self.proxy, self.configuration.legacyProxy == nil,
                proxy.kind == .http || proxy.kind == .https,
                [CURLE_RECV_ERROR, CURLE_SEND_ERROR, CURLE_GOT_NOTHING, CURLE_WEIRD_SERVER_REPLY].contains(result)
            {
                // libcurl only connects here (the upgrade is the session's): an I/O failure before it is connected
                // is the proxy's, during its reply to the CONNECT (cut short, not HTTP, headers without end) —
                // the same error the CIO engine reports.
                let curlError = CurlError(result, detail: detail)
                self.fail(
                    WebSocketError(
                        .proxyFailure,
                        "the proxy \(proxy) did not open a tunnel to \(self.hostPort): \(curlError.summary)",
                        underlying: curlError))
                return
            }
            self.fail(
                connectError(
                    result, easy: handles.easy, detail: detail, hostPort: self.hostPort, timeout: self.timeout,
                    proxied: self.proxied))
        }
    }

    // MARK: Completion (loop thread)

    /// Stops the deadline; a private multi handle's callbacks are turned off and its sockets forgotten.
    private func detachFromCurl() {
        if let driver = self.driver, !driver.shared { driver.detach() }
        self.deadline?.cancel()
        self.deadline = nil
    }

    /// Removes the easy handle from the loop's shared multi handle (closing its connection's sockets except `fd`),
    /// then releases the handles.
    /// - Returns: `false` if libcurl kept the connection of `fd` (see ``ConnectMulti/remove(_:keeping:)``).
    @discardableResult
    private func release(_ handles: CurlHandles, keeping fd: Int32 = -1) -> Bool {
        var released = true
        if let driver = self.driver, driver.shared { released = driver.remove(handles.easy, keeping: fd) }
        self.driver = nil
        handles.cleanup()
        return released
    }

    private func connected(_ handles: CurlHandles) {
        guard let continuation = self.continuation else { return }
        var fd = cws_curl_socket_bad()
        let info = cws_curl_getinfo_socket(handles.easy, &fd)
        self.detachFromCurl()
        guard info == CURLE_OK, fd != cws_curl_socket_bad() else {
            self.fail(
                WebSocketError(
                    .network, "connecting to \(self.hostPort) failed: libcurl reported no active socket"))
            return
        }
        self.continuation = nil
        self.phase = .done
        self.handles = nil
        self.loop.remove(self)
        self.logger.debug("connected", metadata: ["ws.tls": "\(self.endpoint.secure)"])
        if let progress = self.progress {
            progress(.resolved)
            progress(.connected)
            if self.endpoint.secure { progress(.tlsEstablished) }
        }
        let transport: CurlTransport
        if handles.multi == nil {
            // No TLS on the path: the socket is a plain TCP stream from here on (libcurl read a proxy's CONNECT reply
            // byte by byte and SOCKS replies by their exact length, and the server has not been sent anything yet,
            // so no byte of it is inside libcurl). Keep the socket and release the handles now; no trace of their
            // cleanup is logged, as it closes nothing.
            _ = cws_curl_setopt_long(handles.easy, CURLOPT_VERBOSE, 0)
            var owned = fd
            if !self.release(handles, keeping: fd) {
                // libcurl kept its connection (not 8.x's behaviour) and will close this socket itself some time: the
                // transport gets a descriptor of its own for it.
                owned = fcntl(fd, F_DUPFD_CLOEXEC, 0)
                guard owned >= 0 else {
                    let error = systemError("fcntl", errno)
                    continuation.resume(
                        throwing: WebSocketError(
                            .network, "connecting to \(self.hostPort) failed: \(error.text)", underlying: error))
                    return
                }
            }
            self.logger.debug("took the socket over from libcurl; its handles are released")
            transport = CurlTransport(
                loop: self.loop, handles: nil, fd: owned, shortReadDrains: true, endpoint: self.hostPort,
                logger: self.logger, closeGraceNanoseconds: CurlEngine.closeGracePeriod.clampedNanoseconds,
                closeFlushNanoseconds: CurlEngine.closeFlushTimeout.clampedNanoseconds)
        } else {
            self.driver = nil  // The private multi handle lives on in `handles`.
            // Plain TCP with no proxy (known only from libcurl 8.7 on): libcurl's reads are recv(2)s, unbuffered.
            var usedProxy = 1
            let proxyKnown = cws_curl_getinfo_used_proxy(handles.easy, &usedProxy) == CURLE_OK
            transport = CurlTransport(
                loop: self.loop, handles: handles, fd: fd,
                shortReadDrains: !self.endpoint.secure && proxyKnown && usedProxy == 0,
                endpoint: self.hostPort, logger: self.logger,
                closeGraceNanoseconds: CurlEngine.closeGracePeriod.clampedNanoseconds,
                closeFlushNanoseconds: CurlEngine.closeFlushTimeout.clampedNanoseconds)
        }
        self.loop.add(transport)
        continuation.resume(returning: transport)
    }

    /// Fails the connect (idempotent) and releases the handles.
    func fail(_ error: WebSocketError) {
        if case .done = self.phase { return }
        self.phase = .done
        self.detachFromCurl()
        if let handles = self.handles {
            self.handles = nil
            self.release(handles)
        } else if let driver = self.driver, !driver.shared {
            driver.close()  // Set up failed before the easy handle existed.
        }
        self.driver = nil
        self.loop.remove(self)
        if let continuation = self.continuation {
            self.continuation = nil
            continuation.resume(throwing: error)
        }
    }
}

/// Whether `host` can go into a URL as it is: no character that could change the URL's meaning.
private func isSafeURLHost(_ host: String) -> Bool {
    let forbidden: Set<Character> = ["/", "?", "#", "@", "[", "]", " ", "\\"]
    return !host.isEmpty && !host.contains(where: { forbidden.contains($0) || $0.isNewline || $0.asciiValue == 0 })
}
