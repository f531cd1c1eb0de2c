import PropertyBased
import Testing

@testable import WSCore

/// Records the machine's actions as short strings (the action enum holds errors and is not `Equatable`).
private struct Recorder: SessionActionSink {
    var outgoingBufferedBytes = 0
    var log: [String] = []
    var actions: [SessionStateMachine.Action] = []

    mutating func perform(_ action: SessionStateMachine.Action) {
        self.actions.append(action)
        self.log.append(Self.describe(action))
    }

    /// Returns the log so far and clears it.
    mutating func take() -> [String] {
        defer {
            self.log = []
            self.actions = []
        }
        return self.log
    }

    static func describe(_ action: SessionStateMachine.Action) -> String {
        switch action {
        case .writeControl(let frame): "write \(frame.kind) \(frame.data)"
        case .sendClose(let reason): "sendClose \(reason.map { "\($0.code.rawValue) \($0.message)" } ?? "nil")"
        case .deliver(let frame, let id):
            "deliver \(frame.kind) \(String(decoding: frame.data, as: UTF8.self)) to \(id)"
        case .endIncoming(let error, let id): "end \(error.map { "\($0.code)" } ?? "nil") to \(id)"
        case .setReadingPaused(let paused): paused ? "pause" : "resume"
        case .armTimer(let kind, let delay): "arm \(kind) \(delay)"
        case .cancelTimer(let kind): "cancel \(kind)"
        case .closeTransport: "closeTransport"
        case .abortTransport: "abortTransport"
        case .finishHandshake: "finishHandshake"
        case .failHandshake(let error): "failHandshake \(error)"
        case .resumeDrainWaiters: "resumeDrainWaiters"
        case .connectionEnded: "connectionEnded"
        case .pongReceived(let id, let rtt): "pongReceived \(id.map { "\($0)" } ?? "keepalive") \(rtt)"
        }
    }
}

/// A frame as a server sends it (unmasked).
private func wire(_ kind: Frame.Kind, _ data: [UInt8] = [], fin: Bool = true) -> [UInt8] {
    var bytes: [UInt8] = []
    FrameEncoder.encode(Frame(kind: kind, fin: fin, data: data), maskingKey: nil, into: &bytes)
    return bytes
}

private func wire(_ kind: Frame.Kind, _ text: String) -> [UInt8] { wire(kind, Array(text.utf8)) }

private func closePayload(_ code: UInt16, _ reason: String = "") -> [UInt8] {
    [UInt8(code >> 8), UInt8(code & 0xFF)] + Array(reason.utf8)
}

private func configuration(_ change: (inout WebSockets.Configuration) -> Void = { _ in }) -> WebSockets.Configuration {
    var configuration = WebSockets.Configuration()
    change(&configuration)
    return configuration
}

/// A machine in the open phase (as after a handshake done elsewhere).
private func openMachine(_ configuration: WebSockets.Configuration = configuration()) -> SessionStateMachine {
    var machine = SessionStateMachine(configuration: configuration)
    machine.opened(OpeningHandshake.Outcome(subprotocol: nil, extensions: [], headers: HTTPHeaders()))
    return machine
}

extension SessionStateMachine {
    fileprivate mutating func read(_ bytes: [UInt8], _ sink: inout Recorder) {
        bytes.withUnsafeBytes { self.read($0, &sink) }
    }
}

private func makeHandshake() -> OpeningHandshake {
    OpeningHandshake(
        request: WebSocketRequestBuilder(url: WebSocketURL(secure: false, host: "example.com")), extensionFactories: [])
}

private func response(_ head: String) -> [UInt8] { Array(head.replacingOccurrences(of: "\n", with: "\r\n").utf8) }

extension String {
    fileprivate func replacingOccurrences(of target: String, with replacement: String) -> String {
        self.split(separator: target, omittingEmptySubsequences: false).joined(separator: replacement)
    }
}

@Suite("Session state machine")
struct SessionStateMachineTests {
    // MARK: Pings, pongs, keepalive

    @Test("a ping is answered with a pong before anything read with it is delivered")
    func pingAnsweredBeforeDelivery() {
        var machine = openMachine()
        var sink = Recorder()
        let result1 = machine.receive(1, isCancelled: false, &sink)
        #expect(result1 == .waiting)
        machine.read(wire(.ping, "pp") + wire(.text, "hi"), &sink)
        #expect(sink.take() == ["write pong [112, 112]", "deliver ping pp to 1"])
        let result2 = machine.takeQueuedFrame(&sink)
        #expect(result2?.kind == .text)
    }

    @Test("no pong once our close was sent")
    func noPongAfterClose() {
        var machine = openMachine()
        var sink = Recorder()
        machine.close(CloseReason(code: .normal), &sink)
        _ = sink.take()
        machine.read(wire(.ping, [7]), &sink)
        #expect(!sink.take().contains { $0.hasPrefix("write") })
    }

    @Test("keepalive: the pong of our ping cancels its deadline; one unanswered ping at a time")
    func keepalive() {
        var machine = openMachine(configuration { $0.pingInterval = .seconds(5) })
        var sink = Recorder()
        machine.startKeepalive(&sink)
        #expect(sink.take() == ["arm ping 5.0 seconds"])
        machine.timerFired(.ping, &sink)
        #expect(sink.take() == ["write ping [0, 0, 0, 0, 0, 0, 0, 1]", "arm pong 5.0 seconds", "arm ping 5.0 seconds"])
        machine.timerFired(.ping, &sink)
        #expect(sink.take() == ["arm ping 5.0 seconds"], "a second ping while the first is unanswered")
        machine.read(wire(.pong, [9]), &sink)
        #expect(sink.take().isEmpty, "a pong that is not ours matches nothing")
        machine.read(wire(.pong, [0, 0, 0, 0, 0, 0, 0, 1]), &sink)
        #expect(sink.take() == ["cancel pong"])
        machine.timerFired(.ping, &sink)
        #expect(sink.take().first == "write ping [0, 0, 0, 0, 0, 0, 0, 3]")
    }

    @Test("a missed pong fails the session with 1011 pongTimeout")
    func pongTimeout() {
        var machine = openMachine(configuration { $0.pingInterval = .seconds(5) })
        var sink = Recorder()
        machine.timerFired(.ping, &sink)
        let result3 = machine.receive(1, isCancelled: false, &sink)
        #expect(result3 == .waiting)
        _ = sink.take()
        machine.timerFired(.pong, &sink)
        let log = sink.take()
        #expect(log.first?.hasPrefix("sendClose 1011 no pong arrived within 5.0 seconds") == true)
        #expect(log.dropFirst() == ["closeTransport", "arm close 10.0 seconds", "end pongTimeout to 1"])
        #expect(machine.closeReason?.code == .internalError)
    }

    @Test("the pong deadline does not count while reading is paused and starts again on resume")
    func pongTimeoutWhilePaused() {
        var machine = openMachine(
            configuration {
                $0.pingInterval = .seconds(5)
                $0.maxIncomingBufferMessages = 2
            })
        var sink = Recorder()
        machine.timerFired(.ping, &sink)
        machine.read(wire(.text, "a") + wire(.text, "b"), &sink)
        #expect(sink.take().last == "pause")
        machine.timerFired(.pong, &sink)
        #expect(sink.take().isEmpty, "paused: the pong could not be read")
        _ = machine.takeQueuedFrame(&sink)
        #expect(sink.take() == ["resume", "arm pong 5.0 seconds"])
        machine.timerFired(.pong, &sink)
        #expect(sink.take().contains { $0.hasPrefix("sendClose 1011") })
    }

    @Test("pings and pongs never pause reading; at most 16 wait undelivered, the oldest is dropped")
    func controlFramesBounded() {
        var machine = openMachine(configuration { $0.maxIncomingBufferMessages = 2 })
        var sink = Recorder()
        var bytes: [UInt8] = []
        for i in 0..<20 { bytes += wire(.ping, [UInt8(i)]) }
        machine.read(bytes, &sink)
        let log = sink.take()
        #expect(log.count == 20 && log.allSatisfy { $0.hasPrefix("write pong") })
        #expect(machine.queuedFrameCount == 16)
        let result4 = machine.takeQueuedFrame(&sink)
        #expect(result4?.data == [4])
        #expect(!machine.readingPaused)
    }

    @Test("above the outgoing limit only the latest pong is kept, and sent when the transport drains")
    func heldPong() {
        var machine = openMachine(configuration { $0.maxOutgoingBufferBytes = 100 })
        var sink = Recorder()
        sink.outgoingBufferedBytes = 101
        machine.read(wire(.ping, [1]) + wire(.ping, [2]), &sink)
        #expect(sink.take().isEmpty)
        sink.outgoingBufferedBytes = 0
        machine.transportDrained(&sink)
        #expect(sink.take() == ["write pong [2]", "resumeDrainWaiters"])
        machine.transportDrained(&sink)
        #expect(sink.take() == ["resumeDrainWaiters"])
    }

    @Test("behind unsent bytes, 64 KiB of pongs at most wait; then only the latest is kept until the drain")
    func pongBudget() {
        var machine = openMachine()
        var sink = Recorder()
        // 125-byte pings: each pong costs 131 bytes on the wire; 500 of them would be 65,500 bytes.
        let payload = [UInt8](repeating: 7, count: 125)
        sink.outgoingBufferedBytes = 0
        machine.read(wire(.ping, payload), &sink)  // straight to the network: not counted
        sink.outgoingBufferedBytes = 1
        var flood: [UInt8] = []
        for i in 0..<600 { flood += wire(.ping, payload.dropLast() + [UInt8(i % 256)]) }
        machine.read(flood, &sink)
        let written = sink.take().filter { $0.hasPrefix("write pong") }.count
        #expect(written == 1 + (SessionStateMachine.maxQueuedPongBytes + 130) / 131)
        sink.outgoingBufferedBytes = 0
        machine.transportDrained(&sink)
        let drained = sink.take()
        #expect(drained.count == 2 && drained[0].hasPrefix("write pong") && drained[0].hasSuffix("\(599 % 256)]"))
        // The network takes everything again: pongs go out one per ping.
        machine.read(wire(.ping, [1]) + wire(.ping, [2]), &sink)
        #expect(sink.take().filter { $0.hasPrefix("write pong") }.count == 2)
    }

    @Test("a text message an extension transformed is validated once and marked, so readText trusts it")
    func transformedTextMarked() throws {
        var machine = SessionStateMachine(configuration: configuration())
        let outcome = OpeningHandshake.Outcome(
            subprotocol: nil, extensions: [ReversingExtension()], headers: HTTPHeaders())
        machine.opened(outcome)
        var sink = Recorder()
        var bytes: [UInt8] = []
        FrameEncoder.encode(
            Frame(kind: .text, data: Array("olleh".utf8), reservedBits: .rsv1), maskingKey: nil, into: &bytes)
        machine.read(bytes, &sink)
        let taken = machine.takeQueuedFrame(&sink)
        let message = try #require(taken)
        #expect(try message.readText() == "hello")
        #expect(message.dataIsValidUTF8)
    }

    // MARK: Close

    @Test("the peer's close is echoed with its code, queued last, and the close timer starts")
    func closeEcho() {
        var machine = openMachine()
        var sink = Recorder()
        let result5 = machine.receive(1, isCancelled: false, &sink)
        #expect(result5 == .waiting)
        machine.read(wire(.text, "x") + wire(.close, closePayload(1001, "bye")) + wire(.text, "after"), &sink)
        #expect(sink.take() == ["sendClose 1001 ", "arm close 10.0 seconds", "deliver text x to 1"])
        let result6 = machine.takeQueuedFrame(&sink)
        #expect(result6?.readReason() == CloseReason(code: .goingAway, message: "bye"))
        let result7 = machine.receive(2, isCancelled: false, &sink)
        #expect(result7 == .end(nil))
        #expect(machine.closeReason == CloseReason(code: .goingAway, message: "bye"))
        machine.transportClosed(nil, &sink)
        #expect(sink.take() == ["connectionEnded"])
    }

    @Test("a close without a code is answered without a code")
    func closeWithoutCode() {
        var machine = openMachine()
        var sink = Recorder()
        machine.read(wire(.close), &sink)
        #expect(sink.take() == ["sendClose nil", "arm close 10.0 seconds"])
        #expect(machine.closeReason?.code == .noStatus)
    }

    @Test(
        "an invalid close payload fails the session with 1002 or 1007",
        arguments: [
            (closePayload(1005), CloseReason.Code.protocolError), ([3], .protocolError),
            (closePayload(1000) + [0xFF], .invalidPayload),
        ])
    func invalidClose(payload: [UInt8], code: CloseReason.Code) {
        var machine = openMachine()
        var sink = Recorder()
        let result8 = machine.receive(1, isCancelled: false, &sink)
        #expect(result8 == .waiting)
        machine.read(wire(.close, payload), &sink)
        let log = sink.take()
        #expect(log.first?.hasPrefix("sendClose \(code.rawValue)") == true)
        #expect(log.contains("closeTransport"))
    }

    @Test("closing twice sends one close; reserved codes are not sent")
    func closeTwice() {
        var machine = openMachine()
        var sink = Recorder()
        machine.close(CloseReason(code: .noStatus), &sink)
        #expect(sink.take() == ["sendClose nil", "arm close 10.0 seconds"])
        machine.close(CloseReason(code: .normal), &sink)
        #expect(sink.take().isEmpty)
        #expect(throws: WebSocketError.self) { try machine.prepareSend(Frame(kind: .text, data: [1])) }
    }

    @Test("the close timer aborts the connection and records why")
    func closeTimeout() {
        var machine = openMachine()
        var sink = Recorder()
        machine.close(CloseReason(code: .normal), &sink)
        _ = sink.take()
        machine.timerFired(.close, &sink)
        #expect(sink.take() == ["abortTransport"])
        #expect(machine.closeReason?.code == .abnormalClosure)
        #expect(machine.closedError().message.contains("did not complete the close handshake within 10.0 seconds"))
    }

    // MARK: One read, bounded by the incoming limits

    @Test("one read never queues more than the limits; the rest is parsed as the queue drains, in order")
    func readStopsAtFullQueue() {
        var machine = openMachine(configuration { $0.maxIncomingBufferMessages = 4 })
        var sink = Recorder()
        var bytes: [UInt8] = []
        for i in 0..<50 { bytes += wire(.text, "m\(i)") }
        bytes += wire(.close, closePayload(1001, "bye"))
        machine.read(bytes, &sink)
        #expect(machine.queuedFrameCount == 4, "one read must stop parsing at the limit")
        #expect(sink.take() == ["pause"], "nothing past the limit is parsed: no close echoed yet")
        var received: [String] = []
        while let frame = machine.takeQueuedFrame(&sink) {
            #expect(machine.queuedFrameCount <= 4)
            if frame.kind == .text { received.append(String(decoding: frame.data, as: UTF8.self)) }
        }
        #expect(received == (0..<50).map { "m\($0)" }, "every message, in order")
        #expect(machine.closeReason == CloseReason(code: .goingAway, message: "bye"))
        #expect(sink.take().contains("sendClose 1001 "), "the close behind the messages is answered")
        let result = machine.receive(1, isCancelled: false, &sink)
        #expect(result == .end(nil))
    }

    @Test("a waiting consumer drains a read that stopped at the limit; the rest waits with reading paused")
    func readStopsWithConsumer() {
        var machine = openMachine(configuration { $0.maxIncomingBufferMessages = 2 })
        var sink = Recorder()
        let result = machine.receive(1, isCancelled: false, &sink)
        #expect(result == .waiting)
        var bytes: [UInt8] = []
        for i in 0..<10 { bytes += wire(.text, "m\(i)") }
        machine.read(bytes, &sink)
        #expect(sink.take() == ["deliver text m0 to 1", "pause"])
        #expect(machine.queuedFrameCount == 2)
        let next = machine.takeQueuedFrame(&sink)
        #expect(next.map { String(decoding: $0.data, as: UTF8.self) } == "m1")
        // At half the limit what was left is parsed; it fills the queue again, so reading stays paused.
        #expect(sink.take() == [], "no resume and pause in one step")
        #expect(machine.queuedFrameCount == 2 && machine.readingPaused)
        let following = machine.takeQueuedFrame(&sink)
        #expect(following.map { String(decoding: $0.data, as: UTF8.self) } == "m2")
    }

    @Test("reading resumes only once what a full queue left unparsed is parsed, not at every half-full queue")
    func resumeOnlyWhenLeftInputParsed() {
        var machine = openMachine(
            configuration {
                $0.maxIncomingBufferMessages = 4
                $0.pingInterval = .seconds(5)
            })
        var sink = Recorder()
        machine.timerFired(.ping, &sink)  // a keepalive ping waits for its pong: resuming re-arms the pong timer
        _ = sink.take()
        var bytes: [UInt8] = []
        for i in 0..<10 { bytes += wire(.binary, [UInt8(i)]) }
        machine.read(bytes, &sink)
        #expect(sink.take() == ["pause"])
        var received: [UInt8] = []
        var log: [String] = []
        while let frame = machine.takeQueuedFrame(&sink) {
            received += frame.data
            log += sink.take().map { "\(frame.data[0]): \($0)" }
        }
        #expect(received == Array(0..<10), "every message, in order")
        // Messages 0-5 leave the queue half full with input left to parse: it refills the queue, reading stays
        // paused. After 7 nothing is left and the queue is at half: reading resumes, once, with a fresh pong timer.
        #expect(log == ["7: resume", "7: arm pong 5.0 seconds"])
        #expect(!machine.readingPaused)
    }

    @Test("closing with input left unparsed finds the server's close in it")
    func closeParsesLeftInput() {
        var machine = openMachine(configuration { $0.maxIncomingBufferMessages = 2 })
        var sink = Recorder()
        machine.read(wire(.text, "a") + wire(.text, "b") + wire(.text, "c") + wire(.close, closePayload(1001)), &sink)
        #expect(sink.take() == ["pause"])
        machine.close(CloseReason(code: .normal), &sink)
        // (A machine opened with `opened(_:)`, as a multiplexed stream is, closes its transport once answered.)
        #expect(
            sink.take() == [
                "resume", "sendClose 1000 ", "arm close 10.0 seconds", "arm close 10.0 seconds", "closeTransport",
            ])
        #expect(machine.closeReason?.code == .goingAway, "the server's close, which had arrived, is seen")
    }

    @Test("data that arrives after our close is dropped")
    func dataAfterCloseDropped() {
        var machine = openMachine()
        var sink = Recorder()
        machine.close(CloseReason(code: .normal), &sink)
        machine.read(wire(.text, "late") + wire(.close, closePayload(1000)), &sink)
        #expect(!sink.take().contains { $0.hasPrefix("deliver") })
        #expect(machine.queuedFrameCount == 0)
        let result9 = machine.receive(1, isCancelled: false, &sink)
        #expect(result9 == .end(nil))
    }

    @Test("a connection lost without a close frame ends every consumer with connectionLost")
    func transportClosedEndsConsumers() {
        var machine = openMachine()
        var sink = Recorder()
        let result10 = machine.receive(1, isCancelled: false, &sink)
        #expect(result10 == .waiting)
        let result11 = machine.receive(2, isCancelled: false, &sink)
        #expect(result11 == .waiting)
        machine.transportClosed(nil, &sink)
        #expect(sink.take() == ["end connectionLost to 1", "end connectionLost to 2", "connectionEnded"])
        #expect(machine.closeReason?.code == .abnormalClosure)
        #expect(machine.hasEnded)
    }

    @Test("a released session sends 1001 and closes the transport")
    func closeDetached() {
        var machine = openMachine()
        var sink = Recorder()
        machine.closeDetached(&sink)
        #expect(sink.take() == ["sendClose 1001 session released", "closeTransport"])
        machine.closeDetached(&sink)
        #expect(sink.take().isEmpty)
    }

    // MARK: Deferred failure

    @Test("a violation behind queued frames fails the session only once they are consumed")
    func deferredFailure() {
        var machine = openMachine()
        var sink = Recorder()
        machine.read(wire(.text, "ok") + [0x83, 0x00], &sink)  // then a reserved opcode
        #expect(sink.take() == ["arm pendingFailure 1.0 seconds"])
        let result12 = machine.takeQueuedFrame(&sink)
        #expect(result12?.data == Array("ok".utf8))
        #expect(sink.take().isEmpty)
        let result13 = machine.receive(1, isCancelled: false, &sink)
        #expect(result13 == .end(WebSocketError(.protocolViolation, "")))
        let log = sink.take()
        #expect(log.first?.hasPrefix("sendClose 1002") == true)
        #expect(machine.closedError().message.contains("reserved opcode"))
    }

    @Test("a deferred violation fails the session after the grace period, or when the user closes")
    func deferredFailureGraceAndClose() {
        for viaClose in [false, true] {
            var machine = openMachine()
            var sink = Recorder()
            machine.read(wire(.text, "ok") + [0x83, 0x00], &sink)
            _ = sink.take()
            if viaClose {
                machine.close(CloseReason(code: .normal), &sink)
            } else {
                machine.timerFired(.pendingFailure, &sink)
            }
            #expect(sink.take().first?.hasPrefix("sendClose 1002") == true)
        }
    }

    @Test("a violation with nothing queued and a consumer waiting fails at once")
    func immediateFailure() {
        var machine = openMachine()
        var sink = Recorder()
        let result14 = machine.receive(1, isCancelled: false, &sink)
        #expect(result14 == .waiting)
        machine.read([0x83, 0x00], &sink)
        #expect(sink.take().last == "end protocolViolation to 1")
    }

    @Test("invalid UTF-8 in a text frame that has only partly arrived fails at once")
    func partialFrameUTF8() {
        var machine = openMachine()
        var sink = Recorder()
        let result15 = machine.receive(1, isCancelled: false, &sink)
        #expect(result15 == .waiting)
        machine.read(Array(wire(.text, [0x41, 0xFF, 0x41, 0x41]).prefix(4)), &sink)
        #expect(sink.take().first?.hasPrefix("sendClose 1007") == true)
    }

    // MARK: Backpressure and consumers

    @Test("reading pauses when the queue is full and resumes at half")
    func pauseResume() {
        var machine = openMachine(configuration { $0.maxIncomingBufferMessages = 4 })
        var sink = Recorder()
        machine.read(wire(.text, "1") + wire(.text, "2") + wire(.text, "3"), &sink)
        #expect(sink.take().isEmpty)
        machine.read(wire(.text, "4"), &sink)
        #expect(sink.take() == ["pause"])
        _ = machine.takeQueuedFrame(&sink)
        #expect(sink.take().isEmpty, "3 left: above half")
        _ = machine.takeQueuedFrame(&sink)
        #expect(sink.take() == ["resume"])
    }

    @Test("reading pauses on the byte limit too")
    func pauseOnBytes() {
        var machine = openMachine(configuration { $0.maxIncomingBufferBytes = 10 })
        var sink = Recorder()
        machine.read(wire(.binary, [UInt8](repeating: 0, count: 10)), &sink)
        #expect(sink.take() == ["pause"])
        _ = machine.takeQueuedFrame(&sink)
        #expect(sink.take() == ["resume"])
    }

    @Test("a read of several messages delivers the first to the waiting consumer and queues the rest")
    func batchDelivery() {
        var machine = openMachine()
        var sink = Recorder()
        let result16 = machine.receive(1, isCancelled: false, &sink)
        #expect(result16 == .waiting)
        machine.read(wire(.text, "a") + wire(.text, "b") + wire(.text, "c"), &sink)
        #expect(sink.take() == ["deliver text a to 1"])
        let result17 = machine.takeQueuedFrame(&sink)
        #expect(result17?.data == Array("b".utf8))
        let result18 = machine.takeQueuedFrame(&sink)
        #expect(result18?.data == Array("c".utf8))
    }

    @Test("a cancelled receive is removed: the next message stays queued")
    func receiveCancellation() {
        var machine = openMachine()
        var sink = Recorder()
        let result19 = machine.receive(1, isCancelled: false, &sink)
        #expect(result19 == .waiting)
        let result20 = machine.cancelReceive(1)
        #expect(result20)
        let result21 = machine.cancelReceive(1)
        #expect(!result21)
        machine.read(wire(.text, "a"), &sink)
        #expect(sink.take().isEmpty)
        let result22 = machine.receive(2, isCancelled: true, &sink)
        #expect(result22 == .frame(Frame(kind: .text, data: Array("a".utf8))))
        let result23 = machine.receive(3, isCancelled: true, &sink)
        #expect(result23 == .cancelled)
    }

    @Test("control frames from the user are checked")
    func sendChecks() {
        var machine = openMachine()
        #expect(throws: WebSocketError.self) {
            try machine.prepareSend(Frame(kind: .ping, data: [UInt8](repeating: 0, count: 126)))
        }
        #expect(throws: WebSocketError.self) { try machine.prepareSend(Frame(kind: .pong, fin: false, data: [])) }
        #expect((try? machine.prepareSend(Frame(kind: .text, data: [65])))?.data == [65])
    }

    @Test("fragments of one message are not interleaved with another; the message's end is tracked")
    func sendFragmentOrder() throws {
        var machine = openMachine()
        let stray = #expect(throws: WebSocketError.self) {
            try machine.prepareSend(Frame(kind: .continuation, data: [1]))
        }
        #expect(stray?.code == .invalidArgument)
        _ = try machine.prepareSend(Frame(kind: .binary, fin: false, data: [1]))
        #expect(machine.isSendingFragmentedMessage)
        #expect(throws: MessageInProgress.self) { try machine.prepareSend(Frame(kind: .text, data: [65])) }
        _ = try machine.prepareSend(Frame(kind: .ping, data: []))
        _ = try machine.prepareSend(Frame(kind: .continuation, fin: false, data: [2]))
        _ = try machine.prepareSend(Frame(kind: .continuation, data: [3]))
        #expect(!machine.isSendingFragmentedMessage)
        #expect((try? machine.prepareSend(Frame(kind: .text, data: [65])))?.data == [65])
    }

    // MARK: Opening handshake

    @Test("a 101 opens the session and the bytes after it are frames")
    func handshakeSuccess() {
        let handshake = makeHandshake()
        var machine = SessionStateMachine(configuration: configuration())
        var sink = Recorder()
        machine.beginHandshake(handshake, timeout: .seconds(3), &sink)
        #expect(sink.take() == ["arm open 3.0 seconds"])
        let accept = WebSocketHandshake.acceptValue(forKey: handshake.key)
        let head = response(
            "HTTP/1.1 101 Switching Protocols\nUpgrade: websocket\nConnection: Upgrade\nSec-WebSocket-Accept: \(accept)\n\n"
        )
        machine.read(head + wire(.text, "first"), &sink)
        #expect(sink.take() == ["cancel open", "finishHandshake"])
        let result24 = machine.takeQueuedFrame(&sink)
        #expect(result24?.data == Array("first".utf8))
    }

    @Test("a rejection fails the handshake with the body, up to its Content-Length")
    func handshakeRejection() {
        var machine = SessionStateMachine(configuration: configuration())
        var sink = Recorder()
        machine.beginHandshake(makeHandshake(), timeout: .seconds(3), &sink)
        _ = sink.take()
        machine.read(response("HTTP/1.1 403 Forbidden\nContent-Length: 5\n\nno"), &sink)
        #expect(sink.take().isEmpty)
        machine.read(Array("pe!!!".utf8), &sink)
        #expect(sink.actions.count == 3)
        guard case .failHandshake(let error as WebSocketError) = sink.actions[1] else {
            Issue.record("no handshake failure: \(sink.log)")
            return
        }
        #expect(error.code == .upgradeRejected)
        #expect(error.body == Array("nope!".utf8))
        #expect(error.message.contains("HTTP 403 Forbidden (check the credentials"))
        #expect(sink.log == ["cancel open", sink.log[1], "abortTransport"])
    }

    @Test("a rejection body is capped; a close during the handshake fails it")
    func handshakeRejectionCapAndClose() {
        var machine = SessionStateMachine(configuration: configuration())
        var sink = Recorder()
        machine.beginHandshake(makeHandshake(), timeout: .seconds(3), &sink)
        machine.read(
            response("HTTP/1.1 500 Oops\nContent-Length: 100000\n\n") + [UInt8](repeating: 65, count: 5000), &sink)
        guard case .failHandshake(let error as WebSocketError) = sink.actions.dropFirst(2).first else {
            Issue.record("no handshake failure: \(sink.log)")
            return
        }
        #expect(error.body.count == WebSocketError.maxBodyBytes)

        var closing = SessionStateMachine(configuration: configuration())
        var sink2 = Recorder()
        closing.beginHandshake(makeHandshake(), timeout: .seconds(3), &sink2)
        closing.transportClosed(nil, &sink2)
        guard case .failHandshake(let closed as WebSocketError) = sink2.actions.dropFirst().first else {
            Issue.record("no handshake failure: \(sink2.log)")
            return
        }
        #expect(closed.message == "the server closed the connection during the opening handshake without answering")
    }

    @Test("an invalid 101 fails the handshake; a late failure does nothing")
    func handshakeInvalid() {
        var machine = SessionStateMachine(configuration: configuration())
        var sink = Recorder()
        machine.beginHandshake(makeHandshake(), timeout: .seconds(3), &sink)
        machine.read(response("HTTP/1.1 101 Switching Protocols\nUpgrade: websocket\nConnection: Upgrade\n\n"), &sink)
        #expect(sink.log.last == "abortTransport")
        #expect(sink.log.contains { $0.contains("no Sec-WebSocket-Accept") })
        _ = sink.take()
        machine.failHandshake(WebSocketError(.timedOut, "late"), &sink)
        #expect(sink.take().isEmpty)
    }

    // MARK: Properties

    /// Events of the property test, chosen by number.
    private static let eventCount = 18

    @Test("invariants hold for any sequence of events")
    func invariants() async {
        await propertyCheck(count: 1_000, input: Gen.int(in: 0..<Self.eventCount).array(of: 1...60)) { events in
            Self.run(events)
        }
    }

    /// Runs `events` against a machine the way the glue would (timers fire only while armed), checking invariants.
    private static func run(_ events: [Int]) {
        var machine = openMachine(
            configuration {
                $0.pingInterval = .seconds(1)
                $0.maxIncomingBufferMessages = 4
                $0.maxOutgoingBufferBytes = 100
            })
        var sink = Recorder()
        machine.startKeepalive(&sink)
        var armed: Set<SessionStateMachine.TimerKind> = []
        var waiting: [SessionStateMachine.ConsumerID] = []
        var nextID: SessionStateMachine.ConsumerID = 0
        var closesSent = 0
        var ended = false  // incoming ended for some consumer: nothing is delivered after
        var transportClosed = false
        var lastPing: [UInt8] = []

        func account() {
            for action in sink.actions {
                switch action {
                case .armTimer(let kind, _): armed.insert(kind)
                case .cancelTimer(let kind): armed.remove(kind)
                case .connectionEnded: armed = []
                case .sendClose: closesSent += 1
                case .writeControl(let frame) where frame.kind == .ping: lastPing = frame.data
                case .deliver(_, let id):
                    #expect(!ended, "a frame delivered after the end")
                    #expect(waiting.contains(id))
                    waiting.removeAll { $0 == id }
                case .endIncoming(_, let id):
                    ended = true
                    #expect(waiting.contains(id))
                    waiting.removeAll { $0 == id }
                default: break
                }
            }
            _ = sink.take()
            #expect(closesSent <= 1, "more than one close frame")
            #expect(machine.queueCountersAreConsistent)
            if transportClosed { #expect(waiting.isEmpty, "a consumer still waits after the transport closed") }
        }

        account()
        for event in events {
            switch event {
            case 0: machine.read(wire(.text, "t"), &sink)
            case 1: machine.read(wire(.binary, [1, 2, 3]), &sink)
            case 2: machine.read(wire(.ping, [5]), &sink)
            case 3: machine.read(wire(.pong, lastPing), &sink)
            case 4: machine.read(wire(.close, closePayload(1000)), &sink)
            case 5: machine.read([0x83, 0x00], &sink)
            case 6:
                nextID += 1
                if machine.receive(nextID, isCancelled: false, &sink) == .waiting { waiting.append(nextID) }
            case 7: _ = machine.takeQueuedFrame(&sink)
            case 8:
                if let id = waiting.first, machine.cancelReceive(id) { waiting.removeFirst() }
            case 9: machine.close(CloseReason(code: .normal), &sink)
            case 10: if armed.remove(.ping) != nil { machine.timerFired(.ping, &sink) }
            case 11: if armed.remove(.pong) != nil { machine.timerFired(.pong, &sink) }
            case 12: if armed.remove(.close) != nil { machine.timerFired(.close, &sink) }
            case 13: if armed.remove(.pendingFailure) != nil { machine.timerFired(.pendingFailure, &sink) }
            case 14:
                sink.outgoingBufferedBytes = 0
                machine.transportDrained(&sink)
            case 15:
                machine.transportClosed(nil, &sink)
                transportClosed = true
            case 16: _ = try? machine.prepareSend(Frame(kind: .text, data: [1]))
            default: sink.outgoingBufferedBytes = 1_000
            }
            account()
        }
        // Draining the queue always resumes a paused machine.
        while machine.takeQueuedFrame(&sink) != nil {}
        #expect(!machine.readingPaused, "still paused with an empty queue")
        machine.transportClosed(nil, &sink)
        transportClosed = true
        account()
    }
}

extension SessionStateMachine.ReceiveResult: Equatable {
    static func == (a: Self, b: Self) -> Bool {
        switch (a, b) {
        case (.frame(let x), .frame(let y)): x == y
        case (.end(let x), .end(let y)): x?.code == y?.code
        case (.cancelled, .cancelled), (.waiting, .waiting): true
        default: false
        }
    }
}

/// An extension that owns RSV1 and restores incoming messages by reversing their payload: a new array, as
/// inflating makes one.
private final class ReversingExtension: WebSocketExtension {
    let name = "x-reverse"
    let header = WebSocketExtensionHeader(name: "x-reverse")
    let reservedBits: Frame.ReservedBits = .rsv1

    func processOutgoing(_ frame: Frame, context: WebSocketExtensionContext) throws -> Frame { frame }

    func processIncoming(_ message: Frame, context: WebSocketExtensionContext) throws -> Frame {
        Frame(kind: message.kind, fin: message.fin, data: message.data.reversed())
    }
}

// MARK: - Small whole messages (the receive fast path)

/// What the server sends in ``SmallMessageTests``: whole messages, fragmented ones, pings and pongs.
private enum ServerItem {
    case whole(Frame.Kind, [UInt8])
    case fragmented(Frame.Kind, [[UInt8]])
    case ping([UInt8])
    case pong([UInt8])

    /// The frames on the wire.
    var bytes: [UInt8] {
        switch self {
        case .whole(let kind, let data): return wire(kind, data)
        case .fragmented(let kind, let parts):
            var bytes: [UInt8] = []
            for (i, part) in parts.enumerated() {
                bytes += wire(i == 0 ? kind : .continuation, part, fin: i == parts.count - 1)
            }
            return bytes
        case .ping(let data): return wire(.ping, data)
        case .pong(let data): return wire(.pong, data)
        }
    }

    /// The frame the consumer must receive.
    var delivered: Frame {
        switch self {
        case .whole(let kind, let data): Frame(kind: kind, data: data)
        case .fragmented(let kind, let parts): Frame(kind: kind, data: parts.flatMap { $0 })
        case .ping(let data): Frame(kind: .ping, data: data)
        case .pong(let data): Frame(kind: .pong, data: data)
        }
    }

    var frameCount: Int {
        if case .fragmented(_, let parts) = self { return parts.count }
        return 1
    }
}

/// Small whole messages go from the input straight to the queue (`InboundPipeline.nextSmallMessage`); everything
/// else takes the general path. These tests check that the two together deliver exactly what the server sent, in
/// order, with the same statistics, backpressure and errors.
@Suite("Session state machine: small whole messages")
struct SmallMessageTests {
    /// A random server stream: mostly small whole messages (the fast path), with fragmented messages, pings, pongs,
    /// 16-bit lengths and payloads at the message size limit in between.
    private static func items(seed: UInt64, maxMessageSize: Int) -> [ServerItem] {
        var rng = SplitMix64(seed: seed)
        let characters: [String] = ["a", "z", "é", "€", "😀", " ", "ß"]
        func payload(_ kind: Frame.Kind, size: Int) -> [UInt8] {
            if kind == .text {
                var text: [UInt8] = []
                while text.count < size { text += Array(characters.randomElement(using: &rng)!.utf8) }
                return text
            }
            return (0..<size).map { _ in UInt8.random(in: 0...255, using: &rng) }
        }
        var items: [ServerItem] = []
        var controls = 0
        for _ in 0..<Int.random(in: 20...120, using: &rng) {
            let kind: Frame.Kind = Bool.random(using: &rng) ? .text : .binary
            switch Int.random(in: 0..<20, using: &rng) {
            case 0 where controls < 12:
                controls += 1
                items.append(.ping(payload(.binary, size: Int.random(in: 0...125, using: &rng))))
            case 1 where controls < 12:
                controls += 1
                items.append(.pong(payload(.binary, size: Int.random(in: 0...125, using: &rng))))
            case 2:
                let parts = (0..<Int.random(in: 1...3, using: &rng)).map { _ in
                    payload(kind, size: Int.random(in: 0...40, using: &rng))
                }
                items.append(.fragmented(kind, parts))
            case 3:
                // 16-bit lengths, up to the limit.
                let size = [126, 127, 300, maxMessageSize].randomElement(using: &rng)!
                var data = payload(kind, size: size)
                if kind == .text { data = Array(repeating: UInt8(ascii: "x"), count: size) }
                items.append(.whole(kind, data))
            default:
                items.append(.whole(kind, payload(kind, size: Int.random(in: 0...125, using: &rng))))
            }
        }
        return items
    }

    @Test(
        "small whole messages arrive as sent, in order, with the statistics, however the reads are cut",
        arguments: Array(1...40) as [UInt64])
    func streamDeliveredInOrder(seed: UInt64) {
        var rng = SplitMix64(seed: seed &* 31)
        let limit = Int.random(in: 1...6, using: &rng)
        let byteLimit = Int.random(in: 100...3_000, using: &rng)
        let maxMessageSize = 1000
        let items = Self.items(seed: seed, maxMessageSize: maxMessageSize)
        let expected = items.map(\.delivered)
        let bytes = items.flatMap(\.bytes)
        var machine = openMachine(
            configuration {
                $0.maxIncomingBufferMessages = limit
                $0.maxIncomingBufferBytes = byteLimit
                $0.maxMessageSize = maxMessageSize
            })
        var sink = Recorder()
        var delivered: [Frame] = []
        var offset = 0
        while delivered.count < items.count {
            if !machine.readingPaused && offset < bytes.count
                && (Bool.random(using: &rng) || machine.queuedFrameCount == 0)
            {
                let n = min(bytes.count - offset, Int.random(in: 1...700, using: &rng))
                bytes.withUnsafeBytes { machine.read(UnsafeRawBufferPointer(rebasing: $0[offset..<offset + n]), &sink) }
                offset += n
                // A read stops queueing once the queue is full: without the last message queued, it was not.
                let queued = expected[delivered.count..<delivered.count + machine.queuedFrameCount]
                    .filter { $0.kind != .ping && $0.kind != .pong }
                let queuedBytes = queued.reduce(0) { $0 + $1.data.count }
                if let last = queued.last {
                    #expect(queued.count - 1 < limit, "a message queued after the queue was full")
                    #expect(queuedBytes - last.data.count < byteLimit, "a message queued past the byte limit")
                }
                if queued.count >= limit || queuedBytes >= byteLimit {
                    #expect(machine.readingPaused, "a full queue must pause")
                }
            } else if let frame = machine.takeQueuedFrame(&sink) {
                delivered.append(frame)
            } else {
                Issue.record("nothing to read or take with \(delivered.count) of \(items.count) delivered")
                break
            }
            #expect(machine.queueCountersAreConsistent)
        }
        #expect(delivered == expected, "every frame, in order, with its kind and bytes")
        for frame in delivered {
            #expect(frame.fin && frame.reservedBits.isEmpty)
            #expect(frame.dataIsValidUTF8 == (frame.kind == .text), "text is marked valid, binary is not")
        }
        #expect(machine.closeReason == nil && !machine.readingPaused)
        let messages = items.map(\.delivered).filter { $0.kind == .text || $0.kind == .binary }
        #expect(machine.received.textMessages == messages.count(where: { $0.kind == .text }))
        #expect(machine.received.binaryMessages == messages.count(where: { $0.kind == .binary }))
        #expect(machine.received.messageBytes == messages.reduce(0) { $0 + $1.data.count })
        #expect(machine.received.wireBytes == bytes.count)
        #expect(machine.pipelineFramesDecoded == items.reduce(0) { $0 + $1.frameCount })
        #expect(machine.pipelineDataPayloadBytesDecoded == messages.reduce(0) { $0 + $1.data.count })
    }

    @Test("frames the fast path must not take fail as before: limits, UTF-8, mask, reserved bits, fragmentation")
    func violations() {
        let small = configuration {
            $0.maxMessageSize = 150
            $0.maxFrameSize = 1000
        }
        let smallFrames = configuration {
            $0.maxMessageSize = 1000
            $0.maxFrameSize = 100
        }
        let wide = configuration { $0.maxMessageSize = 300 }
        let cases: [(String, WebSockets.Configuration, [UInt8], WebSocketError.Code?)] = [
            ("a message at maxMessageSize", small, wire(.binary, [UInt8](repeating: 1, count: 150)), nil),
            ("a message over maxMessageSize", small, wire(.binary, [UInt8](repeating: 1, count: 151)), .messageTooBig),
            ("a frame at maxFrameSize", smallFrames, wire(.binary, [UInt8](repeating: 1, count: 100)), nil),
            ("a frame over maxFrameSize", smallFrames, wire(.text, [UInt8](repeating: 65, count: 101)), .messageTooBig),
            ("a 16-bit length at the limit", wide, wire(.text, [UInt8](repeating: 65, count: 300)), nil),
            ("a 16-bit length over the limit", wide, wire(.binary, [UInt8](repeating: 1, count: 301)), .messageTooBig),
            ("invalid UTF-8", configuration(), wire(.text, [0x41, 0xC3, 0x28]), .invalidUTF8),
            ("UTF-8 cut in a character", configuration(), wire(.text, [0x41, 0xE2, 0x82]), .invalidUTF8),
            ("a masked frame", configuration(), [0x82, 0x81, 1, 2, 3, 4, 5], .protocolViolation),
            ("RSV1 without an extension", configuration(), [0xC2, 0x01, 7], .protocolViolation),
            ("a reserved opcode", configuration(), [0x83, 0x01, 7], .protocolViolation),
            (
                "a binary message inside a fragmented one", configuration(),
                wire(.text, Array("a".utf8), fin: false) + wire(.binary, [1]), .protocolViolation
            ),
            (
                "a continuation without a message", configuration(), wire(.continuation, [1]), .protocolViolation
            ),
        ]
        // Read at once, and byte by byte (the frames after the first then come from the decoder's buffer, and
        // the fast path is asked again between the fragments of a message).
        for (name, configuration, bytes, expected) in cases + cases.map({ ("\($0.0), byte by byte", $0.1, $0.2, $0.3) })
        {
            var machine = openMachine(configuration)
            var sink = Recorder()
            if name.hasSuffix("byte by byte") {
                for byte in bytes { machine.read([byte], &sink) }
            } else {
                machine.read(bytes, &sink)
            }
            if let expected {
                let result = machine.receive(1, isCancelled: false, &sink)
                #expect(result == .end(WebSocketError(expected, "")), "\(name)")
                #expect(machine.received.messages == 0, "\(name): nothing counted as received")
            } else {
                let frame = machine.takeQueuedFrame(&sink)
                #expect(frame.map { wire($0.kind, $0.data) } == bytes, "\(name): delivered as sent")
                #expect(machine.received.messages == 1, "\(name)")
            }
        }
    }
    @Test("small whole messages are not taken past the general path: extensions, streaming, a released session")
    func casesTheFastPathLeavesAlone() throws {
        // An extension sees every message, even one without its reserved bit.
        var extended = SessionStateMachine(configuration: configuration())
        extended.opened(
            OpeningHandshake.Outcome(subprotocol: nil, extensions: [ReversingExtension()], headers: HTTPHeaders()))
        var sink = Recorder()
        extended.read(wire(.binary, [1, 2, 3]), &sink)
        #expect(extended.takeQueuedFrame(&sink)?.data == [3, 2, 1], "the extension's processIncoming ran")

        // Streaming: the streamed message limit applies, and the message is handed over as a streamed fragment.
        var streaming = openMachine(
            configuration {
                $0.streamsIncomingMessages = true
                $0.maxStreamedMessageSize = 10
            })
        streaming.read(
            wire(.binary, [UInt8](repeating: 1, count: 10)) + wire(.binary, [UInt8](repeating: 1, count: 11)), &sink)
        #expect(streaming.takeQueuedFrame(&sink)?.data.count == 10)
        let result = streaming.receive(1, isCancelled: false, &sink)
        #expect(result == .end(WebSocketError(.messageTooBig, "")), "over maxStreamedMessageSize")

        // A session released without closing sent its close: what still arrives is dropped, not queued or counted.
        var released = openMachine()
        released.closeDetached(&sink)
        released.read(wire(.text, "late") + wire(.binary, [1]), &sink)
        #expect(released.queuedFrameCount == 0)
        #expect(released.received.messages == 0)
    }
}

extension ReceivedCounters {
    /// Text and binary messages received.
    fileprivate var messages: Int { self.textMessages + self.binaryMessages }
}
