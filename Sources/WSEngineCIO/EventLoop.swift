// One epoll event loop on its own pthread. Sockets are registered EDGE-TRIGGERED (EPOLLET) once, for
// EPOLLIN|EPOLLOUT|EPOLLRDHUP, and never modified afterwards: pausing reads and queueing writes cost no epoll_ctl.
// Each registrant remembers that an edge arrived (`readable`) and reads until EAGAIN, within a per-wakeup budget
// (the rest is re-queued as a task, for fairness). Writers get an EPOLLOUT edge after any send that returned EAGAIN.
import CWSOpenSSL
import Glibc
import Synchronization
import WSCore

/// Work handed to a loop from any thread.
typealias LoopTask = @Sendable () -> Void

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

/// An epoll loop thread with an eventfd for wakeups, a Mutex-protected task queue, a timer heap, one reusable read
/// buffer and one reusable iovec array.
final class EventLoop: @unchecked Sendable {  // Loop-thread confinement; `tasks` is a Mutex, `threadID` atomic.
    // Thread rules: `epollFD`, `wakeFD`, `readBuffer`, `iovecs` and the sizes are immutable after init; `tasks`
    // is a Mutex; `threadID` is atomic; every other field is confined to the loop thread.

    /// The epoll instance; closed by the loop thread on exit, after every registrant has finished.
    let epollFD: Int32
    private let wakeFD: Int32
    /// The one read buffer of this loop: transports read into it and hand it to their handler during the call.
    let readBuffer: UnsafeMutableRawPointer
    /// The size of ``readBuffer``.
    let readBufferSize: Int
    /// Scratch iovecs for `sendmsg` batching (loop thread only).
    let iovecs: UnsafeMutablePointer<iovec>
    /// The number of ``iovecs``: IOV_MAX.
    let iovecCount: Int
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
    private var transports: [ObjectIdentifier: CIOTransport] = [:]
    private var connectors: [ObjectIdentifier: Connector] = [:]
    /// Registrants removed during the current batch; kept alive until it ends because the batch may still hold
    /// events that point to them.
    private var graveyard: [AnyObject] = []
    private var stopping = false
    private var stopError: WebSocketConnectionError?

    /// Creates the loop and starts its thread.
    /// - Throws: `.network` when the process is out of descriptors or threads.
    init(name: String, readBufferSize: Int) throws(WebSocketConnectionError) {
        func failure(_ call: String) -> WebSocketConnectionError {
            let error = systemError(call)
            return WebSocketConnectionError(.network, "cannot start the CIO event loop: \(error)", underlying: error)
        }
        self.name = name
        self.epollFD = epoll_create1(Int32(EPOLL_CLOEXEC))
        guard self.epollFD >= 0 else { throw failure("epoll_create1") }
        self.wakeFD = eventfd(0, Int32(EFD_NONBLOCK | EFD_CLOEXEC))
        guard self.wakeFD >= 0 else {
            let error = failure("eventfd")
            closeDescriptor(self.epollFD)
            throw error
        }
        var event = epoll_event()
        event.events = EPOLLIN.rawValue
        event.data.u64 = 0
        guard epoll_ctl(self.epollFD, EPOLL_CTL_ADD, self.wakeFD, &event) == 0 else {
            let error = failure("epoll_ctl")
            closeDescriptor(self.wakeFD)
            closeDescriptor(self.epollFD)
            throw error
        }
        self.readBufferSize = readBufferSize
        self.readBuffer = .allocate(byteCount: readBufferSize, alignment: 16)
        let iovMax = sysconf(Int32(_SC_IOV_MAX))
        self.iovecCount = iovMax > 0 ? min(iovMax, 1024) : 16
        self.iovecs = .allocate(capacity: self.iovecCount)
        self.events = .allocate(capacity: self.eventCapacity)
        guard let thread = startThread(name: name, detached: false, { [self] in self.run() }) else {
            let error = failure("pthread_create")
            closeDescriptor(self.wakeFD)
            closeDescriptor(self.epollFD)
            throw error
        }
        self.thread = thread
    }

    deinit {
        self.readBuffer.deallocate()
        self.iovecs.deallocate()
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

    /// Asks the loop to abort every connection and exit; `error` is what open transports and pending connects see.
    func initiateStop(error: WebSocketConnectionError) {
        self.execute { [self] in
            guard !self.stopping else { return }
            self.stopping = true
            self.stopError = error
            for connector in Array(self.connectors.values) { connector.fail(error) }
            for transport in Array(self.transports.values) { transport.finish(error: error) }
        }
    }

    // MARK: Registration (loop thread)

    /// Registers `fd` edge-triggered for input and output, with `data` identifying the registrant.
    func register(fd: Int32, data: UInt64) -> Int32 {
        var event = epoll_event()
        event.events = EPOLLIN.rawValue | EPOLLOUT.rawValue | EPOLLRDHUP.rawValue | EPOLLET.rawValue
        event.data.u64 = data
        return epoll_ctl(self.epollFD, EPOLL_CTL_ADD, fd, &event) == 0 ? 0 : errno
    }

    /// Points an existing registration of `fd` at a new registrant (re-arming the edge).
    func reregister(fd: Int32, data: UInt64) -> Int32 {
        var event = epoll_event()
        event.events = EPOLLIN.rawValue | EPOLLOUT.rawValue | EPOLLRDHUP.rawValue | EPOLLET.rawValue
        event.data.u64 = data
        return epoll_ctl(self.epollFD, EPOLL_CTL_MOD, fd, &event) == 0 ? 0 : errno
    }

    /// Removes `fd` from epoll (explicitly, before the caller closes it: a forked child may still hold the file).
    func deregister(fd: Int32) {
        var event = epoll_event()
        _ = epoll_ctl(self.epollFD, EPOLL_CTL_DEL, fd, &event)
    }

    func add(_ connector: Connector) { self.connectors[ObjectIdentifier(connector)] = connector }
    func remove(_ connector: Connector) {
        if let removed = self.connectors.removeValue(forKey: ObjectIdentifier(connector)) {
            self.graveyard.append(removed)
        }
    }
    func add(_ transport: CIOTransport) { self.transports[ObjectIdentifier(transport)] = transport }
    func remove(_ transport: CIOTransport) {
        if let removed = self.transports.removeValue(forKey: ObjectIdentifier(transport)) {
            self.graveyard.append(removed)
        }
    }

    /// Whether the loop is stopping; new connects fail with this error.
    var stopReason: WebSocketConnectionError? { self.stopping ? self.stopError : nil }

    /// The number of open transports and pending connects on this loop (loop thread only; for tests and logs).
    var registrantCount: Int { self.transports.count + self.connectors.count }

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
                } else if data & 1 == 1 {
                    let pointer = UnsafeRawPointer(bitPattern: UInt(data & ~1))!
                    Unmanaged<Connector>.fromOpaque(pointer).takeUnretainedValue().handleEvents(event.events)
                } else {
                    let pointer = UnsafeRawPointer(bitPattern: UInt(data))!
                    Unmanaged<CIOTransport>.fromOpaque(pointer).takeUnretainedValue().handleEvents(event.events)
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
        closeDescriptor(self.wakeFD)
        closeDescriptor(self.epollFD)
    }
}
