// Pings the application sends and waits for (`WebSocketSession.ping(timeout:)`), and the round-trip times of all our
// pings. Pure like the rest of the machine: the caller passes the instants (`at now:`); nothing here reads a clock.

extension SessionStateMachine {
    /// Identifies a ping of ``sendPing(_:at:_:)``.
    typealias PingID = UInt64

    /// A ping of ``sendPing(_:at:_:)`` waiting for its pong.
    struct UserPing {
        var id: PingID
        var payload: [UInt8]
        var sentAt: StoredInstant
    }

    /// Whether a pong is expected (a keepalive or an application ping is unanswered): the caller then passes the time
    /// of each read to ``read(_:at:_:)``.
    var isAwaitingPong: Bool { self.keepaliveSentAt != nil || !self.userPings.isEmpty }

    /// The statistics now: the received side and round-trip times counted here, the frames and bytes decoded, and
    /// `sent`, what the caller counted of what it wrote.
    func statistics(sent: SentCounters = SentCounters()) -> WebSocketSessionStatistics {
        WebSocketSessionStatistics(
            received: self.received, sent: sent, framesDecoded: self.pipelineFramesDecoded,
            dataPayloadBytesDecoded: self.pipelineDataPayloadBytesDecoded)
    }

    /// Sends a ping for the application; its pong is reported with ``Action/pongReceived(_:roundTrip:)``.
    /// - Parameters:
    ///   - id: The ping's id (the caller keeps its continuation under it).
    ///   - now: When it is sent.
    /// - Throws: ``WebSocketError`` (`sessionClosed`) once our close was sent or the connection ended.
    mutating func sendPing(_ id: PingID, at now: ContinuousClock.Instant, _ sink: inout some SessionActionSink) throws {
        guard !self.closeSentOrEnded else { throw self.closedError() }
        self.pingCounter &+= 1
        // The high bit tells an application ping from a keepalive one in a capture; uniqueness comes from the counter.
        let payload = withUnsafeBytes(of: (self.pingCounter | 1 << 63).bigEndian) { Array($0) }
        self.userPings.append(UserPing(id: id, payload: payload, sentAt: StoredInstant(now)))
        sink.perform(.writeControl(Frame(kind: .ping, data: payload)))
    }

    /// Forgets the ping `id` (it timed out or its task was cancelled).
    /// - Returns: Whether it was still waiting.
    mutating func cancelPing(_ id: PingID) -> Bool {
        guard let index = self.userPings.firstIndex(where: { $0.id == id }) else { return false }
        self.userPings.remove(at: index)
        return true
    }

    /// The ids of the application pings still waiting, which end with the session (the caller fails them).
    mutating func takeWaitingPings() -> [PingID] {
        defer { self.userPings = [] }
        return self.userPings.map(\.id)
    }

    /// The pong of the keepalive ping arrived.
    mutating func keepalivePongArrived(at now: ContinuousClock.Instant?, _ sink: inout some SessionActionSink) {
        guard let sentAt = self.keepaliveSentAt.take() else { return }
        guard let now else { return }
        let rtt = now - sentAt.instant
        self.received.addRoundTrip(rtt)
        sink.perform(.pongReceived(nil, roundTrip: rtt))
    }

    /// A pong that is not the keepalive's arrived: it answers the application ping with the same payload, if any.
    mutating func userPongArrived(
        _ payload: [UInt8], at now: ContinuousClock.Instant?, _ sink: inout some SessionActionSink
    ) {
        guard let index = self.userPings.firstIndex(where: { $0.payload == payload }) else { return }
        let ping = self.userPings.remove(at: index)
        // A read without a time (a caller that did not pass one) still answers the ping, with no measured time.
        let rtt = now.map { $0 - ping.sentAt.instant } ?? .zero
        if now != nil { self.received.addRoundTrip(rtt) }
        sink.perform(.pongReceived(ping.id, roundTrip: rtt))
    }
}
