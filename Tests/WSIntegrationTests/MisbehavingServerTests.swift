// Misbehaviour no real server shows, scripted with WSTesting (and a raw TCP server for broken handshakes):
// each case asserts the error and close code a user would see, and the close code the server received.
import Glibc
import Synchronization
import Testing
import WSCore
import WSTesting

/// What one scripted exchange produced, on both sides.
struct Outcome: Sendable {
    var frames: [Frame] = []
    var error: (any Error)?
    var closeReason: CloseReason?
    /// The close frame the server received from the client, if any.
    var serverReceived: CloseReason?

    var webSocketError: WebSocketError? { self.error as? WebSocketError }
}

/// Starts a WSTesting server running `script`, connects, drains `incoming` and reports what happened.
func exchange(
    _ engine: TestEngine,
    configure: @escaping (inout WebSockets.Configuration) -> Void = { _ in },
    script: @escaping @Sendable (ServerSession) throws -> Void
) async throws -> Outcome {
    let received = Mutex<CloseReason?>(nil)
    let server = try WebSocketTestServer.start(
        handler: .custom { session in
            try script(session)
            // Read what the client sends back until its close frame (or the connection ends).
            while let frame = try? session.receive() {
                if frame.kind == .close {
                    received.withLock { $0 = frame.readReason() ?? CloseReason(code: .noStatus) }
                    break
                }
            }
            session.closeSocket()
        }
    )
    defer { server.stop() }
    var outcome = Outcome()
    try await withClient(engine.client(configure)) { client in
        let session = try await client.webSocketSession(server.url(path: "/"))
        do {
            for try await frame in session.incoming { outcome.frames.append(frame) }
        } catch {
            outcome.error = error
        }
        outcome.closeReason = await session.closeReason
    }
    // The server thread records the close frame right after the client sent it.
    for _ in 0..<100 where received.withLock({ $0 }) == nil { try await Task.sleep(for: .milliseconds(20)) }
    outcome.serverReceived = received.withLock { $0 }
    return outcome
}

/// A frame header with an arbitrary first byte (FIN, RSV, opcode) and an unmasked payload.
func rawFrame(_ first: UInt8, _ payload: [UInt8], masked: Bool = false) -> [UInt8] {
    var bytes: [UInt8] = [first]
    let maskBit: UInt8 = masked ? 0x80 : 0
    if payload.count < 126 {
        bytes.append(maskBit | UInt8(payload.count))
    } else if payload.count < 65536 {
        bytes.append(maskBit | 126)
        bytes += [UInt8(payload.count >> 8), UInt8(payload.count & 0xFF)]
    } else {
        bytes.append(maskBit | 127)
        bytes += (0..<8).reversed().map { UInt8(truncatingIfNeeded: payload.count >> ($0 * 8)) }
    }
    if masked { bytes += [0, 0, 0, 0] }  // a zero key leaves the payload as is
    return bytes + payload
}

@Suite("Misbehaving servers")
struct MisbehavingServerTests {
    /// Each case: what the server sends, the error code and close code the client must report.
    struct Case: Sendable, CustomStringConvertible {
        let description: String
        let bytes: [UInt8]
        let error: WebSocketError.Code
        let closeCode: CloseReason.Code
    }

    static let cases: [Case] = [
        Case(
            description: "masked frame", bytes: rawFrame(0x81, Array("hi".utf8), masked: true),
            error: .protocolViolation, closeCode: .protocolError),
        Case(
            description: "reserved opcode 0x3", bytes: rawFrame(0x83, []), error: .protocolViolation,
            closeCode: .protocolError),
        Case(
            description: "reserved control opcode 0xB", bytes: rawFrame(0x8B, []), error: .protocolViolation,
            closeCode: .protocolError),
        Case(
            description: "RSV1 without an extension", bytes: rawFrame(0xC1, Array("x".utf8)), error: .protocolViolation,
            closeCode: .protocolError),
        Case(
            description: "RSV3 without an extension", bytes: rawFrame(0x92, [1]), error: .protocolViolation,
            closeCode: .protocolError),
        Case(
            description: "ping over 125 bytes", bytes: rawFrame(0x89, [UInt8](repeating: 0, count: 126)),
            error: .protocolViolation, closeCode: .protocolError),
        Case(
            description: "fragmented ping", bytes: rawFrame(0x09, [1]), error: .protocolViolation,
            closeCode: .protocolError),
        Case(
            description: "continuation without a start", bytes: rawFrame(0x80, [1]), error: .protocolViolation,
            closeCode: .protocolError),
        Case(
            description: "new message inside a fragmented one", bytes: rawFrame(0x01, [0x61]) + rawFrame(0x81, [0x62]),
            error: .protocolViolation, closeCode: .protocolError),
        Case(
            description: "invalid UTF-8 text",
            bytes: rawFrame(0x81, [0xCE, 0xBA, 0xE1, 0xBD, 0xB9, 0xCF, 0x83, 0xED, 0xA0, 0x80]), error: .invalidUTF8,
            closeCode: .invalidPayload),
        Case(
            description: "invalid UTF-8 split across fragments",
            bytes: rawFrame(0x01, [0x61, 0xF4]) + rawFrame(0x80, [0x90, 0x80, 0x80]), error: .invalidUTF8,
            closeCode: .invalidPayload),
        Case(
            description: "64-bit length with the top bit set", bytes: [0x82, 0x7F, 0x80, 0, 0, 0, 0, 0, 0, 1],
            error: .protocolViolation, closeCode: .protocolError),
        Case(
            description: "frame over maxFrameSize (declared 1 GiB)", bytes: [0x82, 0x7F, 0, 0, 0, 0, 0x40, 0, 0, 0],
            error: .messageTooBig, closeCode: .messageTooBig),
        Case(
            description: "close with a 1-byte payload", bytes: rawFrame(0x88, [0x03]), error: .protocolViolation,
            closeCode: .protocolError),
        Case(
            description: "close with reserved code 1005", bytes: rawFrame(0x88, [0x03, 0xED]),
            error: .protocolViolation, closeCode: .protocolError),
        Case(
            description: "close with code 999", bytes: rawFrame(0x88, [0x03, 0xE7]), error: .protocolViolation,
            closeCode: .protocolError),
        Case(
            description: "close with a non-UTF-8 reason", bytes: rawFrame(0x88, [0x03, 0xE8, 0xFF]),
            error: .invalidUTF8, closeCode: .invalidPayload),
    ]

    @Test("a protocol violation fails the session with the right code", arguments: TestEngine.allCases, cases)
    func violations(engine: TestEngine, testCase: Case) async throws {
        let bytes = testCase.bytes
        let outcome = try await exchange(engine) { session in try session.sendRaw(bytes) }
        let error = try #require(
            outcome.webSocketError, "\(testCase) must fail the session, got \(String(describing: outcome.error))")
        #expect(error.code == testCase.error)
        #expect(error.closeCode == testCase.closeCode)
        #expect(outcome.closeReason?.code == testCase.closeCode)
        #expect(outcome.serverReceived?.code == testCase.closeCode, "the client must send close \(testCase.closeCode)")
    }

    @Test("a message over maxMessageSize ends with 1009", arguments: TestEngine.allCases)
    func messageTooBig(engine: TestEngine) async throws {
        let outcome = try await exchange(engine, configure: { $0.maxMessageSize = 1000 }) { session in
            // Three 400-byte fragments: each frame is small, the message is not.
            try session.sendRaw(rawFrame(0x02, [UInt8](repeating: 1, count: 400)))
            try session.sendRaw(rawFrame(0x00, [UInt8](repeating: 2, count: 400)))
            try session.sendRaw(rawFrame(0x80, [UInt8](repeating: 3, count: 400)))
        }
        #expect(outcome.webSocketError?.code == .messageTooBig)
        #expect(outcome.serverReceived?.code == .messageTooBig)
        #expect(outcome.webSocketError?.message.contains("maxMessageSize") == true)
    }

    @Test("frames before a violation are delivered; a valid close ends cleanly", arguments: TestEngine.allCases)
    func validThenClose(engine: TestEngine) async throws {
        let outcome = try await exchange(engine) { session in
            try session.send("first")
            try session.sendRaw(rawFrame(0x89, Array("p".utf8)))  // a ping, answered automatically
            try session.sendRaw(rawFrame(0x88, [0x0F, 0xA1] + Array("done".utf8)))  // close 4001 "done"
        }
        #expect(outcome.error == nil)
        #expect(outcome.frames.map(\.kind) == [.text, .ping, .close])
        #expect(outcome.closeReason == CloseReason(code: 4001, message: "done"))
        #expect(outcome.serverReceived?.code == CloseReason.Code(4001), "the client echoes the server's code")
    }

    @Test("a dropped TCP connection mid-frame is an abnormal closure", arguments: TestEngine.allCases)
    func dropMidFrame(engine: TestEngine) async throws {
        let outcome = try await exchange(engine) { session in
            try session.sendRaw(Array(rawFrame(0x82, [UInt8](repeating: 7, count: 1000)).prefix(300)))
            session.closeSocket()
        }
        #expect(outcome.webSocketError?.code == .connectionLost)
        #expect(outcome.closeReason?.code == .abnormalClosure)
    }

    @Test("a server that never answers pings trips the pong timeout (1011)", arguments: TestEngine.allCases)
    func pongTimeout(engine: TestEngine) async throws {
        let server = try WebSocketTestServer.start(
            handler: .custom { session in
                // Never calls receive(), so pings are never answered; wait for the client to give up.
                while !session.isClosed { usleep(20_000) }
            }
        )
        defer { server.stop() }
        let client = engine.client {
            $0.pingInterval = .milliseconds(100)
            $0.pongTimeout = .milliseconds(300)
            $0.closeTimeout = .milliseconds(500)
        }
        try await withClient(client) { client in
            let session = try await client.webSocketSession(server.url(path: "/"))
            do {
                for try await _ in session.incoming {}
                Issue.record("the session should fail")
            } catch let error as WebSocketError {
                #expect(error.code == .pongTimeout)
                #expect(error.closeCode == .internalError)
            }
            #expect(await session.closeReason?.code == .internalError)
        }
    }

    @Test("a server that never answers our close is given up on after closeTimeout", arguments: TestEngine.allCases)
    func closeTimeout(engine: TestEngine) async throws {
        let server = try WebSocketTestServer.start(
            handler: .custom { session in
                while !session.isClosed { usleep(20_000) }
            }
        )
        defer { server.stop() }
        try await withClient(engine.client { $0.closeTimeout = .milliseconds(300) }) { client in
            let session = try await client.webSocketSession(server.url(path: "/"))
            let start = ContinuousClock.now
            await session.close()
            let elapsed = ContinuousClock.now - start
            #expect(elapsed >= .milliseconds(250))
            #expect(elapsed < .seconds(10))
            #expect(session.isClosed)
            #expect(await session.closeReason?.code == .abnormalClosure)
        }
    }
}

@Suite("Broken handshakes")
struct BrokenHandshakeTests {
    /// A 101 response with a chosen Sec-WebSocket-Accept ("right" computes the correct one) and extra headers.
    struct BadResponse: Sendable, CustomStringConvertible {
        let description: String
        let accept: String?
        var extra = ""
        var replaceUpgrade = false

        func bytes(key: String) -> [UInt8] {
            var text =
                "HTTP/1.1 101 Switching Protocols\r\nUpgrade: \(self.replaceUpgrade ? "h2c" : "websocket")\r\nConnection: Upgrade\r\n"
            if let accept {
                text += "Sec-WebSocket-Accept: \(accept == "right" ? RawHandshakeServer.accept(for: key) : accept)\r\n"
            }
            text += self.extra + "\r\n"
            return Array(text.utf8)
        }
    }

    static let badResponses = [
        BadResponse(description: "wrong Sec-WebSocket-Accept", accept: "dGhpcyBpcyB3cm9uZw=="),
        BadResponse(description: "missing Sec-WebSocket-Accept", accept: nil),
        BadResponse(
            description: "two Sec-WebSocket-Accept headers", accept: "right", extra: "Sec-WebSocket-Accept: x\r\n"),
        BadResponse(
            description: "unoffered subprotocol", accept: "right", extra: "Sec-WebSocket-Protocol: surprise\r\n"),
        BadResponse(
            description: "unoffered extension", accept: "right", extra: "Sec-WebSocket-Extensions: x-unknown\r\n"),
        BadResponse(description: "no Upgrade header", accept: "right", extra: "").withoutUpgrade(),
    ]

    @Test("the handshake response is checked", arguments: TestEngine.allCases, badResponses)
    func invalidResponses(engine: TestEngine, response: BadResponse) async throws {
        let server = try RawHandshakeServer { key in response.bytes(key: key) }
        defer { server.stop() }
        try await withClient(engine.client()) { client in
            do {
                _ = try await client.webSocketSession("ws://127.0.0.1:\(server.port)/")
                Issue.record("\(response) must be refused")
            } catch let error as WebSocketError {
                #expect(error.code == .invalidHandshake, "\(response): \(error)")
            }
        }
    }

    @Test("a frame in the same packet as the 101 response is not lost", arguments: TestEngine.allCases)
    func frameWithResponse(engine: TestEngine) async throws {
        let server = try RawHandshakeServer { key in
            BadResponse(description: "valid", accept: "right").bytes(key: key)
                + rawFrame(0x81, Array("early bird".utf8))
        }
        defer { server.stop() }
        try await withClient(engine.client()) { client in
            let session = try await client.webSocketSession("ws://127.0.0.1:\(server.port)/")
            let frame = try await session.incoming.receive()
            #expect(try frame.readText() == "early bird")
        }
    }
}

extension BrokenHandshakeTests.BadResponse {
    /// The same response with "Upgrade: websocket" replaced by another protocol.
    func withoutUpgrade() -> Self {
        var copy = self
        copy.replaceUpgrade = true
        return copy
    }
}
