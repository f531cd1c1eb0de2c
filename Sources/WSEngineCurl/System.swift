// Small helpers over Glibc and the Linux headers that CWSCurl's shim exposes (epoll, eventfd, pthread names).
import CWSCurl
import Glibc
import WSCore

/// Monotonic time in nanoseconds (CLOCK_MONOTONIC), for deadlines and timers.
@inline(__always)
func monotonicNanoseconds() -> UInt64 {
    var now = timespec()
    clock_gettime(CLOCK_MONOTONIC, &now)
    return UInt64(now.tv_sec) &* 1_000_000_000 &+ UInt64(now.tv_nsec)
}

extension Duration {
    /// The duration in whole nanoseconds, clamped to `0...UInt64.max / 2` (negative durations become 0).
    var clampedNanoseconds: UInt64 {
        let (seconds, attoseconds) = self.components
        if seconds < 0 || (seconds == 0 && attoseconds <= 0) { return 0 }
        let limit = UInt64.max / 2
        let (wholeSeconds, overflow) = UInt64(seconds).multipliedReportingOverflow(by: 1_000_000_000)
        if overflow || wholeSeconds > limit { return limit }
        return min(limit, wholeSeconds + UInt64(attoseconds / 1_000_000_000))
    }

    /// The duration in whole milliseconds for libcurl's `*_MS` options: at least 1, at most `Int.max / 2`.
    var curlMilliseconds: Int {
        let milliseconds = (self.clampedNanoseconds + 999_999) / 1_000_000
        return Int(clamping: max(1, min(milliseconds, UInt64(Int.max / 2))))
    }

    /// Seconds for messages: `10`, `0.5`, `2.25`.
    var secondsText: String {
        let nanoseconds = self.clampedNanoseconds
        if nanoseconds % 1_000_000_000 == 0 { return "\(nanoseconds / 1_000_000_000)" }
        let milliseconds = (nanoseconds + 500_000) / 1_000_000
        var fraction = String(milliseconds % 1000)
        while fraction.count < 3 { fraction = "0" + fraction }
        while fraction.hasSuffix("0") { fraction.removeLast() }
        return "\(milliseconds / 1000)." + (fraction.isEmpty ? "0" : fraction)
    }
}

/// A `SystemError` for `call`, with the `strerror` text of `code`.
func systemError(_ call: String, _ code: Int32 = errno) -> SystemError {
    SystemError(errno: code, call: call, text: String(cString: strerror(code)))
}

/// Starts a pthread running `body`; the thread is joinable unless `detached`.
/// - Returns: The thread, for `pthread_join`.
@discardableResult
func startThread(name: String, detached: Bool, _ body: @escaping @Sendable () -> Void) -> pthread_t {
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
    precondition(result == 0, "pthread_create failed: \(String(cString: strerror(result)))")
    _ = cws_curl_pthread_setname(thread, String(name.prefix(15)))
    if detached { pthread_detach(thread) }
    return thread
}

/// `host:port`, with brackets around an IPv6 literal.
func hostPortText(_ endpoint: EngineEndpoint) -> String {
    endpoint.host.contains(":") ? "[\(endpoint.host)]:\(endpoint.port)" : "\(endpoint.host):\(endpoint.port)"
}
