import Synchronization
public import WSCore

/// An engine that connects a `WebSocketClient` to a server side your test scripts, entirely in memory: no
/// sockets, no threads of its own, and a virtual ``clock`` for the session's timers. Unit-test your own WebSocket
/// code with it, deterministically and in milliseconds.
///
/// ```swift
/// let engine = InMemoryEngine { server in                    // runs for each connection
///     while let frame = try await server.receive() {
///         if frame.kind == .text { try await server.send(text: "echo: \(try frame.readText())") }
///     }
/// }
/// let client = WebSocketClient(engine: engine)
/// let session = try await client.webSocketSession("ws://chat.test/room")
/// try await session.send("hi")
/// #expect(try await session.incoming.receive().readText() == "echo: hi")
/// await session.close()
/// ```
///
/// Every URL connects to the engine (host and port are not looked at). The client's session runs the real
/// WSCore code (handshake, framing, ping/pong, close, limits) over an in-memory byte stream whose other end is an
/// ``InMemoryServerConnection``:
/// - With a handler, the engine runs it in a task for each connection once the client's upgrade request has
///   arrived. When it returns, the engine answers a close the client sent (same code) or closes with 1000; when
///   it throws, it closes with 1011.
/// - Without a handler, the engine accepts every upgrade and your test takes each server side with
///   ``nextConnection()``, to drive it step by step.
///
/// Timers run on ``clock`` and fire only when the test calls ``InMemoryClock/advance(by:)``. Events reach the
/// client in order, one at a time, from a task started for the purpose; ``InMemoryClock/idle()`` waits until
/// every event has been delivered, and the server's sends return once the client has read them.
public final class InMemoryEngine: WebSocketEngine {
    /// What runs the server side of each connection.
    public typealias Handler = @Sendable (InMemoryServerConnection) async throws -> Void

    /// The virtual clock the session's timers run on.
    public let clock: InMemoryClock
    private let handler: Handler?

    private struct State {
        var shutDown = false
        var all: [InMemoryServerConnection] = []
        /// Connections whose upgrade request has arrived, not yet taken with `nextConnection()`.
        var arrived: [InMemoryServerConnection] = []
        var waiters: [CheckedContinuation<InMemoryServerConnection?, Never>] = []
        var tasks: [Task<Void, Never>] = []
    }

    private let state = Mutex(State())

    /// Creates an engine.
    /// - Parameters:
    ///   - clock: The virtual clock; a new one by default. Share one between engines to advance them together.
    ///   - handler: Runs the server side of each connection; `nil` (the default) accepts every upgrade and leaves
    ///     the server sides to ``nextConnection()``.
    public init(clock: InMemoryClock = InMemoryClock(), handler: Handler? = nil) {
        self.clock = clock
        self.handler = handler
    }

    /// `InMemory`.
    public var name: String { "InMemory" }

    /// Supports `EngineCapability.webSocket` and `EngineCapability.webSocketExtensions`.
    /// - Parameter capability: The capability to check.
    public func isSupported(_ capability: EngineCapability) -> Bool {
        capability == .webSocket || capability == .webSocketExtensions
    }

    /// Opens an in-memory connection: the server side is created at once and gets the client's upgrade request
    /// as soon as the session sends it.
    /// - Parameters:
    ///   - endpoint: Not used: every endpoint reaches this engine.
    ///   - options: Not used.
    /// - Returns: The client's transport.
    /// - Throws: `WebSocketError` (`WebSocketError.Code.connectionRefused`) after
    ///   ``shutdown()``.
    public func connect(to endpoint: EngineEndpoint, options: EngineConnectOptions) async throws
        -> any WebSocketTransport
    {
        // Weak: the engine keeps its connections (`connections`), so a strong capture would make a cycle.
        let server = InMemoryServerConnection(clock: self.clock, handler: self.handler) { [weak self] server in
            self?.requestArrived(server)
        }
        let open = self.state.withLock { s -> Bool in
            guard !s.shutDown else { return false }
            s.all.append(server)
            return true
        }
        guard open else {
            throw WebSocketError(.connectionRefused, "the in-memory engine was shut down")
        }
        return InMemoryTransport(server: server)
    }

    /// Every connection opened so far, in order.
    public var connections: [InMemoryServerConnection] { self.state.withLock { $0.all } }

    /// Waits for the next connection whose upgrade request has arrived and returns its server side, in the order
    /// the requests arrived; each connection is returned once. Meant for engines without a handler, whose
    /// connections are accepted at once: open the session, then take its server side.
    /// - Returns: The server side.
    /// - Throws: `WebSocketError` (`WebSocketError.Code.cancelled`) after ``shutdown()``.
    public func nextConnection() async throws -> InMemoryServerConnection {
        let server = await withCheckedContinuation {
            (continuation: CheckedContinuation<InMemoryServerConnection?, Never>) in
            let ready = self.state.withLock { s -> InMemoryServerConnection?? in
                if !s.arrived.isEmpty { return .some(s.arrived.removeFirst()) }
                if s.shutDown { return .some(nil) }
                s.waiters.append(continuation)
                return nil
            }
            if let ready { continuation.resume(returning: ready) }
        }
        guard let server else { throw WebSocketError(.cancelled, "the in-memory engine was shut down") }
        return server
    }

    /// Ends every connection (the clients see them dropped), cancels the handlers and waits for them to return.
    public func shutdown() async {
        let (connections, tasks, waiters) = self.state.withLock { s in
            s.shutDown = true
            defer { s.waiters = [] }
            return (s.all, s.tasks, s.waiters)
        }
        for waiter in waiters { waiter.resume(returning: nil) }
        for task in tasks { task.cancel() }
        for server in connections { await server.drop() }
        for task in tasks { await task.value }
    }

    /// The client's upgrade request has arrived on `server`: accept it, or start the handler.
    private func requestArrived(_ server: InMemoryServerConnection) {
        guard let handler = self.handler else {
            try? server.accept()
            let waiter = self.state.withLock { s -> CheckedContinuation<InMemoryServerConnection?, Never>? in
                if !s.waiters.isEmpty { return s.waiters.removeFirst() }
                s.arrived.append(server)
                return nil
            }
            waiter?.resume(returning: server)
            return
        }
        let task = Task {
            var failure: (any Error)?
            do {
                try await handler(server)
            } catch {
                failure = error
            }
            await server.finishAfterHandler(error: failure)
        }
        self.state.withLock { $0.tasks.append(task) }
    }
}

extension InMemoryServerConnection {
    /// After the handler returned: answers the client's close with its code, or closes with 1000 (1011 when the
    /// handler threw), unless the connection has ended.
    func finishAfterHandler(error: (any Error)?) async {
        if self.state.withLock({ $0.request != nil && !$0.answered }) {
            if let error {
                try? self.reject(status: 500, body: "the handler failed: \(error)")
                return
            }
            try? self.accept()
        }
        let clientClose = self.state.withLock { $0.clientCloseFrame }
        let reason: CloseReason? =
            if let error {
                CloseReason(code: .internalError, message: "handler failed: \(error)")
            } else if let clientClose {
                clientClose.readReason().map { CloseReason(code: $0.code) }
            } else {
                CloseReason(code: .normal)
            }
        await withTaskCancellationHandler {
            _ = try? await self.close(reason)
        } onCancel: {
        }
    }
}
