// Support for the hostile-input, fault and security tests: a raw scripted TCP server that sees the client's bytes
// exactly as sent (masks included) and can misbehave below the WebSocket layer (drip-fed bytes, RST, a tiny
// receive buffer, never reading), a resident-memory probe, a log handler that captures everything, and a
// line-reading child process for the Python TLS probe.
import EngineTestSupport
import Foundation
import Logging
import SpawnSupport
import Synchronization
import Testing
import WSCore

#if canImport(Glibc)
import Glibc
#endif

// MARK: - Raw scripted server

/// A frame as the client put it on the wire: header fields, the masking key and the payload (unmasked).
struct ClientFrame: Sendable {
    /// The FIN bit.
    var fin: Bool
    /// RSV1–3 as the high bits of the first byte (0x70 mask).
    var reservedBits: UInt8
    /// The opcode.
    var opcode: UInt8
    /// Whether the MASK bit was set.
    var masked: Bool
    /// The four key bytes in wire order (all zero when unmasked).
    var maskingKey: [UInt8]
    /// The payload after unmasking.
    var payload: [UInt8]
    /// The payload as it was on the wire (still masked).
    var wirePayload: [UInt8]

    /// The masking key as one big-endian number.
    var key32: UInt32 { self.maskingKey.reduce(0) { $0 << 8 | UInt32($1) } }

    /// The close reason of a close frame: `.some(nil)` for one without a code.
    var closeReason: CloseReason?? {
        guard self.opcode == 0x8 else { return nil }
        guard self.payload.count >= 2 else { return .some(nil) }
        return .some(
            CloseReason(
                code: .init(UInt16(self.payload[0]) << 8 | UInt16(self.payload[1])),
                message: String(decoding: self.payload[2...], as: UTF8.self)))
    }
}

/// Why a scripted connection stopped: the peer went away, a timeout, or a malformed frame.
struct RawConnectionError: Error, CustomStringConvertible {
    /// What happened.
    let description: String
}

/// The server side of one TCP connection of a ``ScriptedServer``, used by the script on its own thread: blocking
/// reads (with a receive timeout) and writes, plus the misbehaviour below the WebSocket layer.
final class RawConnection: Sendable {
    private let fdState: Mutex<Int32>
    private let buffered = Mutex<[UInt8]>([])
    /// The upgrade request head the client sent (set by ``readHead()``).
    let requestHead = Mutex<[UInt8]>([])

    /// Takes over an accepted socket; reads time out after 10 s unless told otherwise.
    init(fd: Int32) {
        self.fdState = Mutex(fd)
        self.setReceiveTimeout(.seconds(10))
    }

    /// The descriptor, or -1 once closed.
    private var fd: Int32 { self.fdState.withLock { $0 } }

    /// The client's Sec-WebSocket-Key ("" before ``readHead()`` or when absent).
    var key: String { webSocketKey(inRequest: self.requestHead.withLock { $0 }) }

    /// Sets how long a read may block before it fails.
    func setReceiveTimeout(_ timeout: Duration) {
        var value = timeval(
            tv_sec: Int(timeout.components.seconds), tv_usec: Int(timeout.components.attoseconds / 1_000_000_000_000))
        _ = setsockopt(self.fd, SOL_SOCKET, SO_RCVTIMEO, &value, socklen_t(MemoryLayout<timeval>.size))
    }

    /// Sets how long a write may block before it fails (a client that stopped reading).
    func setSendTimeout(_ timeout: Duration) {
        var value = timeval(
            tv_sec: Int(timeout.components.seconds), tv_usec: Int(timeout.components.attoseconds / 1_000_000_000_000))
        _ = setsockopt(self.fd, SOL_SOCKET, SO_SNDTIMEO, &value, socklen_t(MemoryLayout<timeval>.size))
    }

    /// Sets SO_SNDBUF (which also turns off the kernel's send-buffer autotuning for this socket).
    func setSendBufferSize(_ size: Int) {
        var value = Int32(size)
        _ = setsockopt(self.fd, SOL_SOCKET, SO_SNDBUF, &value, socklen_t(MemoryLayout<Int32>.size))
    }

    /// Waits until the socket can take more bytes; `false` when it could not within `timeout` (the client stopped
    /// reading and the buffers are full).
    func waitWritable(timeout: Duration) -> Bool {
        var descriptor = pollfd(fd: self.fd, events: Int16(POLLOUT), revents: 0)
        let milliseconds = Int32(
            timeout.components.seconds * 1000 + timeout.components.attoseconds / 1_000_000_000_000_000)
        return poll(&descriptor, 1, milliseconds) == 1
    }

    /// Waits until the client has read every byte written so far: its kernel has acknowledged them all and its
    /// socket (in this process, found by its ports) holds none unread. Write, wait for this, then write more or cut:
    /// the client then reads the earlier bytes on their own, whatever the scheduling. `false` when that did not
    /// happen within `timeout`, or the client's socket was never found.
    func waitUntilClientRead(timeout: Duration = .seconds(10)) -> Bool {
        let fd = self.fd
        var seen = false
        return SocketProbe.poll(timeout: timeout) {
            guard SocketProbe.unacknowledgedBytes(fd) == 0 else { return false }
            // Gone after it was seen: the client closed it, nothing is left to read.
            guard let client = self.clientDescriptor() else { return seen }
            seen = true
            return SocketProbe.unreadBytes(client) == 0
        }
    }

    /// The client's end of this connection (a socket of this process, from the client's port to ours), or `nil`
    /// when there is none (closed already), for ``SocketProbe``.
    func clientDescriptor() -> Int32? {
        guard let ports = SocketProbe.ports(of: self.fd) else { return nil }
        return SocketProbe.descriptor(localPort: ports.remote, remotePort: ports.local)
    }

    /// Reads the client's request head (up to the blank line); bytes after it stay buffered for ``readFrame()``.
    @discardableResult
    func readHead() throws -> [UInt8] {
        let terminator: [UInt8] = Array("\r\n\r\n".utf8)
        while true {
            let found: [UInt8]? = self.buffered.withLock { buffer in
                guard buffer.count >= 4 else { return nil }
                for end in 4...buffer.count where Array(buffer[(end - 4)..<end]) == terminator {
                    let head = Array(buffer[..<end])
                    buffer.removeFirst(end)
                    return head
                }
                return nil
            }
            if let found {
                self.requestHead.withLock { $0 = found }
                return found
            }
            guard try self.fill() else {
                throw RawConnectionError(description: "the client closed before its request head ended")
            }
        }
    }

    /// Reads the request head and answers `101 Switching Protocols` with the right accept value and `extraHeaders`
    /// (each ending in CRLF).
    func acceptUpgrade(extraHeaders: String = "") throws {
        try self.readHead()
        try self.write(switchingProtocols(key: self.key, extraHeaders: extraHeaders))
    }

    /// Writes every byte (blocking); throws once the client is gone or the send timeout ran out.
    func write(_ bytes: [UInt8]) throws {
        var sent = 0
        while sent < bytes.count {
            let n = bytes[sent...].withUnsafeBytes { send(self.fd, $0.baseAddress, $0.count, Int32(MSG_NOSIGNAL)) }
            if n < 0 && errno == EINTR { continue }
            guard n > 0 else {
                throw RawConnectionError(
                    description: "write failed (errno \(errno)) after \(sent) of \(bytes.count) bytes")
            }
            sent += n
        }
    }

    /// Writes `bytes` one at a time, `interval` apart (a slowloris peer); stops quietly when the client is gone.
    /// - Returns: How many bytes went out.
    @discardableResult
    func drip(_ bytes: [UInt8], every interval: Duration) -> Int {
        for (index, byte) in bytes.enumerated() {
            do { try self.write([byte]) } catch { return index }
            Thread.sleep(
                forTimeInterval: Double(interval.components.attoseconds) / 1e18 + Double(interval.components.seconds))
        }
        return bytes.count
    }

    /// The next frame from the client, or `nil` at the end of the stream.
    func readFrame() throws -> ClientFrame? {
        func need(_ count: Int) throws -> Bool {
            while self.buffered.withLock({ $0.count }) < count {
                guard try self.fill() else { return false }
            }
            return true
        }
        guard try need(2) else { return nil }
        let (b0, b1) = self.buffered.withLock { ($0[0], $0[1]) }
        var length = Int(b1 & 0x7F)
        var offset = 2
        if length == 126 {
            guard try need(4) else { return nil }
            length = self.buffered.withLock { Int($0[2]) << 8 | Int($0[3]) }
            offset = 4
        } else if length == 127 {
            guard try need(10) else { return nil }
            length = self.buffered.withLock { $0[2..<10].reduce(0) { $0 << 8 | Int($1) } }
            offset = 10
        }
        guard length <= 64 << 20 else {
            throw RawConnectionError(description: "a client frame declares \(length) bytes")
        }
        let masked = b1 & 0x80 != 0
        let keyLength = masked ? 4 : 0
        guard try need(offset + keyLength + length) else { return nil }
        return self.buffered.withLock { buffer in
            let key = masked ? Array(buffer[offset..<offset + 4]) : [0, 0, 0, 0]
            let start = offset + keyLength
            let wire = Array(buffer[start..<start + length])
            var payload = wire
            for i in payload.indices { payload[i] ^= key[i & 3] }
            buffer.removeFirst(start + length)
            return ClientFrame(
                fin: b0 & 0x80 != 0, reservedBits: b0 & 0x70, opcode: b0 & 0x0F, masked: masked, maskingKey: key,
                payload: payload, wirePayload: wire)
        }
    }

    /// Reads frames until the client's close frame; `nil` when the stream ended (or failed) first.
    func readUntilClose() -> CloseReason?? {
        while let frame = try? self.readFrame() {
            if let reason = frame.closeReason { return reason }
        }
        return nil
    }

    /// Reads and discards everything until the client closes (or the receive timeout runs out).
    func drainUntilEnd() {
        while (try? self.fill()) == true { self.buffered.withLock { $0.removeAll(keepingCapacity: true) } }
    }

    /// Closes with an RST instead of a FIN (SO_LINGER with a zero timeout).
    func reset() {
        self.fdState.withLock { fd in
            guard fd >= 0 else { return }
            var linger = Glibc.linger(l_onoff: 1, l_linger: 0)
            _ = setsockopt(fd, SOL_SOCKET, SO_LINGER, &linger, socklen_t(MemoryLayout<Glibc.linger>.size))
            Glibc.close(fd)
            fd = -1
        }
    }

    /// Sends a FIN (half-close): the client reads the end of the stream, we can still read.
    func shutdownWrite() {
        self.fdState.withLock { fd in if fd >= 0 { _ = shutdown(fd, Int32(SHUT_WR)) } }
    }

    /// Closes the socket (FIN); safe to call more than once.
    func close() {
        self.fdState.withLock { fd in
            guard fd >= 0 else { return }
            Glibc.close(fd)
            fd = -1
        }
    }

    /// Unblocks reads and writes without closing the descriptor (for ``ScriptedServer/stop()``).
    func abortIO() {
        self.fdState.withLock { fd in if fd >= 0 { _ = shutdown(fd, Int32(SHUT_RDWR)) } }
    }

    /// Reads once into the buffer; `false` at the end of the stream, throws on errors and timeouts.
    private func fill() throws -> Bool {
        var chunk = [UInt8](repeating: 0, count: 65536)
        while true {
            let fd = self.fd
            guard fd >= 0 else { return false }
            let n = chunk.withUnsafeMutableBytes { recv(fd, $0.baseAddress, $0.count, 0) }
            if n < 0 && errno == EINTR { continue }
            if n == 0 { return false }
            guard n > 0 else { throw RawConnectionError(description: "read failed (errno \(errno))") }
            self.buffered.withLock { $0 += chunk[0..<n] }
            return true
        }
    }
}

/// `HTTP/1.1 101 Switching Protocols` with the correct accept value for `key` and `extraHeaders` (CRLF-terminated
/// lines), ending with the blank line.
func switchingProtocols(key: String, extraHeaders: String = "") -> [UInt8] {
    Array(
        ("HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
            + "Sec-WebSocket-Accept: \(WebSocketHandshake.acceptValue(forKey: key))\r\n\(extraHeaders)\r\n").utf8)
}

/// A raw TCP server that runs `script` on a thread per accepted connection (up to `connections`), for
/// misbehaviour the WSTesting server does not script: bytes as the client sent them, drip-feeding, RSTs, a receive
/// buffer of a few KiB. Stopped by ``stop()`` or when released.
final class ScriptedServer: Sendable {
    /// The bound address.
    let host: String
    /// The bound port.
    let port: Int
    private let listener: Int32
    private let connections = Mutex<[RawConnection]>([])
    private let finished = Atomic<Int>(0)
    private let errors = Mutex<[String]>([])
    private let stopped = Atomic<Bool>(false)
    private let expected: Int

    /// Starts listening.
    /// - Parameters:
    ///   - host: An IPv4 address to bind (127.0.0.1 unless the test runs a network namespace).
    ///   - connections: How many connections to accept.
    ///   - receiveBufferSize: SO_RCVBUF for accepted sockets (set on the listener, so it applies from the SYN).
    ///   - script: What to do with each connection; the socket is closed after it returns.
    init(
        host: String = "127.0.0.1", connections: Int = 1, receiveBufferSize: Int? = nil,
        script: @escaping @Sendable (RawConnection) throws -> Void
    ) throws {
        (self.listener, self.port) = try rawListener(host: host, backlog: 128, receiveBufferSize: receiveBufferSize)
        self.host = host
        self.expected = connections
        let listener = self.listener
        let thread = Thread { [self] in
            for _ in 0..<connections {
                let fd = accept(listener, nil, nil)
                if fd < 0 { return }
                // Not inherited by child processes (Python peers, the DNS child), which would keep it open.
                _ = fcntl(fd, F_SETFD, FD_CLOEXEC)
                let connection = RawConnection(fd: fd)
                self.connections.withLock { $0.append(connection) }
                if self.stopped.load(ordering: .acquiring) { connection.abortIO() }
                Thread.detachNewThread { [self] in
                    do {
                        try script(connection)
                    } catch {
                        self.errors.withLock { $0.append("\(error)") }
                    }
                    connection.close()
                    self.finished.add(1, ordering: .releasing)
                }
            }
        }
        thread.start()
    }

    /// `ws://host:port/`.
    var url: String { "ws://\(self.host):\(self.port)/" }

    /// What the scripts threw, for failure messages.
    var scriptErrors: [String] { self.errors.withLock { $0 } }

    /// Waits until every expected connection's script has returned, at most `timeout`.
    /// - Returns: Whether they all finished.
    @discardableResult
    func waitUntilFinished(timeout: Duration = .seconds(10)) async -> Bool {
        let deadline = ContinuousClock.now + timeout
        while self.finished.load(ordering: .acquiring) < self.expected {
            if ContinuousClock.now >= deadline { return false }
            try? await Task.sleep(for: .milliseconds(10))
        }
        return true
    }

    /// Stops accepting and unblocks every running script (their reads and writes fail).
    func stop() {
        guard !self.stopped.exchange(true, ordering: .acquiringAndReleasing) else { return }
        shutdown(self.listener, Int32(SHUT_RDWR))
        Glibc.close(self.listener)
        for connection in self.connections.withLock({ $0 }) { connection.abortIO() }
    }

    deinit { self.stop() }
}

/// A listening TCP socket on `host` (IPv4) with a free port; `receiveBufferSize` sets SO_RCVBUF before listen.
func rawListener(host: String, backlog: Int32, receiveBufferSize: Int? = nil) throws -> (fd: Int32, port: Int) {
    let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue | SOCK_CLOEXEC.rawValue), 0)
    guard fd >= 0 else { throw TestPeerError(description: "socket() failed (errno \(errno))") }
    var one: Int32 = 1
    setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, socklen_t(MemoryLayout<Int32>.size))
    if var size = receiveBufferSize.map(Int32.init) {
        setsockopt(fd, SOL_SOCKET, SO_RCVBUF, &size, socklen_t(MemoryLayout<Int32>.size))
    }
    var address = sockaddr_in()
    address.sin_family = sa_family_t(AF_INET)
    address.sin_addr.s_addr = inet_addr(host)
    var length = socklen_t(MemoryLayout<sockaddr_in>.size)
    let ok = withUnsafeMutablePointer(to: &address) {
        $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { p in
            bind(fd, p, length) == 0 && listen(fd, backlog) == 0 && getsockname(fd, p, &length) == 0
        }
    }
    guard ok else {
        let code = errno
        Glibc.close(fd)
        throw TestPeerError(description: "scripted server: bind/listen on \(host) failed (errno \(code))")
    }
    return (fd, Int(UInt16(bigEndian: address.sin_port)))
}

// MARK: - Resident memory

/// The process's resident set size, read from `/proc/self/status` (VmRSS).
enum ResidentMemory {
    /// VmRSS in bytes (0 when unreadable).
    static func current() -> Int {
        guard let status = try? String(contentsOfFile: "/proc/self/status", encoding: .utf8) else { return 0 }
        for line in status.split(separator: "\n") where line.hasPrefix("VmRSS:") {
            let kilobytes = line.split(separator: " ").dropFirst().first.flatMap { Int($0) } ?? 0
            return kilobytes * 1024
        }
        return 0
    }

    /// Runs `body` while a thread samples VmRSS every 5 ms; returns what `body` returned and the peak growth over
    /// the value before it started (printed to stderr with `label` when `WS_TEST_PRINT_RSS` is set).
    /// Measurements run one at a time (``MemoryProbeLock``), and the tests that make them run in a process of
    /// their own (``MemoryIsolation``), so nothing else allocates meanwhile.
    static func peakGrowth<T>(
        _ label: String = #function,
        during body: () async throws -> T
    ) async throws -> (result: T, growth: Int) {
        await MemoryProbeLock.shared.acquire()
        // Hand memory freed by earlier work back to the kernel first: otherwise malloc reuses it without any growth
        // in RSS and a second flood in the same process looks free (seen: 27 MiB, then 0 MiB for the same flood).
        Self.trimHeap()
        let probe = Probe(baseline: Self.current())
        let sampler = Thread {
            while probe.running.load(ordering: .acquiring) {
                probe.record(Self.current())
                usleep(5_000)
            }
        }
        sampler.start()
        let result: T
        do {
            result = try await body()
        } catch {
            probe.running.store(false, ordering: .releasing)
            await MemoryProbeLock.shared.release()
            throw error
        }
        probe.record(Self.current())
        probe.running.store(false, ordering: .releasing)
        await MemoryProbeLock.shared.release()
        let growth = max(0, probe.peak.load(ordering: .relaxed) - probe.baseline)
        if ProcessInfo.processInfo.environment["WS_TEST_PRINT_RSS"] != nil {
            FileHandle.standardError.write(Data("RSS growth \(mebibytes(growth)) at \(label)\n".utf8))
        }
        return (result, growth)
    }

    /// glibc's `malloc_trim(0)`, looked up at run time (Glibc's module map does not export it): returns free heap
    /// pages of every arena to the kernel.
    static func trimHeap() {
        typealias MallocTrim = @convention(c) (Int) -> Int32
        guard let symbol = dlsym(nil, "malloc_trim") else { return }
        _ = unsafeBitCast(symbol, to: MallocTrim.self)(0)
    }

    /// The sampler's shared state.
    private final class Probe: Sendable {
        /// VmRSS before the measurement.
        let baseline: Int
        /// The highest VmRSS seen.
        let peak: Atomic<Int>
        /// Cleared to stop the sampling thread.
        let running = Atomic<Bool>(true)

        /// Starts with the peak at `baseline`.
        init(baseline: Int) {
            self.baseline = baseline
            self.peak = Atomic(baseline)
        }

        /// Raises the peak to `value` if it is higher.
        func record(_ value: Int) {
            var current = self.peak.load(ordering: .relaxed)
            while value > current {
                let (exchanged, original) = self.peak.compareExchange(
                    expected: current, desired: value, ordering: .relaxed)
                if exchanged { return }
                current = original
            }
        }
    }
}

/// Lets memory-measuring tests run one at a time, so that two of them do not count each other's allocations.
actor MemoryProbeLock {
    /// The one lock.
    static let shared = MemoryProbeLock()
    private var busy = false
    private var waiters: [CheckedContinuation<Void, Never>] = []

    /// Waits until no other measurement holds the lock, then holds it.
    func acquire() async {
        if self.busy {
            await withCheckedContinuation { self.waiters.append($0) }
        } else {
            self.busy = true
        }
    }

    /// Hands the lock to the next waiter, or frees it.
    func release() {
        if self.waiters.isEmpty { self.busy = false } else { self.waiters.removeFirst().resume() }
    }
}

/// `bytes` as "12.3 MiB", for messages.
func mebibytes(_ bytes: Int) -> String {
    String(format: "%.1f MiB", Double(bytes) / 1_048_576)
}

// MARK: - Logging

/// A `LogHandler` that keeps every line, metadata included, at `.trace`: for checking what never reaches a log.
struct CapturingLogHandler: LogHandler {
    /// The lines logged through any copy of this handler.
    final class Store: Sendable {
        private let lines = Mutex<[String]>([])
        /// Everything logged so far, one line per message with its metadata.
        var all: [String] { self.lines.withLock { $0 } }
        /// Keeps one line.
        func append(_ line: String) { self.lines.withLock { $0.append(line) } }
    }

    /// Where the lines go.
    let store: Store
    /// Everything, by default.
    var logLevel: Logger.Level = .trace
    /// The logger's metadata, rendered into every line.
    var metadata: Logger.Metadata = [:]

    /// One metadata value.
    subscript(metadataKey key: String) -> Logger.Metadata.Value? {
        get { self.metadata[key] }
        set { self.metadata[key] = newValue }
    }

    /// Renders the message with all metadata, level and source, and keeps it.
    func log(event: LogEvent) {
        var all = self.metadata
        if let extra = event.metadata { all.merge(extra) { $1 } }
        let rendered = all.sorted { $0.key < $1.key }.map { "\($0.key)=\($0.value)" }.joined(separator: " ")
        self.store.append("\(event.level) \(event.message) [\(rendered)] (\(event.source) \(event.file):\(event.line))")
    }
}

// MARK: - Child processes

/// Runs `executable arguments` to completion on a thread of its own (never blocking the cooperative pool) and
/// returns its exit status and combined stdout and stderr; a process still running after `timeout` is killed.
func runProcess(
    _ executable: String, _ arguments: [String], environment: [String: String]? = nil, timeout: Duration = .seconds(60)
) async -> (status: Int32, output: String) {
    await withCheckedContinuation { continuation in
        Thread.detachNewThread {
            continuation.resume(
                returning: runProcessBlocking(executable, arguments, environment: environment, timeout: timeout))
        }
    }
}

/// Runs `executable arguments` to completion on the calling thread; see ``runProcess(_:_:environment:timeout:)``.
/// Started with posix_spawn (Spawn.swift), not Foundation's `Process`; do not call it from a static initializer or
/// a trait condition.
func runProcessBlocking(
    _ executable: String, _ arguments: [String], environment: [String: String]? = nil, timeout: Duration = .seconds(60)
) -> (status: Int32, output: String) {
    do {
        let result = try runToCompletion(
            executable, arguments, environment: environment, mergeOutput: true, timeout: timeout)
        var text = result.stdoutText
        if result.timedOut { text += "\n[killed after \(timeout)]" }
        return (result.status, text)
    } catch {
        return (-1, "\(error)")
    }
}

/// ``TestCertificates/shared()`` without blocking the cooperative pool; see ``TestCertificates/load()``.
func sharedCertificates() async throws -> TestCertificates {
    try await TestCertificates.load()
}

/// Runs tests of this very test binary in a child process: for tests that must not share the process (resident
/// memory measurements) or that must run in another network namespace (the DNS test).
enum ChildTestRun {
    /// Runs the Swift Testing tests matching `filter` (a regular expression over test IDs such as
    /// `HugeLengthTests/declaredLength`) in a child process with `environment` added, behind `prefix` (e.g.
    /// `unshare --net`), one at a time unless `parallel`. The child is killed after `timeout`.
    /// - Returns: The child's exit status and output (0 when every selected test passed).
    static func run(
        filter: String, environment extra: [String: String], prefix: [String] = [], parallel: Bool = true,
        timeout: Duration = .seconds(120)
    ) async throws -> (status: Int32, output: String) {
        let executable = try FileManager.default.destinationOfSymbolicLink(atPath: "/proc/self/exe")
        var arguments = prefix + [executable, "--testing-library", "swift-testing", "--filter", filter]
        if !parallel { arguments.append("--no-parallel") }
        var environment = ProcessInfo.processInfo.environment
        environment.merge(extra) { $1 }
        return await runProcess(arguments[0], Array(arguments.dropFirst()), environment: environment, timeout: timeout)
    }

    /// How many tests the child's summary line ("Test run with N tests ...") says ran, or `nil` without one.
    static func testCount(in output: String) -> Int? {
        guard let range = output.range(of: "Test run with ") else { return nil }
        return Int(output[range.upperBound...].prefix { $0.isNumber })
    }
}

/// Resident-memory tests run in a child process of their own (``MemoryBoundTests`` starts it), because in the
/// normal parallel run every other test allocates in the same process and RSS growth would measure them too.
enum MemoryIsolation {
    /// The environment variable that marks the child; set it by hand to run a memory test in-process.
    static let variable = "WS_TEST_MEMORY_CHILD"
    /// Whether this process is the memory child.
    static let isChild = ProcessInfo.processInfo.environment[variable] == "1"
    /// Why a memory test is skipped in the normal run.
    static let skipReason: Comment =
        "measures memory in a process of its own (run by 'Bounded memory under hostile input'); set WS_TEST_MEMORY_CHILD=1 to run it here"
    /// The memory tests, as a --filter regular expression.
    static let filter = [
        "HugeLengthTests/declaredLength", "FragmentFloodTests/endless", "DeflateBombTests/bomb",
        "DeflateBombTests/manyInOneRead",
        "HandshakeAbuseTests/oversizedHead", "ControlFrameAbuseTests/pingFloodUnreadPongs",
        "ControlFrameAbuseTests/pongFlood", "ControlFrameAbuseTests/pingFloodWhileNotReading",
        "\\.FaultTests/serverStopsReading", "NetworkFaultTests/throttledSend", "StreamingProofTests/echoRoundTrip",
    ].joined(separator: "|")
}

/// A child process whose stdout is collected line by line on a thread, for fixtures that report what they saw
/// (`PORT n`, `SNI name`). Terminated by ``stop()`` or when released. Started with posix_spawn (``ChildProcess``).
final class LineReportingProcess: Sendable {
    private let process: ChildProcess
    /// Our end of the child's stdin; closing it tells the fixture to exit.
    private let stdinWrite: Int32
    private let lines = LineStore()
    private let stopped = Atomic<Bool>(false)
    private let stderrPath: String

    /// The collected lines, shared with the reading thread.
    private final class LineStore: Sendable {
        /// The lines.
        let value = Mutex<[String]>([])
        /// Set once stdout reached its end (the child exited).
        let ended = Atomic<Bool>(false)
    }

    /// Launches `executable arguments` (an absolute path); stderr goes to a temporary file (see ``stderrTail``).
    init(executable: String, arguments: [String]) throws {
        self.stderrPath =
            FileManager.default.temporaryDirectory
            .appendingPathComponent("ws-fixture-\(getpid())-\(UUID().uuidString.prefix(8)).err").path
        guard let inputEnds = closeOnExecPipe() else {
            throw TestPeerError(description: "pipe2() failed (errno \(errno))")
        }
        guard let outputEnds = closeOnExecPipe() else {
            Glibc.close(inputEnds.read)
            Glibc.close(inputEnds.write)
            throw TestPeerError(description: "pipe2() failed (errno \(errno))")
        }
        let input = [inputEnds.read, inputEnds.write]
        let output = [outputEnds.read, outputEnds.write]
        let errorFile = open(self.stderrPath, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0o600)
        var environment = ProcessInfo.processInfo.environment
        environment["PYTHONUNBUFFERED"] = "1"
        defer {
            Glibc.close(input[0])
            Glibc.close(output[1])
            if errorFile >= 0 { Glibc.close(errorFile) }
        }
        do {
            self.process = try ChildProcess(
                executable, arguments, environment: environment, stdin: input[0], stdout: output[1],
                stderr: errorFile >= 0 ? errorFile : output[1])
        } catch {
            Glibc.close(input[1])
            Glibc.close(output[0])
            throw error
        }
        self.stdinWrite = input[1]
        let reader = output[0]
        let lines = self.lines
        Thread.detachNewThread {
            var pending: [UInt8] = []
            var chunk = [UInt8](repeating: 0, count: 4096)
            while true {
                let count = chunk.withUnsafeMutableBytes { read(reader, $0.baseAddress, $0.count) }
                if count < 0 && errno == EINTR { continue }
                if count <= 0 { break }
                pending += chunk[0..<count]
                while let newline = pending.firstIndex(of: 0x0A) {
                    let line = String(decoding: pending[..<newline], as: UTF8.self)
                    pending.removeSubrange(...newline)
                    lines.value.withLock { $0.append(line) }
                }
            }
            Glibc.close(reader)
            lines.ended.store(true, ordering: .releasing)
        }
    }

    /// Every line printed so far.
    var output: [String] { self.lines.value.withLock { $0 } }

    /// Waits (up to `timeout`) for a line starting with `prefix` and returns the rest of it.
    func line(startingWith prefix: String, timeout: Duration = .seconds(20)) async throws -> String {
        let deadline = ContinuousClock.now + timeout
        while ContinuousClock.now < deadline {
            if let line = self.output.first(where: { $0.hasPrefix(prefix) }) {
                return String(line.dropFirst(prefix.count))
            }
            if self.lines.ended.load(ordering: .acquiring) {
                throw TestPeerError(
                    description: "the fixture exited without printing '\(prefix)…'; stderr: \(self.stderrTail)")
            }
            try await Task.sleep(for: .milliseconds(20))
        }
        throw TestPeerError(
            description: "no '\(prefix)…' line within \(timeout); output \(self.output); stderr: \(self.stderrTail)")
    }

    /// The end of what the process wrote to stderr.
    var stderrTail: String {
        let data = FileManager.default.contents(atPath: self.stderrPath) ?? Data()
        return String(decoding: data.suffix(2000), as: UTF8.self)
    }

    /// Closes stdin and sends SIGTERM; a thread of its own reaps the child (SIGKILL after 5 s) and deletes the
    /// stderr file, so this never blocks a cooperative thread. Safe to call more than once.
    func stop() {
        guard !self.stopped.exchange(true, ordering: .acquiringAndReleasing) else { return }
        Glibc.close(self.stdinWrite)
        let process = self.process
        let path = self.stderrPath
        Thread.detachNewThread {
            process.terminate(grace: .seconds(5))
            try? FileManager.default.removeItem(atPath: path)
        }
    }

    deinit { self.stop() }
}
