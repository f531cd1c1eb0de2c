// Test support: a Python WebSocket peer (Tests/Fixtures/ws_server.py) in a child process, and throw-away TLS
// material (Tests/Fixtures/make_certs.sh). Needs the venv that `./scripts/setup.sh` creates (.venv).
//
//     let peer = try await PythonPeer.start()                 // or: try PythonPeer() (blocks up to 10 s)
//     defer { peer.stop() }
//     let url = peer.url(path: "/echo")                       // "ws://127.0.0.1:PORT/echo"
//
//     let certs = try await TestCertificates.load()           // made once per test process, off the pool
//     let tlsPeer = try await PythonPeer.start(tls: .init(certs.server))
//     tlsPeer.url(path: "/echo", host: "localhost")           // "wss://localhost:PORT/echo"
//
// Paths and their behaviours are documented at the top of Tests/Fixtures/ws_server.py.

import Dispatch
import Foundation
import SpawnSupport
import Synchronization

#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#endif

/// What went wrong while preparing or running a test peer; the description carries the peer's stderr tail.
struct TestPeerError: Error, CustomStringConvertible, Sendable {
    let description: String
}

/// Where the repository, the fixtures and the test venv's Python are.
enum TestEnvironment {
    /// The repository root, found from this file's path (Tests/WSIntegrationTests/Support/PythonPeer.swift).
    static let repositoryRoot: URL = URL(fileURLWithPath: #filePath)
        .deletingLastPathComponent()  // Support
        .deletingLastPathComponent()  // WSIntegrationTests
        .deletingLastPathComponent()  // Tests
        .deletingLastPathComponent()  // root

    static let fixturesDirectory: URL = repositoryRoot.appendingPathComponent("Tests/Fixtures", isDirectory: true)

    /// `$WS_TEST_PYTHON`, else `$WS_TEST_VENV/bin/python`, else `<repo>/.venv/bin/python`.
    static var pythonPath: String {
        let environment = ProcessInfo.processInfo.environment
        if let python = environment["WS_TEST_PYTHON"], !python.isEmpty { return python }
        if let venv = environment["WS_TEST_VENV"], !venv.isEmpty { return venv + "/bin/python" }
        return repositoryRoot.appendingPathComponent(".venv/bin/python").path
    }

    /// The venv's Python, or an error telling how to create it.
    static func python() throws -> String {
        let python = pythonPath
        guard FileManager.default.isExecutableFile(atPath: python) else {
            throw TestPeerError(
                description: "Python test venv not found (\(python)): run ./scripts/setup.sh first")
        }
        return python
    }
}

/// A running `Tests/Fixtures/ws_server.py` on 127.0.0.1. Stopped by `stop()` or when released.
final class PythonPeer: Sendable {
    /// TLS settings for a `wss://` peer.
    struct TLS: Sendable {
        var certificate: String
        var privateKey: String
        /// When set, the peer requires client certificates signed by this CA.
        var clientCA: String?
        /// When set ("1.2"), the newest TLS version the peer speaks.
        var maxVersion: String?

        init(certificate: String, privateKey: String, clientCA: String? = nil, maxVersion: String? = nil) {
            self.certificate = certificate
            self.privateKey = privateKey
            self.clientCA = clientCA
            self.maxVersion = maxVersion
        }

        init(_ identity: TestCertificates.Identity, clientCA: String? = nil, maxVersion: String? = nil) {
            self.init(
                certificate: identity.certificate, privateKey: identity.privateKey, clientCA: clientCA,
                maxVersion: maxVersion)
        }
    }

    /// The TCP port on 127.0.0.1.
    let port: Int
    /// "ws" or "wss".
    let scheme: String
    /// Where the peer's stderr goes (deleted by `stop()`).
    let logPath: String

    /// Started with posix_spawn (Spawn.swift), not Foundation's `Process`, which crashed the test process on Linux
    /// with many descriptors open.
    private let process: ChildProcess
    /// Our end of the peer's stdin; closing it tells the peer (`--watch-stdin`) to exit.
    private let stdinWrite: Int32
    /// Our end of the peer's stdout (its `PORT n` line).
    private let stdoutRead: Int32
    private let stopped = OnceFlag()

    /// Launches the peer and waits (blocking, up to `startTimeout` seconds) for its `PORT n` line.
    /// - Parameters:
    ///   - subprotocols: subprotocols the `/subprotocol` path selects from, in preference order.
    ///   - deflate: offer permessage-deflate.
    ///   - tls: serve `wss://` with this certificate.
    ///   - port: a fixed port; 0 picks a free one.
    ///   - arguments: further ws_server.py arguments (for example `["--max-size", "1024"]`).
    init(
        subprotocols: [String] = [],
        deflate: Bool = false,
        tls: TLS? = nil,
        port: Int = 0,
        arguments: [String] = [],
        startTimeout: Double = 10
    ) throws {
        let python = try TestEnvironment.python()
        let script = TestEnvironment.fixturesDirectory.appendingPathComponent("ws_server.py").path
        var args = [script, "--watch-stdin", "--port", String(port)]
        if !subprotocols.isEmpty { args += ["--subprotocols", subprotocols.joined(separator: ",")] }
        if deflate { args.append("--deflate") }
        if let tls {
            args += ["--tls-cert", tls.certificate, "--tls-key", tls.privateKey]
            if let clientCA = tls.clientCA { args += ["--tls-client-ca", clientCA] }
            if let maxVersion = tls.maxVersion { args += ["--tls-max-version", maxVersion] }
        }
        args += arguments

        let logPath = FileManager.default.temporaryDirectory
            .appendingPathComponent("ws-peer-\(getpid())-\(UUID().uuidString.prefix(8)).log").path
        let logFile = open(logPath, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0o600)
        guard logFile >= 0 else {
            throw TestPeerError(description: "cannot create the peer log file \(logPath) (errno \(errno))")
        }
        let inputEnds = closeOnExecPipe()
        let outputEnds = closeOnExecPipe()
        guard let inputEnds, let outputEnds else {
            let code = errno
            for ends in [inputEnds, outputEnds] {
                if let ends {
                    close(ends.read)
                    close(ends.write)
                }
            }
            close(logFile)
            try? FileManager.default.removeItem(atPath: logPath)
            throw TestPeerError(description: "pipe2() failed (errno \(code))")
        }
        let input = [inputEnds.read, inputEnds.write]
        let output = [outputEnds.read, outputEnds.write]
        // The child has its own copies of these.
        defer {
            close(input[0])
            close(output[1])
            close(logFile)
        }

        var environment = ProcessInfo.processInfo.environment
        environment["PYTHONUNBUFFERED"] = "1"
        let process: ChildProcess
        do {
            process = try ChildProcess(
                python, args, environment: environment, directory: TestEnvironment.repositoryRoot.path,
                stdin: input[0], stdout: output[1], stderr: logFile)
        } catch {
            close(input[1])
            close(output[0])
            try? FileManager.default.removeItem(atPath: logPath)
            throw TestPeerError(description: "cannot launch \(python) \(args.joined(separator: " ")): \(error)")
        }

        self.process = process
        self.stdinWrite = input[1]
        self.stdoutRead = output[0]
        self.logPath = logPath
        self.scheme = tls == nil ? "ws" : "wss"

        // From here on `self` exists, so a failure stops the process through stop()/deinit.
        let readResult = Self.readLine(fd: self.stdoutRead, timeout: startTimeout)
        var parsedPort = 0
        if case .line(let line) = readResult, line.hasPrefix("PORT "),
            let value = Int(line.dropFirst(5).trimmingCharacters(in: .whitespaces)), value > 0
        {
            parsedPort = value
        }
        self.port = parsedPort
        guard parsedPort > 0 else {
            let what: String
            switch readResult {
            case .line(let line): what = "printed \(line.debugDescription) instead of \"PORT n\""
            case .eof: what = "exited before printing its port"
            case .timeout: what = "did not print its port within \(startTimeout) s"
            case .error(let code): what = "could not be read from (errno \(code))"
            }
            let tail = Self.tail(of: logPath)
            stop()
            throw TestPeerError(
                description: "ws_server.py \(args.dropFirst().joined(separator: " ")) \(what); its stderr:\n\(tail)")
        }
    }

    /// Launches the peer without blocking a cooperative thread while Python starts.
    static func start(
        subprotocols: [String] = [],
        deflate: Bool = false,
        tls: TLS? = nil,
        port: Int = 0,
        arguments: [String] = [],
        startTimeout: Double = 10
    ) async throws -> PythonPeer {
        try await withCheckedThrowingContinuation { continuation in
            DispatchQueue.global().async {
                continuation.resume(
                    with: Result {
                        try PythonPeer(
                            subprotocols: subprotocols, deflate: deflate, tls: tls, port: port,
                            arguments: arguments, startTimeout: startTimeout)
                    })
            }
        }
    }

    deinit {
        stop()
    }

    /// `ws://127.0.0.1:PORT/echo` for `path: "/echo"` (`wss://` for a TLS peer); `host` may be "localhost".
    func url(path: String = "/echo", host: String = "127.0.0.1") -> String {
        let slash = path.hasPrefix("/") ? "" : "/"
        return "\(scheme)://\(host):\(port)\(slash)\(path)"
    }

    /// Whether the peer process still runs.
    var isRunning: Bool { process.isRunning }

    /// The next line the peer prints on stdout after its port (an event a test asked for, such as `STALLED 12` from
    /// `/send-then-close?report-stall=T`), or `nil` when none came within `timeout` seconds or the peer exited.
    /// Waits on a thread of its own, not on the cooperative pool; call it from one task at a time.
    func nextLine(timeout: Double) async -> String? {
        let fd = stdoutRead
        return await withCheckedContinuation { continuation in
            DispatchQueue.global().async {
                if case .line(let line) = Self.readLine(fd: fd, timeout: timeout) {
                    continuation.resume(returning: line)
                } else {
                    continuation.resume(returning: nil)
                }
            }
        }
    }

    /// The last lines the peer wrote to stderr (its log), for failure messages.
    func logTail(maxBytes: Int = 4000) -> String { Self.tail(of: logPath, maxBytes: maxBytes) }

    /// Terminates the peer (SIGTERM, SIGKILL after 5 s) and waits for it. Safe to call more than once.
    func stop() {
        guard stopped.setOnce() else { return }
        close(stdinWrite)
        process.terminate(signal: SIGTERM, grace: .seconds(5))
        close(stdoutRead)
        if ProcessInfo.processInfo.environment["WS_TEST_KEEP_LOGS"] == nil {
            try? FileManager.default.removeItem(atPath: logPath)
        }
    }

    // MARK: - helpers

    private enum ReadResult {
        case line(String)
        case eof
        case timeout
        case error(Int32)
    }

    /// Reads one `\n`-terminated line from `fd`, byte by byte (nothing after the newline is consumed).
    private static func readLine(fd: Int32, timeout: Double) -> ReadResult {
        let deadline = Date().addingTimeInterval(timeout)
        var bytes: [UInt8] = []
        while true {
            let remaining = deadline.timeIntervalSinceNow
            if remaining <= 0 { return .timeout }
            var pfd = pollfd(fd: fd, events: Int16(POLLIN), revents: 0)
            let ready = poll(&pfd, 1, Int32(min(remaining, 1) * 1000) + 1)
            if ready < 0 {
                if errno == EINTR { continue }
                return .error(errno)
            }
            if ready == 0 { continue }
            var byte: UInt8 = 0
            let count = read(fd, &byte, 1)
            if count < 0 {
                if errno == EINTR || errno == EAGAIN { continue }
                return .error(errno)
            }
            if count == 0 { return .eof }
            if byte == UInt8(ascii: "\n") { return .line(String(decoding: bytes, as: UTF8.self)) }
            bytes.append(byte)
        }
    }

    fileprivate static func tail(of path: String, maxBytes: Int = 4000) -> String {
        guard let data = FileManager.default.contents(atPath: path), !data.isEmpty else { return "(empty)" }
        return String(decoding: data.suffix(maxBytes), as: UTF8.self)
    }
}

/// A flag that flips once, from any thread.
private final class OnceFlag: Sendable {
    private let value = Atomic<Bool>(false)

    /// True for the first caller only.
    func setOnce() -> Bool {
        value.compareExchange(expected: false, desired: true, ordering: .acquiringAndReleasing).exchanged
    }
}

/// TLS material made by Tests/Fixtures/make_certs.sh into a temporary directory, once per test process.
struct TestCertificates: Sendable {
    /// A certificate and its private key (PEM files).
    struct Identity: Sendable {
        let certificate: String
        let privateKey: String
    }

    let directory: String

    /// The test CA (`ca.pem` / `ca.key`): trust it to accept `server`, `wrongHost`, `expired` and `client`.
    var ca: Identity { identity("ca") }
    /// Signed by the CA for DNS:localhost, IP:127.0.0.1 and IP:::1.
    var server: Identity { identity("server") }
    /// Signed by the CA for DNS:wrong.example only.
    var wrongHost: Identity { identity("wrong-host") }
    /// Self-signed, for localhost and 127.0.0.1.
    var selfSigned: Identity { identity("self-signed") }
    /// Signed by the CA for localhost/127.0.0.1, valid 2020-01-01 to 2021-01-01.
    var expired: Identity { identity("expired") }
    /// A client certificate (CN=ws-test-client) signed by the CA.
    var client: Identity { identity("client") }
    /// The client certificate with its key encrypted (AES-256, PKCS#8) with ``clientKeyPassword``.
    var clientEncrypted: Identity {
        Identity(certificate: "\(directory)/client.pem", privateKey: "\(directory)/client-encrypted.key")
    }
    /// The password of ``clientEncrypted``'s key.
    var clientKeyPassword: String { "test-key-password" }
    /// A directory holding the CA in OpenSSL's hashed layout (`openssl rehash`).
    var caDirectory: String { "\(directory)/ca-dir" }

    /// `ca.pem`.
    var caCertificate: String { ca.certificate }

    private func identity(_ name: String) -> Identity {
        Identity(certificate: "\(directory)/\(name).pem", privateKey: "\(directory)/\(name).key")
    }

    /// The one generation per test process, started by the first ``load()`` or ``shared()``.
    private static let generation = OneTimeGeneration()

    /// The certificates, made on first use (a second or so, more on a loaded machine) by make_certs.sh on a thread of
    /// its own and shared by every test in the process. Suspends meanwhile, holding no thread of the cooperative pool:
    /// prefer this to ``shared()`` in async tests.
    static func load() async throws -> TestCertificates {
        try await withCheckedThrowingContinuation { continuation in
            generation.whenDone { continuation.resume(with: $0) }
        }
    }

    /// ``load()`` for synchronous callers: blocks the calling thread until the certificates exist. The generation
    /// itself runs on a thread of its own, but a cooperative thread that calls this is held until it ends, so use
    /// ``load()`` from async code.
    static func shared() throws -> TestCertificates {
        let result = Mutex<Result<TestCertificates, TestPeerError>?>(nil)
        let done = DispatchSemaphore(value: 0)
        generation.whenDone { outcome in
            result.withLock { $0 = outcome }
            done.signal()
        }
        done.wait()
        return try result.withLock { $0! }.get()
    }

    /// Runs make_certs.sh once, on a dedicated thread, and hands the outcome to everyone who asked.
    private final class OneTimeGeneration: Sendable {
        typealias Outcome = Result<TestCertificates, TestPeerError>
        private enum State {
            case idle
            case running([@Sendable (Outcome) -> Void])
            case done(Outcome)
        }
        private let state = Mutex<State>(.idle)

        /// Calls `callback` with the outcome: at once when it exists, else from the generating thread.
        func whenDone(_ callback: @escaping @Sendable (Outcome) -> Void) {
            let (ready, start): (Outcome?, Bool) = self.state.withLock { state in
                switch state {
                case .idle:
                    state = .running([callback])
                    return (nil, true)
                case .running(let waiting):
                    state = .running(waiting + [callback])
                    return (nil, false)
                case .done(let outcome):
                    return (outcome, false)
                }
            }
            if let ready { callback(ready) }
            guard start else { return }
            Thread.detachNewThread {
                let outcome = TestCertificates.make()
                let waiting = self.state.withLock { state in
                    defer { state = .done(outcome) }
                    if case .running(let waiting) = state { return waiting }
                    return []
                }
                for callback in waiting { callback(outcome) }
            }
        }
    }

    /// Runs make_certs.sh (blocking the calling thread, which is the generation's own).
    private static func make() -> Result<TestCertificates, TestPeerError> {
        let directory = FileManager.default.temporaryDirectory
            .appendingPathComponent("ws-test-certs-\(getpid())-\(UUID().uuidString.prefix(8))").path
        let script = TestEnvironment.fixturesDirectory.appendingPathComponent("make_certs.sh").path
        let result: CompletedProcess
        do {
            result = try runToCompletion("/bin/bash", [script, directory], mergeOutput: true, timeout: .seconds(180))
        } catch {
            return .failure(TestPeerError(description: "cannot run \(script): \(error)"))
        }
        guard result.status == 0 else {
            let timedOut = result.timedOut ? " (killed after 180 s)" : ""
            return .failure(
                TestPeerError(
                    description:
                        "\(script) \(directory) failed (status \(result.status))\(timedOut):\n\(result.stdoutText)"
                        + "\n(it needs the openssl CLI: run ./scripts/setup.sh first)"))
        }
        return .success(TestCertificates(directory: directory))
    }
}
