// Reconnecting sessions against real servers on both engines: the Python websockets peer killed and restarted on
// the same port, rejected upgrades (503 with Retry-After, 401, 403), closes that are retried (1012) or not (1008),
// the attempt limit, and a network that drops every packet (in a network namespace, as NetworkFaultTests).
import EngineTestSupport
import Foundation
import Synchronization
import Testing
import WSCore
import WSExtensions
import WSSerialization
import WSTesting

/// A policy that keeps the tests fast: delays of 50–400 ms.
private func fastConfiguration(
    _ edit: (inout ReconnectingWebSocketSession.Configuration) -> Void = { _ in }
) -> ReconnectingWebSocketSession.Configuration {
    var configuration = ReconnectingWebSocketSession.Configuration()
    configuration.policy.initialDelay = .milliseconds(100)
    configuration.policy.maximumDelay = .milliseconds(400)
    edit(&configuration)
    return configuration
}

/// States until the first that is not `reconnecting` (the attempts of an outage), returned with how many there were.
private func skipReconnecting(
    _ states: inout AsyncStream<ReconnectingWebSocketSession.State>.Iterator,
    sourceLocation: SourceLocation = #_sourceLocation
) async -> (ReconnectingWebSocketSession.State?, Int) {
    var skipped = 0
    while let state = await nextState(&states, within: 20, sourceLocation: sourceLocation) {
        guard case .reconnecting = state else { return (state, skipped) }
        skipped += 1
    }
    return (nil, skipped)
}

@Suite("Reconnecting sessions against real servers", .serialized)
struct ReconnectTests {
    @Test(
        "the server killed and restarted on its port: open → reconnecting → open, hook twice, queued sends in order",
        arguments: TestEngine.allCases)
    func serverRestart(engine: TestEngine) async throws {
        let peer = try await PythonPeer.start()
        let port = peer.port
        let hookRuns = Atomic<Int>(0)
        let configuration = fastConfiguration { configuration in
            configuration.onConnect = { connection in
                let run = hookRuns.add(1, ordering: .acquiringAndReleasing).newValue
                try await connection.send("hello \(run)")
            }
        }
        try await withClient(engine.client()) { client in
            let session = try client.reconnectingWebSocketSession(peer.url(path: "/echo"), configuration: configuration)
            var states = session.states.makeAsyncIterator()
            // `connecting` first, unless the first handshake finished before this subscription.
            var first = await nextState(&states, within: 20)
            if case .connecting = first { first = await nextState(&states, within: 20) }
            #expect(first?.isOpen == true)
            #expect(try await session.receiveMessage() == .text("hello 1"))

            peer.stop()
            guard case .reconnecting(1, _, let cause) = await nextState(&states, within: 20) else {
                Issue.record("no reconnecting state after the server stopped")
                return
            }
            // websockets closes with 1001 on shutdown; a connection it could not close cleanly shows as 1006.
            #expect(cause.closeCode == .goingAway || cause.closeCode == .abnormalClosure, "\(cause)")
            try await session.send("during 1")  // queued
            try await session.send("during 2")
            let restarted = try await PythonPeer.start(port: port)
            defer { restarted.stop() }
            let (reopened, failedAttempts) = await skipReconnecting(&states)
            #expect(reopened?.isOpen == true, "\(String(describing: reopened))")
            #expect(hookRuns.load(ordering: .acquiring) == 2)
            // The echo server returns them in the order they arrived: the hook's message, then the queued ones.
            // Read up to a last message sent now: a lost message shows as a difference, not as a hang.
            try await session.send("end")
            var echoed: [WebSocketMessage] = []
            while case let message = try await session.receiveMessage(), message != .text("end") {
                echoed.append(message)
            }
            #expect(
                echoed == [.text("hello 2"), .text("during 1"), .text("during 2")],
                "after \(failedAttempts) refused attempts")
            await session.close()
            #expect(
                await nextState(&states, within: 20).map { "\($0)" } == "closed: closed by the client (1000 NORMAL)")
        }
    }

    @Test(
        "wss, a subprotocol, permessage-deflate and streamed messages across a restart; an untrusted certificate is not retried",
        arguments: TestEngine.allCases)
    func tlsAndStreamingAcrossRestart(engine: TestEngine) async throws {
        let certificates = try await TestCertificates.load()
        let deflate = engine == .cio  // the curl engine cannot carry extensions
        let peer = try await PythonPeer.start(
            subprotocols: ["chat.v1"], deflate: deflate, tls: .init(certificates.server))
        let port = peer.port
        let client = engine.client(trustedCA: certificates.caCertificate) { ws in
            ws.streamsIncomingMessages = true
            if deflate { try? ws.extensions { try $0.install(.perMessageDeflate()) } }
        }
        try await withClient(client) { client in
            let session = try client.reconnectingWebSocketSession(
                peer.url(path: "/subprotocol", host: "localhost"), configuration: fastConfiguration()
            ) { $0.subprotocols = ["chat.v1"] }
            var states = session.states.makeAsyncIterator()
            var restarted: PythonPeer?
            defer { restarted?.stop() }
            for connection in 1...2 {
                let open =
                    connection == 1
                    ? await stateAfterConnecting(&states, within: 20) : await skipReconnecting(&states).0
                guard case .open(let subprotocol, let extensions) = open else {
                    Issue.record("connection \(connection): \(String(describing: open))")
                    return
                }
                #expect(subprotocol == "chat.v1")
                #expect(extensions.map(\.name) == (deflate ? ["permessage-deflate"] : []))
                #expect(try await session.receiveMessage() == .text("chat.v1"))
                // 300 KB streamed out in 3 fragments; the server echoes it as one message, streamed back in.
                let chunks = (0..<3).map { index in [UInt8](repeating: UInt8(index + connection), count: 100_000) }
                try await session.sendStreamingMessage(
                    .binary,
                    from: AsyncStream { continuation in
                        for chunk in chunks { continuation.yield(chunk) }
                        continuation.finish()
                    })
                let echoed = try await session.receiveStreamingMessage()
                #expect(echoed.kind == .binary)
                #expect(try await echoed.collect(upTo: 1 << 20) == chunks.flatMap { $0 }, "connection \(connection)")
                if connection == 1 {
                    peer.stop()
                    guard case .reconnecting = await nextState(&states, within: 20) else {
                        Issue.record("no reconnecting state after the server stopped")
                        return
                    }
                    restarted = try await PythonPeer.start(
                        subprotocols: ["chat.v1"], deflate: deflate, tls: .init(certificates.server), port: port)
                }
            }
            await session.close()
        }

        // The same server, a client that does not trust its CA: a certificate failure is not retried.
        let restarted = try await PythonPeer.start(tls: .init(certificates.server))
        defer { restarted.stop() }
        try await withClient(engine.client()) { client in
            let session = try client.reconnectingWebSocketSession(
                restarted.url(path: "/echo", host: "localhost"), configuration: fastConfiguration())
            var seen: [String] = []
            for await state in session.states { seen.append("\(state)") }
            #expect(seen.count == 2, "\(seen)")
            let cause = await session.closeCause
            #expect((cause.error as? WebSocketError)?.code == .tlsFailure, "\(seen)")
        }
    }

    @Test(
        "close() during a backoff delay returns at once; values through the content converter before it",
        arguments: TestEngine.allCases)
    func closeDuringBackoffAndConverter(engine: TestEngine) async throws {
        struct Quote: Codable, Equatable {
            var symbol: String
            var price: Double
        }
        let peer = try await PythonPeer.start()
        try await withClient(engine.client { $0.contentConverter = JSONWebSocketConverter() }) { client in
            let session = try client.reconnectingWebSocketSession(
                peer.url(path: "/echo"),
                configuration: fastConfiguration { configuration in
                    configuration.policy.initialDelay = .seconds(30)
                    configuration.policy.maximumDelay = .seconds(30)
                    configuration.policy.jitter = .none
                })
            var states = session.states.makeAsyncIterator()
            #expect(await stateAfterConnecting(&states, within: 20)?.isOpen == true)
            try await session.sendSerialized(Quote(symbol: "BTC", price: 1.5))
            #expect(try await session.receiveDeserialized(Quote.self) == Quote(symbol: "BTC", price: 1.5))

            peer.stop()
            guard case .reconnecting(1, let delay, _) = await nextState(&states, within: 20) else {
                Issue.record("no reconnecting state after the server stopped")
                return
            }
            #expect(delay == .seconds(30))
            let started = ContinuousClock.now
            await session.close()
            let took = ContinuousClock.now - started
            #expect(took < .seconds(1), "close() took \(took) during a backoff delay of \(delay)")
            #expect(
                await nextState(&states, within: 20).map { "\($0)" } == "closed: closed by the client (1000 NORMAL)")
            #expect(await nextState(&states, within: 20) == nil, "a state after closed")
        }
    }

    @Test("fail-fast mode: a send during the outage fails with notConnected", arguments: TestEngine.allCases)
    func serverRestartFailFast(engine: TestEngine) async throws {
        let peer = try await PythonPeer.start()
        let port = peer.port
        try await withClient(engine.client()) { client in
            let session = try client.reconnectingWebSocketSession(
                peer.url(path: "/echo"), configuration: fastConfiguration { $0.sendsWhileDisconnected = .failFast })
            var states = session.states.makeAsyncIterator()
            #expect(await stateAfterConnecting(&states, within: 20)?.isOpen == true)
            peer.stop()
            guard case .reconnecting = await nextState(&states, within: 20) else {
                Issue.record("no reconnecting state")
                return
            }
            let error = await #expect(throws: WebSocketError.self) { try await session.send("lost") }
            #expect(error?.code == .notConnected)
            #expect(error?.message.contains("not sent") == true, "\(String(describing: error))")
            let restarted = try await PythonPeer.start(port: port)
            defer { restarted.stop() }
            #expect(await skipReconnecting(&states).0?.isOpen == true)
            try await session.send("back")
            #expect(try await session.receiveMessage() == .text("back"))
            await session.close()
        }
    }

    @Test("503 with Retry-After: 2 is retried, no sooner than 2 s", arguments: TestEngine.allCases)
    func retryAfter(engine: TestEngine) async throws {
        let peer = try await PythonPeer.start()
        defer { peer.stop() }
        try await withClient(engine.client()) { client in
            let session = try client.reconnectingWebSocketSession(
                peer.url(path: "/reject?status=503&retry-after=2"),
                configuration: fastConfiguration { $0.policy.maxAttempts = 1 })
            var states = session.states.makeAsyncIterator()
            guard case .reconnecting(1, let delay, let cause) = await stateAfterConnecting(&states, within: 20) else {
                Issue.record("the 503 was not retried")
                return
            }
            let rejected = ContinuousClock.now
            #expect(delay >= .seconds(2), "\(delay)")
            #expect((cause.error as? WebSocketError)?.status == 503)
            // The second attempt is rejected too; with one attempt allowed the session then ends.
            guard case .closed(let last) = await nextState(&states, within: 20) else {
                Issue.record("not closed after the attempt limit")
                return
            }
            let elapsed = ContinuousClock.now - rejected
            #expect(elapsed >= .seconds(2), "retried after \(elapsed)")
            #expect(elapsed < .seconds(10), "\(elapsed)")
            #expect((last.error as? WebSocketError)?.status == 503)
        }
    }

    @Test("401 and 403 are not retried", arguments: TestEngine.allCases, [401, 403])
    func unauthorized(engine: TestEngine, status: Int) async throws {
        let peer = try await PythonPeer.start()
        defer { peer.stop() }
        try await withClient(engine.client()) { client in
            let session = try client.reconnectingWebSocketSession(
                peer.url(path: "/reject?status=\(status)"), configuration: fastConfiguration())
            var states = session.states.makeAsyncIterator()
            guard case .closed(let cause) = await stateAfterConnecting(&states, within: 20) else {
                Issue.record("\(status) was retried")
                return
            }
            #expect((cause.error as? WebSocketError)?.status == status)
            let error = await #expect(throws: WebSocketError.self) { _ = try await session.receiveMessage() }
            #expect(error?.code == .sessionClosed && error?.isNormalClosure == false)
        }
    }

    @Test("a close with 1008 is not retried", arguments: TestEngine.allCases)
    func policyViolation(engine: TestEngine) async throws {
        let peer = try await PythonPeer.start()
        defer { peer.stop() }
        try await withClient(engine.client()) { client in
            let session = try client.reconnectingWebSocketSession(
                peer.url(path: "/close?code=1008&reason=banned"), configuration: fastConfiguration())
            var seen: [String] = []
            for await state in session.states { seen.append("\(state)") }
            #expect(!seen.contains { $0.hasPrefix("reconnecting") }, "\(seen)")
            #expect(seen.last == "closed: 1008 POLICY_VIOLATION: banned", "\(seen)")
        }
    }

    @Test(
        "a close with 1012 is retried; the attempt limit ends in closed with the last close",
        arguments: TestEngine.allCases)
    func serviceRestartAndLimit(engine: TestEngine) async throws {
        let peer = try await PythonPeer.start()
        defer { peer.stop() }
        try await withClient(engine.client()) { client in
            let session = try client.reconnectingWebSocketSession(
                peer.url(path: "/close?code=1012&reason=restarting"),
                configuration: fastConfiguration { $0.policy.maxAttempts = 2 })
            var seen: [String] = []
            for await state in session.states {
                // Whether the close arrived before the open state is a race, and the first connection may open
                // (or fail) before this subscription, whose first state is then the current one.
                if case .open = state { continue }
                if case .connecting = state { continue }
                seen.append("\(state)")
            }
            #expect(seen.count == 3, "\(seen)")
            #expect(seen.first?.hasPrefix("reconnecting (attempt 1 in") == true, "\(seen)")
            #expect(seen.dropFirst().first?.hasPrefix("reconnecting (attempt 2 in") == true, "\(seen)")
            #expect(seen.last == "closed: 1012 SERVICE_RESTART: restarting", "\(seen)")
        }
    }
}

@Suite(
    "Reconnecting sessions on a network that drops every packet",
    .serialized,
    .enabled(
        if: NetworkNamespace.mayBeAvailable, "needs root and iproute2 (ip, tc); cancelled when namespaces do not work"))
struct ReconnectNetworkTests {
    @Test(
        "dropped without FIN: the keepalive notices, attempts time out, and it reconnects when the link returns",
        arguments: TestEngine.allCases)
    func droppedNetwork(engine: TestEngine) async throws {
        let namespace = try await NetworkNamespace.create()
        do {
            try await self.droppedNetwork(engine: engine, namespace: namespace)
        } catch {
            await namespace.tearDown()
            throw error
        }
        await namespace.tearDown()
    }

    private func droppedNetwork(engine: TestEngine, namespace: NetworkNamespace) async throws {
        let host = namespace.insideAddress
        let server = try await namespace.inside {
            var configuration = WebSocketTestServer.Configuration()
            configuration.host = host
            return try WebSocketTestServer.start(configuration, handler: .echo)
        }
        defer { server.stop() }
        let configuration = fastConfiguration { configuration in
            configuration.pingInterval = .milliseconds(300)
            configuration.pongTimeout = .milliseconds(600)
        }
        // A close timeout longer than the bound on noticing: the dead connection is replaced without waiting for it.
        try await withClient(engine.client { $0.closeTimeout = .seconds(3) }) { client in
            let session = try client.reconnectingWebSocketSession(
                "ws://\(host):\(server.port)/", configuration: configuration
            ) { $0.timeout.connectTimeout = .milliseconds(500) }
            var states = session.states.makeAsyncIterator()
            #expect(await stateAfterConnecting(&states, within: 20)?.isOpen == true)
            try await session.send("through the veth")
            #expect(try await session.receiveMessage() == .text("through the veth"))

            try await namespace.dropAll()
            let dropped = ContinuousClock.now
            guard case .reconnecting(1, _, let cause) = await nextState(&states, within: 20) else {
                Issue.record("the dead connection was not noticed")
                return
            }
            let noticed = ContinuousClock.now - dropped
            #expect(cause.closeCode == .internalError, "\(cause)")  // the pong timeout
            // At most a ping interval and a pong timeout (0.9 s); waiting for the dead connection's close would add
            // the transport's close grace (2 s) or the close timeout (3 s).
            #expect(noticed < .seconds(2), "noticed \(noticed) after the drop")
            // Attempts while the link is down time out (the SYNs are dropped).
            guard case .reconnecting(2, _, let failure) = await nextState(&states, within: 20) else {
                Issue.record("no second attempt")
                return
            }
            #expect((failure.error as? WebSocketError)?.code == .timedOut, "\(failure)")
            try await namespace.undrop()
            #expect(await skipReconnecting(&states).0?.isOpen == true)
            try await session.send("back")
            #expect(try await session.receiveMessage() == .text("back"))
            await session.close()
        }
    }
}
