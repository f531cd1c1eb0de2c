// A scripted raw TCP server for handshake misbehaviour no real server shows: it reads the upgrade request,
// answers with whatever the test builds from the client's Sec-WebSocket-Key, and keeps the connection open.
import Foundation
import Synchronization
import WSCore

#if canImport(Glibc)
import Glibc
#endif

final class RawHandshakeServer: Sendable {
    let port: Int
    private let listener: Int32
    private let connections = Mutex<[Int32]>([])
    private let stopped = Atomic<Bool>(false)

    /// The correct Sec-WebSocket-Accept for `key`.
    static func accept(for key: String) -> String { WebSocketHandshake.acceptValue(forKey: key) }

    init(respond: @escaping @Sendable (String) -> [UInt8]) throws {
        (self.listener, self.port) = try loopbackListener(backlog: 16)
        let fd = self.listener
        let thread = Thread { [self] in
            while !self.stopped.load(ordering: .acquiring) {
                let client = Glibc.accept(fd, nil, nil)
                if client < 0 { return }
                // Not inherited by child processes (Python peers, wsc), which would keep the connection open.
                _ = fcntl(client, F_SETFD, FD_CLOEXEC)
                self.connections.withLock { $0.append(client) }
                var request: [UInt8] = []
                var buffer = [UInt8](repeating: 0, count: 4096)
                while !request.ends(with: Array("\r\n\r\n".utf8)) {
                    let n = buffer.withUnsafeMutableBytes { recv(client, $0.baseAddress, $0.count, 0) }
                    if n <= 0 { break }
                    request += buffer[0..<n]
                }
                let reply = respond(webSocketKey(inRequest: request))
                _ = reply.withUnsafeBytes { send(client, $0.baseAddress, $0.count, Int32(MSG_NOSIGNAL)) }
            }
        }
        thread.start()
    }

    func stop() {
        guard !self.stopped.exchange(true, ordering: .acquiringAndReleasing) else { return }
        shutdown(self.listener, Int32(SHUT_RDWR))
        close(self.listener)
        for fd in self.connections.withLock({ $0 }) { close(fd) }
    }

    deinit { self.stop() }
}

extension Array where Element == UInt8 {
    fileprivate func ends(with suffix: [UInt8]) -> Bool {
        self.count >= suffix.count && Array(self[(self.count - suffix.count)...]) == suffix
    }
}

/// A listening TCP socket on 127.0.0.1 with a free port, for scripted test servers; close-on-exec, so child
/// processes do not inherit it (sockets it accepts are not: set FD_CLOEXEC on them too).
func loopbackListener(backlog: Int32) throws -> (fd: Int32, port: Int) {
    let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue | SOCK_CLOEXEC.rawValue), 0)
    guard fd >= 0 else { throw TestPeerError(description: "socket() failed (errno \(errno))") }
    var one: Int32 = 1
    setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, socklen_t(MemoryLayout<Int32>.size))
    var address = sockaddr_in()
    address.sin_family = sa_family_t(AF_INET)
    address.sin_addr.s_addr = inet_addr("127.0.0.1")
    var length = socklen_t(MemoryLayout<sockaddr_in>.size)
    let ok = withUnsafeMutablePointer(to: &address) {
        $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { p in
            bind(fd, p, length) == 0 && listen(fd, backlog) == 0 && getsockname(fd, p, &length) == 0
        }
    }
    guard ok else {
        close(fd)
        throw TestPeerError(description: "scripted test server: bind/listen on 127.0.0.1 failed (errno \(errno))")
    }
    return (fd, Int(UInt16(bigEndian: address.sin_port)))
}

/// The Sec-WebSocket-Key of an upgrade request's head ("" when absent).
func webSocketKey(inRequest request: [UInt8]) -> String {
    String(decoding: request, as: UTF8.self).split(separator: "\r\n")
        .first { $0.lowercased().hasPrefix("sec-websocket-key:") }
        .map { $0.dropFirst("sec-websocket-key:".count).trimmingCharacters(in: .whitespaces) } ?? ""
}
