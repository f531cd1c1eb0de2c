package import CWSLinux
// The epoll machinery both engines share: one loop thread with an eventfd for wakeups, a Mutex-protected task
// queue, a timer heap, one reusable read buffer, a thin epoll_ctl wrapper and a graveyard that keeps removed
// registrants alive until the event batch that may still point to them ends.
// What differs per engine stays in the engine, behind ``EventLoopDispatcher``: how an event's data finds its
// registrant, and how it fails them when it stops. The CIO engine registers sockets edge-triggered once; the Curl
// engine level-triggered with an interest set that changes; both through `PosixEventLoop.epollControl`.
import Glibc
import Synchronization

/// Work handed to a loop from any thread.
@usableFromInline package typealias LoopTask = @Sendable () -> Void

/// A one-shot timer on a loop's timer heap. A timer from ``PosixEventLoop/schedule(afterNanoseconds:_:)`` is cancelled
/// on the loop thread; one from ``PosixEventLoop/scheduleFromAnyThread(after:_:)`` (a session timer of both engines)
/// from any thread. Cancelling releases the action (and what it captured) at once and is counted, so the loop drops
/// cancelled entries from its heap once they are half of it (sessions that open and close in a burst would otherwise
/// leave an open and a close timeout each on the heap until their deadlines, and libcurl replaces its timer on every
/// call).
@usableFromInline package final class LoopTimer: @unchecked Sendable {  // `action` is a Mutex; the rest immutable
    /// When the timer fires (monotonic nanoseconds).
    let deadline: UInt64
    /// Tie-breaker: timers with the same deadline fire in scheduling order.
    let sequence: UInt64
    /// The action; `nil` once fired or cancelled. A loop-thread timer's action is not Sendable: it is only run and
    /// released on the loop thread, where such a timer is cancelled.
    private let action: Mutex<Action?>
    /// The loop's count of cancelled timers.
    private let cancellations: TimerCancellations

    init(deadline: UInt64, sequence: UInt64, cancellations: TimerCancellations, action: @escaping () -> Void) {
        self.deadline = deadline
        self.sequence = sequence
        self.cancellations = cancellations
        self.action = Mutex(Action(run: action))
    }

    /// The action of a timer; called only on the loop thread (a loop-thread timer's action is not Sendable, and is
    /// released from another thread only when a shared timer, whose action is Sendable, is cancelled there).
    private struct Action: @unchecked Sendable {  // run only on the owning loop's thread (see above)
        let run: () -> Void
    }

    /// Stops the timer from firing, releases its action and counts it for the heap's compaction (on the loop
    /// thread, or any thread for a timer from ``PosixEventLoop/scheduleFromAnyThread(after:_:)``).
    @usableFromInline package func cancel() {
        if self.action.withLock({ $0.takeValue() }) != nil { self.cancellations.count.add(1, ordering: .relaxed) }
    }

    /// Whether the timer will do nothing when it comes due.
    var isDead: Bool { self.action.withLock { $0 == nil } }

    /// Runs the action unless it was cancelled or already ran (loop thread).
    func fire() { self.action.withLock { $0.takeValue() }?.run() }

    func fires(before other: LoopTimer) -> Bool {
        self.deadline != other.deadline ? self.deadline < other.deadline : self.sequence < other.sequence
    }
}

extension Optional {
    /// Returns the value and leaves `nil` behind.
    fileprivate mutating func takeValue() -> Wrapped? {
        let value = self
        self = nil
        return value
    }
}

/// How many of a loop's shared timers were cancelled since its heap was last compacted (any thread).
final class TimerCancellations: Sendable {
    let count = Atomic<Int>(0)
}

/// The engine-specific part of a loop: what its registrants are and how events reach them. Every requirement is
/// used on the loop thread only (the metatype is Sendable because the loop thread's closure captures the loop type).
@usableFromInline package protocol EventLoopDispatcher: AnyObject, SendableMetatype {
    /// A pending connect.
    associatedtype Connector: AnyObject
    /// An open connection.
    associatedtype Transport: AnyObject
    /// Why the loop stops: what pending connects and open transports are failed with.
    associatedtype StopReason

    /// The loop's pending connects and open transports, and its stop state.
    var registrants: LoopRegistrants<Connector, Transport, StopReason> { get set }
    /// Delivers one epoll event whose data is not 0 (0 is the loop's wakeup eventfd).
    func handleEvent(data: UInt64, events: UInt32)
    /// Fails a pending connect because the loop stops.
    func fail(_ connector: Connector, stopping reason: StopReason)
    /// Aborts an open transport because the loop stops.
    func finish(_ transport: Transport, stopping reason: StopReason)
    /// Called once on the loop thread when the loop has ended (every connect and transport finished, the last tasks
    /// run), before the loop closes its descriptors: releases what the dispatcher holds for the loop's life.
    func loopDidEnd()
}

extension EventLoopDispatcher {
    /// Nothing to release by default.
    @usableFromInline package func loopDidEnd() {}
}

/// A registrant that gathers what it writes during a loop round and flushes it when the round ends (loop thread only).
@usableFromInline package protocol RoundEndFlushing: AnyObject {
    /// Called once on the loop thread after each ``PosixEventLoop/deferUntilRoundEnds(_:)`` with this object.
    func roundDidEnd()
}

/// A loop's cross-thread work queue (under the loop's Mutex). Declared outside the generic loop class so that the
/// loop's hot paths use concrete types (no generic metadata lookups per call).
private struct LoopTaskQueue {
    var tasks: [LoopTask] = []
    /// Swift-concurrency jobs of tasks that prefer this loop, or a ``WatchedLoopExecutor`` of it, as their executor
    /// (see the TaskExecutor conformance).
    var jobs: [LoopJob] = []
    var wakePending = false
    var closed = false
}

/// A job queued on a loop, and the watched executor it was enqueued on (`nil`: the loop itself).
private struct LoopJob {
    let job: UnownedJob
    let watch: WatchedLoopExecutor?
}

/// The pending connects and open transports of one loop, by identity, and why the loop stops (loop thread only).
///
/// The dictionaries hold `AnyObject` (each value is a `Connector` or a `Transport`, cast back without a check): a
/// dictionary of a concrete type is specialized in this module, where one of the generic parameters would run
/// libswiftCore's unspecialized dictionary code and page it in (W4: Docs/notes/performance-history.md, 2026-12-08).
@usableFromInline package struct LoopRegistrants<Connector: AnyObject, Transport: AnyObject, StopReason> {
    fileprivate var connectors: [ObjectIdentifier: AnyObject] = [:]
    fileprivate var transports: [ObjectIdentifier: AnyObject] = [:]
    fileprivate var stopReason: StopReason?

    /// No registrants; not stopping.
    package init() {}
}

/// An epoll loop thread with an eventfd for wakeups, a Mutex-protected task queue, a timer heap and one reusable
/// read buffer; `dispatcher` routes socket events to the engine's registrants.
@usableFromInline
package final class PosixEventLoop<Dispatcher: EventLoopDispatcher>: @unchecked Sendable {  // Mutex + loop-confined
    // Thread rules: `epollFD`, `wakeFD`, `readBuffer`, `readBufferSize`, `name`, `dispatcher` and `writeChunks` (the
    // references) are immutable after init; `tasks` is a Mutex; `threadID` is atomic; `thread` is written once in init; every
    // other field, and the dispatcher's state, is confined to the loop thread.

    /// The epoll instance; closed by the loop thread on exit, after every registrant has finished.
    package let epollFD: Int32
    private let wakeFD: Int32
    /// The one read buffer of this loop: transports read into it and hand it to their handler during the call.
    @usableFromInline package let readBuffer: UnsafeMutableRawPointer
    /// The size of ``readBuffer``.
    @usableFromInline package let readBufferSize: Int
    /// Gathering chunks of drained write queues, reused by the next ones (loop thread only; see ``WriteChunkCache``).
    @usableFromInline package let writeChunks = WriteChunkCache()
    /// The loop's name, for thread names and logs.
    package let name: String
    /// The engine's registrants (their state is loop-thread only).
    package let dispatcher: Dispatcher

    private let tasks = Mutex(LoopTaskQueue())
    /// Orders timers with the same deadline (timers are made on any thread).
    private let timerSequence = Atomic<UInt64>(0)
    private let threadID = Atomic<UInt>(0)
    /// The loop's pthread, for joining.
    package private(set) var thread = pthread_t()

    // Loop thread only:
    private var spareTasks: [LoopTask] = []
    private var spareJobs: [LoopJob] = []
    /// Work to run once the current round of events, timers, tasks and jobs is done: writes that callers on the loop
    /// thread queued, gathered so that every message produced in one round leaves in one system call.
    private var deferred: [any RoundEndFlushing] = []
    private var spareDeferred: [any RoundEndFlushing] = []
    /// Counts the loop's rounds (one per `epoll_wait`): transports send the first write of a round at once and gather
    /// the rest until the round ends.
    @usableFromInline package private(set) var round: UInt = 0
    /// Set with the registrants' stop reason: until then the loop need not look at its registrants to know it goes on.
    private var stopping = false
    /// This loop as the executor its jobs run on (made once on the loop thread; a generic conformance lookup per
    /// round otherwise).
    private lazy var unownedExecutor: UnownedTaskExecutor = self.asUnownedTaskExecutor()
    private var events: UnsafeMutablePointer<epoll_event>
    private var eventCapacity = 64
    private var timers: [LoopTimer] = []
    private let timerCancellations = TimerCancellations()
    /// Registrants removed during the current batch; kept alive until it ends because the batch may still hold
    /// events that point to them.
    private var graveyard: [AnyObject] = []

    /// Creates the loop and starts its thread.
    /// - Throws: The failed call when the process is out of descriptors or threads.
    package init(name: String, readBufferSize: Int, dispatcher: Dispatcher) throws(PosixError) {
        self.name = name
        self.dispatcher = dispatcher
        self.epollFD = epoll_create1(Int32(EPOLL_CLOEXEC))
        guard self.epollFD >= 0 else { throw PosixError("epoll_create1") }
        self.wakeFD = eventfd(0, Int32(EFD_NONBLOCK | EFD_CLOEXEC))
        guard self.wakeFD >= 0 else {
            let error = PosixError("eventfd")
            closeDescriptor(self.epollFD)
            throw error
        }
        var event = epoll_event()
        event.events = EPOLLIN.rawValue
        event.data.u64 = 0
        guard epoll_ctl(self.epollFD, EPOLL_CTL_ADD, self.wakeFD, &event) == 0 else {
            let error = PosixError("epoll_ctl")
            closeDescriptor(self.wakeFD)
            closeDescriptor(self.epollFD)
            throw error
        }
        self.readBufferSize = readBufferSize
        self.readBuffer = .allocate(byteCount: readBufferSize, alignment: 16)
        self.events = .allocate(capacity: self.eventCapacity)
        guard let thread = startThread(name: name, detached: false, { [self] in self.run() }) else {
            let error = PosixError("pthread_create")
            closeDescriptor(self.wakeFD)
            closeDescriptor(self.epollFD)
            throw error
        }
        self.thread = thread
    }

    deinit {
        self.readBuffer.deallocate()
        self.events.deallocate()
    }

    /// Whether the caller runs on this loop's thread.
    @usableFromInline package var inLoop: Bool {
        pthread_equal(pthread_self(), pthread_t(self.threadID.load(ordering: .acquiring))) != 0
    }

    /// Runs `task` on the loop thread, after the current event batch. Callable from any thread.
    /// - Returns: `false` if the loop has stopped and the task will never run.
    @discardableResult
    @usableFromInline package func execute(_ task: @escaping LoopTask) -> Bool {
        self.submit { $0.tasks.append(task) }
    }

    /// Adds work to the queue with `add` (under its lock) and wakes the loop if the caller is another thread.
    /// - Returns: `false` if the loop has stopped (nothing was added).
    private func submit(_ add: (inout LoopTaskQueue) -> Void) -> Bool {
        let onLoop = self.inLoop
        let (accepted, wake) = self.tasks.withLock { queue -> (Bool, Bool) in
            guard !queue.closed else { return (false, false) }
            add(&queue)
            guard !onLoop, !queue.wakePending else { return (true, false) }
            queue.wakePending = true
            return (true, true)
        }
        if wake {
            var one: UInt64 = 1
            _ = Glibc.write(self.wakeFD, &one, 8)
        }
        return accepted
    }

    // MARK: epoll registration

    /// `epoll_ctl(op, fd)` with `events` and `data` (never 0, which is the wakeup eventfd).
    /// - Returns: 0, or the `errno` of the failed call.
    package func epollControl(_ operation: Int32, fd: Int32, events: UInt32, data: UInt64) -> Int32 {
        var event = epoll_event()
        event.events = events
        event.data.u64 = data
        return epoll_ctl(self.epollFD, operation, fd, &event) == 0 ? 0 : errno
    }

    /// Runs `action` on the loop after `delay`, unless the returned handle is cancelled first. Callable from any
    /// thread (from another thread the timer is put on the heap by a loop task). Transports return it from
    /// `WebSocketTransport.schedule(after:_:)`.
    package func scheduleFromAnyThread(after delay: Duration, _ action: @escaping @Sendable () -> Void)
        -> LoopTimer
    {
        let timer = self.makeTimer(afterNanoseconds: delay.clampedNanoseconds, action)
        if self.inLoop {
            self.insert(timer)
        } else {
            self.execute { [self] in self.insert(timer) }
        }
        return timer
    }

    /// Calls `flusher.roundDidEnd()` on the loop thread after the current round of events, timers, tasks and jobs,
    /// before the loop waits again (loop thread only). Transports use it to gather the writes of one round into one
    /// system call; the caller defers itself once per round (no allocation per call).
    @usableFromInline package func deferUntilRoundEnds(_ flusher: any RoundEndFlushing) {
        self.deferred.append(flusher)
    }

    /// Keeps `object` (a removed registrant) alive until the current event batch ends (loop thread).
    package func retire(_ object: AnyObject) { self.graveyard.append(object) }

    // MARK: Registrants and stopping (loop thread, except initiateStop)

    /// Adds a pending connect.
    package func add(_ connector: Dispatcher.Connector) {
        self.dispatcher.registrants.connectors[ObjectIdentifier(connector)] = connector
    }
    /// Removes a pending connect (kept alive until the batch ends).
    package func remove(_ connector: Dispatcher.Connector) {
        if let removed = self.dispatcher.registrants.connectors.removeValue(forKey: ObjectIdentifier(connector)) {
            self.retire(removed)
        }
    }
    /// Adds an open transport.
    package func add(_ transport: Dispatcher.Transport) {
        self.dispatcher.registrants.transports[ObjectIdentifier(transport)] = transport
    }
    /// Removes a transport (kept alive until the batch ends).
    @usableFromInline package func remove(_ transport: Dispatcher.Transport) {
        if let removed = self.dispatcher.registrants.transports.removeValue(forKey: ObjectIdentifier(transport)) {
            self.retire(removed)
        }
    }

    /// The number of open transports and pending connects on this loop (for tests and logs).
    package var registrantCount: Int {
        self.dispatcher.registrants.transports.count + self.dispatcher.registrants.connectors.count
    }

    /// Why the loop is stopping, once it is; new connects fail with this.
    package var stopReason: Dispatcher.StopReason? { self.dispatcher.registrants.stopReason }

    /// Asks the loop to fail every pending connect, then abort every transport, with `error`, and exit once they
    /// have finished. Callable from any thread; only the first call counts.
    package func initiateStop(error: Dispatcher.StopReason) where Dispatcher.StopReason: Sendable {
        self.execute { [self] in
            guard self.dispatcher.registrants.stopReason == nil else { return }
            self.dispatcher.registrants.stopReason = error
            self.stopping = true
            for connector in Array(self.dispatcher.registrants.connectors.values) {
                self.dispatcher.fail(unsafeDowncast(connector, to: Dispatcher.Connector.self), stopping: error)
            }
            for transport in Array(self.dispatcher.registrants.transports.values) {
                self.dispatcher.finish(unsafeDowncast(transport, to: Dispatcher.Transport.self), stopping: error)
            }
        }
    }

    /// Whether the loop may exit: it is stopping and every connect and transport has finished (the loop checks
    /// `stopping` first: this generic code looks up type metadata).
    @inline(never)
    private var isFinished: Bool {
        let registrants = self.dispatcher.registrants
        return registrants.stopReason != nil && registrants.transports.isEmpty && registrants.connectors.isEmpty
    }

    // MARK: Timers (loop thread)

    /// Schedules `action` to run on the loop after `nanoseconds`.
    @usableFromInline
    package func schedule(afterNanoseconds nanoseconds: UInt64, _ action: @escaping () -> Void) -> LoopTimer {
        let timer = self.makeTimer(afterNanoseconds: nanoseconds, action)
        self.insert(timer)
        return timer
    }

    private func makeTimer(afterNanoseconds nanoseconds: UInt64, _ action: @escaping () -> Void) -> LoopTimer {
        LoopTimer(
            deadline: monotonicNanoseconds() &+ nanoseconds,
            sequence: self.timerSequence.add(1, ordering: .relaxed).newValue,
            cancellations: self.timerCancellations, action: action)
    }

    /// Puts `timer` on the heap (loop thread).
    private func insert(_ timer: LoopTimer) {
        self.timers.append(timer)
        var child = self.timers.count - 1
        while child > 0 {
            let parent = (child - 1) / 2
            guard self.timers[child].fires(before: self.timers[parent]) else { break }
            self.timers.swapAt(child, parent)
            child = parent
        }
    }

    /// Drops cancelled timers from the heap once at least half of a heap of 64 or more are cancelled.
    private func compactTimersIfWorthIt() {
        guard self.timers.count >= 64,
            self.timerCancellations.count.load(ordering: .relaxed) * 2 >= self.timers.count
        else { return }
        self.timerCancellations.count.store(0, ordering: .relaxed)
        self.timers.removeAll { $0.isDead }
        // A sorted array is a valid binary heap.
        self.timers.sort { $0.fires(before: $1) }
    }

    /// The number of timers on the heap, cancelled ones included (for tests).
    package var timerCount: Int { self.timers.count }

    private func popTimer() -> LoopTimer {
        let top = self.timers[0]
        let last = self.timers.removeLast()
        if !self.timers.isEmpty {
            self.timers[0] = last
            var parent = 0
            while true {
                let left = 2 * parent + 1
                let right = left + 1
                var smallest = parent
                if left < self.timers.count, self.timers[left].fires(before: self.timers[smallest]) { smallest = left }
                if right < self.timers.count, self.timers[right].fires(before: self.timers[smallest]) {
                    smallest = right
                }
                if smallest == parent { break }
                self.timers.swapAt(parent, smallest)
                parent = smallest
            }
        }
        return top
    }

    /// The epoll_wait timeout in milliseconds: 0 when tasks wait, -1 with no timers, else until the next timer.
    private func nextTimeout() -> Int32 {
        self.compactTimersIfWorthIt()
        while let first = self.timers.first, first.isDead { _ = self.popTimer() }
        if self.tasks.withLock({ !$0.tasks.isEmpty || !$0.jobs.isEmpty }) { return 0 }
        guard let first = self.timers.first else { return -1 }
        let now = monotonicNanoseconds()
        guard first.deadline > now else { return 0 }
        let milliseconds = (first.deadline - now + 999_999) / 1_000_000
        return Int32(min(milliseconds, UInt64(Int32.max)))
    }

    private func runTimers() {
        guard !self.timers.isEmpty else { return }
        let now = monotonicNanoseconds()
        while let first = self.timers.first, first.deadline <= now {
            self.popTimer().fire()
        }
    }

    private func runTasks() {
        var batch = self.spareTasks
        var jobs = self.spareJobs
        self.spareTasks = []
        self.spareJobs = []
        self.tasks.withLock { queue in
            swap(&queue.tasks, &batch)
            swap(&queue.jobs, &jobs)
            queue.wakePending = false
        }
        for task in batch { task() }
        if !jobs.isEmpty {
            let executor = self.unownedExecutor
            for entry in jobs {
                guard let watch = entry.watch else {
                    entry.job.runSynchronously(on: executor)
                    continue
                }
                // A watched job runs as the watched executor's (so it stays on it) and is timed: two reads of the
                // coarse clock, about 15 ns each here against 40-70 ns for CLOCK_MONOTONIC (its few milliseconds of
                // resolution are plenty for limits of tens or hundreds of milliseconds).
                let start = coarseMonotonicNanoseconds()
                entry.job.runSynchronously(on: watch.asUnownedTaskExecutor())
                let elapsed = coarseMonotonicNanoseconds() &- start
                if elapsed >= watch.limitNanoseconds { watch.jobHeldLoop(nanoseconds: elapsed) }
            }
        }
        batch.removeAll(keepingCapacity: true)
        jobs.removeAll(keepingCapacity: true)
        self.spareTasks = batch
        self.spareJobs = jobs
    }

    /// Runs the work deferred to the end of the round (it may defer more, which runs in the same call).
    private func runDeferred() {
        while !self.deferred.isEmpty {
            var work = self.spareDeferred
            swap(&work, &self.deferred)
            for flusher in work { flusher.roundDidEnd() }
            work.removeAll(keepingCapacity: true)
            self.spareDeferred = work
        }
    }

    // MARK: The loop

    private func run() {
        self.threadID.store(UInt(pthread_self()), ordering: .releasing)
        while true {
            self.round &+= 1
            let timeout = self.nextTimeout()
            let count = epoll_wait(self.epollFD, self.events, Int32(self.eventCapacity), timeout)
            if count < 0 {
                let code = errno
                if code == EINTR { continue }
                fatalError("epoll_wait failed: \(PosixError("epoll_wait", code))")
            }
            for index in 0..<Int(count) {
                let event = self.events[index]
                let data = event.data.u64
                if data == 0 {
                    var value: UInt64 = 0
                    _ = Glibc.read(self.wakeFD, &value, 8)
                } else {
                    self.dispatcher.handleEvent(data: data, events: event.events)
                }
            }
            self.graveyard.removeAll(keepingCapacity: true)
            self.runTimers()
            self.runTasks()
            self.runDeferred()
            self.graveyard.removeAll(keepingCapacity: true)
            if Int(count) == self.eventCapacity && self.eventCapacity < 8192 {
                self.events.deallocate()
                self.eventCapacity *= 2
                self.events = .allocate(capacity: self.eventCapacity)
            }
            if self.stopping && self.isFinished { break }
        }
        // Refuse new work, then run what is already queued (handlers may have queued close/abort calls).
        self.tasks.withLock { $0.closed = true }
        self.runTasks()
        self.runDeferred()
        self.dispatcher.loopDidEnd()
        self.graveyard.removeAll()
        self.timers.removeAll()
        closeDescriptor(self.wakeFD)
        closeDescriptor(self.epollFD)
    }
}

// MARK: - The loop as a task executor

/// A loop is a `TaskExecutor`: a task that prefers it (`withTaskExecutorPreference(loop)`) runs its jobs on the loop
/// thread, after the loop's own tasks. A continuation the loop resumes (a received message, a drained write) then
/// continues on the thread that resumed it, in the same round, with no thread wakeup; what the job writes is gathered
/// and sent at the end of the round. Jobs enqueued after the loop stopped go to the global concurrent executor.
extension PosixEventLoop: TaskExecutor {
    /// Queues `job` to run on the loop thread (any thread).
    @usableFromInline package func enqueue(_ job: consuming ExecutorJob) {
        let unowned = UnownedJob(job)
        if !self.submit({ $0.jobs.append(LoopJob(job: unowned, watch: nil)) }) {
            globalConcurrentExecutor.enqueue(ExecutorJob(unowned))
        }
    }
}

extension PosixEventLoop: LoopJobSink {
    /// Queues `job` of `watch` to run, timed, on the loop thread (any thread).
    package func enqueue(_ job: UnownedJob, watchedBy watch: WatchedLoopExecutor) {
        if !self.submit({ $0.jobs.append(LoopJob(job: job, watch: watch)) }) {
            globalConcurrentExecutor.enqueue(ExecutorJob(job))
        }
    }
}

/// A loop that runs jobs on behalf of a ``WatchedLoopExecutor``.
package protocol LoopJobSink: AnyObject, Sendable {
    /// Queues `job` to run on the loop thread as `watch`'s, timed (any thread).
    func enqueue(_ job: UnownedJob, watchedBy watch: WatchedLoopExecutor)
}

/// A task executor for one session's code that forwards every job to its loop and has the loop time it: a job that
/// holds the loop thread for `limit` or longer (a block that calls `readLine()` or `sleep`) is reported once, through
/// `report`, with how long it took. Jobs still run on the loop thread in the loop's order, exactly as jobs of the
/// loop itself; the watch costs two reads of the coarse monotonic clock per job (resolution: one kernel tick, a few
/// milliseconds).
package final class WatchedLoopExecutor: TaskExecutor, @unchecked Sendable {  // immutable but `reported` (atomic)
    /// The loop the jobs run on.
    package let loop: any LoopJobSink
    /// Jobs that take this long or longer are reported.
    let limitNanoseconds: UInt64
    private let report: @Sendable (_ nanoseconds: UInt64) -> Void
    private let reported = Atomic<Bool>(false)

    /// Creates the executor.
    /// - Parameters:
    ///   - loop: The loop that runs the jobs.
    ///   - limit: The shortest hold that is reported.
    ///   - report: Called once, on the loop thread, with the first hold of `limit` or longer.
    package init(loop: any LoopJobSink, limit: Duration, report: @escaping @Sendable (_ nanoseconds: UInt64) -> Void) {
        self.loop = loop
        self.limitNanoseconds = max(1, limit.clampedNanoseconds)
        self.report = report
    }

    /// Queues `job` on the loop (any thread).
    package func enqueue(_ job: consuming ExecutorJob) {
        self.loop.enqueue(UnownedJob(job), watchedBy: self)
    }

    /// A job of this executor held the loop for `nanoseconds` (loop thread): reported the first time only.
    func jobHeldLoop(nanoseconds: UInt64) {
        guard !self.reported.exchange(true, ordering: .relaxed) else { return }
        self.report(nanoseconds)
    }
}
