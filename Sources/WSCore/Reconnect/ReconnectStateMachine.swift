/// The rules of a reconnecting session, as a value: when to connect, how long to wait, when to give up, which state
/// to report. No I/O, clock, randomness or locks: each event carries the current instant and a random number
/// (``Moment``), and returns the actions the caller carries out in order. `ReconnectingWebSocketSession` is the
/// caller; the tests drive it directly.
///
/// ```
///              start                     hook done
///   idle ─────────────▶ connecting ──▶ connected ──────────▶ open
///                         ▲    │          │                   │
///          backoff elapsed│    │failed    │hook failed        │connection closed
///                         │    ▼          ▼                   ▼
///                        waiting ◀─── retried? ──── no ───▶ closed
/// ```
/// A close request ends it from any phase: at once while connecting or waiting, after the connection's close
/// handshake (`closing`) once a connection exists.
struct ReconnectStateMachine {
    typealias State = ReconnectingWebSocketSession.State
    typealias Cause = ReconnectingWebSocketSession.Cause

    /// The inputs every event carries.
    struct Moment {
        /// The current instant, as the time since an origin of the caller's choice (the session's start).
        var now: Duration
        /// A random number in `0..<1`, for the jitter.
        var random: Double
        /// The wall-clock time in seconds since 1970, for a `Retry-After` given as an HTTP-date; `nil` if unknown.
        var unixTime: Int64?

        init(now: Duration, random: Double = 0.5, unixTime: Int64? = nil) {
            self.now = now
            self.random = random
            self.unixTime = unixTime
        }
    }

    /// What the caller does, in order.
    enum Action {
        /// Report a new state (the state stream, the current state).
        case deliverState(State)
        /// Open connection attempt `attempt` (0 for the first connection): build the request, connect, handshake;
        /// then report ``connected(subprotocol:extensions:at:)`` or ``failed(_:at:)``.
        case connect(attempt: Int)
        /// Run the user's hook on the new connection; then report ``hookSucceeded(at:)`` or ``hookFailed(_:at:)``.
        case runHook
        /// Send the messages queued while disconnected, in order, then send directly; watch the connection and
        /// report ``connectionClosed(_:at:)`` when it ends.
        case flushQueue
        /// Wait `delay`, then report ``backoffElapsed(at:)``.
        case wait(Duration)
        /// Close the current connection with this reason (the connection then ends: report
        /// ``connectionClosed(_:at:)`` if the machine is `closing`).
        case closeConnection(CloseReason)
        /// Stop what is in progress (a connection attempt, the hook, the backoff wait) at once.
        case cancelPending
        /// The session has ended for good: end the message stream, drop queued sends, release everything.
        case finish(Cause)
    }

    /// Where the session is.
    enum Phase: Equatable {
        case idle
        /// A connection attempt is in progress.
        case connecting
        /// A connection is open; the hook runs.
        case connected
        /// Open and usable since the given instant.
        case open(since: Duration)
        /// Waiting before the next attempt, until the given instant.
        case waiting(until: Duration)
        /// The user closed while a connection exists: waiting for it to end.
        case closing
        case closed
    }

    let policy: ReconnectPolicy
    private(set) var phase = Phase.idle
    /// The last state delivered.
    private(set) var state = State.connecting
    /// The number of the attempt in progress or waited for: 0 for the first connection, then 1, 2, ... in an outage.
    private(set) var attempt = 0
    /// When the current outage began (the session's start for the first connection).
    private var outageStart: Duration?
    /// The delay before the previous attempt of this outage (decorrelated jitter grows from it).
    private var previousDelay: Duration?
    /// What the open connection negotiated, reported with the open state.
    private var negotiated: (subprotocol: String?, extensions: [any WebSocketExtension]) = (nil, [])
    /// Why the user closed, while `closing`.
    private var closeReason = CloseReason(code: .normal)

    init(policy: ReconnectPolicy) {
        self.policy = policy
    }

    /// Whether the session has ended for good.
    var isClosed: Bool { self.phase == .closed }

    // MARK: - Events

    /// The session starts: the first connection attempt.
    mutating func start(at moment: Moment) -> [Action] {
        guard self.phase == .idle else { return [] }
        self.phase = .connecting
        self.outageStart = moment.now
        return [self.deliver(.connecting), .connect(attempt: 0)]
    }

    /// The attempt in progress has connected (opening handshake done).
    mutating func connected(subprotocol: String?, extensions: [any WebSocketExtension], at moment: Moment) -> [Action] {
        switch self.phase {
        case .connecting:
            self.phase = .connected
            self.negotiated = (subprotocol, extensions)
            return [.runHook]
        case .closed:
            // Connected just as the user closed: this connection is not wanted.
            return [.closeConnection(self.closeReason)]
        default:
            return []
        }
    }

    /// The attempt in progress failed (connect, TLS, handshake, or the request block threw).
    mutating func failed(_ error: any Error, at moment: Moment) -> [Action] {
        guard self.phase == .connecting else { return [] }
        return self.retryOrFinish(.failure(error), nextAttempt: self.attempt + 1, at: moment)
    }

    /// The hook returned: the connection is ready for use.
    mutating func hookSucceeded(at moment: Moment) -> [Action] {
        guard self.phase == .connected else { return [] }
        self.phase = .open(since: moment.now)
        return [
            self.deliver(.open(subprotocol: self.negotiated.subprotocol, extensions: self.negotiated.extensions)),
            .flushQueue,
        ]
    }

    /// The hook threw while the connection was still up: the connection is closed and the failure judged.
    mutating func hookFailed(_ error: any Error, at moment: Moment) -> [Action] {
        guard self.phase == .connected else { return [] }
        let close = Action.closeConnection(
            CloseReason(code: .internalError, message: "the client's connection hook failed"))
        return [close] + self.retryOrFinish(.failure(error), nextAttempt: self.attempt + 1, at: moment)
    }

    /// The connection ended (or started closing) with `reason`: the server's close, 1006 for a drop, the code the
    /// session sent for a failure (1011 for a missing pong).
    mutating func connectionClosed(_ reason: CloseReason, at moment: Moment) -> [Action] {
        switch self.phase {
        case .connected:
            return self.retryOrFinish(.closed(reason), nextAttempt: self.attempt + 1, at: moment)
        case .open(let since):
            if moment.now - since >= self.policy.stableAfter {
                // A stable connection: this outage starts afresh.
                self.attempt = 0
                self.previousDelay = nil
                self.outageStart = moment.now
            }
            return self.retryOrFinish(.closed(reason), nextAttempt: self.attempt + 1, at: moment)
        case .closing:
            return self.finish(.closedByClient(self.closeReason))
        default:
            return []
        }
    }

    /// The backoff delay is over: the next attempt.
    mutating func backoffElapsed(at moment: Moment) -> [Action] {
        guard case .waiting = self.phase else { return [] }
        self.phase = .connecting
        return [.connect(attempt: self.attempt)]
    }

    /// The user closes with `reason` (or the owning task was cancelled, or the session was released).
    mutating func closeRequested(_ reason: CloseReason) -> [Action] {
        switch self.phase {
        case .idle:
            self.closeReason = reason
            return self.finish(.closedByClient(reason))
        case .connecting, .waiting:
            self.closeReason = reason
            return [.cancelPending] + self.finish(.closedByClient(reason))
        case .connected:
            self.closeReason = reason
            self.phase = .closing
            return [.cancelPending, .closeConnection(reason)]
        case .open:
            self.closeReason = reason
            self.phase = .closing
            return [.closeConnection(reason)]
        case .closing, .closed:
            return []
        }
    }

    // MARK: - Decisions

    /// Schedules attempt `nextAttempt` after `cause` if the policy allows it, else ends the session.
    private mutating func retryOrFinish(_ cause: Cause, nextAttempt: Int, at moment: Moment) -> [Action] {
        let classification: (retry: Bool, retryAfter: Duration?) =
            switch cause {
            case .failure(let error): ReconnectPolicy.classify(error, unixTime: moment.unixTime)
            case .closed(let reason): (ReconnectPolicy.isRetried(reason.code), nil)
            case .closedByClient: (false, nil)
            }
        guard self.policy.shouldRetry(cause, classification.retry) else { return self.finish(cause) }
        if let limit = self.policy.maxAttempts, nextAttempt > limit { return self.finish(cause) }
        var delay = self.policy.delay(forAttempt: nextAttempt, previous: self.previousDelay, random: moment.random)
        if let retryAfter = classification.retryAfter { delay = max(delay, retryAfter) }
        let outageStart = self.outageStart ?? moment.now
        self.outageStart = outageStart
        if let limit = self.policy.maxElapsedTime, moment.now + delay - outageStart > limit {
            return self.finish(cause)
        }
        self.attempt = nextAttempt
        self.previousDelay = delay
        self.phase = .waiting(until: moment.now + delay)
        return [self.deliver(.reconnecting(attempt: nextAttempt, delay: delay, cause: cause)), .wait(delay)]
    }

    private mutating func finish(_ cause: Cause) -> [Action] {
        self.phase = .closed
        return [self.deliver(.closed(cause)), .finish(cause)]
    }

    private mutating func deliver(_ state: State) -> Action {
        self.state = state
        return .deliverState(state)
    }
}
