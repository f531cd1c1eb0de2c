import CoreMetrics
import Logging
import MetricsTestKit
import Testing

@testable import WSCore

/// Records the machine's actions (the observability ones in detail).
private struct Sink: SessionActionSink {
    var outgoingBufferedBytes = 0
    var written: [Frame] = []
    var pongs: [(id: SessionStateMachine.PingID?, rtt: Duration)] = []

    mutating func perform(_ action: SessionStateMachine.Action) {
        switch action {
        case .writeControl(let frame): self.written.append(frame)
        case .pongReceived(let id, let rtt): self.pongs.append((id, rtt))
        default: break
        }
    }
}

private func wire(_ kind: Frame.Kind, _ data: [UInt8] = [], fin: Bool = true) -> [UInt8] {
    var bytes: [UInt8] = []
    FrameEncoder.encode(Frame(kind: kind, fin: fin, data: data), maskingKey: nil, into: &bytes)
    return bytes
}

private func openMachine(pingInterval: Duration? = nil) -> SessionStateMachine {
    var configuration = WebSockets.Configuration()
    configuration.pingInterval = pingInterval
    var machine = SessionStateMachine(configuration: configuration)
    machine.opened(OpeningHandshake.Outcome(subprotocol: nil, extensions: [], headers: HTTPHeaders()))
    return machine
}

extension SessionStateMachine {
    fileprivate mutating func read(_ bytes: [UInt8], at now: ContinuousClock.Instant?, _ sink: inout Sink) {
        bytes.withUnsafeBytes { self.read($0, at: now, &sink) }
    }
}

@Suite("Session statistics, ping round trips and metric labels")
struct SessionObservabilityTests {
    let t0 = ContinuousClock.now

    @Test("the keepalive pong gives the round-trip time from the instants passed in; the average is smoothed")
    func keepaliveRoundTrip() throws {
        var machine = openMachine(pingInterval: .seconds(5))
        var sink = Sink()
        machine.timerFired(.ping, at: self.t0, &sink)
        let ping = try #require(sink.written.first)
        #expect(machine.isAwaitingPong)
        machine.read(wire(.pong, ping.data), at: self.t0 + .milliseconds(30), &sink)
        #expect(sink.pongs.count == 1)
        #expect(sink.pongs.first?.id == nil)
        #expect(sink.pongs.first?.rtt == .milliseconds(30))
        #expect(!machine.isAwaitingPong)

        let t1 = self.t0 + .seconds(5)
        machine.timerFired(.ping, at: t1, &sink)
        machine.read(wire(.pong, sink.written[1].data), at: t1 + .milliseconds(70), &sink)
        let statistics = machine.statistics()
        #expect(statistics.lastRoundTripTime == .milliseconds(70))
        #expect(statistics.smoothedRoundTripTime == .milliseconds(35), "30 + (70 - 30) / 8")
        #expect(statistics.pongsMatched == 2)
    }

    @Test("a pong left unparsed behind a full queue gets the round-trip time of its read, not none")
    func pongParsedLater() throws {
        var configuration = WebSockets.Configuration()
        configuration.pingInterval = .seconds(5)
        configuration.maxIncomingBufferMessages = 2
        var machine = SessionStateMachine(configuration: configuration)
        machine.opened(OpeningHandshake.Outcome(subprotocol: nil, extensions: [], headers: HTTPHeaders()))
        var sink = Sink()
        machine.timerFired(.ping, at: self.t0, &sink)
        let ping = try #require(sink.written.first)
        let bytes =
            wire(.text, Array("a".utf8)) + wire(.text, Array("b".utf8)) + wire(.text, Array("c".utf8))
            + wire(.pong, ping.data)
        machine.read(bytes, at: self.t0 + .milliseconds(30), &sink)
        #expect(sink.pongs.isEmpty, "the queue filled before the pong was parsed")
        for _ in 0..<3 { _ = machine.takeQueuedFrame(&sink) }
        #expect(sink.pongs.count == 1)
        #expect(sink.pongs.first?.rtt == .milliseconds(30))
        #expect(machine.statistics().lastRoundTripTime == .milliseconds(30))
    }

    @Test("an application ping is answered by the pong with its payload only; a timed-out one is forgotten")
    func applicationPing() throws {
        var machine = openMachine()
        var sink = Sink()
        try machine.sendPing(7, at: self.t0, &sink)
        try machine.sendPing(8, at: self.t0 + .milliseconds(1), &sink)
        #expect(sink.written.count == 2)
        #expect(sink.written[0].data != sink.written[1].data, "each ping has its own payload")
        #expect(machine.isAwaitingPong)

        machine.read(wire(.pong, [1, 2, 3]), at: self.t0 + .milliseconds(2), &sink)
        #expect(sink.pongs.isEmpty, "a pong with another payload answers nothing")
        machine.read(wire(.pong, sink.written[1].data), at: self.t0 + .milliseconds(9), &sink)
        #expect(sink.pongs.count == 1)
        #expect(sink.pongs.first?.id == 8)
        #expect(sink.pongs.first?.rtt == .milliseconds(8))

        let cancelled = machine.cancelPing(7)
        let cancelledAgain = machine.cancelPing(7)
        let cancelledAnswered = machine.cancelPing(8)
        #expect(cancelled)
        #expect(!cancelledAgain)
        #expect(!cancelledAnswered, "answered already")
        #expect(!machine.isAwaitingPong)
    }

    @Test("no ping once our close was sent")
    func pingAfterClose() {
        var machine = openMachine()
        var sink = Sink()
        machine.close(CloseReason(code: .normal), &sink)
        #expect(throws: WebSocketError.self) { try machine.sendPing(1, at: self.t0, &sink) }
        #expect(sink.written.isEmpty)
    }

    @Test("received statistics count frames, messages and bytes, fragments and control frames included")
    func receivedStatistics() {
        var machine = openMachine()
        var sink = Sink()
        let bytes =
            wire(.text, Array("hello".utf8)) + wire(.binary, [1, 2, 3]) + wire(.ping, [9])
            + wire(.text, Array("ab".utf8), fin: false) + wire(.continuation, Array("cd".utf8))
        machine.read(bytes, at: nil, &sink)
        let statistics = machine.statistics()
        #expect(statistics.framesReceived == 5)
        #expect(statistics.textMessagesReceived == 2)
        #expect(statistics.binaryMessagesReceived == 1)
        #expect(statistics.messageBytesReceived == 5 + 3 + 4)
        #expect(statistics.dataPayloadBytesReceived == 5 + 3 + 4)
        #expect(statistics.wireBytesReceived == bytes.count)
    }

    @Test("streamed receive: a message handed over fragment by fragment counts once, as its first fragment's kind")
    func streamedReceivedStatistics() {
        var configuration = WebSockets.Configuration()
        configuration.streamsIncomingMessages = true
        var machine = SessionStateMachine(configuration: configuration)
        machine.opened(OpeningHandshake.Outcome(subprotocol: nil, extensions: [], headers: HTTPHeaders()))
        var sink = Sink()
        let bytes =
            wire(.text, Array("ab".utf8), fin: false) + wire(.continuation, Array("cd".utf8), fin: false)
            + wire(.continuation, Array("e".utf8)) + wire(.binary, [1, 2, 3], fin: false) + wire(.continuation, [4])
            + wire(.text, Array("x".utf8))
        machine.read(bytes, at: nil, &sink)
        let statistics = machine.statistics()
        #expect(statistics.framesReceived == 6)
        #expect(statistics.textMessagesReceived == 2, "a streamed text message of 3 fragments, then a whole one")
        #expect(statistics.binaryMessagesReceived == 1, "2 fragments")
        #expect(statistics.messageBytesReceived == 5 + 4 + 1)
        #expect(statistics.dataPayloadBytesReceived == 5 + 4 + 1)
    }

    @Test("sent statistics: a fragmented text message counts once, as text; wire bytes include header and key")
    func sentStatistics() {
        var sent = SentCounters()
        sent.count(Frame(kind: .text, fin: false, data: Array("ab".utf8)), wirePayload: 2)
        sent.count(Frame(kind: .continuation, fin: true, data: Array("cd".utf8)), wirePayload: 2)
        sent.count(Frame(kind: .binary, data: [UInt8](repeating: 0, count: 200)), wirePayload: 100)
        sent.countControl(payload: 0)
        let statistics = WebSocketSessionStatistics(
            received: ReceivedCounters(), sent: sent, framesDecoded: 0, dataPayloadBytesDecoded: 0)
        #expect(statistics.framesSent == 4)
        #expect(statistics.textMessagesSent == 1)
        #expect(statistics.binaryMessagesSent == 1)
        #expect(statistics.messageBytesSent == 204)
        #expect(statistics.dataPayloadBytesSent == 104)
        // 2 + 4 header and key per small frame; 2 + 2 + 4 for the 100-byte payload (over 125: no, 100 ≤ 125).
        #expect(statistics.wireBytesSent == (6 + 2) + (6 + 2) + (6 + 100) + 6)
    }

    @Test("the opening instant the statistics report is the one stored, exactly, earlier or later than any other")
    func storedInstants() {
        let now = ContinuousClock.now
        for instant in [now, now - .seconds(86_400), now + .nanoseconds(1), now + .seconds(3) + .nanoseconds(7)] {
            #expect(StoredInstant(instant).instant == instant)
            var sent = SentCounters()
            sent.openedAt = StoredInstant(instant)
            let statistics = WebSocketSessionStatistics(
                received: ReceivedCounters(), sent: sent, framesDecoded: 0, dataPayloadBytesDecoded: 0)
            #expect(statistics.openedAt == instant)
        }
    }

    @Test("metric labels are few and bounded")
    func labels() {
        #expect(ClientMetrics.failureKind(WebSocketError(.connectionRefused, "x")) == "refused")
        #expect(ClientMetrics.failureKind(WebSocketError(.upgradeRejected, "x", status: 403)) == "handshake_status")
        #expect(ClientMetrics.failureKind(WebSocketError(.timedOut, "x")) == "timeout")
        #expect(ClientMetrics.failureKind(WebSocketError(.tlsFailure, "x")) == "tls")
        #expect(ClientMetrics.failureKind(WebSocketError(.proxyFailure, "x", status: 407)) == "proxy")
        #expect(ClientMetrics.failureKind(CancellationError()) == "cancelled")
        #expect(ClientMetrics.closeCodeLabel(.normal) == "1000")
        #expect(ClientMetrics.closeCodeLabel(.internalError) == "1011")
        #expect(ClientMetrics.closeCodeLabel(CloseReason.Code(4321)) == "4xxx")
        #expect(ClientMetrics.closeCodeLabel(CloseReason.Code(3001)) == "3xxx")
    }

    @Test("no metric objects without a backend or with metrics off; objects per client with one")
    func metricsSwitch() {
        #expect(ClientMetrics.make(enabled: true, factory: NOOPMetricsHandler.instance, engine: "CIO") == nil)
        let test = TestMetrics()
        #expect(ClientMetrics.make(enabled: false, factory: test, engine: "CIO") == nil)
        #expect(test.counters.isEmpty)
        let metrics = ClientMetrics.make(enabled: true, factory: test, engine: "CIO")
        #expect(metrics != nil)
        #expect(test.counters(label: ClientMetrics.Name.messages).count == 4, "sent/received × text/binary, made once")
    }

    @Test("session log metadata: a short id and the endpoint without query or credentials")
    func logMetadata() throws {
        let url = try WebSocketURL(parsing: "wss://user:secret@example.com:8443/feed?token=abc")
        #expect(Logger.endpoint(of: url) == "wss://example.com:8443/feed")
        let id = Logger.makeSessionID()
        #expect(id.count == 8)
        let allHex = id.allSatisfy { $0.isHexDigit }
        #expect(allHex)
        // Random ids: 1,000 of them collide with probability ~1e-4 (at most one repeat allowed).
        let ids = (0..<1_000).map { _ in Logger.makeSessionID() }
        #expect(Set(ids).count >= 999)
        #expect(ids.allSatisfy { $0.count == 8 })
    }
}
