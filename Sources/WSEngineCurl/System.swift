// Small helpers of the Curl engine; the ones both engines share (time, descriptors, threads, host:port text) are in
// WSPosix. `systemError` stays in each engine: it builds WSCore's SystemError, which WSPosix cannot see.
import Glibc
import WSCore
import WSPosix

extension Duration {
    /// The duration in whole milliseconds for libcurl's `*_MS` options: at least 1, at most `Int.max / 2`.
    var curlMilliseconds: Int {
        let milliseconds = (self.clampedNanoseconds + 999_999) / 1_000_000
        return Int(clamping: max(1, min(milliseconds, UInt64(Int.max / 2))))
    }
}

/// A `SystemError` for `call`, with the `strerror` text of `code`.
func systemError(_ call: String, _ code: Int32 = errno) -> SystemError {
    SystemError(errno: code, call: call, text: errnoText(code))
}
