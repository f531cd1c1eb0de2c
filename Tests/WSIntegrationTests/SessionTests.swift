// End-to-end tests of the session API against the Python `websockets` server (a real, independent peer).
import Foundation
import Testing
import WSCore

@Suite("Sessions against the Python websockets server")
struct SessionTests {
    @Test("text and binary round trips", arguments: TestEngine.allCases)
    func textAndBinary(engine: TestEngine) async throws {
        let peer = try await PythonPeer.start()
        defer { peer.stop() }
        try await withClient(engine.client()) { client in
            try await client.webSocket(peer.url(path: "/echo")) { session in
                try await session.send("Hello WebSocket!")
                let text = try await nextMessage(session)
                #expect(text.kind == .text)
                #expect(try text.readText() == "Hello WebSocket!")

                try await session.send([1, 2, 3, 4] as [UInt8])
                let binary = try await nextMessage(session)
                #expect(binary.kind == .binary)
                #expect(binary.readBytes() == [1, 2, 3, 4])

                try await session.send(Frame.text("Custom text frame"))
                #expect(try await nextMessage(session).readText() == "Custom text frame")
                try await session.send(Frame.binary([5, 6, 7, 8]))
                #expect(try await nextMessage(session).readBytes() == [5, 6, 7, 8])

                let unicode = "héllo wörld ✓ 🎉 — 日本語"
                try await session.send(unicode)
                #expect(try await nextMessage(session).readText() == unicode)
                try await session.send("")
                #expect(try await nextMessage(session).readText() == "")
            }
        }
    }

    @Test("every entry point opens a working session", arguments: TestEngine.allCases)
    func entryPoints(engine: TestEngine) async throws {
        let peer = try await PythonPeer.start()
        defer { peer.stop() }
        try await withClient(engine.client()) { client in
            #expect(client.isSupported(.webSocket))
            func roundTrip(_ session: WebSocketSession, _ text: String) async throws {
                try await session.send(text)
                #expect(try await nextMessage(session).readText() == text)
            }
            let s1 = try await client.webSocketSession(peer.url(path: "/echo"))
            try await roundTrip(s1, "urlString")
            await s1.close()
            #expect(await s1.closeReason?.code == .normal)

            let s2 = try await client.webSocketSession { request in
                try request.url(peer.url(path: "/echo"))
            }
            try await roundTrip(s2, "request block")
            await s2.close()

            let s3 = try await client.webSocketSession(host: "127.0.0.1", port: peer.port, path: "/echo")
            try await roundTrip(s3, "components")
            await s3.close()

            try await client.webSocket(request: { try $0.url(peer.url(path: "/echo")) }) { session in
                try await roundTrip(session, "webSocket(request:)")
            }
            try await client.webSocket(host: "127.0.0.1", port: peer.port, path: "/echo") { session in
                try await roundTrip(session, "webSocket(host:port:path:)")
            }
            try await client.ws(peer.url(path: "/echo")) { session in
                try await roundTrip(session, "ws")
            }
            try await client.ws(host: "127.0.0.1", port: peer.port, path: "/echo") { session in
                try await roundTrip(session, "ws components")
            }
            // http:// is accepted as ws://.
            try await client.webSocket("http://127.0.0.1:\(peer.port)/echo") { session in
                try await roundTrip(session, "http scheme")
            }
            let escaped = try await client.webSocket(peer.url(path: "/echo")) { session in session }
            #expect(escaped.isClosed)
            #expect(await escaped.closeReason?.code == .normal)
        }
    }

    @Test("webSocket closes the session when its block throws", arguments: TestEngine.allCases)
    func blockThrows(engine: TestEngine) async throws {
        struct Boom: Error {}
        let peer = try await PythonPeer.start()
        defer { peer.stop() }
        try await withClient(engine.client()) { client in
            let box = SessionBox()
            await #expect(throws: Boom.self) {
                try await client.webSocket(peer.url(path: "/echo")) { session in
                    box.session = session
                    throw Boom()
                }
            }
            let session = try #require(box.session)
            #expect(session.isClosed)
            #expect(await session.closeReason?.code == .normal)
            await #expect(throws: WebSocketError.self) { try await session.send("late") }
        }
    }

    @Test("custom headers reach the server; credentials are not in descriptions", arguments: TestEngine.allCases)
    func customHeaders(engine: TestEngine) async throws {
        let peer = try await PythonPeer.start()
        defer { peer.stop() }
        try await withClient(engine.client()) { client in
            let addHeaders: (inout WebSocketRequestBuilder) -> Void = { request in
                request.headers["Authorization"] = "Bearer secret-token"
                request.headers["X-Custom"] = "value 1"
                request.headers.add("X-Multi", "a")
                request.headers.add("X-Multi", "b")
            }
            var probe = WebSocketRequestBuilder(url: WebSocketURL(secure: false, host: "localhost"))
            addHeaders(&probe)
            #expect(!probe.headers.description.contains("secret-token"))
            try await client.webSocket(peer.url(path: "/headers"), request: addHeaders) { session in
                let json = try await nextMessage(session)
                let headers = try JSONSerialization.jsonObject(with: Data(json.readBytes())) as? [String: String]
                #expect(headers?["authorization"] == "Bearer secret-token")
                #expect(headers?["x-custom"] == "value 1")
                #expect(headers?["x-multi"] == "a, b")
                #expect(headers?["sec-websocket-version"] == "13")
                #expect(headers?["host"] == "127.0.0.1:\(peer.port)")
            }
        }
    }

    @Test("subprotocol negotiation", arguments: TestEngine.allCases)
    func subprotocols(engine: TestEngine) async throws {
        let peer = try await PythonPeer.start(subprotocols: ["chat.v2", "chat.v1"])
        defer { peer.stop() }
        try await withClient(engine.client()) { client in
            try await client.webSocket(
                peer.url(path: "/subprotocol"), request: { $0.subprotocols = ["chat.v1", "other"] }
            ) {
                session in
                let selected = try await nextMessage(session).readText()
                #expect(session.subprotocol == "chat.v1")
                #expect(selected == "chat.v1")
            }
            try await client.webSocket(peer.url(path: "/subprotocol"), request: { $0.subprotocols = ["unknown"] }) {
                session in
                let selected = try await nextMessage(session).readText()
                #expect(session.subprotocol == nil)
                #expect(selected == "")
            }
        }
    }

    @Test("fragmented messages arrive whole; large messages intact", arguments: TestEngine.allCases)
    func fragmentedAndLarge(engine: TestEngine) async throws {
        let peer = try await PythonPeer.start()
        defer { peer.stop() }
        let client = engine.client { ws in
            ws.maxFrameSize = 32 << 20
            ws.maxMessageSize = 32 << 20
        }
        try await withClient(client) { client in
            try await client.webSocket(peer.url(path: "/echo")) { session in
                // Our own fragments: the server reassembles and echoes one message.
                try await session.send(Frame.text("Hel", fin: false))
                try await session.send(Frame.continuation(Array("lo, ".utf8), fin: false))
                try await session.send(Frame.continuation(Array("fragments".utf8), fin: true))
                #expect(try await nextMessage(session).readText() == "Hello, fragments")

                // 16 MiB binary with a pattern, echoed whole.
                let big = (0..<(16 << 20)).map { UInt8(truncatingIfNeeded: $0 &* 31 &+ 7) }
                try await session.send(big)
                let echoed = try await nextMessage(session)
                #expect(echoed.kind == .binary)
                #expect(echoed.data.count == big.count)
                #expect(echoed.data == big)
            }
            // The server fragments: /fragmented sends one text message in many frames.
            try await client.webSocket(peer.url(path: "/fragmented?count=50&size=1000")) { session in
                let message = try await nextMessage(session)
                #expect(message.kind == .text)
                #expect(message.fin)
                #expect(message.data.count == 50 * 1000)
            }
        }
    }

    @Test("many messages in order, server-sent", arguments: TestEngine.allCases)
    func manyMessages(engine: TestEngine) async throws {
        let peer = try await PythonPeer.start()
        defer { peer.stop() }
        try await withClient(engine.client()) { client in
            try await client.webSocket(peer.url(path: "/send-then-close?count=2000&size=300")) { session in
                var count = 0
                var sawClose = false
                for try await frame in session.incoming {
                    switch frame.kind {
                    case .binary:
                        #expect(frame.data.count == 300)
                        #expect(frame.data[299] == UInt8(299 % 256))
                        count += 1
                    case .close:
                        sawClose = true
                        #expect(frame.readReason()?.code == .normal)
                    default:
                        break
                    }
                }
                #expect(count == 2000)
                #expect(sawClose)
            }
        }
    }

    @Test("slow consumer: reading pauses, nothing is lost", arguments: TestEngine.allCases)
    func slowConsumer(engine: TestEngine) async throws {
        let peer = try await PythonPeer.start()
        defer { peer.stop() }
        let client = engine.client { ws in
            ws.maxIncomingBufferMessages = 8
            ws.maxIncomingBufferBytes = 64 << 10
        }
        try await withClient(client) { client in
            try await client.webSocket(peer.url(path: "/send-then-close?count=400&size=65536&report-stall=0.5")) {
                session in
                // Nothing consumed yet: our buffer fills, reading pauses, the socket buffers fill and the server's
                // send waits. Without the pause we would read all 26 MB into memory and the server would finish.
                let event = await peer.nextLine(timeout: 60)
                #expect(
                    event?.hasPrefix("STALLED ") == true,
                    "the server must run into our paused reading, not send everything: \(event ?? "no report within 60 s")"
                )
                var count = 0
                for try await frame in session.incoming where frame.kind == .binary {
                    #expect(frame.data.count == 65536)
                    count += 1
                }
                #expect(count == 400)
            }
        }
    }

    @Test("a consumer racing the reader never stalls reading (pause/resume ordering)", arguments: TestEngine.allCases)
    func pauseResumeRace(engine: TestEngine) async throws {
        let peer = try await PythonPeer.start()
        defer { peer.stop() }
        // A tiny buffer makes the reader pause and the consumer resume thousands of times, from two threads.
        let client = engine.client { ws in
            ws.maxIncomingBufferMessages = 4
            ws.maxIncomingBufferBytes = 1 << 20
        }
        try await withClient(client) { client in
            try await client.webSocket(peer.url(path: "/send-then-close?count=20000&size=16")) { session in
                var count = 0
                for try await frame in session.incoming where frame.kind == .binary { count += 1 }
                #expect(count == 20000)
            }
        }
    }

    @Test("ping and pong: ours answered, the server's answered automatically", arguments: TestEngine.allCases)
    func pingPong(engine: TestEngine) async throws {
        let peer = try await PythonPeer.start()
        defer { peer.stop() }
        try await withClient(engine.client()) { client in
            try await client.webSocket(peer.url(path: "/echo")) { session in
                try await session.send(Frame.ping(Array("are you there".utf8)))
                let pong = try await session.incoming.receive()
                #expect(pong.kind == .pong)
                #expect(pong.data == Array("are you there".utf8))
            }
            try await client.webSocket(peer.url(path: "/ping")) { session in
                let ping = try await session.incoming.receive()
                #expect(ping.kind == .ping)
                #expect(ping.data == Array("hello".utf8))
                // The server only says this after our automatic pong arrived.
                #expect(try await nextMessage(session).readText() == "pong-received")
            }
            await #expect(throws: WebSocketError.self) {
                try await client.webSocket(peer.url(path: "/echo")) { session in
                    try await session.send(Frame.ping([UInt8](repeating: 1, count: 126)))
                }
            }
        }
    }

    @Test("the ping interval sends pings the server answers", arguments: TestEngine.allCases)
    func pingInterval(engine: TestEngine) async throws {
        let peer = try await PythonPeer.start()
        defer { peer.stop() }
        let client = engine.client {
            $0.pingInterval = .milliseconds(100)
            // Not what this test is about: by default the pong timeout is the ping interval, and the Python peer
            // (another process) does not always answer within 100 ms on a loaded machine.
            $0.pongTimeout = .seconds(10)
        }
        try await withClient(client) { client in
            try await client.webSocket(peer.url(path: "/echo")) { session in
                var pongs = 0
                while pongs < 3 {
                    let frame = try await session.incoming.receive()
                    if frame.kind == .pong { pongs += 1 }
                }
                #expect(pongs == 3)
            }
        }
    }

    @Test("close initiated by the client, with code and reason", arguments: TestEngine.allCases)
    func clientClose(engine: TestEngine) async throws {
        let peer = try await PythonPeer.start()
        defer { peer.stop() }
        try await withClient(engine.client()) { client in
            let session = try await client.webSocketSession(peer.url(path: "/echo"))
            await session.close(CloseReason(code: .goingAway, message: "Client disconnecting"))
            #expect(session.isClosed)
            let reason = await session.closeReason
            // websockets echoes our code and reason.
            #expect(reason?.code == .goingAway)
            #expect(reason?.message == "Client disconnecting")
            await #expect(throws: WebSocketError.self) { try await session.send("after close") }
            // Closing twice is harmless.
            await session.close()
        }
    }

    @Test("close initiated by the server is delivered and echoed", arguments: TestEngine.allCases)
    func serverClose(engine: TestEngine) async throws {
        let peer = try await PythonPeer.start()
        defer { peer.stop() }
        try await withClient(engine.client()) { client in
            let session = try await client.webSocketSession(peer.url(path: "/close?code=4001&reason=bye%20now"))
            var last: Frame?
            for try await frame in session.incoming { last = frame }
            let close = try #require(last)
            #expect(close.kind == .close)
            #expect(close.readReason() == CloseReason(code: 4001, message: "bye now"))
            #expect(await session.closeReason == CloseReason(code: 4001, message: "bye now"))
            do {
                _ = try await session.incoming.receive()
                Issue.record("receive after the close frame should throw")
            } catch let error as WebSocketError {
                #expect(error.code == .sessionClosed)
            }
        }
    }
}

/// Carries a session out of a closure for later checks.
final class SessionBox: @unchecked Sendable {  // written once inside the closure, read after it returned
    var session: WebSocketSession?
}
