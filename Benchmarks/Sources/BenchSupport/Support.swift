// Shared workload parameters and result helpers for wsbench.
#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#endif

// MARK: - Workload parameters (issue 7)

/// W1–W4 of issue 7; `idle` opens `--connections` sessions that stay idle and reports RSS per connection.
public enum Workload: String, Sendable { case w1, w2, w3, w4, idle }

public struct Params: Sendable {
    public init() {}
    public var client = "ours-cio"
    public var workload = Workload.w1
    public var url = "ws://127.0.0.1:9001/"
    public var w1Warmup = 1_000
    public var w1Count = 20_000
    public var w2Count = 200_000
    public var w2Size = 128
    public var w2Window = 1_000
    public var w3MiB = 512
    public var w3Size = 65_536
    public var w3Window = 16
    public var connections = 1_000
}

public struct Outcome: Sendable {
    public var value: Double
    public var unit: String
    public var seconds: Double
    public var p50: Double? = nil
    public var p99: Double? = nil

    public init(value: Double, unit: String, seconds: Double, p50: Double? = nil, p99: Double? = nil) {
        self.value = value
        self.unit = unit
        self.seconds = seconds
        self.p50 = p50
        self.p99 = p99
    }
}

/// The value in MiB of a `/proc/self/status` field such as `VmHWM` (peak RSS) or `VmRSS`; -1 if unreadable.
public func statusMiB(_ field: String) -> Double {
    guard let f = fopen("/proc/self/status", "r") else { return -1 }
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

public let clock = ContinuousClock()

public func micros(_ d: Duration) -> Double {
    Double(d.components.seconds) * 1e6 + Double(d.components.attoseconds) / 1e12
}

public func seconds(_ d: Duration) -> Double { micros(d) / 1e6 }

public func pingPongOutcome(_ latencies: [Double], _ elapsed: Duration) -> Outcome {
    let sorted = latencies.sorted()
    return Outcome(
        value: Double(sorted.count) / seconds(elapsed), unit: "rt/s", seconds: seconds(elapsed),
        p50: sorted[sorted.count / 2], p99: sorted[Int(Double(sorted.count) * 0.99)])
}

public func streamOutcome(_ p: Params, count: Int, size: Int, _ elapsed: Duration) -> Outcome {
    let s = seconds(elapsed)
    if p.workload == .w3 {
        return Outcome(value: Double(count) * Double(size) / s / 1e6, unit: "MB/s", seconds: s)
    }
    return Outcome(value: Double(count) / s, unit: "msg/s", seconds: s)
}

public func streamShape(_ p: Params) -> (count: Int, size: Int, window: Int) {
    p.workload == .w2 ? (p.w2Count, p.w2Size, p.w2Window) : (p.w3MiB * 1_048_576 / p.w3Size, p.w3Size, p.w3Window)
}

public struct BenchError: Error, CustomStringConvertible {
    public var description: String
    public init(description: String) { self.description = description }
}


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
        case "--connections": p.connections = Int(value) ?? p.connections
        default: throw BenchError(description: "unknown flag \(flag)")
        }
    }
    return p
}

public func fmt(_ v: Double) -> String {
    let r = (v * 10).rounded() / 10
    return String(r)
}


public func printOutcome(_ p: Params, _ outcome: Outcome, extra: String = "") {
    var json = "{\"client\":\"\(p.client)\",\"workload\":\"\(p.workload.rawValue)\",\"value\":\(fmt(outcome.value)),"
    json += "\"unit\":\"\(outcome.unit)\""
    if let p50 = outcome.p50, let p99 = outcome.p99 { json += ",\"p50_us\":\(fmt(p50)),\"p99_us\":\(fmt(p99))" }
    json += ",\"seconds\":\(String((outcome.seconds * 1000).rounded() / 1000)),\"peak_rss_mib\":\(fmt(peakRSSMiB()))\(extra)}"
    print(json)
}
