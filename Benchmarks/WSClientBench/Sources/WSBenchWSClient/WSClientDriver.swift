import BenchSupport
import Logging
import NIOCore
import NIOSSL
import Synchronization
import WSClient
import WSCompression

// wsbench-wsclient: the hummingbird-project/swift-websocket (WSClient) driver, exec'd by `wsbench --client
// wsclient` with the same arguments. An executable of its own: that package has a module named WSCore, like our
// SDK, so it is built in a package of its own (Benchmarks/WSClientBench) and never next to ours.
//
// W5 offers permessage-deflate with WSCompression's defaults (a bare `permessage-deflate` offer, zlib's default
// level and memory level; with `--w5-nct 1` both no_context_takeover parameters) and a decompressed-frame limit
// raised from 16 KiB to 1 MiB. WSClient does not expose
// the negotiated extensions, only a debug log line ("Enabled extensions", metadata `hb.ws.extensions`) when the
// upgrade succeeded with some: the driver captures it and fails the run without it.
//
// Over wss:// WSClient uses NIOSSL as its users configure it: a TLSConfiguration (NIOSSL's client defaults, full
// verification) that trusts the PEM file named by WSBENCH_CA_FILE (the run's self-signed certificate), passed to
// `connect(url:configuration:tlsConfiguration:...)`. WSClient sends the URL's host as SNI, and NIOSSL refuses an IP
// address there, so the configuration names the host the certificate is for in `sniHostname` ("localhost", which the
// run's certificate lists beside IP 127.0.0.1); the connection still goes to the URL's address.
#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#endif

// MARK: - hummingbird-project/swift-websocket (WSClient)

/// Records the `hb.ws.extensions` metadata of WSClient's "Enabled extensions" debug line; drops every other line.
struct ExtensionsCapture: LogHandler {
    /// The extension names WSClient enabled (comma-separated), shared by every copy of the handler.
    let enabled: Mutex<String?>.Shared
    /// This handler's metadata (unused, kept as the protocol requires).
    var metadata: Logger.Metadata = [:]
    /// `.debug`: WSClient logs the enabled extensions at that level (per-frame lines are `.trace`).
    var logLevel: Logger.Level = .debug

    /// Keeps the enabled extensions, if this is the line that lists them.
    /// - Parameter event: The log event.
    func log(event: LogEvent) {
        if let value = event.metadata?["hb.ws.extensions"] { enabled.value.withLock { $0 = "\(value)" } }
    }

    /// This handler's metadata value for `metadataKey`.
    subscript(metadataKey metadataKey: String) -> Logger.Metadata.Value? {
        get { metadata[metadataKey] }
        set { metadata[metadataKey] = newValue }
    }
}

extension Mutex where Value: Sendable {
    /// A reference to a mutex, so that copies of a value type share it.
    final class Shared: Sendable {
        /// The mutex.
        let value: Mutex<Value>
        /// Creates a shared mutex holding `initial`.
        /// - Parameter initial: The initial value.
        init(_ initial: Value) { self.value = Mutex(initial) }
    }
}

/// The TLS configuration for wss://: NIOSSL's client defaults, trusting the PEM file named by `WSBENCH_CA_FILE`
/// instead of the system store when it is set; nil for ws://.
func tlsConfiguration(_ p: Params) -> TLSConfiguration? {
    guard p.url.hasPrefix("wss://") else { return nil }
    var tls = TLSConfiguration.makeClientConfiguration()
    if let ca = getenv("WSBENCH_CA_FILE"), ca.pointee != 0 { tls.trustRoots = .file(String(cString: ca)) }
    return tls
}

/// The host name the run's certificate is for, sent as SNI and checked against the certificate over wss://.
let tlsServerName = "localhost"

func runWSClient(_ p: Params) async throws -> (Outcome, extra: String) {
    let logger = {
        var logger = Logger(label: "wsbench.wsclient")
        logger.logLevel = .error
        return logger
    }()
    let tls = tlsConfiguration(p)
    let config = WebSocketClientConfiguration(maxFrameSize: 1 << 20, sniHostname: tls != nil ? tlsServerName : nil)
    switch p.workload {
    case .idle:
        throw BenchError(description: "the idle workload is measured for our SDK only")
    case .w5:
        let enabled = Mutex<String?>.Shared(nil)
        var w5Logger = Logger(label: "wsbench.wsclient") { _ in ExtensionsCapture(enabled: enabled) }
        w5Logger.logLevel = .debug
        let w5Config = WebSocketClientConfiguration(
            maxFrameSize: 1 << 20,
            extensions: [
                .perMessageDeflate(
                    maxWindow: nil, noContextTakeover: p.w5NoContextTakeover, maxDecompressedFrameSize: 1 << 20)
            ],
            sniHostname: tls != nil ? tlsServerName : nil
        )
        let (count, size, window) = streamShape(p)
        let messages = textCorpus(count: w5DistinctMessages(size: size), size: size)
        let texts = messages.map { String(decoding: $0, as: UTF8.self) }
        let box = ResultBox()
        try await WSClient.WebSocketClient.connect(
            url: p.url, configuration: w5Config, tlsConfiguration: tls, logger: w5Logger
        ) {
            inbound, outbound, _ in
            guard let names = enabled.value.withLock({ $0 }), names.contains("permessage-deflate") else {
                throw BenchError(description: "the server did not accept permessage-deflate")
            }
            var it = inbound.makeAsyncIterator()
            var sent = 0
            var received = 0
            let start = clock.now
            while received < count {
                while sent < count && sent - received < window {
                    try await outbound.write(.text(texts[sent % texts.count]))
                    sent += 1
                }
                guard let frame = try await it.next() else { throw BenchError(description: "closed early") }
                guard frame.opcode == .text else { continue }
                // Every echo must be the message sent (inflated correctly, in order).
                let expected = messages[received % messages.count]
                let same = frame.data.withUnsafeReadableBytes { a in
                    expected.withUnsafeBytes { b in
                        a.count == b.count && memcmp(a.baseAddress!, b.baseAddress!, b.count) == 0
                    }
                }
                guard same else { throw BenchError(description: "echo \(received) differs from the message sent") }
                received += 1
            }
            box.set(streamOutcome(p, count: count, size: size, clock.now - start))
        }
        let names = enabled.value.withLock { $0 } ?? ""
        return (try box.get(), ",\"extensions\":\"\(jsonEscaped(names))\",\"corpus\":\"\(corpusHash(messages))\"")
    case .w1:
        let box = ResultBox()
        try await WSClient.WebSocketClient.connect(
            url: p.url, configuration: config, tlsConfiguration: tls, logger: logger
        ) {
            inbound, outbound, _ in
            var it = inbound.makeAsyncIterator()
            let msg = String(repeating: "a", count: 32)
            var lat: [Double] = []
            lat.reserveCapacity(p.w1Count)
            var start = clock.now
            for i in 0..<(p.w1Warmup + p.w1Count) {
                if i == p.w1Warmup { start = clock.now }
                let t0 = clock.now
                try await outbound.write(.text(msg))
                guard try await it.next() != nil else { throw BenchError(description: "closed early") }
                if i >= p.w1Warmup { lat.append(micros(clock.now - t0)) }
            }
            box.set(pingPongOutcome(lat, clock.now - start))
        }
        return (try box.get(), "")
    case .w2, .w3:
        let (count, size, window) = streamShape(p)
        let box = ResultBox()
        try await WSClient.WebSocketClient.connect(
            url: p.url, configuration: config, tlsConfiguration: tls, logger: logger
        ) {
            inbound, outbound, _ in
            var it = inbound.makeAsyncIterator()
            let payload = ByteBuffer(repeating: 0x5A, count: size)
            var sent = 0
            var received = 0
            let start = clock.now
            while received < count {
                while sent < count && sent - received < window {
                    try await outbound.write(.binary(payload))
                    sent += 1
                }
                guard let frame = try await it.next() else { throw BenchError(description: "closed early") }
                if frame.opcode == .binary { received += 1 }
            }
            box.set(streamOutcome(p, count: count, size: size, clock.now - start))
        }
        return (try box.get(), "")
    case .w4:
        let start = clock.now
        try await withThrowingTaskGroup(of: Void.self) { group in
            for _ in 0..<p.connections {
                group.addTask {
                    try await WSClient.WebSocketClient.connect(
                        url: p.url, configuration: config, tlsConfiguration: tls, logger: logger
                    ) {
                        inbound, outbound, _ in
                        var it = inbound.makeAsyncIterator()
                        try await outbound.write(.text(String(repeating: "b", count: 32)))
                        _ = try await it.next()
                    }
                }
            }
            try await group.waitForAll()
        }
        let elapsed = clock.now - start
        return (Outcome(value: Double(p.connections) / seconds(elapsed), unit: "conn/s", seconds: seconds(elapsed)), "")
    }
}

final class ResultBox: Sendable {
    private let outcome = Mutex<Outcome?>(nil)
    func set(_ o: Outcome) { outcome.withLock { $0 = o } }
    func get() throws -> Outcome {
        guard let o = outcome.withLock({ $0 }) else { throw BenchError(description: "no result") }
        return o
    }
}

do {
    raiseFileLimit()
    var p = try parseArguments()
    p.client = "wsclient"
    let (outcome, extra) = try await runWSClient(p)
    printOutcome(p, outcome, extra: extra)
    exit(0)
} catch {
    let message = "wsbench-wsclient: error: \(error)\n"
    _ = message.withCString { write(2, $0, strlen($0)) }
    exit(1)
}
