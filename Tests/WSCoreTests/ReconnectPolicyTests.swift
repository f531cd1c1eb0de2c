import PropertyBased
import Testing

@testable import WSCore

/// The reconnect policy's pure parts: which failures are retried, `Retry-After`, and the backoff delays.
@Suite("Reconnect policy")
struct ReconnectPolicyTests {
    private typealias Cause = ReconnectingWebSocketSession.Cause

    // MARK: Which failures are retried (the retry table of Docs/Reconnecting.md)

    @Test(
        "close codes: 1001, 1006, 1011, 1012, 1013, 1014 are retried, the others not",
        arguments: [
            (1001, true), (1006, true), (1011, true), (1012, true), (1013, true), (1014, true),
            (1000, false), (1002, false), (1003, false), (1005, false), (1007, false), (1008, false), (1009, false),
            (1010, false), (1015, false), (3000, false), (4000, false), (4999, false),
        ])
    func closeCodes(code: Int, retried: Bool) {
        #expect(ReconnectPolicy.isRetriedByDefault(.closed(CloseReason(code: UInt16(code)))) == retried)
    }

    @Test(
        "handshake statuses: 5xx and 429 are retried; other 4xx and 3xx are not",
        arguments: [
            (500, true), (502, true), (503, true), (504, true), (429, true),
            (400, false), (401, false), (403, false), (404, false), (408, false), (426, false), (301, false),
        ])
    func handshakeStatus(status: Int, retried: Bool) {
        let error = WebSocketError(.upgradeRejected, "answered \(status)", status: status)
        #expect(ReconnectPolicy.isRetriedByDefault(.failure(error)) == retried)
    }

    @Test("connection errors: network trouble is retried; TLS, bad handshakes and misuse are not")
    func connectionErrors() {
        let retried: [WebSocketError.Code] = [.dnsFailure, .connectionRefused, .timedOut, .network]
        let notRetried: [WebSocketError.Code] = [.tlsFailure, .invalidHandshake, .unsupported, .cancelled]
        for code in retried {
            #expect(ReconnectPolicy.isRetriedByDefault(.failure(WebSocketError(code, "x"))), "\(code)")
        }
        for code in notRetried {
            #expect(!ReconnectPolicy.isRetriedByDefault(.failure(WebSocketError(code, "x"))), "\(code)")
        }
    }

    @Test("a proxy that answered 5xx (it could not reach the server) is retried; 407, 403 and SOCKS refusals are not")
    func proxyFailures() {
        for status in [502, 503, 504] {
            let error = WebSocketError(.proxyFailure, "the proxy answered \(status)", status: status)
            #expect(ReconnectPolicy.isRetriedByDefault(.failure(error)), "\(status)")
        }
        for status in [407, 403] {
            let error = WebSocketError(.proxyFailure, "the proxy answered \(status)", status: status)
            #expect(!ReconnectPolicy.isRetriedByDefault(.failure(error)), "\(status)")
        }
        #expect(
            !ReconnectPolicy.isRetriedByDefault(.failure(WebSocketError(.proxyFailure, "SOCKS5 reply 2: not allowed"))))
    }

    @Test("session errors: a lost connection and a missing pong are retried; protocol failures are not")
    func sessionErrors() {
        let retried: [WebSocketError] = [
            WebSocketError(.connectionLost, "x", closeCode: .abnormalClosure),
            WebSocketError(.pongTimeout, "x", closeCode: .internalError),
            WebSocketError(.sessionClosed, "x", closeCode: .serviceRestart),
        ]
        let notRetried: [WebSocketError] = [
            WebSocketError(.protocolViolation, "x", closeCode: .protocolError),
            WebSocketError(.messageTooBig, "x", closeCode: .messageTooBig),
            WebSocketError(.invalidUTF8, "x", closeCode: .invalidPayload),
            WebSocketError(.sessionClosed, "x", closeCode: .policyViolation),
            WebSocketError(.invalidURL, "x"),
        ]
        for error in retried { #expect(ReconnectPolicy.isRetriedByDefault(.failure(error)), "\(error)") }
        for error in notRetried { #expect(!ReconnectPolicy.isRetriedByDefault(.failure(error)), "\(error)") }
        #expect(ReconnectPolicy.isRetriedByDefault(.failure(SystemError(errno: 104, call: "recv", text: "reset"))))
        struct OwnError: Error {}
        #expect(!ReconnectPolicy.isRetriedByDefault(.failure(OwnError())))
        #expect(!ReconnectPolicy.isRetriedByDefault(.closedByClient(CloseReason(code: .goingAway))))
    }

    // MARK: Retry-After

    @Test("Retry-After: seconds, an HTTP-date, and what cannot be read")
    func retryAfter() {
        #expect(RetryAfter.delay("2", unixTime: nil) == .seconds(2))
        #expect(RetryAfter.delay(" 120 ", unixTime: nil) == .seconds(120))
        #expect(RetryAfter.parseIMFFixdate("Thu, 01 Jan 1970 00:00:00 GMT") == 0)
        #expect(RetryAfter.parseIMFFixdate("Sun, 06 Nov 1994 08:49:37 GMT") == 784_111_777)
        #expect(RetryAfter.parseIMFFixdate("Tue, 29 Feb 2028 23:59:59 GMT") == 1_835_481_599)
        #expect(RetryAfter.delay("Sun, 06 Nov 1994 08:49:37 GMT", unixTime: 784_111_767) == .seconds(10))
        #expect(RetryAfter.delay("Sun, 06 Nov 1994 08:49:37 GMT", unixTime: 784_111_999) == .zero)  // past
        #expect(RetryAfter.delay("Sun, 06 Nov 1994 08:49:37 GMT", unixTime: nil) == nil)
        for bad in ["", "soon", "-1", "1.5", "Sunday, 06-Nov-94 08:49:37 GMT", "Sun, 06 Nov 1994 08:49:37 CET"] {
            #expect(RetryAfter.delay(bad, unixTime: 784_111_767) == nil, "\(bad)")
        }
    }

    @Test("a 503 with Retry-After is classified as retried after at least that delay")
    func retryAfterClassified() {
        let error = WebSocketError(
            .upgradeRejected, "busy", status: 503, headers: ["Retry-After": "7"])
        let classified = ReconnectPolicy.classify(error, unixTime: nil)
        #expect(classified.retry)
        #expect(classified.retryAfter == .seconds(7))
    }

    // MARK: Backoff

    @Test("no jitter: initial × multiplier^(n−1), capped at the maximum")
    func exponential() {
        var policy = ReconnectPolicy()
        policy.jitter = .none
        policy.initialDelay = .milliseconds(500)
        policy.multiplier = 3
        policy.maximumDelay = .seconds(10)
        let delays = (1...6).map { policy.delay(forAttempt: $0, previous: nil, random: 0.5) }
        #expect(
            delays == [
                .milliseconds(500), .milliseconds(1500), .milliseconds(4500), .seconds(10), .seconds(10), .seconds(10),
            ])
        // A huge attempt number saturates instead of overflowing.
        #expect(policy.delay(forAttempt: Int.max, previous: nil, random: 0.5) == .seconds(10))
    }

    @Test("full jitter stays within [0, capped exponential delay] for any attempt and random number")
    func fullJitterBounds() async {
        await propertyCheck(
            count: 2_000,
            input: Gen.int(in: 1...80), Gen.double(in: 0..<1), Gen.int(in: 1...5_000), Gen.double(in: 1...4)
        ) { attempt, random, initialMilliseconds, multiplier in
            var policy = ReconnectPolicy()
            policy.initialDelay = .milliseconds(initialMilliseconds)
            policy.multiplier = multiplier
            policy.maximumDelay = .seconds(30)
            let ceiling = min(30, Double(initialMilliseconds) / 1000 * pow(multiplier, Double(attempt - 1)))
            let delay = policy.delay(forAttempt: attempt, previous: nil, random: random).secondsAsDouble
            #expect(delay >= 0 && delay <= ceiling * (1 + 1e-9), "attempt \(attempt): \(delay) s, ceiling \(ceiling) s")
            // The spread is real: the delay is `random` of the way to the ceiling.
            #expect(abs(delay - ceiling * random) <= ceiling * 1e-9 + 1e-9)
        }
    }

    @Test("decorrelated jitter stays within [initial, maximum] and grows at most by the multiplier")
    func decorrelatedBounds() async {
        await propertyCheck(
            count: 2_000, input: Gen.double(in: 0..<1), Gen.int(in: 0...60_000), Gen.double(in: 1...4)
        ) { random, previousMilliseconds, multiplier in
            var policy = ReconnectPolicy()
            policy.jitter = .decorrelated
            policy.initialDelay = .seconds(1)
            policy.maximumDelay = .seconds(30)
            policy.multiplier = multiplier
            let previous = Duration.milliseconds(previousMilliseconds)
            let delay = policy.delay(forAttempt: 2, previous: previous, random: random).secondsAsDouble
            let upper = max(previous.secondsAsDouble * multiplier, 1)
            #expect(delay >= 1 - 1e-9 && delay <= 30 + 1e-9, "\(delay)")
            #expect(delay <= upper + 1e-9, "\(delay) > \(upper)")
        }
    }
}

/// `pow` without Foundation.
private func pow(_ base: Double, _ exponent: Double) -> Double {
    var result = 1.0
    var n = Int(exponent)
    while n > 0 {
        result *= base
        n -= 1
        if result > 1e300 { return .infinity }
    }
    return result
}
