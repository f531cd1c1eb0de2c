// Layer 1 of the engine (after NIOPosix's System.swift): thin wrappers over Glibc and the Linux headers that
// CWSOpenSSL's shim exposes. Would-block is an ordinary result, never an error; EINTR is retried here.
import CWSOpenSSL
import Glibc
import WSCore

/// The outcome of a non-blocking I/O call: would-block is an ordinary result, not an error.
enum IOResult<Value> {
    /// The kernel took (or gave) `Value`.
    case processed(Value)
    /// The call would have blocked.
    case wouldBlock
}

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

    /// Seconds for messages: `10`, `0.5`, `2.25`.
    var secondsText: String {
        let nanoseconds = self.clampedNanoseconds
        if nanoseconds % 1_000_000_000 == 0 { return "\(nanoseconds / 1_000_000_000)" }
        let milliseconds = (nanoseconds + 500_000) / 1_000_000
        var text = "\(milliseconds / 1000)."
        var fraction = String(milliseconds % 1000)
        while fraction.count < 3 { fraction = "0" + fraction }
        while fraction.hasSuffix("0") { fraction.removeLast() }
        text += fraction.isEmpty ? "0" : fraction
        return text
    }
}

/// A `SystemError` for `call`, with the `strerror` text of `code`.
func systemError(_ call: String, _ code: Int32 = errno) -> SystemError {
    SystemError(errno: code, call: call, text: String(cString: strerror(code)))
}

/// A string from a NUL-terminated C buffer.
func string(fromCBuffer buffer: [CChar]) -> String {
    buffer.withUnsafeBufferPointer { String(cString: $0.baseAddress!) }
}

/// Closes `fd`, retrying nothing: on Linux the descriptor is released even when `close` reports EINTR, and EBADF
/// would be a bug in this module.
@inline(__always)
func closeDescriptor(_ fd: Int32) {
    let result = Glibc.close(fd)
    assert(result == 0 || errno != EBADF, "close(\(fd)) failed with EBADF: the descriptor was closed twice")
}

/// Socket-type flags for `socket(2)`: stream, non-blocking and close-on-exec.
let streamSocketType = Int32(SOCK_STREAM.rawValue) | Int32(SOCK_NONBLOCK.rawValue) | Int32(SOCK_CLOEXEC.rawValue)

/// Sets an `Int32` socket option, ignoring failure (used for best-effort options such as TCP_NODELAY).
@inline(__always)
func setSocketOption(_ fd: Int32, _ level: Int32, _ name: Int32, _ value: Int32) {
    var value = value
    _ = setsockopt(fd, level, name, &value, socklen_t(MemoryLayout<Int32>.size))
}

/// An IPv4 or IPv6 socket address with a port.
struct SocketAddress: Sendable, CustomStringConvertible {
    /// The raw address; the storage is a plain value with no pointers, so copies are independent.
    private var storage: sockaddr_storage
    /// The number of meaningful bytes in `storage`.
    let length: socklen_t

    /// The address family, `AF_INET` or `AF_INET6`.
    var family: Int32 { Int32(self.storage.ss_family) }

    /// Parses an IPv4 or IPv6 literal (no brackets); `nil` for a host name.
    init?(ipLiteral host: String, port: UInt16) {
        var storage = sockaddr_storage()
        var ipv4 = in_addr()
        if inet_pton(AF_INET, host, &ipv4) == 1 {
            var address = sockaddr_in()
            address.sin_family = sa_family_t(AF_INET)
            address.sin_port = port.bigEndian
            address.sin_addr = ipv4
            withUnsafeBytes(of: address) { source in
                withUnsafeMutableBytes(of: &storage) { $0.copyMemory(from: source) }
            }
            self.storage = storage
            self.length = socklen_t(MemoryLayout<sockaddr_in>.size)
            return
        }
        var ipv6 = in6_addr()
        if inet_pton(AF_INET6, host, &ipv6) == 1 {
            var address = sockaddr_in6()
            address.sin6_family = sa_family_t(AF_INET6)
            address.sin6_port = port.bigEndian
            address.sin6_addr = ipv6
            withUnsafeBytes(of: address) { source in
                withUnsafeMutableBytes(of: &storage) { $0.copyMemory(from: source) }
            }
            self.storage = storage
            self.length = socklen_t(MemoryLayout<sockaddr_in6>.size)
            return
        }
        return nil
    }

    /// Copies an address returned by `getaddrinfo`.
    init?(copying address: UnsafePointer<sockaddr>, length: socklen_t) {
        guard Int(length) <= MemoryLayout<sockaddr_storage>.size,
            address.pointee.sa_family == sa_family_t(AF_INET) || address.pointee.sa_family == sa_family_t(AF_INET6)
        else { return nil }
        var storage = sockaddr_storage()
        withUnsafeMutableBytes(of: &storage) {
            $0.copyMemory(from: UnsafeRawBufferPointer(start: address, count: Int(length)))
        }
        self.storage = storage
        self.length = length
    }

    /// Whether `host` is an IPv4 or IPv6 literal.
    static func isIPLiteral(_ host: String) -> Bool {
        var buffer = in6_addr()
        return inet_pton(AF_INET, host, &buffer) == 1 || inet_pton(AF_INET6, host, &buffer) == 1
    }

    /// Calls `body` with a `sockaddr` view of the address.
    func withSockAddr<Result>(_ body: (UnsafePointer<sockaddr>, socklen_t) -> Result) -> Result {
        withUnsafeBytes(of: self.storage) { raw in
            body(raw.baseAddress!.assumingMemoryBound(to: sockaddr.self), self.length)
        }
    }

    /// `127.0.0.1:80` or `[::1]:80`.
    var description: String {
        withUnsafeBytes(of: self.storage) { raw -> String in
            var text = [CChar](repeating: 0, count: Int(INET6_ADDRSTRLEN) + 1)
            if self.family == AF_INET {
                let address = raw.load(as: sockaddr_in.self)
                var ip = address.sin_addr
                inet_ntop(AF_INET, &ip, &text, socklen_t(text.count))
                return "\(string(fromCBuffer: text)):\(UInt16(bigEndian: address.sin_port))"
            } else {
                let address = raw.load(as: sockaddr_in6.self)
                var ip = address.sin6_addr
                inet_ntop(AF_INET6, &ip, &text, socklen_t(text.count))
                return "[\(string(fromCBuffer: text))]:\(UInt16(bigEndian: address.sin6_port))"
            }
        }
    }
}

/// Starts a pthread running `body`; the thread is joinable unless `detached`.
/// - Returns: The thread, for `pthread_join`; `nil` if no thread could be created (errno is set).
@discardableResult
func startThread(name: String, detached: Bool, _ body: @escaping @Sendable () -> Void) -> pthread_t? {
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
