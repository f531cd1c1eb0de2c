// Tasks that wait for an event (the outgoing buffer drained, a streamed message ended) and may leave early when their
// task is cancelled. Kept inside the lock of whoever owns the event; not thread-safe itself.
import Synchronization

/// A list of waiting tasks, each resumed with `true` when the event comes, or `false` when its task is cancelled first
/// (it is then taken out of the list by its cancellation handler).
struct CancellableWaiters {
    private var waiters: [(id: UInt64, continuation: CheckedContinuation<Bool, Never>)] = []
    private var lastID: UInt64 = 0

    /// How many tasks wait.
    var count: Int { self.waiters.count }

    /// A new identifier for a task about to wait (taken before it waits, so its cancellation handler knows it).
    mutating func nextID() -> UInt64 {
        self.lastID &+= 1
        return self.lastID
    }

    /// Adds a waiting task.
    mutating func add(_ id: UInt64, _ continuation: CheckedContinuation<Bool, Never>) {
        self.waiters.append((id, continuation))
    }

    /// Takes the waiter `id` out of the list, if it still waits: its cancellation handler resumes it with `false`.
    mutating func remove(_ id: UInt64) -> CheckedContinuation<Bool, Never>? {
        guard let index = self.waiters.firstIndex(where: { $0.id == id }) else { return nil }
        return self.waiters.remove(at: index).continuation
    }

    /// Resumes every waiting task with `true` and empties the list.
    mutating func resumeAll() {
        guard !self.waiters.isEmpty else { return }
        for waiter in self.waiters { waiter.continuation.resume(returning: true) }
        self.waiters = []
    }
}

extension Mutex {
    /// Waits until `ready` (checked under the lock) is true or `waiters` resumes the task, and returns `true`; if
    /// `cancellable`, returns `false` as soon as the task is cancelled while waiting (or already is, and `ready` is
    /// false).
    /// - Parameters:
    ///   - waiters: The list, inside the value this lock guards, that resumes the task when the event comes.
    ///   - cancellable: Whether cancelling the task ends the wait. A task that loops until the event must not be
    ///     cancellable here: once cancelled, each wait would return at once.
    ///   - ready: Whether the event already happened (checked under the lock, before the task waits).
    nonisolated(nonsending) func waitCancellably(
        in waiters: any WritableKeyPath<Value, CancellableWaiters> & Sendable, cancellable: Bool = true,
        until ready: (inout Value) -> Bool
    ) async -> Bool {
        guard cancellable else {
            return await withCheckedContinuation { (continuation: CheckedContinuation<Bool, Never>) in
                let now = self.withLock { value -> Bool in
                    if ready(&value) { return true }
                    value[keyPath: waiters].add(value[keyPath: waiters].nextID(), continuation)
                    return false
                }
                if now { continuation.resume(returning: true) }
            }
        }
        let id = self.withLock { $0[keyPath: waiters].nextID() }
        return await withTaskCancellationHandler {
            await withCheckedContinuation { (continuation: CheckedContinuation<Bool, Never>) in
                // `Task.isCancelled` is already true when the cancellation handler runs, so a handler that ran before
                // the waiter was added (and found nothing to remove) is seen here, under the same lock.
                let now = self.withLock { value -> Bool? in
                    if ready(&value) { return true }
                    if Task.isCancelled { return false }
                    value[keyPath: waiters].add(id, continuation)
                    return nil
                }
                if let now { continuation.resume(returning: now) }
            }
        } onCancel: {
            self.withLock { $0[keyPath: waiters].remove(id) }?.resume(returning: false)
        }
    }
}
