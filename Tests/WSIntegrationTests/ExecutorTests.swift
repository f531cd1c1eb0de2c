// Where session code runs: the block entry points run their block on the engine's event-loop executor by default
// (no thread hop per message, replies gathered per round), `runsBlocksOnEventLoop = false` keeps it off the loop,
// and the executor stays usable after the engine shut down.
import Glibc
import Testing
import WSCore
import WSTesting

/// The name of the calling thread (`CIO loop 0`, `Curl loop`, or a Swift-concurrency pool thread's name).
private func currentThreadName() -> String {
    guard let file = fopen("/proc/thread-self/comm", "r") else { return "?" }
    defer { fclose(file) }
    var name = [CChar](repeating: 0, count: 64)
    guard fgets(&name, Int32(name.count), file) != nil else { return "?" }
    return String(decoding: name.prefix { $0 != 0 && $0 != 10 }.map { UInt8(bitPattern: $0) }, as: UTF8.self)
}

/// Where the engine's loop threads are named.
private func isLoopThread(_ name: String, _ engine: TestEngine) -> Bool {
    switch engine {
    case .cio: name.hasPrefix("CIO loop")
    case .curl: name.hasPrefix("Curl loop")
    }
}

@Suite("Session executors")
struct ExecutorTests {
    @Test(
        "a block runs on the event loop that reads its connection, and replies in order", arguments: TestEngine.allCases
    )
    func blockOnEventLoop(engine: TestEngine) async throws {
        let server = try WebSocketTestServer.start()
        defer { server.stop() }
        try await withClient(engine.client()) { client in
            let (names, texts) = try await client.webSocket(server.url) { session -> ([String], [String]) in
                #expect(session.executor != nil)
                var names: [String] = []
                var texts: [String] = []
                // Many sends in one round are gathered into few writes; they must still arrive whole and in order.
                for i in 0..<500 { try await session.send("m\(i)") }
                for _ in 0..<500 {
                    let frame = try await nextMessage(session)
                    names.append(currentThreadName())
                    texts.append((try? frame.readText()) ?? "")
                }
                return (names, texts)
            }
            #expect(texts == (0..<500).map { "m\($0)" })
            let offLoop = names.filter { !isLoopThread($0, engine) }
            #expect(offLoop.isEmpty, "resumed off the loop on \(Set(offLoop))")
        }
    }

    @Test("runsBlocksOnEventLoop = false keeps the block off the event loop", arguments: TestEngine.allCases)
    func blockOffEventLoop(engine: TestEngine) async throws {
        let server = try WebSocketTestServer.start()
        defer { server.stop() }
        try await withClient(engine.client { $0.runsBlocksOnEventLoop = false }) { client in
            let names = try await client.webSocket(server.url) { session -> [String] in
                var names: [String] = []
                for i in 0..<20 {
                    try await session.send("m\(i)")
                    _ = try await nextMessage(session)
                    names.append(currentThreadName())
                }
                return names
            }
            #expect(names.allSatisfy { !isLoopThread($0, engine) }, "ran on \(Set(names))")
        }
    }

    @Test(
        "webSocketSession code opts in with withTaskExecutorPreference(session.executor)",
        arguments: TestEngine.allCases)
    func explicitPreference(engine: TestEngine) async throws {
        let server = try WebSocketTestServer.start()
        defer { server.stop() }
        try await withClient(engine.client()) { client in
            let session = try await client.webSocketSession(server.url)
            let name = try await withTaskExecutorPreference(session.executor) {
                try await session.send("hello")
                let frame = try await nextMessage(session)
                #expect(try frame.readText() == "hello")
                return currentThreadName()
            }
            #expect(isLoopThread(name, engine), "ran on \(name)")
            await session.close()
        }
    }

    @Test(
        "closing the client from inside a block returns; the block goes on after the loop is gone",
        arguments: TestEngine.allCases)
    func shutdownFromInsideBlock(engine: TestEngine) async throws {
        let server = try WebSocketTestServer.start()
        defer { server.stop() }
        let client = engine.client()
        let finished = try await client.webSocket(server.url) { session -> Bool in
            try await session.send("before")
            _ = try await nextMessage(session)
            await client.close()
            // The loop thread has exited: this continuation and what follows run on the global executor.
            try await Task.sleep(for: .milliseconds(10))
            #expect(!isLoopThread(currentThreadName(), engine))
            await #expect(throws: WebSocketError.self) { try await session.send("after") }
            return true
        }
        #expect(finished)
    }
}

@Suite("Pong ordering")
struct PongOrderingTests {
    @Test(
        "a reply to a message that arrived behind a ping never overtakes the ping's pong (Autobahn 5.6)",
        arguments: TestEngine.allCases)
    func replyAfterPong(engine: TestEngine) async throws {
        let rounds = 2_000
        let server = try ScriptedServer { connection in
            try connection.acceptUpgrade()
            for round in 0..<rounds {
                // Fragment, ping, last fragment in one write, as Autobahn's case 5.6 sends them.
                try connection.write(
                    rawFrame(0x01, Array("frag".utf8)) + rawFrame(0x89, Array("p\(round)".utf8))
                        + rawFrame(0x80, Array("ment\(round)".utf8)))
                var seen: [UInt8] = []
                while seen.count < 2, let frame = try connection.readFrame() {
                    if frame.opcode == 0xA || frame.opcode == 0x1 { seen.append(frame.opcode) }
                }
                if seen != [0xA, 0x1] {
                    throw SpawnErrorLike(
                        "round \(round): got opcodes \(seen), want the pong (0xA) before the echo (0x1)")
                }
            }
            try connection.write(rawFrame(0x88, [0x03, 0xE8]))
            _ = try connection.readFrame()
        }
        defer { server.stop() }
        try await withClient(engine.client()) { client in
            // webSocketSession + a plain for-await loop: the consumer runs on the global executor and takes queued
            // frames straight from the queue, racing the loop thread that writes the pong.
            let session = try await client.webSocketSession(server.url)
            for try await frame in session.incoming where frame.kind == .text {
                try await session.send(frame)
            }
        }
        #expect(await server.waitUntilFinished())
        #expect(server.scriptErrors.isEmpty, "\(server.scriptErrors)")
    }
}

/// An error with a message, for scripted servers.
private struct SpawnErrorLike: Error, CustomStringConvertible {
    let description: String
    init(_ description: String) { self.description = description }
}
