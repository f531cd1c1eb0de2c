// tinyproxy (Debian's package) as an HTTP CONNECT proxy on loopback for the Curl engine tests; the Python peers and
// the test PKI are EngineTestSupport's.
import EngineTestSupport
import Foundation
import Glibc
import SpawnSupport

/// tinyproxy (Debian's package) in the foreground on a free loopback port, allowing CONNECT to `connectPorts`.
final class TinyProxy: Sendable {
    /// The proxy's port on 127.0.0.1.
    let port: Int
    private let process: ChildProcess
    private let logFile: String
    private let stderrFile: String

    private init(connectPorts: [Int]) throws {
        let directory = fixturesDirectory + "/tinyproxy-\(UUID().uuidString.prefix(8))"
        try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
        let port = freeLoopbackPort()
        self.port = port
        self.logFile = directory + "/tinyproxy.log"
        self.stderrFile = directory + "/stderr.log"
        var config = """
            Port \(port)
            Listen 127.0.0.1
            Allow 127.0.0.1
            Timeout 60
            MaxClients 64
            LogFile "\(self.logFile)"
            LogLevel Info

            """
        for connectPort in connectPorts { config += "ConnectPort \(connectPort)\n" }
        try config.write(toFile: directory + "/tinyproxy.conf", atomically: true, encoding: .utf8)
        _ = FileManager.default.createFile(atPath: self.stderrFile, contents: nil)
        let null = open("/dev/null", O_RDONLY | O_CLOEXEC)
        let output = open(self.stderrFile, O_WRONLY | O_CLOEXEC)
        defer {
            if null >= 0 { close(null) }
            if output >= 0 { close(output) }
        }
        guard null >= 0, output >= 0 else {
            throw PeerError(description: "cannot open tinyproxy's files (errno \(errno))")
        }
        let process = try ChildProcess(
            "/usr/bin/tinyproxy", ["-d", "-c", directory + "/tinyproxy.conf"], stdin: null, stdout: output,
            stderr: output)
        self.process = process
        // Wait until it accepts connections.
        for _ in 0..<200 {
            if canConnect(toLoopbackPort: port) { return }
            usleep(25_000)
        }
        process.terminateInBackground(signal: SIGKILL)
        throw PeerError(description: "tinyproxy did not start on 127.0.0.1:\(port): \(self.log)")
    }

    /// Starts tinyproxy on a helper thread.
    static func start(connectPorts: [Int]) async throws -> TinyProxy {
        try await onDedicatedThread { try TinyProxy(connectPorts: connectPorts) }
    }

    /// Everything tinyproxy logged (its log file and its standard error, where `-d` may send it).
    var log: String {
        let file = (try? String(contentsOfFile: self.logFile, encoding: .utf8)) ?? ""
        let stderr = (try? String(contentsOfFile: self.stderrFile, encoding: .utf8)) ?? ""
        return file + stderr
    }

    deinit {
        // SIGKILL: tinyproxy only notices SIGTERM when its accept loop wakes up, i.e. at the next connection.
        self.process.terminateInBackground(signal: SIGKILL)
    }
}
