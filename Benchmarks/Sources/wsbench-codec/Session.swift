// `wsbench-codec --session`: what one small message costs in a whole session, without the network and TLS.
//
// A `WebSocketClient` opens a session over an in-process transport (no socket, no thread, no TLS): the bytes the
// session writes are counted and dropped, and the benchmark hands it server frames as an engine's read loop would, in
// reads of a fixed size, whenever the session is not pausing reading. So the figures are the SDK's own work per
// message, through the public API, as a user's code drives it:
//   - receive: 1,000 binary messages of 128 B arrive and are taken with `session.incoming.receive()` (parse, checks,
//     queue, the receive fast path, the array of each message and its release);
//   - send: `session.send(Frame.binary(payload))` 1,000 times (the frame's array, the state machine, masking, encoding
//     and the transport write call);
//   - W2 pattern: the two interleaved as the W2 driver does (up to 1,000 unanswered, then one receive per send);
//   - with maxIncomingBufferMessages raised to 4,096, so reading never pauses (the default is 64).
// The reads of the transport are `--read-size` bytes (default 16 KiB; an engine reads up to 256 KiB, but in W2 over
// wss a read holds what arrived since the last: a few KiB to tens of KiB).
//
//   bash scripts/bench-codec.sh --session [--iterations N] [--frames N] [--size BYTES] [--read-size BYTES]
//       [--only TEXT]   (only the workloads whose name contains TEXT, e.g. `--only "receive,"` under perf record)
import CMallocCounter
import Logging
import Synchronization
import WSCore

#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#endif

/// A transport with no network: what the session writes is counted and dropped; the benchmark delivers reads.
final class BenchTransport: WebSocketTransport, @unchecked Sendable {
    // @unchecked: the benchmark's one task calls the session, and so this transport, one call at a time.
    var handler: (any WebSocketTransportHandler)?
    /// Whether the session asked to stop reading.
    var paused = false
    /// Bytes written by the session.
    var written = 0

    func start(handler: any WebSocketTransportHandler) { self.handler = handler }
    func write(_ bytes: [UInt8]) -> Int {
        self.written &+= bytes.count
        return 0
    }
    func write(bytes: UnsafeRawBufferPointer) -> Int {
        self.written &+= bytes.count
        return 0
    }
    func setReadingPaused(_ paused: Bool) { self.paused = paused }
    func close() {}
    func abort() {}
    var bufferedBytes: Int { 0 }
    /// Opened already, as an HTTP/2 stream would be: no upgrade request and response.
    var openingResponse: EngineOpeningResponse? {
        EngineOpeningResponse(status: 200, headers: HTTPHeaders(), httpVersion: .http2)
    }
}

/// Hands out one ``BenchTransport`` per connection.
final class BenchEngine: WebSocketEngine {
    let last = Mutex<BenchTransport?>(nil)
    var name: String { "bench" }
    func isSupported(_ capability: EngineCapability) -> Bool { capability == .webSocket }
    func connect(to endpoint: EngineEndpoint, options: EngineConnectOptions) async throws -> any WebSocketTransport {
        let transport = BenchTransport()
        self.last.withLock { $0 = transport }
        return transport
    }
    func shutdown() async {}
}

/// `count` unmasked binary server frames of `size` bytes back to back.
private func serverStream(count: Int, size: Int) -> [UInt8] {
    var frame: [UInt8] = [0x82]
    if size < 126 {
        frame.append(UInt8(size))
    } else {
        frame += [126, UInt8(size >> 8), UInt8(size & 0xFF)]
    }
    frame += (0..<size).map { UInt8(truncatingIfNeeded: $0 &* 31 &+ 7) }
    var stream: [UInt8] = []
    stream.reserveCapacity(count * frame.count)
    for _ in 0..<count { stream += frame }
    return stream
}

/// Feeds `stream` to a session in reads of `readSize` bytes while it is not pausing reading.
private struct Reader {
    let stream: [UInt8]
    let readSize: Int
    var offset = 0

    /// Delivers the next read if the session reads and bytes are left; returns whether it did.
    mutating func readIfNotPaused(_ transport: BenchTransport) -> Bool {
        guard !transport.paused, self.offset < self.stream.count, let handler = transport.handler else { return false }
        let end = min(self.offset &+ self.readSize, self.stream.count)
        self.stream.withUnsafeBytes {
            handler.transportDidRead(UnsafeRawBufferPointer(rebasing: $0[self.offset..<end]))
        }
        self.offset = end
        return true
    }
}

/// One session workload's figures: median and fastest ns per message, allocations per message.
private struct SessionMeasurement {
    var workload: String
    var median: Double
    var fastest: Double
    var allocations: Double
}

/// `--only`: the workloads measured (those whose name contains it; all when `nil`), for profiling one of them.
/// Set once before the workloads run, on the benchmark's one task.
nonisolated(unsafe) private var onlyWorkload: String?

/// Runs `body` (one iteration over `frames` messages) `warmup` times, then `iterations` times measured; does nothing
/// for a workload `--only` leaves out (its figures are NaN and not printed).
private func measureAsync(
    _ workload: String, frames: Int, warmup: Int, iterations: Int, _ body: () async throws -> Void
) async rethrows -> SessionMeasurement {
    if let only = onlyWorkload, !workload.contains(only) {
        return SessionMeasurement(workload: workload, median: .nan, fastest: .nan, allocations: .nan)
    }
    for _ in 0..<warmup { try await body() }
    var times: [Double] = []
    var allocations: [Double] = []
    for _ in 0..<iterations {
        let before = ws_malloc_count()
        let start = nanoseconds()
        try await body()
        let end = nanoseconds()
        allocations.append(Double(ws_malloc_count() &- before) / Double(frames))
        times.append(Double(end &- start) / Double(frames))
    }
    return SessionMeasurement(
        workload: workload, median: median(times), fastest: times.min() ?? 0, allocations: median(allocations))
}

/// Opens a session on `engine` with `maxIncomingBufferMessages`, and returns it with its transport.
private func openSession(_ client: WebSocketClient, _ engine: BenchEngine) async throws -> (
    WebSocketSession, BenchTransport
) {
    let session = try await client.webSocketSession("ws://bench.invalid/")
    guard let transport = engine.last.withLock({ $0 }) else { fatalError("wsbench-codec: no transport") }
    return (session, transport)
}

/// Measures the session workloads and prints their table.
/// - Parameters:
///   - options: Frames, iterations, warm-up and the payload size (`--size`; 128 B without it).
///   - readSize: The size of each read handed to the session.
func runSessionBenchmark(_ options: Options, readSize: Int) async throws {
    onlyWorkload = options.only
    let frames = options.frames
    let size = options.sizes.count == 1 ? options.sizes[0] : 128
    let window = min(1000, frames)
    let payload = (0..<size).map { UInt8(truncatingIfNeeded: $0 &* 31 &+ 7) }
    let stream = serverStream(count: frames, size: size)
    var results: [SessionMeasurement] = []
    var sink = 0

    for buffered in [64, 4096] {
        let engine = BenchEngine()
        var logger = Logger(label: "wsbench-codec")
        logger.logLevel = .critical
        let client = WebSocketClient(engine: engine) { config in
            config.logger = logger
            config.install(WebSockets.self) { $0.maxIncomingBufferMessages = buffered }
        }
        let (session, transport) = try await openSession(client, engine)
        let suffix = buffered == 64 ? "" : ", maxIncomingBufferMessages \(buffered)"

        results.append(
            try await measureAsync(
                "receive\(suffix)", frames: frames, warmup: options.warmup, iterations: options.iterations
            ) {
                var reader = Reader(stream: stream, readSize: readSize)
                var received = 0
                while received < frames {
                    if reader.readIfNotPaused(transport) { continue }
                    let frame = try await session.incoming.receive()
                    if frame.kind == .binary { received += 1 }
                    sink &+= frame.data.count
                }
            })
        if buffered == 64 {
            results.append(
                try await measureAsync("send", frames: frames, warmup: options.warmup, iterations: options.iterations) {
                    for _ in 0..<frames { try await session.send(Frame.binary(payload)) }
                })
        }
        results.append(
            try await measureAsync(
                "W2 pattern: send and receive\(suffix)", frames: frames, warmup: options.warmup,
                iterations: options.iterations
            ) {
                // As the W2 driver: send while fewer than `window` are unanswered, else receive one. The echoes
                // are read once they were sent (the reader stays behind the sender).
                var reader = Reader(stream: stream, readSize: readSize)
                var sent = 0
                var received = 0
                while received < frames {
                    while sent < frames && sent - received < window {
                        try await session.send(Frame.binary(payload))
                        sent += 1
                    }
                    if reader.offset < sent * (stream.count / frames), reader.readIfNotPaused(transport) { continue }
                    let frame = try await session.incoming.receive()
                    if frame.kind == .binary { received += 1 }
                }
            })
        sink &+= transport.written
        // The connection ends (as if the server dropped it), so that close() does not wait for a close handshake.
        transport.handler?.transportDidClose(error: nil)
        await session.close()
        await client.close()
    }

    // The floor the API sets per message, for scale: a received message is an array of its own (allocated, the
    // payload copied in, freed once the user drops it), and the queue it waits in is shared with the engine's thread
    // (a lock, taken once per receive); a sent message is masked and copied into the write buffer under a lock.
    let lock = Mutex(0)
    let buffer = UnsafeMutableRawPointer.allocate(byteCount: 1 << 16, alignment: 16)
    defer { buffer.deallocate() }
    func newArray(_ bytes: UnsafeRawBufferPointer) -> Int {
        let copy = [UInt8](bytes)
        return copy.count &+ Int(copy[copy.count &- 1])
    }
    func maskedCopy(_ bytes: UnsafeRawBufferPointer, at offset: Int, key: UInt32) -> Int {
        // A 6-byte header, then the payload XORed with the key eight bytes at a time (the tail byte by byte).
        let destination = buffer + offset
        destination.storeBytes(of: 0x82, as: UInt8.self)
        destination.storeBytes(of: UInt8(0x80 | bytes.count), toByteOffset: 1, as: UInt8.self)
        destination.storeBytes(of: key, toByteOffset: 2, as: UInt32.self)
        let payload = destination + 6
        payload.copyMemory(from: bytes.baseAddress!, byteCount: bytes.count)
        let wide = UInt64(key) | UInt64(key) << 32
        var k = 0
        while k &+ 8 <= bytes.count {
            let word = payload.loadUnaligned(fromByteOffset: k, as: UInt64.self)
            payload.storeBytes(of: word ^ wide, toByteOffset: k, as: UInt64.self)
            k &+= 8
        }
        while k < bytes.count {
            let byte = payload.load(fromByteOffset: k, as: UInt8.self)
            payload.storeBytes(
                of: byte ^ UInt8(truncatingIfNeeded: key >> (8 &* UInt32(k & 3))), toByteOffset: k, as: UInt8.self)
            k &+= 1
        }
        return Int(payload.load(fromByteOffset: bytes.count &- 1, as: UInt8.self))
    }
    let payloadCopy = UnsafeMutableRawBufferPointer.allocate(byteCount: size, alignment: 16)
    defer { payloadCopy.deallocate() }
    payloadCopy.copyBytes(from: payload)
    do {
        let bytes = UnsafeRawBufferPointer(payloadCopy)
        let frameSize = bytes.count &+ 6
        results.append(
            await measureAsync(
                "floor: a new array per message (malloc, copy, free)", frames: frames, warmup: options.warmup,
                iterations: options.iterations
            ) { for _ in 0..<frames { sink &+= newArray(bytes) } })
        results.append(
            await measureAsync(
                "floor: a lock taken and released per message", frames: frames, warmup: options.warmup,
                iterations: options.iterations
            ) { for i in 0..<frames { lock.withLock { $0 &+= i } } })
        results.append(
            await measureAsync(
                "floor: send and receive (a lock each, a masked copy, a new array)", frames: frames,
                warmup: options.warmup, iterations: options.iterations
            ) {
                var offset = 0
                for i in 0..<frames {
                    if offset &+ frameSize > 1 << 16 { offset = 0 }
                    sink &+= lock.withLock { _ in maskedCopy(bytes, at: offset, key: UInt32(truncatingIfNeeded: i)) }
                    offset &+= frameSize
                    sink &+= lock.withLock { _ in newArray(bytes) }
                }
            })
    }
    sink &+= lock.withLock { $0 }

    var out = "Session, in process (no network, no TLS): \(frames) binary messages of \(size) B per iteration, "
    out += "reads of \(readSize) B, \(options.iterations) iterations after \(options.warmup) warm-up. "
    out += "ns per message: median (fastest).\n\n"
    out += "| workload | ns/message | allocs/message |\n|---|---:|---:|\n"
    for m in results where !m.median.isNaN {
        out += "| \(m.workload) | \(fixed(m.median, 0)) (\(fixed(m.fastest, 0))) | \(fixed(m.allocations, 2)) |\n"
    }
    print(out, terminator: "")
    writeStandardError("wsbench-codec: checksum \(sink)\n")
}
