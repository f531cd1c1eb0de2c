// Proves the test-support plumbing: the Python peer starts, listens on loopback and speaks WebSocket's opening
// handshake; the TLS material gets made. Run alone with `swift test --filter PeerSmoke`.

import Foundation
import Testing

#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#endif

@Suite("PeerSmoke")
struct PeerSmokeTests {
    @Test("the peer prints its port and accepts a TCP connection there")
    func peerListens() async throws {
        let peer = try await PythonPeer.start()
        defer { peer.stop() }
        #expect(peer.port > 0)
        #expect(peer.url(path: "/echo") == "ws://127.0.0.1:\(peer.port)/echo")
        #expect(peer.url(path: "headers", host: "localhost") == "ws://localhost:\(peer.port)/headers")
        let socket = try RawSocket(port: peer.port)
        socket.close()
    }

    @Test("the peer answers a raw upgrade request with 101 and the right accept key")
    func peerUpgrades() async throws {
        let peer = try await PythonPeer.start()
        defer { peer.stop() }
        let response = try RawSocket.exchange(
            port: peer.port,
            request: "GET /echo HTTP/1.1\r\nHost: 127.0.0.1:\(peer.port)\r\nUpgrade: websocket\r\n"
                + "Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
        )
        #expect(response.hasPrefix("HTTP/1.1 101"), "\(response)\n--- peer log:\n\(peer.logTail())")
        #expect(response.contains("s3pPLMBiTxaQ9kYGzzhZRbK+xOo="), "\(response)")
    }

    @Test("/reject answers with the requested status")
    func peerRejects() async throws {
        let peer = try await PythonPeer.start()
        defer { peer.stop() }
        let response = try RawSocket.exchange(
            port: peer.port,
            request: "GET /reject?status=403 HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\n"
                + "Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
        )
        #expect(response.hasPrefix("HTTP/1.1 403"), "\(response)")
        #expect(response.contains("forbidden by test"), "\(response)")
    }

    @Test("stop() ends the peer and the port closes")
    func peerStops() async throws {
        let peer = try await PythonPeer.start()
        let port = peer.port
        peer.stop()
        #expect(!peer.isRunning)
        #expect(throws: TestPeerError.self) { try RawSocket(port: port) }
        peer.stop()  // a second stop is harmless
    }

    @Test("the TLS material exists and a wss peer starts with it")
    func certificatesAndTLSPeer() async throws {
        let certs = try await TestCertificates.load()
        for identity in [certs.ca, certs.server, certs.wrongHost, certs.selfSigned, certs.expired, certs.client] {
            #expect(FileManager.default.fileExists(atPath: identity.certificate), "\(identity.certificate)")
            #expect(FileManager.default.fileExists(atPath: identity.privateKey), "\(identity.privateKey)")
        }
        #expect(try await TestCertificates.load().directory == certs.directory, "made once per process")
        #expect(try TestCertificates.shared().directory == certs.directory, "the synchronous form shares them")
        let peer = try await PythonPeer.start(tls: .init(certs.server))
        defer { peer.stop() }
        #expect(peer.url(path: "/echo", host: "localhost") == "wss://localhost:\(peer.port)/echo")
        let socket = try RawSocket(port: peer.port)
        socket.close()
    }
}

/// A blocking IPv4 TCP client socket on 127.0.0.1, just enough for the smoke tests.
struct RawSocket {
    let fd: Int32

    init(port: Int) throws(TestPeerError) {
        #if canImport(Glibc)
        let fd = Glibc.socket(AF_INET, Int32(SOCK_STREAM.rawValue | SOCK_CLOEXEC.rawValue), 0)
        #else
        let fd = socket(AF_INET, SOCK_STREAM, 0)
        #endif
        guard fd >= 0 else { throw TestPeerError(description: "socket() failed: errno \(errno)") }
        var address = sockaddr_in()
        address.sin_family = sa_family_t(AF_INET)
        address.sin_port = in_port_t(UInt16(port).bigEndian)
        address.sin_addr = in_addr(s_addr: inet_addr("127.0.0.1"))
        let result = withUnsafePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) {
                connect(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size))
            }
        }
        guard result == 0 else {
            let code = errno
            Glibc.close(fd)
            throw TestPeerError(description: "connect(127.0.0.1:\(port)) failed: errno \(code)")
        }
        var timeout = timeval(tv_sec: 10, tv_usec: 0)
        setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &timeout, socklen_t(MemoryLayout<timeval>.size))
        self.fd = fd
    }

    func close() {
        _ = Glibc.close(fd)
    }

    /// Connects, sends `request`, and returns what arrives until the response head ends (or the peer closes).
    static func exchange(port: Int, request: String) throws -> String {
        let socket = try RawSocket(port: port)
        defer { socket.close() }
        let bytes = Array(request.utf8)
        var sent = 0
        while sent < bytes.count {
            let count = bytes[sent...].withUnsafeBytes { send(socket.fd, $0.baseAddress, $0.count, 0) }
            guard count > 0 else { throw TestPeerError(description: "send() failed: errno \(errno)") }
            sent += count
        }
        var received: [UInt8] = []
        var buffer = [UInt8](repeating: 0, count: 4096)
        while true {
            let count = buffer.withUnsafeMutableBytes { recv(socket.fd, $0.baseAddress, $0.count, 0) }
            if count <= 0 { break }
            received += buffer[0..<count]
            let text = String(decoding: received, as: UTF8.self)
            // a 101 has no body; a rejection carries a short body after the head
            if text.hasPrefix("HTTP/1.1 101"), text.contains("\r\n\r\n") { break }
        }
        return String(decoding: received, as: UTF8.self)
    }
}
