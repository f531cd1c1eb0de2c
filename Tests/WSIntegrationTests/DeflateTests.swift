// permessage-deflate (RFC 7692) end to end: against the Python websockets server (an independent implementation
// that decompresses what we send and compresses what we receive) in several parameter combinations, and against
// a scripted raw server for decompression bombs and invalid negotiation responses.
import Foundation
import Synchronization
import Testing
import WSCore
import WSExtensions

#if canImport(Glibc)
import Glibc
#endif

/// One negotiation scenario against ws_server.py.
struct DeflateScenario: Sendable, CustomStringConvertible {
    let description: String
    /// ws_server.py options (`--deflate` is always passed).
    var serverArguments: [String] = []
    /// What the client offers.
    var configuration = PerMessageDeflate.Configuration()
    /// The parameters the server must answer with, as `name` or `name=value`, in any order; `nil`: the server
    /// must decline (no extension on the session).
    var expected: Set<String>?
}

/// Runs `body` with a session to `path` on a deflate-enabled Python peer, after checking what was negotiated.
private func withDeflateSession(
    _ engine: TestEngine,
    _ scenario: DeflateScenario,
    path: String = "/echo",
    configure: @escaping @Sendable (inout WebSockets.Configuration) -> Void = { _ in },
    _ body: (WebSocketSession) async throws -> Void
) async throws {
    let peer = try await PythonPeer.start(deflate: true, arguments: scenario.serverArguments)
    defer { peer.stop() }
    let configuration = scenario.configuration
    let client = engine.client { ws in
        ws.maxMessageSize = 16 << 20
        ws.maxFrameSize = 16 << 20
        configure(&ws)
        try? ws.extensions { try $0.install(.perMessageDeflate(configuration)) }
    }
    guard client.isSupported(.webSocketExtensions) else {
        // This engine cannot carry extensions; opening must say so (checked in `unsupportedEngine`).
        await client.close()
        return
    }
    try await withClient(client) { client in
        try await client.webSocket(peer.url(path: path)) { session in
            if let expected = scenario.expected {
                let ext = try #require(session.extensions.first, "the server must accept permessage-deflate")
                #expect(session.extensions.count == 1)
                #expect(ext.name == "permessage-deflate")
                #expect(ext.reservedBits == .rsv1)
                let parameters = Set(ext.header.parameters.map { p in p.value.map { "\(p.name)=\($0)" } ?? p.name })
                #expect(parameters == expected, "negotiated: \(ext.header)")
            } else {
                #expect(session.extensions.isEmpty, "the server must decline: \(session.extensions.map(\.header))")
            }
            try await body(session)
        }
    }
}

/// Deterministic text with repetition (compressible like JSON or logs).
private func sampleText(_ count: Int, seed: Int = 0) -> String {
    let words = [
        "alpha", "beta", "gamma", "delta", "websocket", "deflate", "{\"id\":", "\"name\":", "héllo", "✓", " ", "\n",
    ]
    var out = ""
    var i = seed
    while out.utf8.count < count {
        out += words[(i &* 7 &+ i / 3) % words.count]
        i += 1
    }
    return out
}

/// Deterministic incompressible bytes.
private func noise(_ count: Int, seed: UInt64 = 3) -> [UInt8] {
    var state = seed
    return (0..<count).map { _ in
        state = state &* 6_364_136_223_846_793_005 &+ 1_442_695_040_888_963_407
        return UInt8(truncatingIfNeeded: state >> 56)
    }
}

/// The echo workload every scenario runs: small, empty, unicode, binary, large, incompressible and fragmented
/// messages, in both directions through the server's decompressor and compressor.
private func echoWorkload(_ session: WebSocketSession) async throws {
    for text in ["Hello", "Hello", "", "héllo wörld ✓ 🎉 — 日本語", String(repeating: "Hello, WebSocket! ", count: 20)] {
        try await session.send(text)
        #expect(try await nextMessage(session).readText() == text)
    }
    let binary = (0..<1024).map { UInt8(truncatingIfNeeded: $0 % 17) }
    try await session.send(binary)
    let binaryEcho = try await nextMessage(session)
    #expect(binaryEcho.kind == .binary && binaryEcho.readBytes() == binary)

    let large = sampleText(600_000, seed: 5)
    try await session.send(large)
    #expect(try await nextMessage(session).readText() == large)
    let random = noise(300_000)
    try await session.send(random)
    #expect(try await nextMessage(session).readBytes() == random)

    // Our own fragments (RSV1 on the first only; the server reassembles, inflates and echoes one message).
    let parts = [sampleText(5000, seed: 1), "", sampleText(20_000, seed: 2), "end ✓"]
    try await session.send(Frame.text(parts[0], fin: false))
    for (i, part) in parts.enumerated().dropFirst() {
        try await session.send(Frame.continuation(Array(part.utf8), fin: i == parts.count - 1))
    }
    #expect(try await nextMessage(session).readText() == parts.joined())
    // A fragmented message whose last fragment is empty.
    try await session.send(Frame.binary(binary, fin: false))
    try await session.send(Frame.continuation([], fin: true))
    #expect(try await nextMessage(session).readBytes() == binary)

    // Many similar messages: with context takeover each refers back to the ones before.
    for i in 0..<50 {
        let text = "{\"seq\":\(i),\"event\":\"tick\",\"payload\":\"\(sampleText(200, seed: i % 3))\"}"
        try await session.send(text)
        #expect(try await nextMessage(session).readText() == text)
    }
}

@Suite("permessage-deflate against the Python websockets server")
struct DeflateTests {
    static let scenarios: [DeflateScenario] = {
        var all: [DeflateScenario] = [
            // websockets' defaults: it caps both windows at 12.
            DeflateScenario(
                description: "defaults",
                expected: ["server_max_window_bits=12", "client_max_window_bits=12"]),
            DeflateScenario(
                description: "client_no_context_takeover offered",
                configuration: .init(clientNoContextTakeover: true),
                expected: ["client_no_context_takeover", "server_max_window_bits=12", "client_max_window_bits=12"]),
            DeflateScenario(
                description: "server_no_context_takeover offered",
                configuration: .init(serverNoContextTakeover: true),
                expected: ["server_no_context_takeover", "server_max_window_bits=12", "client_max_window_bits=12"]),
            DeflateScenario(
                description: "both no_context_takeover forced by the server",
                serverArguments: ["--deflate-server-no-context-takeover", "--deflate-client-no-context-takeover"],
                expected: ["server_no_context_takeover", "client_no_context_takeover"]),
            DeflateScenario(
                description: "client_max_window_bits=10 offered",
                configuration: .init(clientMaxWindowBits: 10),
                expected: ["server_max_window_bits=12", "client_max_window_bits=10"]),
            // The server picks 9 after our bare offer.
            DeflateScenario(
                description: "client_max_window_bits=9 chosen by the server",
                serverArguments: ["--deflate-client-max-window-bits", "9"],
                expected: ["client_max_window_bits=9"]),
            // We compress with zlib's 9-bit window; Python inflates with an 8-bit one.
            DeflateScenario(
                description: "client_max_window_bits=8 offered",
                serverArguments: ["--deflate-client-max-window-bits", "15"],
                configuration: .init(clientMaxWindowBits: 8),
                expected: ["client_max_window_bits=8"]),
            // websockets refuses an 8-bit window for itself and so declines the whole offer.
            DeflateScenario(
                description: "server_max_window_bits=8 offered (declined)",
                configuration: .init(serverMaxWindowBits: 8),
                expected: nil),
            DeflateScenario(
                description: "everything at once, level 9",
                configuration: .init(
                    compressionLevel: 9, memoryLevel: 9, clientNoContextTakeover: true, serverNoContextTakeover: true,
                    clientMaxWindowBits: 11, serverMaxWindowBits: 10, compressionThreshold: 0),
                expected: [
                    "client_no_context_takeover", "server_no_context_takeover", "server_max_window_bits=10",
                    "client_max_window_bits=11",
                ]),
        ]
        for bits in 9...15 {
            all.append(
                DeflateScenario(
                    description: "server_max_window_bits=\(bits) offered",
                    serverArguments: ["--deflate-server-max-window-bits", "15"],
                    configuration: .init(serverMaxWindowBits: bits),
                    expected: ["server_max_window_bits=\(bits)"]))
        }
        return all
    }()

    @Test("echo with compression negotiated", arguments: TestEngine.allCases, scenarios)
    func echo(engine: TestEngine, scenario: DeflateScenario) async throws {
        try await withDeflateSession(engine, scenario) { session in
            try await echoWorkload(session)
        }
    }

    @Test("the offer on the wire; compressed messages the server fragments", arguments: TestEngine.allCases)
    func offerAndServerFragments(engine: TestEngine) async throws {
        let defaults = Self.scenarios[0]
        try await withDeflateSession(engine, defaults, path: "/headers") { session in
            let json = try await nextMessage(session).readText()
            let headers = try JSONDecoder().decode([String: String].self, from: Data(json.utf8))
            #expect(headers["sec-websocket-extensions"] == "permessage-deflate; client_max_window_bits")
        }
        // websockets compresses each fragment with a sync flush; RSV1 on the first.
        try await withDeflateSession(engine, defaults, path: "/fragmented?count=40&size=3000") { session in
            let message = try await nextMessage(session)
            #expect(try message.readText() == String(repeating: "x", count: 120_000))
            #expect(message.reservedBits.isEmpty)
            try await echoWorkload(session)
        }
    }

    @Test(
        "a compressed message over maxMessageSize from the server ends the session with 1009",
        arguments: TestEngine.allCases)
    func tooBigAfterInflation(engine: TestEngine) async throws {
        // /send-then-close sends 3 messages of 300 KB (compressible), each under 64 KiB on the wire.
        try await withDeflateSession(
            engine, Self.scenarios[0], path: "/send-then-close?count=3&size=300000",
            configure: { $0.maxMessageSize = 200_000 }
        ) { session in
            await #expect {
                _ = try await nextMessage(session)
            } throws: { error in
                guard let error = error as? WebSocketError else { return false }
                return error.code == .messageTooBig && error.closeCode == .messageTooBig
            }
            #expect(await session.closeReason?.code == .messageTooBig)
        }
    }

    @Test(
        "engines without extension support refuse permessage-deflate, naming the CIO engine",
        arguments: TestEngine.allCases)
    func unsupportedEngine(engine: TestEngine) async throws {
        let client = engine.client { ws in try? ws.extensions { try $0.install(.perMessageDeflate()) } }
        try await withClient(client) { client in
            guard !client.isSupported(.webSocketExtensions) else { return }
            await #expect {
                _ = try await client.webSocketSession("ws://127.0.0.1:9/")
            } throws: { error in
                guard let error = error as? WebSocketError else { return false }
                return error.code == .unsupported && error.message.contains("permessage-deflate")
                    && error.message.contains("CIO")
            }
        }
    }
}

// MARK: - Scripted server: bombs and bad negotiation

/// A one-connection raw server: answers the upgrade with `Sec-WebSocket-Extensions: <extensions>`, sends `frames`,
/// then records the close frame the client sends back.
private final class ScriptedDeflateServer: Sendable {
    let port: Int
    private let listener: Int32
    private let received = Mutex<CloseReason??>(nil)
    private let done = Atomic<Bool>(false)

    init(extensions: String, frames: [UInt8]) throws {
        (self.listener, self.port) = try loopbackListener(backlog: 4)
        let thread = Thread { [self] in self.serve(extensions: extensions, frames: frames) }
        thread.start()
    }

    private func serve(extensions: String, frames: [UInt8]) {
        defer { self.done.store(true, ordering: .releasing) }
        let client = accept(self.listener, nil, nil)
        guard client >= 0 else { return }
        defer { close(client) }
        var timeout = timeval(tv_sec: 10, tv_usec: 0)
        setsockopt(client, SOL_SOCKET, SO_RCVTIMEO, &timeout, socklen_t(MemoryLayout<timeval>.size))
        var buffer: [UInt8] = []
        func fill() -> Bool {
            var chunk = [UInt8](repeating: 0, count: 65536)
            let n = chunk.withUnsafeMutableBytes { recv(client, $0.baseAddress, $0.count, 0) }
            if n <= 0 { return false }
            buffer += chunk[0..<n]
            return true
        }
        while !String(decoding: buffer, as: UTF8.self).contains("\r\n\r\n") {
            guard fill() else { return }
        }
        let key = webSocketKey(inRequest: buffer)
        buffer = []
        let head =
            "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
            + "Sec-WebSocket-Accept: \(WebSocketHandshake.acceptValue(forKey: key))\r\n"
            + "Sec-WebSocket-Extensions: \(extensions)\r\n\r\n"
        let reply = Array(head.utf8) + frames
        var sent = 0
        while sent < reply.count {
            let n = reply[sent...].withUnsafeBytes { send(client, $0.baseAddress, $0.count, Int32(MSG_NOSIGNAL)) }
            if n <= 0 { return }
            sent += n
        }
        // Read the client's frames (masked) until its close frame.
        while true {
            while buffer.count < 2 { guard fill() else { return } }
            var length = Int(buffer[1] & 0x7F)
            var offset = 2
            if length == 126 {
                while buffer.count < 4 { guard fill() else { return } }
                length = Int(buffer[2]) << 8 | Int(buffer[3])
                offset = 4
            } else if length == 127 {
                while buffer.count < 10 { guard fill() else { return } }
                length = buffer[2..<10].reduce(0) { $0 << 8 | Int($1) }
                offset = 10
            }
            while buffer.count < offset + 4 + length { guard fill() else { return } }
            let mask = Array(buffer[offset..<offset + 4])
            let payload = (0..<length).map { buffer[offset + 4 + $0] ^ mask[$0 % 4] }
            let opcode = buffer[0] & 0x0F
            buffer.removeFirst(offset + 4 + length)
            if opcode == 0x8 {
                let reason: CloseReason? =
                    payload.count >= 2
                    ? CloseReason(
                        code: .init(UInt16(payload[0]) << 8 | UInt16(payload[1])),
                        message: String(decoding: payload[2...], as: UTF8.self))
                    : nil
                self.received.withLock { $0 = .some(reason) }
                return
            }
        }
    }

    /// The close frame the client sent (`.some(nil)`: one without a code), waiting up to 5 s for it.
    func closeReceived() async throws -> CloseReason?? {
        for _ in 0..<250 where !self.done.load(ordering: .acquiring) { try await Task.sleep(for: .milliseconds(20)) }
        return self.received.withLock { $0 }
    }

    var url: String { "ws://127.0.0.1:\(self.port)/" }

    deinit {
        shutdown(self.listener, Int32(SHUT_RDWR))
        close(self.listener)
    }
}

/// One compressed message with RSV1, built through the extension itself from `parts` (fragments compressed with
/// sync flushes, as a streaming server would): the whole never exists uncompressed here.
func compressedMessage(_ parts: Int, of part: [UInt8]) throws -> [UInt8] {
    let factory = try PerMessageDeflate.perMessageDeflate(.init(compressionLevel: 9, memoryLevel: 9))
    let ext = try factory.negotiate(response: WebSocketExtensionHeader(name: "permessage-deflate"))
    let context = WebSocketExtensionContext(maxMessageSize: .max)
    var payload: [UInt8] = []
    for i in 0..<parts {
        let frame = i == 0 ? Frame.binary(part, fin: parts == 1) : Frame.continuation(part, fin: i == parts - 1)
        payload += try ext.processOutgoing(frame, context: context).data
    }
    return payload
}

@Suite("permessage-deflate against a scripted server")
struct ScriptedServerDeflateTests {
    @Test(
        "a ~100 KiB frame that inflates to 100 MiB ends the session with 1009 at the 1 MiB limit",
        arguments: TestEngine.allCases)
    func bomb(engine: TestEngine) async throws {
        let bomb = try compressedMessage(25, of: [UInt8](repeating: 0, count: 4 << 20))
        #expect(bomb.count < 120 << 10)
        let server = try ScriptedDeflateServer(extensions: "permessage-deflate", frames: rawFrame(0xC2, bomb))
        let client = engine.client { ws in try? ws.extensions { try $0.install(.perMessageDeflate()) } }
        guard client.isSupported(.webSocketExtensions) else {
            await client.close()
            return
        }
        try await withClient(client) { client in
            let session = try await client.webSocketSession(server.url)
            #expect(session.extensions.map(\.name) == ["permessage-deflate"])
            await #expect {
                _ = try await nextMessage(session)
            } throws: { error in
                guard let error = error as? WebSocketError else { return false }
                return error.code == .messageTooBig && error.closeCode == .messageTooBig
                    && error.message.contains("\(1 << 20)-byte limit")
            }
            #expect(await session.closeReason?.code == .messageTooBig)
        }
        #expect(try await server.closeReceived()??.code == .messageTooBig, "the server must receive close 1009")
    }

    @Test("corrupt compressed data ends the session with 1002", arguments: TestEngine.allCases)
    func corrupt(engine: TestEngine) async throws {
        let server = try ScriptedDeflateServer(
            extensions: "permessage-deflate", frames: rawFrame(0xC1, [0xFF, 0xFF, 0xFF, 0xFF]))
        let client = engine.client { ws in try? ws.extensions { try $0.install(.perMessageDeflate()) } }
        guard client.isSupported(.webSocketExtensions) else {
            await client.close()
            return
        }
        try await withClient(client) { client in
            let session = try await client.webSocketSession(server.url)
            await #expect {
                _ = try await nextMessage(session)
            } throws: { error in
                (error as? WebSocketError)?.code == .protocolViolation
            }
        }
        #expect(try await server.closeReceived()??.code == .protocolError)
    }

    static let badResponses = [
        "permessage-deflate; server_max_window_bits=16",
        "permessage-deflate; server_max_window_bits",
        "permessage-deflate; client_max_window_bits=7",
        "permessage-deflate; server_no_context_takeover=yes",
        "permessage-deflate; mystery",
        "permessage-deflate; server_no_context_takeover; server_no_context_takeover",
        "permessage-deflate, permessage-deflate",
    ]

    @Test(
        "a response that violates the offer fails the handshake with invalidHandshake", arguments: TestEngine.allCases,
        badResponses)
    func badNegotiation(engine: TestEngine, response: String) async throws {
        let server = try ScriptedDeflateServer(extensions: response, frames: [])
        let client = engine.client { ws in try? ws.extensions { try $0.install(.perMessageDeflate()) } }
        guard client.isSupported(.webSocketExtensions) else {
            await client.close()
            return
        }
        try await withClient(client) { client in
            let error = await #expect(throws: WebSocketError.self) {
                _ = try await client.webSocketSession(server.url)
            }
            #expect(error?.code == .invalidHandshake, "\(String(describing: error))")
        }
    }

    @Test("a server offering a window smaller than offered is accepted and used", arguments: TestEngine.allCases)
    func smallerServerWindow(engine: TestEngine) async throws {
        // "Hello" twice from a server with a 9-bit window; the second refers back to the first.
        let frames =
            rawFrame(0xC1, [0xF2, 0x48, 0xCD, 0xC9, 0xC9, 0x07, 0x00]) + rawFrame(0xC1, [0xF2, 0x00, 0x11, 0x00, 0x00])
        let server = try ScriptedDeflateServer(
            extensions: "permessage-deflate; server_max_window_bits=9; client_max_window_bits=9", frames: frames)
        let client = engine.client { ws in
            try? ws.extensions { try $0.install(.perMessageDeflate(.init(serverMaxWindowBits: 10))) }
        }
        guard client.isSupported(.webSocketExtensions) else {
            await client.close()
            return
        }
        try await withClient(client) { client in
            let session = try await client.webSocketSession(server.url)
            #expect(session.extensions.first?.header.parameter("server_max_window_bits") == .some("9"))
            #expect(try await nextMessage(session).readText() == "Hello")
            #expect(try await nextMessage(session).readText() == "Hello")
            await session.close()
        }
    }
}
