// The `wsc` command-line tool, end to end: the built binary (next to the test bundle) run as a user runs it,
// with piped stdin, against the WSTesting server and the Python websockets peer.
import Foundation
import SpawnSupport
import Synchronization
import Testing
import WSCore
import WSTesting

#if canImport(Glibc)
import Glibc
#endif

/// What one run of `wsc` produced.
struct CLIResult: Sendable, CustomStringConvertible {
    var status: Int32
    var stdout: String
    var stderr: String
    var timedOut: Bool

    var description: String {
        "exit \(self.status)\(self.timedOut ? " (timed out)" : ""); stdout: \(self.stdout.debugDescription); stderr: \(self.stderr.debugDescription)"
    }
}

/// Finding and running the `wsc` binary.
enum WSCTool {
    /// `$WSC_BINARY`, else `<repo>/Tools/.build/debug/wsc`: `wsc` lives in the Tools package, which
    /// scripts/test.sh builds before the tests (`swift build --package-path Tools --product wsc`).
    static func path() throws -> String {
        let fileManager = FileManager.default
        var candidates: [String] = []
        if let explicit = ProcessInfo.processInfo.environment["WSC_BINARY"], !explicit.isEmpty {
            candidates.append(explicit)
        }
        candidates.append(TestEnvironment.repositoryRoot.appendingPathComponent("Tools/.build/debug/wsc").path)
        if let found = candidates.first(where: { fileManager.isExecutableFile(atPath: $0) }) { return found }
        throw TestPeerError(
            description:
                "the wsc binary was not found (tried \(candidates)); build it with `swift build --package-path Tools --product wsc`, or set WSC_BINARY"
        )
    }

    /// Runs `wsc arguments` with `stdin` piped in (closed after it is written), waits at most `timeout`
    /// seconds (then SIGTERM, SIGKILL 3 s later), on a thread of its own. Started with posix_spawn (Spawn.swift),
    /// not Foundation's `Process`.
    /// `environment` is added to the test's own environment, from which every proxy variable is removed first.
    static func run(
        _ arguments: [String], stdin: String? = "", timeout: Double = 30, environment: [String: String] = [:]
    ) async throws -> CLIResult {
        let binary = try self.path()
        return try await onDedicatedThread {
            try self.runBlocking(binary, arguments, stdin: stdin, timeout: timeout, extra: environment)
        }
    }

    private static func runBlocking(
        _ binary: String, _ arguments: [String], stdin: String?, timeout: Double, extra: [String: String]
    ) throws -> CLIResult {
        var environment = ProcessInfo.processInfo.environment
        for name in [
            "http_proxy", "https_proxy", "HTTPS_PROXY", "all_proxy", "ALL_PROXY", "ws_proxy", "WS_PROXY", "wss_proxy",
            "WSS_PROXY", "no_proxy", "NO_PROXY",
        ] { environment[name] = nil }
        environment.merge(extra) { $1 }
        // stdin is always a pipe (nil: one closed at once), as a shell pipeline gives it.
        let result = try runToCompletion(
            binary, arguments, environment: environment, input: Array((stdin ?? "").utf8),
            timeout: .milliseconds(Int64(timeout * 1000)), gracePeriod: .seconds(3))
        return CLIResult(
            status: result.status, stdout: result.stdoutText, stderr: result.stderrText, timedOut: result.timedOut)
    }
}

/// The arguments that select `engine` for wsc (and keep curl away from any proxy in the environment).
private func engineArguments(_ engine: TestEngine) -> [String] {
    engine == .curl ? ["--engine", "curl", "--proxy", ""] : ["--engine", "cio"]
}

@Suite("wsc command line")
struct CLITests {
    @Test("wsc URL sends stdin lines, prints the echoes and exits 0 after end of input", arguments: TestEngine.allCases)
    func interactiveEcho(engine: TestEngine) async throws {
        let server = try WebSocketTestServer.start()
        defer { server.stop() }
        let result = try await WSCTool.run(
            [server.url, "--linger", "2"] + engineArguments(engine), stdin: "hello\nwörld\n\nlast")
        #expect(result.status == 0, "\(result)")
        #expect(result.stdout == "hello\nwörld\n\nlast\n", "\(result)")
        #expect(result.stderr.contains("connected to"), "\(result)")
        #expect(result.stderr.contains("closed: 1000"), "\(result)")
    }

    @Test("wsc URL against the Python websockets peer", arguments: TestEngine.allCases)
    func pythonPeer(engine: TestEngine) async throws {
        let peer = try await PythonPeer.start()
        defer { peer.stop() }
        let result = try await WSCTool.run(
            [peer.url(path: "/echo"), "--linger", "2"] + engineArguments(engine), stdin: "one\ntwo\n")
        #expect(result.status == 0, "\(result)")
        #expect(result.stdout == "one\ntwo\n", "\(result)")
    }

    @Test("--once sends the arguments, prints the first reply and exits")
    func once() async throws {
        let server = try WebSocketTestServer.start()
        defer { server.stop() }
        let result = try await WSCTool.run([server.url, "--once", "--quiet", "hello", "there"], stdin: nil)
        #expect(result.status == 0, "\(result)")
        #expect(result.stdout == "hello there\n", "\(result)")
        #expect(result.stderr.isEmpty, "--quiet prints no notices: \(result)")
    }

    @Test("--once --json reads stdin whole and pretty-prints the JSON reply")
    func onceJSON() async throws {
        let server = try WebSocketTestServer.start()
        defer { server.stop() }
        let result = try await WSCTool.run(
            [server.url, "--once", "--json", "-q"], stdin: "{\"b\":[1,2],\"a\":\"x\"}\n")
        #expect(result.status == 0, "\(result)")
        let lines = result.stdout.split(separator: "\n")
        #expect(lines.count > 3, "\(result)")
        #expect(lines.first == "{" && lines.last == "}", "\(result)")
        #expect(result.stdout.contains("\"a\""), "\(result)")
    }

    @Test("--binary sends stdin as one binary message; binary is printed as hex or base64")
    func binary() async throws {
        let server = try WebSocketTestServer.start()
        defer { server.stop() }
        let hex = try await WSCTool.run([server.url, "--binary", "-q", "--linger", "2"], stdin: "abc\n")
        #expect(hex.status == 0, "\(hex)")
        #expect(hex.stdout == "< [binary 4 bytes] 6162630a\n", "\(hex)")
        let base64 = try await WSCTool.run([server.url, "--binary", "--base64", "-q", "--linger", "2"], stdin: "abc")
        #expect(base64.stdout == "< [binary 3 bytes] YWJj\n", "\(base64)")
    }

    @Test("-H and --subprotocol reach the server", arguments: TestEngine.allCases)
    func headersAndSubprotocols(engine: TestEngine) async throws {
        var configuration = WebSocketTestServer.Configuration()
        configuration.subprotocols = ["chat.v2"]
        let server = try WebSocketTestServer.start(configuration)
        defer { server.stop() }
        let result = try await WSCTool.run(
            [
                server.url, "-H", "X-Test: yes", "--header", "Authorization: Bearer t0k",
                "--subprotocol", "chat.v1", "--subprotocol", "chat.v2",
            ] + engineArguments(engine),
            stdin: "")
        #expect(result.status == 0, "\(result)")
        #expect(result.stderr.contains("subprotocol chat.v2"), "\(result)")
        let request = try #require(server.requests.last)
        #expect(request.headers["X-Test"] == "yes")
        #expect(request.headers["Authorization"] == "Bearer t0k")
        #expect(request.offeredSubprotocols == ["chat.v1", "chat.v2"])
    }

    @Test("-H is seen by the Python peer (/headers)")
    func headersPython() async throws {
        let peer = try await PythonPeer.start()
        defer { peer.stop() }
        let result = try await WSCTool.run(
            [peer.url(path: "/headers"), "-H", "X-Custom: 42", "--once", "-q", "x"], stdin: nil)
        #expect(result.status == 0, "\(result)")
        #expect(result.stdout.contains("\"x-custom\""), "\(result)")
        #expect(result.stdout.contains("\"42\""), "\(result)")
    }

    @Test("a refused connection exits 2 with a readable message", arguments: TestEngine.allCases)
    func connectionRefused(engine: TestEngine) async throws {
        let server = try WebSocketTestServer.start()
        let url = server.url
        server.stop()
        let result = try await WSCTool.run([url] + engineArguments(engine), stdin: "x\n")
        #expect(result.status == 2, "\(result)")
        #expect(result.stderr.contains("cannot connect to \(url)"), "\(result)")
        #expect(result.stderr.lowercased().contains("refused"), "\(result)")
    }

    @Test("a rejected upgrade exits 2 and shows the status")
    func rejected() async throws {
        var configuration = WebSocketTestServer.Configuration()
        configuration.handshake = .reject(status: 403, body: "members only")
        let server = try WebSocketTestServer.start(configuration)
        defer { server.stop() }
        let result = try await WSCTool.run([server.url], stdin: "")
        #expect(result.status == 2, "\(result)")
        #expect(result.stderr.contains("403"), "\(result)")
    }

    @Test("a protocol error exits 3, an abnormal closure 4, a server's error close code 5")
    func exitStatuses() async throws {
        let invalid = try WebSocketTestServer.start(handler: .custom { try $0.sendInvalidUTF8() })
        defer { invalid.stop() }
        let protocolError = try await WSCTool.run([invalid.url], stdin: nil)
        #expect(protocolError.status == 3, "\(protocolError)")
        #expect(protocolError.stderr.contains("1007"), "\(protocolError)")

        let dropping = try WebSocketTestServer.start(handler: .custom { try $0.dropMidFrame() })
        defer { dropping.stop() }
        let abnormal = try await WSCTool.run([dropping.url], stdin: nil)
        #expect(abnormal.status == 4, "\(abnormal)")

        let closing = try WebSocketTestServer.start(
            handler: .custom { try $0.close(CloseReason(code: 4001, message: "bye")) })
        defer { closing.stop() }
        let closed = try await WSCTool.run([closing.url], stdin: nil)
        #expect(closed.status == 5, "\(closed)")
        #expect(closed.stderr.contains("4001"), "\(closed)")
    }

    @Test("bad arguments exit 64")
    func usage() async throws {
        let result = try await WSCTool.run(["ws://127.0.0.1:1/", "-H", "no colon"], stdin: nil)
        #expect(result.status == 64, "\(result)")
        #expect(result.stderr.contains("Name: value"), "\(result)")
    }

    @Test("Ctrl-C (SIGINT) closes the session with 1000 and exits 0", arguments: TestEngine.allCases)
    func interrupt(engine: TestEngine) async throws {
        let received = Mutex<[String]>([])
        let server = try WebSocketTestServer.start(
            handler: .custom { session in
                while let frame = try session.receive() {
                    if frame.kind == .text { received.withLock { $0.append((try? frame.readText()) ?? "") } }
                    if frame.kind == .close {
                        received.withLock { $0.append("close \(frame.readReason()?.code.rawValue ?? 0)") }
                        try session.close(frame.readReason() ?? CloseReason())
                    }
                }
            })
        defer { server.stop() }
        let errPath = FileManager.default.temporaryDirectory.appendingPathComponent("wsc-int-\(getpid())-\(engine).err")
            .path
        _ = FileManager.default.createFile(atPath: errPath, contents: nil)
        defer { try? FileManager.default.removeItem(atPath: errPath) }
        let process = Process()
        process.executableURL = URL(fileURLWithPath: try WSCTool.path())
        process.arguments = [server.url] + engineArguments(engine)
        let input = Pipe()
        process.standardInput = input
        process.standardOutput = FileHandle.nullDevice
        process.standardError = try FileHandle(forWritingTo: URL(fileURLWithPath: errPath))
        try process.run()
        defer { if process.isRunning { kill(process.processIdentifier, SIGKILL) } }
        input.fileHandleForWriting.write(Data("typed\n".utf8))  // stdin stays open, as on a terminal
        let typedBy = ContinuousClock.now + .seconds(30)
        while received.withLock({ $0.isEmpty }) && ContinuousClock.now < typedBy {
            try await Task.sleep(for: .milliseconds(20))
        }
        process.interrupt()
        let exitBy = ContinuousClock.now + .seconds(30)
        while process.isRunning && ContinuousClock.now < exitBy { try await Task.sleep(for: .milliseconds(20)) }
        try? input.fileHandleForWriting.close()
        let stderr = (try? String(contentsOfFile: errPath, encoding: .utf8)) ?? ""
        #expect(!process.isRunning, "wsc did not exit after SIGINT; stderr: \(stderr)")
        if !process.isRunning { #expect(process.terminationStatus == 0, "stderr: \(stderr)") }
        #expect(received.withLock { $0 } == ["typed", "close 1000"])
        #expect(stderr.contains("closed: 1000"), "stderr: \(stderr)")
    }

    @Test("on a pseudo-terminal: typed lines go out, echoes are printed, Ctrl-D closes with 1000")
    func pseudoTerminal() async throws {
        let server = try WebSocketTestServer.start()
        defer { server.stop() }
        // posix_openpt/grantpt/unlockpt are not imported from Glibc: /dev/ptmx with the Linux ioctls instead.
        let master = open("/dev/ptmx", O_RDWR | O_NOCTTY)
        guard master >= 0 else {
            Issue.record("cannot open /dev/ptmx: errno \(errno)")
            return
        }
        defer { close(master) }
        var unlock: Int32 = 0
        var number: UInt32 = 0
        // The ioctl names of <asm-generic/ioctls.h>, which Glibc does not import.
        let tiocsptlck: UInt = 0x4004_5431
        let tiocgptn: UInt = 0x8004_5430
        guard ioctl(master, tiocsptlck, &unlock) == 0, ioctl(master, tiocgptn, &number) == 0 else {
            Issue.record("cannot unlock the pseudo-terminal: errno \(errno)")
            return
        }
        let slaveName = "/dev/pts/\(number)"
        let slave = open(slaveName, O_RDWR | O_NOCTTY)
        guard slave >= 0 else {
            Issue.record("cannot open \(slaveName): errno \(errno)")
            return
        }
        let terminal = FileHandle(fileDescriptor: slave, closeOnDealloc: true)
        let process = Process()
        process.executableURL = URL(fileURLWithPath: try WSCTool.path())
        process.arguments = [server.url, "--linger", "2"]
        process.standardInput = terminal
        process.standardOutput = terminal
        process.standardError = terminal
        try process.run()
        try terminal.close()  // the child has its own copies
        defer { if process.isRunning { kill(process.processIdentifier, SIGKILL) } }

        /// Reads the terminal's output until `marker` appears (or 30 s pass), on a thread of its own.
        func readUntil(_ marker: String, _ output: inout String) async {
            let before = output
            output = await withCheckedContinuation { continuation in
                Thread.detachNewThread {
                    var text = before
                    readBlocking(marker, &text)
                    continuation.resume(returning: text)
                }
            }
        }
        @Sendable func readBlocking(_ marker: String, _ output: inout String) {
            let deadline = ContinuousClock.now + .seconds(30)
            var buffer = [UInt8](repeating: 0, count: 4096)
            while !output.contains(marker) && ContinuousClock.now < deadline {
                var pfd = pollfd(fd: master, events: Int16(POLLIN), revents: 0)
                guard poll(&pfd, 1, 100) > 0 else { continue }
                let n = read(master, &buffer, buffer.count)
                if n <= 0 { break }  // EIO once the child closed the terminal
                output += String(decoding: buffer[..<n], as: UTF8.self)
            }
        }
        var output = ""
        await readUntil("connected to", &output)
        _ = "hello pty\n".withCString { write(master, $0, strlen($0)) }
        await readUntil("hello pty\r\nhello pty", &output)  // the terminal's echo of the typed line, then the server's
        var eof: UInt8 = 4  // Ctrl-D
        _ = write(master, &eof, 1)
        await readUntil("closed:", &output)
        let deadline = ContinuousClock.now + .seconds(30)
        while process.isRunning && ContinuousClock.now < deadline { try await Task.sleep(for: .milliseconds(20)) }
        #expect(output.contains("hello pty\r\nhello pty"), "\(output.debugDescription)")
        #expect(output.contains("closed: 1000"), "\(output.debugDescription)")
        #expect(!process.isRunning)
        if !process.isRunning { #expect(process.terminationStatus == 0, "\(output.debugDescription)") }
    }

    @Test("wsc serve prints its URL, echoes, and stops on SIGINT with exit 0")
    func serve() async throws {
        let binary = try WSCTool.path()
        let process = Process()
        process.executableURL = URL(fileURLWithPath: binary)
        process.arguments = ["serve"]
        let output = Pipe()
        process.standardOutput = output
        process.standardError = FileHandle.nullDevice
        try process.run()
        defer { if process.isRunning { kill(process.processIdentifier, SIGKILL) } }
        let url = try await withCheckedThrowingContinuation { (continuation: CheckedContinuation<String, any Error>) in
            Thread.detachNewThread {
                var data = Data()
                while !data.contains(UInt8(ascii: "\n")) {
                    let chunk = output.fileHandleForReading.availableData
                    if chunk.isEmpty { break }
                    data += chunk
                }
                let line = String(decoding: data, as: UTF8.self).split(separator: "\n").first.map(String.init) ?? ""
                continuation.resume(returning: line)
            }
        }
        #expect(url.hasPrefix("ws://127.0.0.1:"), "got \(url.debugDescription)")
        let result = try await WSCTool.run([url, "--once", "-q", "ping"], stdin: nil)
        #expect(result.stdout == "ping\n", "\(result)")
        process.interrupt()
        let deadline = ContinuousClock.now + .seconds(10)
        while process.isRunning && ContinuousClock.now < deadline { try await Task.sleep(for: .milliseconds(20)) }
        #expect(!process.isRunning)
        if !process.isRunning {
            #expect(process.terminationStatus == 0)
            #expect(process.terminationReason == .exit)
        }
    }
}
