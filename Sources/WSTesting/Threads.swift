import Glibc
import WSCore

/// The closure a new thread runs, passed through `pthread_create`'s context pointer.
private final class ThreadBody {
    let body: @Sendable () -> Void
    init(_ body: @escaping @Sendable () -> Void) { self.body = body }
}

/// Starts a joinable POSIX thread running `body`.
/// - Parameter body: What the thread runs.
/// - Returns: The thread, to be joined (or detached) exactly once.
func startThread(_ body: @escaping @Sendable () -> Void) throws(SystemError) -> pthread_t {
    let context = Unmanaged.passRetained(ThreadBody(body)).toOpaque()
    var thread = pthread_t()
    let rc = pthread_create(
        &thread, nil,
        { context in
            let body = Unmanaged<ThreadBody>.fromOpaque(context!).takeRetainedValue()
            body.body()
            return nil
        }, context)
    guard rc == 0 else {
        Unmanaged<ThreadBody>.fromOpaque(context).release()
        throw systemError("pthread_create", rc)
    }
    return thread
}

/// Joins `thread`, or detaches it when it is the calling thread (a thread cannot join itself).
func joinOrDetach(_ thread: pthread_t) {
    if pthread_equal(thread, pthread_self()) != 0 {
        pthread_detach(thread)
    } else {
        pthread_join(thread, nil)
    }
}
