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
    /// Whole text messages sent.
    public var textMessagesSent = 0
    /// Whole binary messages sent.
    public var binaryMessagesSent = 0
    /// Whole text messages received.
    public var textMessagesReceived = 0
    /// Whole binary messages received.
    public var binaryMessagesReceived = 0
    /// Payload bytes of the text and binary frames the application sent, before compression.
    public var messageBytesSent = 0
    /// Payload bytes of the messages received, after decompression.
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

    // MARK: - Counting (under the session's lock)

    /// Counts a whole message received (after the extensions).
    mutating func countReceivedMessage(_ frame: Frame) {
        if frame.kind == .text { self.textMessagesReceived &+= 1 } else { self.binaryMessagesReceived &+= 1 }
        self.messageBytesReceived &+= frame.data.count
    }

    /// Counts a frame the application sent: `original` before the extensions, `wire` as written.
    /// - Parameters:
    ///   - original: The frame as the application gave it.
    ///   - wirePayload: Its payload length after the extensions.
    mutating func countSent(_ original: Frame, wirePayload: Int) {
        self.framesSent &+= 1
        self.wireBytesSent &+= FrameEncoder.headerSize(payloadLength: wirePayload, masked: true) &+ wirePayload
        switch original.kind {
        case .text, .binary, .continuation:
            self.messageBytesSent &+= original.data.count
            self.dataPayloadBytesSent &+= wirePayload
            if original.kind != .continuation { self.sendingText = original.kind == .text }
            if original.fin {
                if self.sendingText { self.textMessagesSent &+= 1 } else { self.binaryMessagesSent &+= 1 }
            }
        case .ping, .pong, .close:
            break
        }
    }

    /// Counts a control frame the session itself wrote (a pong, a keepalive ping, the close frame).
    mutating func countSentControl(payload: Int) {
        self.framesSent &+= 1
        self.wireBytesSent &+= FrameEncoder.headerSize(payloadLength: payload, masked: true) &+ payload
    }

    /// Adds a round-trip time sample.
    mutating func addRoundTrip(_ rtt: Duration) {
        self.pongsMatched &+= 1
        self.lastRoundTripTime = rtt
        if let smoothed = self.smoothedRoundTripTime {
            self.smoothedRoundTripTime = smoothed + (rtt - smoothed) / 8
        } else {
            self.smoothedRoundTripTime = rtt
        }
    }

    /// Takes the sent side (frames, messages and bytes sent) from `sent`, where the writing glue counted it.
    mutating func addSent(_ sent: WebSocketSessionStatistics) {
        self.framesSent = sent.framesSent
        self.textMessagesSent = sent.textMessagesSent
        self.binaryMessagesSent = sent.binaryMessagesSent
        self.messageBytesSent = sent.messageBytesSent
        self.dataPayloadBytesSent = sent.dataPayloadBytesSent
        self.wireBytesSent = sent.wireBytesSent
    }

    /// Whether the message being sent in fragments is text (its first frame said so).
    var sendingText = false
}
