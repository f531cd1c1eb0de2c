// wss:// with many messages in flight against the Python peer: TLS records arrive several per read, straddle the
// reads, and one message spans many records, so what OpenSSL has already read ahead must be delivered without a new
// socket event.
import Testing
import WSCore

@Suite("TLS streaming", .timeLimit(.minutes(1)))
struct TLSStreamingTests {
    @Test(
        "every echo arrives whole and in order with many messages of every size in flight",
        arguments: TestEngine.allCases)
    func manyInFlight(engine: TestEngine) async throws {
        let certs = try await TestCertificates.load()
        let peer = try await PythonPeer.start(tls: .init(certs.server))
        defer { peer.stop() }
        // From many messages per record to several records per message, around the 16 KiB record size.
        let mixed = (0..<400).map { index in
            message(index, size: [1, 37, 126, 1_000, 16_000, 16_384, 16_400, 40_000, 70_000][index % 9])
        }
        // A burst of small messages: their echoes come back as many records in few segments.
        let small = (0..<4_000).map { message($0, size: 20 + $0 % 100) }
        try await withClient(engine.client(trustedCA: certs.caCertificate)) { client in
            try await client.webSocket(peer.url(path: "/echo", host: "localhost")) { session in
                // A read that stops while records wait inside OpenSSL stalls: fail after 20 s instead of hanging.
                try await withThrowingTaskGroup(of: Bool.self) { group in
                    group.addTask {
                        try await stream(mixed, window: 32, over: session)
                        try await stream(small, window: 1_000, over: session)
                        return true
                    }
                    group.addTask {
                        try await Task.sleep(for: .seconds(20))
                        return false
                    }
                    let finished = try await group.next() ?? false
                    group.cancelAll()
                    #expect(finished, "the echoes stopped arriving (\(engine))")
                }
            }
        }
    }
}

/// `size` bytes that differ from message to message.
private func message(_ index: Int, size: Int) -> [UInt8] {
    (0..<size).map { UInt8(truncatingIfNeeded: $0 &* 31 &+ index) }
}

/// Sends `messages` with at most `window` unanswered and checks that each echo equals its message.
private func stream(_ messages: [[UInt8]], window: Int, over session: WebSocketSession) async throws {
    var sent = 0
    var received = 0
    while received < messages.count {
        while sent < messages.count && sent - received < window {
            try await session.send(messages[sent])
            sent += 1
        }
        let echo = try await nextMessage(session).data
        guard echo == messages[received] else {
            Issue.record("echo \(received) of \(messages.count) has \(echo.count) bytes, not the message sent")
            return
        }
        received += 1
    }
}
