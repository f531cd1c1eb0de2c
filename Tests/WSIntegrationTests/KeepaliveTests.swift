// The keepalive against real peers: it never kills a healthy session whose code does not read `incoming`, it
// still detects a server that stops answering, and received pings and pongs cannot grow memory.
import Foundation
import Synchronization
import Testing
import WSCore

@Suite("Keepalive")
struct KeepaliveTests {
    /// Pings every 10 ms with an 80 ms pong timeout: the session below lives through more than 100 pong timeouts.
    static func keepaliveClient(_ engine: TestEngine) -> WebSocketClient {
        engine.client { ws in
            ws.pingInterval = .milliseconds(10)
            ws.pongTimeout = .milliseconds(80)
        }
    }

    @Test("a session that sends but does not read stays open past 100 pong timeouts", arguments: TestEngine.allCases)
    func senderThatNeverReads(engine: TestEngine) async throws {
        let peer = try await PythonPeer.start()
        defer { peer.stop() }
        try await withClient(Self.keepaliveClient(engine)) { client in
            let session = try await client.webSocketSession(peer.url(path: "/echo"))
            // 105 × 80 ms: the echoes fill `incoming` (64 messages) after about 5 s, so reading is paused for the
            // rest; the Python server answers every ping meanwhile.
            let count = 105
            for i in 0..<count {
                try await session.send("message \(i)")
                try await Task.sleep(for: .milliseconds(80))
            }
            #expect(!session.isClosed, "the keepalive closed a healthy session")
            var texts: [String] = []
            var controlFrames = 0
            while texts.count < count {
                let frame = try await session.incoming.receive()
                switch frame.kind {
                case .text: texts.append(try frame.readText())
                case .ping, .pong: controlFrames += 1
                default: Issue.record("unexpected \(frame)")
                }
            }
            #expect(texts == (0..<count).map { "message \($0)" })
            #expect(controlFrames > 0, "the keepalive's pongs are delivered too")
            await session.close()
            #expect(await session.closeReason?.code == .normal)
        }
    }

    @Test(
        "a server that stops answering pings is detected, read or not", arguments: TestEngine.allCases, [false, true])
    func silentServer(engine: TestEngine, reading: Bool) async throws {
        let server = try ScriptedServer { connection in
            connection.setReceiveTimeout(.seconds(15))
            try connection.acceptUpgrade()
            connection.drainUntilEnd()  // reads our pings and never answers them
        }
        defer { server.stop() }
        try await withClient(Self.keepaliveClient(engine)) { client in
            let session = try await client.webSocketSession(server.url)
            let started = ContinuousClock.now
            if reading {
                let error = await #expect(throws: WebSocketError.self) {
                    for try await _ in session.incoming {}
                }
                #expect(error?.code == .pongTimeout, "\(String(describing: error))")
            }
            let reason = await session.closeReason
            #expect(reason?.code == .internalError, "\(String(describing: reason))")
            #expect(ContinuousClock.now - started < .seconds(10))
        }
    }

    @Test("a ping flood at a session that does not read keeps 16 pings at most", arguments: TestEngine.allCases)
    func pingFlood(engine: TestEngine) async throws {
        let pings = 20_000
        let lastPongSeen = Flag()
        let server = try ScriptedServer { connection in
            connection.setReceiveTimeout(.seconds(15))
            try connection.acceptUpgrade()
            var flood: [UInt8] = []
            for i in 0..<pings { flood += rawFrame(0x89, Array("\(i)".utf8)) }
            try connection.write(flood)
            // The client answered the last ping: it has read the whole flood.
            while let frame = try connection.readFrame() {
                if frame.opcode == 0xA && frame.payload == Array("\(pings - 1)".utf8) { break }
            }
            lastPongSeen.set()
            try connection.write(rawFrame(0x81, Array("done".utf8)))
            _ = connection.readUntilClose()
            try connection.write(rawFrame(0x88, [0x03, 0xE8]))
        }
        defer { server.stop() }
        try await withClient(engine.client()) { client in
            let session = try await client.webSocketSession(server.url)
            // Nobody reads `incoming` while the flood arrives; reading is never paused by it.
            let deadline = ContinuousClock.now + .seconds(20)
            while !lastPongSeen.isSet && ContinuousClock.now < deadline {
                try await Task.sleep(for: .milliseconds(10))
            }
            #expect(lastPongSeen.isSet, "the client stopped reading the flood")
            var kept: [String] = []
            while true {
                let frame = try await session.incoming.receive()
                if frame.kind == .text {
                    #expect(try frame.readText() == "done")
                    break
                }
                if frame.kind == .ping { kept.append(String(decoding: frame.data, as: UTF8.self)) }
            }
            #expect(kept.count <= 16, "\(kept.count) pings were kept")
            #expect(kept.last == "\(pings - 1)", "the newest ping is kept: \(kept.suffix(3))")
            await session.close()
            #expect(await session.closeReason?.code == .normal)
        }
    }
}

/// A flag one thread sets and another polls.
private final class Flag: Sendable {
    private let value = Atomic<Bool>(false)
    /// Sets the flag.
    func set() { self.value.store(true, ordering: .releasing) }
    /// Whether the flag is set.
    var isSet: Bool { self.value.load(ordering: .acquiring) }
}
