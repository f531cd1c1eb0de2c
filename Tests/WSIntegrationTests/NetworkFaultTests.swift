// Network faults on a real network path (RELIABILITY.md rows F1, F3, F6): the server runs in a network namespace
// behind a veth pair (Tests/Fixtures/netns.sh), and the path is broken with nftables (every packet dropped
// mid-session) or throttled with tc tbf. netem is not available on this kernel, so there is no delay or random loss.
// Needs root, iproute2 and network namespaces; skipped with the reason otherwise. Each test takes a few seconds.
import Foundation
import Synchronization
import Testing
import WSCore
import WSTesting

#if canImport(Glibc)
import Glibc
#endif

/// Runs `body` with a fresh namespace, always tearing it down.
private func withNamespace<T>(_ body: (NetworkNamespace) async throws -> T) async throws -> T {
    let namespace = try await NetworkNamespace.create()
    do {
        let result = try await body(namespace)
        await namespace.tearDown()
        return result
    } catch {
        await namespace.tearDown()
        throw error
    }
}

/// Starts a WSTesting server listening inside `namespace`.
private func serverInside(
    _ namespace: NetworkNamespace, handler: WebSocketTestServer.Handler = .echo
) async throws -> (server: WebSocketTestServer, url: String) {
    let host = namespace.insideAddress
    let server = try await namespace.inside {
        var configuration = WebSocketTestServer.Configuration()
        configuration.host = host
        return try WebSocketTestServer.start(configuration, handler: handler)
    }
    return (server, "ws://\(host):\(server.port)/")
}

@Suite(
    "Network faults in a network namespace (F1, F3, F6)",
    .enabled(
        if: NetworkNamespace.mayBeAvailable, "needs root and iproute2 (ip, tc); cancelled when namespaces do not work"))
struct NetworkFaultTests {
    @Test(
        "every packet dropped mid-session: the pong timeout fails the session (1011), the close timeout ends it",
        arguments: TestEngine.allCases)
    func blackholeMidSession(engine: TestEngine) async throws {
        try await withNamespace { namespace in
            let (server, url) = try await serverInside(namespace)
            defer { server.stop() }
            let client = engine.client {
                $0.pingInterval = .milliseconds(300)
                $0.pongTimeout = .milliseconds(600)
                $0.closeTimeout = .seconds(1)
            }
            try await withClient(client) { client in
                let session = try await client.webSocketSession(url)
                try await session.send("through the veth")
                #expect(try await nextMessage(session).readText() == "through the veth")
                // The path works: one of our keepalive pings is answered (its pong arrives on `incoming`; were none
                // answered, the pong timeout would end the session and this would throw).
                while try await session.incoming.receive().kind != .pong {}
                // Before the drop, not after: packets stop somewhere inside dropAll(), whose return (a process
                // exit, then this task's wakeup) can come hundreds of milliseconds later on a loaded machine.
                let dropped = ContinuousClock.now
                try await namespace.dropAll()
                let error = await #expect(throws: WebSocketError.self) { for try await _ in session.incoming {} }
                #expect(error?.code == .pongTimeout, "\(String(describing: error))")
                #expect(error?.closeCode == .internalError)
                #expect(await session.closeReason?.code == .internalError)
                let ended = ContinuousClock.now - dropped
                // The pong timeout (0.6 s after a ping) fires no earlier than the drop: a ping sent more than 0.6 s
                // before it was answered in time. Our close frame cannot arrive either, so the close timeout (1 s)
                // runs out before the connection is dropped: at least 1 s after the drop began (timers never fire
                // early); ended at the pong timeout instead, it would be 0.3-0.9 s. The upper bound only has to be
                // far below "never".
                #expect(ended >= .seconds(1), "the close timeout must run out: ended \(ended) after the drop")
                #expect(ended < .seconds(10), "\(ended)")
                #expect(session.isClosed)
            }
        }
    }

    @Test(
        "every packet dropped, then close(): given up after the close timeout with 1006", arguments: TestEngine.allCases
    )
    func blackholeThenClose(engine: TestEngine) async throws {
        try await withNamespace { namespace in
            let (server, url) = try await serverInside(namespace)
            defer { server.stop() }
            try await withClient(engine.client { $0.closeTimeout = .seconds(1) }) { client in
                let session = try await client.webSocketSession(url)
                try await session.send("hello")
                #expect(try await nextMessage(session).readText() == "hello")
                try await namespace.dropAll()
                let start = ContinuousClock.now
                await session.close()
                let elapsed = ContinuousClock.now - start
                #expect(elapsed >= .milliseconds(900) && elapsed < .seconds(8), "\(elapsed)")
                #expect(await session.closeReason?.code == .abnormalClosure)
                #expect(session.isClosed)
            }
        }
    }

    @Test("a server whose SYNs are dropped: connect times out with timedOut", arguments: TestEngine.allCases)
    func blackholedConnect(engine: TestEngine) async throws {
        try await withNamespace { namespace in
            let (server, url) = try await serverInside(namespace)
            defer { server.stop() }
            try await namespace.dropAll()
            let start = ContinuousClock.now
            try await withClient(engine.client()) { client in
                let error = await #expect(throws: WebSocketError.self) {
                    _ = try await client.webSocketSession(url) { $0.timeout.connectTimeout = .seconds(1) }
                }
                #expect(error?.code == .timedOut, "\(String(describing: error))")
            }
            #expect(ContinuousClock.now - start < .seconds(8))
        }
    }

    @Test(
        "a 1 Mbit/s link: a big send waits instead of growing memory",
        .enabled(if: MemoryIsolation.isChild, MemoryIsolation.skipReason), arguments: TestEngine.allCases)
    func throttledSend(engine: TestEngine) async throws {
        try await withNamespace { namespace in
            let received = Atomic<Int>(0)
            let (server, url) = try await serverInside(
                namespace,
                handler: .custom { session in
                    while let frame = try session.receive() {
                        received.add(frame.data.count, ordering: .relaxed)
                        if frame.kind == .close { return }
                    }
                })
            defer { server.stop() }
            try await namespace.shape(rate: "1mbit")
            let message = [UInt8](repeating: 0x5A, count: 1 << 20)
            let offered = 64
            let progress = SendProgress()
            try await withClient(engine.client()) { client in
                let session = try await client.webSocketSession(url)
                let (_, growth) = try await ResidentMemory.peakGrowth("\(engine) 1 Mbit/s link") {
                    let sender = Task { try await progress.send(message, times: offered, on: session) }
                    try await Task.sleep(for: .milliseconds(2000))
                    let done = progress.completed
                    let arrived = received.load(ordering: .relaxed)
                    // 2 s at 125 kB/s is about 250 kB; maxOutgoingBufferBytes (4 MiB) and the socket buffers are
                    // all that may be accepted beyond it.
                    #expect(arrived < 1 << 20, "the link is throttled: \(arrived) bytes arrived")
                    #expect(done < 16, "send must wait: \(done) of \(offered) MiB accepted in 2 s")
                    sender.cancel()
                    await client.close()  // aborts the transport, which releases the waiting send
                    _ = await sender.result
                }
                #expect(growth < 24 << 20, "offering 64 MiB over a 1 Mbit/s link grew memory by \(mebibytes(growth))")
            }
        }
    }

    @Test("a 1 Mbit/s link loses, duplicates and reorders nothing", arguments: TestEngine.allCases)
    func throttledOrder(engine: TestEngine) async throws {
        try await withNamespace { namespace in
            let (server, url) = try await serverInside(namespace)
            defer { server.stop() }
            try await namespace.shape(rate: "1mbit")
            try await withClient(engine.client()) { client in
                let session = try await client.webSocketSession(url)
                let count = 80
                let padding = String(repeating: "p", count: 1500)
                let start = ContinuousClock.now
                for i in 0..<count { try await session.send("\(i) \(padding)") }
                for i in 0..<count {
                    let text = try await nextMessage(session).readText()
                    #expect(text.hasPrefix("\(i) "), "message \(i) arrived as \(text.prefix(8))")
                }
                // 120 kB each way at 125 kB/s: about a second, so the shaping really was in the path.
                #expect(ContinuousClock.now - start > .milliseconds(700))
                await session.close()
                #expect(await session.closeReason?.code == .normal)
            }
        }
    }
}
