// wssoak: the load and soak driver of scripts/soak.sh. Not a product; nothing ships it.
//
//   wssoak open URL [--connections N] [--parallel P] [--engine cio|curl] [--hold SECONDS] [--rounds R] [--settle S]
//       Opens N sessions to an echo server (at most P handshakes in flight), keeps them all open at once,
//       sends one message on each and waits for every echo, then closes them all; R rounds (default 2: later
//       rounds show whether closing gave the memory back for reuse), S seconds of settling after each close. Prints the time to open, the process's
//       RSS before and with all open (and the difference per connection), the time to close, and the RSS after
//       closing, before and after malloc_trim (what the allocator keeps vs. what is still in use).
//
//   wssoak loop URL [--minutes M] [--engine cio|curl] [--workers W] [--sample-seconds S] [--warmup-seconds S]
//                   [--size BYTES] [--client-every K]
//       Connect, send a message as text and as binary, check both echoes, close (1000), over and over, on W
//       workers, for M minutes; every K sessions the client (and its engine, with its threads) is replaced.
//       Samples the RSS every S seconds. Fails (exit 1) when an iteration fails or when the RSS keeps growing:
//       the last sample above 1.2 × the first sample after the warm-up + 5 MiB. Also prints the slope after the
//       warm-up (bytes per 1000 sessions). Under ASan, LeakSanitizer checks for leaks at exit.
//
//   wssoak reconnect URL [--minutes M] [--engine cio|curl] [--workers W] [--sample-seconds S] [--warmup-seconds S]
//       Reconnecting sessions echoing while scripts/soak.sh restarts the server (Reconnect.swift).
//
// Output: human-readable lines, and one `RESULT key=value ...` line that scripts/soak.sh parses.
import Glibc
import Logging
import Synchronization
import WSCore
import WSEngineCIO
import WSEngineCurl

// MARK: - small helpers

func monotonicSeconds() -> Double {
    var ts = timespec()
    clock_gettime(CLOCK_MONOTONIC, &ts)
    return Double(ts.tv_sec) + Double(ts.tv_nsec) / 1e9
}

/// The resident set size of this process, in bytes (`/proc/self/statm`, second field).
func residentBytes() -> Int {
    let fd = open("/proc/self/statm", O_RDONLY)
    guard fd >= 0 else { return 0 }
    defer { close(fd) }
    var buffer = [UInt8](repeating: 0, count: 256)
    let n = buffer.withUnsafeMutableBytes { read(fd, $0.baseAddress, $0.count) }
    guard n > 0 else { return 0 }
    let fields = String(decoding: buffer[..<n], as: UTF8.self).split(separator: " ")
    guard fields.count >= 2, let pages = Int(fields[1]) else { return 0 }
    return pages * Int(sysconf(Int32(_SC_PAGESIZE)))
}

/// glibc's malloc_trim(0) (not in the Glibc module): returns the allocator's free pages to the system.
func mallocTrim() {
    guard let symbol = dlsym(UnsafeMutableRawPointer(bitPattern: 0), "malloc_trim") else { return }
    typealias Trim = @convention(c) (Int) -> Int32
    _ = unsafeBitCast(symbol, to: Trim.self)(0)
}

/// Writes all of `text` to a file descriptor (1 or 2).
func writeAll(_ fd: Int32, _ text: String) {
    var text = text
    text.withUTF8 { buffer in
        var offset = 0
        while offset < buffer.count {
            let n = write(fd, buffer.baseAddress! + offset, buffer.count - offset)
            if n < 0 && errno == EINTR { continue }
            if n <= 0 { return }
            offset += n
        }
    }
}

func mib(_ bytes: Int) -> String { format(Double(bytes) / 1_048_576, decimals: 1) }

func format(_ value: Double, decimals: Int = 2) -> String {
    var scale = 1.0
    for _ in 0..<decimals { scale *= 10 }
    let rounded = (value * scale).rounded() / scale
    var text = "\(rounded)"
    if decimals == 0, text.hasSuffix(".0") { text.removeLast(2) }
    return text
}

func say(_ line: String) { writeAll(1, line + "\n") }

func fail(_ message: String, status: Int32 = 2) -> Never {
    writeAll(2, "wssoak: \(message)\n")
    exit(status)
}

/// `--name value` options after the subcommand and URL.
struct Options {
    var values: [String: String] = [:]

    init(_ arguments: ArraySlice<String>) {
        var rest = arguments[...]
        while let name = rest.popFirst() {
            guard name.hasPrefix("--"), let value = rest.popFirst() else { fail("bad argument \(name)") }
            self.values[String(name.dropFirst(2))] = value
        }
    }

    func int(_ name: String, _ fallback: Int) -> Int {
        guard let text = self.values[name] else { return fallback }
        guard let value = Int(text), value >= 0 else { fail("--\(name) wants a whole number, not \(text)") }
        return value
    }

    func double(_ name: String, _ fallback: Double) -> Double {
        guard let text = self.values[name] else { return fallback }
        guard let value = Double(text), value >= 0 else { fail("--\(name) wants a number, not \(text)") }
        return value
    }

    func string(_ name: String, _ fallback: String) -> String { self.values[name] ?? fallback }
}

func makeClient(engine: String, timeout: Duration) -> WebSocketClient {
    let theEngine: any WebSocketEngine
    switch engine {
    case "cio": theEngine = CIOEngine()
    case "curl": theEngine = CurlEngine()
    default: fail("--engine is cio or curl, not \(engine)")
    }
    var logger = Logger(label: "wssoak")
    logger.logLevel = .critical
    return WebSocketClient(engine: theEngine) { config in
        config.logger = logger
        config.connectTimeout = timeout
        config.openTimeout = timeout
    }
}

/// A payload whose first 8 bytes make it unique, so that an echo can be matched.
func payload(_ sequence: Int, size: Int) -> [UInt8] {
    var bytes = [UInt8](repeating: 0x61, count: max(size, 8))
    withUnsafeBytes(of: UInt64(sequence).bigEndian) { raw in
        for i in 0..<8 { bytes[i] = 0x30 + raw[i] % 10 }  // printable: valid as text too
    }
    return bytes
}

enum SoakError: Error, CustomStringConvertible {
    case unexpected(String)
    var description: String {
        switch self {
        case .unexpected(let text): return text
        }
    }
}

/// Sends `bytes` as text or binary and waits for the identical echo.
func echo(_ session: WebSocketSession, _ bytes: [UInt8], binary: Bool) async throws {
    if binary {
        try await session.send(Frame.binary(bytes))
    } else {
        try await session.send(Frame.text(String(decoding: bytes, as: UTF8.self)))
    }
    while true {
        let frame = try await session.incoming.receive()
        switch frame.kind {
        case .text, .binary:
            guard frame.data == bytes else {
                throw SoakError.unexpected("echo mismatch: \(frame.data.count) bytes, expected \(bytes.count)")
            }
            return
        case .close:
            throw SoakError.unexpected("the server closed: \(frame.readReason().map { "\($0)" } ?? "no reason")")
        default:
            continue
        }
    }
}

func describe(_ error: any Error) -> String {
    if let error = error as? WebSocketError { return "\(error.code): \(error.message)" }
    return "\(error)"
}

// MARK: - open: many concurrent connections

/// What one round of `open` measured.
struct OpenRound {
    var opened = 0
    var errors: [String: Int] = [:]
    var openSeconds = 0.0
    var p50 = 0.0
    var p99 = 0.0
    var rssBefore = 0
    var rssOpen = 0
    var rssEcho = 0
    var echoFailures = 0
    var closeSeconds = 0.0
    var rssClosed = 0
    var rssTrimmed = 0
    var perConnection: Int { self.opened == 0 ? 0 : (self.rssOpen - self.rssBefore) / self.opened }
}

/// Opens `count` sessions (at most `parallel` handshakes in flight), one echo on each, then closes them all.
func openRound(
    _ client: WebSocketClient, url: String, count: Int, parallel: Int, hold: Double, settle: Double
) async -> OpenRound {
    var round = OpenRound()
    round.rssBefore = residentBytes()
    let start = monotonicSeconds()
    var sessions: [WebSocketSession] = []
    sessions.reserveCapacity(count)
    var openTimes: [Double] = []
    openTimes.reserveCapacity(count)
    var errors: [String: Int] = [:]
    await withTaskGroup(of: (Result<WebSocketSession, any Error>, Double).self) { group in
        var started = 0
        func startOne() {
            group.addTask {
                let t0 = monotonicSeconds()
                do {
                    let session = try await client.webSocketSession(url)
                    return (.success(session), monotonicSeconds() - t0)
                } catch {
                    return (.failure(error), monotonicSeconds() - t0)
                }
            }
            started += 1
        }
        while started < min(parallel, count) { startOne() }
        var done = 0
        for await (result, seconds) in group {
            done += 1
            switch result {
            case .success(let session):
                sessions.append(session)
                openTimes.append(seconds)
            case .failure(let error):
                errors[describe(error), default: 0] += 1
            }
            if started < count { startOne() }
            if done % 2000 == 0 {
                say("  \(done) done, \(sessions.count) open, \(format(monotonicSeconds() - start, decimals: 1)) s")
            }
        }
    }
    round.openSeconds = monotonicSeconds() - start
    round.opened = sessions.count
    round.errors = errors
    openTimes.sort()
    func percentile(_ p: Double) -> Double {
        openTimes.isEmpty ? 0 : openTimes[min(openTimes.count - 1, Int(Double(openTimes.count) * p))] * 1000
    }
    (round.p50, round.p99) = (percentile(0.5), percentile(0.99))
    try? await Task.sleep(for: .milliseconds(300))
    round.rssOpen = residentBytes()
    say(
        "open: \(sessions.count) of \(count) open in \(format(round.openSeconds)) s "
            + "(\(format(Double(sessions.count) / round.openSeconds, decimals: 0))/s; handshake p50 "
            + "\(format(round.p50, decimals: 1)) ms, p99 \(format(round.p99, decimals: 1)) ms, max "
            + "\(format(percentile(1), decimals: 1)) ms)")
    for (kind, n) in errors { say("open: error \(n)×: \(kind)") }
    say(
        "open: RSS \(mib(round.rssBefore)) MiB before, \(mib(round.rssOpen)) MiB with all open: "
            + "+\(mib(round.rssOpen - round.rssBefore)) MiB, \(round.perConnection) bytes per connection")

    // One echo on every session, all at once: every connection is alive.
    let echoStart = monotonicSeconds()
    round.echoFailures = await withTaskGroup(of: Bool.self) { group in
        for (i, session) in sessions.enumerated() {
            group.addTask {
                do {
                    try await echo(session, payload(i, size: 32), binary: false)
                    return true
                } catch {
                    return false
                }
            }
        }
        var failures = 0
        for await ok in group where !ok { failures += 1 }
        return failures
    }
    round.rssEcho = residentBytes()
    say(
        "echo: one 32-byte message on each, \(sessions.count - round.echoFailures) echoes in "
            + "\(format(monotonicSeconds() - echoStart)) s; RSS \(mib(round.rssEcho)) MiB "
            + "(\((round.rssEcho - round.rssBefore) / max(1, sessions.count)) bytes per connection)")
    if hold > 0 { try? await Task.sleep(for: .milliseconds(Int64(hold * 1000))) }

    let closeStart = monotonicSeconds()
    await withTaskGroup(of: Void.self) { group in
        for session in sessions { group.addTask { await session.close() } }
    }
    round.closeSeconds = monotonicSeconds() - closeStart
    sessions.removeAll()
    // Timers of closed sessions (close timeouts, grace periods) may keep small closures on the loop's timer heap
    // until they are due: wait `settle` seconds before measuring what closing gave back.
    try? await Task.sleep(for: .milliseconds(Int64(settle * 1000)))
    round.rssClosed = residentBytes()
    // What the allocator keeps for reuse, as opposed to what is still in use: glibc returns free pages on request.
    mallocTrim()
    round.rssTrimmed = residentBytes()
    say(
        "close: \(round.opened) closed in \(format(round.closeSeconds)) s; RSS after close \(mib(round.rssClosed)) MiB, "
            + "after malloc_trim \(mib(round.rssTrimmed)) MiB")
    return round
}

func runOpen(url: String, options: Options) async -> Int32 {
    let count = options.int("connections", 10_000)
    let parallel = max(1, options.int("parallel", 500))
    let engine = options.string("engine", "cio")
    let hold = options.double("hold", 2)
    let rounds = max(1, options.int("rounds", 2))
    let settle = options.double("settle", 0.5)
    let timeout = Duration.seconds(options.int("timeout", 60))

    let client = makeClient(engine: engine, timeout: timeout)
    // Warm the engine (threads, buffers, first-use allocations) with one connection, so that the per-connection
    // figure does not include what the engine costs once.
    do {
        try await client.webSocket(url) { session in try await echo(session, payload(0, size: 32), binary: false) }
    } catch {
        fail("the warm-up connection failed: \(describe(error))")
    }
    try? await Task.sleep(for: .milliseconds(300))
    say(
        "open: engine=\(engine) connections=\(count) parallel=\(parallel) rounds=\(rounds); RSS \(mib(residentBytes())) MiB"
    )
    var results: [OpenRound] = []
    for number in 1...rounds {
        say("round \(number):")
        results.append(await openRound(client, url: url, count: count, parallel: parallel, hold: hold, settle: settle))
    }
    await client.close()

    let first = results[0]
    let ok = results.allSatisfy { $0.opened == count && $0.errors.isEmpty && $0.echoFailures == 0 }
    say(
        "RESULT mode=open engine=\(engine) requested=\(count) opened=\(first.opened) open_s=\(format(first.openSeconds)) "
            + "open_rate=\(format(Double(first.opened) / first.openSeconds, decimals: 0)) p50_ms=\(format(first.p50, decimals: 1)) "
            + "p99_ms=\(format(first.p99, decimals: 1)) rss_before_mib=\(mib(first.rssBefore)) "
            + "rss_open_mib=\(mib(first.rssOpen)) bytes_per_conn=\(first.perConnection) rss_echo_mib=\(mib(first.rssEcho)) "
            + "close_s=\(format(first.closeSeconds)) "
            + "rss_closed_mib=\(results.map { mib($0.rssClosed) }.joined(separator: ",")) "
            + "rss_trimmed_mib=\(results.map { mib($0.rssTrimmed) }.joined(separator: ",")) "
            + "rounds_open=\(results.map { "\($0.opened)" }.joined(separator: ",")) status=\(ok ? "PASS" : "FAIL")")
    return ok ? 0 : 1
}

// MARK: - loop: connect, send, close for minutes

/// Counters shared by the workers.
final class LoopCounters: Sendable {
    let sessions = Atomic<Int>(0)
    let failures = Atomic<Int>(0)
    let firstFailure = Mutex<String?>(nil)
    let stop = Atomic<Bool>(false)
}

func runLoop(url: String, options: Options) async -> Int32 {
    let minutes = options.double("minutes", 10)
    let engine = options.string("engine", "cio")
    let workers = max(1, options.int("workers", 4))
    let sampleSeconds = max(1, options.double("sample-seconds", 30))
    let duration = minutes * 60
    // The warm-up: allocator pools, ASan's quarantine and the engine's first-use buffers fill in this time.
    let warmup = options.double("warmup-seconds", min(120, duration / 4))
    let size = max(8, options.int("size", 256))
    let clientEvery = options.int("client-every", 1000)
    let timeout = Duration.seconds(options.int("timeout", 30))

    say(
        "loop: engine=\(engine) \(format(minutes, decimals: 1)) min, \(workers) workers, \(size)-byte messages, "
            + "new client every \(clientEvery) sessions, RSS sample every \(format(sampleSeconds, decimals: 0)) s, "
            + "warm-up \(format(warmup, decimals: 0)) s")
    let counters = LoopCounters()
    let start = monotonicSeconds()
    let end = start + duration

    // Each worker owns its client and replaces it every `clientEvery` sessions (engine threads stopped and
    // started again: the shutdown path is part of the soak).
    let workerTasks = (0..<workers).map { worker in
        Task {
            var client = makeClient(engine: engine, timeout: timeout)
            var onClient = 0
            var sequence = worker << 40
            while !counters.stop.load(ordering: .relaxed) && monotonicSeconds() < end {
                if clientEvery > 0, onClient >= clientEvery {
                    await client.close()
                    client = makeClient(engine: engine, timeout: timeout)
                    onClient = 0
                }
                onClient += 1
                sequence += 1
                let bytes = payload(sequence, size: size)
                let binary = sequence % 2 == 0
                do {
                    try await client.webSocket(url) { session in
                        try await echo(session, bytes, binary: binary)
                        try await echo(session, bytes, binary: !binary)
                    }
                    counters.sessions.add(1, ordering: .relaxed)
                } catch {
                    counters.failures.add(1, ordering: .relaxed)
                    counters.firstFailure.withLock { $0 = $0 ?? describe(error) }
                    try? await Task.sleep(for: .milliseconds(100))
                }
            }
            await client.close()
        }
    }

    var samples: [(seconds: Double, rss: Int, sessions: Int)] = []
    var lastSessions = 0
    var lastTime = start
    func sample() {
        let now = monotonicSeconds()
        let rss = residentBytes()
        let sessions = counters.sessions.load(ordering: .relaxed)
        let rate = Double(sessions - lastSessions) / max(0.001, now - lastTime)
        (lastSessions, lastTime) = (sessions, now)
        samples.append((now - start, rss, sessions))
        say(
            "sample t=\(format(now - start, decimals: 0))s rss=\(mib(rss))MiB sessions=\(sessions) "
                + "(\(format(rate, decimals: 0))/s) failures=\(counters.failures.load(ordering: .relaxed))")
    }
    sample()
    while monotonicSeconds() < end - 0.5 {
        let next = start + Double(samples.count) * sampleSeconds
        let wait = min(next, end) - monotonicSeconds()
        if wait > 0 { try? await Task.sleep(for: .milliseconds(Int64(wait * 1000))) }
        sample()
    }
    counters.stop.store(true, ordering: .relaxed)
    for task in workerTasks { await task.value }
    try? await Task.sleep(for: .milliseconds(500))
    sample()  // after every client closed: what the SDK holds with no connection at all

    // Growth check: from the first sample at or after the warm-up to the last sample taken while running.
    let running = samples.dropLast()
    let baseline = running.first { $0.seconds >= warmup - 0.5 } ?? running.first!
    let last = running.last!
    let limit = Int(Double(baseline.rss) * 1.2) + 5 * 1_048_576
    let peak = running.map(\.rss).max() ?? 0
    let sessions = counters.sessions.load(ordering: .relaxed)
    let failures = counters.failures.load(ordering: .relaxed)
    let grew = last.rss > limit
    // The slope after the warm-up, in bytes per 1000 sessions: a leak of N bytes per session shows as about N × 1000.
    let slope =
        last.sessions > baseline.sessions
        ? Double(last.rss - baseline.rss) / Double(last.sessions - baseline.sessions) * 1000 : 0
    say(
        "loop: \(sessions) sessions in \(format(monotonicSeconds() - start, decimals: 0)) s "
            + "(\(format(Double(sessions) / duration, decimals: 0))/s), \(failures) failures"
            + (counters.firstFailure.withLock { $0 }.map { " (first: \($0))" } ?? ""))
    say(
        "loop: RSS after warm-up \(mib(baseline.rss)) MiB (t=\(format(baseline.seconds, decimals: 0)) s), last "
            + "\(mib(last.rss)) MiB, peak \(mib(peak)) MiB, limit \(mib(limit)) MiB, after closing every client "
            + "\(mib(samples.last!.rss)) MiB: \(grew ? "GROWING" : "flat"); slope after the warm-up "
            + "\(format(slope / 1024, decimals: 1)) KiB per 1000 sessions")
    let ok = !grew && failures == 0 && sessions > 0
    say(
        "RESULT mode=loop engine=\(engine) minutes=\(format(minutes, decimals: 1)) sessions=\(sessions) "
            + "failures=\(failures) rss_warm_mib=\(mib(baseline.rss)) rss_last_mib=\(mib(last.rss)) "
            + "rss_peak_mib=\(mib(peak)) rss_limit_mib=\(mib(limit)) rss_idle_mib=\(mib(samples.last!.rss)) "
            + "slope_bytes_per_1k_sessions=\(Int(slope)) "
            + "samples=\(running.map { mib($0.rss) }.joined(separator: ",")) status=\(ok ? "PASS" : "FAIL")")
    return ok ? 0 : 1
}

// MARK: - main

let arguments = CommandLine.arguments
guard arguments.count >= 3, ["open", "loop", "reconnect"].contains(arguments[1]) else {
    writeAll(
        2,
        """
        usage: wssoak open URL [--connections N] [--parallel P] [--engine cio|curl] [--hold S] [--rounds R] [--settle S] [--timeout S]
               wssoak loop URL [--minutes M] [--engine cio|curl] [--workers W] [--sample-seconds S]
                               [--warmup-seconds S] [--size BYTES] [--client-every K] [--timeout S]
               wssoak reconnect URL [--minutes M] [--engine cio|curl] [--workers W] [--sample-seconds S]
                                    [--warmup-seconds S] [--size BYTES]

        """)
    exit(64)
}
let options = Options(arguments.dropFirst(3))
let status: Int32
switch arguments[1] {
case "open": status = await runOpen(url: arguments[2], options: options)
case "reconnect": status = await runReconnect(url: arguments[2], options: options)
default: status = await runLoop(url: arguments[2], options: options)
}
exit(status)
