import Synchronization

extension InMemoryClock {
    /// This virtual clock as a Swift `Clock`, for APIs that take one, such as a reconnecting session's backoff
    /// (`ReconnectingWebSocketSession.Configuration.clock`): its sleeps end only when the test advances the clock.
    ///
    /// ```swift
    /// let engine = InMemoryEngine()
    /// var configuration = ReconnectingWebSocketSession.Configuration()
    /// configuration.clock = engine.clock.swiftClock
    /// // ... the server drops the connection: the session waits its backoff delay on the virtual clock ...
    /// await engine.clock.waitForPendingTimers()
    /// await engine.clock.advance(by: .seconds(1))
    /// ```
    public var swiftClock: SwiftClock { SwiftClock(clock: self) }

    /// An ``InMemoryClock`` as a Swift `Clock`; see ``InMemoryClock/swiftClock``.
    public struct SwiftClock: Clock {
        /// A point in virtual time: the time since the clock was created.
        public struct Instant: InstantProtocol {
            /// The virtual time since the clock was created.
            public var offset: Duration

            /// Creates an instant at `offset` from the clock's creation.
            /// - Parameter offset: The virtual time since the clock was created.
            public init(offset: Duration) { self.offset = offset }

            /// The instant `duration` later.
            /// - Parameter duration: How much later.
            public func advanced(by duration: Duration) -> Instant { Instant(offset: self.offset + duration) }

            /// The time from this instant to `other`.
            /// - Parameter other: The other instant.
            public func duration(to other: Instant) -> Duration { other.offset - self.offset }

            /// Whether `a` is earlier than `b`.
            public static func < (a: Instant, b: Instant) -> Bool { a.offset < b.offset }
        }

        /// The virtual clock.
        public let clock: InMemoryClock

        /// The virtual time now.
        public var now: Instant { Instant(offset: self.clock.now) }

        /// One nanosecond.
        public var minimumResolution: Duration { .nanoseconds(1) }

        /// Suspends until the test advances the clock to `deadline` (returns at once if it is not in the future).
        /// The sleep is one of the clock's pending timers while it lasts.
        /// - Parameters:
        ///   - deadline: When to wake up.
        ///   - tolerance: Ignored.
        /// - Throws: `CancellationError` when the task is cancelled first.
        public func sleep(until deadline: Instant, tolerance: Duration?) async throws {
            let delay = deadline.offset - self.clock.now
            guard delay > .zero else { return }
            let sleeper = Sleeper()
            try await withTaskCancellationHandler {
                try await withCheckedThrowingContinuation { (continuation: CheckedContinuation<Void, any Error>) in
                    sleeper.begin(continuation)
                    let id = self.clock.schedule(after: delay) { sleeper.end(nil) }
                    if !sleeper.setTimer(id) { self.clock.remove(id) }
                }
            } onCancel: {
                if let id = sleeper.end(CancellationError()) { self.clock.remove(id) }
            }
        }
    }
}

/// One sleep of ``InMemoryClock/SwiftClock``: resumed once, by its timer or by cancellation, whichever comes first.
private final class Sleeper: Sendable {
    private struct State {
        var continuation: CheckedContinuation<Void, any Error>?
        var timer: UInt64?
        var ended: (any Error)??
    }
    private let state = Mutex(State())

    /// The continuation to resume; resumed at once if the sleep was cancelled before.
    func begin(_ continuation: CheckedContinuation<Void, any Error>) {
        let ended = self.state.withLock { s -> (any Error)?? in
            if let ended = s.ended { return .some(ended) }
            s.continuation = continuation
            return nil
        }
        if let ended { continuation.resume(with: ended.map { Result.failure($0) } ?? .success(())) }
    }

    /// Records the timer; `false` when the sleep has ended already (the caller removes the timer).
    func setTimer(_ id: UInt64) -> Bool {
        self.state.withLock { s in
            guard s.ended == nil else { return false }
            s.timer = id
            return true
        }
    }

    /// Ends the sleep (with `error` when cancelled); returns the timer to remove, if any. Later calls do nothing.
    @discardableResult
    func end(_ error: (any Error)?) -> UInt64? {
        let (continuation, timer) = self.state.withLock { s -> (CheckedContinuation<Void, any Error>?, UInt64?) in
            guard s.ended == nil else { return (nil, nil) }
            s.ended = .some(error)
            defer {
                s.continuation = nil
                s.timer = nil
            }
            return (s.continuation, s.timer)
        }
        continuation?.resume(with: error.map { Result.failure($0) } ?? .success(()))
        return timer
    }
}
