import BenchSupport
// The workloads of issue 7 with our SDK, shared by wsbench-ours-cio and wsbench-ours-curl: executables that link
// the SDK with one engine each and nothing else (so their peak RSS is the SDK's, not NIO's, BoringSSL's or the other
// engine's libraries'). `wsbench --client ours-*` execs the right one with the same arguments.
//
// Clients: ours-cio, ours-curl — the seed's block API (`client.webSocket(url) { session in ... }`), whose block
// runs on the session's event-loop executor by default; ours-cio-pool, ours-curl-pool — the same with
// `runsBlocksOnEventLoop = false` (the block on Swift's global concurrent executor); `+buf` — with
// `maxIncomingBufferMessages` raised from 64 to 4,096. In W5 every variant offers permessage-deflate (WSExtensions,
// default configuration, with `--w5-nct 1` both no_context_takeover parameters) and fails unless the server accepts
// it, except `+nodeflate` (the uncompressed reference). `+resume` (W4): one wss connection is opened and closed before
// the clock starts, so that the timed connections can resume its TLS session; `+noresume`: the engine keeps no TLS
// sessions (`WebSocketTLSConfiguration.resumesSessions = false`); `+serial` (W4): the connections one after another
// instead of all at once (how reconnects and a steady trickle of new connections look). WSBENCH_COUNT_RESUMED=1 adds `"resumed":N`, the
// handshakes the engine logged as resumed (a debug-level log handler that counts: leave it off in timed rounds).
import Logging
import Synchronization
public import WSCore
import WSExtensions

#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#endif

/// A client variant, parsed from its `--client` name.
public struct Variant: Sendable {
    /// The engine's name in the client name: `cio` or `curl`.
    public var engine = "cio"
    /// `-pool`: the block runs on the global executor (`runsBlocksOnEventLoop = false`).
    public var pool = false
    /// `+buf`: `maxIncomingBufferMessages` raised from 64 to 4,096.
    public var bigIncomingBuffer = false

    /// `+nodeflate`: W5 without permessage-deflate (the reference for the server's cost of compression).
    public var noDeflate = false
    /// `+resume`: W4 opens and closes one connection before the clock starts (its TLS session can be resumed).
    public var warmUp = false
    /// `+noresume`: the engine keeps no TLS sessions.
    public var noResume = false
    /// `+serial`: W4 opens its connections one after another (each session ends before the next connect starts).
    public var serial = false

    /// Parses `ours-ENGINE[-pool][+buf][+nodeflate]`, then any of `+resume`, `+noresume`, `+serial`.
    public init(_ name: String) throws {
        var rest = Substring(name)
        while true {
            if rest.hasSuffix("+noresume") {
                self.noResume = true
                rest = rest.dropLast(9)
            } else if rest.hasSuffix("+resume") {
                self.warmUp = true
                rest = rest.dropLast(7)
            } else if rest.hasSuffix("+serial") {
                self.serial = true
                rest = rest.dropLast(7)
            } else {
                break
            }
        }
        if rest.hasSuffix("+nodeflate") {
            self.noDeflate = true
            rest = rest.dropLast(10)
        }
        if rest.hasSuffix("+buf") {
            self.bigIncomingBuffer = true
            rest = rest.dropLast(4)
        }
        if rest.hasSuffix("-pool") {
            self.pool = true
            rest = rest.dropLast(5)
        }
        guard rest.hasPrefix("ours-") else { throw BenchError(description: "unknown client \(name)") }
        self.engine = String(rest.dropFirst(5))
    }
}

func makeClient(_ v: Variant, _ engine: any WebSocketEngine, deflate: PerMessageDeflate?) throws -> WebSocketClient {
    try WebSocketClient(engine: engine) { config in
        if let count = getenv("WSBENCH_COUNT_RESUMED"), String(cString: count) == "1" {
            var logger = Logger(label: "wsbench") { _ in ResumptionCounter() }
            logger.logLevel = .debug
            config.logger = logger
        }
        // WSBENCH_METRICS=counting: a real metrics backend (atomic counters) for this client.
        if let metrics = getenv("WSBENCH_METRICS"), String(cString: metrics) == "counting" {
            config.metricsFactory = CountingMetricsFactory()
        }
        try config.install(WebSockets.self) { ws in
            ws.maxFrameSize = 1 << 20
            ws.maxMessageSize = 1 << 20
            ws.runsBlocksOnEventLoop = !v.pool
            if v.bigIncomingBuffer { ws.maxIncomingBufferMessages = 4_096 }
            if let deflate { try ws.extensions { try $0.install(deflate) } }
        }
    }
}

/// Current RSS (VmRSS) in MiB.
func currentRSSMiB() -> Double { statusMiB("VmRSS") }

func run(_ p: Params, _ v: Variant, _ engine: any WebSocketEngine) async throws -> (Outcome, extra: String) {
    let deflate =
        p.workload == .w5 && !v.noDeflate
        ? try PerMessageDeflate(
            .init(clientNoContextTakeover: p.w5NoContextTakeover, serverNoContextTakeover: p.w5NoContextTakeover))
        : nil
    let client = try makeClient(v, engine, deflate: deflate)
    let outcome: Outcome
    var extra = ""
    switch p.workload {
    case .w1:
        outcome = try await client.webSocket(p.url) { session in
            let msg = String(repeating: "a", count: 32)
            var lat: [Double] = []
            lat.reserveCapacity(p.w1Count)
            var start = clock.now
            for i in 0..<(p.w1Warmup + p.w1Count) {
                if i == p.w1Warmup { start = clock.now }
                let t0 = clock.now
                try await session.send(msg)
                _ = try await session.incoming.receive()
                if i >= p.w1Warmup { lat.append(micros(clock.now - t0)) }
            }
            return pingPongOutcome(lat, clock.now - start)
        }
    case .w2, .w3:
        outcome = try await client.webSocket(p.url) { session in
            let (count, size, window) = streamShape(p)
            let payload = [UInt8](repeating: 0x5A, count: size)
            var sent = 0
            var received = 0
            let start = clock.now
            while received < count {
                while sent < count && sent - received < window {
                    try await session.send(Frame.binary(payload))
                    sent += 1
                }
                let frame = try await session.incoming.receive()
                if frame.kind == .binary { received += 1 }
            }
            return streamOutcome(p, count: count, size: size, clock.now - start)
        }
    case .w5:
        let (count, size, window) = streamShape(p)
        let messages = textCorpus(count: w5DistinctMessages(size: size), size: size)
        let frames = messages.map { Frame(kind: .text, data: $0) }
        let negotiated: String
        (outcome, negotiated) = try await client.webSocket(p.url) { session in
            let negotiated = session.extensions.map { "\($0.header)" }.joined(separator: ", ")
            if !v.noDeflate && !session.extensions.contains(where: { $0.name == "permessage-deflate" }) {
                throw BenchError(description: "the server did not accept permessage-deflate")
            }
            var sent = 0
            var received = 0
            let start = clock.now
            while received < count {
                while sent < count && sent - received < window {
                    try await session.send(frames[sent % frames.count])
                    sent += 1
                }
                let frame = try await session.incoming.receive()
                guard frame.kind == .text else { continue }
                // Every echo must be the message sent (inflated correctly, in order).
                let expected = messages[received % messages.count]
                let same = frame.data.withUnsafeBytes { a in
                    expected.withUnsafeBytes { b in
                        a.count == b.count && memcmp(a.baseAddress!, b.baseAddress!, b.count) == 0
                    }
                }
                guard same else { throw BenchError(description: "echo \(received) differs from the message sent") }
                received += 1
            }
            return (streamOutcome(p, count: count, size: size, clock.now - start), negotiated)
        }
        extra = ",\"extensions\":\"\(jsonEscaped(negotiated))\",\"corpus\":\"\(corpusHash(messages))\""
    case .w4:
        let msg = String(repeating: "b", count: 32)
        if v.warmUp {
            // One connection before the clock: the TLS tickets arrive with its echo, so the engine holds them.
            try await client.webSocket(p.url) { session in
                try await session.send(msg)
                _ = try await session.incoming.receive()
            }
        }
        let start = clock.now
        if v.serial {
            for _ in 0..<p.connections {
                try await client.webSocket(p.url) { session in
                    try await session.send(msg)
                    _ = try await session.incoming.receive()
                }
            }
        } else {
            try await withThrowingTaskGroup(of: Void.self) { group in
                for _ in 0..<p.connections {
                    group.addTask {
                        try await client.webSocket(p.url) { session in
                            try await session.send(msg)
                            _ = try await session.incoming.receive()
                        }
                    }
                }
                try await group.waitForAll()
            }
        }
        let elapsed = clock.now - start
        outcome = Outcome(value: Double(p.connections) / seconds(elapsed), unit: "conn/s", seconds: seconds(elapsed))
    case .idle:
        // p.connections open sessions that stay idle: RSS after minus RSS before (one session opened and closed
        // first, so the engine's threads and buffers are already counted in "before").
        try await client.webSocket(p.url) { session in
            try await session.send("warm-up")
            _ = try await session.incoming.receive()
        }
        // Connection i goes to 127.0.0.(1 + i % addresses) (--addresses; one address and port give at most ~28,000
        // ephemeral ports); the URLs are made before "before".
        let urls = try (0..<p.addresses).map { try spreadURL(p.url, index: $0, addresses: p.addresses) }
        let server = serverProcess()
        let serverBefore = server.map { statusMiB("VmRSS", process: $0) }
        let before = currentRSSMiB()
        let start = clock.now
        var sessions: [WebSocketSession] = []
        sessions.reserveCapacity(p.connections)
        try await withThrowingTaskGroup(of: WebSocketSession.self) { group in
            var started = 0
            // At most 500 opening at once (the echo server's listen backlog).
            while started < min(500, p.connections) {
                let url = urls[started % urls.count]
                group.addTask { try await client.webSocketSession(url) }
                started += 1
            }
            while let session = try await group.next() {
                sessions.append(session)
                if started < p.connections {
                    let url = urls[started % urls.count]
                    group.addTask { try await client.webSocketSession(url) }
                    started += 1
                }
            }
        }
        let elapsed = clock.now - start
        let after = currentRSSMiB()
        let serverAfter = server.map { statusMiB("VmRSS", process: $0) }
        let perConnectionKiB = (after - before) * 1024 / Double(p.connections)
        extra =
            ",\"rss_before_mib\":\(fmt(before)),\"rss_after_mib\":\(fmt(after)),\"kib_per_connection\":\(fmt(perConnectionKiB))"
            + ",\"addresses\":\(p.addresses)"
        if let serverBefore, let serverAfter, serverBefore >= 0, serverAfter >= 0 {
            let serverKiB = (serverAfter - serverBefore) * 1024 / Double(p.connections)
            extra +=
                ",\"server_rss_before_mib\":\(fmt(serverBefore)),\"server_rss_after_mib\":\(fmt(serverAfter))"
                + ",\"server_kib_per_connection\":\(fmt(serverKiB))"
        }
        outcome = Outcome(value: after, unit: "MiB", seconds: seconds(elapsed))
        // Closed 500 at a time (one after another, 100,000 close handshakes take minutes on a busy machine).
        try await withThrowingTaskGroup(of: Void.self) { group in
            for (index, session) in sessions.enumerated() {
                if index >= 500 { try await group.next() }
                group.addTask { await session.close() }
            }
            try await group.waitForAll()
        }
        sessions.removeAll()
    }
    await client.close()
    if let count = getenv("WSBENCH_COUNT_RESUMED"), String(cString: count) == "1" {
        extra += ",\"resumed\":\(resumedHandshakes.load(ordering: .relaxed))"
    }
    return (outcome, extra)
}

/// Handshakes the engine logged as resumed (WSBENCH_COUNT_RESUMED=1).
let resumedHandshakes = Atomic<Int>(0)

/// Counts the CIO engine's "TLS handshake completed" debug messages that say "(session resumed)"; drops the rest.
struct ResumptionCounter: LogHandler {
    var metadata: Logger.Metadata = [:]
    var logLevel: Logger.Level = .debug

    subscript(metadataKey key: String) -> Logger.Metadata.Value? {
        get { self.metadata[key] }
        set { self.metadata[key] = newValue }
    }

    func log(event: LogEvent) {
        if case .string(let tls)? = event.metadata?["ws.tls"], tls.hasSuffix("(session resumed)") {
            resumedHandshakes.add(1, ordering: .relaxed)
        }
    }
}

/// `+noresume` was asked for: ``benchTLS()`` turns session resumption off.
private let sessionsOff = Atomic<Bool>(false)

/// The TLS settings for wss://: trust the PEM file named by `WSBENCH_CA_FILE` (the echo server's self-signed
/// certificate, which run.sh makes with TLS=1), else the system store.
public func benchTLS() -> WebSocketTLSConfiguration {
    var tls = WebSocketTLSConfiguration()
    if let value = getenv("WSBENCH_CA_FILE"), value.pointee != 0 {
        let path = String(decoding: UnsafeRawBufferPointer(start: value, count: strlen(value)), as: UTF8.self)
        tls.trustRoots = .file(path)
    }
    // `+noresume`: the variant is parsed before the engine (and so this) is made.
    tls.resumesSessions = !sessionsOff.load(ordering: .relaxed)
    return tls
}

/// Runs the workload named by the command line with an engine made by `makeEngine` for the variant's engine name,
/// prints the JSON line and exits.
public func runOursMain(engineName: String, _ makeEngine: () -> any WebSocketEngine) async -> Never {
    do {
        raiseFileLimit()
        let p = try parseArguments()
        let variant = try Variant(p.client)
        sessionsOff.store(variant.noResume, ordering: .relaxed)
        guard variant.engine == engineName else {
            throw BenchError(description: "this driver runs the \(engineName) engine, not \(p.client)")
        }
        let (outcome, extra) = try await run(p, variant, makeEngine())
        // WSBENCH_PAUSE=seconds: stay alive after the run, to inspect the process's memory (/proc/PID/smaps).
        if let pause = getenv("WSBENCH_PAUSE").flatMap({
            Int(String(decoding: UnsafeRawBufferPointer(start: $0, count: strlen($0)), as: UTF8.self))
        }) {
            sleep(UInt32(pause))
        }
        printOutcome(p, outcome, extra: extra)
        exit(0)
    } catch {
        let message = "wsbench-ours-\(engineName): error: \(error)\n"
        _ = message.withCString { write(2, $0, strlen($0)) }
        exit(1)
    }
}
