import Synchronization
import Testing
import WSCore
import WSExtensions
import WSTesting

/// A client on `engine` that streams incoming messages, with the WebSockets settings `configure` adds.
private func streamingClient(
    _ engine: InMemoryEngine, _ configure: @escaping (inout WebSockets.Configuration) throws -> Void = { _ in }
) throws -> WebSocketClient {
    try WebSocketClient(engine: engine) { config in
        try config.install(WebSockets.self) { ws in
            ws.streamsIncomingMessages = true
            try configure(&ws)
        }
    }
}

/// Opens a session on a fresh engine; returns it with the server side.
private func open(
    _ configure: @escaping (inout WebSockets.Configuration) throws -> Void = { _ in },
    headers: HTTPHeaders = HTTPHeaders()
) async throws -> (WebSocketClient, WebSocketSession, InMemoryServerConnection) {
    // The handler accepts (with `headers`), hands the server side to the test and keeps it until the client leaves.
    let (connections, continuation) = AsyncStream.makeStream(of: InMemoryServerConnection.self)
    let engine = InMemoryEngine { server in
        try server.accept(headers: headers)
        continuation.yield(server)
        await server.waitForDisconnect()
    }
    let client = try streamingClient(engine, configure)
    let session = try await client.webSocketSession("ws://stream.test/")
    var servers = connections.makeAsyncIterator()
    return (client, session, try #require(await servers.next()))
}

/// Reads every chunk of `message`.
private func chunks(of message: WebSocketStreamingMessage) async throws -> [[UInt8]] {
    var result: [[UInt8]] = []
    for try await chunk in message.chunks { result.append(chunk) }
    return result
}

/// A counter shared between tasks.
private final class Counter: Sendable {
    let value = Atomic(0)
    func load() -> Int { self.value.load(ordering: .relaxed) }
}

/// Chunks as an async sequence that counts how many were asked for.
private struct CountingChunks: AsyncSequence, Sendable {
    typealias Element = [UInt8]
    let chunks: [[UInt8]]
    let pulled = Counter()
    let onPull: @Sendable () -> Void
    struct AsyncIterator: AsyncIteratorProtocol {
        let source: CountingChunks
        var index = 0
        mutating func next() async throws -> [UInt8]? {
            guard self.index < self.source.chunks.count else { return nil }
            self.source.onPull()
            self.source.pulled.value.add(1, ordering: .relaxed)
            defer { self.index += 1 }
            return self.source.chunks[self.index]
        }
    }
    func makeAsyncIterator() -> AsyncIterator { AsyncIterator(source: self) }
}

@Suite("Streaming messages (in memory)", .timeLimit(.minutes(1)))
struct StreamingSessionTests {
    @Test("a fragmented text message arrives chunk by chunk, never cut inside a character")
    func textChunks() async throws {
        let (client, session, server) = try await open()
        let text = Array("héllo wörld 😀 ok".utf8)
        try await server.send(Frame(kind: .text, fin: false, data: Array(text[0..<2])))  // cuts é
        try await server.send(Frame(kind: .continuation, fin: false, data: Array(text[2..<16])))  // cuts 😀
        try await server.send(Frame(kind: .continuation, fin: true, data: Array(text[16...])))
        try await server.send(Frame.binary([1, 2, 3]))
        let message = try await session.receiveStreamingMessage()
        #expect(message.kind == .text)
        let received = try await chunks(of: message)
        #expect(received.count == 3)
        #expect(received.joined().elementsEqual(text))
        for chunk in received { #expect(String(validating: chunk, as: UTF8.self) != nil) }
        let next = try await session.receiveStreamingMessage()
        #expect(next.kind == .binary)
        #expect(try await chunks(of: next) == [[1, 2, 3]])
        await session.close()
        await client.close()
    }

    @Test(
        "a session is freed once it ended and nothing refers to it, also after a streamed message",
        arguments: [true, false])
    func sessionFreedAfterStreaming(readToEnd: Bool) async throws {
        weak var released: WebSocketSession?
        do {
            let (client, session, server) = try await open()
            released = session
            try await server.send(Frame(kind: .binary, fin: false, data: [1, 2]))
            if readToEnd { try await server.send(Frame(kind: .continuation, fin: true, data: [3])) }
            let message = try await session.receiveStreamingMessage()
            var chunks = message.chunks.makeAsyncIterator()
            #expect(try await chunks.next() == [1, 2])
            if readToEnd {
                #expect(try await chunks.next() == [3])
                #expect(try await chunks.next() == nil)
            }
            await session.close()
            await client.close()
        }
        // Teardown finishes on other tasks: wait for it (bounded), then the session must be gone.
        let deadline = ContinuousClock.now + .seconds(5)
        while released != nil && ContinuousClock.now < deadline { await Task.yield() }
        #expect(released == nil, "the session outlived every reference to it (a reference cycle)")
    }

    @Test("an unread message is skipped by the next receiveStreamingMessage; its old chunks then throw")
    func skipUnread() async throws {
        let (client, session, server) = try await open()
        try await server.send(Frame(kind: .binary, fin: false, data: [1]))
        try await server.send(Frame(kind: .continuation, fin: true, data: [2]))
        try await server.send(Frame.text("next"))
        let first = try await session.receiveStreamingMessage()
        let second = try await session.receiveStreamingMessage()
        #expect(second.kind == .text)
        #expect(try await chunks(of: second) == [Array("next".utf8)])
        await #expect(throws: WebSocketError.self) { try await chunks(of: first) }
        await session.close()
        await client.close()
    }

    @Test("while the chunks are not read, the session stops reading; reading them resumes it")
    func receiveBackpressure() async throws {
        let (client, session, server) = try await open { $0.maxIncomingBufferBytes = 64 << 10 }
        let chunk = [UInt8](repeating: 7, count: 8 << 10)
        try await server.send(Frame(kind: .binary, fin: false, data: chunk))
        for _ in 0..<63 { try await server.send(Frame(kind: .continuation, fin: false, data: chunk)) }
        try await server.send(Frame(kind: .continuation, fin: true, data: chunk))
        #expect(server.isClientReadingPaused)
        #expect(server.heldBytes > 256 << 10)  // most of the 512 KiB wait in the network, not in the client
        let message = try await session.receiveStreamingMessage()
        var total = 0
        for try await bytes in message.chunks { total += bytes.count }
        #expect(total == 65 * chunk.count)
        #expect(!server.isClientReadingPaused)
        await session.close()
        await client.close()
    }

    @Test("a ping between fragments is answered before the message is read")
    func pingBetweenFragments() async throws {
        let (client, session, server) = try await open()
        try await server.send(Frame(kind: .binary, fin: false, data: [1]))
        try await server.send(Frame(kind: .ping, data: [9]))
        let pong = try await server.receive()
        #expect(pong?.kind == .pong)
        #expect(pong?.data == [9])
        try await server.send(Frame(kind: .continuation, fin: true, data: [2]))
        #expect(try await chunks(of: session.receiveStreamingMessage()) == [[1], [2]])
        await session.close()
        await client.close()
    }

    @Test(
        "a misbehaving server fails the chunk stream with the close code of whole-message receive",
        arguments: [
            ("new data frame mid-message", Frame(kind: .text, data: Array("x".utf8)), CloseReason.Code.protocolError),
            ("fragmented ping", Frame(kind: .ping, fin: false, data: []), CloseReason.Code.protocolError),
            (
                "invalid UTF-8", Frame(kind: .continuation, fin: true, data: [0xC3, 0x28]),
                CloseReason.Code.invalidPayload
            ),
        ])
    func violation(_ name: String, frame: Frame, code: CloseReason.Code) async throws {
        let (client, session, server) = try await open()
        try await server.send(Frame(kind: .text, fin: false, data: Array("ab".utf8)))
        let message = try await session.receiveStreamingMessage()
        try await server.send(frame)
        let error = await #expect(throws: WebSocketError.self) { try await chunks(of: message) }
        #expect(error?.closeCode == code, "\(name)")
        var sent: Frame?
        while let next = try await server.receive() { sent = next }
        #expect(sent?.readReason()?.code == code, "\(name)")
        await client.close()
    }

    @Test("a connection that drops mid-message fails the chunk stream with connectionLost")
    func dropMidMessage() async throws {
        let (client, session, server) = try await open()
        try await server.send(Frame(kind: .binary, fin: false, data: [1]))
        let message = try await session.receiveStreamingMessage()
        await server.drop()
        let error = await #expect(throws: WebSocketError.self) { try await chunks(of: message) }
        #expect(error?.code == .connectionLost)
        await client.close()
    }

    @Test("the streamed-message limit fails with 1009; receiveMessage collects fragments up to maxMessageSize")
    func limits() async throws {
        let (client, session, server) = try await open {
            $0.maxStreamedMessageSize = 10
            $0.maxMessageSize = 4
        }
        try await server.send(Frame(kind: .binary, fin: false, data: [1, 2]))
        try await server.send(Frame(kind: .continuation, fin: true, data: [3]))
        #expect(try await session.receiveMessage() == .binary([1, 2, 3]))
        try await server.send(Frame(kind: .binary, fin: false, data: [UInt8](repeating: 0, count: 6)))
        try await server.send(Frame(kind: .continuation, fin: true, data: [UInt8](repeating: 0, count: 6)))
        let error = await #expect(throws: WebSocketError.self) { try await session.receiveStreamingMessage().discard() }
        #expect(error?.closeCode == .messageTooBig)
        await client.close()

        let (client2, session2, server2) = try await open { $0.maxMessageSize = 4 }
        try await server2.send(Frame(kind: .binary, fin: false, data: [1, 2, 3]))
        try await server2.send(Frame(kind: .continuation, fin: true, data: [4, 5]))
        let tooBig = await #expect(throws: WebSocketError.self) { try await session2.receiveMessage() }
        #expect(tooBig?.code == .messageTooBig)
        #expect(await session2.closeReason?.code == .messageTooBig)
        await client2.close()
    }

    @Test("receiveDeserialized reads a fragmented message whole in streaming mode")
    func deserializeFragments() async throws {
        /// Decodes a text frame as its string.
        struct TextConverter: WebSocketContentConverter {
            func serialize<T: Encodable>(_ value: T) throws -> Frame { Frame.text("\(value)") }
            func deserialize<T: Decodable>(_ type: T.Type, from frame: Frame) throws -> T {
                try #require(String(decoding: frame.data, as: UTF8.self) as? T)
            }
        }
        let (client, session, server) = try await open { $0.contentConverter = TextConverter() }
        try await server.send(Frame(kind: .text, fin: false, data: Array("hel".utf8)))
        try await server.send(Frame(kind: .continuation, fin: true, data: Array("lo".utf8)))
        #expect(try await session.receiveDeserialized(String.self) == "hello")
        await session.close()
        await client.close()
    }

    @Test("a streamed send goes out as fragments: first frame, continuations, FIN on the last")
    func streamedSend() async throws {
        let (client, session, server) = try await open()
        let source = CountingChunks(chunks: [[1, 2], [], [3], [4, 5, 6]], onPull: {})
        try await session.sendStreamingMessage(.binary, from: source)
        var frames: [Frame] = []
        for _ in 0..<3 { frames.append(try #require(await server.receive())) }
        #expect(frames.map(\.kind) == [.binary, .continuation, .continuation])
        #expect(frames.map(\.fin) == [false, false, true])
        #expect(frames.map(\.data) == [[1, 2], [3], [4, 5, 6]])
        // Text: a character may span chunks; invalid text is refused before anything is sent.
        let text = Array("é😀".utf8)
        try await session.sendStreamingMessage(
            .text, from: CountingChunks(chunks: [Array(text[..<1]), Array(text[1...])], onPull: {}))
        let first = try #require(await server.receive())
        let second = try #require(await server.receive())
        #expect(first.data + second.data == text)
        await session.close()
        await client.close()
    }

    @Test("a slow server slows the producer: chunks are asked for only while the outgoing buffer has room")
    func sendBackpressure() async throws {
        let (client, session, server) = try await open { $0.maxOutgoingBufferBytes = 64 << 10 }
        server.pauseReading()
        let maxSeen = Counter()
        let chunk = [UInt8](repeating: 1, count: 16 << 10)
        let source = CountingChunks(
            chunks: Array(repeating: chunk, count: 256),
            onPull: { maxSeen.value.max(server.clientBufferedBytes, ordering: .relaxed) })
        let sending = Task { try await session.sendStreamingMessage(.binary, from: source) }
        await server.waitForClientBufferedBytes(atLeast: 64 << 10)
        server.resumeReading()
        try await sending.value
        // At most the limit plus two chunks were ever buffered when a chunk was asked for (not 4 MiB).
        #expect(maxSeen.load() <= (64 << 10) + 2 * chunk.count)
        await session.close()
        await client.close()
    }

    @Test("a producer that fails, or a cancelled send, mid-message closes the session with 1011")
    func abandonedSend() async throws {
        struct ProducerFailed: Error {}
        let (client, session, server) = try await open()
        let failing = AsyncThrowingStream<[UInt8], any Error> { continuation in
            continuation.yield([1])
            continuation.yield([2])
            continuation.finish(throwing: ProducerFailed())
        }
        await #expect(throws: ProducerFailed.self) { try await session.sendStreamingMessage(.binary, from: failing) }
        #expect(try await server.receive()?.kind == .binary)
        #expect(try await server.receive()?.readReason()?.code == .internalError)
        await client.close()

        let (client2, session2, server2) = try await open()
        let (stream, continuation) = AsyncStream<[UInt8]>.makeStream()
        continuation.yield([1])
        continuation.yield([2])
        let sending = Task { try await session2.sendStreamingMessage(.binary, from: stream) }
        #expect(try await server2.receive()?.kind == .binary)  // the first fragment is out; the producer waits
        sending.cancel()
        await #expect(throws: CancellationError.self) { try await sending.value }
        #expect(try await server2.receive()?.readReason()?.code == .internalError)
        await client2.close()
    }

    @Test("messages other tasks send during a streamed send wait for its last fragment; a ping goes between")
    func sendDuringStreamedSend() async throws {
        let (client, session, server) = try await open()
        let (stream, continuation) = AsyncStream<[UInt8]>.makeStream()
        continuation.yield([1])
        continuation.yield([2])
        let streaming = Task { try await session.sendStreamingMessage(.binary, from: stream) }
        let first = try #require(await server.receive())  // the first fragment is out; the producer waits
        #expect(first.kind == .binary && !first.fin)
        let other = Task { try await session.send("hello") }
        while session.sendersWaitingForMessageEnd == 0 { await Task.yield() }
        try await session.send(Frame.ping([7]))
        continuation.finish()
        try await streaming.value
        try await other.value
        var frames: [Frame] = []
        for _ in 0..<3 { frames.append(try #require(await server.receive())) }
        #expect(frames.map(\.kind) == [.ping, .continuation, .text])
        #expect(frames[1].fin && frames[1].data == [2])
        #expect(frames[2].data == Array("hello".utf8))
        await session.close()
        await client.close()
    }

    @Test("a message fragmented by hand cannot be interleaved: a new message or a stray continuation throws")
    func handFragmentedOrder() async throws {
        let (client, session, server) = try await open()
        let stray = await #expect(throws: WebSocketError.self) {
            try await session.send(Frame.continuation([0], fin: true))
        }
        #expect(stray?.code == .invalidArgument)
        try await session.send(Frame.text("a", fin: false))
        let inside = await #expect(throws: WebSocketError.self) { try await session.send("b") }
        #expect(inside?.code == .invalidArgument)
        try await session.send(Frame.continuation(Array("c".utf8), fin: true))
        try await session.send("d")
        var frames: [Frame] = []
        for _ in 0..<3 { frames.append(try #require(await server.receive())) }
        #expect(frames.map(\.kind) == [.text, .continuation, .text])
        #expect(frames.map { String(decoding: $0.data, as: UTF8.self) } == ["a", "c", "d"])
        await session.close()
        await client.close()
    }

    @Test("sent frames and statistics: the frame as given without extensions, the extension's output with one")
    func sentFramesAndStatistics() async throws {
        let (client, session, server) = try await open()
        let payload = (0..<128).map { UInt8(truncatingIfNeeded: $0 &* 7) }
        try await session.send(Frame.binary(payload))
        try await session.send(Frame.text("hi"))
        let binary = try #require(await server.receive())
        let text = try #require(await server.receive())
        #expect(binary.kind == .binary && binary.data == payload && !binary.rsv1)
        #expect(text.kind == .text && text.data == Array("hi".utf8))
        let statistics = session.statistics
        #expect(statistics.framesSent == 2)
        #expect(statistics.binaryMessagesSent == 1 && statistics.textMessagesSent == 1)
        #expect(statistics.messageBytesSent == 130 && statistics.dataPayloadBytesSent == 130)
        #expect(statistics.wireBytesSent == (2 + 2 + 4 + 128) + (2 + 4 + 2))
        await session.close()
        await client.close()

        // With permessage-deflate the wire carries the extension's frame, counted as such.
        let (deflateClient, deflateSession, deflateServer) = try await open(
            { try $0.extensions { try $0.install(.perMessageDeflate()) } },
            headers: ["Sec-WebSocket-Extensions": "permessage-deflate"])
        let zeros = [UInt8](repeating: 0, count: 1000)
        try await deflateSession.send(Frame.binary(zeros))
        let compressed = try #require(await deflateServer.receive())
        #expect(compressed.rsv1 && compressed.data.count < 100)
        let peer = try PerMessageDeflate().negotiate(response: WebSocketExtensionHeader(name: "permessage-deflate"))
        let inflated = try peer.processIncoming(compressed, context: WebSocketExtensionContext(maxMessageSize: 1 << 20))
        #expect(inflated.data == zeros)
        let deflated = deflateSession.statistics
        #expect(deflated.binaryMessagesSent == 1 && deflated.messageBytesSent == 1000)
        #expect(deflated.dataPayloadBytesSent == compressed.data.count)
        #expect(deflated.wireBytesSent == 2 + 4 + compressed.data.count)
        await deflateSession.close()
        await deflateClient.close()
    }

    @Test("permessage-deflate both ways, fragment by fragment, one DEFLATE stream per message")
    func deflate() async throws {
        let (client, session, server) = try await open(
            { try $0.extensions { try $0.install(.perMessageDeflate()) } },
            headers: ["Sec-WebSocket-Extensions": "permessage-deflate"])
        // The server's compressor: the same extension, negotiated as a peer would.
        let peer = try PerMessageDeflate().negotiate(response: WebSocketExtensionHeader(name: "permessage-deflate"))
        let context = WebSocketExtensionContext(maxMessageSize: 1 << 20)
        let text = (0..<2000).map { "line \($0) é😀\n" }.joined()
        let bytes = Array(text.utf8)
        let pieces = stride(from: 0, to: bytes.count, by: 4099).map { Array(bytes[$0..<min(bytes.count, $0 + 4099)]) }
        for (index, piece) in pieces.enumerated() {
            let frame = Frame(kind: index == 0 ? .text : .continuation, fin: index == pieces.count - 1, data: piece)
            try await server.send(try peer.processOutgoing(frame, context: context))
        }
        let message = try await session.receiveStreamingMessage()
        let received = try await chunks(of: message)
        #expect(received.joined().elementsEqual(bytes))
        #expect(received.count >= pieces.count - 1)
        for chunk in received { #expect(String(validating: chunk, as: UTF8.self) != nil) }

        // Our streamed send: compressed fragments that inflate, as one message, to what was sent.
        try await session.sendStreamingMessage(.text, from: CountingChunks(chunks: pieces, onPull: {}))
        var compressed: [UInt8] = []
        var first: Frame?
        while true {
            let frame = try #require(await server.receive())
            if first == nil { first = frame }
            compressed += frame.data
            if frame.fin { break }
        }
        #expect(first?.rsv1 == true)
        #expect(compressed.count < bytes.count / 2)
        let whole = try peer.processIncoming(
            Frame(kind: .text, data: compressed, reservedBits: .rsv1), context: context)
        #expect(whole.data == bytes)
        await session.close()
        await client.close()
    }

    @Test("a compressed fragment that inflates past maxMessageSize fails with 1009")
    func deflateChunkBound() async throws {
        let (client, session, server) = try await open(
            {
                try $0.extensions { try $0.install(.perMessageDeflate()) }
                $0.maxMessageSize = 64 << 10
            },
            headers: ["Sec-WebSocket-Extensions": "permessage-deflate"])
        let peer = try PerMessageDeflate().negotiate(response: WebSocketExtensionHeader(name: "permessage-deflate"))
        let context = WebSocketExtensionContext(maxMessageSize: 1 << 30)
        let zeros = [UInt8](repeating: 0, count: 60 << 10)
        try await server.send(try peer.processOutgoing(Frame(kind: .binary, fin: false, data: zeros), context: context))
        let big = [UInt8](repeating: 0, count: 1 << 20)
        try await server.send(
            try peer.processOutgoing(Frame(kind: .continuation, fin: true, data: big), context: context))
        let error = await #expect(throws: WebSocketError.self) { try await session.receiveStreamingMessage().discard() }
        #expect(error?.closeCode == .messageTooBig)
        await client.close()
    }
}
