// Message-level receiving (receiveMessage, receiveText, receiveBinary, messages), the end of a session as a user
// sees it (isNormalClosure), and the entry points' port rule and URL overloads, on both engines.
import Foundation
import Synchronization
import Testing
import WSCore
import WSTesting

/// The bytes of a text frame followed by a close frame with `code`, for one write: the client reads both at once.
func textThenClose(_ text: String, code: UInt16 = 1000) -> [UInt8] {
    rawFrame(0x81, Array(text.utf8)) + rawFrame(0x88, [UInt8(code >> 8), UInt8(code & 0xFF)])
}

/// A server script: sends `first` and waits for its echo (so that the client is waiting for the next message and
/// the opening handshake's bytes are long read), then sends `last` and a close frame with `code` in one write.
func echoThenMessageWithClose(first: String = "first", last: String, code: UInt16 = 1000)
    -> @Sendable (ServerSession) throws -> Void
{
    { session in
        try session.send(first)
        guard let echo = try session.receive(), echo == .text(first) else {
            throw WebSocketTestServerError("expected the echo of \(first)")
        }
        try session.sendRaw(textThenClose(last, code: code))
    }
}

/// A WSTesting server whose connections run `script`, then read until the client's close frame.
func scriptedServer(_ script: @escaping @Sendable (ServerSession) throws -> Void) throws -> WebSocketTestServer {
    try WebSocketTestServer.start(
        handler: .custom { session in
            try script(session)
            while let frame = try session.receive(), frame.kind != .close {}
        })
}

/// Thrown from a request block to stop an entry point before it connects.
private struct StopBeforeConnecting: Error {}

@Suite("Message-level receive and the end of a session")
struct MessageReceiveTests {
    @Test("receiveMessage, receiveText and receiveBinary skip pings and pongs", arguments: TestEngine.allCases)
    func skipsControlFrames(engine: TestEngine) async throws {
        // The server's ping, pong and close frames are queued ahead of and between the messages.
        let server = try scriptedServer { session in
            try session.send(.ping([1]))
            try session.send(.pong([2]))
            try session.send("first")
            try session.send(.pong([3]))
            try session.send(.ping([4]))
            try session.send([0xCA, 0xFE])
            try session.send(.pong([5]))
            try session.send("third")
            try session.send(.pong([6]))
            try session.send("fourth")
            try session.close()
        }
        defer { server.stop() }
        try await withClient(engine.client()) { client in
            let session = try await client.webSocketSession(server.url)
            #expect(try await session.receiveText() == "first")
            #expect(try await session.receiveBinary() == [0xCA, 0xFE])
            #expect(try await session.receiveMessage() == .text("third"))
            var rest: [WebSocketMessage] = []
            for try await message in session.messages { rest.append(message) }
            #expect(rest == [.text("fourth")])
            await session.close()
        }
    }

    @Test(
        "with keepalive pings every 5 ms the Python peer's ping and our pongs never reach receiveText",
        arguments: TestEngine.allCases)
    func keepaliveAgainstPython(engine: TestEngine) async throws {
        let peer = try await PythonPeer.start()
        defer { peer.stop() }
        try await withClient(
            engine.client { ws in
                ws.pingInterval = .milliseconds(5)
                ws.pongTimeout = .seconds(10)  // a loaded test machine may answer late; no failure wanted here
            }
        ) { client in
            // /ping: the peer pings first and sends "pong-received" once our pong arrived: a ping always precedes it.
            let session = try await client.webSocketSession(peer.url(path: "/ping"))
            #expect(try await session.receiveText() == "pong-received")
            for round in 0..<50 {
                try await session.send("message \(round)")
                #expect(try await session.receiveText() == "message \(round)")
                try await session.send([UInt8(round)])
                #expect(try await session.receiveMessage() == .binary([UInt8(round)]))
            }
            await session.close()
            #expect(await session.closeReason?.code == .normal)
        }
    }

    @Test(
        "receiveText on a binary message throws unexpectedMessageKind with the message; the session stays open",
        arguments: TestEngine.allCases)
    func wrongKind(engine: TestEngine) async throws {
        let peer = try await PythonPeer.start()
        defer { peer.stop() }
        try await withClient(engine.client()) { client in
            let session = try await client.webSocketSession(peer.url(path: "/echo"))
            try await session.send([1, 2, 3])
            let error = try await #require(throws: WebSocketError.self) { try await session.receiveText() }
            #expect(error.code == .unexpectedMessageKind)
            #expect(error.message.contains("expected a text message but received a binary message"), "\(error)")
            #expect(error.frame?.kind == .binary)
            #expect(error.frame?.data == [1, 2, 3])
            #expect(!error.isNormalClosure)

            try await session.send("not bytes")
            let other = try await #require(throws: WebSocketError.self) { try await session.receiveBinary() }
            #expect(other.code == .unexpectedMessageKind)
            #expect(other.message.contains("expected a binary message but received a text message"), "\(other)")
            #expect(try other.frame?.readText() == "not bytes")

            // Still open: the next exchange works.
            try await session.send("still open")
            #expect(try await session.receiveText() == "still open")
            await session.close()
        }
    }

    @Test(
        "after the server's normal close: messages ends, receiveMessage and send throw a normal closure",
        arguments: TestEngine.allCases)
    func endAfterNormalClose(engine: TestEngine) async throws {
        let peer = try await PythonPeer.start()
        defer { peer.stop() }
        try await withClient(engine.client()) { client in
            // Two binary messages of 4 bytes, then close 1000.
            let session = try await client.webSocketSession(peer.url(path: "/send-then-close?count=2&size=4"))
            var received: [WebSocketMessage] = []
            for try await message in session.messages { received.append(message) }
            #expect(received == [.binary([0, 1, 2, 3]), .binary([0, 1, 2, 3])])

            let receiveError = try await #require(throws: WebSocketError.self) { try await session.receiveMessage() }
            #expect(receiveError.code == .sessionClosed)
            #expect(receiveError.closeCode == .normal)
            #expect(receiveError.isNormalClosure, "\(receiveError)")
            let textError = try await #require(throws: WebSocketError.self) { try await session.receiveText() }
            #expect(textError.isNormalClosure, "\(textError)")
            // Once the session has ended (a send between the close frame's delivery and the session's answer to
            // it may still go out).
            #expect(await session.closeReason?.code == .normal)
            let sendError = try await #require(throws: WebSocketError.self) { try await session.send("late") }
            #expect(sendError.code == .sessionClosed)
            #expect(sendError.isNormalClosure, "\(sendError)")
        }
    }

    @Test(
        "a server's close with an error code ends messages, and is not a normal closure", arguments: TestEngine.allCases
    )
    func endAfterErrorClose(engine: TestEngine) async throws {
        let peer = try await PythonPeer.start()
        defer { peer.stop() }
        try await withClient(engine.client()) { client in
            let session = try await client.webSocketSession(peer.url(path: "/close?code=1011&reason=oops"))
            var received: [WebSocketMessage] = []
            for try await message in session.messages { received.append(message) }
            #expect(received.isEmpty)
            let error = try await #require(throws: WebSocketError.self) { try await session.receiveMessage() }
            #expect(error.code == .sessionClosed)
            #expect(error.closeCode == .internalError)
            #expect(!error.isNormalClosure, "\(error)")
        }
    }

    @Test("a message and the close in one write: the answer throws a normal closure", arguments: TestEngine.allCases)
    func sendAfterCloseInSameWrite(engine: TestEngine) async throws {
        let server = try scriptedServer(echoThenMessageWithClose(last: "bye"))
        defer { server.stop() }
        try await withClient(engine.client()) { client in
            let session = try await client.webSocketSession(server.url)
            try await session.send(try await session.receiveText())
            // The session reads "bye" and the close together and answers the close before it hands over "bye".
            #expect(try await session.receiveText() == "bye")
            let error = try await #require(throws: WebSocketError.self) { try await session.send("answer") }
            #expect(error.code == .sessionClosed)
            #expect(error.closeCode == .normal)
            #expect(error.isNormalClosure, "\(error)")
            #expect(await session.closeReason?.code == .normal)
        }
    }

    @Test("a close without a status code, and one with 1001, are normal closures", arguments: TestEngine.allCases)
    func noStatusAndGoingAway(engine: TestEngine) async throws {
        for (closeFrame, expected) in [
            (rawFrame(0x88, []), CloseReason.Code.noStatus), (rawFrame(0x88, [0x03, 0xE9]), .goingAway),
        ] {
            let server = try scriptedServer { session in
                try session.sendRaw(rawFrame(0x81, Array("hi".utf8)) + closeFrame)
            }
            defer { server.stop() }
            try await withClient(engine.client()) { client in
                let session = try await client.webSocketSession(server.url)
                #expect(try await session.receiveText() == "hi")
                let error = try await #require(throws: WebSocketError.self) { try await session.receiveMessage() }
                #expect(error.closeCode == expected)
                #expect(error.isNormalClosure, "\(error)")
            }
        }
    }

    @Test("after our own close, send and receive throw a normal closure", arguments: TestEngine.allCases)
    func afterOwnClose(engine: TestEngine) async throws {
        let peer = try await PythonPeer.start()
        defer { peer.stop() }
        try await withClient(engine.client()) { client in
            let session = try await client.webSocketSession(peer.url(path: "/echo"))
            await session.close(CloseReason(code: .goingAway))
            let sendError = try await #require(throws: WebSocketError.self) { try await session.send("late") }
            #expect(sendError.isNormalClosure, "\(sendError)")
            let receiveError = try await #require(throws: WebSocketError.self) { try await session.receiveMessage() }
            #expect(receiveError.isNormalClosure, "\(receiveError)")
        }
    }

    @Test(
        "a dropped connection fails messages and later sends, and is not a normal closure",
        arguments: TestEngine.allCases)
    func afterFailure(engine: TestEngine) async throws {
        let server = try WebSocketTestServer.start(
            handler: .custom { session in
                try session.send("one")
                session.closeSocket()
            })
        defer { server.stop() }
        try await withClient(engine.client()) { client in
            let session = try await client.webSocketSession(server.url)
            var received: [WebSocketMessage] = []
            let error = try await #require(throws: WebSocketError.self) {
                for try await message in session.messages { received.append(message) }
            }
            #expect(received == [.text("one")])
            #expect(error.code == .connectionLost)
            #expect(!error.isNormalClosure)
            let sendError = try await #require(throws: WebSocketError.self) { try await session.send("late") }
            #expect(sendError.code == .sessionClosed)
            #expect(!sendError.isNormalClosure, "\(sendError)")
            let receiveError = try await #require(throws: WebSocketError.self) { try await session.receiveMessage() }
            #expect(!receiveError.isNormalClosure, "\(receiveError)")
        }
    }

    @Test("a session's echo loop written with messages and send(message)", arguments: TestEngine.allCases)
    func echoLoop(engine: TestEngine) async throws {
        let server = try scriptedServer { session in
            try session.send("a")
            try session.send([7])
            for expected in [Frame.text("a"), Frame.binary([7])] {
                guard let frame = try session.receive(), frame == expected else {
                    throw WebSocketTestServerError("expected the echo \(expected)")
                }
            }
            try session.close()
        }
        defer { server.stop() }
        try await withClient(engine.client()) { client in
            let echoed = try await client.webSocket(server.url) { session in
                var count = 0
                for try await message in session.messages {
                    try await session.send(message)
                    count += 1
                }
                return count
            }
            #expect(echoed == 2)
        }
    }
}

@Suite("Entry points: the port follows the scheme, URL overloads")
struct EntryPointTests {
    /// The URL an entry point would connect to, read in its request block, which then stops it.
    private static func requestedURL(
        _ open: ((inout WebSocketRequestBuilder) throws -> Void) async throws -> Void
    ) async throws -> WebSocketURL? {
        let seen = Mutex<WebSocketURL?>(nil)
        await #expect(throws: StopBeforeConnecting.self) {
            try await open { request in
                seen.withLock { $0 = request.url }
                throw StopBeforeConnecting()
            }
        }
        return seen.withLock { $0 }
    }

    @Test("without a port every component entry point uses 80 for ws and 443 for wss; the host defaults to localhost")
    func defaultPorts() async throws {
        try await withClient(TestEngine.cio.client()) { client in
            let noop: (WebSocketSession) async throws -> Void = { _ in }
            let session = try await Self.requestedURL {
                try await _ = client.webSocketSession(host: "example.test", $0)
            }
            #expect(session?.port == 80)
            #expect(session?.scheme == "ws")
            let webSocket = try await Self.requestedURL {
                try await client.webSocket(host: "example.test", request: $0, noop)
            }
            #expect(webSocket?.port == 80)
            let ws = try await Self.requestedURL { try await client.ws(host: "example.test", request: $0, noop) }
            #expect(ws?.port == 80)
            #expect(ws?.host == "example.test")
            let wss = try await Self.requestedURL { try await client.wss(host: "example.test", request: $0, noop) }
            #expect(wss?.port == 443)
            #expect(wss?.scheme == "wss")
            let wsLocal = try await Self.requestedURL { try await client.ws(request: $0, noop) }
            #expect(wsLocal?.host == "localhost")
            #expect(wsLocal?.port == 80)
            let wssLocal = try await Self.requestedURL { try await client.wss(path: "/x", request: $0, noop) }
            #expect(wssLocal?.host == "localhost")
            #expect(wssLocal?.port == 443)
            #expect(wssLocal?.pathAndQuery == "/x")
        }
    }

    @Test("an Int port still works in ws, wss and webSocket", arguments: TestEngine.allCases)
    func explicitPort(engine: TestEngine) async throws {
        let peer = try await PythonPeer.start()
        defer { peer.stop() }
        let port: Int = peer.port
        try await withClient(engine.client()) { client in
            let viaWs = try await client.ws(host: "127.0.0.1", port: port, path: "/echo") { session in
                try await session.send("ws")
                return try await session.receiveText()
            }
            #expect(viaWs == "ws")
            let viaWebSocket = try await client.webSocket(host: "127.0.0.1", port: port, path: "/echo") { session in
                try await session.send("webSocket")
                return try await session.receiveText()
            }
            #expect(viaWebSocket == "webSocket")
            let wssPort = try await Self.requestedURL {
                try await client.wss(host: "example.test", port: 8443, request: $0) { _ in }
            }
            #expect(wssPort?.port == 8443)
        }
    }

    #if FoundationURL
    @Test("URL overloads of webSocketSession, webSocket, ws and wss", arguments: TestEngine.allCases)
    func urlOverloads(engine: TestEngine) async throws {
        let peer = try await PythonPeer.start()
        defer { peer.stop() }
        let url = try #require(URL(string: peer.url(path: "/echo?via=url")))
        try await withClient(engine.client()) { client in
            let session = try await client.webSocketSession(url)
            #expect(session.url.pathAndQuery == "/echo?via=url")
            #expect(session.url.port == peer.port)
            try await session.send("session")
            #expect(try await session.receiveText() == "session")
            await session.close()

            let viaWebSocket = try await client.webSocket(url) { session in
                try await session.send("webSocket")
                return try await session.receiveText()
            }
            #expect(viaWebSocket == "webSocket")
            let viaWs = try await client.ws(url) { session in
                try await session.send("ws")
                return try await session.receiveText()
            }
            #expect(viaWs == "ws")
            let error = try await #require(throws: WebSocketError.self) { try await client.wss(url) { _ in } }
            #expect(error.code == .invalidURL)

            var request = WebSocketRequestBuilder(url: WebSocketURL(secure: false, host: "localhost"))
            try request.url(try #require(URL(string: "https://example.test/chat")))
            #expect(request.url.isSecure)
            #expect(request.url.port == 443)
            #expect(request.url.pathAndQuery == "/chat")
            #expect(try WebSocketURL(try #require(URL(string: "ws://[::1]:9000/a?b=c"))).port == 9000)
        }
    }
    #endif

    @Test(
        "client.unsupportedReason says nothing for a supported capability and matches the engine's",
        arguments: TestEngine.allCases)
    func unsupportedReason(engine: TestEngine) async throws {
        try await withClient(engine.client()) { client in
            #expect(client.unsupportedReason(.webSocket) == nil)
            #expect(client.isSupported(.webSocket))
            let made = engine.make()
            #expect(client.unsupportedReason(.webSocketExtensions) == made.unsupportedReason(.webSocketExtensions))
            #expect((client.unsupportedReason(.webSocketExtensions) == nil) == client.isSupported(.webSocketExtensions))
            await made.shutdown()
        }
    }
}
