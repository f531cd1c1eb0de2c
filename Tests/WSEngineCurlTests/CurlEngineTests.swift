import EngineTestSupport
import Foundation
import Glibc
import Logging
import Synchronization
import Testing
import WSCore
import WSEngineCurl

/// Connects `engine` to 127.0.0.1:`port` (or `host`), starts `recorder`, and returns the transport.
private func connect(
    _ engine: CurlEngine, port: Int, host: String = "127.0.0.1", secure: Bool = false, recorder: Recorder,
    logger: Logger = testLogger, proxy: ProxyServer? = nil
) async throws -> any WebSocketTransport {
    var connectOptions = options(logger: logger)
    connectOptions.proxy = proxy
    let transport = try await engine.connect(
        to: EngineEndpoint(host: host, port: port, secure: secure), options: connectOptions)
    transport.start(handler: recorder)
    return transport
}

/// Writes `bytes` and waits for the echo; closes and checks the contract.
private func expectEcho(
    _ engine: CurlEngine, port: Int, host: String = "127.0.0.1", secure: Bool = false, bytes: [UInt8],
    logger: Logger = testLogger, proxy: ProxyServer? = nil
) async throws {
    let recorder = Recorder()
    let transport = try await connect(
        engine, port: port, host: host, secure: secure, recorder: recorder, logger: logger, proxy: proxy)
    transport.write(bytes)
    let echoed = await recorder.wait(timeout: .seconds(60)) { $0.received.count >= bytes.count }
    #expect(echoed, "received \(recorder.receivedCount) of \(bytes.count) bytes")
    #expect(recorder.received == bytes)
    transport.close()
    #expect(await recorder.wait { $0.closes == 1 })
    #expect(recorder.state.withLock { $0.closeError } == nil)
    #expect(recorder.contractHeld)
}

@Suite("CurlEngine", .timeLimit(.minutes(2)))
struct CurlEngineTests {
    @Test("reports WebSockets and extensions for the installed libcurl with ws/wss")
    func capabilities() throws {
        let engine = CurlEngine()
        #expect(engine.name == "Curl")
        #expect(!CurlEngine.libcurlVersion.isEmpty)
        // The machine's libcurl (8.14.1 from backports) lists WS and WSS; check against curl-config.
        let process = Process()
        process.executableURL = URL(fileURLWithPath: "/usr/bin/env")
        process.arguments = ["curl-config", "--protocols"]
        let output = Pipe()
        process.standardOutput = output
        try process.run()
        process.waitUntilExit()
        let protocols = String(decoding: output.fileHandleForReading.readDataToEndOfFile(), as: UTF8.self)
            .split(whereSeparator: \.isWhitespace)
        let expected = protocols.contains("WS") && protocols.contains("WSS")
        #expect(CurlEngine.supportsWebSockets == expected)
        #expect(engine.isSupported(.webSocket) == expected)
        #expect(engine.isSupported(.webSocketExtensions) == expected)
        #expect(!engine.isSupported(EngineCapability(name: "Teleportation")))
        #expect(engine.unsupportedReason(EngineCapability(name: "Teleportation")) != nil)
        if expected {
            #expect(engine.unsupportedReason(.webSocket) == nil)
        } else {
            #expect(engine.unsupportedReason(.webSocket)?.contains("use the CIO engine instead") == true)
        }
    }

    @Test("echo round trip: small and 8 MiB")
    func echo() async throws {
        let server = try await PythonServer.start(mode: "echo")
        let engine = CurlEngine(configuration: directConfiguration())
        try await expectEcho(engine, port: server.port, bytes: Array("hello, curl".utf8))
        try await expectEcho(engine, port: server.port, bytes: pattern(count: 8 << 20))
        await engine.shutdown()
    }

    @Test("a handler may write and close from inside its callbacks")
    func reentrantHandler() async throws {
        let server = try await PythonServer.start(mode: "echo")
        let engine = CurlEngine(configuration: directConfiguration())
        let box = Mutex<(any WebSocketTransport)?>(nil)
        let rounds = Mutex(0)
        let recorder = Recorder { _ in
            // Ping-pong 50 times from the loop thread, then close.
            let transport = box.withLock { $0 }
            let round = rounds.withLock { count -> Int in
                count += 1
                return count
            }
            if round < 50 { transport?.write([UInt8(round)]) } else { transport?.close() }
        }
        let transport = try await engine.connect(
            to: EngineEndpoint(host: "127.0.0.1", port: server.port, secure: false), options: options())
        box.withLock { $0 = transport }
        transport.start(handler: recorder)
        transport.write([0])
        #expect(await recorder.wait { $0.closes == 1 })
        #expect(recorder.received == (0..<50).map { UInt8($0) })
        #expect(recorder.contractHeld)
        box.withLock { $0 = nil }
        await engine.shutdown()
    }

    @Test("paused reading stops delivery; resuming delivers everything")
    func pausedReading() async throws {
        let server = try await PythonServer.start(mode: "echo")
        let engine = CurlEngine(configuration: directConfiguration())
        let recorder = Recorder()
        let transport = try await engine.connect(
            to: EngineEndpoint(host: "127.0.0.1", port: server.port, secure: false), options: options())
        transport.setReadingPaused(true)
        transport.start(handler: recorder)
        let bytes = pattern(count: 1 << 20, seed: 7)
        transport.write(bytes)
        // The echo is waiting in our socket, and the loop has seen it arrive.
        let fd = try #require(SocketProbe.descriptor(remotePort: server.port))
        #expect(await eventually { SocketProbe.unreadBytes(fd) ?? 0 > 0 || recorder.receivedCount > 0 })
        await loopRounds(transport.executor)
        #expect(recorder.receivedCount == 0)
        transport.setReadingPaused(false)
        #expect(await recorder.wait { $0.received.count >= bytes.count })
        #expect(recorder.received == bytes)
        transport.abort()
        #expect(await recorder.wait { $0.closes == 1 })
        #expect(transport.write([1, 2, 3]) == 0)
        #expect(recorder.contractHeld)
        await engine.shutdown()
    }

    @Test("a peer that does not read: write buffers, then drain fires once it reads")
    func writeBackpressure() async throws {
        let server = try await PythonServer.start(mode: "slow-reader")
        let engine = CurlEngine(configuration: directConfiguration())
        let recorder = Recorder()
        let transport = try await connect(engine, port: server.port, recorder: recorder)
        let buffered = transport.write(pattern(count: 32 << 20))
        #expect(buffered > 0)
        #expect(transport.bufferedBytes == buffered)
        #expect(transport.write([1, 2, 3]) == buffered + 3)
        server.release()
        #expect(await recorder.wait(timeout: .seconds(60)) { $0.drains >= 1 })
        #expect(transport.bufferedBytes == 0)
        #expect(recorder.drains == 1)
        transport.close()
        #expect(await recorder.wait { $0.closes == 1 })
        #expect(recorder.contractHeld)
        await engine.shutdown()
    }

    @Test("end of stream from the peer is a clean close")
    func endOfStream() async throws {
        let server = try await PythonServer.start(mode: "hello-close")
        let engine = CurlEngine(configuration: directConfiguration())
        let recorder = Recorder()
        _ = try await connect(engine, port: server.port, recorder: recorder)
        #expect(await recorder.wait { $0.closes == 1 })
        #expect(recorder.received == Array("hello".utf8))
        #expect(recorder.state.withLock { $0.closeErrorText } == nil)
        #expect(recorder.contractHeld)
        await engine.shutdown()
    }

    @Test("IPv6 loopback echo", .enabled(if: ipv6LoopbackAvailable, "::1 is not available on this machine"))
    func ipv6() async throws {
        let server = try await PythonServer.start(mode: "echo", host: "::1")
        let engine = CurlEngine(configuration: directConfiguration())
        try await expectEcho(engine, port: server.port, host: "::1", bytes: Array("over IPv6".utf8))
        await engine.shutdown()
    }

    @Test("nothing listening: connectionRefused")
    func connectionRefused() async throws {
        let (port, holder) = unusedLoopbackPort()
        defer { close(holder) }
        let engine = CurlEngine(configuration: directConfiguration())
        await #expect {
            _ = try await engine.connect(
                to: EngineEndpoint(host: "127.0.0.1", port: port, secure: false), options: options())
        } throws: { error in
            guard let error = error as? WebSocketError else { return false }
            // The message carries curl_easy_strerror and the CURLOPT_ERRORBUFFER detail.
            return error.code == .connectionRefused && error.message.contains("127.0.0.1:\(port)")
                && error.message.contains("connect to server")
                && error.message.contains("Failed to connect to 127.0.0.1 port \(port)")
        }
        await engine.shutdown()
    }

    @Test("a TLS handshake that never finishes times out, and cancelling aborts the connect")
    func timeoutAndCancel() async throws {
        let server = try await PythonServer.start(mode: "silent")
        let engine = CurlEngine(configuration: directConfiguration())
        let endpoint = EngineEndpoint(host: "127.0.0.1", port: server.port, secure: true)
        let started = ContinuousClock.now
        await #expect {
            _ = try await engine.connect(to: endpoint, options: options(timeout: .milliseconds(500)))
        } throws: { error in
            (error as? WebSocketError)?.code == .timedOut
        }
        // Far below what a missing timeout would take, with room for a loaded 2-core machine.
        #expect(ContinuousClock.now - started < .seconds(15))
        let task = Task { try await engine.connect(to: endpoint, options: options(timeout: .seconds(30))) }
        // Cancelled in the TLS handshake: once the TCP connection to the silent server stands.
        #expect(
            await eventually {
                SocketProbe.descriptor(remotePort: server.port).flatMap(SocketProbe.tcpState) == SocketProbe.established
            })
        task.cancel()
        await #expect {
            _ = try await task.value
        } throws: { error in
            (error as? WebSocketError)?.code == .cancelled
        }
        await engine.shutdown()
    }

    @Test("TLS with a trusted CA: by IP address and by host name, 8 MiB echo")
    func trustedTLS() async throws {
        let pki = try await Certificates.load()
        let server = try await PythonServer.start(mode: "echo", certificate: pki.server)
        let engine = CurlEngine(configuration: directConfiguration(trustedCAFile: pki.caFile))
        try await expectEcho(engine, port: server.port, secure: true, bytes: Array("over TLS".utf8))
        try await expectEcho(engine, port: server.port, host: "localhost", secure: true, bytes: pattern(count: 8 << 20))
        await engine.shutdown()
    }

    @Test("a self-signed certificate is rejected with tlsFailure, and accepted by the insecure opt-out")
    func selfSigned() async throws {
        let pki = try await Certificates.load()
        let server = try await PythonServer.start(mode: "echo", certificate: pki.untrusted)
        let endpoint = EngineEndpoint(host: "127.0.0.1", port: server.port, secure: true)
        for configuration in [directConfiguration(trustedCAFile: pki.caFile), directConfiguration()] {
            let engine = CurlEngine(configuration: configuration)
            await #expect {
                _ = try await engine.connect(to: endpoint, options: options())
            } throws: { error in
                guard let error = error as? WebSocketError else { return false }
                return error.code == .tlsFailure && error.message.contains("127.0.0.1:\(server.port)")
                    && error.message.contains("SSL certificate problem")
            }
            await engine.shutdown()
        }
        let insecure = CurlEngine(configuration: directConfiguration(insecure: true))
        try await expectEcho(insecure, port: server.port, secure: true, bytes: Array("anyone".utf8))
        await insecure.shutdown()
    }

    @Test("through tinyproxy: a CONNECT tunnel for TLS and for plain TCP; the verbose log has no secrets")
    func throughProxy() async throws {
        let pki = try await Certificates.load()
        let tlsServer = try await PythonServer.start(mode: "echo", certificate: pki.server)
        let plainServer = try await PythonServer.start(mode: "echo")
        let proxy = try await TinyProxy.start(connectPorts: [tlsServer.port, plainServer.port])
        let storage = CapturingLogHandler.Storage()
        var logger = Logger(label: "curl-proxy-test") { _ in CapturingLogHandler(storage: storage) }
        logger.logLevel = .trace
        let engine = CurlEngine(
            configuration: CurlEngine.Configuration(tls: .init(trustRoots: .file(pki.caFile)), verbose: true))
        let server = try ProxyServer(url: "http://tester:s3cr3t-pw@127.0.0.1:\(proxy.port)")
        try await expectEcho(
            engine, port: tlsServer.port, secure: true, bytes: pattern(count: 1 << 20), logger: logger, proxy: server)
        try await expectEcho(
            engine, port: plainServer.port, bytes: Array("plain through the tunnel".utf8), logger: logger,
            proxy: server)
        await engine.shutdown()
        let log = proxy.log
        #expect(log.contains("CONNECT 127.0.0.1:\(tlsServer.port)"), "tinyproxy log: \(log)")
        #expect(log.contains("CONNECT 127.0.0.1:\(plainServer.port)"), "tinyproxy log: \(log)")
        let lines = storage.all
        #expect(lines.contains { $0.contains("curl: ") }, "no libcurl trace was logged")
        #expect(lines.contains { $0.contains("CONNECT 127.0.0.1:\(tlsServer.port)") })
        #expect(lines.contains { $0.contains("Proxy-Authorization: <redacted>") })
        #expect(!lines.contains { $0.contains("s3cr3t") || $0.contains("dGVzdGVyOnMzY3IzdC1wdw") })
    }

    @Test("through a SOCKS5 proxy (socks5h://): TLS with the host name resolved by the proxy")
    func throughSOCKS() async throws {
        let pki = try await Certificates.load()
        let server = try await PythonServer.start(mode: "echo", certificate: pki.server)
        let socks = try await PythonServer.start(mode: "socks5")
        let engine = CurlEngine(configuration: CurlEngine.Configuration(tls: .init(trustRoots: .file(pki.caFile))))
        try await expectEcho(
            engine, port: server.port, host: "localhost", secure: true, bytes: pattern(count: 100_000),
            proxy: ProxyServer(.socks5h, host: "127.0.0.1", port: socks.port))
        await engine.shutdown()
        #expect(socks.log.contains("SOCKS CONNECT localhost:\(server.port)"), "SOCKS log: \(socks.log)")
    }

    @Test("200 concurrent connections on one loop, each echoing its own bytes")
    func manyConnections() async throws {
        let server = try await PythonServer.start(mode: "echo")
        var configuration = directConfiguration()
        configuration.eventLoopCount = 1
        let engine = CurlEngine(configuration: configuration)
        let count = 200
        let threads = ThreadSet()
        try await withThrowingTaskGroup(of: Void.self) { group in
            for index in 0..<count {
                group.addTask {
                    let recorder = Recorder()
                    let transport = try await connect(engine, port: server.port, recorder: recorder)
                    let bytes = pattern(count: 4096 + index, seed: UInt64(index + 1))
                    transport.write(bytes)
                    let echoed = await recorder.wait(timeout: .seconds(60)) { $0.received.count >= bytes.count }
                    #expect(echoed)
                    #expect(recorder.received == bytes)
                    transport.close()
                    #expect(await recorder.wait { $0.closes == 1 })
                    #expect(recorder.contractHeld)
                    threads.insert(recorder.state.withLock { $0.callbackThreads })
                }
            }
            try await group.waitForAll()
        }
        #expect(threads.count == 1, "callbacks came from more than one thread")
        await engine.shutdown()
    }

    @Test("shutdown aborts open transports and refuses new connects")
    func shutdownAbortsTransports() async throws {
        let server = try await PythonServer.start(mode: "echo")
        let engine = CurlEngine(configuration: directConfiguration())
        let recorder = Recorder()
        _ = try await connect(engine, port: server.port, recorder: recorder)
        await engine.shutdown()
        #expect(recorder.closes == 1)
        #expect(recorder.state.withLock { $0.closeError?.code } == .network)
        await #expect(throws: WebSocketError.self) {
            _ = try await engine.connect(
                to: EngineEndpoint(host: "127.0.0.1", port: server.port, secure: false), options: options())
        }
    }
}

/// The set of threads callbacks came from, shared by concurrent tasks.
private final class ThreadSet: Sendable {
    private let threads = Mutex<Set<UInt>>([])
    func insert(_ more: Set<UInt>) { self.threads.withLock { $0.formUnion(more) } }
    var count: Int { self.threads.withLock { $0.count } }
}
