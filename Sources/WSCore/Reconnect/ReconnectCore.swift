import DequeModule
import Logging
import Synchronization

#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#endif

/// The working part of a ``ReconnectingWebSocketSession``: a ``ReconnectStateMachine`` under a lock, the driver task
/// that carries out its actions (connect, run the hook, flush the queue, watch the connection, wait), the send
/// queue, the connections messages are read from, and the state subscribers.
///
/// Locking: one `Mutex` holds everything that changes. States are delivered under it (so every subscriber sees them
/// in the machine's order); the calls that suspend or report back (connecting, closing a connection, the hook,
/// sleeping, finishing the state streams) are made after it is released. A send on the open connection encodes and
/// writes under it (`Connection.enqueue` takes the connection's lock inside ours, never the other way round), so the
/// queue flush and direct sends cannot overtake each other.
final class ReconnectCore: Sendable {
    typealias State = ReconnectingWebSocketSession.State
    typealias Cause = ReconnectingWebSocketSession.Cause

    let configuration: ReconnectingWebSocketSession.Configuration
    private let client: WebSocketClient
    private let settings: SharedWebSocketSettings
    private let makeRequest: @Sendable () async throws -> WebSocketRequestBuilder
    private let clock: ReconnectClock
    private let logger: Logger
    private let shared: Mutex<Shared>

    private struct Shared {
        var machine: ReconnectStateMachine
        var subscribers: [UInt64: AsyncStream<State>.Continuation] = [:]
        var lastSubscriber: UInt64 = 0
        /// The connection of the attempt that connected, while connected, open or closing.
        var current: WebSocketSession?
        /// Where sends go directly: the open connection once its queue is flushed.
        var sendTarget: WebSocketSession?
        /// Messages waiting for a connection, and their payload bytes.
        var queue = Deque<Frame>()
        var queuedBytes = 0
        /// The connections messages are read from, oldest first: the open one and the one before it, whose
        /// messages that arrived before it ended are still delivered.
        var readable = Deque<WebSocketSession>()
        var readWaiters: [(id: UInt64, continuation: CheckedContinuation<Void, any Error>)] = []
        var lastReadWaiter: UInt64 = 0
        /// Why the session ended, once it has.
        var finalCause: Cause?
        var driver: Task<Void, Never>?
        var cancelDriver = false
        var driverDone = false
        var doneWaiters: [CheckedContinuation<Void, Never>] = []
        /// Whether a streamed message is being sent: other sends wait in the queue behind it.
        var sendingStream = false
        /// Sends of the fail-fast mode waiting for the streamed message being sent to end (nothing is queued in
        /// that mode, so they wait here instead, as they would on a plain session).
        var streamEndWaiters = CancellableWaiters()
    }

    /// What the driver does next.
    private enum Step {
        case connect
        case runHook(WebSocketSession)
        case flushAndWatch(WebSocketSession)
        case watch(WebSocketSession)
        case wait(Duration)
        case exit
    }

    /// What an event left to do outside the lock.
    private struct Effects {
        var step: Step?
        var closeConnection: (WebSocketSession, CloseReason)?
        var cancelDriver: Task<Void, Never>?
        var finishStreams: [AsyncStream<State>.Continuation] = []
    }

    init(
        client: WebSocketClient, configuration: ReconnectingWebSocketSession.Configuration,
        makeRequest: @escaping @Sendable () async throws -> WebSocketRequestBuilder
    ) {
        var settings = client.webSocketSettings
        settings.pingInterval = configuration.pingInterval
        settings.pongTimeout = configuration.pongTimeout
        self.client = client
        self.configuration = configuration
        self.settings = SharedWebSocketSettings(settings)
        self.makeRequest = makeRequest
        self.clock = ReconnectClock(configuration.clock)
        self.logger = client.configuration.logger
        self.shared = Mutex(Shared(machine: ReconnectStateMachine(policy: configuration.policy)))
    }

    /// Starts the driver task.
    func start() {
        let task = Task { await self.run() }
        let cancel = self.shared.withLock { s -> Bool in
            s.driver = task
            return s.cancelDriver
        }
        if cancel { task.cancel() }
    }

    // MARK: - Events

    /// The inputs of an event now.
    private func moment() -> ReconnectStateMachine.Moment {
        var time = timespec()
        let unixTime: Int64? = clock_gettime(CLOCK_REALTIME, &time) == 0 ? Int64(time.tv_sec) : nil
        return ReconnectStateMachine.Moment(now: self.clock.now(), random: Double.random(in: 0..<1), unixTime: unixTime)
    }

    /// Feeds the machine an event under the lock, then runs `update` (which sees the machine after the event),
    /// delivers states, and returns what is left to do.
    private func apply(
        _ event: (inout ReconnectStateMachine, ReconnectStateMachine.Moment) -> [ReconnectStateMachine.Action],
        _ update: (inout Shared) -> Void = { _ in }
    ) -> Effects {
        let moment = self.moment()
        return self.shared.withLock { s -> Effects in
            let actions = event(&s.machine, moment)
            update(&s)
            var effects = Effects()
            for action in actions {
                switch action {
                case .deliverState(let state):
                    self.logger.debug("reconnecting session: \(state)")
                    for subscriber in s.subscribers.values { subscriber.yield(state) }
                case .connect:
                    effects.step = .connect
                case .runHook:
                    effects.step = s.current.map { .runHook($0) }
                case .flushQueue:
                    effects.step = s.current.map { .flushAndWatch($0) }
                case .wait(let delay):
                    effects.step = .wait(delay)
                case .closeConnection(let reason):
                    s.sendTarget = nil
                    effects.closeConnection = s.current.map { ($0, reason) }
                case .cancelPending:
                    if let driver = s.driver { effects.cancelDriver = driver } else { s.cancelDriver = true }
                case .finish(let cause):
                    s.finalCause = cause
                    s.sendTarget = nil
                    s.queue = []
                    s.queuedBytes = 0
                    for waiter in s.readWaiters { waiter.continuation.resume() }
                    s.readWaiters = []
                    effects.finishStreams = Array(s.subscribers.values)
                    s.subscribers = [:]
                    effects.step = .exit
                }
            }
            return effects
        }
    }

    /// Carries out what `apply` left (not the step).
    private func carryOut(_ effects: Effects) async {
        for stream in effects.finishStreams { stream.finish() }
        effects.cancelDriver?.cancel()
        if let close = effects.closeConnection {
            await close.0.connection.close(close.1, waitForEnd: false)
        }
    }

    // MARK: - The driver

    /// Runs the session until it has ended for good.
    private func run() async {
        var effects = self.apply { machine, moment in machine.start(at: moment) }
        // Every connection opened and not yet ended: each is closing by the time the session ends, and the driver
        // waits for them, so that nothing keeps running after the session.
        var connections: [WebSocketSession] = []
        while true {
            await self.carryOut(effects)
            let step =
                effects.step
                ?? self.shared.withLock { s -> Step in
                    if s.machine.isClosed { return .exit }
                    if case .closing = s.machine.phase, let current = s.current { return .watch(current) }
                    return .exit
                }
            switch step {
            case .connect:
                let (result, session) = await self.connect()
                effects = result
                connections.removeAll { $0.isClosed }
                if let session { connections.append(session) }
            case .runHook(let session):
                effects = await self.runHook(session)
            case .flushAndWatch(let session):
                await self.flush(session)
                effects = await self.watch(session)
            case .watch(let session):
                effects = await self.watch(session)
            case .wait(let delay):
                do {
                    try await self.clock.sleep(delay)
                    effects = self.apply { machine, moment in machine.backoffElapsed(at: moment) }
                } catch {
                    // Only a close cancels the driver: the machine has ended already.
                    effects = Effects()
                }
            case .exit:
                // Nothing keeps running after the session: wait for the close handshakes still going on (each
                // bounded by the close timeout).
                for session in connections { await session.connection.waitForEnd() }
                let waiters = self.shared.withLock { s in
                    s.driverDone = true
                    s.driver = nil
                    s.current = nil
                    defer { s.doneWaiters = [] }
                    return s.doneWaiters
                }
                for waiter in waiters { waiter.resume() }
                return
            }
        }
    }

    /// One connection attempt: the request block, connect, handshake.
    private func connect() async -> (Effects, WebSocketSession?) {
        do {
            let request = try await self.makeRequest()
            let opening = try self.client.prepareOpening(forBlock: false, settings: self.settings) { request }
            let session = try await opening.open()
            let effects = self.apply(
                { machine, moment in
                    machine.connected(subprotocol: session.subprotocol, extensions: session.extensions, at: moment)
                },
                { $0.current = session })
            return (effects, session)
        } catch {
            return (self.apply { machine, moment in machine.failed(error, at: moment) }, nil)
        }
    }

    /// Runs the user's hook on the new connection.
    private func runHook(_ session: WebSocketSession) async -> Effects {
        do {
            try await self.configuration.onConnect?(session)
            return self.apply(
                { machine, moment in machine.hookSucceeded(at: moment) },
                { s in
                    guard case .open = s.machine.phase else { return }
                    self.publish(session, &s)
                    // Open means sends go straight to the connection: at once when nothing is queued (always in
                    // fail-fast mode), else once the flush has sent the queue.
                    if s.queue.isEmpty { s.sendTarget = session }
                })
        } catch {
            if let reason = session.connection.currentCloseReason {
                // The connection ended under the hook: that is the cause, not the hook's error about it.
                return self.apply { machine, moment in machine.connectionClosed(reason, at: moment) }
            }
            return self.apply { machine, moment in machine.hookFailed(error, at: moment) }
        }
    }

    /// Sends the queued messages on `session`, in order, then lets sends go to it directly. A message the
    /// connection refuses because it is closing stays queued for the next connection (it was not written).
    private nonisolated(nonsending) func flush(_ session: WebSocketSession) async {
        enum Wait { case none, room, messageEnd }
        while true {
            let wait = self.shared.withLock { s -> Wait in
                guard s.current === session, case .open = s.machine.phase, !s.sendingStream else { return .none }
                while let frame = s.queue.first {
                    do {
                        let full = try session.connection.enqueue(frame)
                        s.queue.removeFirst()
                        s.queuedBytes -= frame.data.count
                        if full { return .room }
                    } catch is MessageInProgress {
                        return .messageEnd  // the hook left a streamed message going: the queue goes after it
                    } catch let error as WebSocketError where error.code == .sessionClosed {
                        return .none
                    } catch {
                        // This message cannot be sent on any connection (an extension refused it): drop it.
                        self.logger.warning(
                            "reconnecting session: a queued message was dropped: \(error)",
                            metadata: session.connection.warningMetadata)
                        s.queue.removeFirst()
                        s.queuedBytes -= frame.data.count
                    }
                }
                s.sendTarget = session
                return .none
            }
            switch wait {
            case .none: return
            // The driver goes on until the queue is sent or the connection ends, cancelled or not (a cancelled
            // task's cancellable wait would return at once, and this loop would spin).
            case .room:
                _ = await session.connection.waitForDrain(
                    above: session.connection.maxOutgoingBufferBytes, cancellable: false)
            case .messageEnd: _ = await session.connection.waitForMessageEnd(cancellable: false)
            }
        }
    }

    /// Waits until `session` stops being usable and reports why.
    private func watch(_ session: WebSocketSession) async -> Effects {
        await session.connection.waitUntilClosing()
        let reason = session.connection.currentCloseReason ?? CloseReason(code: .abnormalClosure)
        return self.apply(
            { machine, moment in machine.connectionClosed(reason, at: moment) },
            { s in if s.sendTarget === session { s.sendTarget = nil } })
    }

    // MARK: - Closing

    /// Closes for good and waits until nothing runs any more.
    func close(_ reason: CloseReason) async {
        let effects = self.apply { machine, _ in machine.closeRequested(reason) }
        await self.carryOut(effects)
        _ = await self.waitForEnd()
    }

    /// Starts closing with `reason` without waiting: the session object was released, or the task that owned it
    /// was cancelled. The driver finishes the close.
    func closeDetached(_ reason: CloseReason = CloseReason(code: .goingAway, message: "session released")) {
        let effects = self.apply { machine, _ in machine.closeRequested(reason) }
        for stream in effects.finishStreams { stream.finish() }
        effects.cancelDriver?.cancel()
        effects.closeConnection?.0.connection.beginClose(effects.closeConnection?.1)
    }

    /// Waits until the session has ended and returns why.
    func waitForEnd() async -> Cause {
        await withCheckedContinuation { (continuation: CheckedContinuation<Void, Never>) in
            let done = self.shared.withLock { s -> Bool in
                if s.driverDone { return true }
                s.doneWaiters.append(continuation)
                return false
            }
            if done { continuation.resume() }
        }
        return self.shared.withLock { $0.finalCause } ?? .closedByClient(CloseReason(code: .normal))
    }

    // MARK: - States

    /// The state now.
    var currentState: State { self.shared.withLock { $0.machine.state } }

    /// A new subscription: the state now, then each change; finished after the closed state.
    func makeStateStream() -> AsyncStream<State> {
        let (stream, continuation) = AsyncStream.makeStream(of: State.self, bufferingPolicy: .bufferingNewest(64))
        let id = self.shared.withLock { s -> UInt64? in
            // Before the driver has started, its start delivers the first state (connecting).
            if s.machine.phase != .idle { continuation.yield(s.machine.state) }
            guard s.finalCause == nil else { return nil }
            s.lastSubscriber += 1
            s.subscribers[s.lastSubscriber] = continuation
            return s.lastSubscriber
        }
        guard let id else {
            continuation.finish()
            return stream
        }
        continuation.onTermination = { [weak self] _ in
            // Called after our lock is released: `finish` is never called under it.
            _ = self?.shared.withLock { $0.subscribers.removeValue(forKey: id) }
        }
        return stream
    }

    // MARK: - Sending

    /// Sends on the open connection, or queues or refuses while there is none.
    nonisolated(nonsending) func send(_ frame: Frame) async throws {
        while true {
            switch try self.trySend(frame) {
            case .done: return
            case .waitForRoom(let target): return try await target.waitForRoom()
            case .waitForMessageEnd(let target):
                guard await target.connection.waitForMessageEnd() else { throw CancellationError() }
            case .waitForStreamEnd:
                guard await self.shared.waitCancellably(in: \Shared.streamEndWaiters, until: { !$0.sendingStream })
                else {
                    throw CancellationError()
                }
            }
        }
    }

    /// How many sends wait for a streamed message to end (for tests).
    package var sendsWaitingForStreamEnd: Int { self.shared.withLock { $0.streamEndWaiters.count } }

    /// What ``send(_:)`` does after one try.
    private enum SendOutcome {
        case done
        case waitForRoom(WebSocketSession)
        /// A streamed message the hook started on the connection is still going: try again after it.
        case waitForMessageEnd(WebSocketSession)
        /// A streamed message is being sent through ``sendStreaming(_:)`` (fail-fast mode): try again after it.
        case waitForStreamEnd
    }

    /// One try of ``send(_:)``: writes on the open connection, queues, or refuses while there is none.
    private func trySend(_ frame: Frame) throws -> SendOutcome {
        try self.shared.withLock { s throws -> SendOutcome in
            if let cause = s.finalCause { throw Self.closedError(cause) }
            if let target = s.sendTarget {
                do {
                    return try target.connection.enqueue(frame) ? .waitForRoom(target) : .done
                } catch is MessageInProgress {
                    return .waitForMessageEnd(target)
                } catch let error as WebSocketError where error.code == .sessionClosed {
                    s.sendTarget = nil  // the connection is going; the driver notices too
                }
            }
            switch self.configuration.sendsWhileDisconnected {
            case .failFast where s.sendingStream:
                return .waitForStreamEnd
            case .failFast:
                throw WebSocketError(
                    .notConnected,
                    "no connection is open (\(s.machine.state)); the message was not sent (the session fails fast "
                        + "while disconnected: wait for the open state, or queue with sendsWhileDisconnected = .queue)")
            case .queue(let maxMessages, let maxBytes):
                guard s.queue.count < maxMessages, s.queuedBytes + frame.data.count <= maxBytes else {
                    throw WebSocketError(
                        .sendQueueFull,
                        "the queue of messages waiting for a connection is full (\(s.queue.count) messages, "
                            + "\(s.queuedBytes) bytes; limits \(maxMessages) and \(maxBytes)); the message was not queued"
                    )
                }
                s.queue.append(frame)
                s.queuedBytes += frame.data.count
                return .done
            }
        }
    }

    /// The open connection, for a ping; throws when there is none.
    func openConnection() throws(WebSocketError) -> WebSocketSession {
        try self.shared.withLock { s throws(WebSocketError) -> WebSocketSession in
            if let cause = s.finalCause {
                throw WebSocketError(
                    .sessionClosed, "the reconnecting session is closed (\(cause)); there is no connection to ping",
                    closeCode: cause.closeCode)
            }
            guard let current = s.current, case .open = s.machine.phase else {
                throw WebSocketError(
                    .notConnected,
                    "no connection is open (\(s.machine.state)); a ping needs one: wait for the open state")
            }
            return current
        }
    }

    /// The open connection, or `nil` while there is none.
    var openConnectionIfAny: WebSocketSession? { try? self.openConnection() }

    /// Sends a streamed message with `body` on the open connection. Sends made meanwhile wait in the queue behind
    /// it and go out after it, on the same connection if it is still open, else after the next hook.
    nonisolated(nonsending) func sendStreaming(_ body: (WebSocketSession) async throws -> Void) async throws {
        let session = try self.shared.withLock { s throws -> WebSocketSession in
            if let cause = s.finalCause { throw Self.closedError(cause) }
            if s.sendingStream {
                throw WebSocketError(
                    .invalidArgument, "another streamed message is being sent on this session; send one at a time")
            }
            guard let target = s.sendTarget else {
                throw WebSocketError(
                    .notConnected,
                    "no connection is open (\(s.machine.state)); a streamed message is sent only on an open "
                        + "connection, never queued: wait for the open state and send it again")
            }
            s.sendTarget = nil
            s.sendingStream = true
            return target
        }
        do {
            try await body(session)
        } catch {
            await self.streamEnded(on: session)
            throw error
        }
        await self.streamEnded(on: session)
    }

    /// After a streamed send: sends go to `session` again (when it is still the open one), queued ones first, and
    /// the sends that waited for the stream's end try again.
    private nonisolated(nonsending) func streamEnded(on session: WebSocketSession) async {
        self.shared.withLock { s in
            s.sendingStream = false
            // With nothing queued the connection is usable at once, before the waiters try again.
            if s.queue.isEmpty, s.current === session, case .open = s.machine.phase { s.sendTarget = session }
            s.streamEndWaiters.resumeAll()
        }
        await self.flush(session)
    }

    private static func closedError(_ cause: Cause) -> WebSocketError {
        WebSocketError(
            .sessionClosed, "the reconnecting session is closed (\(cause)); nothing more can be sent",
            closeCode: cause.closeCode)
    }

    func requireConverter() throws(WebSocketError) -> any WebSocketContentConverter {
        guard let converter = self.settings.value.contentConverter else {
            throw WebSocketError(
                .noContentConverter,
                "no content converter is installed: set it in the plugin, e.g. config.install(WebSockets.self) { $0.contentConverter = JSONWebSocketConverter() } (module WSSerialization)"
            )
        }
        return converter
    }

    // MARK: - Receiving

    /// The next text or binary frame from the oldest connection that still has some; `nil` once the session has
    /// ended and every connection is read.
    nonisolated(nonsending) func receiveDataFrame() async throws -> Frame? {
        while true {
            guard let session = try await self.nextReadable() else { return nil }
            do {
                while let frame = try await session.connection.receive() {
                    if frame.kind == .text || frame.kind == .binary {
                        // With streamsIncomingMessages a message arrives as its first fragment: collect the rest.
                        return frame.fin ? frame : try await session.collectFragments(frame)
                    }
                }
            } catch is CancellationError {
                throw CancellationError()
            } catch {
                // This connection failed; its cause is in the state stream. Messages continue on the next one.
            }
            self.shared.withLock { s in
                if s.readable.first === session { s.readable.removeFirst() }
            }
        }
    }

    /// The next message as a stream of chunks, from the oldest connection that still has one; `nil` once the
    /// session has ended and every connection is read.
    nonisolated(nonsending) func receiveStreamingMessage() async throws -> WebSocketStreamingMessage? {
        while true {
            guard let session = try await self.nextReadable() else { return nil }
            do {
                return try await session.receiveStreamingMessage()
            } catch is CancellationError {
                throw CancellationError()
            } catch {
                // This connection has ended; messages continue on the next one.
            }
            self.shared.withLock { s in
                if s.readable.first === session { s.readable.removeFirst() }
            }
        }
    }

    /// The oldest readable connection, waiting for one while the session is alive.
    private nonisolated(nonsending) func nextReadable() async throws -> WebSocketSession? {
        while true {
            let ready = self.shared.withLock { s -> WebSocketSession?? in
                if let first = s.readable.first { return .some(first) }
                if s.finalCause != nil { return .some(nil) }
                return nil
            }
            if let ready { return ready }
            try Task.checkCancellation()
            let id = self.shared.withLock { s -> UInt64 in
                s.lastReadWaiter += 1
                return s.lastReadWaiter
            }
            try await withTaskCancellationHandler {
                try await withCheckedThrowingContinuation { (continuation: CheckedContinuation<Void, any Error>) in
                    let resumeNow = self.shared.withLock { s -> Bool in
                        if !s.readable.isEmpty || s.finalCause != nil { return true }
                        if Task.isCancelled { return true }
                        s.readWaiters.append((id, continuation))
                        return false
                    }
                    if resumeNow { continuation.resume() }
                }
            } onCancel: {
                let waiter = self.shared.withLock { s -> CheckedContinuation<Void, any Error>? in
                    guard let index = s.readWaiters.firstIndex(where: { $0.id == id }) else { return nil }
                    return s.readWaiters.remove(at: index).continuation
                }
                waiter?.resume(throwing: CancellationError())
            }
        }
    }

    /// Makes `session` readable (it is open and its hook has run) and wakes the waiting readers.
    private func publish(_ session: WebSocketSession, _ s: inout Shared) {
        s.readable.append(session)
        while s.readable.count > 2 { s.readable.removeFirst() }
        for waiter in s.readWaiters { waiter.continuation.resume() }
        s.readWaiters = []
    }

    /// The error that ends reading: a normal closure after a close by the user or a server's normal close, else
    /// the last failure.
    func endError() -> WebSocketError {
        let cause = self.shared.withLock { $0.finalCause } ?? .closedByClient(CloseReason(code: .normal))
        switch cause {
        case .closedByClient(let reason):
            return WebSocketError(
                .sessionClosed, "the reconnecting session was closed (\(reason))", closeCode: reason.code)
        case .closed(let reason):
            return WebSocketError(
                .sessionClosed,
                "the reconnecting session ended: the connection closed with \(reason), which is not retried",
                closeCode: reason.code)
        case .failure(let error):
            return WebSocketError(
                .sessionClosed, "the reconnecting session gave up: \(error)",
                closeCode: (error as? WebSocketError)?.closeCode, underlying: error)
        }
    }
}

/// A `Clock` reduced to what the session needs: the time since the session started, and sleeping.
struct ReconnectClock: Sendable {
    let now: @Sendable () -> Duration
    let sleep: @Sendable (Duration) async throws -> Void

    init<C: Clock>(_ clock: C) where C.Duration == Duration {
        let start = clock.now
        self.now = { start.duration(to: clock.now) }
        self.sleep = { delay in try await clock.sleep(until: clock.now.advanced(by: delay), tolerance: nil) }
    }
}
