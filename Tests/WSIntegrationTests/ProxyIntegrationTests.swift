// Sessions through real proxies on loopback, started by the tests (tinyproxy, tinyproxy behind stunnel4 for an
// https:// proxy, dante's danted for SOCKS5) and through scripted hostile proxies, on both engines.
import EngineTestSupport
import Foundation
import Glibc
import Logging
import SpawnSupport
import Synchronization
import Testing
import WSCore
import WSEngineCIO
import WSEngineCurl
import WSTesting

/// A proxy daemon in the foreground on a free loopback port, configured by a file; killed on deinit (also used by
/// HTTP2Tests).
final class ProxyDaemon: Sendable {
    let port: Int
    let directory: String
    private let process: ChildProcess

    init(
        _ executable: String, name: String, config: (Int, String) -> String, arguments: (String, Int) -> [String]
    ) throws {
        let directory = fixturesDirectory + "/\(name)-\(UUID().uuidString.prefix(8))"
        try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
        let port = freeLoopbackPort()
        self.port = port
        self.directory = directory
        try config(port, directory).write(toFile: directory + "/proxy.conf", atomically: true, encoding: .utf8)
        let null = open("/dev/null", O_RDONLY | O_CLOEXEC)
        let output = open(directory + "/stderr.log", O_WRONLY | O_CREAT | O_CLOEXEC, 0o644)
        defer {
            close(null)
            close(output)
        }
        self.process = try ChildProcess(
            executable, arguments(directory + "/proxy.conf", port), stdin: null, stdout: output, stderr: output)
        for _ in 0..<200 {
            if canConnect(toLoopbackPort: port) { return }
            usleep(25_000)
        }
        self.process.terminateInBackground(signal: SIGKILL)
        throw PeerError(description: "\(name) did not start on 127.0.0.1:\(port): \(self.log)")
    }

    /// Every log file in its directory, concatenated.
    var log: String {
        let files = (try? FileManager.default.contentsOfDirectory(atPath: self.directory)) ?? []
        return files.filter { $0.hasSuffix(".log") }.map {
            (try? String(contentsOfFile: self.directory + "/" + $0, encoding: .utf8)) ?? ""
        }.joined()
    }

    deinit { self.process.terminateInBackground(signal: SIGKILL) }

    static func tinyproxy(connectPorts: [Int], basicAuth: (String, String)? = nil) async throws -> ProxyDaemon {
        try await onDedicatedThread {
            try ProxyDaemon("/usr/bin/tinyproxy", name: "tinyproxy") { port, directory in
                var config = """
                    Port \(port)
                    Listen 127.0.0.1
                    Allow 127.0.0.1
                    Timeout 30
                    LogFile "\(directory)/tinyproxy.log"
                    LogLevel Info

                    """
                for connectPort in connectPorts { config += "ConnectPort \(connectPort)\n" }
                if let (user, password) = basicAuth { config += "BasicAuth \(user) \(password)\n" }
                return config
            } arguments: { path, _ in
                ["-d", "-c", path]
            }
        }
    }

    /// stunnel4 terminating TLS (the test PKI's localhost certificate) in front of `targetPort`.
    static func stunnel(targetPort: Int, certificate: (String, String)) async throws -> ProxyDaemon {
        try await onDedicatedThread {
            try ProxyDaemon("/usr/bin/stunnel4", name: "stunnel") { port, _ in
                """
                foreground = yes
                pid =
                [proxy]
                accept = 127.0.0.1:\(port)
                connect = 127.0.0.1:\(targetPort)
                cert = \(certificate.0)
                key = \(certificate.1)

                """
            } arguments: { path, _ in
                [path]
            }
        }
    }

    /// dante's danted; `username`: RFC 1929 against the system's users (scripts/setup.sh creates `wsproxy`).
    static func danted(username: Bool) async throws -> ProxyDaemon {
        try await onDedicatedThread {
            try ProxyDaemon("/usr/sbin/danted", name: "danted") { port, directory in
                """
                logoutput: \(directory)/danted.log
                internal: 127.0.0.1 port = \(port)
                external: 127.0.0.1
                socksmethod: \(username ? "username" : "none")
                clientmethod: none
                user.privileged: root
                user.unprivileged: nobody
                client pass { from: 127.0.0.0/8 to: 0.0.0.0/0 }
                socks pass { from: 127.0.0.0/8 to: 0.0.0.0/0 command: connect }

                """
            } arguments: { path, _ in
                ["-f", path, "-N", "1"]
            }
        }
    }
}

/// A scripted hostile proxy (python3): reads the CONNECT and answers as `mode` says.
private func hostileProxy(_ mode: String) async throws -> ProxyDaemon {
    let script = """
        import socket, sys, time
        mode = sys.argv[2]
        s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        s.bind(("127.0.0.1", int(sys.argv[1]))); s.listen(16)
        while True:
            c, _ = s.accept()
            if mode != "probe":
                data = b""
                while b"\\r\\n\\r\\n" not in data:
                    chunk = c.recv(4096)
                    if not chunk: break
                    data += chunk
            if mode == "midreply": c.sendall(b"HTTP/1.1 200 Conn"); c.close()
            elif mode == "garbage": c.sendall(b"SSH-2.0-OpenSSH_9.2\\r\\n\\r\\n")
            elif mode == "endless":
                try:
                    c.sendall(b"HTTP/1.1 200 OK\\r\\n")
                    while True: c.sendall(b"X-Filler: " + b"a" * 100 + b"\\r\\n")
                except OSError: pass
            elif mode == "after200":
                c.sendall(b"HTTP/1.1 200 OK\\r\\n\\r\\nHTTP/1.1 403 Forbidden\\r\\nContent-Length: 4\\r\\n\\r\\nnope")
            elif mode == "silent": held = c  # keeps the connection open and never answers
        """
    return try await onDedicatedThread {
        try ProxyDaemon("/usr/bin/python3", name: "hostile-\(mode)") { _, _ in
            script
        } arguments: { path, port in
            [path, "\(port)", mode]
        }
    }
}

@Suite("Sessions through proxies", .serialized, .timeLimit(.minutes(2)))
struct ProxyIntegrationTests {
    /// A client on `engine` through `proxy`, logging everything at trace into `store`.
    private func client(
        _ engine: TestEngine, proxy: ProxyConfiguration, trustedCA: String? = nil, store: CapturingLogHandler.Store,
        timeout: Duration = .seconds(5)
    ) -> WebSocketClient {
        WebSocketClient(engine: engine.make(trustedCA: trustedCA)) { config in
            var logger = Logger(label: "ws.proxy-test") { _ in CapturingLogHandler(store: store) }
            logger.logLevel = .trace
            config.logger = logger
            config.proxy = proxy
            config.connectTimeout = timeout
            config.openTimeout = timeout
        }
    }

    private func echo(_ client: WebSocketClient, _ url: String) async throws {
        try await withClient(client) { client in
            try await client.webSocket(url) { session in
                try await session.send("through the proxy")
                #expect(try await nextMessage(session).readText() == "through the proxy")
            }
        }
    }

    private func connectError(_ client: WebSocketClient, _ url: String) async -> WebSocketError? {
        do {
            try await self.echo(client, url)
            return nil
        } catch let error as WebSocketError {
            return error
        } catch {
            Issue.record("unexpected error \(error)")
            return nil
        }
    }

    @Test(
        "tinyproxy with Basic authentication: ws and wss, the CONNECT lines, no password anywhere",
        arguments: TestEngine.allCases)
    func tinyproxyAuth(engine: TestEngine) async throws {
        let pki = try await Certificates.load()
        let plain = try WebSocketTestServer.start(.init(), handler: .echo)
        defer { plain.stop() }
        var tlsConfiguration = WebSocketTestServer.Configuration()
        tlsConfiguration.tlsCertificateFile = pki.server.0
        tlsConfiguration.tlsPrivateKeyFile = pki.server.1
        let tls = try WebSocketTestServer.start(tlsConfiguration, handler: .echo)
        defer { tls.stop() }
        let password = "pr0xy-s3cret"
        let proxy = try await ProxyDaemon.tinyproxy(
            connectPorts: [plain.port, tls.port], basicAuth: ("alice", password))
        let store = CapturingLogHandler.Store()
        let configuration = try ProxyConfiguration(url: "http://alice:\(password)@127.0.0.1:\(proxy.port)")
        try await self.echo(self.client(engine, proxy: configuration, store: store), "ws://127.0.0.1:\(plain.port)/")
        try await self.echo(
            self.client(engine, proxy: configuration, trustedCA: pki.caFile, store: store),
            "wss://localhost:\(tls.port)/")
        #expect(proxy.log.contains("CONNECT 127.0.0.1:\(plain.port)"), "\(proxy.log)")
        #expect(proxy.log.contains("CONNECT localhost:\(tls.port)"), "\(proxy.log)")

        let wrong = try ProxyConfiguration(url: "http://alice:wr0ng-\(password)@127.0.0.1:\(proxy.port)")
        let error = await self.connectError(
            self.client(engine, proxy: wrong, store: store), "ws://127.0.0.1:\(plain.port)/")
        #expect(error?.code == .proxyFailure, "\(String(describing: error))")
        #expect(error?.status == 401 || error?.status == 407)
        #expect(!(error?.description.contains(password) ?? true))
        let lines = store.all
        #expect(!lines.isEmpty)
        #expect(!lines.contains { $0.contains(password) }, "a log line has the password")
    }

    @Test("tinyproxy: a refused upstream gives the proxy's status", arguments: TestEngine.allCases)
    func refusedUpstream(engine: TestEngine) async throws {
        let closedPort = freeLoopbackPort()
        let proxy = try await ProxyDaemon.tinyproxy(connectPorts: [closedPort])
        let error = await self.connectError(
            self.client(engine, proxy: try ProxyConfiguration(url: "http://127.0.0.1:\(proxy.port)"), store: .init()),
            "ws://127.0.0.1:\(closedPort)/")
        #expect(error?.code == .proxyFailure, "\(String(describing: error))")
        #expect((error?.status ?? 0) >= 500, "\(String(describing: error))")
    }

    @Test(
        "an https:// proxy (tinyproxy behind stunnel4): ws and wss inside its TLS; an untrusted proxy is refused",
        arguments: TestEngine.allCases)
    func httpsProxy(engine: TestEngine) async throws {
        guard FileManager.default.isExecutableFile(atPath: "/usr/bin/stunnel4") else { return }
        let pki = try await Certificates.load()
        let plain = try WebSocketTestServer.start(.init(), handler: .echo)
        defer { plain.stop() }
        var tlsConfiguration = WebSocketTestServer.Configuration()
        tlsConfiguration.tlsCertificateFile = pki.server.0
        tlsConfiguration.tlsPrivateKeyFile = pki.server.1
        let tls = try WebSocketTestServer.start(tlsConfiguration, handler: .echo)
        defer { tls.stop() }
        let tiny = try await ProxyDaemon.tinyproxy(connectPorts: [plain.port, tls.port])
        let stunnel = try await ProxyDaemon.stunnel(targetPort: tiny.port, certificate: pki.server)
        let trusted = try ProxyConfiguration(
            url: "https://localhost:\(stunnel.port)", tls: WebSocketTLSConfiguration(trustRoots: .file(pki.caFile)))
        try await self.echo(self.client(engine, proxy: trusted, store: .init()), "ws://127.0.0.1:\(plain.port)/")
        try await self.echo(
            self.client(engine, proxy: trusted, trustedCA: pki.caFile, store: .init()), "wss://localhost:\(tls.port)/")
        #expect(tiny.log.contains("CONNECT localhost:\(tls.port)"), "\(tiny.log)")
        let untrusted = try ProxyConfiguration(url: "https://localhost:\(stunnel.port)")
        let error = await self.connectError(
            self.client(engine, proxy: untrusted, store: .init()), "ws://127.0.0.1:\(plain.port)/")
        #expect(error?.code == .tlsFailure, "\(String(describing: error))")
    }

    @Test(
        "an https:// proxy trusted through PEM in memory (ProxyConfiguration.tls); another root's PEM is refused",
        arguments: TestEngine.allCases)
    func httpsProxyPEM(engine: TestEngine) async throws {
        guard FileManager.default.isExecutableFile(atPath: "/usr/bin/stunnel4") else { return }
        let pki = try await Certificates.load()
        let plain = try WebSocketTestServer.start(.init(), handler: .echo)
        defer { plain.stop() }
        let tiny = try await ProxyDaemon.tinyproxy(connectPorts: [plain.port])
        let stunnel = try await ProxyDaemon.stunnel(targetPort: tiny.port, certificate: pki.server)
        let caPEM = try String(contentsOfFile: pki.caFile, encoding: .utf8)
        let trusted = try ProxyConfiguration(
            url: "https://localhost:\(stunnel.port)", tls: WebSocketTLSConfiguration(trustRoots: .pem(caPEM)))
        try await self.echo(self.client(engine, proxy: trusted, store: .init()), "ws://127.0.0.1:\(plain.port)/")
        #expect(tiny.log.contains("CONNECT 127.0.0.1:\(plain.port)"), "\(tiny.log)")
        // Only another root, in memory: the proxy's chain leads nowhere trusted.
        let otherPEM = try String(contentsOfFile: pki.untrusted.0, encoding: .utf8)
        let untrusted = try ProxyConfiguration(
            url: "https://localhost:\(stunnel.port)", tls: WebSocketTLSConfiguration(trustRoots: .pem(otherPEM)))
        let error = await self.connectError(
            self.client(engine, proxy: untrusted, store: .init()), "ws://127.0.0.1:\(plain.port)/")
        #expect(error?.code == .tlsFailure, "\(String(describing: error))")
    }

    @Test(
        "SOCKS5 (danted): local and remote resolution, username/password, wrong password, unreachable target",
        arguments: TestEngine.allCases)
    func socks(engine: TestEngine) async throws {
        guard FileManager.default.isExecutableFile(atPath: "/usr/sbin/danted") else { return }
        let server = try WebSocketTestServer.start(.init(), handler: .echo)
        defer { server.stop() }
        let open = try await ProxyDaemon.danted(username: false)
        let store = CapturingLogHandler.Store()
        try await self.echo(
            self.client(engine, proxy: try ProxyConfiguration(url: "socks5://127.0.0.1:\(open.port)"), store: store),
            "ws://127.0.0.1:\(server.port)/")
        try await self.echo(
            self.client(engine, proxy: try ProxyConfiguration(url: "socks5h://127.0.0.1:\(open.port)"), store: store),
            "ws://127.0.0.1:\(server.port)/")
        let unreachable = await self.connectError(
            self.client(engine, proxy: try ProxyConfiguration(url: "socks5h://127.0.0.1:\(open.port)"), store: store),
            "ws://127.0.0.1:\(freeLoopbackPort())/")
        #expect(unreachable?.code == .proxyFailure, "\(String(describing: unreachable))")

        guard getpwnam("wsproxy") != nil else { return }  // The system user scripts/setup.sh creates.
        let authenticated = try await ProxyDaemon.danted(username: true)
        let password = "ws-proxy-test-pw"
        try await self.echo(
            self.client(
                engine,
                proxy: try ProxyConfiguration(url: "socks5h://wsproxy:\(password)@127.0.0.1:\(authenticated.port)"),
                store: store),
            "ws://127.0.0.1:\(server.port)/")
        let wrong = await self.connectError(
            self.client(
                engine,
                proxy: try ProxyConfiguration(url: "socks5h://wsproxy:x\(password)@127.0.0.1:\(authenticated.port)"),
                store: store),
            "ws://127.0.0.1:\(server.port)/")
        #expect(wrong?.code == .proxyFailure, "\(String(describing: wrong))")
        #expect(!(wrong?.description.contains(password) ?? true))
        #expect(!store.all.contains { $0.contains(password) })
    }

    @Test(
        "hostile proxies: cut short, garbage, endless header: a clear error, never a hang",
        arguments: TestEngine.allCases)
    func hostile(engine: TestEngine) async throws {
        for mode in ["midreply", "garbage", "endless"] {
            let proxy = try await hostileProxy(mode)
            let started = ContinuousClock.now
            let error = await self.connectError(
                self.client(
                    engine, proxy: try ProxyConfiguration(url: "http://127.0.0.1:\(proxy.port)"), store: .init()),
                "ws://127.0.0.1:9/")
            #expect(error != nil, "\(mode)")
            // Ended by the proxy's reply or by the connect timeout (5 s), never a hang.
            #expect(ContinuousClock.now - started < .seconds(8), "\(mode): \(String(describing: error))")
            #expect(error?.code == .proxyFailure, "\(mode): \(String(describing: error))")
        }
    }

    @Test("bytes a proxy sends after its 200 are the start of the server's stream, not lost (CIO)")
    func bytesAfter200() async throws {
        let proxy = try await hostileProxy("after200")
        let error = await self.connectError(
            self.client(.cio, proxy: try ProxyConfiguration(url: "http://127.0.0.1:\(proxy.port)"), store: .init()),
            "ws://127.0.0.1:9/")
        // The bytes after the proxy's 200 are read as the server's answer to the upgrade: a 403 with its body.
        #expect(error?.code == .upgradeRejected && error?.status == 403, "\(String(describing: error))")
        #expect(error?.bodyText == "nope")
    }

    @Test(
        "the environment, for real (wsc in a child process): http_proxy is used, no_proxy and --proxy '' bypass it",
        arguments: TestEngine.allCases)
    func environment(engine: TestEngine) async throws {
        let server = try WebSocketTestServer.start(.init(), handler: .echo)
        defer { server.stop() }
        let proxy = try await ProxyDaemon.tinyproxy(connectPorts: [server.port])
        let url = "ws://127.0.0.1:\(server.port)/"
        let engineArguments = ["--engine", engine.rawValue]
        let connects = { proxy.log.components(separatedBy: "CONNECT 127.0.0.1:\(server.port)").count - 1 }

        let viaEnvironment = try await WSCTool.run(
            ["connect"] + engineArguments + ["--once", "-q", url, "hi"],
            environment: ["http_proxy": "http://127.0.0.1:\(proxy.port)"])
        #expect(viaEnvironment.status == 0 && viaEnvironment.stdout.contains("hi"), "\(viaEnvironment)")
        #expect(connects() == 1, "\(proxy.log)")

        let bypassed = try await WSCTool.run(
            ["connect"] + engineArguments + ["--once", "-q", url, "hi"],
            environment: ["http_proxy": "http://127.0.0.1:\(proxy.port)", "NO_PROXY": "localhost,127.0.0.0/8"])
        #expect(bypassed.status == 0, "\(bypassed)")
        let explicitNone = try await WSCTool.run(
            ["connect"] + engineArguments + ["--proxy", "", "--once", "-q", url, "hi"],
            environment: ["http_proxy": "http://127.0.0.1:\(proxy.port)"])
        #expect(explicitNone.status == 0, "\(explicitNone)")
        let upperCase = try await WSCTool.run(
            ["connect"] + engineArguments + ["--once", "-q", url, "hi"],
            environment: ["HTTP_PROXY": "http://127.0.0.1:\(proxy.port)"])  // curl's rule: lower case only
        #expect(upperCase.status == 0, "\(upperCase)")
        #expect(connects() == 1, "only the first run went through the proxy: \(proxy.log)")
    }

    @Test(
        "a proxy that never answers: the connect timeout covers the tunnel and says so", arguments: TestEngine.allCases)
    func silentProxy(engine: TestEngine) async throws {
        let proxy = try await hostileProxy("silent")
        let started = ContinuousClock.now
        let error = await self.connectError(
            self.client(
                engine, proxy: try ProxyConfiguration(url: "http://127.0.0.1:\(proxy.port)"), store: .init(),
                timeout: .milliseconds(800)),
            "ws://127.0.0.1:9/")
        #expect(error?.code == .timedOut, "\(String(describing: error))")
        #expect(ContinuousClock.now - started < .seconds(3))
        if engine == .cio {
            #expect(error?.message.contains("waiting for the proxy") == true, "\(String(describing: error))")
        }
    }

    @Test(
        "a reconnecting session through tinyproxy: the proxy's 5xx while the server is down is retried",
        arguments: TestEngine.allCases)
    func reconnectingThroughProxy(engine: TestEngine) async throws {
        let peer = try await PythonPeer.start()
        let port = peer.port
        let proxy = try await ProxyDaemon.tinyproxy(connectPorts: [port])
        var configuration = ReconnectingWebSocketSession.Configuration()
        configuration.policy.initialDelay = .milliseconds(100)
        configuration.policy.maximumDelay = .milliseconds(400)
        let client = self.client(
            engine, proxy: try ProxyConfiguration(url: "http://127.0.0.1:\(proxy.port)"), store: .init())
        try await withClient(client) { client in
            let session = try client.reconnectingWebSocketSession(peer.url(path: "/echo"), configuration: configuration)
            var restarted: PythonPeer?
            defer { restarted?.stop() }
            var opens = 0
            var proxyRefusals = 0
            for await state in session.states {
                switch state {
                case .open:
                    opens += 1
                    try await session.send("through the proxy \(opens)")
                    #expect(try await session.receiveMessage() == .text("through the proxy \(opens)"))
                    if opens == 1 { peer.stop() } else { await session.close() }
                case .reconnecting(_, _, let cause):
                    guard let error = cause.error as? WebSocketError, error.code == .proxyFailure else { continue }
                    #expect((error.status ?? 0) >= 500, "\(error)")
                    proxyRefusals += 1
                    if restarted == nil { restarted = try await PythonPeer.start(port: port) }
                default:
                    continue
                }
            }
            #expect(opens == 2, "\(session.state)")
            #expect(proxyRefusals >= 1)
            #expect(proxy.log.components(separatedBy: "CONNECT 127.0.0.1:\(port)").count - 1 >= 3, "\(proxy.log)")
        }
    }
}
