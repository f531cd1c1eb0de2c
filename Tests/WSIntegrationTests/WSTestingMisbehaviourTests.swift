// WSTesting's misbehaviour API (Configuration.handshake, ignoresClose and the ServerSession helpers), on both
// engines: each case asserts the error or close code a user of the SDK sees.
import Testing
import WSCore
import WSTesting

@Suite("WSTesting misbehaviour on demand")
struct WSTestingMisbehaviourTests {
    /// Opens a session to a server with `configuration` and returns the connection error it fails with.
    private func openingError(
        _ engine: TestEngine,
        _ configuration: WebSocketTestServer.Configuration,
        openTimeout: Duration? = nil
    ) async throws -> WebSocketError? {
        let server = try WebSocketTestServer.start(configuration)
        defer { server.stop() }
        return try await withClient(engine.client()) { client in
            do {
                let session = try await client.webSocketSession(server.url(path: "/")) { request in
                    request.timeout.openTimeout = openTimeout
                }
                await session.close()
                Issue.record("the handshake should fail")
                return nil
            } catch let error as WebSocketError {
                return error
            }
        }
    }

    @Test("a refused upgrade is upgradeRejected with the status and body", arguments: TestEngine.allCases)
    func rejected(engine: TestEngine) async throws {
        var configuration = WebSocketTestServer.Configuration()
        configuration.handshake = .reject(status: 403, body: "no entry")
        let error = try #require(try await self.openingError(engine, configuration))
        #expect(error.code == .upgradeRejected)
        #expect(error.status == 403)
        #expect(error.bodyText.contains("no entry"))
    }

    @Test("a wrong Sec-WebSocket-Accept is invalidHandshake", arguments: TestEngine.allCases)
    func wrongAccept(engine: TestEngine) async throws {
        var configuration = WebSocketTestServer.Configuration()
        configuration.handshake = .wrongAccept
        let error = try #require(try await self.openingError(engine, configuration))
        #expect(error.code == .invalidHandshake)
    }

    @Test("a delayed handshake trips the open timeout", arguments: TestEngine.allCases)
    func delayedHandshake(engine: TestEngine) async throws {
        var configuration = WebSocketTestServer.Configuration()
        configuration.handshake = .delay(.seconds(60))
        let start = ContinuousClock.now
        let error = try #require(try await self.openingError(engine, configuration, openTimeout: .milliseconds(400)))
        #expect(error.code == .timedOut)
        #expect(ContinuousClock.now - start < .seconds(30), "the 400 ms open timeout, not the server, ends it")
    }

    @Test("a short handshake delay still opens the session", arguments: TestEngine.allCases)
    func shortDelay(engine: TestEngine) async throws {
        var configuration = WebSocketTestServer.Configuration()
        configuration.handshake = .delay(.milliseconds(200))
        let server = try WebSocketTestServer.start(configuration)
        defer { server.stop() }
        try await withClient(engine.client()) { client in
            let session = try await client.webSocketSession(server.url)
            try await session.send("late")
            #expect(try await nextMessage(session).readText() == "late")
            await session.close()
        }
    }

    /// A frame-level misbehaviour and the error and close code the client must report.
    struct FrameCase: Sendable, CustomStringConvertible {
        let description: String
        let error: WebSocketError.Code
        let closeCode: CloseReason.Code
        let script: @Sendable (ServerSession) throws -> Void
    }

    static let frameCases: [FrameCase] =
        ServerSession.MalformedFrame.allCases.map { kind in
            FrameCase(description: "malformed: \(kind)", error: .protocolViolation, closeCode: .protocolError) {
                try $0.sendMalformedFrame(kind)
            }
        } + [
            FrameCase(description: "masked frame", error: .protocolViolation, closeCode: .protocolError) {
                try $0.sendMasked()
            },
            FrameCase(description: "invalid UTF-8", error: .invalidUTF8, closeCode: .invalidPayload) {
                try $0.sendInvalidUTF8()
            },
            FrameCase(description: "oversized frame header", error: .messageTooBig, closeCode: .messageTooBig) {
                try $0.sendOversizedFrameHeader(length: 2 << 20)  // the default maxFrameSize is 1 MiB
            },
        ]

    @Test("a misbehaving frame fails the session with the right code", arguments: TestEngine.allCases, frameCases)
    func frames(engine: TestEngine, testCase: FrameCase) async throws {
        let outcome = try await exchange(engine, script: testCase.script)
        let error = try #require(outcome.webSocketError, "\(testCase): got \(String(describing: outcome.error))")
        #expect(error.code == testCase.error)
        #expect(error.closeCode == testCase.closeCode)
        #expect(outcome.closeReason?.code == testCase.closeCode)
        #expect(outcome.serverReceived?.code == testCase.closeCode, "the client must send close \(testCase.closeCode)")
    }

    @Test("dropping the connection mid-frame is connectionLost / 1006", arguments: TestEngine.allCases)
    func dropMidFrame(engine: TestEngine) async throws {
        let outcome = try await exchange(engine) { session in
            try session.send("before")
            try session.dropMidFrame()
        }
        #expect(outcome.frames.first.flatMap { try? $0.readText() } == "before")
        #expect(outcome.webSocketError?.code == .connectionLost)
        #expect(outcome.closeReason?.code == .abnormalClosure)
    }

    @Test("a server that never answers the close frame runs out the close timeout", arguments: TestEngine.allCases)
    func ignoresClose(engine: TestEngine) async throws {
        var configuration = WebSocketTestServer.Configuration()
        configuration.ignoresClose = true
        let server = try WebSocketTestServer.start(configuration)
        defer { server.stop() }
        try await withClient(engine.client { $0.closeTimeout = .milliseconds(300) }) { client in
            let session = try await client.webSocketSession(server.url)
            try await session.send("still echoing")
            #expect(try await nextMessage(session).readText() == "still echoing")
            let start = ContinuousClock.now
            await session.close()
            let elapsed = ContinuousClock.now - start
            #expect(elapsed >= .milliseconds(250))
            #expect(elapsed < .seconds(10))
            #expect(await session.closeReason?.code == .abnormalClosure)
        }
    }

    @Test("a custom handler can ignore the close frame with waitForDisconnect", arguments: TestEngine.allCases)
    func customIgnoresClose(engine: TestEngine) async throws {
        let server = try WebSocketTestServer.start(
            handler: .custom { session in
                while let frame = try session.receive(), frame.kind != .close {}
                session.waitForDisconnect()
            })
        defer { server.stop() }
        try await withClient(engine.client { $0.closeTimeout = .milliseconds(300) }) { client in
            let session = try await client.webSocketSession(server.url)
            await session.close()
            #expect(await session.closeReason?.code == .abnormalClosure)
        }
    }
}
