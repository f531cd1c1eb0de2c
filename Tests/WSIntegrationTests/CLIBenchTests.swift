// `wsc bench` end to end: the built binary (found and run by `WSCTool`, CLITests.swift) against the WSTesting
// server and the Python websockets peer, its `--json` report decoded and checked.
import Foundation
import Synchronization
import Testing
import WSCore
import WSTesting

#if canImport(Glibc)
import Glibc
#endif

/// The `--json` report of `wsc bench` (keys in Docs/CLI.md), decoded with snake_case keys.
private struct BenchReportJSON: Decodable {
    struct Connections: Decodable {
        var requested: Int
        var ok: Int
        var failed: Int
    }

    struct Counts: Decodable {
        var sent: Int
        var received: Int
    }

    struct Latency: Decodable {
        var count: Int
        var mean: Double
        var p50: Double
        var p90: Double
        var p99: Double
        var p999: Double  // "p99_9"
        var max: Double
    }

    var url: String
    var engine: String
    var mode: String
    var inFlight: Int?
    var rate: Double?
    var payload: String
    var size: Int
    var connections: Connections
    var messages: Counts
    var bytes: Counts
    var durationS: Double
    var warmupS: Double
    var msgsPerSec: Double
    var mbPerSec: Double
    var errorCount: Int
    var errors: [String: Int]
    var latencyUs: Latency

    /// Decodes the one JSON line `wsc bench --json` printed on stdout.
    static func decode(_ result: CLIResult) throws -> BenchReportJSON {
        let lines = result.stdout.split(separator: "\n")
        guard lines.count == 1, let line = lines.first else {
            throw TestPeerError(description: "expected one line of JSON on stdout: \(result)")
        }
        let decoder = JSONDecoder()
        decoder.keyDecodingStrategy = .convertFromSnakeCase
        return try decoder.decode(BenchReportJSON.self, from: Data(line.utf8))
    }
}

/// The arguments that select `engine` for wsc (and keep curl away from any proxy in the environment).
private func benchEngineArguments(_ engine: TestEngine) -> [String] {
    engine == .curl ? ["--engine", "curl", "--proxy", ""] : ["--engine", "cio"]
}

/// Checks what every successful report must satisfy: all connections open, no errors, every measured message
/// answered, latencies ordered, rates consistent with counts and duration.
private func expectClean(
    _ report: BenchReportJSON, connections: Int, size: Int, sourceLocation: SourceLocation = #_sourceLocation
) {
    #expect(report.connections.requested == connections, sourceLocation: sourceLocation)
    #expect(report.connections.ok == connections, sourceLocation: sourceLocation)
    #expect(report.connections.failed == 0, sourceLocation: sourceLocation)
    #expect(report.errorCount == 0, "\(report.errors)", sourceLocation: sourceLocation)
    #expect(report.errors.isEmpty, "\(report.errors)", sourceLocation: sourceLocation)
    #expect(report.messages.received > 0, sourceLocation: sourceLocation)
    // Sending stops at the end of the measurement, then the echoes in flight are awaited: all of them arrive.
    #expect(report.messages.received == report.messages.sent, sourceLocation: sourceLocation)
    #expect(report.bytes.sent == report.messages.sent * size, sourceLocation: sourceLocation)
    #expect(report.bytes.received == report.messages.received * size, sourceLocation: sourceLocation)
    let latency = report.latencyUs
    #expect(latency.count == report.messages.received, sourceLocation: sourceLocation)
    #expect(latency.p50 > 0, "\(latency)", sourceLocation: sourceLocation)
    #expect(
        latency.p50 <= latency.p90 && latency.p90 <= latency.p99 && latency.p99 <= latency.p999
            && latency.p999 <= latency.max, "\(latency)", sourceLocation: sourceLocation)
    #expect(latency.max < 10_000_000, "no echo on loopback takes 10 s: \(latency)", sourceLocation: sourceLocation)
    #expect(report.durationS > 0, sourceLocation: sourceLocation)
    let rate = Double(report.messages.received) / report.durationS
    #expect(
        abs(report.msgsPerSec - rate) <= max(1, rate * 0.01), "\(report.msgsPerSec) vs \(rate)",
        sourceLocation: sourceLocation)
    let megabytes = Double(report.bytes.received) / report.durationS / 1e6
    #expect(
        abs(report.mbPerSec - megabytes) <= 0.001 + megabytes * 0.01, "\(report.mbPerSec) vs \(megabytes)",
        sourceLocation: sourceLocation)
}

/// The close codes of the clients' close frames, as a ``recordingEcho(_:)`` handler saw them.
private final class CloseLog: Sendable {
    /// The codes in arrival order (0: a close frame without a code).
    let codes = Mutex<[UInt16]>([])
}

/// An echo handler for `WebSocketTestServer` that also records the close code of each client's close frame.
private func recordingEcho(_ closes: CloseLog) -> WebSocketTestServer.Handler {
    .custom { session in
        while let frame = try session.receive() {
            switch frame.kind {
            case .text, .binary:
                try session.send(Frame(kind: frame.kind, data: frame.data))
            case .close:
                closes.codes.withLock { $0.append(frame.readReason()?.code.rawValue ?? 0) }
                try session.close(frame.readReason() ?? CloseReason())
            default:
                break
            }
        }
    }
}

@Suite("wsc bench", .serialized)
struct CLIBenchTests {
    @Test("closed loop: 4 connections for 2 s against the WSTesting echo server", arguments: TestEngine.allCases)
    func closedLoop(engine: TestEngine) async throws {
        let server = try WebSocketTestServer.start()
        defer { server.stop() }
        let result = try await WSCTool.run(
            ["bench", server.url, "-c", "4", "--in-flight", "2", "--duration", "2", "--json"]
                + benchEngineArguments(engine),
            stdin: nil, timeout: 60)
        #expect(result.status == 0, "\(result)")
        #expect(!result.timedOut, "\(result)")
        let report = try BenchReportJSON.decode(result)
        expectClean(report, connections: 4, size: 32)
        #expect(report.engine == engine.rawValue)
        #expect(report.mode == "closed" && report.inFlight == 2 && report.rate == nil, "\(result)")
        #expect(report.payload == "text" && report.size == 32)
        #expect(report.url == server.url)
        // Sending stops after 2 s; the measured time ends then or with the last echo, a moment later.
        #expect((1.999...4).contains(report.durationS), "\(report.durationS)")
        #expect(report.warmupS == 0)
        #expect(
            report.messages.received > 100, "a loopback echo server answers more than 50 messages a second: \(result)")
        #expect(server.requests.count == 4, "\(server.requests)")
        #expect(!result.stderr.contains("\r"), "no progress line when stderr is not a terminal: \(result)")
    }

    @Test("open loop: --rate 200 for 2 s sends about 400 binary messages; every connection closes with 1000")
    func openLoop() async throws {
        let closes = CloseLog()
        let server = try WebSocketTestServer.start(handler: recordingEcho(closes))
        defer { server.stop() }
        let result = try await WSCTool.run(
            [
                "bench", server.url, "-c", "4", "--rate", "200", "--duration", "2", "--warmup", "0.5", "--binary",
                "--size", "100", "--json", "-q",
            ],
            stdin: nil, timeout: 60)
        #expect(result.status == 0, "\(result)")
        #expect(result.stderr.isEmpty, "-q: nothing on stderr: \(result)")
        let report = try BenchReportJSON.decode(result)
        expectClean(report, connections: 4, size: 100)
        #expect(report.mode == "open" && report.rate == 200 && report.inFlight == nil, "\(result)")
        #expect(report.payload == "binary")
        #expect(report.warmupS == 0.5)
        // The schedule is fixed: 200/s for 2 s is 400 messages (the warmup's are not counted), however late sent.
        #expect((360...440).contains(report.messages.sent), "\(result)")
        #expect((180...220).contains(report.msgsPerSec), "\(result)")
        let deadline = ContinuousClock.now + .seconds(10)
        while closes.codes.withLock({ $0.count }) < 4 && ContinuousClock.now < deadline {
            try await Task.sleep(for: .milliseconds(20))
        }
        #expect(closes.codes.withLock { $0 } == [1000, 1000, 1000, 1000])
    }

    @Test("the text report on stdout has every figure")
    func textReport() async throws {
        let server = try WebSocketTestServer.start()
        defer { server.stop() }
        let result = try await WSCTool.run(["bench", server.url, "--duration", "1"], stdin: nil, timeout: 60)
        #expect(result.status == 0, "\(result)")
        for label in [
            "connections  1 ok, 0 failed", "messages", "duration     1 s", "msg/s", "MB/s", "errors       none", "p50",
            "p90", "p99", "p99.9", "max",
        ] {
            #expect(result.stdout.contains(label), "\(label.debugDescription) missing: \(result)")
        }
        #expect(result.stderr.contains("opening 1 connection to \(server.url)"), "\(result)")
    }

    @Test("against the Python websockets echo server", arguments: TestEngine.allCases)
    func pythonPeer(engine: TestEngine) async throws {
        let peer = try await PythonPeer.start()
        defer { peer.stop() }
        let result = try await WSCTool.run(
            [
                "bench", peer.url(path: "/echo"), "-c", "2", "--in-flight", "4", "--duration", "1", "--size", "64",
                "--json", "-q",
            ]
                + benchEngineArguments(engine),
            stdin: nil, timeout: 60)
        #expect(result.status == 0, "\(result)")
        let report = try BenchReportJSON.decode(result)
        expectClean(report, connections: 2, size: 64)
    }

    @Test("a refused port: every connection failed, exit 2", arguments: TestEngine.allCases)
    func refused(engine: TestEngine) async throws {
        let server = try WebSocketTestServer.start()
        let url = server.url
        server.stop()
        let result = try await WSCTool.run(
            ["bench", url, "-c", "3", "--duration", "1", "--json"] + benchEngineArguments(engine), stdin: nil,
            timeout: 60)
        #expect(result.status == 2, "\(result)")
        let report = try BenchReportJSON.decode(result)
        #expect(
            report.connections.requested == 3 && report.connections.ok == 0 && report.connections.failed == 3,
            "\(result)")
        #expect(report.errors["connectionRefused"] == 3, "\(result)")
        #expect(report.errorCount == 3)
        #expect(report.messages.sent == 0 && report.messages.received == 0 && report.latencyUs.count == 0)
        #expect(result.stderr.contains("connectionRefused (3×)"), "\(result)")
    }

    @Test("a server that closes with 4001 during the run: exit 5, serverClosed errors")
    func serverCloses() async throws {
        let server = try WebSocketTestServer.start(
            handler: .custom { session in
                for _ in 0..<3 {
                    guard let frame = try session.receive() else { return }
                    try session.send(Frame(kind: frame.kind, data: frame.data))
                }
                try session.close(CloseReason(code: 4001, message: "enough"))
            })
        defer { server.stop() }
        let result = try await WSCTool.run(
            ["bench", server.url, "-c", "2", "--duration", "2", "--json"], stdin: nil, timeout: 60)
        #expect(result.status == 5, "\(result)")
        let report = try BenchReportJSON.decode(result)
        #expect(report.connections.ok == 2)
        #expect(report.errors["serverClosed"] == 2, "\(result)")
        #expect(report.messages.received == 6, "three echoes per connection: \(result)")
        #expect(result.stderr.contains("4001"), "\(result)")
    }

    @Test("an echo that does not match: exit 1, unexpectedEcho")
    func wrongEcho() async throws {
        let server = try WebSocketTestServer.start(
            handler: .custom { session in
                while let frame = try session.receive(), frame.kind != .close {
                    try session.send(Frame(kind: frame.kind, data: Array(frame.data.reversed())))
                }
            })
        defer { server.stop() }
        let result = try await WSCTool.run(["bench", server.url, "--duration", "1", "--json"], stdin: nil, timeout: 60)
        #expect(result.status == 1, "\(result)")
        let report = try BenchReportJSON.decode(result)
        #expect(report.errors["unexpectedEcho"] == 1, "\(result)")
        #expect(report.messages.received == 0)
    }

    @Test("bad arguments exit 64")
    func usage() async throws {
        for arguments in [["--size", "4"], ["--in-flight", "2", "--rate", "10"], ["-c", "0"], ["--duration", "0"]] {
            let result = try await WSCTool.run(["bench", "ws://127.0.0.1:1/"] + arguments, stdin: nil)
            #expect(result.status == 64, "\(arguments): \(result)")
        }
    }

    @Test("on a terminal, a progress line is updated on stderr with \\r")
    func progressLine() async throws {
        let server = try WebSocketTestServer.start()
        defer { server.stop() }
        // posix_openpt/grantpt/unlockpt are not imported from Glibc: /dev/ptmx with the Linux ioctls instead.
        let master = open("/dev/ptmx", O_RDWR | O_NOCTTY)
        try #require(master >= 0, "cannot open /dev/ptmx: errno \(errno)")
        defer { close(master) }
        var unlock: Int32 = 0
        var number: UInt32 = 0
        // The ioctl names of <asm-generic/ioctls.h>, which Glibc does not import.
        let tiocsptlck: UInt = 0x4004_5431
        let tiocgptn: UInt = 0x8004_5430
        try #require(ioctl(master, tiocsptlck, &unlock) == 0 && ioctl(master, tiocgptn, &number) == 0)
        let slave = open("/dev/pts/\(number)", O_RDWR | O_NOCTTY)
        try #require(slave >= 0, "cannot open /dev/pts/\(number): errno \(errno)")
        let terminal = FileHandle(fileDescriptor: slave, closeOnDealloc: true)
        let output = Pipe()
        let process = Process()
        process.executableURL = URL(fileURLWithPath: try WSCTool.path())
        process.arguments = ["bench", server.url, "-c", "2", "--duration", "2.5", "--json"]
        process.standardInput = FileHandle.nullDevice
        process.standardOutput = output
        process.standardError = terminal
        try process.run()
        try terminal.close()  // the child has its own copy
        defer { if process.isRunning { kill(process.processIdentifier, SIGKILL) } }
        // Read the terminal (stderr) and stdout until wsc exits, on threads of their own.
        let stderrText = await withCheckedContinuation { (continuation: CheckedContinuation<String, Never>) in
            Thread.detachNewThread {
                var text = ""
                var buffer = [UInt8](repeating: 0, count: 4096)
                let deadline = ContinuousClock.now + .seconds(30)
                while ContinuousClock.now < deadline {
                    var pfd = pollfd(fd: master, events: Int16(POLLIN), revents: 0)
                    guard poll(&pfd, 1, 100) > 0 else {
                        if !process.isRunning { break }
                        continue
                    }
                    let n = read(master, &buffer, buffer.count)
                    if n <= 0 { break }  // EIO once the child closed the terminal
                    text += String(decoding: buffer[..<n], as: UTF8.self)
                }
                continuation.resume(returning: text)
            }
        }
        process.waitUntilExit()
        let stdout = String(decoding: output.fileHandleForReading.readDataToEndOfFile(), as: UTF8.self)
        #expect(process.terminationStatus == 0, "stderr: \(stderrText.debugDescription)")
        #expect(stderrText.contains("\rwsc bench: 2/2 open, "), "\(stderrText.debugDescription)")
        #expect(
            stderrText.contains(" msg/s, ") && stderrText.contains(" MB/s, 0 errors"), "\(stderrText.debugDescription)")
        #expect(
            !stdout.contains("\r") && stdout.hasPrefix("{"), "the report alone on stdout: \(stdout.debugDescription)")
    }
}
