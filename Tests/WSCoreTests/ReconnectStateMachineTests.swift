import PropertyBased
import Testing

@testable import WSCore

/// The reconnect state machine, driven event by event with explicit instants and random numbers: the state sequence,
/// the backoff, the limits, stability, and closing from every phase.
@Suite("Reconnect state machine")
struct ReconnectStateMachineTests {
    private typealias Machine = ReconnectStateMachine
    private typealias Moment = ReconnectStateMachine.Moment

    /// A policy without jitter, so delays are exact: 1 s, 2 s, 4 s, 8 s, capped at 8 s.
    private static func policy(_ edit: (inout ReconnectPolicy) -> Void = { _ in }) -> ReconnectPolicy {
        var policy = ReconnectPolicy()
        policy.jitter = .none
        policy.initialDelay = .seconds(1)
        policy.maximumDelay = .seconds(8)
        policy.stableAfter = .seconds(10)
        edit(&policy)
        return policy
    }

    private static func at(_ seconds: Double, random: Double = 0.5, unixTime: Int64? = nil) -> Moment {
        Moment(now: .seconds(seconds), random: random, unixTime: unixTime)
    }

    /// The actions as short strings (actions hold errors and are not `Equatable`).
    private static func describe(_ actions: [Machine.Action]) -> [String] {
        actions.map { action in
            switch action {
            case .deliverState(let state): "state \(Self.describe(state))"
            case .connect(let attempt): "connect \(attempt)"
            case .runHook: "runHook"
            case .flushQueue: "flushQueue"
            case .wait(let delay): "wait \(delay.secondsAsDouble)"
            case .closeConnection(let reason): "closeConnection \(reason.code.rawValue)"
            case .cancelPending: "cancelPending"
            case .finish(let cause): "finish \(Self.describe(cause))"
            }
        }
    }

    private static func describe(_ state: ReconnectingWebSocketSession.State) -> String {
        switch state {
        case .connecting: "connecting"
        case .open: "open"
        case .reconnecting(let attempt, let delay, let cause):
            "reconnecting \(attempt) \(delay.secondsAsDouble) \(describe(cause))"
        case .closed(let cause): "closed \(describe(cause))"
        }
    }

    private static func describe(_ cause: ReconnectingWebSocketSession.Cause) -> String {
        switch cause {
        case .failure(let error as WebSocketError): "failure \(error.code)\(error.status.map { " \($0)" } ?? "")"
        case .failure(let error): "failure \(type(of: error))"
        case .closed(let reason): "closed \(reason.code.rawValue)"
        case .closedByClient(let reason): "byClient \(reason.code.rawValue)"
        }
    }

    private static let refused = WebSocketError(.connectionRefused, "refused")

    /// A machine whose first connection is open at `openedAt`.
    private static func openMachine(_ policy: ReconnectPolicy = policy(), openedAt: Double = 0) -> Machine {
        var machine = Machine(policy: policy)
        _ = machine.start(at: at(0))
        _ = machine.connected(subprotocol: "chat", extensions: [], at: at(openedAt))
        _ = machine.hookSucceeded(at: at(openedAt))
        return machine
    }

    @Test("first connection: connecting, connect, hook, then open and flush")
    func firstConnection() {
        var machine = Machine(policy: Self.policy())
        #expect(Self.describe(machine.start(at: Self.at(0))) == ["state connecting", "connect 0"])
        #expect(machine.start(at: Self.at(0)).isEmpty)  // only once
        #expect(Self.describe(machine.connected(subprotocol: "chat", extensions: [], at: Self.at(0.1))) == ["runHook"])
        #expect(Self.describe(machine.hookSucceeded(at: Self.at(0.2))) == ["state open", "flushQueue"])
        guard case .open(let subprotocol, _) = machine.state else {
            Issue.record("not open: \(machine.state)")
            return
        }
        #expect(subprotocol == "chat")
    }

    @Test("a dropped connection is retried with exponential delays, attempts counting up, until it reconnects")
    func backoffSequence() {
        var machine = Self.openMachine()
        #expect(
            Self.describe(machine.connectionClosed(CloseReason(code: .abnormalClosure), at: Self.at(20)))
                == ["state reconnecting 1 1.0 closed 1006", "wait 1.0"])
        var now = 21.0
        var log: [String] = []
        for _ in 1...5 {
            log += Self.describe(machine.backoffElapsed(at: Self.at(now)))
            log += Self.describe(machine.failed(Self.refused, at: Self.at(now + 0.1)))
            now += 10
        }
        #expect(
            log == [
                "connect 1", "state reconnecting 2 2.0 failure connectionRefused", "wait 2.0",
                "connect 2", "state reconnecting 3 4.0 failure connectionRefused", "wait 4.0",
                "connect 3", "state reconnecting 4 8.0 failure connectionRefused", "wait 8.0",
                "connect 4", "state reconnecting 5 8.0 failure connectionRefused", "wait 8.0",
                "connect 5", "state reconnecting 6 8.0 failure connectionRefused", "wait 8.0",
            ])
        #expect(Self.describe(machine.backoffElapsed(at: Self.at(now))) == ["connect 6"])
        #expect(Self.describe(machine.connected(subprotocol: nil, extensions: [], at: Self.at(now))) == ["runHook"])
        #expect(Self.describe(machine.hookSucceeded(at: Self.at(now))) == ["state open", "flushQueue"])
    }

    @Test("a connection that stayed up for stableAfter resets the backoff; a shorter one continues it")
    func stability() {
        var machine = Self.openMachine()
        _ = machine.connectionClosed(CloseReason(code: .abnormalClosure), at: Self.at(20))
        _ = machine.backoffElapsed(at: Self.at(21))
        _ = machine.failed(Self.refused, at: Self.at(21))  // attempt 2 waits 2 s
        _ = machine.backoffElapsed(at: Self.at(23))
        _ = machine.connected(subprotocol: nil, extensions: [], at: Self.at(23))
        _ = machine.hookSucceeded(at: Self.at(23))
        // Up for 9.9 s < 10 s: not stable, the next attempt is 3 (4 s).
        #expect(
            Self.describe(machine.connectionClosed(CloseReason(code: .serviceRestart), at: Self.at(32.9)))
                == ["state reconnecting 3 4.0 closed 1012", "wait 4.0"])
        _ = machine.backoffElapsed(at: Self.at(37))
        _ = machine.connected(subprotocol: nil, extensions: [], at: Self.at(37))
        _ = machine.hookSucceeded(at: Self.at(37))
        // Up for exactly 10 s: stable, a new outage starts at attempt 1.
        #expect(
            Self.describe(machine.connectionClosed(CloseReason(code: .goingAway), at: Self.at(47)))
                == ["state reconnecting 1 1.0 closed 1001", "wait 1.0"])
    }

    @Test("failures the policy does not retry end the session with their cause")
    func notRetried() {
        var machine = Self.openMachine()
        #expect(
            Self.describe(machine.connectionClosed(CloseReason(code: .policyViolation), at: Self.at(5)))
                == ["state closed closed 1008", "finish closed 1008"])
        #expect(machine.isClosed)
        var rejected = Machine(policy: Self.policy())
        _ = rejected.start(at: Self.at(0))
        let unauthorized = WebSocketError(.upgradeRejected, "no", status: 401)
        #expect(
            Self.describe(rejected.failed(unauthorized, at: Self.at(0.1)))
                == ["state closed failure upgradeRejected 401", "finish failure upgradeRejected 401"])
    }

    @Test("the attempt limit ends the session with the last failure")
    func attemptLimit() {
        var machine = Self.openMachine(Self.policy { $0.maxAttempts = 2 })
        _ = machine.connectionClosed(CloseReason(code: .abnormalClosure), at: Self.at(20))
        _ = machine.backoffElapsed(at: Self.at(21))
        #expect(
            Self.describe(machine.failed(Self.refused, at: Self.at(21))) == [
                "state reconnecting 2 2.0 failure connectionRefused", "wait 2.0",
            ])
        _ = machine.backoffElapsed(at: Self.at(23))
        let timedOut = WebSocketError(.timedOut, "slow")
        #expect(
            Self.describe(machine.failed(timedOut, at: Self.at(24)))
                == ["state closed failure timedOut", "finish failure timedOut"])
        var never = Self.openMachine(Self.policy { $0.maxAttempts = 0 })
        #expect(
            Self.describe(never.connectionClosed(CloseReason(code: .abnormalClosure), at: Self.at(20))) == [
                "state closed closed 1006", "finish closed 1006",
            ])
    }

    @Test("the elapsed-time limit: no attempt starts later than maxElapsedTime after the connection was lost")
    func elapsedLimit() {
        var machine = Self.openMachine(Self.policy { $0.maxElapsedTime = .seconds(10) })
        _ = machine.connectionClosed(CloseReason(code: .abnormalClosure), at: Self.at(100))  // 1 s: at 101
        _ = machine.backoffElapsed(at: Self.at(101))
        _ = machine.failed(Self.refused, at: Self.at(101))  // 2 s: at 103
        _ = machine.backoffElapsed(at: Self.at(103))
        _ = machine.failed(Self.refused, at: Self.at(104))  // 4 s: at 108, within 10 s of 100
        _ = machine.backoffElapsed(at: Self.at(108))
        // 8 s more would start at 117, past 110.
        #expect(
            Self.describe(machine.failed(Self.refused, at: Self.at(109))) == [
                "state closed failure connectionRefused", "finish failure connectionRefused",
            ])
    }

    @Test("Retry-After of a 503 or 429 lengthens the delay, never shortens it")
    func retryAfter() {
        var machine = Machine(policy: Self.policy())
        _ = machine.start(at: Self.at(0))
        let busy = WebSocketError(.upgradeRejected, "busy", status: 503, headers: ["Retry-After": "2"])
        #expect(
            Self.describe(machine.failed(busy, at: Self.at(0))) == [
                "state reconnecting 1 2.0 failure upgradeRejected 503", "wait 2.0",
            ])
        _ = machine.backoffElapsed(at: Self.at(2))
        _ = machine.backoffElapsed(at: Self.at(2))
        let tooMany = WebSocketError(.upgradeRejected, "slow down", status: 429, headers: ["Retry-After": "1"])
        // The backoff (2 s for attempt 2) is longer than Retry-After: it wins.
        #expect(
            Self.describe(machine.failed(tooMany, at: Self.at(3))) == [
                "state reconnecting 2 2.0 failure upgradeRejected 429", "wait 2.0",
            ])
        // An HTTP-date, turned into a delay with the wall clock the event carries.
        var dated = Machine(policy: Self.policy())
        _ = dated.start(at: Self.at(0))
        let later = WebSocketError(
            .upgradeRejected, "busy", status: 503, headers: ["Retry-After": "Sun, 06 Nov 1994 08:49:37 GMT"])
        #expect(
            Self.describe(dated.failed(later, at: Self.at(0, unixTime: 784_111_767))) == [
                "state reconnecting 1 10.0 failure upgradeRejected 503", "wait 10.0",
            ])
    }

    @Test("the user's predicate overrides the default in both directions")
    func predicate() {
        var retryAppCode = Self.openMachine(
            Self.policy { $0.shouldRetry = { cause, byDefault in cause.closeCode?.rawValue == 4000 || byDefault } })
        #expect(
            Self.describe(retryAppCode.connectionClosed(CloseReason(code: 4000), at: Self.at(5))) == [
                "state reconnecting 1 1.0 closed 4000", "wait 1.0",
            ])
        var neverRestart = Self.openMachine(
            Self.policy { $0.shouldRetry = { cause, byDefault in cause.closeCode != .serviceRestart && byDefault } })
        #expect(
            Self.describe(neverRestart.connectionClosed(CloseReason(code: .serviceRestart), at: Self.at(5))) == [
                "state closed closed 1012", "finish closed 1012",
            ])
    }

    @Test("full jitter makes the first delay after a drop random between zero and the initial delay")
    func randomFirstDelay() {
        var machine = Self.openMachine(
            Self.policy {
                $0.jitter = .full
                $0.initialDelay = .seconds(4)
            })
        #expect(
            Self.describe(machine.connectionClosed(CloseReason(code: .abnormalClosure), at: Self.at(20, random: 0.25)))
                == [
                    "state reconnecting 1 1.0 closed 1006", "wait 1.0",
                ])
    }

    @Test("a hook that throws closes the connection (1011); its error is judged by the policy")
    func hookFailure() {
        struct NotAuthorized: Error {}
        var machine = Machine(policy: Self.policy())
        _ = machine.start(at: Self.at(0))
        _ = machine.connected(subprotocol: nil, extensions: [], at: Self.at(0))
        #expect(
            Self.describe(machine.hookFailed(NotAuthorized(), at: Self.at(0.5))) == [
                "closeConnection 1011", "state closed failure NotAuthorized", "finish failure NotAuthorized",
            ])
        var lost = Machine(policy: Self.policy())
        _ = lost.start(at: Self.at(0))
        _ = lost.connected(subprotocol: nil, extensions: [], at: Self.at(0))
        #expect(
            Self.describe(lost.hookFailed(WebSocketError(.connectionLost, "gone"), at: Self.at(0.5))) == [
                "closeConnection 1011", "state reconnecting 1 1.0 failure connectionLost", "wait 1.0",
            ])
    }

    // MARK: Closing from every phase

    @Test("close while waiting: stops at once, and nothing reconnects afterwards")
    func closeWhileWaiting() {
        var machine = Self.openMachine()
        _ = machine.connectionClosed(CloseReason(code: .abnormalClosure), at: Self.at(20))
        #expect(
            Self.describe(machine.closeRequested(CloseReason(code: .normal))) == [
                "cancelPending", "state closed byClient 1000", "finish byClient 1000",
            ])
        #expect(machine.backoffElapsed(at: Self.at(21)).isEmpty)
        #expect(machine.closeRequested(CloseReason(code: .normal)).isEmpty)
    }

    @Test("close while connecting: stops at once; a connection that arrives anyway is closed")
    func closeWhileConnecting() {
        var machine = Machine(policy: Self.policy())
        _ = machine.start(at: Self.at(0))
        #expect(
            Self.describe(machine.closeRequested(CloseReason(code: .goingAway))) == [
                "cancelPending", "state closed byClient 1001", "finish byClient 1001",
            ])
        #expect(
            Self.describe(machine.connected(subprotocol: nil, extensions: [], at: Self.at(1))) == [
                "closeConnection 1001"
            ])
        #expect(machine.failed(Self.refused, at: Self.at(1)).isEmpty)
    }

    @Test("close while open or in the hook: the connection's close handshake, then closed")
    func closeWithConnection() {
        var machine = Self.openMachine()
        #expect(Self.describe(machine.closeRequested(CloseReason(code: .normal))) == ["closeConnection 1000"])
        #expect(
            Self.describe(machine.connectionClosed(CloseReason(code: .normal), at: Self.at(1))) == [
                "state closed byClient 1000", "finish byClient 1000",
            ])
        var hooked = Machine(policy: Self.policy())
        _ = hooked.start(at: Self.at(0))
        _ = hooked.connected(subprotocol: nil, extensions: [], at: Self.at(0))
        #expect(
            Self.describe(hooked.closeRequested(CloseReason(code: .normal))) == [
                "cancelPending", "closeConnection 1000",
            ])
        #expect(hooked.hookSucceeded(at: Self.at(1)).isEmpty)
        #expect(
            Self.describe(hooked.connectionClosed(CloseReason(code: .normal), at: Self.at(1))) == [
                "state closed byClient 1000", "finish byClient 1000",
            ])
    }

    // MARK: Properties

    @Test("invariants hold for any sequence of events")
    func invariants() async {
        await propertyCheck(
            count: 1_000, input: Gen.int(in: 0..<9).array(of: 1...80), Gen.double(in: 0..<1).array(of: 80)
        ) { events, randoms in
            Self.run(events, randoms)
        }
    }

    /// Feeds `events` as a driver might (any order, including ones a driver would not send), checking after each
    /// event: nothing but `closeConnection` once closed, exactly one finish right after the closed state, delays
    /// within the policy's bounds, attempts within the limit, open only after a connection and its hook.
    private static func run(_ events: [Int], _ randoms: [Double]) {
        let policy = Self.policy {
            $0.jitter = .full
            $0.maxAttempts = 4
            $0.maximumDelay = .seconds(8)
        }
        var machine = Machine(policy: policy)
        var now = 0.0
        var finished = 0
        var closedDelivered = false
        var connectedSinceLastConnect = false
        for (index, event) in events.enumerated() {
            now += 0.7
            let moment = Self.at(now, random: randoms[index % randoms.count])
            let before = machine.phase
            let actions: [Machine.Action]
            switch event {
            case 0: actions = machine.start(at: moment)
            case 1: actions = machine.connected(subprotocol: nil, extensions: [], at: moment)
            case 2: actions = machine.failed(Self.refused, at: moment)
            case 3: actions = machine.hookSucceeded(at: moment)
            case 4: actions = machine.hookFailed(WebSocketError(.connectionLost, "x"), at: moment)
            case 5: actions = machine.connectionClosed(CloseReason(code: .abnormalClosure), at: moment)
            case 6: actions = machine.backoffElapsed(at: moment)
            case 7: actions = machine.connectionClosed(CloseReason(code: .policyViolation), at: moment)
            default: actions = machine.closeRequested(CloseReason(code: .normal))
            }
            if before == .closed {
                #expect(
                    actions.allSatisfy { if case .closeConnection = $0 { true } else { false } }, "acted after closed")
            }
            for (position, action) in actions.enumerated() {
                switch action {
                case .connect:
                    connectedSinceLastConnect = false
                case .runHook:
                    connectedSinceLastConnect = true
                case .deliverState(.open):
                    #expect(connectedSinceLastConnect, "open without a connection and its hook")
                case .deliverState(.reconnecting(let attempt, let delay, _)):
                    #expect(attempt >= 1 && attempt <= 4, "attempt \(attempt)")
                    #expect(delay >= .zero && delay <= .seconds(8), "delay \(delay)")
                case .deliverState(.closed):
                    #expect(!closedDelivered, "closed twice")
                    closedDelivered = true
                    guard position + 1 < actions.count, case .finish = actions[position + 1] else {
                        Issue.record("closed without finish right after")
                        break
                    }
                case .finish:
                    finished += 1
                case .wait(let delay):
                    #expect(delay >= .zero && delay <= .seconds(8))
                default:
                    break
                }
            }
            #expect(finished <= 1, "finished twice")
            #expect(machine.isClosed == (finished == 1), "closed and finish disagree")
            #expect(machine.isClosed == machine.state.isClosed)
        }
    }
}
