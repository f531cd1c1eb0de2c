// Shared workload parameters and result helpers for wsbench.
#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#endif

// MARK: - Workload parameters (issue 7)

/// W1–W5 of issue 7; `idle` opens `--connections` sessions that stay idle and reports RSS per connection.
///
/// W5 is W3 with permessage-deflate: text messages of `--w5-size` bytes (65,536) from ``textCorpus(count:size:)``,
/// `--w5-count` of them (else `--w5-mib` MiB, 64), `--w5-window` in flight (16), with context takeover or, with
/// `--w5-nct 1`, without (both `no_context_takeover` parameters offered), echoed as they are by the C echo server
/// in `run.sh`; in MB/s of uncompressed payload. A driver fails the run when the server did not accept deflate or an
/// echo differs from the message sent.
public enum Workload: String, Sendable { case w1, w2, w3, w4, w5, idle }

/// One run's parameters: client, workload, server URL and the workload shapes of issue 7.
public struct Params: Sendable {
    /// The defaults of issue 7.
    public init() {}
    /// The client to drive (`--client`).
    public var client = "ours-cio"
    /// The workload (`--workload`).
    public var workload = Workload.w1
    /// The echo server (`--url`).
    public var url = "ws://127.0.0.1:9001/"
    /// W1 round trips before measuring.
    public var w1Warmup = 1_000
    /// W1 round trips measured.
    public var w1Count = 20_000
    /// W2 messages.
    public var w2Count = 200_000
    /// W2 message size in bytes.
    public var w2Size = 128
    /// W2 messages unanswered at most.
    public var w2Window = 1_000
    /// W3 volume in MiB (`--w3-mib`).
    public var w3MiB = 512
    /// W3 message size in bytes.
    public var w3Size = 65_536
    /// W3 messages unanswered at most.
    public var w3Window = 16
    /// W5: MiB of text sent (and echoed) when `w5Count` is not set (`--w5-mib`).
    public var w5MiB = 64
    /// W5 message size in bytes (`--w5-size`).
    public var w5Size = 65_536
    /// W5 messages (`--w5-count`); `nil`: as many as `w5MiB` holds.
    public var w5Count: Int? = nil
    /// W5 messages unanswered at most (`--w5-window`).
    public var w5Window = 16
    /// W5 without context takeover (`--w5-nct 1`): offer `client_no_context_takeover` and
    /// `server_no_context_takeover`, so every message is compressed on its own.
    public var w5NoContextTakeover = false
    /// W4 and idle connections (`--connections`).
    public var connections = 1_000
    /// idle: destination addresses (`--addresses`): connection `i` goes to 127.0.0.(1 + i % addresses), so that more
    /// connections fit than one address and port leave ephemeral ports for (the echo server listens on each).
    public var addresses = 1
}

/// What a run measured.
public struct Outcome: Sendable {
    /// The figure (rate, throughput or MiB).
    public var value: Double
    /// Its unit, e.g. `rt/s`.
    public var unit: String
    /// The measured wall time.
    public var seconds: Double
    /// W1: median latency in µs.
    public var p50: Double? = nil
    /// W1: 99th-percentile latency in µs.
    public var p99: Double? = nil

    /// Creates an outcome.
    public init(value: Double, unit: String, seconds: Double, p50: Double? = nil, p99: Double? = nil) {
        self.value = value
        self.unit = unit
        self.seconds = seconds
        self.p50 = p50
        self.p99 = p99
    }
}

/// The value in MiB of a `/proc/self/status` field such as `VmHWM` (peak RSS) or `VmRSS`; -1 if unreadable.
/// `process` names another process (a pid) instead of this one.
public func statusMiB(_ field: String, process: String = "self") -> Double {
    guard let f = fopen("/proc/\(process)/status", "r") else { return -1 }
    defer { fclose(f) }
    var line = [CChar](repeating: 0, count: 256)
    while fgets(&line, 256, f) != nil {
        let s = String(decoding: line.prefix { $0 != 0 }.map { UInt8(bitPattern: $0) }, as: UTF8.self)
        if s.hasPrefix(field + ":") {
            let digits = s.dropFirst(field.count + 1).filter { $0.isNumber }
            return (Double(String(digits)) ?? -1) / 1024
        }
    }
    return -1
}

/// Peak RSS (VmHWM) in MiB.
public func peakRSSMiB() -> Double { statusMiB("VmHWM") }

/// The process's CPU time so far (user + system, all threads, start-up included) in ms: what a run cost the machine,
/// which the wall-clock figures hide where they are bound by the kernel's wake-ups (W1).
public func cpuMilliseconds() -> Double {
    var usage = rusage()
    guard getrusage(RUSAGE_SELF.rawValue, &usage) == 0 else { return -1 }
    let user = Double(usage.ru_utime.tv_sec) * 1e3 + Double(usage.ru_utime.tv_usec) / 1e3
    let system = Double(usage.ru_stime.tv_sec) * 1e3 + Double(usage.ru_stime.tv_usec) / 1e3
    return user + system
}

/// Raises the soft descriptor limit to the hard one (W4 and idle open thousands of sockets).
public func raiseFileLimit() {
    var r = rlimit()
    #if canImport(Glibc)
    let resource = __rlimit_resource_t(RLIMIT_NOFILE.rawValue)
    #else
    let resource = RLIMIT_NOFILE
    #endif
    if getrlimit(resource, &r) == 0 {
        r.rlim_cur = r.rlim_max
        _ = setrlimit(resource, &r)
    }
}

/// The clock every driver measures with.
public let clock = ContinuousClock()

/// `d` in microseconds.
public func micros(_ d: Duration) -> Double {
    Double(d.components.seconds) * 1e6 + Double(d.components.attoseconds) / 1e12
}

/// `d` in seconds.
public func seconds(_ d: Duration) -> Double { micros(d) / 1e6 }

/// W1's outcome: round trips per second and the p50/p99 of `latencies` (µs).
public func pingPongOutcome(_ latencies: [Double], _ elapsed: Duration) -> Outcome {
    let sorted = latencies.sorted()
    return Outcome(
        value: Double(sorted.count) / seconds(elapsed), unit: "rt/s", seconds: seconds(elapsed),
        p50: sorted[sorted.count / 2], p99: sorted[Int(Double(sorted.count) * 0.99)])
}

/// W2/W3's outcome: messages per second (W2) or payload MB/s (W3).
public func streamOutcome(_ p: Params, count: Int, size: Int, _ elapsed: Duration) -> Outcome {
    let s = seconds(elapsed)
    if p.workload == .w3 || p.workload == .w5 {
        return Outcome(value: Double(count) * Double(size) / s / 1e6, unit: "MB/s", seconds: s)
    }
    return Outcome(value: Double(count) / s, unit: "msg/s", seconds: s)
}

/// The message count, size and window of W2, W3 or W5.
public func streamShape(_ p: Params) -> (count: Int, size: Int, window: Int) {
    switch p.workload {
    case .w2: (p.w2Count, p.w2Size, p.w2Window)
    case .w5: (p.w5Count ?? p.w5MiB * 1_048_576 / p.w5Size, p.w5Size, p.w5Window)
    default: (p.w3MiB * 1_048_576 / p.w3Size, p.w3Size, p.w3Window)
    }
}

// MARK: - W5 corpus

/// The number of distinct W5 messages of `size` bytes: message `i` of a run is `textCorpus(...)[i % n]`. At least
/// 16, and at least 256 KiB in all, so that with context takeover a message's repeat lies far beyond the 32 KiB
/// window (1 KiB messages: 256 distinct; 64 KiB: 16). The C client computes the same.
/// - Parameter size: The message size in bytes.
/// - Returns: How many distinct messages to send in rotation.
public func w5DistinctMessages(size: Int) -> Int { max(16, 262_144 / size) }

/// FNV-1a (64 bits) of the messages, concatenated, as 16 hex digits: every W5 client prints it (`"corpus"`), so a run
/// shows that all of them sent the same bytes.
/// - Parameter messages: The corpus.
/// - Returns: The hash in lower-case hex.
public func corpusHash(_ messages: [[UInt8]]) -> String {
    var h: UInt64 = 0xcbf2_9ce4_8422_2325
    for message in messages {
        for byte in message { h = (h ^ UInt64(byte)) &* 0x0000_0100_0000_01b3 }
    }
    let hex = String(h, radix: 16)
    return String(repeating: "0", count: 16 - hex.count) + hex
}

/// A deterministic, compressible ASCII text (newline-separated JSON log events with pseudo-English messages),
/// cut into `count` messages of exactly `size` bytes. Every driver calls it with the same arguments, so every client
/// sends the same bytes. Cutting at any byte keeps valid UTF-8 (the text is ASCII). zlib level 6 with a 4 KiB
/// window (what the Python server negotiates) shrinks it to about 23 %.
/// - Parameters:
///   - count: How many messages.
///   - size: The size of each message in bytes.
/// - Returns: `count` arrays of `size` bytes.
public func textCorpus(count: Int, size: Int) -> [[UInt8]] {
    let words = [
        "the", "of", "and", "to", "in", "a", "is", "that", "for", "it", "as", "was", "with", "be", "by", "on",
        "not", "he", "this", "are", "or", "his", "from", "at", "which", "but", "have", "an", "had", "they", "you",
        "were", "their", "one", "all", "we", "can", "her", "has", "there", "been", "if", "more", "when", "will",
        "would", "who", "so", "no", "connection", "message", "server", "client", "request", "latency", "window",
        "buffer", "session", "timeout", "frame", "handshake", "compression", "socket", "event",
    ]
    let actions = ["login", "logout", "page_view", "search", "add_to_cart", "checkout", "upload", "comment"]
    let levels = ["debug", "info", "info", "info", "warning", "error"]
    // SplitMix64: fixed seed, the same sequence on every platform.
    var state: UInt64 = 0x5EED_0000_0000_0007
    func next() -> UInt64 {
        state &+= 0x9E37_79B9_7F4A_7C15
        var z = state
        z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
        z = (z ^ (z >> 27)) &* 0x94D4_9BB4_6331_11EB
        return z ^ (z >> 31)
    }
    func pick(_ n: Int) -> Int { Int(next() % UInt64(n)) }
    // The lower of two picks: frequent words come first, roughly like a Zipf distribution.
    func word() -> String { words[min(pick(words.count), pick(words.count))] }
    let total = count * size
    var text: [UInt8] = []
    text.reserveCapacity(total + 512)
    var seq = 0
    while text.count < total {
        let first = word()
        var sentence = first.prefix(1).uppercased() + first.dropFirst()
        for _ in 0..<(5 + pick(12)) { sentence += " " + word() }
        let line =
            "{\"seq\":\(seq),\"ts\":\(1_700_000_000_000 + seq * 37 + pick(30)),\"level\":\"\(levels[pick(levels.count)])\","
            + "\"user\":\"user_\(1000 + pick(500))\",\"action\":\"\(actions[pick(actions.count)])\","
            + "\"path\":\"/api/v1/\(word())/\(pick(10_000))\",\"msg\":\"\(sentence).\"}\n"
        text.append(contentsOf: line.utf8)
        seq += 1
    }
    return (0..<count).map { Array(text[($0 * size)..<(($0 + 1) * size)]) }
}

/// `s` as a JSON string literal's contents (backslashes and quotes escaped; control characters dropped).
public func jsonEscaped(_ s: String) -> String {
    var out = ""
    for c in s.unicodeScalars where c.value >= 0x20 {
        if c == "\\" || c == "\"" { out.append("\\") }
        out.unicodeScalars.append(c)
    }
    return out
}

/// A driver's error, printed on stderr.
public struct BenchError: Error, CustomStringConvertible {
    /// What went wrong.
    public var description: String
    /// Creates an error.
    public init(description: String) { self.description = description }
}

/// Parses `--client`, `--workload`, `--url`, `--w3-mib`, `--connections`, `--addresses` and W5's `--w5-*` flags.
public func parseArguments() throws -> Params {
    var p = Params()
    var args = CommandLine.arguments.dropFirst()
    while let flag = args.popFirst() {
        guard let value = args.popFirst() else { throw BenchError(description: "missing value for \(flag)") }
        switch flag {
        case "--client": p.client = value
        case "--workload":
            guard let w = Workload(rawValue: value) else { throw BenchError(description: "unknown workload \(value)") }
            p.workload = w
        case "--url": p.url = value
        case "--w3-mib": p.w3MiB = Int(value) ?? p.w3MiB
        case "--w5-mib": p.w5MiB = Int(value) ?? p.w5MiB
        case "--w5-size": p.w5Size = Int(value) ?? p.w5Size
        case "--w5-count": p.w5Count = Int(value)
        case "--w5-window": p.w5Window = Int(value) ?? p.w5Window
        case "--w5-nct": p.w5NoContextTakeover = value == "1"
        case "--connections": p.connections = Int(value) ?? p.connections
        case "--addresses": p.addresses = max(1, Int(value) ?? p.addresses)
        default: throw BenchError(description: "unknown flag \(flag)")
        }
    }
    return p
}

/// `v` rounded to one decimal, for JSON.
public func fmt(_ v: Double) -> String {
    let r = (v * 10).rounded() / 10
    return String(r)
}

/// Prints the run's one JSON line; `extra` is appended inside the object (`,"key":value...`).
public func printOutcome(_ p: Params, _ outcome: Outcome, extra: String = "") {
    var json = "{\"client\":\"\(p.client)\",\"workload\":\"\(p.workload.rawValue)\",\"value\":\(fmt(outcome.value)),"
    json += "\"unit\":\"\(outcome.unit)\""
    if let p50 = outcome.p50, let p99 = outcome.p99 { json += ",\"p50_us\":\(fmt(p50)),\"p99_us\":\(fmt(p99))" }
    json += ",\"seconds\":\(String((outcome.seconds * 1000).rounded() / 1000)),\"peak_rss_mib\":\(fmt(peakRSSMiB()))"
    json += ",\"cpu_ms\":\(fmt(cpuMilliseconds()))\(extra)}"
    print(json)
}

/// idle: the URL of connection `index`, `url` with its host 127.0.0.1 replaced by 127.0.0.(1 + index % addresses).
/// Throws when `addresses` > 1 and `url`'s host is not 127.0.0.1.
public func spreadURL(_ url: String, index: Int, addresses: Int) throws -> String {
    guard addresses > 1 else { return url }
    guard let range = url.firstRange(of: "://127.0.0.1:") else {
        throw BenchError(description: "--addresses needs a ws://127.0.0.1:PORT/ URL, not \(url)")
    }
    var spread = url
    spread.replaceSubrange(range, with: "://127.0.0.\(1 + index % addresses):")
    return spread
}

/// The echo server's pid from `WSBENCH_SERVER_PID` (run.sh sets it), to report its RSS beside the client's.
public func serverProcess() -> String? {
    guard let value = getenv("WSBENCH_SERVER_PID"), value.pointee != 0 else { return nil }
    return String(cString: value)
}
