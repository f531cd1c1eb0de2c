// Metrics, tracing and statistics of real sessions against the WSTesting server (a peer that counts what it got),
// on both engines. Metrics go to a `TestMetrics` given to each client (no process-wide bootstrap); the tracer is
// bound to the test's task with `withTracer`.
import CoreMetrics
import InMemoryTracing
import MetricsTestKit
import Synchronization
import Testing
import Tracing
import WSCore
import WSExtensions
import WSTesting

/// What the server received and sent on its connections.
private final class ServerTally: Sendable {
    struct Counts: Sendable {
        var textReceived = 0
        var binaryReceived = 0
        var bytesReceived = 0
        var pingsReceived = 0
        var messagesSent = 0
        var bytesSent = 0
    }
    let counts = Mutex(Counts())
}

/// An echo server that counts, closes with 1011 when it receives the text `fail`, and closes the session like the
/// echo handler otherwise.
private func countingServer(_ tally: ServerTally) throws -> WebSocketTestServer {
    try WebSocketTestServer.start(
        handler: .custom { session in
            while let frame = try session.receive() {
                switch frame.kind {
                case .text, .binary:
                    if frame.kind == .text, frame.data == Array("fail".utf8) {
                        try session.close(CloseReason(code: .internalError, message: "as asked"))
                        return
                    }
                    tally.counts.withLock {
                        if frame.kind == .text { $0.textReceived += 1 } else { $0.binaryReceived += 1 }
                        $0.bytesReceived += frame.data.count
                        $0.messagesSent += 1
                        $0.bytesSent += frame.data.count
                    }
                    try session.send(frame)
                case .ping:
                    tally.counts.withLock { $0.pingsReceived += 1 }
                case .close:
                    try session.close(frame.readReason() ?? CloseReason(code: .normal))
                    return
                default:
                    break
                }
            }
        })
}

private func makeClient(_ engine: TestEngine, metrics: TestMetrics) -> WebSocketClient {
    WebSocketClient(engine: engine.make()) { config in
        config.metricsFactory = metrics
        config.openTimeout = .seconds(5)
    }
}

@Suite("Observability: metrics, tracing and statistics of real sessions")
struct ObservabilityTests {
    @Test(
        "metrics after scripted sessions: opens, a refused connect, a 403, messages, pings, a 1011 close",
        arguments: TestEngine.allCases)
    func metricsAfterScriptedSessions(engine: TestEngine) async throws {
        let tally = ServerTally()
        let server = try countingServer(tally)
        defer { server.stop() }
        let rejecting = try WebSocketTestServer.start(
            {
                var c = WebSocketTestServer.Configuration()
                c.handshake = .reject(status: 403, body: "no")
                return c
            }())
        defer { rejecting.stop() }
        let metrics = TestMetrics()
        let engineName = engine == .cio ? "CIO" : "Curl"
        let e = ("engine", engineName)

        try await withClient(makeClient(engine, metrics: metrics)) { client in
            // Session 1: 3 text and 2 binary messages each way, 2 pings, a normal close.
            let session = try await client.webSocketSession(server.url(path: "/one"))
            for text in ["a", "bb", "ccc"] { try await session.send(text) }
            for bytes in [[1, 2, 3, 4], [5]] as [[UInt8]] { try await session.send(bytes) }
            for _ in 0..<5 { _ = try await nextMessage(session) }
            let rtt1 = try await session.ping()
            let rtt2 = try await session.ping(timeout: .seconds(5))
            #expect(rtt1 > .zero && rtt2 > .zero)
            await session.close()

            // The session's statistics match what the server counted.
            let statistics = session.statistics
            let counts = tally.counts.withLock { $0 }
            #expect(statistics.textMessagesSent == counts.textReceived)
            #expect(statistics.binaryMessagesSent == counts.binaryReceived)
            #expect(statistics.messageBytesSent == counts.bytesReceived)
            #expect(statistics.messagesReceived == counts.messagesSent)
            #expect(statistics.messageBytesReceived == counts.bytesSent)
            #expect(counts.pingsReceived == 2)
            #expect(statistics.pongsMatched == 2)
            #expect(statistics.lastRoundTripTime == rtt2)
            #expect(statistics.framesSent == 5 + 2 + 1, "5 messages, 2 pings, the close")
            #expect(statistics.framesReceived >= 5 + 2 + 1, "5 messages, 2 pongs, the close")
            #expect(statistics.openedAt != nil)

            // Session 2: the server closes with 1011.
            let failing = try await client.webSocketSession(server.url(path: "/two"))
            try await failing.send("fail")
            #expect(await failing.closeReason?.code == .internalError)

            // A refused connect and a 403.
            await #expect(throws: (any Error).self) {
                _ = try await client.webSocketSession("ws://127.0.0.1:\(try unusedPort())/")
            }
            await #expect(throws: (any Error).self) { _ = try await client.webSocketSession(rejecting.url) }
        }

        #expect(try metrics.expectCounter(MetricName.opened, [e]).totalValue == 2)
        #expect(try metrics.expectCounter(MetricName.failed, [e, ("kind", "refused")]).totalValue == 1)
        #expect(try metrics.expectCounter(MetricName.failed, [e, ("kind", "handshake_status")]).totalValue == 1)
        #expect(try metrics.expectCounter(MetricName.closed, [e, ("code", "1000")]).totalValue == 1)
        #expect(try metrics.expectCounter(MetricName.closed, [e, ("code", "1011")]).totalValue == 1)
        #expect(try metrics.expectMeter(MetricName.open, [e]).lastValue == 0)
        #expect(try metrics.expectTimer(MetricName.openDuration, [e]).values.count == 2)
        let rtts = try metrics.expectTimer(MetricName.pingRTT, [e]).values
        #expect(rtts.count == 2 && rtts.allSatisfy { $0 > 0 })
        func messages(_ direction: String, _ type: String) throws -> Int64 {
            try metrics.expectCounter(MetricName.messages, [e, ("direction", direction), ("type", type)]).totalValue
        }
        #expect(try messages("sent", "text") == 4, "3 in session 1, `fail` in session 2")
        #expect(try messages("sent", "binary") == 2)
        #expect(try messages("received", "text") == 3)
        #expect(try messages("received", "binary") == 2)
        #expect(
            try metrics.expectCounter(MetricName.messageBytes, [e, ("direction", "sent")]).totalValue == 6 + 5 + 4)
        #expect(
            try metrics.expectCounter(MetricName.messageBytes, [e, ("direction", "received")]).totalValue == 6 + 5)
        #expect(try metrics.expectCounter(MetricName.wireBytes, [e, ("direction", "received")]).totalValue > 11)
    }

    @Test("keepalive pongs feed the statistics and the round-trip metric; deflate sessions record their ratio")
    func keepaliveAndCompression() async throws {
        var configuration = WebSocketTestServer.Configuration()
        configuration.perMessageDeflate = true
        let server = try WebSocketTestServer.start(configuration)
        defer { server.stop() }
        let metrics = TestMetrics()
        let client = try WebSocketClient(engine: TestEngine.cio.make()) { config in
            config.metricsFactory = metrics
            try config.install(WebSockets.self) { ws in
                ws.pingInterval = .milliseconds(20)
                try ws.extensions { try $0.install(.perMessageDeflate()) }
            }
        }
        let text = String(repeating: "compressible text ", count: 200)
        try await withClient(client) { client in
            let session = try await client.webSocketSession(server.url)
            #expect(!session.extensions.isEmpty)
            try await session.send(text)
            #expect(try await nextMessage(session).readText() == text)
            // The keepalive runs on its own schedule: wait (at most 5 s) for its first answered ping.
            let deadline = ContinuousClock.now + .seconds(5)
            while session.statistics.pongsMatched == 0 && ContinuousClock.now < deadline {
                try await Task.sleep(for: .milliseconds(5))
            }
            let statistics = session.statistics
            #expect(statistics.pongsMatched > 0)
            #expect(statistics.lastRoundTripTime.map { $0 > .zero } == true)
            #expect(statistics.dataPayloadBytesSent < statistics.messageBytesSent, "compressed on the wire")
            #expect(statistics.messageBytesReceived == text.utf8.count)
            await session.close()
        }
        let e = ("engine", "CIO")
        #expect(try metrics.expectTimer(MetricName.pingRTT, [e]).values.count >= 1)
        let sentRatio = try metrics.expectRecorder(MetricName.compressionRatio, [e, ("direction", "sent")])
        let receivedRatio = try metrics.expectRecorder(MetricName.compressionRatio, [e, ("direction", "received")])
        #expect(sentRatio.values.count == 1 && sentRatio.values[0] > 5, "\(sentRatio.values)")
        #expect(receivedRatio.values.count == 1 && receivedRatio.values[0] > 5, "\(receivedRatio.values)")
    }

    @Test("streamed messages count once each way, their bytes as the fragments go; the metrics agree")
    func streamedMessages() async throws {
        let (connections, continuation) = AsyncStream.makeStream(of: InMemoryServerConnection.self)
        let engine = InMemoryEngine { server in
            try server.accept()
            continuation.yield(server)
            await server.waitForDisconnect()
        }
        let metrics = TestMetrics()
        let client = WebSocketClient(engine: engine) { config in
            config.metricsFactory = metrics
            config.install(WebSockets.self) { $0.streamsIncomingMessages = true }
        }
        let session = try await client.webSocketSession("ws://stats.test/")
        var servers = connections.makeAsyncIterator()
        let server = try #require(await servers.next())

        // Sent: one binary message in three fragments (an empty chunk is skipped).
        try await session.sendStreamingMessage(.binary, from: Chunks(chunks: [[1, 2], [], [3], [4, 5, 6]]))
        for _ in 0..<3 { _ = try #require(await server.receive()) }
        // Received: one text message in three fragments, streamed.
        try await server.send(Frame(kind: .text, fin: false, data: Array("ab".utf8)))
        try await server.send(Frame(kind: .continuation, fin: false, data: Array("cd".utf8)))
        try await server.send(Frame(kind: .continuation, fin: true, data: Array("e".utf8)))
        let message = try await session.receiveStreamingMessage()
        var received: [UInt8] = []
        for try await chunk in message.chunks { received += chunk }
        #expect(received == Array("abcde".utf8))

        let statistics = session.statistics
        #expect(statistics.binaryMessagesSent == 1 && statistics.textMessagesSent == 0)
        #expect(statistics.messageBytesSent == 6)
        #expect(statistics.framesSent == 3)
        #expect(statistics.textMessagesReceived == 1 && statistics.binaryMessagesReceived == 0)
        #expect(statistics.messageBytesReceived == 5)
        #expect(statistics.framesReceived == 3)
        await session.close()
        await client.close()

        let e = ("engine", engine.name)
        #expect(
            try metrics.expectCounter(MetricName.messages, [e, ("direction", "sent"), ("type", "binary")]).totalValue
                == 1)
        #expect(
            try metrics.expectCounter(MetricName.messages, [e, ("direction", "received"), ("type", "text")])
                .totalValue == 1)
        #expect(try metrics.expectCounter(MetricName.messageBytes, [e, ("direction", "received")]).totalValue == 5)
    }

    @Test("with metrics off, a client reports nothing", arguments: [TestEngine.cio])
    func metricsOff(engine: TestEngine) async throws {
        let server = try WebSocketTestServer.start()
        defer { server.stop() }
        let metrics = TestMetrics()
        let client = WebSocketClient(engine: engine.make()) { config in
            config.metricsFactory = metrics
            config.metricsEnabled = false
        }
        try await withClient(client) { client in
            try await client.webSocket(server.url) { session in
                try await session.send("x")
                _ = try await nextMessage(session)
            }
        }
        #expect(metrics.counters.isEmpty && metrics.meters.isEmpty && metrics.timers.isEmpty)
    }

    @Test(
        "a tracer gets the opening span with its events; the server receives its traceparent",
        arguments: TestEngine.allCases)
    func tracing(engine: TestEngine) async throws {
        let server = try WebSocketTestServer.start()
        defer { server.stop() }
        let tracer = W3CTestTracer()
        _ = try await withTracer(tracer) {
            try await withClient(WebSocketClient(engine: engine.make())) { client in
                try await client.webSocket(server.url(path: "/traced")) { session in
                    try await session.send("x")
                    _ = try await nextMessage(session)
                }
            }
        }
        let spans = tracer.inMemory.finishedSpans
        let span = try #require(spans.first { $0.operationName == "WebSocket open" })
        #expect(span.kind == .client)
        let events = span.events.map(\.name)
        #expect(events.contains("connected"))
        #expect(Array(events.suffix(2)) == ["handshake", "open"])
        let request = try #require(server.requests.first { $0.target == "/traced" })
        #expect(request.headers.values(for: "traceparent") == ["00-\(span.traceID)-\(span.spanID)-01"])
    }

    @Test("a failed opening ends its span with the failure kind", arguments: [TestEngine.cio])
    func tracingFailure(engine: TestEngine) async throws {
        let tracer = W3CTestTracer()
        let port = try unusedPort()
        _ = await withTracer(tracer) {
            await #expect(throws: (any Error).self) {
                try await withClient(WebSocketClient(engine: engine.make())) { client in
                    _ = try await client.webSocketSession("ws://127.0.0.1:\(port)/")
                }
            }
        }
        let span = try #require(tracer.inMemory.finishedSpans.first { $0.operationName == "WebSocket open" })
        #expect(span.attributes["websocket.failure"]?.toSpanAttribute() == "refused")
        #expect(!span.errors.isEmpty)
    }
}

/// Chunks for a streamed send.
private struct Chunks: AsyncSequence, Sendable {
    let chunks: [[UInt8]]
    struct AsyncIterator: AsyncIteratorProtocol {
        var rest: ArraySlice<[UInt8]>
        mutating func next() async -> [UInt8]? { self.rest.popFirst() }
    }
    func makeAsyncIterator() -> AsyncIterator { AsyncIterator(rest: self.chunks[...]) }
}

// The metric names, as documented (Docs/Observability.md); spelled out so a renamed metric fails these tests.
private enum MetricName {
    static let opened = "websocket_client_sessions_opened_total"
    static let failed = "websocket_client_sessions_failed_total"
    static let closed = "websocket_client_sessions_closed_total"
    static let open = "websocket_client_sessions_open"
    static let openDuration = "websocket_client_open_duration_seconds"
    static let pingRTT = "websocket_client_ping_rtt_seconds"
    static let messages = "websocket_client_messages_total"
    static let messageBytes = "websocket_client_message_bytes_total"
    static let wireBytes = "websocket_client_wire_bytes_total"
    static let compressionRatio = "websocket_client_compression_ratio"
}

/// The in-memory tracer of swift-distributed-tracing, propagating its context as W3C `traceparent` (which the
/// in-memory tracer does not do itself). Trace ids are 32 and span ids 16 hex digits, as W3C requires.
private struct W3CTestTracer: Tracer {
    typealias Span = InMemorySpan
    let inMemory: InMemoryTracer

    /// Numbers the ids.
    private final class Counter: Sendable {
        let value = Mutex<UInt64>(0)
        func next(_ digits: Int) -> String {
            let value = self.value.withLock {
                $0 += 1
                return $0
            }
            let hex = String(value, radix: 16)
            return String(repeating: "0", count: digits - hex.count) + hex
        }
    }

    init() {
        let counter = Counter()
        self.inMemory = InMemoryTracer(
            idGenerator: .init(nextTraceID: { counter.next(32) }, nextSpanID: { counter.next(16) }))
    }

    func startSpan<Instant: TracerInstant>(
        _ operationName: String, context: @autoclosure () -> ServiceContext, ofKind kind: SpanKind,
        at instant: @autoclosure () -> Instant, function: String, file fileID: String, line: UInt
    ) -> InMemorySpan {
        self.inMemory.startSpan(
            operationName, context: context(), ofKind: kind, at: instant(), function: function, file: fileID, line: line
        )
    }

    func forceFlush() { self.inMemory.forceFlush() }

    func inject<Carrier, Inject: Injector>(
        _ context: ServiceContext, into carrier: inout Carrier, using injector: Inject
    )
    where Inject.Carrier == Carrier {
        guard let span = context.inMemorySpanContext else { return }
        injector.inject("00-\(span.traceID)-\(span.spanID)-01", forKey: "traceparent", into: &carrier)
    }

    func extract<Carrier, Extract: Extractor>(
        _ carrier: Carrier, into context: inout ServiceContext, using extractor: Extract
    )
    where Extract.Carrier == Carrier {}
}
