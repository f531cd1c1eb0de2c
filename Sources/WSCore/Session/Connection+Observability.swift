import Logging
import Synchronization

// What the connection adds for observability: the statistics snapshot, the application's pings with their round-trip
// time, and the coarse metrics reports (the counting itself happens inline, in plain integers under the lock).

extension Connection {
    /// The session's statistics now.
    var statistics: WebSocketSessionStatistics {
        self.state.withLock { s in
            s.machine.statistics(sent: s.io.sent)
        }
    }

    /// Sends a ping and waits for its pong.
    /// - Parameter timeout: How long to wait for the pong.
    /// - Returns: The round-trip time.
    /// - Throws: ``WebSocketError``: ``WebSocketError/Code/pongTimeout`` when no pong came within `timeout` (the
    ///   session stays open), ``WebSocketError/Code/sessionClosed`` when the session is closing or ended;
    ///   `CancellationError` when the task is cancelled.
    nonisolated(nonsending) func ping(timeout: Duration) async throws -> Duration {
        let id = self.state.withLock { s in
            s.io.lastPingID &+= 1
            return s.io.lastPingID
        }
        return try await withTaskCancellationHandler {
            try await withCheckedThrowingContinuation { (continuation: CheckedContinuation<Duration, any Error>) in
                self.beginPing(id, timeout: timeout, continuation)
            }
        } onCancel: {
            self.endPing(id, CancellationError())
        }
    }

    /// The synchronous part of ``ping(timeout:)``.
    private func beginPing(
        _ id: SessionStateMachine.PingID, timeout: Duration, _ continuation: CheckedContinuation<Duration, any Error>
    ) {
        let failure = self.state.withLock { s -> (any Error)? in
            // The cancellation handler takes this lock too: if it ran first, the task is already marked cancelled.
            if Task.isCancelled { return CancellationError() }
            do {
                try s.machine.sendPing(id, at: .now, &s.io)
            } catch {
                return error
            }
            let fire: @Sendable () -> Void = {
                self.endPing(
                    id,
                    WebSocketError(
                        .pongTimeout, "no pong arrived within \(timeout) of the ping; the session stays open"))
            }
            let timer = self.transport.schedule(after: timeout, fire) ?? TaskTimer(after: timeout, fire)
            s.io.pings[id] = (continuation, timer)
            return nil
        }
        if let failure { continuation.resume(throwing: failure) }
    }

    /// Ends the wait of ping `id` with `error`, unless its pong arrived (or the session ended) first.
    private func endPing(_ id: SessionStateMachine.PingID, _ error: any Error) {
        let ping = self.state.withLock { s in
            _ = s.machine.cancelPing(id)
            return s.io.pings.removeValue(forKey: id)
        }
        guard let ping else { return }
        ping.timer.cancel()
        ping.continuation.resume(throwing: error)
    }

    // MARK: - Metrics

    /// Arms the next periodic metrics report (only when the client has metrics).
    func armMetricsTimer(_ io: inout IO) {
        let fire: @Sendable () -> Void = { self.reportMetrics(final: false) }
        let interval = ClientMetrics.reportInterval
        let timer = self.transport.schedule(after: interval, fire) ?? TaskTimer(after: interval, fire)
        if let reporting = io.metricsReporting {
            reporting.timer = timer
        } else {
            io.metricsReporting = MetricsReporting(timer: timer)
        }
    }

    /// Reports what the session counted since its last report; at the end (`final`) also the close and the
    /// compression ratios. Metric calls are made after the lock is released.
    func reportMetrics(final: Bool) {
        guard let metrics = self.metrics else { return }
        let report = self.state.withLock {
            s -> (
                now: WebSocketSessionStatistics, previous: WebSocketSessionStatistics, reason: CloseReason?,
                compressed: Bool
            )? in
            guard s.io.sent.openedAt != nil else { return nil }  // never opened: the failure was counted
            if !final {
                guard !s.machine.hasEnded else { return nil }
                self.armMetricsTimer(&s.io)
            }
            let now = s.machine.statistics(sent: s.io.sent)
            let reporting = s.io.metricsReporting ?? MetricsReporting(timer: nil)
            s.io.metricsReporting = reporting
            let previous = reporting.reported
            reporting.reported = now
            return (now, previous, s.machine.closeReason, !s.machine.extensions.isEmpty)
        }
        guard let report else { return }
        metrics.report(report.now, since: report.previous)
        if final { metrics.sessionClosed(report.reason, statistics: report.now, compressed: report.compressed) }
    }
}

extension Connection {
    /// The transport closed: the final metrics report and the lifecycle log line.
    func sessionEnded() {
        if self.metrics != nil {
            self.reportMetrics(final: true)
            let waiters = self.state.withLock { s in
                s.io.endReported = true
                defer { s.io.endWaiters = [] }
                return s.io.endWaiters
            }
            for waiter in waiters { waiter.resume() }
        }
        self.logger.debug(
            "WebSocket connection ended",
            metadata: [
                "ws.close_reason": "\(self.currentCloseReason.map { "\($0)" } ?? "none")",
                "ws.statistics": "\(self.statistics)",
            ])
    }
}

extension Logger {
    /// Sets the metadata every log line of a session carries: `ws.session`, a short random id (8 hex digits), and
    /// `ws.endpoint`, the scheme, host, port and path of the URL (never its query string or credentials). Only when
    /// this logger logs debug messages, as every line the SDK logs about a session is at debug or trace: metadata
    /// costs memory and CPU per connection (swift-log's default handler renders it again on each change), which a
    /// logger at info level would pay for nothing.
    /// A warning, logged above debug level, gets them from ``Connection/warningMetadata`` instead.
    /// - Parameters:
    ///   - url: The session's URL.
    ///   - id: The session's short id (``makeSessionID()``).
    mutating func setSessionMetadata(_ url: WebSocketURL, id: String) {
        guard self.logLevel <= .debug else { return }
        self[metadataKey: "ws.session"] = .string(id)
        self[metadataKey: "ws.endpoint"] = .string(Self.endpoint(of: url))
    }

    /// A short id for a session's log lines: 8 hex digits from the kernel CSPRNG, taken from the shared pool
    /// (``SharedKernelRandom``) that handshake keys come from, so a session costs no system call of its own for it.
    static func makeSessionID() -> String {
        var value: UInt32 = 0
        withUnsafeMutableBytes(of: &value) { fillRandom($0) }
        return hexDigits(value)
    }

    /// `value` as 8 lower-case hex digits, zero-padded. Written out rather than `String(value, radix: 16)`, whose
    /// generic conversion runs unspecialized in libswiftCore and pages in its code for this one use.
    static func hexDigits(_ value: UInt32) -> String {
        String(unsafeUninitializedCapacity: 8) { buffer in
            for i in 0..<8 {
                let nibble = UInt8(truncatingIfNeeded: value >> UInt32(28 - 4 * i)) & 0xF
                buffer[i] = nibble < 10 ? UInt8(ascii: "0") + nibble : UInt8(ascii: "a") + nibble - 10
            }
            return 8
        }
    }

    /// `scheme://host:port/path` of `url`: no query string, no credentials.
    static func endpoint(of url: WebSocketURL) -> String {
        let path = url.pathAndQuery.split(separator: "?", maxSplits: 1, omittingEmptySubsequences: false).first ?? ""
        return "\(url.scheme)://\(url.host.bracketedIfIPv6):\(url.port)\(path)"
    }
}

/// A connection's metrics reports: the timer of the next one and what was last reported. Boxed, so that a connection
/// without metrics keeps only a `nil` pointer for them.
final class MetricsReporting: @unchecked Sendable {  // read and written only under its connection's state lock
    /// The timer of the next periodic report.
    var timer: (any WebSocketTransportTimer)?
    /// What was last reported.
    var reported = WebSocketSessionStatistics()

    init(timer: (any WebSocketTransportTimer)?) {
        self.timer = timer
    }
}

extension Connection {
    /// `ws.session` and `ws.endpoint` for a warning of this connection's session when its logger does not carry them
    /// (a logger above debug level); `nil` when it does, or when the connection has no session identity.
    var warningMetadata: Logger.Metadata? {
        guard let identity = self.identity, self.logger[metadataKey: "ws.session"] == nil else { return nil }
        return ["ws.session": .string(identity.id), "ws.endpoint": .string(Logger.endpoint(of: identity.url))]
    }
}
