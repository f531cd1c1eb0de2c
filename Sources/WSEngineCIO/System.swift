// Layer 1 of the engine (after NIOPosix's System.swift): thin socket wrappers over Glibc and CWSLinux; the helpers
// both engines share (time, descriptors, threads, host:port text) are in WSPosix (`systemError` stays in each engine:
// it builds WSCore's SystemError, which WSPosix cannot see). Would-block is an ordinary result, never an error; EINTR
// is retried here.
import CWSLinux
import Glibc
import WSCore
import WSPosix

/// The outcome of a non-blocking I/O call: would-block is an ordinary result, not an error.
enum IOResult<Value> {
    /// The kernel took (or gave) `Value`.
    case processed(Value)
    /// The call would have blocked.
    case wouldBlock
}

/// A `SystemError` for `call`, with the `strerror` text of `code`.
func systemError(_ call: String, _ code: Int32 = errno) -> SystemError {
    SystemError(errno: code, call: call, text: errnoText(code))
}

/// A string from a NUL-terminated C buffer.
func string(fromCBuffer buffer: [CChar]) -> String {
    buffer.withUnsafeBufferPointer { String(cString: $0.baseAddress!) }
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

    /// The raw address: 4 bytes for IPv4, 16 for IPv6 (network order), as a SOCKS5 request carries it.
    var addressBytes: [UInt8] {
        withUnsafeBytes(of: self.storage) { raw -> [UInt8] in
            if self.family == AF_INET {
                return withUnsafeBytes(of: raw.load(as: sockaddr_in.self).sin_addr) { Array($0) }
            }
            return withUnsafeBytes(of: raw.load(as: sockaddr_in6.self).sin6_addr) { Array($0) }
        }
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
