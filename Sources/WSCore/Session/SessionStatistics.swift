/// What a session has carried so far: frames, messages and bytes each way, the ping round-trip times and when it
/// opened. Read it at any time with ``WebSocketSession/statistics``; the values are a consistent snapshot.
///
/// Byte counts come in two kinds: **wire** bytes are what crossed the connection after the opening handshake (frame
/// headers, masking keys and compressed payloads included); **message** bytes are the payloads the application sent
/// or received (after decompression when permessage-deflate is on).
public struct WebSocketSessionStatistics: Sendable, Hashable, CustomStringConvertible {
    /// Frames sent: data frames (each fragment counts), pings, pongs and the close frame.
    public var framesSent = 0
    /// Frames received: data frames (each fragment counts), pings, pongs and the close frame.
    public var framesReceived = 0
    /// Text messages sent; a message sent in fragments counts once, at its last fragment.
    public var textMessagesSent = 0
    /// Binary messages sent; a message sent in fragments counts once, at its last fragment.
    public var binaryMessagesSent = 0
    /// Text messages received; a message streamed in fragments counts once, at its last fragment.
    public var textMessagesReceived = 0
    /// Binary messages received; a message streamed in fragments counts once, at its last fragment.
    public var binaryMessagesReceived = 0
    /// Payload bytes of the text and binary frames the application sent, before compression.
    public var messageBytesSent = 0
    /// Payload bytes of the messages received, after decompression (streamed fragments count as they arrive).
    public var messageBytesReceived = 0
    /// Payload bytes of the data frames sent as they went on the wire (after compression).
    public var dataPayloadBytesSent = 0
    /// Payload bytes of the data frames received as they came off the wire (before decompression).
    public var dataPayloadBytesReceived = 0
    /// Bytes written to the connection after the opening handshake: every frame, header and masking key included.
    public var wireBytesSent = 0
    /// Bytes read from the connection after the opening handshake.
    public var wireBytesReceived = 0
    /// Pongs received that answered one of our pings (keepalive or ``WebSocketSession/ping(timeout:)``).
    public var pongsMatched = 0
    /// The round-trip time of the latest answered ping; `nil` before the first.
    public var lastRoundTripTime: Duration?
    /// The smoothed round-trip time (an exponentially weighted average with weight 1/8 for each new sample, as
    /// TCP's SRTT); `nil` before the first answered ping.
    public var smoothedRoundTripTime: Duration?
    /// When the opening handshake completed (on the continuous clock); `nil` before.
    public var openedAt: ContinuousClock.Instant?

    /// Creates empty statistics.
    public init() {}

    /// Messages sent, text and binary.
    public var messagesSent: Int { self.textMessagesSent + self.binaryMessagesSent }
    /// Messages received, text and binary.
    public var messagesReceived: Int { self.textMessagesReceived + self.binaryMessagesReceived }

    /// How long the session has been open at `now`; `nil` before it opened.
    /// - Parameter now: The instant to measure to (default: now).
    public func openDuration(at now: ContinuousClock.Instant = .now) -> Duration? {
        self.openedAt.map { now - $0 }
    }

    /// A one-line summary, e.g. for a log line.
    public var description: String {
        var text = "frames sent \(self.framesSent) received \(self.framesReceived); "
        text += "messages sent \(self.messagesSent) (\(self.textMessagesSent) text) "
        text += "received \(self.messagesReceived) (\(self.textMessagesReceived) text); "
        text += "message bytes sent \(self.messageBytesSent) received \(self.messageBytesReceived); "
        text += "wire bytes sent \(self.wireBytesSent) received \(self.wireBytesReceived)"
        if let rtt = self.lastRoundTripTime {
            text += "; ping RTT last \(rtt)"
            if let smoothed = self.smoothedRoundTripTime { text += " smoothed \(smoothed)" }
        }
        return text
    }

    /// Assembles the statistics from the session's two counters and what its frame decoder counted.
    init(received: ReceivedCounters, sent: SentCounters, framesDecoded: Int, dataPayloadBytesDecoded: Int) {
        self.framesSent = sent.frames
        self.textMessagesSent = sent.textMessages
        self.binaryMessagesSent = sent.binaryMessages
        self.messageBytesSent = sent.messageBytes
        self.dataPayloadBytesSent = sent.dataPayloadBytes
        self.wireBytesSent = sent.wireBytes
        self.openedAt = sent.openedAt?.instant
        self.framesReceived = framesDecoded
        self.dataPayloadBytesReceived = dataPayloadBytesDecoded
        self.textMessagesReceived = received.textMessages
        self.binaryMessagesReceived = received.binaryMessages
        self.messageBytesReceived = received.messageBytes
        self.wireBytesReceived = received.wireBytes
        self.pongsMatched = received.pongsMatched
        if received.pongsMatched > 0 {
            self.lastRoundTripTime = .nanoseconds(received.lastRoundTripNanoseconds)
            self.smoothedRoundTripTime = .nanoseconds(received.smoothedRoundTripNanoseconds)
        }
    }
}

// MARK: - Counting (under the session's lock)

// The counters are kept small (plain integers, no optionals where avoidable): every connection carries them.

/// What the session machine counts of the received side (the frame decoder counts frames and payload bytes).
struct ReceivedCounters {
    var textMessages = 0
    var binaryMessages = 0
    var messageBytes = 0
    var wireBytes = 0
    var pongsMatched = 0
    var lastRoundTripNanoseconds: Int64 = 0
    var smoothedRoundTripNanoseconds: Int64 = 0

    /// Whether the message being streamed in fragments is text (its first fragment said so).
    var receivingText = false

    /// Counts a message received (after the extensions): a whole one, or a fragment of a streamed one
    /// (``WebSockets/Configuration/streamsIncomingMessages``), whose message counts once, at its last fragment.
    mutating func countMessage(_ frame: Frame) {
        self.messageBytes &+= frame.data.count
        if frame.kind != .continuation { self.receivingText = frame.kind == .text }
        guard frame.fin else { return }
        if self.receivingText { self.textMessages &+= 1 } else { self.binaryMessages &+= 1 }
    }

    /// ``countMessage(_:)`` for a whole text or binary message (`fin` set) of `bytes` bytes: the fast path's.
    @inline(__always)
    mutating func countWholeMessage(isText: Bool, bytes: Int) {
        self.messageBytes &+= bytes
        self.receivingText = isText
        if isText { self.textMessages &+= 1 } else { self.binaryMessages &+= 1 }
    }

    /// Adds a round-trip time sample; the smoothed time weighs it 1/8, as TCP's SRTT.
    mutating func addRoundTrip(_ rtt: Duration) {
        let (seconds, attoseconds) = rtt.components
        let nanoseconds = seconds &* 1_000_000_000 &+ attoseconds / 1_000_000_000
        self.smoothedRoundTripNanoseconds =
            self.pongsMatched == 0
            ? nanoseconds : self.smoothedRoundTripNanoseconds + (nanoseconds - self.smoothedRoundTripNanoseconds) / 8
        self.lastRoundTripNanoseconds = nanoseconds
        self.pongsMatched &+= 1
    }
}

/// What the connection counts of what it writes, and when the session opened.
struct SentCounters {
    var frames = 0
    var textMessages = 0
    var binaryMessages = 0
    var messageBytes = 0
    var dataPayloadBytes = 0
    var wireBytes = 0
    var openedAt: StoredInstant?
    /// Whether the message being sent in fragments is text (its first frame said so).
    var sendingText = false

    /// Counts a frame the application sent.
    /// - Parameters:
    ///   - original: The frame as the application gave it (before the extensions).
    ///   - wirePayload: Its payload length after the extensions.
    mutating func count(_ original: Frame, wirePayload: Int) {
        self.frames &+= 1
        self.wireBytes &+= FrameEncoder.headerSize(payloadLength: wirePayload, masked: true) &+ wirePayload
        switch original.kind {
        case .text, .binary, .continuation:
            self.messageBytes &+= original.data.count
            self.dataPayloadBytes &+= wirePayload
            if original.kind != .continuation { self.sendingText = original.kind == .text }
            if original.fin {
                if self.sendingText { self.textMessages &+= 1 } else { self.binaryMessages &+= 1 }
            }
        case .ping, .pong, .close:
            break
        }
    }

    /// Counts a control frame the session itself wrote (a pong, a keepalive ping).
    mutating func countControl(payload: Int) {
        self.frames &+= 1
        self.wireBytes &+= FrameEncoder.headerSize(payloadLength: payload, masked: true) &+ payload
    }
}
