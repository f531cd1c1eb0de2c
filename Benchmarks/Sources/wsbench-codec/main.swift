// wsbench-codec: what one frame costs in the WSCore codec, without the network.
//
// For payloads of 128 B and 64 KiB (binary frames) it measures, over 1,000 frames per iteration:
//   - encode: a client frame, masked with a fresh key, into a fresh array, exactly as `Connection.enqueue` does;
//   - decode (client): 1,000 unmasked server frames in one stream, read in 64 KiB pieces, through
//     `beginInput`/`endInput` (as `Connection.readFrames` does) and through `append` for comparison;
//   - decode (server): 1,000 masked client frames through a server-role decoder and `append`, as WSTesting does;
//   - baselines for scale: memcpy of the same payloads, and a new array holding a copy of each (made two ways).
// Each workload runs `--warmup` iterations, then `--iterations` measured ones; the table gives the median (and the
// fastest) ns per frame, payload MB/s at the median, and allocations per frame (malloc-family calls counted by
// CMallocCounter, which interposes malloc for the whole process).
//
//   swift build -c release --scratch-path .build-codec && .build-codec/release/wsbench-codec [--json]
//   options: --iterations N (50), --warmup N (5), --frames N (1000), --json (JSON instead of the Markdown table),
//            --size BYTES (one payload size instead of 128 and 65536),
//            --only TEXT (only the workloads whose name contains TEXT, e.g. `--only encode` under perf record),
//            --serialization (instead: the WSSerialization converters' messages per second, Serialization.swift),
//            --session [--read-size BYTES] (instead: a whole session's cost per small message, Session.swift)
import CMallocCounter
import WSCoreCodec

#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#endif

// MARK: - Options

/// What the command line asked for.
struct Options {
    /// Measured iterations per workload.
    var iterations = 50
    /// Unmeasured iterations before them (first-touch page faults, lazy runtime metadata, allocator warm-up).
    var warmup = 5
    /// Frames per iteration.
    var frames = 1000
    /// Print JSON instead of the Markdown table.
    var json = false
    /// Run only the workloads whose name contains this text (for profiling one of them), or all when `nil`.
    var only: String?
    /// The payload sizes to measure, in bytes.
    var sizes = [128, 64 * 1024]
    /// Measure the WSSerialization converters instead of the codec.
    var serialization = false
    /// Measure a whole session per message instead of the codec (Session.swift).
    var session = false
    /// The size of the reads handed to the session in `--session`.
    var sessionReadSize = 16 * 1024

    /// Parses `arguments` (without the program name); exits with a usage message on anything unknown.
    /// - Parameter arguments: The command-line arguments after the program name.
    init(_ arguments: ArraySlice<String>) {
        var rest = arguments
        while let argument = rest.popFirst() {
            switch argument {
            case "--json": self.json = true
            case "--serialization": self.serialization = true
            case "--session": self.session = true
            case "--read-size": self.sessionReadSize = Self.positive(rest.popFirst(), argument)
            case "--iterations": self.iterations = Self.positive(rest.popFirst(), argument)
            case "--warmup": self.warmup = Self.positive(rest.popFirst(), argument, allowZero: true)
            case "--frames": self.frames = Self.positive(rest.popFirst(), argument)
            case "--size": self.sizes = [Self.positive(rest.popFirst(), argument)]
            case "--only":
                guard let text = rest.popFirst() else { Self.usage("--only needs a workload name or part of one") }
                self.only = text
            default: Self.usage("unknown argument \(argument)")
            }
        }
    }

    /// The integer value of an option, or exit with a usage message.
    /// - Parameters:
    ///   - value: The argument after the option.
    ///   - option: The option, for the message.
    ///   - allowZero: Whether 0 is accepted.
    private static func positive(_ value: String?, _ option: String, allowZero: Bool = false) -> Int {
        guard let value, let number = Int(value), number > 0 || (allowZero && number == 0) else {
            usage("\(option) needs a \(allowZero ? "non-negative" : "positive") integer")
        }
        return number
    }

    /// Prints the usage to standard error and exits with status 2.
    /// - Parameter problem: What was wrong with the arguments.
    private static func usage(_ problem: String) -> Never {
        writeStandardError(
            "wsbench-codec: \(problem)\n"
                + "usage: wsbench-codec [--iterations N] [--warmup N] [--frames N] [--size BYTES] [--only TEXT]"
                + " [--json]\n       wsbench-codec --serialization\n"
                + "       wsbench-codec --session [--iterations N] [--frames N] [--size BYTES] [--read-size BYTES]\n"
        )
        exit(2)
    }
}

/// Writes `text` to standard error (file descriptor 2, unbuffered).
/// - Parameter text: The text to write.
func writeStandardError(_ text: String) {
    var text = text
    text.withUTF8 { bytes in _ = write(2, bytes.baseAddress, bytes.count) }
}

// MARK: - Measuring

/// Monotonic time in nanoseconds.
func nanoseconds() -> UInt64 {
    var time = timespec()
    clock_gettime(CLOCK_MONOTONIC, &time)
    return UInt64(time.tv_sec) &* 1_000_000_000 &+ UInt64(time.tv_nsec)
}

/// The median of `values` (the mean of the middle two for an even count).
/// - Parameter values: At least one value.
func median(_ values: [Double]) -> Double {
    let sorted = values.sorted()
    let middle = sorted.count / 2
    return sorted.count % 2 == 1 ? sorted[middle] : (sorted[middle - 1] + sorted[middle]) / 2
}

/// One workload's figures.
struct Measurement {
    /// What was measured, e.g. `encode, masked (client send)`.
    var workload: String
    /// The payload size of each frame, in bytes.
    var payloadSize: Int
    /// Frames per iteration.
    var frames: Int
    /// Measured iterations.
    var iterations: Int
    /// The median time per frame over the iterations, in nanoseconds.
    var medianNanosecondsPerFrame: Double
    /// The fastest iteration's time per frame, in nanoseconds.
    var minimumNanosecondsPerFrame: Double
    /// Allocations (malloc-family calls) per frame in the median iteration by allocation count.
    var allocationsPerFrame: Double
    /// The fewest and most allocations any iteration made, per frame (equal when the count is stable).
    var allocationsPerFrameRange: (low: Double, high: Double)
    /// Bytes requested from malloc per frame, in the median iteration by allocation count.
    var allocatedBytesPerFrame: Double
    /// Frees per frame, in the median iteration by allocation count.
    var freesPerFrame: Double

    /// Payload throughput at the median time, in MB/s (10^6 bytes per second).
    var megabytesPerSecond: Double {
        Double(self.payloadSize) / self.medianNanosecondsPerFrame * 1e3
    }
}

/// Runs `body` `warmup` times unmeasured, then `iterations` times measured, and returns the figures per frame.
/// - Parameters:
///   - workload: The workload's name.
///   - payloadSize: The payload size of each frame.
///   - options: Frames per iteration, warm-up and measured iterations.
///   - checksum: Accumulates what `body` returns, so that its work cannot be optimized away.
///   - body: One iteration over `options.frames` frames; returns a value derived from every frame's bytes.
func measure(
    _ workload: String,
    payloadSize: Int,
    _ options: Options,
    checksum: inout Int,
    _ body: () -> Int
) -> Measurement {
    for _ in 0..<options.warmup { checksum &+= body() }
    var times: [Double] = []
    var counts: [(allocations: UInt64, bytes: UInt64, frees: UInt64)] = []
    times.reserveCapacity(options.iterations)
    counts.reserveCapacity(options.iterations)
    for _ in 0..<options.iterations {
        let allocations = ws_malloc_count()
        let bytes = ws_malloc_bytes()
        let frees = ws_free_count()
        let start = nanoseconds()
        checksum &+= body()
        let end = nanoseconds()
        counts.append((ws_malloc_count() &- allocations, ws_malloc_bytes() &- bytes, ws_free_count() &- frees))
        times.append(Double(end &- start))
    }
    let frames = Double(options.frames)
    let byAllocations = counts.sorted { $0.allocations < $1.allocations }
    let middle = byAllocations[byAllocations.count / 2]
    return Measurement(
        workload: workload,
        payloadSize: payloadSize,
        frames: options.frames,
        iterations: options.iterations,
        medianNanosecondsPerFrame: median(times) / frames,
        minimumNanosecondsPerFrame: (times.min() ?? 0) / frames,
        allocationsPerFrame: Double(middle.allocations) / frames,
        allocationsPerFrameRange: (
            Double(byAllocations.first?.allocations ?? 0) / frames,
            Double(byAllocations.last?.allocations ?? 0) / frames
        ),
        allocatedBytesPerFrame: Double(middle.bytes) / frames,
        freesPerFrame: Double(middle.frees) / frames
    )
}

/// Fails unless CMallocCounter really counts this process's allocations: an array allocated by Swift code must
/// raise the count (it would not if the linker had not exported our malloc, or had dropped it).
func checkInterposition() {
    let size = 4096 + CommandLine.arguments.count  // Not a constant: the array cannot be promoted to the stack.
    let before = ws_malloc_count()
    let probe = [UInt8](repeating: 1, count: size)
    let after = ws_malloc_count()
    guard after > before, probe.count == size else {
        writeStandardError("wsbench-codec: CMallocCounter does not see Swift's allocations; counts would be wrong\n")
        exit(1)
    }
}

// MARK: - Workloads

/// The size of the pieces the decoders are fed, as one `read` of the engines' 64 KiB read buffer.
let readSize = 64 * 1024
/// The decoders' frame size limit: the session's default `maxFrameSize` (1 MiB).
let maxFrameSize = 1 << 20

/// A deterministic, non-uniform payload of `size` bytes.
/// - Parameter size: The payload size.
func makePayload(_ size: Int) -> [UInt8] {
    (0..<size).map { UInt8(truncatingIfNeeded: $0 &* 31 &+ 7) }
}

/// `count` frames of `frame` back to back, masked with fresh keys when `masked` (client frames) or not (server
/// frames).
/// - Parameters:
///   - frame: The frame to repeat.
///   - count: How many frames.
///   - masked: Whether to mask each frame with a fresh key.
func makeStream(of frame: Frame, count: Int, masked: Bool) -> [UInt8] {
    var keys = MaskingKeyGenerator()
    var stream: [UInt8] = []
    stream.reserveCapacity(count * (frame.data.count + 14))
    for _ in 0..<count { FrameEncoder.encode(frame, maskingKey: masked ? keys.next() : nil, into: &stream) }
    return stream
}

/// How a decoder is given each piece of the stream.
enum Feed {
    /// `beginInput`, `nextFrame` until `nil`, `endInput`: frames parsed in place (`Connection.readFrames`).
    case inPlace
    /// `append`, then `nextFrame` until `nil`: every byte copied into the decoder first (WSTesting).
    case append
}

/// Decodes `stream` with `decoder`, `readSize` bytes at a time, and returns a checksum of the payloads.
/// - Parameters:
///   - stream: Whole frames back to back.
///   - decoder: The decoder, empty on entry and on return (the stream ends on a frame boundary).
///   - feed: How each piece is handed to the decoder.
///   - frames: How many frames `stream` holds; checked.
func decode(_ stream: [UInt8], with decoder: inout FrameDecoder, feed: Feed, frames: Int) -> Int {
    var checksum = 0
    var decoded = 0
    stream.withUnsafeBytes { all in
        var offset = 0
        while offset < all.count {
            let end = min(offset &+ readSize, all.count)
            let piece = UnsafeRawBufferPointer(rebasing: all[offset..<end])
            switch feed {
            case .inPlace: decoder.beginInput(piece)
            case .append: decoder.append(piece)
            }
            do {
                while let frame = try decoder.nextFrame() {
                    checksum &+= frame.payload.count &+ Int(frame.payload[frame.payload.count &- 1])
                    decoded &+= 1
                }
            } catch {
                fatalError("wsbench-codec: the decoder rejected the stream: \(error)")
            }
            if feed == .inPlace { decoder.endInput() }
            offset = end
        }
    }
    precondition(decoded == frames && decoder.bufferedByteCount == 0, "wsbench-codec: decoded \(decoded) of \(frames)")
    return checksum
}

/// Measures every workload for one payload size.
/// - Parameters:
///   - size: The payload size in bytes.
///   - options: Frames and iterations.
///   - checksum: Accumulates the workloads' checksums.
func run(size: Int, _ options: Options, checksum: inout Int) -> [Measurement] {
    let frames = options.frames
    let frame = Frame(kind: .binary, data: makePayload(size))
    var results: [Measurement] = []
    /// Measures one workload unless `--only` leaves it out.
    func record(_ workload: String, _ body: () -> Int) {
        if let only = options.only, !workload.contains(only) { return }
        results.append(measure(workload, payloadSize: size, options, checksum: &checksum, body))
    }

    // Encode, as Connection.enqueue does it above 1,000 payload bytes: a fresh masking key and
    // FrameEncoder.encodedFrame (a new array; from 1 KiB the payload is masked while it is copied).
    var keys = MaskingKeyGenerator()
    record("encode, masked (client send)") {
        var sum = 0
        for _ in 0..<frames {
            let bytes = FrameEncoder.encodedFrame(frame, maskingKey: keys.next())
            sum &+= bytes.count &+ Int(bytes[bytes.count &- 1])
        }
        return sum
    }

    // Encode as Connection.enqueue does it for payloads up to 1,010 bytes: into a temporary buffer, copied into the
    // transport's write buffer (here one reused buffer, as the write queue's gathering chunk).
    if size <= FrameEncoder.maxTemporaryPayload {
        let sink = UnsafeMutableRawPointer.allocate(byteCount: 1 << 16, alignment: 16)
        defer { sink.deallocate() }
        record("encode, masked, temporary buffer (client send)") {
            var sum = 0
            var at = 0
            for _ in 0..<frames {
                sum &+= FrameEncoder.withEncodedFrame(frame, maskingKey: keys.next()) { bytes in
                    if at + bytes.count > 1 << 16 { at = 0 }
                    sink.advanced(by: at).copyMemory(from: bytes.baseAddress!, byteCount: bytes.count)
                    at += bytes.count
                    return bytes.count &+ Int(bytes[bytes.count &- 1])
                }
            }
            return sum
        }
    }

    // Decode, client role: unmasked server frames. One decoder per workload, like the one a Connection keeps for
    // its lifetime (its buffer's capacity survives between reads and iterations).
    let serverStream = makeStream(of: frame, count: frames, masked: false)
    var clientDecoder = FrameDecoder(maxFrameSize: maxFrameSize, role: .client)
    record("decode, client, beginInput/endInput") {
        decode(serverStream, with: &clientDecoder, feed: .inPlace, frames: frames)
    }
    var appendingDecoder = FrameDecoder(maxFrameSize: maxFrameSize, role: .client)
    record("decode, client, append") {
        decode(serverStream, with: &appendingDecoder, feed: .append, frames: frames)
    }

    // Decode, server role: masked client frames, fed with append as WSTesting's server does.
    let clientStream = makeStream(of: frame, count: frames, masked: true)
    var serverDecoder = FrameDecoder(maxFrameSize: maxFrameSize, role: .server)
    record("decode, server (masked), append") {
        decode(clientStream, with: &serverDecoder, feed: .append, frames: frames)
    }

    // Baselines: the same payload bytes copied with memcpy into a buffer allocated once. "hot" copies the one
    // payload (in cache, like the encoder's source); "from stream" copies each frame's payload out of the
    // unmasked stream (through memory, like the decoders).
    let destination = UnsafeMutableRawPointer.allocate(byteCount: max(size, 1), alignment: 16)
    defer { destination.deallocate() }
    record("baseline: memcpy payload, hot") {
        var sum = 0
        frame.data.withUnsafeBytes { payload in
            for _ in 0..<frames {
                memcpy(destination, payload.baseAddress!, size)
                sum &+= Int(destination.load(fromByteOffset: size &- 1, as: UInt8.self))
            }
        }
        return sum
    }
    let header = FrameEncoder.headerSize(payloadLength: size, masked: false)
    record("baseline: memcpy payload from stream") {
        var sum = 0
        serverStream.withUnsafeBytes { stream in
            for i in 0..<frames {
                memcpy(destination, stream.baseAddress! + (i &* (header &+ size) &+ header), size)
                sum &+= Int(destination.load(fromByteOffset: size &- 1, as: UInt8.self))
            }
        }
        return sum
    }
    // Baselines for what each frame inherently costs on receive: a new array holding a copy of the payload. Two
    // ways to make it, because they differ: `[UInt8](bytes)` uses a specialized allocation path, while
    // `[UInt8](unsafeUninitializedCapacity:)` (which FrameDecoder uses) calls the unspecialized
    // `_ContiguousArrayBuffer(_uninitializedCount:minimumCapacity:)` in libswiftCore, which looks up the
    // `_ContiguousArrayStorage<UInt8>` metadata at run time (`swift_getGenericMetadata`) on every call.
    record("baseline: new array, [UInt8](bytes)") {
        var sum = 0
        frame.data.withUnsafeBytes { payload in
            for _ in 0..<frames {
                let copy = [UInt8](payload)
                sum &+= copy.count &+ Int(copy[size &- 1])
            }
        }
        return sum
    }
    record("baseline: new array, unsafeUninitializedCapacity") {
        var sum = 0
        frame.data.withUnsafeBytes { payload in
            for _ in 0..<frames {
                let copy = [UInt8](unsafeUninitializedCapacity: size) { buffer, initialized in
                    memcpy(buffer.baseAddress!, payload.baseAddress!, size)
                    initialized = size
                }
                sum &+= copy.count &+ Int(copy[size &- 1])
            }
        }
        return sum
    }
    return results
}

// MARK: - Output

/// `value` with `digits` decimals (no Foundation).
/// - Parameters:
///   - value: A finite number.
///   - digits: Decimals, 0 to 6.
func fixed(_ value: Double, _ digits: Int) -> String {
    var scale = 1.0
    for _ in 0..<digits { scale *= 10 }
    let scaled = (abs(value) * scale).rounded()
    let whole = Int(scaled / scale)
    let fraction = Int(scaled - Double(whole) * scale)
    let sign = value < 0 && scaled != 0 ? "-" : ""
    guard digits > 0 else { return "\(sign)\(whole)" }
    let fractionText = String(fraction)
    return "\(sign)\(whole)." + String(repeating: "0", count: digits - fractionText.count) + fractionText
}

/// A payload size as `128 B` or `64 KiB`.
/// - Parameter size: Bytes.
func sizeLabel(_ size: Int) -> String {
    size >= 1024 && size % 1024 == 0 ? "\(size / 1024) KiB" : "\(size) B"
}

/// Allocations per frame, with the range when iterations differed.
/// - Parameter m: The measurement.
func allocationLabel(_ m: Measurement) -> String {
    let (low, high) = m.allocationsPerFrameRange
    guard low != high else { return fixed(m.allocationsPerFrame, 3) }
    return "\(fixed(m.allocationsPerFrame, 3)) (\(fixed(low, 3))–\(fixed(high, 3)))"
}

/// The Markdown table of `results`.
/// - Parameters:
///   - results: Every measurement.
///   - options: Frames and iterations, for the caption.
func markdown(_ results: [Measurement], _ options: Options) -> String {
    var out = "\(options.frames) binary frames per iteration, \(options.iterations) iterations after "
    out += "\(options.warmup) warm-up; decoders fed \(readSize / 1024) KiB at a time. "
    out += "ns/frame: median (fastest); MB/s: payload bytes at the median.\n\n"
    out += "| workload | payload | ns/frame | MB/s | allocs/frame | bytes allocated/frame |\n"
    out += "|---|---:|---:|---:|---:|---:|\n"
    for m in results {
        out += "| \(m.workload) | \(sizeLabel(m.payloadSize)) "
        out += "| \(fixed(m.medianNanosecondsPerFrame, 0)) (\(fixed(m.minimumNanosecondsPerFrame, 0))) "
        out += "| \(fixed(m.megabytesPerSecond, 0)) | \(allocationLabel(m)) | \(fixed(m.allocatedBytesPerFrame, 0)) |\n"
    }
    return out
}

/// `text` as a JSON string literal.
/// - Parameter text: Plain text (the workload names need no escaping beyond quotes and backslashes).
func jsonString(_ text: String) -> String {
    var out = "\""
    for character in text {
        if character == "\"" || character == "\\" { out.append("\\") }
        out.append(character)
    }
    return out + "\""
}

/// The JSON report of `results`: an object with the settings and one entry per measurement.
/// - Parameters:
///   - results: Every measurement.
///   - options: Frames and iterations.
func json(_ results: [Measurement], _ options: Options) -> String {
    let entries = results.map { m in
        "    {\"workload\": \(jsonString(m.workload)), \"payloadBytes\": \(m.payloadSize), "
            + "\"nsPerFrameMedian\": \(fixed(m.medianNanosecondsPerFrame, 1)), "
            + "\"nsPerFrameMin\": \(fixed(m.minimumNanosecondsPerFrame, 1)), "
            + "\"megabytesPerSecond\": \(fixed(m.megabytesPerSecond, 1)), "
            + "\"allocationsPerFrame\": \(fixed(m.allocationsPerFrame, 4)), "
            + "\"allocationsPerFrameMin\": \(fixed(m.allocationsPerFrameRange.low, 4)), "
            + "\"allocationsPerFrameMax\": \(fixed(m.allocationsPerFrameRange.high, 4)), "
            + "\"allocatedBytesPerFrame\": \(fixed(m.allocatedBytesPerFrame, 1)), "
            + "\"freesPerFrame\": \(fixed(m.freesPerFrame, 4))}"
    }
    return "{\n  \"frames\": \(options.frames), \"iterations\": \(options.iterations), \"warmup\": \(options.warmup), "
        + "\"readSize\": \(readSize),\n  \"results\": [\n" + entries.joined(separator: ",\n") + "\n  ]\n}"
}

// MARK: - Main

let options = Options(CommandLine.arguments.dropFirst())
if options.serialization {
    do {
        try runSerializationBenchmark()
        exit(0)
    } catch {
        writeStandardError("wsbench-codec: \(error)\n")
        exit(1)
    }
}
checkInterposition()
if options.session {
    do {
        try await runSessionBenchmark(options, readSize: options.sessionReadSize)
        exit(0)
    } catch {
        writeStandardError("wsbench-codec: \(error)\n")
        exit(1)
    }
}
var checksum = 0
var results: [Measurement] = []
for size in options.sizes { results += run(size: size, options, checksum: &checksum) }
print(options.json ? json(results, options) : markdown(results, options), terminator: "")
// The checksum keeps every workload's result alive; it goes to standard error so that stdout stays a clean report.
writeStandardError("wsbench-codec: checksum \(checksum)\n")
