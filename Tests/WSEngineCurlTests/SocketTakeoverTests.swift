// A connection without TLS on its path (ws:// directly, through an http:// CONNECT proxy or a SOCKS proxy) takes its
// socket over from libcurl once connected: libcurl's handles are released at once, the socket is the transport's
// only descriptor, and the transport closes it exactly once. wss:// and ws:// through an https:// proxy keep
// libcurl's handles.
import EngineTestSupport
import Foundation
import Glibc
import Synchronization
import Testing
import WSCore
import WSEngineCurl

/// The descriptors this process has open.
private func openDescriptorCount() -> Int {
    (try? FileManager.default.contentsOfDirectory(atPath: "/proc/self/fd").count) ?? -1
}

/// Connects, echoes `text` and returns the open transport and its recorder.
private func openEcho(
    _ engine: CurlEngine, port: Int, host: String = "127.0.0.1", secure: Bool = false, proxy: ProxyServer? = nil,
    proxyTLS: WebSocketTLSConfiguration? = nil, text: String = "taken over"
) async throws -> (any WebSocketTransport, Recorder) {
    var connectOptions = options()
    connectOptions.proxy = proxy
    if let proxyTLS { connectOptions.proxyTLS = proxyTLS }
    let recorder = Recorder()
    let transport = try await engine.connect(
        to: EngineEndpoint(host: host, port: port, secure: secure), options: connectOptions)
    transport.start(handler: recorder)
    let bytes = Array(text.utf8)
    transport.write(bytes)
    #expect(await recorder.wait { $0.received.count >= bytes.count })
    #expect(recorder.received == bytes)
    return (transport, recorder)
}

/// An engine with one loop that has opened and closed one connection to the echo server at `echoPort` (so the loop's
/// own descriptors exist), and the descriptors open afterwards.
private func warmEngine(echoPort: Int) async throws -> (CurlEngine, Int) {
    var configuration = directConfiguration()
    configuration.eventLoopCount = 1
    let engine = CurlEngine(configuration: configuration)
    let (first, recorder) = try await openEcho(engine, port: echoPort)
    first.close()
    #expect(await recorder.wait { $0.closes == 1 })
    return (engine, openDescriptorCount())
}

/// A loopback listener that accepts one connection and resets it (SO_LINGER 0) once `reset()` is called.
private final class ResettingPeer: @unchecked Sendable {  // `accepted` is written once before `reset()` reads it.
    let port: Int
    private let listener: Int32
    private var accepted: Int32 = -1

    init() throws {
        let listener = socket(AF_INET, Int32(SOCK_STREAM.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0)
        var address = sockaddr_in()
        address.sin_family = sa_family_t(AF_INET)
        address.sin_addr.s_addr = inet_addr("127.0.0.1")
        let bound = withUnsafePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) {
                bind(listener, $0, socklen_t(MemoryLayout<sockaddr_in>.size))
            }
        }
        guard bound == 0, listen(listener, 4) == 0 else {
            close(listener)
            throw PeerError(description: "cannot listen")
        }
        var length = socklen_t(MemoryLayout<sockaddr_in>.size)
        _ = withUnsafeMutablePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { getsockname(listener, $0, &length) }
        }
        self.listener = listener
        self.port = Int(UInt16(bigEndian: address.sin_port))
    }

    /// Accepts the connection (blocking) and resets it.
    func reset() {
        self.accepted = accept(self.listener, nil, nil)
        var linger = Glibc.linger(l_onoff: 1, l_linger: 0)
        _ = setsockopt(self.accepted, SOL_SOCKET, SO_LINGER, &linger, socklen_t(MemoryLayout<Glibc.linger>.size))
        close(self.accepted)
    }

    deinit { close(self.listener) }
}

@Suite("Curl engine: sockets taken over from libcurl", .timeLimit(.minutes(2)))
struct SocketTakeoverTests {
    @Test("a ws:// connection keeps no libcurl handle and one descriptor, closed once by close() and by abort()")
    func plainConnectionsOwnTheirSocket() async throws {
        let server = try await PythonServer.start(mode: "echo")
        let (engine, descriptors) = try await warmEngine(echoPort: server.port)
        let count = 20
        var open: [(any WebSocketTransport, Recorder)] = []
        for index in 0..<count {
            open.append(try await openEcho(engine, port: server.port, text: "connection \(index)"))
        }
        #expect(open.allSatisfy { CurlEngine.ownsSocket($0.0) == true })
        #expect(CurlEngine.liveEasyHandles == 0)
        #expect(openDescriptorCount() - descriptors == count)
        for (index, (transport, _)) in open.enumerated() {
            if index.isMultiple(of: 2) { transport.close() } else { transport.abort() }
        }
        for (_, recorder) in open {
            #expect(await recorder.wait { $0.closes == 1 })
            #expect(recorder.state.withLock { $0.closeError } == nil)
            #expect(recorder.contractHeld)
        }
        #expect(await eventually { openDescriptorCount() == descriptors })
        // The freed descriptor numbers serve new connections: nothing closes them a second time.
        let (again, againRecorder) = try await openEcho(engine, port: server.port, text: "again")
        #expect(CurlEngine.ownsSocket(again) == true)
        again.write(Array(" and again".utf8))
        #expect(await againRecorder.wait { $0.received.count >= 15 })
        again.close()
        #expect(await againRecorder.wait { $0.closes == 1 })
        await engine.shutdown()
        #expect(openDescriptorCount() <= descriptors)
    }

    @Test("wss:// keeps libcurl's handles for the connection's life and releases them at the close")
    func tlsConnectionsKeepLibcurl() async throws {
        let pki = try await Certificates.load()
        let server = try await PythonServer.start(mode: "echo", certificate: pki.server)
        let engine = CurlEngine(configuration: directConfiguration(trustedCAFile: pki.caFile))
        let (transport, recorder) = try await openEcho(engine, port: server.port, secure: true)
        #expect(CurlEngine.ownsSocket(transport) == false)
        #expect(CurlEngine.liveEasyHandles == 1)
        transport.close()
        #expect(await recorder.wait { $0.closes == 1 })
        #expect(recorder.state.withLock { $0.closeError } == nil)
        #expect(CurlEngine.liveEasyHandles == 0)
        await engine.shutdown()
    }

    @Test("ws:// through an http:// proxy and a SOCKS5 proxy takes the socket over; through an https:// proxy not")
    func throughProxies() async throws {
        let pki = try await Certificates.load()
        let server = try await PythonServer.start(mode: "echo")
        let tiny = try await TinyProxy.start(connectPorts: [server.port])
        let socks = try await PythonServer.start(mode: "socks5")
        let engine = CurlEngine(configuration: directConfiguration(trustedCAFile: pki.caFile))
        let proxies = [
            ProxyServer(.http, host: "127.0.0.1", port: tiny.port),
            ProxyServer(.socks5, host: "127.0.0.1", port: socks.port),
            ProxyServer(.socks5h, host: "127.0.0.1", port: socks.port),
        ]
        for proxy in proxies {
            let host = proxy.kind == .socks5h ? "localhost" : "127.0.0.1"
            let (transport, recorder) = try await openEcho(
                engine, port: server.port, host: host, proxy: proxy, text: "through \(proxy)")
            #expect(CurlEngine.ownsSocket(transport) == true, "\(proxy)")
            #expect(CurlEngine.liveEasyHandles == 0)
            // Larger than a socket buffer, both ways, after the takeover.
            let bytes = pattern(count: 1 << 20, seed: 3)
            let before = recorder.receivedCount
            transport.write(bytes)
            #expect(await recorder.wait(timeout: .seconds(60)) { $0.received.count >= before + bytes.count })
            #expect(Array(recorder.received.suffix(bytes.count)) == bytes)
            transport.close()
            #expect(await recorder.wait { $0.closes == 1 })
            #expect(recorder.state.withLock { $0.closeError } == nil)
        }
        #expect(tiny.log.contains("CONNECT 127.0.0.1:\(server.port)"), "tinyproxy log: \(tiny.log)")
        #expect(socks.log.contains("SOCKS CONNECT localhost:\(server.port)"), "SOCKS log: \(socks.log)")
        if FileManager.default.isExecutableFile(atPath: "/usr/bin/stunnel4") {
            let stunnel = try await Stunnel.start(targetPort: tiny.port, certificate: pki.server)
            let tls = WebSocketTLSConfiguration(trustRoots: .file(pki.caFile))
            let (transport, recorder) = try await openEcho(
                engine, port: server.port, proxy: ProxyServer(.https, host: "localhost", port: stunnel.port),
                proxyTLS: tls)
            #expect(CurlEngine.ownsSocket(transport) == false)
            #expect(CurlEngine.liveEasyHandles == 1)
            transport.close()
            #expect(await recorder.wait { $0.closes == 1 })
            #expect(CurlEngine.liveEasyHandles == 0)
        }
        await engine.shutdown()
    }

    @Test("a connect cancelled while an http:// proxy stays silent leaves no descriptor and no handle behind")
    func cancelledWhileConnecting() async throws {
        let server = try await PythonServer.start(mode: "echo")
        let silentProxy = try await PythonServer.start(mode: "silent")
        let (engine, descriptors) = try await warmEngine(echoPort: server.port)
        var connectOptions = options(timeout: .seconds(30))
        connectOptions.proxy = ProxyServer(.http, host: "127.0.0.1", port: silentProxy.port)
        let endpoint = EngineEndpoint(host: "127.0.0.1", port: server.port, secure: false)
        let task = Task { try await engine.connect(to: endpoint, options: connectOptions) }
        // Cancelled while waiting for the proxy's reply to the CONNECT.
        #expect(
            await eventually {
                SocketProbe.descriptor(remotePort: silentProxy.port).flatMap(SocketProbe.tcpState)
                    == SocketProbe.established
            })
        #expect(CurlEngine.liveEasyHandles == 1)
        task.cancel()
        await #expect {
            _ = try await task.value
        } throws: { error in
            (error as? WebSocketError)?.code == .cancelled
        }
        #expect(await eventually { openDescriptorCount() == descriptors })
        #expect(CurlEngine.liveEasyHandles == 0)
        await engine.shutdown()
    }

    @Test("concurrent ws:// connects share their loop's multi handle: one per loop, not one each, gone with the loop")
    func oneMultiHandlePerLoop() async throws {
        let server = try await PythonServer.start(mode: "echo")
        var configuration = directConfiguration()
        configuration.eventLoopCount = 2
        let engine = CurlEngine(configuration: configuration)
        let liveBefore = CurlEngine.liveMultiHandles
        let createdBefore = CurlEngine.createdMultiHandles
        let count = 40
        let open = try await withThrowingTaskGroup(of: (any WebSocketTransport, Recorder).self) { group in
            for index in 0..<count {
                group.addTask { try await openEcho(engine, port: server.port, text: "connect \(index)") }
            }
            return try await group.reduce(into: []) { $0.append($1) }
        }
        #expect(open.count == count)
        #expect(open.allSatisfy { CurlEngine.ownsSocket($0.0) == true })
        #expect(CurlEngine.createdMultiHandles - createdBefore == 2)  // One per loop (both loops served connects).
        // Removing each easy handle closed libcurl's connection at once (nothing left in the pool to close later).
        #expect(CurlEngine.connectionsKeptByLibcurl == 0)
        #expect(CurlEngine.liveMultiHandles - liveBefore == 2)
        #expect(CurlEngine.liveEasyHandles == 0)
        for (transport, recorder) in open {
            transport.close()
            #expect(await recorder.wait { $0.closes == 1 })
        }
        await engine.shutdown()
        // The loops' multi handles are cleaned up when the loops end.
        #expect(CurlEngine.liveMultiHandles <= liveBefore)
    }

    @Test(
        "ws:// connects on one loop, some cancelled mid-connect, refused or timed out: the others echo, nothing leaks")
    func mixedConnectsOnOneLoop() async throws {
        let server = try await PythonServer.start(mode: "echo")
        let silentProxy = try await PythonServer.start(mode: "silent")
        let (refusedPort, holder) = unusedLoopbackPort()
        defer { close(holder) }
        let (engine, descriptors) = try await warmEngine(echoPort: server.port)
        let createdBefore = CurlEngine.createdMultiHandles
        let stalled = ProxyServer(.http, host: "127.0.0.1", port: silentProxy.port)
        let endpoint = EngineEndpoint(host: "127.0.0.1", port: server.port, secure: false)
        // Connects that wait for the silent proxy's reply to their CONNECT until they are cancelled.
        var cancelled: [Task<any WebSocketTransport, any Error>] = []
        for _ in 0..<15 {
            var connectOptions = options(timeout: .seconds(30))
            connectOptions.proxy = stalled
            cancelled.append(Task { try await engine.connect(to: endpoint, options: connectOptions) })
        }
        // One that times out meanwhile.
        var shortOptions = options(timeout: .milliseconds(500))
        shortOptions.proxy = stalled
        let timingOut = Task { try await engine.connect(to: endpoint, options: shortOptions) }
        let refused = (0..<15).map { _ in
            Task {
                try await engine.connect(
                    to: EngineEndpoint(host: "127.0.0.1", port: refusedPort, secure: false), options: options())
            }
        }
        let count = 60
        let open = try await withThrowingTaskGroup(of: (any WebSocketTransport, Recorder).self) { group in
            for index in 0..<count {
                group.addTask { try await openEcho(engine, port: server.port, text: "connect \(index)") }
            }
            return try await group.reduce(into: []) { $0.append($1) }
        }
        for task in refused {
            await #expect {
                _ = try await task.value
            } throws: { error in
                (error as? WebSocketError)?.code == .connectionRefused
            }
        }
        await #expect {
            _ = try await timingOut.value
        } throws: { error in
            (error as? WebSocketError)?.code == .timedOut
        }
        // The stalled connects are still in the loop's multi handle; cancel them among the open connections.
        #expect(CurlEngine.liveEasyHandles == cancelled.count)
        for task in cancelled { task.cancel() }
        for task in cancelled {
            await #expect {
                _ = try await task.value
            } throws: { error in
                (error as? WebSocketError)?.code == .cancelled
            }
        }
        #expect(CurlEngine.liveEasyHandles == 0)
        #expect(CurlEngine.createdMultiHandles == createdBefore)
        #expect(CurlEngine.connectionsKeptByLibcurl == 0)
        // The open connections were not disturbed: each echoes again, then closes.
        #expect(openDescriptorCount() - descriptors == count)
        for (index, (transport, recorder)) in open.enumerated() {
            let before = recorder.receivedCount
            let bytes = Array("again \(index)".utf8)
            transport.write(bytes)
            #expect(await recorder.wait { $0.received.count >= before + bytes.count })
            #expect(Array(recorder.received.suffix(bytes.count)) == bytes)
            transport.close()
            #expect(await recorder.wait { $0.closes == 1 })
            #expect(recorder.state.withLock { $0.closeError } == nil)
        }
        #expect(await eventually { openDescriptorCount() == descriptors })
        // The loop connects on as before.
        let (again, againRecorder) = try await openEcho(engine, port: server.port, text: "after all that")
        again.close()
        #expect(await againRecorder.wait { $0.closes == 1 })
        await engine.shutdown()
    }

    @Test("ws:// connects refused together on one loop all fail at once: each completion reaches its connect")
    func refusedTogether() async throws {
        let server = try await PythonServer.start(mode: "echo")
        let (refusedPort, holder) = unusedLoopbackPort()
        defer { close(holder) }
        let (engine, _) = try await warmEngine(echoPort: server.port)
        let endpoint = EngineEndpoint(host: "127.0.0.1", port: refusedPort, secure: false)
        let started = ContinuousClock.now
        // Added in one loop round, started by one timeout of the shared multi handle, refused in the same call.
        let codes = await withTaskGroup(of: WebSocketError.Code?.self) { group in
            for _ in 0..<20 {
                group.addTask {
                    do {
                        _ = try await engine.connect(to: endpoint, options: options(timeout: .seconds(20)))
                        return nil
                    } catch {
                        return (error as? WebSocketError)?.code
                    }
                }
            }
            return await group.reduce(into: []) { $0.append($1) }
        }
        #expect(codes.count == 20)
        #expect(codes.allSatisfy { $0 == .connectionRefused }, "\(codes)")
        #expect(ContinuousClock.now - started < .seconds(10))
        #expect(CurlEngine.liveEasyHandles == 0)
        await engine.shutdown()
    }

    @Test("a reset from the peer reads as libcurl words it: Recv failure: Connection reset by peer")
    func resetMessage() async throws {
        let peer = try ResettingPeer()
        let engine = CurlEngine(configuration: directConfiguration())
        let descriptors = openDescriptorCount()
        let recorder = Recorder()
        let transport = try await engine.connect(
            to: EngineEndpoint(host: "127.0.0.1", port: peer.port, secure: false), options: options())
        transport.start(handler: recorder)
        await Task.detached { peer.reset() }.value
        #expect(await recorder.wait { $0.closes == 1 })
        let error = recorder.state.withLock { $0.closeError }
        #expect(error?.code == .network)
        #expect(
            error?.message
                == "reading from 127.0.0.1:\(peer.port) failed: Failure when receiving data from the peer "
                + "(Recv failure: Connection reset by peer)")
        #expect(recorder.contractHeld)
        await engine.shutdown()
        // The failed connection's descriptor is closed too (the engine's loop, started by this test, stops with it).
        #expect(await eventually { openDescriptorCount() <= descriptors })
    }
}
