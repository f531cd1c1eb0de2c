/// When and how often a ``ReconnectingWebSocketSession`` connects again: exponential backoff with jitter, limits,
/// and which failures are worth another attempt.
///
/// The delay before reconnection attempt *n* (1, 2, 3, ...) grows as `initialDelay × multiplier^(n−1)`, capped at
/// ``maximumDelay``, and is then randomized by ``jitter``. With the defaults (1 s, ×2, 30 s, full jitter) the
/// first attempt comes after a random delay of up to 1 s, the second up to 2 s, then 4, 8, 16 and 30 s at most.
/// A connection that stayed up for ``stableAfter`` counts as a success: the next outage starts again at attempt 1.
///
/// ```swift
/// var policy = ReconnectPolicy()
/// policy.initialDelay = .milliseconds(500)
/// policy.maxAttempts = 10
/// policy.shouldRetry = { cause, retriedByDefault in
///     cause.closeCode == CloseReason.Code(4000) || retriedByDefault   // our server's "reconnect" code
/// }
/// ```
///
/// Which failures are retried by default (``isRetriedByDefault(_:)``):
///
/// | retried | not retried |
/// |---|---|
/// | network errors, connection refused, DNS failures, timeouts | TLS and certificate failures |
/// | handshake answered with 5xx or 429 (waiting at least its `Retry-After`) | any other HTTP status (401, 403, 404, ...) |
/// | a proxy that answered 5xx (502, 503, 504) | any other proxy failure (407, 403, a SOCKS refusal) |
/// | closes 1001, 1006 (dropped), 1011, 1012, 1013, 1014 | closes 1000, 1002, 1003, 1005, 1007, 1008, 1009, 1010, 1015, 3000–4999 |
/// | a missing pong (1011) | an invalid handshake response, an unsupported engine or URL |
///
/// An error thrown by your request block or your ``ReconnectingWebSocketSession/Configuration/onConnect`` hook is
/// not retried unless it is one of the retried errors above (the connection dropped while the hook ran) or
/// ``shouldRetry`` says so.
public struct ReconnectPolicy: Sendable {
    /// How the backoff delay is randomized, so that many clients that lost the same server do not all come back at
    /// the same moment.
    public enum Jitter: Sendable, Hashable {
        /// A random delay between zero and the exponential delay (the default). Spreads reconnections over the
        /// whole window, which costs the server the least when many clients reconnect at once, and makes the first
        /// delay random as RFC 6455 section 7.2.3 asks.
        case full
        /// A random delay between ``ReconnectPolicy/initialDelay`` and `multiplier ×` the previous delay, capped
        /// at ``ReconnectPolicy/maximumDelay``: never shorter than the initial delay.
        case decorrelated
        /// No randomness: exactly `initialDelay × multiplier^(n−1)`, capped. For tests and for single clients only.
        case none
    }

    /// The delay scale of the first reconnection attempt (default 1 s).
    public var initialDelay: Duration = .seconds(1)
    /// The longest delay between two attempts (default 30 s), except that a server's `Retry-After` is honoured even
    /// when it is longer.
    public var maximumDelay: Duration = .seconds(30)
    /// How much the delay grows from one attempt to the next (default 2).
    public var multiplier: Double = 2
    /// How the delay is randomized (default ``Jitter/full``).
    public var jitter: Jitter = .full
    /// The most reconnection attempts in one outage (`nil`, the default: no limit). When the last one fails the
    /// session ends with ``ReconnectingWebSocketSession/State/closed(_:)`` and the last failure; `0` never
    /// reconnects.
    public var maxAttempts: Int? = nil
    /// The longest an outage may last (`nil`, the default: no limit): no attempt starts later than this after the
    /// connection was lost (or, for the first connection, after the session started).
    public var maxElapsedTime: Duration? = nil
    /// How long a connection must stay open to count as stable (default 10 s): the next outage then starts again
    /// at attempt 1 with the initial delay. A connection that drops sooner continues the backoff of the outage
    /// before it, so a server that accepts and drops at once is not hammered.
    public var stableAfter: Duration = .seconds(10)
    /// Decides whether to reconnect after `cause`; `retriedByDefault` is the default decision (see the table
    /// above). The default returns `retriedByDefault`. Called once per failure, on the session's task.
    public var shouldRetry: @Sendable (_ cause: ReconnectingWebSocketSession.Cause, _ retriedByDefault: Bool) -> Bool =
        {
            $1
        }

    /// Creates the default policy: full jitter, 1 s initial delay, ×2, at most 30 s, no limits, stable after 10 s.
    public init() {}

    /// Whether the default policy reconnects after `cause` (the table above).
    /// - Parameter cause: Why the connection ended or the attempt failed.
    public static func isRetriedByDefault(_ cause: ReconnectingWebSocketSession.Cause) -> Bool {
        switch cause {
        case .failure(let error): Self.classify(error, unixTime: nil).retry
        case .closed(let reason): Self.isRetried(reason.code)
        case .closedByClient: false
        }
    }

    /// Whether the default policy reconnects after a connection ended with `code`.
    static func isRetried(_ code: CloseReason.Code) -> Bool {
        switch code.rawValue {
        case 1001, 1006, 1011, 1012, 1013, 1014: true
        default: false
        }
    }

    /// How the default policy treats `error`: retried or not, and the delay the server asked for (`Retry-After` of
    /// a 429 or 5xx answer; an HTTP-date is turned into a delay from `unixTime`, the current time in seconds since
    /// 1970, and ignored when that is `nil`).
    ///
    /// The one place that knows the error types: a change of the error types changes only this function.
    static func classify(_ error: any Error, unixTime: Int64?) -> (retry: Bool, retryAfter: Duration?) {
        if let error = error as? WebSocketError {
            switch error.code {
            case .dnsFailure, .connectionRefused, .timedOut, .network, .connectionLost, .pongTimeout, .closeTimeout:
                return (true, nil)
            case .upgradeRejected:
                guard let status = error.status, status == 429 || (500...599).contains(status) else {
                    return (false, nil)
                }
                let retryAfter = error.headers["Retry-After"].flatMap { RetryAfter.delay($0, unixTime: unixTime) }
                return (true, retryAfter)
            case .proxyFailure:
                // A proxy that answered 5xx could not reach the server (502, 504) or is itself restarting (503).
                guard let status = error.status, (500...599).contains(status) else { return (false, nil) }
                return (true, nil)
            case .sessionClosed:
                return (error.closeCode.map(Self.isRetried) ?? false, nil)
            default:  // tlsFailure, invalidHandshake, unsupported, invalidURL, cancelled, protocol errors, ...
                return (false, nil)
            }
        }
        if error is SystemError { return (true, nil) }
        return (false, nil)
    }

    /// The delay before reconnection attempt `attempt` (from 1), before any `Retry-After`.
    /// - Parameters:
    ///   - attempt: The attempt number, 1 for the first reconnection of an outage.
    ///   - previous: The delay before the previous attempt of this outage (for ``Jitter/decorrelated``).
    ///   - random: A random number in `0..<1`.
    func delay(forAttempt attempt: Int, previous: Duration?, random: Double) -> Duration {
        let initial = max(0, self.initialDelay.secondsAsDouble)
        let maximum = max(0, self.maximumDelay.secondsAsDouble)
        let multiplier = max(1, self.multiplier.isFinite ? self.multiplier : 1)
        let random = min(max(random.isFinite ? random : 0, 0), 1)
        let seconds: Double
        switch self.jitter {
        case .none, .full:
            // initial × multiplier^(attempt−1), computed so that a large attempt saturates at the maximum.
            var base = initial
            var step = 1
            while step < attempt && base < maximum {
                base *= multiplier
                step += 1
            }
            base = min(base, maximum)
            seconds = self.jitter == .full ? base * random : base
        case .decorrelated:
            let low = min(initial, maximum)
            let high = min(max(previous.map { $0.secondsAsDouble * multiplier } ?? initial * multiplier, low), maximum)
            seconds = low + (high - low) * random
        }
        return .seconds(seconds)
    }
}

extension Duration {
    /// The duration in seconds, as a `Double`.
    var secondsAsDouble: Double {
        let (seconds, attoseconds) = self.components
        return Double(seconds) + Double(attoseconds) * 1e-18
    }
}

/// The `Retry-After` header of an HTTP answer (RFC 9110 section 10.2.3): a number of seconds or an HTTP-date.
enum RetryAfter {
    /// The delay `value` asks for: a number of seconds, or the time until an HTTP-date (IMF-fixdate, e.g.
    /// `Sun, 06 Nov 1994 08:49:37 GMT`) from `unixTime`; zero for a date in the past; `nil` when the value cannot
    /// be read or is a date and `unixTime` is `nil`.
    static func delay(_ value: String, unixTime: Int64?) -> Duration? {
        let trimmed = value.trimmingWhitespace()
        if !trimmed.isEmpty, trimmed.utf8.allSatisfy({ $0 >= UInt8(ascii: "0") && $0 <= UInt8(ascii: "9") }) {
            // An absurdly long number saturates instead of failing: the server wants us to wait a long time.
            return .seconds(Int64(trimmed) ?? Int64(Int32.max))
        }
        guard let unixTime, let date = Self.parseIMFFixdate(trimmed) else { return nil }
        return .seconds(max(0, date - unixTime))
    }

    /// Seconds since 1970 of an IMF-fixdate such as `Sun, 06 Nov 1994 08:49:37 GMT`, or `nil`.
    static func parseIMFFixdate(_ text: String) -> Int64? {
        let parts = text.split(separator: " ", omittingEmptySubsequences: true)
        guard parts.count == 6, parts[0].hasSuffix(","), parts[5] == "GMT",
            let day = Int64(parts[1]), (1...31).contains(day), parts[1].count == 2,
            let monthIndex = ["Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"]
                .firstIndex(of: String(parts[2])),
            let year = Int64(parts[3]), parts[3].count == 4
        else { return nil }
        let time = parts[4].split(separator: ":")
        guard time.count == 3, time.allSatisfy({ $0.count == 2 }),
            let hour = Int64(time[0]), let minute = Int64(time[1]), let second = Int64(time[2]),
            hour < 24, minute < 60, second < 61
        else { return nil }
        let days = Self.daysFromCivil(year: year, month: Int64(monthIndex) + 1, day: day)
        return days * 86_400 + hour * 3_600 + minute * 60 + second
    }

    /// Days since 1970-01-01 of a proleptic Gregorian date (H. Hinnant's `days_from_civil`).
    private static func daysFromCivil(year: Int64, month: Int64, day: Int64) -> Int64 {
        let y = month <= 2 ? year - 1 : year
        let era = (y >= 0 ? y : y - 399) / 400
        let yearOfEra = y - era * 400
        let dayOfYear = (153 * (month + (month > 2 ? -3 : 9)) + 2) / 5 + day - 1
        let dayOfEra = yearOfEra * 365 + yearOfEra / 4 - yearOfEra / 100 + dayOfYear
        return era * 146_097 + dayOfEra - 719_468
    }
}

extension String {
    /// The string without leading and trailing spaces and tabs.
    fileprivate func trimmingWhitespace() -> String {
        let isSpace: (Character) -> Bool = { $0 == " " || $0 == "\t" }
        guard let first = self.firstIndex(where: { !isSpace($0) }), let last = self.lastIndex(where: { !isSpace($0) })
        else { return "" }
        return String(self[first...last])
    }
}
