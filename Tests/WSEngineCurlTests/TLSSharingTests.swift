// What the connections of one Curl engine share: TLS sessions (resumed against a real TLS peer that says, per
// connection, whether it resumed) and the trust store (parsed once, with libcurl's verification flags).
import EngineTestSupport
import Foundation
import Glibc
import SpawnSupport
import Testing
import WSCore
import WSEngineCurl

/// Tests/Fixtures/tls_resumption_server.py: TLS on several ports of 127.0.0.1 with one SSLContext (a ticket of one
/// port would resume on another), telling each client `resumed` or `full` right after its handshake.
private final class ResumptionPeer: Sendable {
    let ports: [Int]
    private let child: ChildProcess
    private let stdinWrite: Int32

    private init(certificate: String, key: String) throws {
        let script = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
            .appendingPathComponent("Fixtures/tls_resumption_server.py").path
        guard let input = closeOnExecPipe(), let output = closeOnExecPipe() else {
            throw PeerError(description: "pipe2() failed")
        }
        defer {
            close(input.read)
            close(output.read)
        }
        let child = try ChildProcess(
            "/usr/bin/env", ["python3", script, "--cert", certificate, "--key", key], stdin: input.read,
            stdout: output.write, stderr: output.write)
        close(output.write)
        var line: [UInt8] = []
        var byte: UInt8 = 0
        while read(output.read, &byte, 1) == 1 && byte != UInt8(ascii: "\n") { line.append(byte) }
        let words = String(decoding: line, as: UTF8.self).split(separator: " ")
        guard words.first == "PORTS", words.count == 3, let first = Int(words[1]), let second = Int(words[2]) else {
            close(input.write)
            child.terminateInBackground()
            throw PeerError(
                description: "tls_resumption_server.py did not start: \(String(decoding: line, as: UTF8.self))")
        }
        self.ports = [first, second]
        self.child = child
        self.stdinWrite = input.write
    }

    /// Starts the peer with `pki`'s server certificate (localhost, 127.0.0.1).
    static func start(_ pki: Certificates) async throws -> ResumptionPeer {
        try await onDedicatedThread { try ResumptionPeer(certificate: pki.server.0, key: pki.server.1) }
    }

    deinit {
        close(self.stdinWrite)
        self.child.terminateInBackground()
    }
}

/// Connects to `host`:`port` over TLS, reads the peer's line (`resumed` or `full`) and the echo of one byte, and
/// closes.
private func handshake(
    _ engine: CurlEngine, port: Int, host: String = "127.0.0.1", proxy: ProxyServer? = nil,
    proxyTLS: WebSocketTLSConfiguration = .init()
) async throws -> String {
    let recorder = Recorder()
    var connectOptions = options()
    connectOptions.proxy = proxy
    connectOptions.proxyTLS = proxyTLS
    let transport = try await engine.connect(
        to: EngineEndpoint(host: host, port: port, secure: true), options: connectOptions)
    transport.start(handler: recorder)
    // One byte out and its echo back after the peer's line: the session carries data both ways, not only a handshake.
    transport.write(Array("?".utf8))
    let gotLine = await recorder.wait(timeout: .seconds(20)) { $0.received.last == UInt8(ascii: "?") }
    transport.close()
    _ = await recorder.wait { $0.closes == 1 }
    #expect(gotLine, "the peer said nothing")
    return String(decoding: recorder.received.prefix { $0 != UInt8(ascii: "\n") }, as: UTF8.self)
}

/// stunnel4 terminating TLS (the test PKI's localhost certificate) on a free loopback port in front of `targetPort`:
/// with tinyproxy behind it, an `https://` proxy.
final class Stunnel: Sendable {
    let port: Int
    private let process: ChildProcess

    private init(targetPort: Int, certificate: (String, String)) throws {
        let directory = fixturesDirectory + "/stunnel-\(UUID().uuidString.prefix(8))"
        try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
        let port = freeLoopbackPort()
        let config = """
            foreground = yes
            pid =
            [proxy]
            accept = 127.0.0.1:\(port)
            connect = 127.0.0.1:\(targetPort)
            cert = \(certificate.0)
            key = \(certificate.1)

            """
        try config.write(toFile: directory + "/stunnel.conf", atomically: true, encoding: .utf8)
        let null = open("/dev/null", O_RDWR | O_CLOEXEC)
        defer { close(null) }
        self.process = try ChildProcess(
            "/usr/bin/stunnel4", [directory + "/stunnel.conf"], stdin: null, stdout: null, stderr: null)
        self.port = port
        for _ in 0..<200 {
            if canConnect(toLoopbackPort: port) { return }
            usleep(25_000)
        }
        self.process.terminateInBackground(signal: SIGKILL)
        throw PeerError(description: "stunnel4 did not start on 127.0.0.1:\(port)")
    }

    static func start(targetPort: Int, certificate: (String, String)) async throws -> Stunnel {
        try await onDedicatedThread { try Stunnel(targetPort: targetPort, certificate: certificate) }
    }

    deinit { self.process.terminateInBackground(signal: SIGKILL) }
}

private func engine(_ tls: WebSocketTLSConfiguration) -> CurlEngine {
    CurlEngine(configuration: CurlEngine.Configuration(tls: tls))
}

@Suite("Curl engine: TLS sessions and the trust store shared by its connections", .timeLimit(.minutes(2)))
struct TLSSharingTests {
    @Test("a second connection to the same server resumes; another port, host name or engine does not")
    func resumes() async throws {
        let pki = try await Certificates.load()
        let peer = try await ResumptionPeer.start(pki)
        let tls = WebSocketTLSConfiguration(trustRoots: .file(pki.caFile))
        let curl = engine(tls)
        #expect(try await handshake(curl, port: peer.ports[0]) == "full")
        #expect(try await handshake(curl, port: peer.ports[0]) == "resumed")
        // The peer would resume a ticket of its first port on the second: only libcurl's key keeps it apart.
        #expect(try await handshake(curl, port: peer.ports[1]) == "full")
        #expect(try await handshake(curl, port: peer.ports[0], host: "localhost") == "full")
        await curl.shutdown()
        // Another engine (its own settings, its own sessions) starts afresh, even with equal settings.
        let other = engine(
            WebSocketTLSConfiguration(trustRoots: .pem(try String(contentsOfFile: pki.caFile, encoding: .utf8))))
        #expect(try await handshake(other, port: peer.ports[0]) == "full")
        await other.shutdown()
        let same = engine(tls)
        #expect(try await handshake(same, port: peer.ports[0]) == "full")
        await same.shutdown()
    }

    @Test("with resumesSessions off no session is kept or offered")
    func resumptionOff() async throws {
        let pki = try await Certificates.load()
        let peer = try await ResumptionPeer.start(pki)
        let curl = engine(WebSocketTLSConfiguration(trustRoots: .file(pki.caFile), resumesSessions: false))
        #expect(try await handshake(curl, port: peer.ports[0]) == "full")
        #expect(try await handshake(curl, port: peer.ports[0]) == "full")
        await curl.shutdown()
    }

    @Test("the CA file is read once per engine: removed after the first connect, the next ones still verify")
    func trustStoreLoadedOnce() async throws {
        let pki = try await Certificates.load()
        let peer = try await ResumptionPeer.start(pki)
        let copy = fixturesDirectory + "/ca-\(UUID().uuidString.prefix(8)).pem"
        try FileManager.default.copyItem(atPath: pki.caFile, toPath: copy)
        // No resumption: every handshake verifies the server's certificate against the store.
        let curl = engine(WebSocketTLSConfiguration(trustRoots: .file(copy), resumesSessions: false))
        #expect(try await handshake(curl, port: peer.ports[0]) == "full")
        try FileManager.default.removeItem(atPath: copy)
        #expect(try await handshake(curl, port: peer.ports[1]) == "full")
        #expect(try await handshake(curl, port: peer.ports[0], host: "localhost") == "full")
        await curl.shutdown()
        // A new engine must load it and fails closed, naming the file.
        let fresh = engine(WebSocketTLSConfiguration(trustRoots: .file(copy)))
        await #expect {
            _ = try await handshake(fresh, port: peer.ports[0])
        } throws: { error in
            guard let error = error as? WebSocketError else { return false }
            return error.code == .tlsFailure && error.message.contains(copy)
        }
        await fresh.shutdown()
    }

    @Test("the store verifies as libcurl's does: an untrusted server fails, a trusted leaf alone is an anchor")
    func storeFlags() async throws {
        let pki = try await Certificates.load()
        let peer = try await ResumptionPeer.start(pki)
        // Trusting the server's own (CA-signed) certificate works only with X509_V_FLAG_PARTIAL_CHAIN, which
        // libcurl sets on its store.
        let leafOnly = engine(WebSocketTLSConfiguration(trustRoots: .file(pki.server.0)))
        #expect(try await handshake(leafOnly, port: peer.ports[0]) == "full")
        await leafOnly.shutdown()
        for roots in [WebSocketTLSConfiguration.TrustRoots.system, .file(pki.untrusted.0)] {
            let untrusted = engine(WebSocketTLSConfiguration(trustRoots: roots))
            await #expect {
                _ = try await handshake(untrusted, port: peer.ports[0])
            } throws: { error in
                guard let error = error as? WebSocketError else { return false }
                return error.code == .tlsFailure && error.message.contains("SSL certificate problem")
            }
            await untrusted.shutdown()
        }
    }

    @Test("through an https:// proxy: the proxy is verified with its own settings; sessions only with equal settings")
    func throughHTTPSProxy() async throws {
        guard FileManager.default.isExecutableFile(atPath: "/usr/bin/stunnel4") else { return }
        let pki = try await Certificates.load()
        let peer = try await ResumptionPeer.start(pki)
        let tiny = try await TinyProxy.start(connectPorts: peer.ports)
        let stunnel = try await Stunnel.start(targetPort: tiny.port, certificate: pki.server)
        let proxy = ProxyServer(.https, host: "localhost", port: stunnel.port)
        let tls = WebSocketTLSConfiguration(trustRoots: .file(pki.caFile))
        let curl = engine(tls)
        // The engine's trust store knows the proxy's CA; the proxy's own settings (the system store) do not.
        await #expect {
            _ = try await handshake(curl, port: peer.ports[0], proxy: proxy, proxyTLS: WebSocketTLSConfiguration())
        } throws: { error in
            (error as? WebSocketError)?.code == .tlsFailure
        }
        // The proxy's settings equal the engine's: the endpoint's session is kept and resumed through the tunnel.
        #expect(try await handshake(curl, port: peer.ports[0], proxy: proxy, proxyTLS: tls) == "full")
        #expect(try await handshake(curl, port: peer.ports[0], proxy: proxy, proxyTLS: tls) == "resumed")
        // Other settings for the proxy (its CA as PEM text): libcurl's one switch turns sessions off for both.
        let otherTLS = WebSocketTLSConfiguration(
            trustRoots: .pem(try String(contentsOfFile: pki.caFile, encoding: .utf8)))
        #expect(try await handshake(curl, port: peer.ports[1], proxy: proxy, proxyTLS: otherTLS) == "full")
        #expect(try await handshake(curl, port: peer.ports[1], proxy: proxy, proxyTLS: otherTLS) == "full")
        await curl.shutdown()
        #expect(tiny.log.contains("CONNECT 127.0.0.1:\(peer.ports[1])"), "tinyproxy log: \(tiny.log)")
    }
}
