import EngineTestSupport
import Foundation
import Glibc
import Synchronization
import Testing
import WSCore
import WSEngineCIO

/// Runs `body` with a fresh engine and shuts it down afterwards.
private func withEngine<Result>(
    _ configuration: CIOEngine.Configuration = .init(),
    _ body: (CIOEngine) async throws -> Result
) async throws -> Result {
    let engine = CIOEngine(configuration: configuration)
    do {
        let result = try await body(engine)
        await engine.shutdown()
        return result
    } catch {
        await engine.shutdown()
        throw error
    }
}

/// Expects `body` to throw a `WebSocketError` and returns it.
private func connectionError(_ body: () async throws -> Void) async -> WebSocketError? {
    do {
        try await body()
        Issue.record("expected a WebSocketError, but the call succeeded")
        return nil
    } catch let error as WebSocketError {
        return error
    } catch {
        Issue.record("expected a WebSocketError, got \(error)")
        return nil
    }
}

/// Connects, echoes `byte` and closes; returns the threads that read the connection.
private func echoOneByte(_ engine: CIOEngine, port: Int, _ byte: UInt8) async throws -> Set<UInt> {
    let transport = try await engine.connect(
        to: EngineEndpoint(host: "127.0.0.1", port: port, secure: false), options: options())
    let recorder = Recorder()
    transport.start(handler: recorder)
    transport.write([byte])
    #expect(await recorder.wait { $0.received.count == 1 })
    transport.close()
    #expect(await recorder.wait { $0.closes == 1 })
    return recorder.state.withLock { $0.readThreads }
}

/// The bytes this process sent on `fd` that the peer acknowledged (`tcpi_bytes_acked` of `struct tcp_info`, at
/// offset 120 since Linux 4.1), or `nil` when `fd` is not a TCP socket.
private func bytesAcknowledged(_ fd: Int32) -> Int? {
    var info = [UInt8](repeating: 0, count: 256)
    var length = socklen_t(info.count)
    let tcpInfo: Int32 = 11  // TCP_INFO from <netinet/tcp.h>, which the Glibc module does not import
    let result = info.withUnsafeMutableBytes { getsockopt(fd, Int32(IPPROTO_TCP), tcpInfo, $0.baseAddress, &length) }
    guard result == 0, length >= 128 else { return nil }
    return info.withUnsafeBytes { Int($0.loadUnaligned(fromByteOffset: 120, as: UInt64.self)) }
}

private func tlsEngine(_ tls: WebSocketTLSConfiguration) -> CIOEngine.Configuration {
    CIOEngine.Configuration(tls: tls)
}

@Suite("CIOEngine over TCP", .timeLimit(.minutes(3)))
struct PlainTCPTests {
    @Test("capabilities and name")
    func capabilities() {
        let engine = CIOEngine()
        #expect(engine.name == "CIO")
        #expect(engine.isSupported(.webSocket))
        #expect(engine.isSupported(.webSocketExtensions))
        #expect(engine.unsupportedReason(.webSocket) == nil)
        #expect(!engine.isSupported(EngineCapability(name: "Other")))
    }

    @Test("executorForNextConnection rotates over the loops, and a connect asked for one runs its transport there")
    func chosenLoop() async throws {
        let server = try await PythonServer.start(mode: "echo")
        try await withEngine(CIOEngine.Configuration(eventLoopCount: 2)) { engine in
            let endpoint = EngineEndpoint(host: "127.0.0.1", port: server.port, secure: false)
            let first = try #require(engine.executorForNextConnection())
            let second = try #require(engine.executorForNextConnection())
            #expect(first !== second, "two loops, taken in turn")
            for wanted in [second, first, second] {
                var wantedOptions = options()
                wantedOptions.executor = wanted
                let transport = try await engine.connect(to: endpoint, options: wantedOptions)
                #expect(transport.executor === wanted)
                transport.abort()
            }
            // An executor that is not one of the engine's loops is ignored: the transport gets one of its loops.
            var foreign = options()
            foreign.executor = globalConcurrentExecutor
            let transport = try await engine.connect(to: endpoint, options: foreign)
            #expect(transport.executor === first || transport.executor === second)
            transport.abort()
        }
    }

    @Test("small echo round trip, then close() reports a clean close once")
    func smallEcho() async throws {
        let server = try await PythonServer.start(mode: "echo")
        try await withEngine { engine in
            let transport = try await engine.connect(
                to: EngineEndpoint(host: "127.0.0.1", port: server.port, secure: false), options: options())
            let recorder = Recorder()
            #expect(transport.write(Array("hello, cio".utf8)) == 0)
            transport.start(handler: recorder)
            #expect(await recorder.wait { $0.received.count == 10 })
            #expect(recorder.received == Array("hello, cio".utf8))
            transport.close()
            #expect(await recorder.wait { $0.closes == 1 })
            try await Task.sleep(for: .milliseconds(50))
            let state = recorder.state.withLock {
                ($0.closes, $0.closeErrorText, $0.callbacksAfterClose, $0.overlappingCallbacks)
            }
            #expect(state.0 == 1)
            #expect(state.1 == nil)
            #expect(state.2 == 0)
            #expect(state.3 == 0)
            #expect(transport.write([1, 2, 3]) == 0, "writes after close are dropped")
        }
    }

    @Test("8 MiB echo round trip keeps every byte in order")
    func largeEcho() async throws {
        let server = try await PythonServer.start(mode: "echo")
        try await withEngine { engine in
            let transport = try await engine.connect(
                to: EngineEndpoint(host: "127.0.0.1", port: server.port, secure: false), options: options())
            let recorder = Recorder()
            transport.start(handler: recorder)
            let payload = pattern(count: 8 * 1024 * 1024)
            var offset = 0
            while offset < payload.count {
                let end = min(payload.count, offset + 61_440)
                transport.write(Array(payload[offset..<end]))
                offset = end
            }
            #expect(await recorder.wait(timeout: .seconds(60)) { $0.received.count >= payload.count })
            #expect(recorder.received == payload)
            let threads = recorder.state.withLock { $0.readThreads }
            #expect(threads.count == 1, "every read arrives on the one loop thread")
            transport.close()
            #expect(await recorder.wait { $0.closes == 1 })
        }
    }

    @Test("many small writes from one writer arrive in order; reads respect readBufferSize")
    func writeOrdering() async throws {
        let server = try await PythonServer.start(mode: "echo")
        try await withEngine(.init(readBufferSize: 4096)) { engine in
            let transport = try await engine.connect(
                to: EngineEndpoint(host: "127.0.0.1", port: server.port, secure: false), options: options())
            let recorder = Recorder()
            transport.start(handler: recorder)
            let payload = pattern(count: 2_000_000, seed: 7)
            var offset = 0
            var size = 1
            while offset < payload.count {
                let end = min(payload.count, offset + size)
                transport.write(Array(payload[offset..<end]))
                offset = end
                size = size % 700 + 13
            }
            #expect(await recorder.wait(timeout: .seconds(60)) { $0.received.count >= payload.count })
            #expect(recorder.received == payload)
            #expect(recorder.state.withLock { $0.largestRead } == 4096)
            transport.abort()
            #expect(await recorder.wait { $0.closes == 1 })
        }
    }

    @Test("writes from inside transportDidRead (on the loop thread) work")
    func writeFromCallback() async throws {
        let server = try await PythonServer.start(mode: "echo")
        try await withEngine { engine in
            let transport = try await engine.connect(
                to: EngineEndpoint(host: "127.0.0.1", port: server.port, secure: false), options: options())
            let bounces = Atomic<Int>(0)
            let recorder = Recorder { bytes in
                if bounces.add(1, ordering: .relaxed).newValue < 50 { transport.write(Array(bytes)) }
            }
            transport.start(handler: recorder)
            transport.write([42])
            #expect(await recorder.wait { $0.received.count >= 50 })
            transport.close()
            #expect(await recorder.wait { $0.closes == 1 })
        }
    }

    @Test("pausing reads holds data back; resuming delivers all of it")
    func pauseAndResume() async throws {
        let server = try await PythonServer.start(mode: "echo")
        try await withEngine { engine in
            let transport = try await engine.connect(
                to: EngineEndpoint(host: "127.0.0.1", port: server.port, secure: false), options: options())
            let recorder = Recorder()
            transport.setReadingPaused(true)
            transport.start(handler: recorder)
            let payload = pattern(count: 256 * 1024, seed: 3)
            transport.write(payload)
            // The echo is waiting in our socket, and the loop has seen it arrive.
            let fd = try #require(SocketProbe.descriptor(remotePort: server.port))
            #expect(await eventually { SocketProbe.unreadBytes(fd) ?? 0 > 0 || recorder.receivedCount > 0 })
            await loopRounds(transport.executor)
            #expect(recorder.receivedCount == 0, "nothing is delivered while paused")
            transport.setReadingPaused(false)
            #expect(await recorder.wait { $0.received.count >= payload.count })
            #expect(recorder.received == payload)
            transport.close()
            #expect(await recorder.wait { $0.closes == 1 })
        }
    }

    @Test("a peer that does not read makes bytes buffer, then drain is reported")
    func backpressureAndDrain() async throws {
        let server = try await PythonServer.start(mode: "slow-reader")
        try await withEngine { engine in
            let transport = try await engine.connect(
                to: EngineEndpoint(host: "127.0.0.1", port: server.port, secure: false), options: options())
            let recorder = Recorder()
            transport.start(handler: recorder)
            let chunk = [UInt8](repeating: 0x5A, count: 4 * 1024 * 1024)
            var buffered = 0
            for _ in 0..<16 { buffered = transport.write(chunk) }
            #expect(buffered > 0, "64 MiB cannot all fit in the kernel's buffers")
            // Nothing else writes, so the loop can only have flushed some of it since the last write returned.
            #expect(transport.bufferedBytes > 0 && transport.bufferedBytes <= buffered)
            #expect(recorder.drains == 0)
            server.release()
            #expect(await recorder.wait(timeout: .seconds(60)) { $0.drains >= 1 })
            #expect(transport.bufferedBytes == 0)
            transport.close()
            #expect(await recorder.wait { $0.closes == 1 })
            #expect(recorder.state.withLock { $0.closeErrorText } == nil)
        }
    }

    @Test("end of stream from the peer: data first, then transportDidClose(nil) exactly once")
    func endOfStream() async throws {
        let server = try await PythonServer.start(mode: "hello-close")
        try await withEngine { engine in
            let transport = try await engine.connect(
                to: EngineEndpoint(host: "127.0.0.1", port: server.port, secure: false), options: options())
            let recorder = Recorder()
            // The peer's "hello" and its FIN wait in our socket before start (polled, not slept for).
            let fd = try #require(SocketProbe.descriptor(remotePort: server.port))
            try #require(
                await eventually {
                    SocketProbe.tcpState(fd) == SocketProbe.closeWait && SocketProbe.unreadBytes(fd) == 5
                })
            await loopRounds(transport.executor)  // and the loop has seen them arrive
            transport.start(handler: recorder)
            #expect(await recorder.wait { $0.closes == 1 })
            try await Task.sleep(for: .milliseconds(50))
            let state = recorder.state.withLock { ($0.received, $0.closes, $0.closeErrorText, $0.callbacksAfterClose) }
            #expect(state.0 == Array("hello".utf8))
            #expect(state.1 == 1)
            #expect(state.2 == nil)
            #expect(state.3 == 0)
            transport.close()
            transport.abort()
            try await Task.sleep(for: .milliseconds(50))
            #expect(recorder.closes == 1)
        }
    }

    @Test("abort reports one close and drops later writes")
    func abortCloses() async throws {
        let server = try await PythonServer.start(mode: "echo")
        try await withEngine { engine in
            let transport = try await engine.connect(
                to: EngineEndpoint(host: "127.0.0.1", port: server.port, secure: false), options: options())
            let recorder = Recorder()
            transport.start(handler: recorder)
            transport.abort()
            transport.abort()
            transport.close()
            #expect(transport.write([1, 2, 3]) == 0)
            #expect(await recorder.wait { $0.closes == 1 })
            try await Task.sleep(for: .milliseconds(50))
            #expect(recorder.closes == 1)
            #expect(transport.bufferedBytes == 0)
        }
    }

    @Test("connection refused names the address")
    func connectionRefused() async throws {
        let (port, holder) = unusedLoopbackPort()
        defer { close(holder) }
        try await withEngine { engine in
            let error = await connectionError {
                _ = try await engine.connect(
                    to: EngineEndpoint(host: "127.0.0.1", port: port, secure: false), options: options())
            }
            #expect(error?.code == .connectionRefused)
            #expect(error?.message == "connection refused by 127.0.0.1:\(port): nothing is listening there")
            #expect((error?.underlying as? SystemError)?.errno == ECONNREFUSED)
        }
    }

    @Test("an unresolvable host is a dnsFailure")
    func dnsFailure() async throws {
        try await withEngine { engine in
            let error = await connectionError {
                _ = try await engine.connect(
                    to: EngineEndpoint(host: "nonexistent.invalid", port: 80, secure: false),
                    options: options(timeout: .seconds(30)))
            }
            #expect(error?.code == .dnsFailure)
            #expect(error?.message.hasPrefix("could not resolve host 'nonexistent.invalid': ") == true)
        }
    }

    @Test("a host name goes through the resolver (localhost)")
    func resolvesLocalhost() async throws {
        let server = try await PythonServer.start(mode: "echo")
        try await withEngine { engine in
            let transport = try await engine.connect(
                to: EngineEndpoint(host: "localhost", port: server.port, secure: false), options: options())
            let recorder = Recorder()
            transport.start(handler: recorder)
            transport.write(Array("via resolver".utf8))
            #expect(await recorder.wait { $0.received.count == 12 })
            transport.close()
            #expect(await recorder.wait { $0.closes == 1 })
        }
    }

    @Test("IPv6 loopback echo", .enabled(if: ipv6LoopbackAvailable, "::1 is not available on this machine"))
    func ipv6Echo() async throws {
        let server = try await PythonServer.start(mode: "echo", host: "::1")
        try await withEngine { engine in
            let transport = try await engine.connect(
                to: EngineEndpoint(host: "::1", port: server.port, secure: false), options: options())
            let recorder = Recorder()
            transport.start(handler: recorder)
            let payload = pattern(count: 100_000, seed: 6)
            transport.write(payload)
            #expect(await recorder.wait { $0.received.count >= payload.count })
            #expect(recorder.received == payload)
            transport.close()
            #expect(await recorder.wait { $0.closes == 1 })
        }
    }

    @Test("a connect that gets no TLS answer times out within its bound")
    func connectTimeout() async throws {
        let server = try await PythonServer.start(mode: "silent")
        try await withEngine { engine in
            let started = ContinuousClock.now
            let error = await connectionError {
                _ = try await engine.connect(
                    to: EngineEndpoint(host: "127.0.0.1", port: server.port, secure: true),
                    options: options(timeout: .milliseconds(500)))
            }
            let elapsed = ContinuousClock.now - started
            #expect(error?.code == .timedOut)
            #expect(error?.message.contains("timed out after 0.5 s") == true)
            #expect(elapsed >= .milliseconds(450))
            #expect(elapsed < .seconds(10), "well below a hang; generous for loaded sanitizer runs")
        }
    }

    @Test("cancelling the connecting task aborts the attempt")
    func cancellation() async throws {
        let server = try await PythonServer.start(mode: "silent")
        try await withEngine { engine in
            let started = ContinuousClock.now
            let task = Task {
                try await engine.connect(
                    to: EngineEndpoint(host: "127.0.0.1", port: server.port, secure: true),
                    options: options(timeout: .seconds(30)))
            }
            // Cancelled in the TLS handshake: once the TCP connection to the silent server stands.
            #expect(
                await eventually {
                    SocketProbe.descriptor(remotePort: server.port).flatMap(SocketProbe.tcpState)
                        == SocketProbe.established
                })
            task.cancel()
            let error = await connectionError { _ = try await task.value }
            #expect(error?.code == .cancelled)
            #expect(ContinuousClock.now - started < .seconds(20), "well before the 30 s connect timeout")
        }
    }

    @Test("shutdown aborts open transports and later connects fail")
    func shutdownAbortsTransports() async throws {
        let server = try await PythonServer.start(mode: "echo")
        let engine = CIOEngine()
        let transport = try await engine.connect(
            to: EngineEndpoint(host: "127.0.0.1", port: server.port, secure: false), options: options())
        let recorder = Recorder()
        transport.start(handler: recorder)
        await engine.shutdown()
        #expect(recorder.closes == 1)
        #expect(recorder.state.withLock { $0.closeError?.code } == .network)
        #expect(transport.write([1]) == 0)
        let error = await connectionError {
            _ = try await engine.connect(
                to: EngineEndpoint(host: "127.0.0.1", port: server.port, secure: false), options: options())
        }
        #expect(error != nil)
        await engine.shutdown()
    }

    @Test("two event loops serve connections round-robin")
    func twoLoops() async throws {
        let server = try await PythonServer.start(mode: "echo")
        try await withEngine(.init(eventLoopCount: 2)) { engine in
            var threads: Set<UInt> = []
            for index in 0..<4 { threads.formUnion(try await echoOneByte(engine, port: server.port, UInt8(index))) }
            #expect(threads.count == 2)
        }
    }

    @Test("by default one loop per processor; connections take the loops in turn")
    func defaultLoops() async throws {
        let server = try await PythonServer.start(mode: "echo")
        #expect(CIOEngine.Configuration().eventLoopCount == CIOEngine.defaultEventLoopCount)
        #expect(CIOEngine.defaultEventLoopCount >= 1)
        try await withEngine(.init(eventLoopCount: 3)) { engine in
            var threads: [Set<UInt>] = []
            for index in 0..<4 { threads.append(try await echoOneByte(engine, port: server.port, UInt8(index))) }
            #expect(Set(threads[0...2].flatMap { $0 }).count == 3, "three loops in turn")
            #expect(threads[3] == threads[0], "then the first again")
        }
    }

    @Test("1000 concurrent connections on one loop each echo their own message")
    func thousandConnections() async throws {
        raiseOpenFileLimit(to: 8192)
        let server = try await PythonServer.start(mode: "echo")
        try await withEngine(.init(eventLoopCount: 1)) { engine in
            let count = 1000
            let connections = try await withThrowingTaskGroup(
                of: (Int, any WebSocketTransport).self, returning: [(Int, any WebSocketTransport)].self
            ) { group in
                for index in 0..<count {
                    group.addTask {
                        let transport = try await engine.connect(
                            to: EngineEndpoint(host: "127.0.0.1", port: server.port, secure: false),
                            options: options(timeout: .seconds(30)))
                        return (index, transport)
                    }
                }
                var all: [(Int, any WebSocketTransport)] = []
                for try await connection in group { all.append(connection) }
                return all
            }
            #expect(connections.count == count)
            var recorders: [(Recorder, [UInt8])] = []
            for (index, transport) in connections {
                let recorder = Recorder()
                transport.start(handler: recorder)
                let message = Array("message number \(index)".utf8)
                transport.write(message)
                recorders.append((recorder, message))
            }
            let deadline = ContinuousClock.now + .seconds(60)
            while ContinuousClock.now < deadline,
                !recorders.allSatisfy({ $0.0.receivedCount >= $0.1.count })
            {
                try await Task.sleep(for: .milliseconds(20))
            }
            var mismatches = 0
            for (recorder, message) in recorders where recorder.received != message { mismatches += 1 }
            #expect(mismatches == 0)
            for (_, transport) in connections { transport.close() }
            while ContinuousClock.now < deadline, !recorders.allSatisfy({ $0.0.closes == 1 }) {
                try await Task.sleep(for: .milliseconds(20))
            }
            #expect(recorders.allSatisfy { $0.0.closes == 1 })
            let threads = recorders.reduce(into: Set<UInt>()) { $0.formUnion($1.0.state.withLock { $0.readThreads }) }
            #expect(threads.count == 1, "all connections share the single loop thread")
        }
    }
}

/// Writes `payload` on the transport's loop thread in pieces of 1...97 bytes (about 330,000 for 16 MB), so that
/// writes queue up behind each other and are flushed as gathered records.
private func writeInSmallPieces(_ payload: [UInt8], to transport: any WebSocketTransport) async {
    await Task(executorPreference: transport.executor) {
        var offset = 0
        var size = 1
        while offset < payload.count {
            let end = min(payload.count, offset + size)
            transport.write(Array(payload[offset..<end]))
            offset = end
            size = size % 97 + 1
        }
    }.value
}

@Suite("CIOEngine over TLS", .timeLimit(.minutes(3)))
struct TLSTests {
    @Test("TLS echo with the test CA trusted, by host name")
    func trustedEcho() async throws {
        let certificates = try await Certificates.load()
        let server = try await PythonServer.start(mode: "echo", certificate: certificates.server)
        try await withEngine(tlsEngine(.init(trustRoots: .file(certificates.caFile)))) { engine in
            let transport = try await engine.connect(
                to: EngineEndpoint(host: "localhost", port: server.port, secure: true), options: options())
            let recorder = Recorder()
            transport.start(handler: recorder)
            let payload = pattern(count: 3 * 1024 * 1024, seed: 11)
            var offset = 0
            while offset < payload.count {
                let end = min(payload.count, offset + 100_000)
                transport.write(Array(payload[offset..<end]))
                offset = end
            }
            #expect(await recorder.wait(timeout: .seconds(60)) { $0.received.count >= payload.count })
            #expect(recorder.received == payload)
            transport.close()
            #expect(await recorder.wait { $0.closes == 1 })
            #expect(recorder.state.withLock { $0.closeErrorText } == nil)
        }
    }

    @Test("TLS to an IP literal verifies the IP address in the certificate")
    func ipAddressVerification() async throws {
        let certificates = try await Certificates.load()
        let server = try await PythonServer.start(mode: "echo", certificate: certificates.server)
        try await withEngine(tlsEngine(.init(trustRoots: .file(certificates.caFile)))) { engine in
            let transport = try await engine.connect(
                to: EngineEndpoint(host: "127.0.0.1", port: server.port, secure: true), options: options())
            let recorder = Recorder()
            transport.start(handler: recorder)
            transport.write(Array("ip".utf8))
            #expect(await recorder.wait { $0.received.count == 2 })
            transport.abort()
            #expect(await recorder.wait { $0.closes == 1 })
        }
    }

    @Test("TLS 1.3 minimum works against a TLS 1.3 server")
    func tls13Minimum() async throws {
        let certificates = try await Certificates.load()
        let server = try await PythonServer.start(mode: "echo", certificate: certificates.server)
        try await withEngine(tlsEngine(.init(trustRoots: .file(certificates.caFile), minimumVersion: .tls13))) {
            engine in
            let transport = try await engine.connect(
                to: EngineEndpoint(host: "localhost", port: server.port, secure: true), options: options())
            transport.abort()
        }
    }

    @Test("a self-signed certificate is rejected")
    func untrustedRejected() async throws {
        let certificates = try await Certificates.load()
        let server = try await PythonServer.start(mode: "echo", certificate: certificates.untrusted)
        try await withEngine(tlsEngine(.init(trustRoots: .file(certificates.caFile)))) { engine in
            let error = await connectionError {
                _ = try await engine.connect(
                    to: EngineEndpoint(host: "localhost", port: server.port, secure: true), options: options())
            }
            #expect(error?.code == .tlsFailure)
            #expect(error?.message.contains("certificate verify failed") == true, "\(String(describing: error))")
        }
    }

    @Test("the system trust store does not trust the test CA")
    func systemStoreRejectsTestCA() async throws {
        let certificates = try await Certificates.load()
        let server = try await PythonServer.start(mode: "echo", certificate: certificates.server)
        try await withEngine { engine in
            let error = await connectionError {
                _ = try await engine.connect(
                    to: EngineEndpoint(host: "localhost", port: server.port, secure: true), options: options())
            }
            #expect(error?.code == .tlsFailure)
            #expect(
                error?.message.contains("unable to get local issuer certificate") == true,
                "\(String(describing: error))")
        }
    }

    @Test("a certificate for another name is rejected (hostname mismatch)")
    func hostnameMismatch() async throws {
        let certificates = try await Certificates.load()
        let server = try await PythonServer.start(mode: "echo", certificate: certificates.otherName)
        try await withEngine(tlsEngine(.init(trustRoots: .file(certificates.caFile)))) { engine in
            let error = await connectionError {
                _ = try await engine.connect(
                    to: EngineEndpoint(host: "localhost", port: server.port, secure: true), options: options())
            }
            #expect(error?.code == .tlsFailure)
            #expect(
                error?.message.contains("certificate verify failed: hostname mismatch") == true,
                "\(String(describing: error))")
        }
    }

    @Test("serverNameOverride is what gets verified")
    func serverNameOverride() async throws {
        let certificates = try await Certificates.load()
        let server = try await PythonServer.start(mode: "echo", certificate: certificates.server)
        try await withEngine(
            tlsEngine(.init(trustRoots: .file(certificates.caFile), serverNameOverride: "wrong.example"))
        ) {
            engine in
            let error = await connectionError {
                _ = try await engine.connect(
                    to: EngineEndpoint(host: "localhost", port: server.port, secure: true), options: options())
            }
            #expect(error?.code == .tlsFailure)
            #expect(error?.message.contains("hostname mismatch") == true, "\(String(describing: error))")
        }
        let other = try await PythonServer.start(mode: "echo", certificate: certificates.otherName)
        try await withEngine(
            tlsEngine(.init(trustRoots: .file(certificates.caFile), serverNameOverride: "other.example"))
        ) {
            engine in
            let transport = try await engine.connect(
                to: EngineEndpoint(host: "127.0.0.1", port: other.port, secure: true), options: options())
            transport.abort()
        }
    }

    @Test("dangerouslyDisableCertificateVerification accepts a self-signed certificate")
    func verificationDisabled() async throws {
        let certificates = try await Certificates.load()
        let server = try await PythonServer.start(mode: "echo", certificate: certificates.untrusted)
        try await withEngine(tlsEngine(.init(dangerouslyDisableCertificateVerification: true))) { engine in
            let transport = try await engine.connect(
                to: EngineEndpoint(host: "localhost", port: server.port, secure: true), options: options())
            let recorder = Recorder()
            transport.start(handler: recorder)
            transport.write(Array("insecure".utf8))
            #expect(await recorder.wait { $0.received.count == 8 })
            transport.close()
            #expect(await recorder.wait { $0.closes == 1 })
        }
    }

    @Test("TLS: paused reads keep decrypted data until resumed")
    func tlsPauseResume() async throws {
        let certificates = try await Certificates.load()
        let server = try await PythonServer.start(mode: "echo", certificate: certificates.server)
        try await withEngine(tlsEngine(.init(trustRoots: .file(certificates.caFile)))) { engine in
            let transport = try await engine.connect(
                to: EngineEndpoint(host: "localhost", port: server.port, secure: true), options: options())
            let recorder = Recorder()
            transport.start(handler: recorder)
            let payload = pattern(count: 1_000_000, seed: 21)
            transport.setReadingPaused(true)
            transport.write(payload)
            // The echo is waiting in our socket, and the loop has seen it arrive.
            let fd = try #require(SocketProbe.descriptor(remotePort: server.port))
            #expect(await eventually { SocketProbe.unreadBytes(fd) ?? 0 > 0 || recorder.receivedCount > 0 })
            await loopRounds(transport.executor)
            #expect(recorder.receivedCount == 0)
            for _ in 0..<20 {
                transport.setReadingPaused(false)
                try await Task.sleep(for: .milliseconds(5))
                transport.setReadingPaused(true)
            }
            transport.setReadingPaused(false)
            #expect(await recorder.wait(timeout: .seconds(30)) { $0.received.count >= payload.count })
            #expect(recorder.received == payload)
            transport.close()
            #expect(await recorder.wait { $0.closes == 1 })
        }
    }

    @Test("TLS: a burst of small writes on the loop thread leaves as full records and arrives in order")
    func tlsSmallWriteBurst() async throws {
        let certificates = try await Certificates.load()
        // The server reads nothing until released: the burst fills the kernel's buffers, so SSL_write meets
        // WANT_WRITE and is retried when the socket drains.
        let server = try await PythonServer.start(mode: "slow-echo", certificate: certificates.server)
        try await withEngine(tlsEngine(.init(trustRoots: .file(certificates.caFile)))) { engine in
            let transport = try await engine.connect(
                to: EngineEndpoint(host: "localhost", port: server.port, secure: true), options: options())
            // 16 MB in writes of 1...97 bytes (about 330,000), made on the loop thread.
            let payload = pattern(count: 16_000_000, seed: 31)
            let recorder = Recorder()
            transport.start(handler: recorder)
            await writeInSmallPieces(payload, to: transport)
            await loopRounds(transport.executor)
            #expect(transport.bufferedBytes > 0, "16 MB cannot all fit in the kernel's buffers")
            server.release()
            #expect(await recorder.wait(timeout: .seconds(60)) { $0.received.count >= payload.count })
            #expect(recorder.received == payload)
            // Bytes on the wire: one record per write would add 22 bytes (TLS 1.3 header, content type, AEAD tag)
            // to each 49-byte write on average, +45 %; full 16 KiB records add about 0.1 %, plus the handshake.
            let fd = try #require(SocketProbe.descriptor(remotePort: server.port))
            #expect(await eventually { SocketProbe.unacknowledgedBytes(fd) == 0 })
            let sent = try #require(bytesAcknowledged(fd))
            #expect(sent < payload.count + payload.count / 50, "\(sent) bytes on the wire for \(payload.count)")
            transport.close()
            #expect(await recorder.wait { $0.closes == 1 })
            #expect(recorder.state.withLock { $0.closeErrorText } == nil)
        }
    }

    @Test("TLS: a peer that resets the connection mid-flush fails the transport once, promptly, without spinning")
    func tlsResetDuringFlush() async throws {
        let certificates = try await Certificates.load()
        // The server reads 64 KiB of the burst, then resets the connection (SO_LINGER 0) while most of it is
        // queued: the next SSL_write of a gathered record meets the reset.
        let server = try await PythonServer.start(mode: "read-reset", certificate: certificates.server)
        try await withEngine(tlsEngine(.init(trustRoots: .file(certificates.caFile)))) { engine in
            let transport = try await engine.connect(
                to: EngineEndpoint(host: "localhost", port: server.port, secure: true), options: options())
            let recorder = Recorder()
            transport.start(handler: recorder)
            let loopThread = await Task(executorPreference: transport.executor) { pthread_self() }.value
            var clock = clockid_t()
            try #require(pthread_getcpuclockid(loopThread, &clock) == 0)
            // 16 MB in writes of 1...97 bytes on the loop thread: flushed as records gathered from the queue.
            let payload = pattern(count: 16_000_000, seed: 41)
            await writeInSmallPieces(payload, to: transport)
            // A transport that kept retrying the failed write would never report the close (and would hold its
            // lock, so nothing below that takes it may run).
            try #require(await recorder.wait(timeout: .seconds(10)) { $0.closes == 1 })
            let error = recorder.state.withLock { $0.closeError }
            #expect(error?.code == .tlsFailure)
            #expect(
                error?.message.hasPrefix("TLS error writing to localhost:\(server.port)") == true,
                "\(error.map { "\($0)" } ?? "no error")")
            // The loop thread is idle afterwards: nothing keeps retrying the dead connection.
            func cpuTime() -> Duration {
                var time = timespec()
                clock_gettime(clock, &time)
                return .seconds(time.tv_sec) + .nanoseconds(time.tv_nsec)
            }
            let before = cpuTime()
            try await Task.sleep(for: .milliseconds(300))
            #expect(cpuTime() - before < .milliseconds(100))
            #expect(transport.bufferedBytes == 0)
            #expect(transport.write([1, 2, 3]) == 0)
            #expect(recorder.closes == 1)
        }
    }

    @Test("a missing CA file is a readable tlsFailure")
    func missingCAFile() async throws {
        try await withEngine(tlsEngine(.init(trustRoots: .file("/nonexistent/ca.pem")))) { engine in
            let error = await connectionError {
                _ = try await engine.connect(
                    to: EngineEndpoint(host: "localhost", port: 1, secure: true), options: options())
            }
            #expect(error?.code == .tlsFailure)
            #expect(error?.message.contains("/nonexistent/ca.pem") == true)
        }
    }

    @Test("ws:// first, then wss:// on the same engine: OpenSSL loads late and still verifies")
    func plainThenTLSOnOneEngine() async throws {
        // The engine loads OpenSSL only when its first TLS context is built; a plain connection before it must not
        // leave TLS half set up: the later wss connections verify as on an engine that started with TLS.
        let certificates = try await Certificates.load()
        let plain = try await PythonServer.start(mode: "echo")
        let trusted = try await PythonServer.start(mode: "echo", certificate: certificates.server)
        let untrusted = try await PythonServer.start(mode: "echo", certificate: certificates.untrusted)
        try await withEngine(tlsEngine(.init(trustRoots: .file(certificates.caFile)))) { engine in
            _ = try await echoOneByte(engine, port: plain.port, 7)
            let error = await connectionError {
                _ = try await engine.connect(
                    to: EngineEndpoint(host: "localhost", port: untrusted.port, secure: true), options: options())
            }
            #expect(error?.code == .tlsFailure)
            #expect(error?.message.contains("certificate verify failed") == true, "\(String(describing: error))")
            let transport = try await engine.connect(
                to: EngineEndpoint(host: "localhost", port: trusted.port, secure: true), options: options())
            let recorder = Recorder()
            transport.start(handler: recorder)
            transport.write(Array("late tls".utf8))
            #expect(await recorder.wait { $0.received.count == 8 })
            #expect(recorder.received == Array("late tls".utf8))
            transport.close()
            #expect(await recorder.wait { $0.closes == 1 })
        }
    }
}
