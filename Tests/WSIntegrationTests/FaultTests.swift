// Faults (RELIABILITY.md section 3.2, rows F1–F5 and F8) on both engines, on loopback: connections cut mid-frame
// and mid-handshake by EOF or RST, slowloris frames, a server that stops reading, DNS and TLS failures. Each test
// asserts the error a user sees. Already covered elsewhere (not repeated): a silent server trips the pong timeout
// (MisbehavingServerTests.pongTimeout), a server that never answers our close (MisbehavingServerTests.closeTimeout,
// WSTestingMisbehaviourTests.ignoresClose), EOF mid-frame (dropMidFrame in both), connection refused
// (ConnectionErrorTests), a handshake that never comes (open timeout), TLS certificate failures (TLSTests).
import EngineTestSupport
import Foundation
import Synchronization
import Testing
import WSCore
import WSTesting

#if canImport(Glibc)
import Glibc
#endif

@Suite("Faults: cut connections, slow and stalled peers, DNS and TLS (F1–F5, F8)")
struct FaultTests {
    // MARK: F2 cut mid-frame

    /// Where a server frame is cut and how.
    struct Cut: Sendable, CustomStringConvertible {
        /// The case's name.
        let description: String
        /// How many bytes of a 1000-byte binary frame (4-byte header) go out before the cut.
        let bytes: Int
        /// RST (SO_LINGER 0) instead of FIN.
        let reset: Bool
    }

    static let cuts: [Cut] = [
        Cut(description: "FIN after 1 header byte", bytes: 1, reset: false),
        Cut(description: "FIN inside the extended length", bytes: 3, reset: false),
        Cut(description: "RST after 1 header byte", bytes: 1, reset: true),
        Cut(description: "RST inside the extended length", bytes: 3, reset: true),
        Cut(description: "RST mid-payload", bytes: 300, reset: true),
    ]

    @Test(
        "a connection cut mid-frame surfaces one connectionLost / 1006, and the session is finished",
        arguments: TestEngine.allCases, cuts)
    func cutMidFrame(engine: TestEngine, cut: Cut) async throws {
        let frame = rawFrame(0x82, [UInt8](repeating: 7, count: 1000))
        let server = try ScriptedServer { connection in
            try connection.acceptUpgrade()
            try connection.write(rawFrame(0x81, Array("before".utf8)) + Array(frame.prefix(cut.bytes)))
            // The client holds the partial frame when the cut comes: it has read every byte before it.
            guard connection.waitUntilClientRead() else {
                throw RawConnectionError(description: "the client did not read the bytes before the cut within 10 s")
            }
            if cut.reset { connection.reset() } else { connection.shutdownWrite() }
            if !cut.reset { connection.drainUntilEnd() }
        }
        defer { server.stop() }
        try await withClient(engine.client { $0.closeTimeout = .seconds(2) }) { client in
            let session = try await client.webSocketSession(server.url)
            let (received, errors) = try await readToEnd(session)
            #expect(received.map { try? $0.readText() } == ["before"], "frames before the cut are delivered")
            #expect(errors.count == 1)
            #expect(errors.first?.code == .connectionLost, "\(cut): \(String(describing: errors.first))")
            #expect(errors.first?.closeCode == .abnormalClosure)
            #expect(await session.closeReason?.code == .abnormalClosure)
            #expect(session.isClosed)
            // The same failure again, never a hang; close returns at once.
            let again = await #expect(throws: WebSocketError.self) { _ = try await session.incoming.receive() }
            #expect(again?.code == .connectionLost || again?.code == .sessionClosed)
            let send = await #expect(throws: WebSocketError.self, "a send after the loss must not vanish silently") {
                try await session.send("late")
            }
            #expect(send?.code == .sessionClosed)
            let start = ContinuousClock.now
            await session.close()
            #expect(ContinuousClock.now - start < .milliseconds(500))
        }
        #expect(await server.waitUntilFinished())
        #expect(server.scriptErrors.isEmpty, "\(cut): \(server.scriptErrors)")
    }

    @Test(
        "a cut that lands behind unread bytes while reading is paused surfaces the same way once it resumes",
        arguments: TestEngine.allCases, cuts)
    func cutBehindUnreadBytes(engine: TestEngine, cut: Cut) async throws {
        let frame = rawFrame(0x82, [UInt8](repeating: 7, count: 1000))
        let cutArrived = Atomic<Bool>(false)
        let server = try ScriptedServer { connection in
            try connection.acceptUpgrade()
            // One message fills the client's buffer (maxIncomingBufferMessages 1): it stops reading.
            try connection.write(rawFrame(0x81, Array("filler".utf8)))
            guard connection.waitUntilClientRead(), let client = connection.clientDescriptor() else {
                throw RawConnectionError(description: "the client did not read the first message within 10 s")
            }
            let bytes = rawFrame(0x81, Array("before".utf8)) + Array(frame.prefix(cut.bytes))
            try connection.write(bytes)
            // The bytes wait unread in the client's socket, and the cut lands behind them.
            guard SocketProbe.poll(timeout: .seconds(10), { SocketProbe.unreadBytes(client) == bytes.count }) else {
                throw RawConnectionError(
                    description: "the client's socket did not hold the \(bytes.count) bytes unread")
            }
            if cut.reset { connection.reset() } else { connection.shutdownWrite() }
            let state = cut.reset ? SocketProbe.closed : SocketProbe.closeWait
            guard SocketProbe.poll(timeout: .seconds(10), { SocketProbe.tcpState(client) == state }) else {
                throw RawConnectionError(description: "the cut did not reach the client's socket within 10 s")
            }
            cutArrived.store(true, ordering: .releasing)
            if !cut.reset { connection.drainUntilEnd() }
        }
        defer { server.stop() }
        let client = engine.client {
            $0.maxIncomingBufferMessages = 1
            $0.closeTimeout = .seconds(2)
        }
        try await withClient(client) { client in
            let session = try await client.webSocketSession(server.url)
            #expect(await eventually { cutArrived.load(ordering: .acquiring) }, "\(server.scriptErrors)")
            let (received, errors) = try await readToEnd(session)
            #expect(received.map { try? $0.readText() } == ["filler", "before"], "frames before the cut are delivered")
            #expect(errors.count == 1)
            #expect(errors.first?.code == .connectionLost, "\(cut): \(String(describing: errors.first))")
            #expect(await session.closeReason?.code == .abnormalClosure)
            #expect(session.isClosed)
        }
        #expect(await server.waitUntilFinished())
        #expect(server.scriptErrors.isEmpty, "\(cut): \(server.scriptErrors)")
    }

    // MARK: F2 cut mid-handshake

    /// Where the opening handshake is cut.
    struct HandshakeCut: Sendable, CustomStringConvertible {
        /// The case's name.
        let description: String
        /// What of the response goes out before the cut.
        let bytes: [UInt8]
        /// RST (SO_LINGER 0) instead of FIN.
        let reset: Bool
    }

    static let handshakeCuts: [HandshakeCut] = [
        HandshakeCut(description: "FIN before any byte", bytes: [], reset: false),
        HandshakeCut(description: "RST before any byte", bytes: [], reset: true),
        HandshakeCut(description: "FIN inside the status line", bytes: Array("HTTP/1.1 10".utf8), reset: false),
        HandshakeCut(description: "RST inside the status line", bytes: Array("HTTP/1.1 10".utf8), reset: true),
        HandshakeCut(
            description: "FIN before the blank line",
            bytes: Array("HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n".utf8), reset: false),
        HandshakeCut(
            description: "RST before the blank line",
            bytes: Array("HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n".utf8), reset: true),
    ]

    @Test(
        "a connection cut during the opening handshake is a network error", arguments: TestEngine.allCases,
        handshakeCuts)
    func cutMidHandshake(engine: TestEngine, cut: HandshakeCut) async throws {
        let server = try ScriptedServer { connection in
            try connection.readHead()
            if !cut.bytes.isEmpty { try connection.write(cut.bytes) }
            // The client has read the partial response when the cut comes.
            guard connection.waitUntilClientRead() else {
                throw RawConnectionError(description: "the client did not read the partial response within 10 s")
            }
            if cut.reset { connection.reset() } else { connection.shutdownWrite() }
        }
        defer { server.stop() }
        let start = ContinuousClock.now
        try await withClient(engine.client()) { client in
            let error = await #expect(throws: WebSocketError.self, "\(cut)") {
                _ = try await client.webSocketSession(server.url) { $0.timeout.openTimeout = .seconds(30) }
            }
            #expect(error?.code == .network, "\(cut): \(String(describing: error))")
            #expect(error?.message.contains("opening handshake") == true, "\(String(describing: error))")
        }
        #expect(ContinuousClock.now - start < .seconds(10), "reported at once, not by the 30 s open timeout")
        #expect(await server.waitUntilFinished())
        #expect(server.scriptErrors.isEmpty, "\(cut): \(server.scriptErrors)")
    }

    // MARK: F4 slowloris frames

    @Test(
        "a frame drip-fed one byte every 100 ms is ended by the ping/pong timeout (the read timeout)",
        arguments: TestEngine.allCases)
    func slowlorisFrame(engine: TestEngine) async throws {
        let server = try ScriptedServer { connection in
            try connection.acceptUpgrade()
            // A 300-byte text frame at 10 bytes per second: 30 s, far beyond the client's deadline.
            connection.drip(rawFrame(0x81, [UInt8](repeating: 0x61, count: 300)), every: .milliseconds(100))
        }
        defer { server.stop() }
        let client = engine.client {
            $0.pingInterval = .milliseconds(300)
            $0.pongTimeout = .milliseconds(500)
            $0.closeTimeout = .milliseconds(500)
        }
        let start = ContinuousClock.now
        try await withClient(client) { client in
            let session = try await client.webSocketSession(server.url)
            let error = await #expect(throws: WebSocketError.self) { for try await _ in session.incoming {} }
            #expect(error?.code == .pongTimeout, "\(String(describing: error))")
            #expect(error?.closeCode == .internalError)
            #expect(await session.closeReason?.code == .internalError)
        }
        let elapsed = ContinuousClock.now - start
        // About 1.3 s (interval + pong timeout + close timeout) on an idle machine; far below the 30 s drip.
        #expect(elapsed < .seconds(20), "the pong timeout ends it, not the drip: \(elapsed)")
    }

    // MARK: F5 a server that stops reading

    @Test(
        "a server that stops reading makes send wait: the queue stays bounded and memory flat",
        .enabled(if: MemoryIsolation.isChild, MemoryIsolation.skipReason), arguments: TestEngine.allCases)
    func serverStopsReading(engine: TestEngine) async throws {
        let release = Atomic<Bool>(false)
        let server = try ScriptedServer(receiveBufferSize: 4096) { connection in
            try connection.acceptUpgrade()
            while !release.load(ordering: .acquiring) { usleep(10_000) }
            connection.reset()
        }
        defer { server.stop() }
        let message = [UInt8](repeating: 0x42, count: 1 << 20)
        let offered = 64
        let progress = SendProgress()
        try await withClient(engine.client()) { client in
            let session = try await client.webSocketSession(server.url)
            let (_, growth) = try await ResidentMemory.peakGrowth("\(engine) server stops reading") {
                let sender = Task { try await progress.send(message, times: offered, on: session) }
                try await Task.sleep(for: .milliseconds(1500))
                let done = progress.completed
                // 4 MiB of maxOutgoingBufferBytes, the kernel's socket buffers (a few MiB) and one message.
                #expect(done < 16, "send must wait once the buffer is full; \(done) of \(offered) MiB were accepted")
                release.store(true, ordering: .releasing)
                // The server goes away: the waiting send returns and nothing hangs.
                if case .failure(let error) = await sender.result {
                    #expect((error as? WebSocketError)?.code == .sessionClosed, "\(error)")
                }
            }
            #expect(progress.completed < offered, "sends after the connection was lost must fail")
            #expect(growth < 24 << 20, "offering 64 MiB grew resident memory by \(mebibytes(growth))")
            let error = await #expect(throws: WebSocketError.self) { for try await _ in session.incoming {} }
            #expect(error?.code == .connectionLost)
        }
    }

    @Test(
        "a send that waits for a server that stops reading ends when its task is cancelled; the message still arrives",
        arguments: TestEngine.allCases)
    func cancelledSendToServerThatStopsReading(engine: TestEngine) async throws {
        let release = Atomic<Bool>(false)
        let server = try ScriptedServer(receiveBufferSize: 4096) { connection in
            try connection.acceptUpgrade()
            while !release.load(ordering: .acquiring) { usleep(10_000) }
            // Then reads what the client sent and answers with the payload sizes ("16777216 5").
            var sizes: [Int] = []
            while sizes.count < 2, let frame = try connection.readFrame() { sizes.append(frame.payload.count) }
            let text = Array(sizes.map(String.init).joined(separator: " ").utf8)
            try connection.write([0x81, UInt8(text.count)] + text)
            _ = connection.readUntilClose()
        }
        defer { server.stop() }
        let message = [UInt8](repeating: 0x42, count: 16 << 20)
        try await withClient(engine.client { $0.maxOutgoingBufferBytes = 64 << 10 }) { client in
            let session = try await client.webSocketSession(server.url)
            // The server reads nothing: of 16 MiB the kernel's buffers take at most a few, the rest waits in ours.
            let sender = Task { try await session.send(message) }
            sender.cancel()
            let deadline = ContinuousClock.now + .seconds(10)
            let finished = Atomic<Bool>(false)
            let watcher = Task {
                _ = await sender.result
                finished.store(true, ordering: .releasing)
            }
            while !finished.load(ordering: .acquiring) && ContinuousClock.now < deadline {
                try await Task.sleep(for: .milliseconds(10))
            }
            let ended = finished.load(ordering: .acquiring)
            #expect(ended, "the cancelled send kept waiting for the server to read")
            release.store(true, ordering: .releasing)
            await watcher.value
            await #expect(throws: CancellationError.self) { try await sender.value }
            // The message was accepted before the wait: the server gets all of it, then the next one.
            try await session.send("after")
            let reply = try await session.incoming.receive()
            #expect(reply.kind == .text && reply.data == Array("\(16 << 20) 5".utf8))
            await session.close()
        }
    }

    // MARK: F8 TLS to a server that does not speak TLS

    @Test("wss to a plain HTTP server is a tlsFailure", arguments: TestEngine.allCases)
    func tlsToPlainServer(engine: TestEngine) async throws {
        let server = try ScriptedServer { connection in
            _ = try? connection.readFrame()  // whatever the ClientHello looks like: read some bytes
            try? connection.write(
                Array("HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\nConnection: close\r\n\r\n".utf8))
            connection.shutdownWrite()
            connection.drainUntilEnd()
        }
        defer { server.stop() }
        let certificates = try await sharedCertificates()
        try await withClient(engine.client(trustedCA: certificates.caCertificate)) { client in
            let error = await #expect(throws: WebSocketError.self) {
                _ = try await client.webSocketSession("wss://127.0.0.1:\(server.port)/") {
                    $0.timeout.openTimeout = .seconds(20)
                }
            }
            #expect(error?.code == .tlsFailure, "\(String(describing: error))")
        }
    }

    // MARK: F8 DNS, with nothing leaving the machine

    /// Set in the child process that runs ``dnsFailureInIsolation(engine:)`` inside an empty network namespace.
    static let isDNSChild = ProcessInfo.processInfo.environment["WS_TEST_DNS_CHILD"] == "1"

    /// Ways to run a command in a new, empty network namespace: as root, or in a user namespace when not root.
    static let isolationPrefixes = [
        ["/usr/bin/unshare", "--net"], ["/usr/bin/unshare", "--user", "--map-root-user", "--net"],
    ]

    @Test(
        "an unresolvable .invalid host is dnsFailure on both engines, resolved in an empty network namespace",
        .enabled(
            if: !FaultTests.isDNSChild && FileManager.default.isExecutableFile(atPath: "/usr/bin/unshare"),
            "needs unshare(1) from util-linux"))
    func dnsFailure() async throws {
        // glibc has no special case for .invalid (RFC 6761 section 6.4): outside a namespace this lookup sends an A
        // and an AAAA query to the resolver in /etc/resolv.conf. In an empty namespace nothing can leave.
        var prefix: [String]?
        for candidate in Self.isolationPrefixes
        where await runProcess(candidate[0], Array(candidate.dropFirst()) + ["/bin/true"]).status == 0 {
            prefix = candidate
            break
        }
        guard let prefix else { try Test.cancel("unshare --net is not permitted here (needs root or user namespaces)") }
        let result = try await ChildTestRun.run(
            filter: "FaultTests/dnsFailureInIsolation", environment: ["WS_TEST_DNS_CHILD": "1"], prefix: prefix)
        #expect(result.status == 0, "the isolated run failed:\n\(result.output)")
        #expect(
            result.output.contains("(child process) .invalid resolves to dnsFailure")
                && result.output.contains("with 2 test cases passed"),
            "the isolated test must have run on both engines:\n\(result.output)")
    }

    @Test(
        "(child process) .invalid resolves to dnsFailure inside an empty network namespace",
        .enabled(if: FaultTests.isDNSChild), arguments: TestEngine.allCases)
    func dnsFailureInIsolation(engine: TestEngine) async throws {
        // Only loopback exists here (and it is down), so no packet can leave the machine.
        let interfaces =
            (try? String(contentsOfFile: "/proc/net/dev", encoding: .utf8))?
            .split(separator: "\n").dropFirst(2).map {
                $0.split(separator: ":")[0].trimmingCharacters(in: .whitespaces)
            } ?? []
        #expect(interfaces == ["lo"], "not isolated: \(interfaces)")
        let start = ContinuousClock.now
        try await withClient(engine.client()) { client in
            let error = await #expect(throws: WebSocketError.self) {
                _ = try await client.webSocketSession("ws://ws-test.invalid/") { $0.timeout.openTimeout = .seconds(10) }
            }
            #expect(error?.code == .dnsFailure, "\(String(describing: error))")
            #expect(error?.message.contains("ws-test.invalid") == true)
        }
        #expect(ContinuousClock.now - start < .seconds(8))
    }
}

/// Counts the messages a sending task got through.
final class SendProgress: Sendable {
    private let count = Atomic<Int>(0)

    /// How many sends have returned.
    var completed: Int { self.count.load(ordering: .acquiring) }

    /// Sends `message` `times` times on `session`, counting each send that returns.
    func send(_ message: [UInt8], times: Int, on session: WebSocketSession) async throws {
        for _ in 0..<times {
            try await session.send(message)
            self.count.add(1, ordering: .releasing)
        }
    }
}

/// Every frame `incoming` delivers until it ends, and the `WebSocketError` it ends with, if any (other errors
/// are thrown).
private func readToEnd(_ session: WebSocketSession) async throws -> (frames: [Frame], errors: [WebSocketError]) {
    var received: [Frame] = []
    var errors: [WebSocketError] = []
    do {
        for try await frame in session.incoming { received.append(frame) }
    } catch let error as WebSocketError {
        errors.append(error)
    }
    return (received, errors)
}
