// One connect attempt, driven by libcurl's multi-socket API on the engine's loop thread.
//
// Each connect gets its OWN multi handle. libcurl looks a CONNECT_ONLY connection up in the connection pool of the
// multi handle the easy handle is added to, on every curl_easy_send/curl_easy_recv, and removing the easy handle
// from that multi closes the connection (multi.c: "Better close the connection here, at once"). So the easy handle
// stays added for the connection's whole life, and if several connections shared one multi, a curl_easy_send from
// a writer thread would walk a pool that the loop thread is changing in curl_multi_socket_action for another
// connect. With one multi per connection, the easy handle + multi pair is used by exactly one thread at a time: the
// loop while connecting, then whoever holds the transport's lock. The cost is a few KiB per connection and no DNS
// cache between connections; TLS sessions and the trust store are shared through the engine's SharedTLS instead
// (a share handle and one X509_STORE, see SharedTLS.swift), which a per-connection multi handle does not prevent.
//
// Flow: curl_multi_add_handle → libcurl asks for sockets (CURLMOPT_SOCKETFUNCTION) and timeouts
// (CURLMOPT_TIMERFUNCTION) → the loop calls curl_multi_socket_action on their events → CURLMSG_DONE: with
// CURLE_OK the connection (TCP, proxy CONNECT, TLS) is up, CURLINFO_ACTIVESOCKET names its socket, and a
// CurlTransport takes over; otherwise the CURLcode is mapped to a WebSocketError. With no TLS on the path
// (`takesSocketOver`), libcurl is kept from closing that socket (CURLOPT_CLOSESOCKETFUNCTION, CurlSocketKeeper), both
// handles are cleaned up at once, and the transport reads and writes the socket itself.
import CWSCurl
import CWSLinux
import Glibc
import Logging
import Synchronization
import WSCore
import WSPosix

/// One socket libcurl asked the loop to watch while connecting.
final class SocketWatch: LoopRegistrant, @unchecked Sendable {  // Loop thread only.
    unowned let connector: CurlConnector
    let fd: Int32
    /// The epoll events currently requested; 0 when not registered.
    var events: UInt32 = 0
    /// Cleared when libcurl no longer wants the socket; stale events are then ignored.
    var active = true

    init(connector: CurlConnector, fd: Int32) {
        self.connector = connector
        self.fd = fd
    }

    override func handleEvents(_ events: UInt32) {
        guard self.active else { return }
        self.connector.socketEvent(fd: self.fd, events: events)
    }
}

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
    private var watches: [Int32: SocketWatch] = [:]
    private var curlTimer: LoopTimer?
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
        guard let handles = self.handles else { return }
        let added = curl_multi_add_handle(handles.multi, handles.easy)
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
        let easy = curl_easy_init()
        let multi = curl_multi_init()
        guard let easy, let multi else {
            if let easy { curl_easy_cleanup(easy) }
            if let multi { _ = curl_multi_cleanup(multi) }
            throw CurlOptionError(
                error: WebSocketError(
                    .network, "cannot connect to \(self.hostPort): libcurl is out of memory"))
        }
        let errorBuffer = ErrorBuffer.allocate()
        var debugContext: UnsafeMutableRawPointer?
        if self.configuration.verbose {
            debugContext = Unmanaged.passRetained(CurlDebugContext(logger: self.logger)).toOpaque()
        }
        self.handles = CurlHandles(easy: easy, multi: multi, errorBuffer: errorBuffer, debugContext: debugContext)
        liveCurlHandlePairs.add(1, ordering: .relaxed)

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
        if self.takesSocketOver {
            // libcurl closes its sockets through this callback, so the one the transport takes over stays open.
            let keeper = CurlSocketKeeper()
            let code = cws_curl_setopt_closesocket(
                easy, closeSocketCallback, Unmanaged.passUnretained(keeper).toOpaque())
            guard code == CURLE_OK else {
                throw CurlOptionError(
                    error: WebSocketError(
                        .unsupported,
                        "libcurl \(LoadedCurl.version) rejected CURLOPT_CLOSESOCKETFUNCTION: "
                            + String(cString: curl_easy_strerror(code))))
            }
            self.handles?.socketKeeper = keeper
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
        // done. No other transfer ever uses this connection's private multi handle anyway.
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

        // The multi handle calls back into this connector, which the loop keeps alive while connecting.
        cws_curl_multi_set_userdata(multi, Unmanaged.passUnretained(self).toOpaque())
        _ = cws_curl_multi_set_socketfunction(multi) { _, fd, what, userdata, _ in
            guard let userdata else { return 0 }
            Unmanaged<CurlConnector>.fromOpaque(userdata).takeUnretainedValue().curlWantsSocket(fd: fd, what: what)
            return 0
        }
        _ = cws_curl_multi_set_timerfunction(multi) { _, timeoutMilliseconds, userdata in
            guard let userdata else { return 0 }
            Unmanaged<CurlConnector>.fromOpaque(userdata).takeUnretainedValue()
                .curlWantsTimer(milliseconds: timeoutMilliseconds)
            return 0
        }
        self.logger.debug(
            "connecting with libcurl",
            metadata: [
                "ws.libcurl": "\(LoadedCurl.version) \(LoadedCurl.sslVersion)",
                "ws.proxy":
                    "\(configuration.legacyProxy.map { $0.isEmpty ? "none" : redactingCredentials($0) } ?? self.proxy.map { "\($0)" } ?? "none")",
            ])
    }

    // MARK: libcurl callbacks (loop thread, from inside curl_multi_* calls)

    /// CURLMOPT_SOCKETFUNCTION: watch `fd` for `what` (CURL_POLL_IN/OUT/INOUT), or stop (CURL_POLL_REMOVE).
    fileprivate func curlWantsSocket(fd: Int32, what: Int32) {
        var events: UInt32 = 0
        switch what {
        case CURL_POLL_IN: events = EPOLLIN.rawValue
        case CURL_POLL_OUT: events = EPOLLOUT.rawValue
        case CURL_POLL_INOUT: events = EPOLLIN.rawValue | EPOLLOUT.rawValue
        default: events = 0
        }
        if events == 0 {
            self.unwatch(fd)
            return
        }
        let watch: SocketWatch
        if let existing = self.watches[fd] {
            watch = existing
        } else {
            watch = SocketWatch(connector: self, fd: fd)
            self.watches[fd] = watch
        }
        guard watch.events != events else { return }
        let result = self.loop.setInterest(fd: fd, events: events, registered: watch.events != 0, data: watch.epollData)
        if result == 0 {
            watch.events = events
        } else {
            let error = systemError("epoll_ctl", result)
            self.logger.debug("cannot watch a socket", metadata: ["ws.error": "\(error)"])
            // Failing from inside a libcurl callback is not allowed: fail right after this callback.
            self.loop.execute { [self] in
                self.fail(
                    WebSocketError(
                        .network, "cannot watch a socket for \(self.hostPort): \(error.text)", underlying: error))
            }
        }
    }

    /// CURLMOPT_TIMERFUNCTION: call curl_multi_socket_action(CURL_SOCKET_TIMEOUT) after `milliseconds`
    /// (-1: no timeout). Never calls libcurl from inside the callback.
    fileprivate func curlWantsTimer(milliseconds: Int) {
        self.curlTimer?.cancel()
        self.curlTimer = nil
        guard milliseconds >= 0 else { return }
        self.curlTimer = self.loop.schedule(afterNanoseconds: UInt64(milliseconds) &* 1_000_000) { [self] in
            self.curlTimer = nil
            self.drive(fd: cws_curl_socket_timeout(), mask: 0)
        }
    }

    private func unwatch(_ fd: Int32) {
        guard let watch = self.watches.removeValue(forKey: fd) else { return }
        watch.active = false
        _ = self.loop.setInterest(fd: fd, events: 0, registered: watch.events != 0, data: watch.epollData)
        watch.events = 0
        self.loop.retire(watch)
    }

    // MARK: Driving libcurl (loop thread)

    /// An epoll event on a watched socket.
    fileprivate func socketEvent(fd: Int32, events: UInt32) {
        var mask: Int32 = 0
        if events & (EPOLLIN.rawValue | EPOLLHUP.rawValue | EPOLLRDHUP.rawValue) != 0 { mask |= CURL_CSELECT_IN }
        if events & EPOLLOUT.rawValue != 0 { mask |= CURL_CSELECT_OUT }
        if events & EPOLLERR.rawValue != 0 { mask |= CURL_CSELECT_ERR }
        self.drive(fd: fd, mask: mask)
    }

    private func drive(fd: Int32, mask: Int32) {
        guard case .connecting = self.phase, let handles = self.handles else { return }
        var running: Int32 = 0
        let code = curl_multi_socket_action(handles.multi, fd, mask, &running)
        guard code == CURLM_OK else {
            self.fail(
                WebSocketError(
                    .network,
                    "connecting to \(self.hostPort) failed: curl_multi_socket_action: "
                        + String(cString: curl_multi_strerror(code))))
            return
        }
        var easy: UnsafeMutableRawPointer?
        var result = CURLE_OK
        guard cws_curl_multi_next_done(handles.multi, &easy, &result) != 0 else { return }
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

    /// Turns libcurl's callbacks off and forgets every watched socket.
    private func detachFromCurl() {
        if let handles = self.handles {
            _ = cws_curl_multi_set_socketfunction(handles.multi, nil)
            _ = cws_curl_multi_set_timerfunction(handles.multi, nil)
        }
        for fd in Array(self.watches.keys) { self.unwatch(fd) }
        self.curlTimer?.cancel()
        self.curlTimer = nil
        self.deadline?.cancel()
        self.deadline = nil
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
        if let keeper = handles.socketKeeper {
            // No TLS on the path: the socket is a plain TCP stream from here on (libcurl read a proxy's CONNECT reply
            // byte by byte and SOCKS replies by their exact length, and the server has not been sent anything yet,
            // so no byte of it is inside libcurl). Keep the socket and release the handles now; no trace of their
            // cleanup is logged, as it closes nothing.
            keeper.kept = fd
            _ = cws_curl_setopt_long(handles.easy, CURLOPT_VERBOSE, 0)
            handles.cleanup()
            self.logger.debug("took the socket over from libcurl; its handles are released")
            transport = CurlTransport(
                loop: self.loop, handles: nil, fd: fd, shortReadDrains: true, endpoint: self.hostPort,
                logger: self.logger, closeGraceNanoseconds: CurlEngine.closeGracePeriod.clampedNanoseconds,
                closeFlushNanoseconds: CurlEngine.closeFlushTimeout.clampedNanoseconds)
        } else {
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
            handles.cleanup()
        }
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
