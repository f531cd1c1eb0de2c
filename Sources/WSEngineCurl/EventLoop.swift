// The Curl engine's one epoll loop thread. It drives two kinds of registrants:
// - while connecting, the sockets libcurl asks for through CURLMOPT_SOCKETFUNCTION (one SocketWatch each, with the
//   events libcurl wants), plus libcurl's timeouts (CURLMOPT_TIMERFUNCTION) on the loop's timer heap;
// - once connected, the transport's socket (CURLINFO_ACTIVESOCKET), LEVEL-TRIGGERED, with an interest set that
//   follows the transport's state: EPOLLIN while reading is wanted, EPOLLOUT while bytes are queued, and no
//   registration at all when neither is (so EPOLLHUP/EPOLLERR of a paused idle socket cannot spin the loop).
// Level-triggered is the simple, safe choice here because libcurl, not this module, owns the socket: whatever a
// curl_easy_recv/send left behind is reported again by epoll_wait. (Decrypted bytes that libcurl or OpenSSL
// buffered are not visible to epoll; transports read until CURLE_AGAIN, see CurlTransport.)
import CWSCurl
import Glibc
import Synchronization
import WSCore

/// Work handed to a loop from any thread.
typealias LoopTask = @Sendable () -> Void

/// Something registered with the loop's epoll instance; the loop calls ``handleEvents(_:)`` on its thread with the
/// registrant's address as the epoll data.
class LoopRegistrant: @unchecked Sendable {  // Stateless; handleEvents runs on the loop thread only.
    /// An epoll event for this registrant (loop thread).
    func handleEvents(_ events: UInt32) {}

    /// The epoll data that routes events here: this object's address (never 0, which is the wakeup eventfd).
    final var epollData: UInt64 { UInt64(UInt(bitPattern: Unmanaged.passUnretained(self).toOpaque())) }
}

/// A one-shot timer on a loop's timer heap; cancel it with ``cancel()`` (on the loop thread).
final class LoopTimer {
    // Every field is read and written only on the owning loop's thread.
    /// When the timer fires (monotonic nanoseconds).
    let deadline: UInt64
    /// Tie-breaker: timers with the same deadline fire in scheduling order.
    let sequence: UInt64
    /// The action; `nil` once fired or cancelled.
    var action: (() -> Void)?

    init(deadline: UInt64, sequence: UInt64, action: @escaping () -> Void) {
        self.deadline = deadline
        self.sequence = sequence
        self.action = action
    }

    /// Stops the timer from firing (loop thread only).
    func cancel() { self.action = nil }

    func fires(before other: LoopTimer) -> Bool {
        self.deadline != other.deadline ? self.deadline < other.deadline : self.sequence < other.sequence
    }
}

/// An epoll loop thread with an eventfd for wakeups, a Mutex-protected task queue, a timer heap and one reusable
/// read buffer.
final class CurlEventLoop: @unchecked Sendable {  // `tasks` Mutex; the rest on the loop thread.
    // Thread rules: `epollFD`, `wakeFD`, `readBuffer`, `readBufferSize` and `name` are immutable after init;
    // `tasks` is a Mutex; `threadID` is atomic; `thread` is written once in init; every other field is confined to
    // the loop thread.

    /// The epoll instance; closed by the loop thread on exit, after every registrant has finished.
    let epollFD: Int32
    private let wakeFD: Int32
    /// The one read buffer of this loop: transports read into it and hand it to their handler during the call.
    let readBuffer: UnsafeMutableRawPointer
    /// The size of ``readBuffer``.
    let readBufferSize: Int
    /// The loop's name, for thread names and logs.
    let name: String

    private struct TaskQueue {
        var tasks: [LoopTask] = []
        var wakePending = false
        var closed = false
    }
    private let tasks = Mutex(TaskQueue())
    private let threadID = Atomic<UInt>(0)
    /// The loop's pthread, for joining.
    private(set) var thread = pthread_t()

    // Loop thread only:
    private var spareTasks: [LoopTask] = []
    private var events: UnsafeMutablePointer<epoll_event>
    private var eventCapacity = 64
    private var timers: [LoopTimer] = []
    private var timerSequence: UInt64 = 0
    private var connectors: [ObjectIdentifier: CurlConnector] = [:]
    private var transports: [ObjectIdentifier: CurlTransport] = [:]
    /// Registrants removed during the current batch; kept alive until it ends because the batch may still hold
    /// events that point to them.
    private var graveyard: [AnyObject] = []
    private var stopping = false
    private var stopError: WebSocketConnectionError?

    /// Creates the loop and starts its thread.
    init(name: String, readBufferSize: Int) {
        self.name = name
        self.epollFD = epoll_create1(Int32(EPOLL_CLOEXEC))
        precondition(self.epollFD >= 0, "epoll_create1 failed: \(systemError("epoll_create1"))")
        self.wakeFD = eventfd(0, Int32(EFD_NONBLOCK | EFD_CLOEXEC))
        precondition(self.wakeFD >= 0, "eventfd failed: \(systemError("eventfd"))")
        var event = epoll_event()
        event.events = EPOLLIN.rawValue
        event.data.u64 = 0
        precondition(epoll_ctl(self.epollFD, EPOLL_CTL_ADD, self.wakeFD, &event) == 0, "epoll_ctl(eventfd) failed")
        self.readBufferSize = readBufferSize
        self.readBuffer = .allocate(byteCount: readBufferSize, alignment: 16)
        self.events = .allocate(capacity: self.eventCapacity)
        self.thread = startThread(name: name, detached: false) { [self] in self.run() }
    }

    deinit {
        self.readBuffer.deallocate()
        self.events.deallocate()
    }

    /// Whether the caller runs on this loop's thread.
    var inLoop: Bool { pthread_equal(pthread_self(), pthread_t(self.threadID.load(ordering: .acquiring))) != 0 }

    /// Runs `task` on the loop thread, after the current event batch. Callable from any thread.
    /// - Returns: `false` if the loop has stopped and the task will never run.
    @discardableResult
    func execute(_ task: @escaping LoopTask) -> Bool {
        let onLoop = self.inLoop
        let (accepted, wake) = self.tasks.withLock { queue -> (Bool, Bool) in
            guard !queue.closed else { return (false, false) }
            queue.tasks.append(task)
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

    /// Asks the loop to fail every pending connect, abort every transport with `error`, and exit.
    func initiateStop(error: WebSocketConnectionError) {
        self.execute { [self] in
            guard !self.stopping else { return }
            self.stopping = true
            self.stopError = error
            for connector in Array(self.connectors.values) { connector.fail(error) }
            for transport in Array(self.transports.values) { transport.finish(error: error) }
        }
    }

    // MARK: epoll registration (any thread; callers serialize per descriptor)

    /// Sets the level-triggered interest of `fd` to `events` for `registrant`: adds, modifies or (for 0) removes
    /// the registration. `registered` says whether `fd` is currently registered by this registrant.
    /// - Returns: 0, or the `errno` of a failed `epoll_ctl`.
    func setInterest(fd: Int32, events: UInt32, registered: Bool, registrant: LoopRegistrant) -> Int32 {
        var event = epoll_event()
        event.events = events
        event.data.u64 = registrant.epollData
        if events == 0 {
            guard registered else { return 0 }
            _ = epoll_ctl(self.epollFD, EPOLL_CTL_DEL, fd, &event)
            return 0
        }
        if registered {
            if epoll_ctl(self.epollFD, EPOLL_CTL_MOD, fd, &event) == 0 { return 0 }
            guard errno == ENOENT else { return errno }
            return epoll_ctl(self.epollFD, EPOLL_CTL_ADD, fd, &event) == 0 ? 0 : errno
        }
        if epoll_ctl(self.epollFD, EPOLL_CTL_ADD, fd, &event) == 0 { return 0 }
        guard errno == EEXIST else { return errno }
        // A stale registration of a reused descriptor number: take it over.
        return epoll_ctl(self.epollFD, EPOLL_CTL_MOD, fd, &event) == 0 ? 0 : errno
    }

    // MARK: Registrants (loop thread)

    func add(_ connector: CurlConnector) { self.connectors[ObjectIdentifier(connector)] = connector }
    func remove(_ connector: CurlConnector) {
        if let removed = self.connectors.removeValue(forKey: ObjectIdentifier(connector)) {
            self.graveyard.append(removed)
        }
    }
    func add(_ transport: CurlTransport) { self.transports[ObjectIdentifier(transport)] = transport }
    func remove(_ transport: CurlTransport) {
        if let removed = self.transports.removeValue(forKey: ObjectIdentifier(transport)) {
            self.graveyard.append(removed)
        }
    }
    /// Keeps `object` alive until the current event batch ends.
    func retire(_ object: AnyObject) { self.graveyard.append(object) }

    /// Whether the loop is stopping; new connects fail with this error.
    var stopReason: WebSocketConnectionError? { self.stopping ? self.stopError : nil }

    // MARK: Timers (loop thread)

    /// Schedules `action` to run on the loop after `nanoseconds`.
    func schedule(afterNanoseconds nanoseconds: UInt64, _ action: @escaping () -> Void) -> LoopTimer {
        self.timerSequence &+= 1
        let timer = LoopTimer(
            deadline: monotonicNanoseconds() &+ nanoseconds, sequence: self.timerSequence, action: action)
        self.timers.append(timer)
        var child = self.timers.count - 1
        while child > 0 {
            let parent = (child - 1) / 2
            guard self.timers[child].fires(before: self.timers[parent]) else { break }
            self.timers.swapAt(child, parent)
            child = parent
        }
        return timer
    }

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
        while let first = self.timers.first, first.action == nil { _ = self.popTimer() }
        if self.tasks.withLock({ !$0.tasks.isEmpty }) { return 0 }
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
            let timer = self.popTimer()
            if let action = timer.action {
                timer.action = nil
                action()
            }
        }
    }

    private func runTasks() {
        var batch = self.spareTasks
        self.spareTasks = []
        self.tasks.withLock { queue in
            swap(&queue.tasks, &batch)
            queue.wakePending = false
        }
        for task in batch { task() }
        batch.removeAll(keepingCapacity: true)
        self.spareTasks = batch
    }

    // MARK: The loop

    private func run() {
        self.threadID.store(UInt(pthread_self()), ordering: .releasing)
        while true {
            let timeout = self.nextTimeout()
            let count = epoll_wait(self.epollFD, self.events, Int32(self.eventCapacity), timeout)
            if count < 0 {
                let code = errno
                if code == EINTR { continue }
                fatalError("epoll_wait failed: \(systemError("epoll_wait", code))")
            }
            for index in 0..<Int(count) {
                let event = self.events[index]
                let data = event.data.u64
                if data == 0 {
                    var value: UInt64 = 0
                    _ = Glibc.read(self.wakeFD, &value, 8)
                } else {
                    let pointer = UnsafeRawPointer(bitPattern: UInt(data))!
                    Unmanaged<LoopRegistrant>.fromOpaque(pointer).takeUnretainedValue().handleEvents(event.events)
                }
            }
            self.graveyard.removeAll(keepingCapacity: true)
            self.runTimers()
            self.runTasks()
            self.graveyard.removeAll(keepingCapacity: true)
            if Int(count) == self.eventCapacity && self.eventCapacity < 8192 {
                self.events.deallocate()
                self.eventCapacity *= 2
                self.events = .allocate(capacity: self.eventCapacity)
            }
            if self.stopping && self.transports.isEmpty && self.connectors.isEmpty { break }
        }
        // Refuse new work, then run what is already queued (handlers may have queued close/abort calls).
        self.tasks.withLock { $0.closed = true }
        self.runTasks()
        self.graveyard.removeAll()
        self.timers.removeAll()
        _ = Glibc.close(self.wakeFD)
        _ = Glibc.close(self.epollFD)
    }
}
