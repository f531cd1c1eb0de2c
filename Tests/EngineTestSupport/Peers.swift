// Real peers for the engine tests (WSEngineCIOTests, WSEngineCurlTests): Python stdlib servers (asyncio, ssl) on
// loopback, and a test PKI made with the openssl CLI. Nothing here talks to anything but 127.0.0.1 / ::1 / localhost.
import Foundation
import Glibc
import SpawnSupport
import Synchronization

/// The peer script: `server.py MODE HOST [CERT KEY]` prints its port and serves until stdin closes.
/// Modes: `echo`, `hello-close` (sends "hello" and closes), `silent` (never reads or writes), `slow-reader` (reads
/// nothing until the test calls ``PythonServer/release()``, then reads and discards everything), `slow-echo`
/// (likewise, then echoes), `socks5` (a SOCKS5 proxy that only connects to loopback addresses and logs
/// `SOCKS CONNECT host:port` to standard error), `read-reset` (reads 64 KiB, then resets the connection: SO_LINGER 0
/// and close).
private let serverScript = #"""
    import asyncio, os, socket, ssl, struct, sys, threading

    MODE, HOST = sys.argv[1], sys.argv[2]

    def watch_stdin():
        try:
            sys.stdin.buffer.read()
        finally:
            os._exit(0)

    async def held(writer):
        # Until the test creates release-PORT beside this script (PythonServer.release()), at most 60 s.
        port = writer.get_extra_info("sockname")[1]
        path = os.path.join(os.path.dirname(os.path.abspath(sys.argv[0])), "release-%d" % port)
        for _ in range(6000):
            if os.path.exists(path):
                return
            await asyncio.sleep(0.01)

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
                await pipe(reader, writer)
            elif MODE == "hello-close":
                writer.write(b"hello")
                await writer.drain()
            elif MODE == "silent":
                await asyncio.sleep(3600)
            elif MODE == "socks5":
                await socks5(reader, writer)
            elif MODE == "slow-echo":
                await held(writer)
                await pipe(reader, writer)
            elif MODE == "read-reset":
                total = 0
                while total < 65536:
                    data = await reader.read(65536)
                    if not data:
                        break
                    total += len(data)
                linger = struct.pack("ii", 1, 0)
                writer.get_extra_info("socket").setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, linger)
                writer.transport.abort()
            elif MODE == "slow-reader":
                await held(writer)
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
package let fixturesDirectory: String = {
    let path = NSTemporaryDirectory() + "engine-tests-\(getpid())"
    try? FileManager.default.createDirectory(atPath: path, withIntermediateDirectories: true)
    try? serverScript.write(toFile: path + "/server.py", atomically: true, encoding: .utf8)
    return path
}()

/// A peer that could not be started or prepared.
package struct PeerError: Error, CustomStringConvertible {
    /// What failed.
    package let description: String

    /// Creates an error.
    package init(description: String) { self.description = description }
}

/// A Python server subprocess on loopback. It exits when this object goes away (its stdin closes). Started with
/// posix_spawn (Spawn.swift), not Foundation's `Process`, which crashed test processes with many descriptors open.
package final class PythonServer: Sendable {
    /// The TCP port the server listens on.
    package var port: Int { self.child.port }
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

    /// Lets a `slow-reader` or `slow-echo` server start reading (it reads nothing before, so the test knows the
    /// kernel's buffers fill up, however slowly it writes).
    package func release() {
        let path = fixturesDirectory + "/release-\(self.port)"
        guard FileManager.default.createFile(atPath: path, contents: Data()) else {
            preconditionFailure("could not create \(path): the server would never start reading")
        }
    }

    /// What the server wrote to its standard error.
    package var log: String { (try? String(contentsOfFile: self.stderrFile, encoding: .utf8)) ?? "" }

    /// Starts `server.py mode host [cert key]` on a helper thread and waits for its port.
    package static func start(mode: String, host: String = "127.0.0.1", certificate: (String, String)? = nil)
        async throws -> PythonServer
    {
        let pair = certificate.map { [$0.0, $0.1] }
        return try await onDedicatedThread { try PythonServer(mode: mode, host: host, certificate: pair) }
    }
}

/// The test PKI: a CA, a server certificate it signed for localhost / 127.0.0.1 / ::1, one it signed for
/// other.example only, and a self-signed ("untrusted") certificate for localhost.
package struct Certificates: Sendable {
    /// The CA's certificate (PEM).
    package let caFile: String
    /// The server certificate and key for localhost / 127.0.0.1 / ::1, signed by the CA.
    package let server: (String, String)
    /// A certificate and key for other.example only, signed by the CA (a name mismatch for localhost).
    package let otherName: (String, String)
    /// A self-signed certificate and key for localhost.
    package let untrusted: (String, String)

    private static let shared: Result<Certificates, PeerError> = {
        do { return .success(try make()) } catch { return .failure(PeerError(description: "\(error)")) }
    }()

    /// The shared PKI, made once, on a helper thread.
    package static func load() async throws -> Certificates {
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
                "-keyout", "ca.key", "-out", "ca.pem", "-days", "2", "-subj", "/CN=Engine Test CA",
                "-addext", "basicConstraints=critical,CA:TRUE", "-addext", "keyUsage=critical,keyCertSign,cRLSign",
            ], in: directory)
        func issue(_ name: String, subject: String, altNames: String) throws {
            try "subjectAltName=\(altNames)\nbasicConstraints=CA:FALSE\nextendedKeyUsage=serverAuth\n"
                .write(toFile: "\(directory)/\(name).ext", atomically: true, encoding: .utf8)
            try openssl(
                ["req"] + newKey + ["-keyout", "\(name).key", "-out", "\(name).csr", "-subj", "/CN=\(subject)"],
                in: directory)
            try openssl(
                [
                    "x509", "-req", "-in", "\(name).csr", "-CA", "ca.pem", "-CAkey", "ca.key", "-CAcreateserial",
                    "-out", "\(name).pem", "-days", "2", "-extfile", "\(name).ext",
                ], in: directory)
        }
        try issue("server", subject: "localhost", altNames: "DNS:localhost,IP:127.0.0.1,IP:::1")
        try issue("other", subject: "other.example", altNames: "DNS:other.example")
        try openssl(
            ["req", "-x509"] + newKey + [
                "-keyout", "untrusted.key", "-out", "untrusted.pem", "-days", "2", "-subj", "/CN=localhost",
                "-addext", "subjectAltName=DNS:localhost,IP:127.0.0.1",
            ], in: directory)
        return Certificates(
            caFile: "\(directory)/ca.pem",
            server: ("\(directory)/server.pem", "\(directory)/server.key"),
            otherName: ("\(directory)/other.pem", "\(directory)/other.key"),
            untrusted: ("\(directory)/untrusted.pem", "\(directory)/untrusted.key"))
    }
}

/// Whether ::1 can be bound on this machine.
package let ipv6LoopbackAvailable: Bool = {
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
package func unusedLoopbackPort() -> (port: Int, holder: Int32) {
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

/// A loopback port that was free a moment ago (for a peer such as tinyproxy that picks no port itself).
package func freeLoopbackPort() -> Int {
    let (port, holder) = unusedLoopbackPort()
    close(holder)
    return port
}

/// Whether something accepts TCP connections on 127.0.0.1:`port`.
package func canConnect(toLoopbackPort port: Int) -> Bool {
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

/// Raises the soft RLIMIT_NOFILE to at least `minimum` (up to the hard limit).
package func raiseOpenFileLimit(to minimum: UInt) {
    var limit = rlimit()
    getrlimit(Int32(RLIMIT_NOFILE.rawValue), &limit)
    guard limit.rlim_cur < minimum else { return }
    limit.rlim_cur = min(limit.rlim_max, rlim_t(minimum))
    setrlimit(Int32(RLIMIT_NOFILE.rawValue), &limit)
}
