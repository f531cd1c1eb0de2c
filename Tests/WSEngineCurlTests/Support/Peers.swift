// Real peers for the Curl engine tests: Python stdlib servers (asyncio, ssl) and tinyproxy on loopback, and a test
// PKI made with the openssl CLI. Nothing here talks to anything but 127.0.0.1 / ::1 / localhost.
import Foundation
import SpawnSupport
import Glibc
import Synchronization

/// The peer script: `server.py MODE HOST [CERT KEY]` prints its port and serves until stdin closes.
/// Modes: `echo`, `hello-close` (sends "hello" and closes), `silent` (never reads or writes),
/// `slow-reader` (waits 1.5 s, then reads and discards everything), `socks5` (a SOCKS5 proxy that only connects to
/// loopback addresses and logs `SOCKS CONNECT host:port` to standard error).
private let serverScript = #"""
    import asyncio, os, ssl, sys, threading

    MODE, HOST = sys.argv[1], sys.argv[2]

    def watch_stdin():
        try:
            sys.stdin.buffer.read()
        finally:
            os._exit(0)

    async def pipe(reader, writer):
        try:
            while True:
                data = await reader.read(65536)
                if not data:
                    break
                writer.write(data)
                await writer.drain()
        finally:
            writer.close()

    async def socks5(reader, writer):
        # RFC 1928, no authentication, CONNECT only, and only to loopback addresses.
        greeting = await reader.readexactly(2)
        await reader.readexactly(greeting[1])
        writer.write(b"\x05\x00")
        version, command, _, kind = await reader.readexactly(4)
        if kind == 1:
            host = ".".join(str(b) for b in await reader.readexactly(4))
        elif kind == 3:
            host = (await reader.readexactly((await reader.readexactly(1))[0])).decode()
        else:
            host = "::1" if await reader.readexactly(16) == bytes(15) + b"\x01" else "?"
        port = int.from_bytes(await reader.readexactly(2), "big")
        if command != 1 or host not in ("127.0.0.1", "localhost", "::1"):
            writer.write(b"\x05\x02\x00\x01" + bytes(6))
            return
        print("SOCKS CONNECT %s:%d" % (host, port), file=sys.stderr, flush=True)
        upstream_reader, upstream_writer = await asyncio.open_connection(host, port)
        writer.write(b"\x05\x00\x00\x01" + bytes(6))
        await asyncio.gather(pipe(reader, upstream_writer), pipe(upstream_reader, writer))

    async def handle(reader, writer):
        try:
            if MODE == "echo":
                while True:
                    data = await reader.read(65536)
                    if not data:
                        break
                    writer.write(data)
                    await writer.drain()
            elif MODE == "hello-close":
                writer.write(b"hello")
                await writer.drain()
            elif MODE == "silent":
                await asyncio.sleep(3600)
            elif MODE == "socks5":
                await socks5(reader, writer)
            elif MODE == "slow-reader":
                await asyncio.sleep(1.5)
                while True:
                    data = await reader.read(1 << 20)
                    if not data:
                        break
        except Exception:
            pass
        finally:
            try:
                writer.close()
                await writer.wait_closed()
            except Exception:
                pass

    async def main():
        asyncio.get_running_loop().set_exception_handler(lambda loop, context: None)
        context = None
        if len(sys.argv) > 4:
            context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
            context.load_cert_chain(sys.argv[3], sys.argv[4])
        server = await asyncio.start_server(handle, HOST, 0, ssl=context, backlog=4096)
        print(server.sockets[0].getsockname()[1], flush=True)
        async with server:
            await server.serve_forever()

    threading.Thread(target=watch_stdin, daemon=True).start()
    asyncio.run(main())
    """#

/// A scratch directory for this test process.
let fixturesDirectory: String = {
    let path = NSTemporaryDirectory() + "curl-engine-tests-\(getpid())"
    try? FileManager.default.createDirectory(atPath: path, withIntermediateDirectories: true)
    try? serverScript.write(toFile: path + "/server.py", atomically: true, encoding: .utf8)
    return path
}()

struct PeerError: Error, CustomStringConvertible {
    let description: String
}

/// A Python server subprocess on loopback. It exits when this object goes away (its stdin closes). Started with
/// posix_spawn (Spawn.swift), not Foundation's `Process`, which crashed test processes with many descriptors open.
final class PythonServer: Sendable {
    /// The TCP port the server listens on.
    var port: Int { self.child.port }
    private let child: PortAnnouncingChild
    private let stderrFile: String

    private init(mode: String, host: String, certificate: [String]?) throws {
        let arguments = ["python3", fixturesDirectory + "/server.py", mode, host] + (certificate ?? [])
        let stderrFile = fixturesDirectory + "/\(mode)-\(UUID().uuidString.prefix(8)).log"
        let log = open(stderrFile, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0o644)
        defer { if log >= 0 { close(log) } }
        self.child = try PortAnnouncingChild(
            arguments, stderr: log >= 0 ? log : nil, what: "the \(mode) server on \(host)")
        self.stderrFile = stderrFile
    }

    /// What the server wrote to its standard error.
    var log: String { (try? String(contentsOfFile: self.stderrFile, encoding: .utf8)) ?? "" }

    /// Starts `server.py mode host [cert key]` on a helper thread and waits for its port.
    static func start(mode: String, host: String = "127.0.0.1", certificate: (String, String)? = nil)
        async throws -> PythonServer
    {
        let pair = certificate.map { [$0.0, $0.1] }
        return try await onDedicatedThread { try PythonServer(mode: mode, host: host, certificate: pair) }
    }
}


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
        guard null >= 0, output >= 0 else { throw PeerError(description: "cannot open tinyproxy's files (errno \(errno))") }
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

/// The test PKI: a CA, a server certificate it signed for localhost / 127.0.0.1 / ::1, and a self-signed
/// ("untrusted") certificate for localhost.
struct Certificates: Sendable {
    let caFile: String
    let server: (String, String)
    let untrusted: (String, String)

    private static let shared: Result<Certificates, PeerError> = {
        do { return .success(try make()) } catch { return .failure(PeerError(description: "\(error)")) }
    }()

    /// The shared PKI, made once, on a helper thread.
    static func load() async throws -> Certificates {
        try await onDedicatedThread { try shared.get() }
    }

    private static func openssl(_ arguments: [String], in directory: String) throws {
        let result = try runToCompletion(
            "/usr/bin/env", ["openssl"] + arguments, directory: directory, mergeOutput: true, timeout: .seconds(120))
        guard result.status == 0 else {
            throw PeerError(description: "openssl \(arguments.joined(separator: " ")) failed: \(result.stdoutText)")
        }
    }

    private static func make() throws -> Certificates {
        let directory = fixturesDirectory + "/pki"
        try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
        let newKey = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"]
        try openssl(
            ["req", "-x509"] + newKey + [
                "-keyout", "ca.key", "-out", "ca.pem", "-days", "2", "-subj", "/CN=Curl Engine Test CA",
                "-addext", "basicConstraints=critical,CA:TRUE", "-addext", "keyUsage=critical,keyCertSign,cRLSign",
            ], in: directory)
        try "subjectAltName=DNS:localhost,IP:127.0.0.1,IP:::1\nbasicConstraints=CA:FALSE\nextendedKeyUsage=serverAuth\n"
            .write(toFile: "\(directory)/server.ext", atomically: true, encoding: .utf8)
        try openssl(
            ["req"] + newKey + ["-keyout", "server.key", "-out", "server.csr", "-subj", "/CN=localhost"],
            in: directory)
        try openssl(
            [
                "x509", "-req", "-in", "server.csr", "-CA", "ca.pem", "-CAkey", "ca.key", "-CAcreateserial",
                "-out", "server.pem", "-days", "2", "-extfile", "server.ext",
            ], in: directory)
        try openssl(
            ["req", "-x509"] + newKey + [
                "-keyout", "untrusted.key", "-out", "untrusted.pem", "-days", "2", "-subj", "/CN=localhost",
                "-addext", "subjectAltName=DNS:localhost,IP:127.0.0.1",
            ], in: directory)
        return Certificates(
            caFile: "\(directory)/ca.pem",
            server: ("\(directory)/server.pem", "\(directory)/server.key"),
            untrusted: ("\(directory)/untrusted.pem", "\(directory)/untrusted.key"))
    }
}

/// Whether ::1 can be bound on this machine.
let ipv6LoopbackAvailable: Bool = {
    let fd = socket(AF_INET6, Int32(SOCK_STREAM.rawValue | SOCK_CLOEXEC.rawValue), 0)
    guard fd >= 0 else { return false }
    defer { close(fd) }
    var address = sockaddr_in6()
    address.sin6_family = sa_family_t(AF_INET6)
    address.sin6_addr = in6addr_loopback
    return withUnsafePointer(to: &address) {
        $0.withMemoryRebound(to: sockaddr.self, capacity: 1) {
            bind(fd, $0, socklen_t(MemoryLayout<sockaddr_in6>.size)) == 0
        }
    }
}()

/// A loopback port with nothing listening: bound (so no one else gets it while we look), never listened on.
func unusedLoopbackPort() -> (port: Int, holder: Int32) {
    let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue | SOCK_CLOEXEC.rawValue), 0)
    var address = loopbackAddress(port: 0)
    var length = socklen_t(MemoryLayout<sockaddr_in>.size)
    withUnsafeMutablePointer(to: &address) {
        $0.withMemoryRebound(to: sockaddr.self, capacity: 1) {
            _ = bind(fd, $0, length)
            _ = getsockname(fd, $0, &length)
        }
    }
    return (Int(UInt16(bigEndian: address.sin_port)), fd)
}

/// A loopback port that was free a moment ago (for tinyproxy, which picks no port itself).
func freeLoopbackPort() -> Int {
    let (port, holder) = unusedLoopbackPort()
    close(holder)
    return port
}

/// Whether something accepts TCP connections on 127.0.0.1:`port`.
func canConnect(toLoopbackPort port: Int) -> Bool {
    let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue | SOCK_CLOEXEC.rawValue), 0)
    defer { close(fd) }
    var address = loopbackAddress(port: port)
    return withUnsafePointer(to: &address) {
        $0.withMemoryRebound(to: sockaddr.self, capacity: 1) {
            connect(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) == 0
        }
    }
}

private func loopbackAddress(port: Int) -> sockaddr_in {
    var address = sockaddr_in()
    address.sin_family = sa_family_t(AF_INET)
    address.sin_addr.s_addr = UInt32(0x7f00_0001).bigEndian
    address.sin_port = UInt16(port).bigEndian
    return address
}
