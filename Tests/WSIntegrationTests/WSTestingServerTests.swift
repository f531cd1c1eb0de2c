import Glibc
import Testing
import WSCore
import WSTesting

/// Tests of the WSTesting server, driven by a raw TCP client (no SDK client involved).
@Suite("WSTesting server")
struct WSTestingServerTests {
    /// The sample key of RFC 6455 section 1.3 and its accept value.
    static let sampleKey = "dGhlIHNhbXBsZSBub25jZQ=="
    static let sampleAccept = "s3pPLMBiTxaQ9kYGzzhZRbK+xOo="

    @Test("handshake answers 101 with the RFC 6455 Sec-WebSocket-Accept and records the request")
    func handshakeAccepted() throws {
        let server = try WebSocketTestServer.start()
        defer { server.stop() }
        #expect(server.url == "ws://127.0.0.1:\(server.port)/")
        let client = try RawClient(port: server.port)
        let response = try client.upgrade(target: "/chat?room=1", extraHeaders: ["X-Test: yes"])
        #expect(response.status == 101)
        #expect(response.headers["Sec-WebSocket-Accept"] == Self.sampleAccept)
        #expect(response.headers["Upgrade"]?.lowercased() == "websocket")
        #expect(response.headers["Sec-WebSocket-Protocol"] == nil)
        let requests = server.requests
        try #require(requests.count == 1)
        #expect(requests[0].method == "GET")
        #expect(requests[0].target == "/chat?room=1")
        #expect(requests[0].path == "/chat")
        #expect(requests[0].query == "room=1")
        #expect(requests[0].headers["x-test"] == "yes")
        #expect(requests[0].status == 101)
    }

    @Test("a masked text frame is echoed back unmasked, and a close is answered with the same code")
    func maskedTextEchoedUnmasked() throws {
        let server = try WebSocketTestServer.start()
        defer { server.stop() }
        let client = try RawClient(port: server.port)
        _ = try client.upgrade()
        // The masked "Hello" of RFC 6455 section 5.7.
        try client.send([0x81, 0x85, 0x37, 0xFA, 0x21, 0x3D, 0x7F, 0x9F, 0x4D, 0x51, 0x58])
        #expect(try client.readExactly(7) == [0x81, 0x05] + Array("Hello".utf8))

        let big = (0..<70_000).map { UInt8(truncatingIfNeeded: $0 &* 31) }
        try client.send(RawClient.maskedFrame(opcode: 0x2, payload: big))
        let echoed = try client.readFrame()
        #expect(echoed.opcode == 0x2 && echoed.fin && echoed.masked == false)
        #expect(echoed.payload == big)

        // A fragmented text message comes back whole.
        try client.send(RawClient.maskedFrame(opcode: 0x1, payload: Array("frag".utf8), fin: false))
        try client.send(RawClient.maskedFrame(opcode: 0x9, payload: [7]))
        try client.send(RawClient.maskedFrame(opcode: 0x0, payload: Array("mented".utf8), fin: true))
        let pong = try client.readFrame()
        #expect(pong.opcode == 0xA && pong.payload == [7])
        let whole = try client.readFrame()
        #expect(whole.opcode == 0x1 && whole.payload == Array("fragmented".utf8))

        try client.send(RawClient.maskedFrame(opcode: 0x8, payload: [0x0F, 0xA0] + Array("bye".utf8)))
        let close = try client.readFrame()
        #expect(close.opcode == 0x8)
        #expect(close.payload == [0x0F, 0xA0] + Array("bye".utf8))  // 4000 "bye"
        #expect(try client.readToEnd().isEmpty)
    }

    @Test("an unmasked client frame is refused with close code 1002")
    func unmaskedFrameRejected() throws {
        let server = try WebSocketTestServer.start()
        defer { server.stop() }
        let client = try RawClient(port: server.port)
        _ = try client.upgrade()
        try client.send([0x81, 0x05] + Array("Hello".utf8))
        let close = try client.readFrame()
        #expect(close.opcode == 0x8)
        try #require(close.payload.count >= 2)
        #expect(UInt16(close.payload[0]) << 8 | UInt16(close.payload[1]) == 1002)
        #expect(try client.readToEnd().isEmpty)
    }

    @Test("the first offered subprotocol the server supports is selected and recorded")
    func subprotocolSelection() throws {
        var configuration = WebSocketTestServer.Configuration()
        configuration.subprotocols = ["chat", "superchat"]
        let server = try WebSocketTestServer.start(configuration)
        defer { server.stop() }
        let client = try RawClient(port: server.port)
        let response = try client.upgrade(
            extraHeaders: ["Sec-WebSocket-Protocol: v2.bogus, superchat", "Sec-WebSocket-Protocol: chat"])
        #expect(response.status == 101)
        #expect(response.headers["Sec-WebSocket-Protocol"] == "superchat")
        let request = try #require(server.requests.first)
        #expect(request.offeredSubprotocols == ["v2.bogus", "superchat", "chat"])
        #expect(request.selectedSubprotocol == "superchat")

        let other = try RawClient(port: server.port)
        let plain = try other.upgrade(extraHeaders: ["Sec-WebSocket-Protocol: mqtt"])
        #expect(plain.status == 101)
        #expect(plain.headers["Sec-WebSocket-Protocol"] == nil)
        #expect(server.requests.count == 2)
        #expect(server.requests.last?.selectedSubprotocol == nil)
    }

    @Test("a request with a wrong version or no upgrade is refused and recorded")
    func badUpgradeRefused() throws {
        let server = try WebSocketTestServer.start()
        defer { server.stop() }
        let client = try RawClient(port: server.port)
        let response = try client.upgrade(version: "8")
        #expect(response.status == 426)
        #expect(response.headers["Sec-WebSocket-Version"] == "13")
        let plain = try RawClient(port: server.port)
        try plain.send(Array("GET / HTTP/1.1\r\nHost: x\r\n\r\n".utf8))
        #expect(try plain.readHead().status == 400)
        #expect(server.requests.map(\.status) == [426, 400])
    }

    @Test("a custom handler sees pings, messages and the close frame; broadcast reaches every client")
    func customAndBroadcast() throws {
        let server = try WebSocketTestServer.start(
            handler: .custom { session in
                while let frame = try session.receive() {
                    switch frame.kind {
                    case .text: try session.send("got \(try frame.readText()) on \(session.request.path)")
                    case .ping: try session.send([UInt8](frame.data.reversed()))
                    case .close: try session.close(CloseReason(code: 4001, message: "custom"))
                    default: break
                    }
                }
            })
        defer { server.stop() }
        let client = try RawClient(port: server.port)
        _ = try client.upgrade(target: "/custom")
        try client.send(RawClient.maskedFrame(opcode: 0x9, payload: [1, 2]))
        #expect(try client.readFrame().opcode == 0xA)
        #expect(try client.readFrame().payload == [2, 1])
        try client.send(RawClient.maskedFrame(opcode: 0x1, payload: Array("hi".utf8)))
        #expect(try client.readFrame().payload == Array("got hi on /custom".utf8))
        try client.send(RawClient.maskedFrame(opcode: 0x8, payload: [0x03, 0xE8]))
        let close = try client.readFrame()
        #expect(close.opcode == 0x8 && close.payload == [0x0F, 0xA1] + Array("custom".utf8))

        let hub = try WebSocketTestServer.start(handler: .broadcast)
        defer { hub.stop() }
        let a = try RawClient(port: hub.port)
        let b = try RawClient(port: hub.port)
        _ = try a.upgrade()
        _ = try b.upgrade()
        try waitUntil { hub.connectionCount == 2 }
        try a.send(RawClient.maskedFrame(opcode: 0x1, payload: Array("to all".utf8)))
        #expect(try a.readFrame().payload == Array("to all".utf8))
        #expect(try b.readFrame().payload == Array("to all".utf8))
    }

    @Test("stop sends 1001 to open sessions, frees the port and is idempotent")
    func stopClosesConnections() throws {
        let server = try WebSocketTestServer.start()
        let client = try RawClient(port: server.port)
        _ = try client.upgrade()
        try waitUntil { server.connectionCount == 1 }
        server.stop()
        let close = try client.readFrame()
        #expect(close.opcode == 0x8 && Array(close.payload.prefix(2)) == [0x03, 0xE9])
        #expect(server.connectionCount == 0)
        server.stop()
        var configuration = WebSocketTestServer.Configuration()
        configuration.port = server.port
        let again = try WebSocketTestServer.start(configuration)
        #expect(again.port == server.port)
        again.stop()
        #expect(throws: (any Error).self) { try RawClient(port: server.port) }
    }
}

// MARK: - A raw TCP WebSocket client

private func waitUntil(_ condition: () -> Bool) throws {
    for _ in 0..<500 {
        if condition() { return }
        usleep(10_000)
    }
    throw RawClient.Failure("condition not met within 5 s")
}

/// A blocking TCP client speaking just enough HTTP and WebSocket framing for the tests.
private final class RawClient {
    struct Failure: Error, CustomStringConvertible {
        let description: String
        init(_ description: String) { self.description = description }
    }

    struct Head {
        var status: Int
        var headers: HTTPHeaders
    }

    struct ReadFrame {
        var fin: Bool
        var opcode: UInt8
        var masked: Bool
        var payload: [UInt8]
    }

    let fd: Int32
    private var pending: [UInt8] = []

    init(port: Int) throws {
        let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        guard fd >= 0 else { throw Failure("socket failed") }
        var timeout = timeval(tv_sec: 5, tv_usec: 0)
        setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &timeout, socklen_t(MemoryLayout<timeval>.size))
        setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &timeout, socklen_t(MemoryLayout<timeval>.size))
        var address = sockaddr_in()
        address.sin_family = sa_family_t(AF_INET)
        address.sin_port = in_port_t(UInt16(port)).bigEndian
        address.sin_addr.s_addr = inet_addr("127.0.0.1")
        let rc = withUnsafePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) {
                connect(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size))
            }
        }
        guard rc == 0 else {
            close(fd)
            throw Failure("connect failed: errno \(errno)")
        }
        self.fd = fd
    }

    deinit { close(self.fd) }

    func send(_ bytes: [UInt8]) throws {
        var offset = 0
        while offset < bytes.count {
            let n = bytes.withUnsafeBytes {
                Glibc.send(self.fd, $0.baseAddress! + offset, bytes.count - offset, Int32(MSG_NOSIGNAL))
            }
            guard n > 0 else { throw Failure("send failed: errno \(errno)") }
            offset += n
        }
    }

    /// Reads more bytes into `pending`; returns false at EOF.
    private func fill() throws -> Bool {
        var buffer = [UInt8](repeating: 0, count: 65536)
        let n = buffer.withUnsafeMutableBytes { recv(self.fd, $0.baseAddress, $0.count, 0) }
        if n < 0 { throw Failure("recv failed: errno \(errno)") }
        if n == 0 { return false }
        self.pending += buffer[..<n]
        return true
    }

    func readExactly(_ count: Int) throws -> [UInt8] {
        while self.pending.count < count {
            guard try self.fill() else { throw Failure("EOF after \(self.pending.count) of \(count) bytes") }
        }
        defer { self.pending.removeFirst(count) }
        return Array(self.pending[..<count])
    }

    /// Everything until the server closes the connection.
    func readToEnd() throws -> [UInt8] {
        while try self.fill() {}
        defer { self.pending = [] }
        return self.pending
    }

    func readHead() throws -> Head {
        let end: Int
        while true {
            if let range = self.pending.firstRange(of: Array("\r\n\r\n".utf8)) {
                end = range.upperBound
                break
            }
            guard try self.fill() else { throw Failure("EOF in the response head") }
        }
        let text = String(decoding: self.pending[..<end], as: UTF8.self)
        self.pending.removeFirst(end)
        var lines = text.split(separator: "\r\n", omittingEmptySubsequences: true)
        let statusLine = lines.removeFirst().split(separator: " ")
        guard statusLine.count >= 2, let status = Int(statusLine[1]) else { throw Failure("bad status line") }
        var headers = HTTPHeaders()
        for line in lines {
            guard let colon = line.firstIndex(of: ":") else { continue }
            headers.add(
                String(line[..<colon]), String(line[line.index(after: colon)...].drop { $0 == " " }))
        }
        if let length = headers["Content-Length"].flatMap({ Int($0) }) { _ = try self.readExactly(length) }
        return Head(status: status, headers: headers)
    }

    func upgrade(target: String = "/", version: String = "13", extraHeaders: [String] = []) throws -> Head {
        var request = "GET \(target) HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\n"
        request += "Connection: keep-alive, Upgrade\r\nSec-WebSocket-Key: \(WSTestingServerTests.sampleKey)\r\n"
        request += "Sec-WebSocket-Version: \(version)\r\n"
        for header in extraHeaders { request += header + "\r\n" }
        request += "\r\n"
        try self.send(Array(request.utf8))
        return try self.readHead()
    }

    func readFrame() throws -> ReadFrame {
        let header = try self.readExactly(2)
        var length = Int(header[1] & 0x7F)
        if length == 126 {
            let ext = try self.readExactly(2)
            length = Int(ext[0]) << 8 | Int(ext[1])
        } else if length == 127 {
            length = try self.readExactly(8).reduce(0) { $0 << 8 | Int($1) }
        }
        let masked = header[1] & 0x80 != 0
        let key = masked ? try self.readExactly(4) : []
        var payload = try self.readExactly(length)
        if masked { for i in payload.indices { payload[i] ^= key[i % 4] } }
        return ReadFrame(fin: header[0] & 0x80 != 0, opcode: header[0] & 0x0F, masked: masked, payload: payload)
    }

    static func maskedFrame(opcode: UInt8, payload: [UInt8], fin: Bool = true) -> [UInt8] {
        let key: [UInt8] = [0x12, 0x34, 0x56, 0x78]
        var frame: [UInt8] = [(fin ? 0x80 : 0) | opcode]
        if payload.count < 126 {
            frame.append(0x80 | UInt8(payload.count))
        } else if payload.count <= 0xFFFF {
            frame += [0x80 | 126, UInt8(payload.count >> 8), UInt8(payload.count & 0xFF)]
        } else {
            frame.append(0x80 | 127)
            frame += (0..<8).reversed().map { UInt8(truncatingIfNeeded: payload.count >> ($0 * 8)) }
        }
        frame += key
        frame += payload.enumerated().map { $0.element ^ key[$0.offset % 4] }
        return frame
    }
}
