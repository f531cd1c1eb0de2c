import CoreMetrics

/// The metric objects of one client, made once when the client is created (never per message or per session for
/// what a session reports often). `nil` in a client whose metrics are off or whose factory is swift-metrics' no-op
/// one: then no session does any metrics work at all.
///
/// Sessions count in plain integers under their own lock (``WebSocketSessionStatistics``) and report the increase
/// here at coarse points: every ``reportInterval`` while open, and when the session ends.
final class ClientMetrics: Sendable {
    /// How often an open session reports what it counted since its last report.
    static let reportInterval: Duration = .seconds(10)

    let factory: any MetricsFactory
    let engine: String
    let opened: Counter
    let openSessions: Meter
    let openDuration: Timer
    let pingRoundTrip: Timer
    let textSent: Counter
    let binarySent: Counter
    let textReceived: Counter
    let binaryReceived: Counter
    let messageBytesSent: Counter
    let messageBytesReceived: Counter
    let wireBytesSent: Counter
    let wireBytesReceived: Counter
    let compressionRatioSent: Recorder
    let compressionRatioReceived: Recorder

    /// The metric names (see Docs/Observability.md).
    enum Name {
        static let opened = "websocket_client_sessions_opened_total"
        static let failed = "websocket_client_sessions_failed_total"
        static let closed = "websocket_client_sessions_closed_total"
        static let open = "websocket_client_sessions_open"
        static let openDuration = "websocket_client_open_duration_seconds"
        static let messages = "websocket_client_messages_total"
        static let messageBytes = "websocket_client_message_bytes_total"
        static let wireBytes = "websocket_client_wire_bytes_total"
        static let compressionRatio = "websocket_client_compression_ratio"
        static let pingRoundTrip = "websocket_client_ping_rtt_seconds"
    }

    /// The client's metrics, or `nil` when they are off.
    /// - Parameters:
    ///   - enabled: ``WebSocketClient/Configuration/metricsEnabled``.
    ///   - factory: ``WebSocketClient/Configuration/metricsFactory``; `nil`: the bootstrapped one.
    ///   - engine: The engine's name, the `engine` dimension.
    static func make(enabled: Bool, factory: (any MetricsFactory)?, engine: String) -> ClientMetrics? {
        guard enabled else { return nil }
        let factory = factory ?? MetricsSystem.factory
        if factory is NOOPMetricsHandler { return nil }
        return ClientMetrics(factory: factory, engine: engine)
    }

    private init(factory: any MetricsFactory, engine: String) {
        self.factory = factory
        self.engine = engine
        let e = ("engine", engine)
        self.opened = Counter(label: Name.opened, dimensions: [e], factory: factory)
        self.openSessions = Meter(label: Name.open, dimensions: [e], factory: factory)
        self.openDuration = Timer(label: Name.openDuration, dimensions: [e], factory: factory)
        self.pingRoundTrip = Timer(label: Name.pingRoundTrip, dimensions: [e], factory: factory)
        func messages(_ direction: String, _ type: String) -> Counter {
            Counter(label: Name.messages, dimensions: [e, ("direction", direction), ("type", type)], factory: factory)
        }
        self.textSent = messages("sent", "text")
        self.binarySent = messages("sent", "binary")
        self.textReceived = messages("received", "text")
        self.binaryReceived = messages("received", "binary")
        self.messageBytesSent = Counter(
            label: Name.messageBytes, dimensions: [e, ("direction", "sent")], factory: factory)
        self.messageBytesReceived = Counter(
            label: Name.messageBytes, dimensions: [e, ("direction", "received")], factory: factory)
        self.wireBytesSent = Counter(label: Name.wireBytes, dimensions: [e, ("direction", "sent")], factory: factory)
        self.wireBytesReceived = Counter(
            label: Name.wireBytes, dimensions: [e, ("direction", "received")], factory: factory)
        self.compressionRatioSent = Recorder(
            label: Name.compressionRatio, dimensions: [e, ("direction", "sent")], aggregate: true, factory: factory)
        self.compressionRatioReceived = Recorder(
            label: Name.compressionRatio, dimensions: [e, ("direction", "received")], aggregate: true, factory: factory)
    }

    // MARK: - Session events

    /// A session opened after `duration` (connect and handshake).
    func sessionOpened(after duration: Duration) {
        self.opened.increment()
        self.openSessions.increment()
        self.openDuration.recordNanoseconds(Self.nanoseconds(duration))
    }

    /// Opening a session failed with `error`.
    func sessionFailed(_ error: any Error) {
        Counter(
            label: Name.failed, dimensions: [("engine", self.engine), ("kind", Self.failureKind(error))],
            factory: self.factory
        )
        .increment()
    }

    /// An open session ended with `reason` (`nil`: unknown, reported as 1006).
    /// - Parameter compressed: Whether an extension (permessage-deflate) was negotiated: the compression ratios are
    ///   recorded from `statistics`.
    func sessionClosed(_ reason: CloseReason?, statistics: WebSocketSessionStatistics, compressed: Bool) {
        self.openSessions.decrement()
        let code = Self.closeCodeLabel(reason?.code ?? .abnormalClosure)
        Counter(label: Name.closed, dimensions: [("engine", self.engine), ("code", code)], factory: self.factory)
            .increment()
        if compressed {
            if statistics.dataPayloadBytesSent > 0 {
                self.compressionRatioSent.record(
                    Double(statistics.messageBytesSent) / Double(statistics.dataPayloadBytesSent))
            }
            if statistics.dataPayloadBytesReceived > 0 {
                self.compressionRatioReceived.record(
                    Double(statistics.messageBytesReceived) / Double(statistics.dataPayloadBytesReceived))
            }
        }
    }

    /// A ping was answered after `rtt`.
    func pingAnswered(after rtt: Duration) {
        self.pingRoundTrip.recordNanoseconds(Self.nanoseconds(rtt))
    }

    /// Reports what a session counted since its last report (`previous`).
    func report(_ now: WebSocketSessionStatistics, since previous: WebSocketSessionStatistics) {
        func add(_ counter: Counter, _ new: Int, _ old: Int) {
            if new > old { counter.increment(by: Int64(new - old)) }
        }
        add(self.textSent, now.textMessagesSent, previous.textMessagesSent)
        add(self.binarySent, now.binaryMessagesSent, previous.binaryMessagesSent)
        add(self.textReceived, now.textMessagesReceived, previous.textMessagesReceived)
        add(self.binaryReceived, now.binaryMessagesReceived, previous.binaryMessagesReceived)
        add(self.messageBytesSent, now.messageBytesSent, previous.messageBytesSent)
        add(self.messageBytesReceived, now.messageBytesReceived, previous.messageBytesReceived)
        add(self.wireBytesSent, now.wireBytesSent, previous.wireBytesSent)
        add(self.wireBytesReceived, now.wireBytesReceived, previous.wireBytesReceived)
    }

    // MARK: - Labels

    /// The `kind` dimension of a failed opening: a short, bounded name.
    static func failureKind(_ error: any Error) -> String {
        if let error = error as? WebSocketError {
            switch error.code {
            case .dnsFailure: return "dns"
            case .connectionRefused: return "refused"
            case .timedOut: return "timeout"
            case .tlsFailure: return "tls"
            case .upgradeRejected: return "handshake_status"
            case .invalidHandshake: return "handshake_invalid"
            case .proxyFailure: return "proxy"
            case .network: return "network"
            case .unsupported: return "unsupported"
            case .cancelled: return "cancelled"
            case .invalidURL, .invalidArgument: return "invalid_request"
            default: return "other"
            }
        }
        if error is CancellationError { return "cancelled" }
        return "other"
    }

    /// The `code` dimension of a closed session: the registered codes by number, application codes by range.
    static func closeCodeLabel(_ code: CloseReason.Code) -> String {
        switch code.rawValue {
        case 1000...1015: return String(code.rawValue)
        case 3000...3999: return "3xxx"
        case 4000...4999: return "4xxx"
        default: return "other"
        }
    }

    private static func nanoseconds(_ duration: Duration) -> Int64 {
        let (seconds, attoseconds) = duration.components
        return seconds &* 1_000_000_000 &+ attoseconds / 1_000_000_000
    }
}
