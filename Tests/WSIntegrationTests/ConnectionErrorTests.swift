// Connection failures as a user sees them: typed errors with the cause.
import Foundation
import Testing
import WSCore

@Suite("Connection errors")
struct ConnectionErrorTests {
    @Test("a server that refuses the upgrade: status, headers and body in the error", arguments: TestEngine.allCases)
    func upgradeRejected(engine: TestEngine) async throws {
        let peer = try await PythonPeer.start()
        defer { peer.stop() }
        try await withClient(engine.client()) { client in
            do {
                _ = try await client.webSocketSession(peer.url(path: "/reject?status=403"))
                Issue.record("the upgrade should have been refused")
            } catch let error as WebSocketError {
                #expect(error.code == .upgradeRejected)
                #expect(error.status == 403)
                #expect(error.bodyText.contains("forbidden by test"))
                #expect(error.headers["Content-Length"] != nil)
                #expect(error.message.contains("403"))
            }
        }
    }

    @Test("connection refused", arguments: TestEngine.allCases)
    func connectionRefused(engine: TestEngine) async throws {
        let port = try unusedPort()
        try await withClient(engine.client()) { client in
            do {
                _ = try await client.webSocketSession("ws://127.0.0.1:\(port)/")
                Issue.record("nothing listens there")
            } catch let error as WebSocketError {
                #expect(error.code == .connectionRefused)
            }
        }
    }

    @Test("a server that never answers the handshake trips the open timeout", arguments: TestEngine.allCases)
    func handshakeTimeout(engine: TestEngine) async throws {
        let peer = try await PythonPeer.start()
        defer { peer.stop() }
        try await withClient(engine.client()) { client in
            let start = ContinuousClock.now
            do {
                _ = try await client.webSocketSession(peer.url(path: "/slow-handshake?delay=30")) {
                    $0.timeout.openTimeout = .milliseconds(500)
                }
                Issue.record("the handshake should have timed out")
            } catch let error as WebSocketError {
                #expect(error.code == .timedOut)
            }
            // Far below the server's 30 s delay, with room for a loaded machine.
            #expect(ContinuousClock.now - start < .seconds(20))
        }
    }

    @Test("invalid URLs are rejected before connecting")
    func invalidURL() async throws {
        try await withClient(TestEngine.cio.client()) { client in
            for url in ["ftp://example.com/", "ws://", "ws://host:99999/", "not a url", "ws://a b/"] {
                do {
                    _ = try await client.webSocketSession(url)
                    Issue.record("\(url) should be invalid")
                } catch let error as WebSocketError {
                    #expect(error.code == .invalidURL)
                }
            }
            await #expect(throws: WebSocketError.self) {
                try await client.wss("ws://127.0.0.1:1/") { _ in }
            }
        }
    }
}

/// A loopback port nobody listens on (bound and released).
func unusedPort() throws -> Int {
    let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
    defer { close(fd) }
    var address = sockaddr_in()
    address.sin_family = sa_family_t(AF_INET)
    address.sin_addr.s_addr = inet_addr("127.0.0.1")
    address.sin_port = 0
    var length = socklen_t(MemoryLayout<sockaddr_in>.size)
    let bound = withUnsafeMutablePointer(to: &address) {
        $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { pointer -> Int32 in
            guard bind(fd, pointer, length) == 0 else { return -1 }
            return getsockname(fd, pointer, &length)
        }
    }
    guard bound == 0 else { throw TestPeerError(description: "could not bind a probe socket") }
    return Int(UInt16(bigEndian: address.sin_port))
}
