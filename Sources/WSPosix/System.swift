package import CWSLinux
// Thin wrappers over Glibc and the Linux headers of CWSLinux that both engines use (after NIOPosix's
// System.swift): monotonic time, errno text, descriptors and named threads.
import Glibc

/// A failed system call: the call's name and its errno.
package struct PosixError: Error, Sendable, CustomStringConvertible {
    /// The system call that failed, e.g. `epoll_create1`.
    package let call: String
    /// The errno it left.
    package let code: Int32

    /// Captures `code` (by default the current errno) for `call`.
    package init(_ call: String, _ code: Int32 = errno) {
        self.call = call
        self.code = code
    }

    /// `call: strerror text (errno N)`.
    package var description: String { "\(self.call): \(errnoText(self.code)) (errno \(self.code))" }
}

/// The `strerror` text of `code`.
package func errnoText(_ code: Int32) -> String {
    String(cString: strerror(code))
}

/// Monotonic time in nanoseconds at the kernel tick's resolution (CLOCK_MONOTONIC_COARSE, a few milliseconds):
/// cheaper to read than ``monotonicNanoseconds()``, for measuring what only matters when it is long.
@inline(__always)
package func coarseMonotonicNanoseconds() -> UInt64 {
    var now = timespec()
    clock_gettime(CLOCK_MONOTONIC_COARSE, &now)
    return UInt64(now.tv_sec) &* 1_000_000_000 &+ UInt64(now.tv_nsec)
}

/// Monotonic time in nanoseconds (CLOCK_MONOTONIC), for deadlines and timers.
@inline(__always)
package func monotonicNanoseconds() -> UInt64 {
    var now = timespec()
    clock_gettime(CLOCK_MONOTONIC, &now)
    return UInt64(now.tv_sec) &* 1_000_000_000 &+ UInt64(now.tv_nsec)
}

extension Duration {
    /// The duration in whole nanoseconds, clamped to `0...UInt64.max / 2` (negative durations become 0).
    package var clampedNanoseconds: UInt64 {
        let (seconds, attoseconds) = self.components
        if seconds < 0 || (seconds == 0 && attoseconds <= 0) { return 0 }
        let limit = UInt64.max / 2
        let (wholeSeconds, overflow) = UInt64(seconds).multipliedReportingOverflow(by: 1_000_000_000)
        if overflow || wholeSeconds > limit { return limit }
        return min(limit, wholeSeconds + UInt64(attoseconds / 1_000_000_000))
    }

    /// Seconds for messages: `10`, `0.5`, `2.25`.
    @usableFromInline package var secondsText: String {
        let nanoseconds = self.clampedNanoseconds
        if nanoseconds % 1_000_000_000 == 0 { return "\(nanoseconds / 1_000_000_000)" }
        let milliseconds = (nanoseconds + 500_000) / 1_000_000
        var fraction = String(milliseconds % 1000)
        while fraction.count < 3 { fraction = "0" + fraction }
        while fraction.hasSuffix("0") { fraction.removeLast() }
        return "\(milliseconds / 1000)." + (fraction.isEmpty ? "0" : fraction)
    }
}

/// Closes `fd`, retrying nothing: on Linux the descriptor is released even when `close` reports EINTR, and EBADF
/// would be a bug in the caller.
@inline(__always)
package func closeDescriptor(_ fd: Int32) {
    let result = Glibc.close(fd)
    assert(result == 0 || errno != EBADF, "close(\(fd)) failed with EBADF: the descriptor was closed twice")
}

/// Starts a pthread named `name` (at most 15 characters are kept) running `body`; joinable unless `detached`.
/// - Returns: The thread, for `pthread_join`; `nil` if no thread could be created (errno is set).
@discardableResult
package func startThread(name: String, detached: Bool, _ body: @escaping @Sendable () -> Void) -> pthread_t? {
    final class Box: Sendable {
        let body: @Sendable () -> Void
        init(_ body: @escaping @Sendable () -> Void) { self.body = body }
    }
    let context = Unmanaged.passRetained(Box(body)).toOpaque()
    var thread = pthread_t()
    let result = pthread_create(
        &thread, nil,
        { context in
            Unmanaged<Box>.fromOpaque(context!).takeRetainedValue().body()
            return nil
        }, context)
    guard result == 0 else {
        Unmanaged<Box>.fromOpaque(context).release()
        errno = result
        return nil
    }
    _ = cws_pthread_setname(thread, String(name.prefix(15)))
    if detached { pthread_detach(thread) }
    return thread
}

/// The number of processors this process may run on (its CPU affinity mask, which container CPU sets and
/// `taskset` narrow), at least 1: the engines' default number of event loops.
package func availableProcessorCount() -> Int {
    let count = Int(cws_affinity_processor_count())
    return count > 0 ? count : max(1, sysconf(Int32(_SC_NPROCESSORS_ONLN)))
}

/// `shutdown(2)` of `fd`: both directions, or only the sending side (FIN).
/// - Returns: The call's result (0, or -1 with errno set); callers treat it as best effort.
@discardableResult
@usableFromInline package func shutdownSocket(_ fd: Int32, readAndWrite: Bool) -> Int32 {
    Glibc.shutdown(fd, Int32(readAndWrite ? SHUT_RDWR : SHUT_WR))
}

/// `host:port` for messages, with brackets around an IPv6 literal (`[::1]:443`).
package func hostPortText(host: String, port: Int) -> String {
    host.contains(":" as Character) ? "[\(host)]:\(port)" : "\(host):\(port)"
}
