// This process's own TCP sockets, looked at from the outside by their ports: how many received bytes wait unread in
// one, how many sent ones the peer has not acknowledged, and its TCP state. A test waits for a state of the
// connection under test with these (the client has read what was sent; the peer's bytes and FIN have arrived)
// instead of sleeping and hoping the state was reached.
import Glibc

/// Reads the kernel's view of one of this process's IPv4 TCP sockets; every function answers `nil` when the
/// descriptor is no longer such a socket.
package enum SocketProbe {
    /// The TCP state `ESTABLISHED`: connected.
    package static let established: UInt8 = 1
    /// The TCP state `CLOSE`: the connection is gone (for a socket still open here: the peer reset it).
    package static let closed: UInt8 = 7
    /// The TCP state `CLOSE_WAIT`: the peer's FIN has arrived, after everything it sent before it.
    package static let closeWait: UInt8 = 8

    /// The descriptor of this process's IPv4 TCP socket connected to `remotePort` (from `localPort` when given),
    /// or `nil` when there is none: not connected yet, or already closed.
    package static func descriptor(localPort: Int? = nil, remotePort: Int) -> Int32? {
        guard let directory = opendir("/proc/self/fd") else { return nil }
        defer { closedir(directory) }
        while let entry = readdir(directory) {
            let name = withUnsafeBytes(of: entry.pointee.d_name) { raw in
                String(decoding: raw.prefix { $0 != 0 }, as: UTF8.self)
            }
            guard let fd = Int32(name), let ports = ports(of: fd) else { continue }
            if ports.remote == remotePort && (localPort == nil || ports.local == localPort) { return fd }
        }
        return nil
    }

    /// The local and remote ports of `fd` when it is a connected IPv4 TCP socket.
    package static func ports(of fd: Int32) -> (local: Int, remote: Int)? {
        var type: Int32 = 0
        var typeLength = socklen_t(MemoryLayout<Int32>.size)
        guard getsockopt(fd, SOL_SOCKET, SO_TYPE, &type, &typeLength) == 0, type == Int32(SOCK_STREAM.rawValue),
            let local = port(of: fd, peer: false), let remote = port(of: fd, peer: true)
        else { return nil }
        return (local, remote)
    }

    /// Received bytes that wait in `fd` for the process to read them (FIONREAD).
    package static func unreadBytes(_ fd: Int32) -> Int? {
        var count: Int32 = 0
        return ioctl(fd, UInt(FIONREAD), &count) == 0 ? Int(count) : nil
    }

    /// Sent bytes that the peer has not acknowledged yet, queued or in flight (SIOCOUTQ): 0 means everything
    /// written so far has reached the peer's kernel.
    package static func unacknowledgedBytes(_ fd: Int32) -> Int? {
        var count: Int32 = 0
        return ioctl(fd, UInt(TIOCOUTQ), &count) == 0 ? Int(count) : nil  // SIOCOUTQ is TIOCOUTQ
    }

    /// The TCP state of `fd` (`tcpi_state`, the first byte of `struct tcp_info`), e.g. ``closeWait``.
    package static func tcpState(_ fd: Int32) -> UInt8? {
        var info = [UInt8](repeating: 0, count: 256)
        var length = socklen_t(info.count)
        let tcpInfo: Int32 = 11  // TCP_INFO from <netinet/tcp.h>, which the Glibc module does not import
        let result = info.withUnsafeMutableBytes {
            getsockopt(fd, Int32(IPPROTO_TCP), tcpInfo, $0.baseAddress, &length)
        }
        return result == 0 && length > 0 ? info[0] : nil
    }

    /// Polls `condition` every millisecond until it holds, at most `timeout`; blocks the calling thread (meant for
    /// a server script's own thread). Returns whether it held.
    package static func poll(timeout: Duration, _ condition: () -> Bool) -> Bool {
        let deadline = ContinuousClock.now + timeout
        while !condition() {
            if ContinuousClock.now >= deadline { return false }
            usleep(1_000)
        }
        return true
    }

    private static func port(of fd: Int32, peer: Bool) -> Int? {
        var address = sockaddr_in()
        var length = socklen_t(MemoryLayout<sockaddr_in>.size)
        let result = withUnsafeMutablePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) {
                peer ? getpeername(fd, $0, &length) : getsockname(fd, $0, &length)
            }
        }
        guard result == 0, address.sin_family == sa_family_t(AF_INET) else { return nil }
        return Int(UInt16(bigEndian: address.sin_port))
    }
}

/// Polls `condition` every 5 ms until it holds, at most `timeout`, suspending in between (no thread is held).
/// Returns whether it held.
package func eventually(timeout: Duration = .seconds(10), _ condition: () -> Bool) async -> Bool {
    let deadline = ContinuousClock.now + timeout
    while !condition() {
        if ContinuousClock.now >= deadline { return false }
        try? await Task.sleep(for: .milliseconds(5))
    }
    return true
}

/// Waits until an engine's loop thread (`executor`, a transport's) has run two empty jobs, one after the other.
/// A job runs at the end of a loop round and the next one in a later round, after that round's `epoll_wait`: when
/// this returns, the loop has handled every socket event that was pending when it was called.
package func loopRounds(_ executor: (any TaskExecutor)?) async {
    for _ in 0..<2 { await Task(executorPreference: executor) {}.value }
}
