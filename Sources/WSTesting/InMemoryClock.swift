import Synchronization
import WSCore

/// The virtual clock of an ``InMemoryEngine``: the session's timers (open timeout, ping interval, pong timeout,
/// close timeout) run on it, and time only moves when a test calls ``advance(by:)``.
///
/// ```swift
/// let engine = InMemoryEngine()
/// // ... open a session with a ping interval of 10 s ...
/// await engine.clock.advance(by: .seconds(10))      // the ping timer fires: the ping is on the wire
/// let ping = try await server.receive()
/// ```
///
/// ``advance(by:)`` fires the due timers one at a time, in deadline order, and after each one waits until every
/// transport event it caused (bytes, drain and close events for the client) has been delivered, so that a timer
/// scheduled by a timer's action (a ping's pong timeout) is seen at the right virtual time. Each engine has its own
/// clock unless you pass one to several engines.
public final class InMemoryClock: Sendable {
    /// A scheduled timer.
    private struct Entry {
        let deadline: Duration
        let fire: @Sendable () -> Void
    }

    private struct State {
        var now: Duration = .zero
        var nextID: UInt64 = 0
        var timers: [UInt64: Entry] = [:]
        /// Connections whose event delivery is running: the clock is idle when this is 0.
        var busy = 0
        var idleWaiters: [CheckedContinuation<Void, Never>] = []
        var timerWaiters: [(count: Int, continuation: CheckedContinuation<Void, Never>)] = []
    }

    private let state = Mutex(State())

    /// Creates a clock at time zero with no timers.
    public init() {}

    /// The virtual time elapsed since the clock was created.
    public var now: Duration { self.state.withLock { $0.now } }

    /// The number of timers scheduled and not yet fired or cancelled.
    public var pendingTimerCount: Int { self.state.withLock { $0.timers.count } }

    /// The virtual time at which the next timer is due, or `nil` when no timer is scheduled.
    public var nextDeadline: Duration? { self.state.withLock { $0.timers.values.map(\.deadline).min() } }

    /// Moves time forward by `duration`, firing every timer that falls due on the way.
    ///
    /// Timers fire one at a time in deadline order (in scheduling order for equal deadlines); time stands at a
    /// timer's deadline while its action runs, so a timer it schedules is due relative to that moment and fires
    /// within this call if it falls due before the end. Before each timer and before returning, the call waits
    /// until the engine has delivered every event already caused (see ``idle()``). Call it from one task at a time.
    /// - Parameter duration: How far to move; zero just fires the timers already due.
    public func advance(by duration: Duration) async {
        let target = self.state.withLock { $0.now + max(duration, .zero) }
        await self.advance(to: target)
    }

    /// Moves time forward to `instant` (a time since the clock was created), firing the timers due on the way, as
    /// ``advance(by:)`` does. Does nothing but wait for ``idle()`` when `instant` is not after ``now``.
    /// - Parameter instant: The virtual time to reach.
    public func advance(to instant: Duration) async {
        while true {
            await self.idle()
            let fire = self.state.withLock { s -> (@Sendable () -> Void)? in
                let due = s.timers.filter { $0.value.deadline <= instant }
                guard let (id, entry) = due.min(by: { ($0.value.deadline, $0.key) < ($1.value.deadline, $1.key) })
                else {
                    s.now = max(s.now, instant)
                    return nil
                }
                s.timers[id] = nil
                s.now = max(s.now, entry.deadline)
                return entry.fire
            }
            guard let fire else { break }
            fire()
        }
        await self.idle()
    }

    /// Waits until no in-memory connection on this clock has an event left to deliver to its client: every byte the
    /// server side sent has reached the client's session (unless the client paused reading), and every timer
    /// action, drain and close report has run. It does not wait for tasks of your own, such as a task that
    /// awaits a message and then replies; wait for what they do instead (e.g. with
    /// ``InMemoryServerConnection/receive()``).
    public func idle() async {
        await withCheckedContinuation { (continuation: CheckedContinuation<Void, Never>) in
            let now = self.state.withLock { s -> Bool in
                if s.busy == 0 { return true }
                s.idleWaiters.append(continuation)
                return false
            }
            if now { continuation.resume() }
        }
    }

    /// Waits until at least `count` timers are scheduled. For a timer that a task of yours causes: after
    /// `session.close()` has sent its close frame (the server has received it), the client starts its close timer
    /// right after, on the closing task; wait for it before advancing past the close timeout.
    /// - Parameter count: How many timers must be pending.
    public func waitForPendingTimers(_ count: Int = 1) async {
        await withCheckedContinuation { (continuation: CheckedContinuation<Void, Never>) in
            let now = self.state.withLock { s -> Bool in
                if s.timers.count >= count { return true }
                s.timerWaiters.append((count, continuation))
                return false
            }
            if now { continuation.resume() }
        }
    }

    // MARK: For the engine

    /// Schedules `fire` at `delay` from now; returns the timer's id.
    func schedule(after delay: Duration, _ fire: @escaping @Sendable () -> Void) -> UInt64 {
        let (id, ready) = self.state.withLock { s -> (UInt64, [CheckedContinuation<Void, Never>]) in
            s.nextID += 1
            s.timers[s.nextID] = Entry(deadline: s.now + max(delay, .zero), fire: fire)
            let count = s.timers.count
            let ready = s.timerWaiters.filter { $0.count <= count }.map(\.continuation)
            s.timerWaiters.removeAll { $0.count <= count }
            return (s.nextID, ready)
        }
        for continuation in ready { continuation.resume() }
        return id
    }

    /// Removes a timer that has not fired.
    func remove(_ id: UInt64) {
        _ = self.state.withLock { $0.timers.removeValue(forKey: id) }
    }

    /// A connection starts delivering events.
    func beginActivity() {
        self.state.withLock { $0.busy += 1 }
    }

    /// A connection has delivered every event it had.
    func endActivity() {
        let waiters = self.state.withLock { s -> [CheckedContinuation<Void, Never>] in
            s.busy -= 1
            guard s.busy == 0 else { return [] }
            defer { s.idleWaiters = [] }
            return s.idleWaiters
        }
        for waiter in waiters { waiter.resume() }
    }
}

/// A timer of an in-memory transport, on its engine's ``InMemoryClock``.
final class InMemoryTimer: WebSocketTransportTimer {
    private let clock: InMemoryClock
    private let id = Mutex<UInt64>(0)
    private let cancelled = Atomic<Bool>(false)

    /// Schedules `action` on `clock` after `delay`; when it falls due, `enqueue` hands it to the connection's
    /// serial event delivery.
    init(
        clock: InMemoryClock, after delay: Duration, action: @escaping @Sendable () -> Void,
        enqueue: @escaping @Sendable (InMemoryTimer, @escaping @Sendable () -> Void) -> Void
    ) {
        self.clock = clock
        let id = clock.schedule(after: delay) { [self] in enqueue(self, action) }
        self.id.withLock { $0 = id }
    }

    /// Whether ``cancel()`` was called.
    var isCancelled: Bool { self.cancelled.load(ordering: .acquiring) }

    func cancel() {
        self.cancelled.store(true, ordering: .releasing)
        self.clock.remove(self.id.withLock { $0 })
    }
}
