// The bounded-memory proof of streamed messages (Docs/Streaming.md): one message streamed to an echo peer and back
// through the CIO engine, both directions at once, with its resident memory measured in a process of its own.
//
// The fast variant (64 MiB, RSS growth under 24 MiB) runs in the memory child of the normal run (MemoryIsolation).
// The proof sizes run with WS_TEST_HUGE=1 (minutes): 4 GiB against the C echo server (Benchmarks/c), and 1 GiB with
// permessage-deflate against a Python websockets streaming echo (Tests/Fixtures/stream_echo_server.py), each in a
// child process; the figures are printed.
import EngineTestSupport
import Foundation
import SpawnSupport
import Synchronization
import Testing
import WSCore
import WSEngineCIO
import WSExtensions

/// zlib's `crc32`, looked up at run time (the process links zlib through WSExtensions).
private let zlibCRC32: @convention(c) (UInt, UnsafePointer<UInt8>?, UInt32) -> UInt = {
    unsafeBitCast(dlsym(nil, "crc32")!, to: (@convention(c) (UInt, UnsafePointer<UInt8>?, UInt32) -> UInt).self)
}()

/// A running CRC-32.
private struct CRC32 {
    var value: UInt = 0
    mutating func update(_ bytes: [UInt8]) {
        bytes.withUnsafeBufferPointer { self.value = zlibCRC32(self.value, $0.baseAddress, UInt32($0.count)) }
    }
}

/// The message: `total` bytes in chunks of `chunkSize`, cycling through 16 chunks of random bytes (made once, so
/// producing the message costs no time), each chunk's first 8 bytes overwritten with its index so no two chunks
/// are equal.
private struct ProofChunks: AsyncSequence, Sendable {
    typealias Element = [UInt8]
    let total: Int
    let chunkSize: Int
    let pool: [[UInt8]]

    init(total: Int, chunkSize: Int) {
        self.total = total
        self.chunkSize = chunkSize
        var rng = SystemRandomNumberGenerator()
        self.pool = (0..<16).map { _ in (0..<chunkSize).map { _ in UInt8.random(in: 0...255, using: &rng) } }
    }

    struct AsyncIterator: AsyncIteratorProtocol {
        let source: ProofChunks
        var sent = 0
        var index: UInt64 = 0
        mutating func next() async throws -> [UInt8]? {
            guard self.sent < self.source.total else { return nil }
            var chunk = self.source.pool[Int(self.index % 16)]
            let count = Swift.min(self.source.chunkSize, self.source.total - self.sent)
            if count < chunk.count { chunk.removeLast(chunk.count - count) }
            withUnsafeBytes(of: self.index.littleEndian) { index in
                for k in 0..<Swift.min(8, chunk.count) { chunk[k] = index[k] }
            }
            self.sent += count
            self.index += 1
            return chunk
        }
    }

    func makeAsyncIterator() -> AsyncIterator { AsyncIterator(source: self) }
}

/// The process's peak resident set size (VmHWM) in bytes.
private func peakResidentBytes() -> Int {
    guard let status = try? String(contentsOfFile: "/proc/self/status", encoding: .utf8) else { return 0 }
    for line in status.split(separator: "\n") where line.hasPrefix("VmHWM:") {
        return (line.split(separator: " ").dropFirst().first.flatMap { Int($0) } ?? 0) * 1024
    }
    return 0
}

@Suite("Streaming proof", .serialized)
struct StreamingProofTests {
    static let environment = ProcessInfo.processInfo.environment
    /// The message size: WS_TEST_STREAM_BYTES, 64 MiB by default.
    static let bytes = Self.environment["WS_TEST_STREAM_BYTES"].flatMap(Int.init) ?? 64 << 20
    /// Whether the message goes through permessage-deflate (against the Python streaming echo).
    static let deflate = Self.environment["WS_TEST_STREAM_DEFLATE"] == "1"

    /// Builds the C echo server into a temporary file of its own; returns its path (the caller removes it).
    static func buildEchoServer() throws -> String {
        let root = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
            .deletingLastPathComponent()
        let output = FileManager.default.temporaryDirectory.appendingPathComponent(
            "ws-echo-\(getpid())-\(UUID().uuidString.prefix(8))"
        ).path
        let (status, text) = runProcessBlocking(
            "/usr/bin/cc",
            ["-O2", "-o", output, root.appendingPathComponent("Benchmarks/c/echo_server.c").path, "-lssl", "-lcrypto"])
        guard status == 0 else { throw TestPeerError(description: "cc failed: \(text)") }
        return output
    }

    @Test(
        "a message streamed to an echo peer and back keeps memory bounded and arrives byte for byte",
        .enabled(if: MemoryIsolation.isChild, MemoryIsolation.skipReason))
    func echoRoundTrip() async throws {
        var python: LineReportingProcess?
        var echo: ChildProcess?
        let port: Int
        if Self.deflate {
            let venv = Self.environment["WS_TEST_VENV"] ?? "/work/main/.venv"
            let script = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
                .appendingPathComponent("Fixtures/stream_echo_server.py").path
            let peer = try LineReportingProcess(executable: "\(venv)/bin/python", arguments: [script, "--deflate"])
            python = peer
            port = Int(try await peer.line(startingWith: "PORT ")) ?? 0
        } else {
            port = freeLoopbackPort()
            let null = open("/dev/null", O_RDWR | O_CLOEXEC)
            defer { close(null) }
            let binary = try Self.buildEchoServer()
            defer { unlink(binary) }  // the running server keeps its file
            echo = try ChildProcess(binary, ["\(port)"], stdin: null, stdout: null, stderr: null)
            while !canConnect(toLoopbackPort: port) { try await Task.sleep(for: .milliseconds(20)) }
        }
        defer {
            python?.stop()
            _ = echo?.terminate(grace: .seconds(2))  // before this process exits: the server does not watch stdin
        }
        let client = try WebSocketClient(engine: CIOEngine()) { config in
            try config.install(WebSockets.self) { ws in
                ws.streamsIncomingMessages = true
                // The keepalive runs while the message streams: a ping every 5 s, its pong due within 20 s (the Python peer
                // reads our ping only after the megabytes queued before it).
                ws.pingInterval = .seconds(5)
                ws.pongTimeout = .seconds(20)
                if Self.deflate { try ws.extensions { try $0.install(.perMessageDeflate()) } }
            }
        }
        let chunkSize = 256 << 10
        let source = ProofChunks(total: Self.bytes, chunkSize: chunkSize)
        var sentCRC = CRC32()
        for try await chunk in source { sentCRC.update(chunk) }  // the bytes the send will produce, checksummed
        let sent = sentCRC.value
        let session = try await client.webSocketSession("ws://127.0.0.1:\(port)/")
        let start = ContinuousClock.now
        let ((received, count), growth) = try await ResidentMemory.peakGrowth {
            async let sending: Void = session.sendStreamingMessage(.binary, from: source)
            let message = try await session.receiveStreamingMessage()
            var crc = CRC32()
            var count = 0
            for try await chunk in message.chunks {
                crc.update(chunk)
                count += chunk.count
            }
            try await sending
            return (crc.value, count)
        }
        let seconds =
            Double((ContinuousClock.now - start).components.attoseconds) / 1e18
            + Double((ContinuousClock.now - start).components.seconds)
        await session.close()
        await client.close()
        let peak = peakResidentBytes()
        print(
            "STREAM PROOF \(Self.deflate ? "deflate" : "plain") \(Self.bytes) bytes each way: \(String(format: "%.1f", seconds)) s, "
                + "\(String(format: "%.0f", Double(Self.bytes) / seconds / 1e6)) MB/s each way, RSS growth \(growth >> 20) MiB, "
                + "peak RSS (VmHWM) \(peak >> 20) MiB, crc32 sent \(String(sent, radix: 16)) received \(String(received, radix: 16))"
        )
        #expect(count == Self.bytes)
        #expect(sent == received)
        #expect(growth < 24 << 20, "RSS grew by \(growth >> 20) MiB")
    }

    @Test(
        "4 GiB each way (plain) and 1 GiB (deflate), in child processes; WS_TEST_HUGE=1",
        .enabled(if: ProcessInfo.processInfo.environment["WS_TEST_HUGE"] == "1"))
    func huge() async throws {
        for (bytes, deflate) in [(4 << 30, false), (1 << 30, true)] {
            let result = try await ChildTestRun.run(
                filter: "StreamingProofTests/echoRoundTrip",
                environment: [
                    MemoryIsolation.variable: "1", "WS_TEST_STREAM_BYTES": "\(bytes)",
                    "WS_TEST_STREAM_DEFLATE": deflate ? "1" : "0",
                ], timeout: .seconds(3600))
            let lines = result.output.split(separator: "\n").filter {
                $0.contains("STREAM PROOF") || $0.contains("✘") || $0.contains("Test run with")
            }
            print(lines.joined(separator: "\n"))
            #expect(result.status == 0, "\(lines.joined(separator: "\n"))")
            let peak = lines.first { $0.contains("STREAM PROOF") }.flatMap { line in
                line.range(of: "VmHWM) ").map { Int(line[$0.upperBound...].prefix { $0.isNumber }) ?? 0 }
            }
            #expect((peak ?? .max) < 64, "peak RSS \(peak ?? -1) MiB")
        }
    }
}
