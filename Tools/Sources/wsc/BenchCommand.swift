import ArgumentParser
import Foundation
import Glibc
import Histogram
import Synchronization
import WSCore
import WSExtensions

/// `wsc bench URL`: a load generator against an echo server. N connections send messages and time their echoes,
/// closed-loop (a window of unanswered messages per connection) or open-loop (a fixed total rate); the report
/// gives counts, throughput, errors by kind and latency percentiles from an HdrHistogram.
struct BenchCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "bench",
        abstract: "Load an echo server with N connections and report throughput and latency percentiles.",
        discussion: """
            Opens --connections sessions (concurrently), then each one sends --size-byte messages (text, or \
            binary with --binary) and matches the server's echoes by the sequence number the first 8 bytes carry. \
            Closed loop (the default): each connection keeps at most --in-flight messages unanswered and sends the \
            next one when an echo arrives; the latency is from the send to the echo. Open loop (--rate): the \
            connections together send --rate messages per second on a fixed schedule whatever the server does, \
            and the latency is measured from each message's intended send time, so that a stalled server shows \
            in the percentiles (no coordinated omission). After --warmup seconds (not counted) the measurement \
            runs for --duration seconds; then sending stops, the echoes still in flight are awaited (at most \
            --drain-timeout seconds) and every connection closes with 1000.

            While it runs, a progress line (open connections, messages/s, MB/s, errors) is updated on stderr \
            once a second when stderr is a terminal. The report goes to stdout, as text or with --json as one \
            JSON object (keys in Docs/CLI.md). Ctrl-C ends the measurement early and still prints the report; \
            a second Ctrl-C quits at once (exit 130).

            Exit status: 0 when every connection opened and there was no error; 2 when a connection could not \
            be opened; 3 protocol error by the server; 4 abnormal closure (connection lost, ping or close \
            timeout); 5 the server closed a session with an error code; 1 any other error (an echo that does not \
            match, echoes still missing after --drain-timeout, open-loop messages that could not be sent in time, \
            the server closing with 1000 during the run); 64 bad arguments.

            Examples:
              wsc bench ws://127.0.0.1:9001/           # 1 connection, 32-byte text messages, 10 s
              wsc bench ws://127.0.0.1:9001/ -c 16 --in-flight 8 --duration 30 --warmup 5
              wsc bench ws://127.0.0.1:9001/ -c 4 --rate 20000 --size 1024 --binary
              wsc bench wss://localhost:8443/ --cacert ca.pem --engine curl -c 8 --json
            """
    )

    @Argument(help: "The WebSocket URL of an echo server (ws, wss, http or https).")
    var url: String

    @Option(name: [.customShort("c"), .customLong("connections")], help: "How many connections to open.")
    var connections = 1

    @Option(
        help: ArgumentHelp(
            "The payload size of each message, in bytes (at least 8: the first 8 carry a sequence number).",
            valueName: "bytes"))
    var size = 32

    @Flag(help: "Send binary messages (default: text).")
    var binary = false

    @Option(
        name: .customLong("in-flight"),
        help: ArgumentHelp("Closed loop: unanswered messages allowed per connection (default 1).", valueName: "count"))
    var inFlight: Int?

    @Option(
        help: ArgumentHelp(
            "Open loop: send this many messages per second in total, on a fixed schedule, instead of a closed loop.",
            valueName: "msgs-per-sec"))
    var rate: Double?

    @Option(help: ArgumentHelp("How long to measure, in seconds.", valueName: "seconds"))
    var duration = 10.0

    @Option(help: ArgumentHelp("How long to run before measuring, in seconds (not counted).", valueName: "seconds"))
    var warmup = 0.0

    @Option(
        help: ArgumentHelp(
            "After the measurement, how long to wait for the echoes in flight (open loop: also to send the messages "
                + "that fell behind), in seconds.", valueName: "seconds"))
    var drainTimeout = 5.0

    @Flag(help: "Print the report as one JSON object (keys in Docs/CLI.md).")
    var json = false

    @Flag(help: "Offer permessage-deflate (RFC 7692) with the default parameters.")
    var deflate = false

    @OptionGroup var client: ConnectionOptions

    func validate() throws {
        guard self.connections >= 1 else { throw ValidationError("--connections must be at least 1") }
        guard self.size >= BenchPayload.headerSize else {
            throw ValidationError("--size must be at least \(BenchPayload.headerSize) (the sequence number)")
        }
        if let inFlight = self.inFlight, inFlight < 1 { throw ValidationError("--in-flight must be at least 1") }
        if let rate = self.rate, !(rate > 0 && rate.isFinite) { throw ValidationError("--rate must be positive") }
        if self.inFlight != nil && self.rate != nil {
            throw ValidationError("--in-flight is for the closed loop, --rate for the open loop: give one of them")
        }
        guard self.duration > 0 && self.duration.isFinite else { throw ValidationError("--duration must be positive") }
        guard self.warmup >= 0 && self.warmup.isFinite else { throw ValidationError("--warmup must not be negative") }
        guard self.drainTimeout >= 0 && self.drainTimeout.isFinite else {
            throw ValidationError("--drain-timeout must not be negative")
        }
    }

    func run() async throws {
        let status = await self.bench()
        if status != 0 { throw ExitCode(status) }
    }

    /// The whole run: connect, load, drain, close, report. Returns the exit status.
    private func bench() async -> Int32 {
        do {
            _ = try WebSocketURL(parsing: self.url)
        } catch {
            printError("wsc bench: error: \(describe(error))")
            return SessionExit.failure.rawValue
        }
        let plan = BenchPlan(
            connections: self.connections, size: self.size, binary: self.binary,
            mode: self.rate.map { .openLoop(rate: $0) } ?? .closedLoop(inFlight: self.inFlight ?? 1),
            duration: self.duration, warmup: self.warmup, drainTimeout: self.drainTimeout)
        let deflate = self.deflate
        let client: WebSocketClient
        do {
            // Echoes of --size bytes must fit the limits, whatever the defaults are.
            let limit = max(16 << 20, plan.size)
            client = try self.client.makeClient(maxFrameSize: limit, maxMessageSize: limit) { ws in
                if deflate { try ws.extensions { try $0.install(.perMessageDeflate()) } }
            }
        } catch {
            printError("wsc bench: error: \(describe(error))")
            return SessionExit.failure.rawValue
        }
        let quiet = self.client.quiet
        let progress = BenchProgress()
        let showProgress = !quiet && isatty(2) == 1
        if !quiet {
            let plural = plan.connections == 1 ? "" : "s"
            printError(
                "wsc bench: opening \(plan.connections) connection\(plural) to \(self.url) (engine \(self.client.engine.rawValue))"
            )
        }

        // Connect every session concurrently; the clocks start once all attempts are over.
        let opened = await Self.connectAll(client, url: self.url, options: self.client, count: plan.connections)
        var sessions: [WebSocketSession] = []
        var connectErrors: [(kind: String, error: any Error)] = []
        for result in opened {
            switch result {
            case .success(let session): sessions.append(session)
            case .failure(let error): connectErrors.append((Self.errorKind(error), error))
            }
        }
        progress.open.store(sessions.count, ordering: .relaxed)
        progress.errors.store(connectErrors.count, ordering: .relaxed)

        let signals = SignalWatcher()
        let now = monotonicNanoseconds()
        let control = BenchControl(
            runStart: now, measureStart: now + nanoseconds(plan.warmup),
            end: now + nanoseconds(plan.warmup) + nanoseconds(plan.duration))
        if !quiet && !sessions.isEmpty {
            let warmup = plan.warmup > 0 ? "\(format(plan.warmup)) s warmup, then " : ""
            printError(
                "wsc bench: \(sessions.count) open; \(plan.modeDescription); \(warmup)\(format(plan.duration)) s measured"
            )
        }
        let signalTask = Task {
            var first = true
            for await _ in signals.signals {
                if first {
                    first = false
                    control.stopNow()
                    if !quiet {
                        let newline = showProgress ? "\n" : ""  // below the progress line
                        printError("\(newline)wsc bench: interrupted: stopping (Ctrl-C again to quit at once)")
                    }
                } else {
                    printError("wsc bench: interrupted")
                    Glibc.exit(SessionExit.interrupted.rawValue)
                }
            }
        }
        let progressTask: Task<Bool, Never>? =
            showProgress && !sessions.isEmpty
            ? Task {
                await Self.showProgress(progress, control, requested: plan.connections, duration: plan.duration)
            } : nil

        let connections = sessions.enumerated().map { index, session in
            let window: Int
            switch plan.mode {
            case .closedLoop(let inFlight): window = inFlight
            case .openLoop: window = 0
            }
            return BenchConnection(
                session: session, flow: BenchFlow(window: window), index: index, count: sessions.count, plan: plan,
                control: control, progress: progress)
        }
        let timer = Task { await Self.enforceEnd(connections, control: control, drainTimeout: plan.drainTimeout) }
        let results = await withTaskGroup(of: BenchConnectionResult.self) { group in
            for connection in connections {
                group.addTask { await connection.run() }
            }
            var results: [BenchConnectionResult] = []
            for await result in group { results.append(result) }
            return results
        }
        timer.cancel()
        if let progressTask {
            progressTask.cancel()
            if await progressTask.value { printError("") }  // ends the progress line
        }
        signalTask.cancel()
        await client.close()

        let report = BenchReport(
            url: self.url, engine: self.client.engine.rawValue, plan: plan, control: control,
            connectErrors: connectErrors.map(\.kind), results: results)
        Self.printErrors(connectErrors: connectErrors, results: results)
        if self.json {
            printOutput(report.jsonLine())
        } else {
            for line in report.textLines() { printOutput(line) }
        }
        return Self.exitStatus(connectErrors: connectErrors.map(\.error), results: results)
    }

    /// Opens `count` sessions at once; the results in no particular order.
    private static func connectAll(
        _ client: WebSocketClient, url: String, options: ConnectionOptions, count: Int
    ) async -> [Result<WebSocketSession, any Error>] {
        await withTaskGroup(of: Result<WebSocketSession, any Error>.self) { group in
            for _ in 0..<count {
                group.addTask {
                    do {
                        return .success(try await client.webSocketSession(url) { options.apply(to: &$0) })
                    } catch {
                        return .failure(error)
                    }
                }
            }
            var results: [Result<WebSocketSession, any Error>] = []
            for await result in group { results.append(result) }
            return results
        }
    }

    /// Ends sending: in closed loop when the measurement is over (a sender may be waiting for an echo that does
    /// not come); in open loop `drainTimeout` later (a sender behind its schedule still sends the messages that
    /// were due during the measurement until then). A second later, closes the sessions still busy (a send may
    /// wait for a server that stopped reading). Returns early when cancelled.
    private static func enforceEnd(
        _ connections: [BenchConnection], control: BenchControl, drainTimeout: Double
    ) async {
        while case let now = monotonicNanoseconds(), now < control.end {
            let step = Int64(min(control.end - now, 100_000_000))  // at most 100 ms: Ctrl-C moves the end
            guard (try? await Task.sleep(for: .nanoseconds(step))) != nil else { return }
        }
        for connection in connections where connection.flow.window > 0 { connection.flow.finishSending() }
        guard (try? await Task.sleep(for: .nanoseconds(Int64(nanoseconds(drainTimeout))))) != nil else { return }
        for connection in connections where connection.flow.window == 0 { connection.flow.finishSending() }
        guard (try? await Task.sleep(for: .seconds(1))) != nil else { return }
        for connection in connections where !connection.flow.isFinished && !connection.flow.isClosing {
            Task { await connection.session.close() }
        }
    }

    /// Updates the progress line on stderr once a second until cancelled; returns whether it printed one.
    private static func showProgress(
        _ progress: BenchProgress, _ control: BenchControl, requested: Int, duration: Double
    ) async -> Bool {
        var printed = false
        var lastTime = monotonicNanoseconds()
        var lastMessages = 0
        var lastBytes = 0
        while !Task.isCancelled {
            try? await Task.sleep(for: .seconds(1))
            if Task.isCancelled { break }
            let now = monotonicNanoseconds()
            let messages = progress.messages.load(ordering: .relaxed)
            let bytes = progress.bytes.load(ordering: .relaxed)
            let seconds = Double(now - lastTime) / 1e9
            let rate = Double(messages - lastMessages) / seconds
            let throughput = Double(bytes - lastBytes) / seconds / 1e6
            (lastTime, lastMessages, lastBytes) = (now, messages, bytes)
            let phase: String
            if now < control.measureStart {
                phase = "warmup"
            } else if now < control.end {
                phase = "\(format(Double(now - control.measureStart) / 1e9, decimals: 0)) of \(format(duration)) s"
            } else {
                phase = "draining"
            }
            var line = "\rwsc bench: \(progress.open.load(ordering: .relaxed))/\(requested) open, "
            line += "\(Int(rate.rounded())) msg/s, \(format(throughput, decimals: 2)) MB/s, "
            line += "\(progress.errors.load(ordering: .relaxed)) errors (\(phase))\u{1B}[K"
            line.withUTF8 { writeAll(2, UnsafeRawBufferPointer($0)) }
            printed = true
        }
        return printed
    }

    /// The kind of an error, as the report counts it: the SDK's error code, else the type's name.
    static func errorKind(_ error: any Error) -> String {
        if let error = error as? WebSocketError { return error.code.description }
        return String(describing: type(of: error))
    }

    /// Prints the first error of each kind on stderr, with how often it happened.
    private static func printErrors(
        connectErrors: [(kind: String, error: any Error)], results: [BenchConnectionResult]
    ) {
        var seen: [String: (count: Int, first: String)] = [:]
        var order: [String] = []
        func note(_ kind: String, _ text: String, count: Int = 1) {
            if seen[kind] == nil { order.append(kind) }
            seen[kind, default: (0, text)].count += count
        }
        for (kind, error) in connectErrors { note(kind, "cannot connect: \(describe(error))") }
        for result in results {
            for (kind, detail) in result.errorDetails { note(kind, detail, count: result.errors[kind] ?? 1) }
        }
        for kind in order {
            guard let entry = seen[kind] else { continue }
            printError("wsc bench: error: \(kind)\(entry.count > 1 ? " (\(entry.count)×)" : ""): \(entry.first)")
        }
    }

    /// The exit status: 0 clean; else the scheme of `wsc URL` (Docs/CLI.md), 1 for bench-only errors.
    static func exitStatus(connectErrors: [any Error], results: [BenchConnectionResult]) -> Int32 {
        if let error = connectErrors.first {
            return SessionExit.forOpening(error).rawValue
        }
        if let error = results.lazy.compactMap(\.sessionError).first {
            return SessionExit.forSession(error).rawValue
        }
        if let reason = results.lazy.compactMap(\.serverClose).first {
            let status = SessionExit.forClose(reason)
            return status == .clean ? SessionExit.failure.rawValue : status.rawValue
        }
        if results.contains(where: { !$0.errors.isEmpty }) { return SessionExit.failure.rawValue }
        return SessionExit.clean.rawValue
    }
}

// MARK: - The plan and the shared state

/// What to run, fixed before the first connection opens.
struct BenchPlan: Sendable {
    /// Closed or open loop.
    enum Mode: Sendable {
        /// Each connection keeps at most `inFlight` messages unanswered.
        case closedLoop(inFlight: Int)
        /// All connections together send `rate` messages per second on a fixed schedule.
        case openLoop(rate: Double)
    }

    /// How many connections to open.
    let connections: Int
    /// The payload size of each message, in bytes.
    let size: Int
    /// Binary messages rather than text.
    let binary: Bool
    /// Closed or open loop.
    let mode: Mode
    /// The measured time, in seconds.
    let duration: Double
    /// The time before the measurement, in seconds.
    let warmup: Double
    /// How long to wait for echoes after the measurement, in seconds.
    let drainTimeout: Double

    /// `closed loop, 1 in flight per connection, text 32 bytes` or the like.
    var modeDescription: String {
        let payload = "\(self.binary ? "binary" : "text") \(self.size) bytes"
        switch self.mode {
        case .closedLoop(let inFlight): return "closed loop, \(inFlight) in flight per connection, \(payload)"
        case .openLoop(let rate): return "open loop, \(format(rate)) msg/s in total, \(payload)"
        }
    }
}

/// The run's clock: when it started, when the measurement starts and ends (Ctrl-C moves the end forward).
final class BenchControl: Sendable {
    /// When the load started (monotonic nanoseconds).
    let runStart: UInt64
    /// When the measurement (after the warmup) starts.
    let measureStart: UInt64
    private let endTime: Atomic<UInt64>

    /// A clock for a run that starts at `runStart` and measures from `measureStart` to `end`.
    init(runStart: UInt64, measureStart: UInt64, end: UInt64) {
        self.runStart = runStart
        self.measureStart = measureStart
        self.endTime = Atomic(end)
    }

    /// When sending stops: messages (intended to be) sent before it are counted, from ``measureStart`` on.
    var end: UInt64 { self.endTime.load(ordering: .acquiring) }

    /// Ends the measurement now (Ctrl-C).
    func stopNow() {
        let now = monotonicNanoseconds()
        var current = self.endTime.load(ordering: .relaxed)
        while now < current {
            let (exchanged, original) = self.endTime.compareExchange(
                expected: current, desired: now, ordering: .acquiringAndReleasing)
            if exchanged { break }
            current = original
        }
    }

    /// Whether a message sent (or due) at `time` is measured.
    func isMeasured(_ time: UInt64) -> Bool { time >= self.measureStart && time < self.end }
}

/// Live totals across connections for the progress line (warmup included).
final class BenchProgress: Sendable {
    /// Sessions open now.
    let open = Atomic<Int>(0)
    /// Echoes received so far.
    let messages = Atomic<Int>(0)
    /// Payload bytes received so far.
    let bytes = Atomic<Int>(0)
    /// Errors so far (failed connections included).
    let errors = Atomic<Int>(0)
}

/// The payload of bench messages: `size` bytes whose first 8 carry the sequence number (binary: big-endian
/// UInt64; text: the low 32 bits as 8 lower-case hex digits), the rest filler.
struct BenchPayload: Sendable {
    /// The bytes the sequence number takes.
    static let headerSize = 8
    /// Binary or text.
    let kind: Frame.Kind
    /// The filler bytes of every message; ``message(_:)`` puts the header in the first 8.
    let template: [UInt8]

    /// A payload of `size` bytes for binary or text messages.
    init(size: Int, binary: Bool) {
        self.kind = binary ? .binary : .text
        let filler = Array("abcdefghijklmnopqrstuvwxyz0123456789".utf8)
        self.template = (0..<size).map { filler[$0 % filler.count] }
    }

    /// The message numbered `sequence`.
    func message(_ sequence: UInt64) -> [UInt8] {
        var bytes = self.template
        for i in 0..<Self.headerSize { bytes[i] = self.headerByte(i, of: sequence) }
        return bytes
    }

    /// Byte `index` (0..<8) of the header of message `sequence`.
    @inline(__always)
    private func headerByte(_ index: Int, of sequence: UInt64) -> UInt8 {
        if self.kind == .binary { return UInt8(truncatingIfNeeded: sequence >> (56 - 8 * UInt64(index))) }
        let digit = UInt8(truncatingIfNeeded: (sequence >> (28 - 4 * UInt64(index))) & 0xF)
        return digit < 10 ? UInt8(ascii: "0") + digit : UInt8(ascii: "a") + digit - 10
    }

    /// Whether `frame` is the echo of the message numbered `sequence`: same kind, size and header.
    func isEcho(_ frame: Frame, of sequence: UInt64) -> Bool {
        guard frame.kind == self.kind, frame.data.count == self.template.count else { return false }
        for i in 0..<Self.headerSize where frame.data[i] != self.headerByte(i, of: sequence) { return false }
        return true
    }
}

/// One connection's window of unanswered messages, shared by its sending and its receiving task: the count,
/// the send times (closed loop, a ring of `inFlight` entries), the sender waiting for a free slot, and the phase.
final class BenchFlow: Sendable {
    private struct State {
        var outstanding = 0
        var sendTimes: [UInt64]
        var waiter: CheckedContinuation<Bool, Never>?
        /// The receiver ended (failure, server close, unexpected echo): no more sending, nothing to wait for.
        var stopped = false
        /// The measurement is over: no more sending; the echoes in flight are still awaited.
        var sendingFinished = false
        /// The connection is closing on its own (after the drain): a close frame now is the server's answer.
        var closing = false
        /// The connection's task has returned.
        var finished = false
    }

    /// The window (closed loop), or 0: no limit (open loop).
    let window: Int
    private let state: Mutex<State>

    /// A flow that allows `window` unanswered messages, or any number when 0.
    init(window: Int) {
        self.window = window
        self.state = Mutex(State(sendTimes: Array(repeating: 0, count: window)))
    }

    /// Closed loop: waits for a free slot and takes it; `false` once sending is over.
    func acquire() async -> Bool {
        if let now = self.state.withLock({ Self.take(&$0, window: self.window) }) { return now }
        return await withCheckedContinuation { (continuation: CheckedContinuation<Bool, Never>) in
            let now = self.state.withLock { s -> Bool? in
                if let now = Self.take(&s, window: self.window) { return now }
                s.waiter = continuation
                return nil
            }
            if let now { continuation.resume(returning: now) }
        }
    }

    /// Takes a free slot (`true`), or says that sending is over (`false`), or that the sender must wait (`nil`).
    private static func take(_ s: inout State, window: Int) -> Bool? {
        if s.stopped || s.sendingFinished { return false }
        if s.outstanding < window {
            s.outstanding += 1
            return true
        }
        return nil
    }

    /// Closed loop: gives back a slot taken with ``acquire()`` but not used.
    func giveBack() {
        self.state.withLock { $0.outstanding -= 1 }
    }

    /// Notes that message `sequence` goes out at `time` (open loop: counts it as unanswered).
    func willSend(_ sequence: UInt64, at time: UInt64) {
        self.state.withLock { s in
            if self.window > 0 {
                s.sendTimes[Int(sequence % UInt64(self.window))] = time
            } else {
                s.outstanding += 1
            }
        }
    }

    /// Notes the echo of message `sequence`, frees its slot; returns its send time (closed loop) or 0, or `nil`
    /// once the connection is closing (the echo came too late to count).
    func answered(_ sequence: UInt64) -> UInt64? {
        let (time, waiter) = self.state.withLock { s -> (UInt64?, CheckedContinuation<Bool, Never>?) in
            if s.closing { return (nil, nil) }
            let time = self.window > 0 ? s.sendTimes[Int(sequence % UInt64(self.window))] : 0
            if let waiter = s.waiter {
                s.waiter = nil  // the slot goes to the waiting sender
                return (time, waiter)
            }
            s.outstanding -= 1
            return (time, nil)
        }
        waiter?.resume(returning: true)
        return time
    }

    /// The receiver ended: a waiting or later ``acquire()`` returns `false`, the drain is skipped.
    func stop() {
        self.resumeWaiter { $0.stopped = true }
    }

    /// The measurement is over: a waiting or later ``acquire()`` returns `false`.
    func finishSending() {
        self.resumeWaiter { $0.sendingFinished = true }
    }

    private func resumeWaiter(_ change: (inout State) -> Void) {
        let waiter = self.state.withLock { s -> CheckedContinuation<Bool, Never>? in
            change(&s)
            defer { s.waiter = nil }
            return s.waiter
        }
        waiter?.resume(returning: false)
    }

    /// The connection closes on its own now: later echoes are not counted, a close frame is the server's answer.
    /// - Returns: The messages still unanswered, which no echo counts for from now on; `nil` (and nothing
    ///   changes) when the receiver has already ended.
    func beginClosing() -> Int? {
        self.state.withLock { s in
            if s.stopped { return nil }
            s.closing = true
            return s.outstanding
        }
    }

    /// The connection's task has returned.
    func markFinished() { self.state.withLock { $0.finished = true } }

    /// Messages sent and not answered yet.
    var outstanding: Int { self.state.withLock { $0.outstanding } }

    /// Whether the receiver ended (``stop()``).
    var isStopped: Bool { self.state.withLock { $0.stopped } }

    /// Whether more messages may be sent.
    var canSend: Bool { self.state.withLock { !$0.stopped && !$0.sendingFinished } }

    /// Whether ``beginClosing()`` was called.
    var isClosing: Bool { self.state.withLock { $0.closing } }

    /// Whether ``markFinished()`` was called.
    var isFinished: Bool { self.state.withLock { $0.finished } }
}

// MARK: - One connection

/// What one connection did.
struct BenchConnectionResult: Sendable {
    /// Measured messages sent.
    var sent = 0
    /// Echoes of measured messages received.
    var received = 0
    /// Payload bytes of the measured messages sent.
    var bytesSent = 0
    /// Payload bytes of their echoes.
    var bytesReceived = 0
    /// When sending stopped: the end of the measurement, or earlier if the session failed (monotonic nanoseconds).
    var stoppedAt: UInt64 = 0
    /// When the last echo of a measured message arrived (monotonic nanoseconds; 0: none did).
    var lastArrival: UInt64 = 0
    /// Latencies of the measured messages, in nanoseconds.
    var histogram = Histogram<UInt64>(numberOfSignificantValueDigits: .three)
    /// Errors by kind (``BenchCommand/errorKind(_:)``, `unexpectedEcho`, `unanswered`, `notSent`, `serverClosed`,
    /// `closeHandshake`).
    var errors: [String: Int] = [:]
    /// A description of the first error of each kind.
    var errorDetails: [String: String] = [:]
    /// The error that ended the session, if one did.
    var sessionError: (any Error)?
    /// The server's close reason when it closed the session during the run.
    var serverClose: CloseReason?
    /// The SDK's own counters for the session (warmup and close included), read when it ended.
    var statistics = WebSocketSessionStatistics()

    /// Counts an error of `kind` (`count` times) and keeps the first description.
    mutating func note(_ kind: String, _ detail: String, count: Int = 1) {
        self.errors[kind, default: 0] += count
        if self.errorDetails[kind] == nil { self.errorDetails[kind] = detail }
    }
}

/// How the receiving task of a connection ended.
private enum ReceiverEnd: Sendable {
    /// The incoming frames ended after our close.
    case closed
    /// The session failed.
    case failed(any Error)
    /// The server sent a close frame during the run.
    case serverClosed(CloseReason?)
    /// An echo did not match the message expected next (FIFO order).
    case unexpectedEcho(String)
}

/// One connection's load: a sending loop (closed or open loop) and a receiving task that times the echoes.
struct BenchConnection: Sendable {
    /// The open session.
    let session: WebSocketSession
    /// Its window and phase, shared with the run's timer.
    let flow: BenchFlow
    /// This connection's number, 0..<count (spreads the open-loop schedules).
    let index: Int
    /// How many connections run.
    let count: Int
    /// The plan.
    let plan: BenchPlan
    /// The run's clock.
    let control: BenchControl
    /// The live totals.
    let progress: BenchProgress

    /// Runs the load, waits for the echoes in flight, closes with 1000 and returns what happened.
    func run() async -> BenchConnectionResult {
        defer { self.flow.markFinished() }
        let flow = self.flow
        let payload = BenchPayload(size: self.plan.size, binary: self.plan.binary)
        var schedule: OpenLoopSchedule?
        if case .openLoop(let rate) = self.plan.mode {
            // Message n of this connection is due at runStart + offset + n × interval (nanoseconds); the offsets
            // interleave the connections' schedules.
            let interval = Double(self.count) / rate * 1e9
            schedule = OpenLoopSchedule(
                start: self.control.runStart, offset: interval * Double(self.index) / Double(self.count),
                interval: interval)
        }
        async let receiving = self.receive(payload, schedule: schedule)

        var result = BenchConnectionResult()
        var sendError: (any Error)?
        var sequence: UInt64 = 0
        let size = self.plan.size
        if let schedule {
            sending: while true {
                let due = schedule.due(sequence)
                // Sleep until the message is due, at most 100 ms at a time so that Ctrl-C is seen soon.
                while true {
                    guard due < self.control.end, flow.canSend else { break sending }
                    let now = monotonicNanoseconds()
                    if due <= now { break }
                    try? await Task.sleep(for: .nanoseconds(Int64(min(due - now, 100_000_000))), tolerance: .zero)
                }
                flow.willSend(sequence, at: due)
                do {
                    try await self.session.send(Frame(kind: payload.kind, data: payload.message(sequence)))
                } catch {
                    sendError = error
                    break
                }
                if self.control.isMeasured(due) {
                    result.sent += 1
                    result.bytesSent += size
                }
                sequence += 1
            }
            if sendError == nil && !flow.isStopped {
                // Sending fell behind the schedule: the messages due in the measurement and never sent.
                let first = max(sequence, schedule.firstDue(atOrAfter: self.control.measureStart))
                let notSent = schedule.firstDue(atOrAfter: self.control.end).subtractingReportingOverflow(first)
                if !notSent.overflow && notSent.partialValue > 0 {
                    result.note(
                        "notSent",
                        "messages due during the measurement were still unsent --drain-timeout after it: sending fell behind --rate",
                        count: Int(notSent.partialValue))
                }
            }
        } else {
            while await flow.acquire() {
                let now = monotonicNanoseconds()
                if now >= self.control.end {
                    flow.giveBack()
                    break
                }
                flow.willSend(sequence, at: now)
                do {
                    try await self.session.send(Frame(kind: payload.kind, data: payload.message(sequence)))
                } catch {
                    sendError = error
                    break
                }
                if self.control.isMeasured(now) {
                    result.sent += 1
                    result.bytesSent += size
                }
                sequence += 1
            }
        }

        // Sending ended with the measurement, or earlier when the session failed.
        let stoppedEarly = sendError != nil || flow.isStopped
        result.stoppedAt = stoppedEarly ? min(monotonicNanoseconds(), self.control.end) : self.control.end

        // Wait for the echoes in flight (unless the receiver ended), then close with 1000.
        let drainDeadline = self.control.end + nanoseconds(self.plan.drainTimeout)
        while sendError == nil && !flow.isStopped && flow.outstanding > 0 && monotonicNanoseconds() < drainDeadline {
            try? await Task.sleep(for: .milliseconds(1))
        }
        flow.finishSending()
        // After a failed send the session is ending on its own: the receiver sees why (e.g. the server's close).
        let unanswered = sendError == nil ? flow.beginClosing() ?? 0 : 0
        await self.session.close()
        let reason = await self.session.closeReason
        let (end, received) = await receiving
        self.progress.open.subtract(1, ordering: .relaxed)
        result.statistics = self.session.statistics

        result.received = received.count
        result.bytesReceived = received.bytes
        result.histogram = received.histogram
        result.lastArrival = received.lastArrival
        var errors = 0
        switch end {
        case .closed:
            if let sendError {
                result.sessionError = sendError
                result.note(BenchCommand.errorKind(sendError), describe(sendError))
                errors += 1
            } else if reason?.code != .normal {
                let text = reason.map { "\($0)" } ?? "no close reason"
                result.note("closeHandshake", "the close handshake did not end with 1000: \(text)")
                errors += 1
            }
        case .failed(let error):
            result.sessionError = error
            result.note(BenchCommand.errorKind(error), describe(error))
            errors += 1
        case .serverClosed(let reason):
            result.serverClose = reason ?? CloseReason(code: .noStatus)
            let text = reason.map { "\($0)" } ?? "no status code"
            result.note("serverClosed", "the server closed the session during the run: \(text)")
            errors += 1
        case .unexpectedEcho(let detail):
            result.note("unexpectedEcho", detail)
            errors += 1
        }
        if unanswered > 0 {
            result.note(
                "unanswered",
                "no echo within --drain-timeout (\(format(self.plan.drainTimeout)) s) after the measurement",
                count: unanswered)
            errors += unanswered
        }
        errors += result.errors["notSent"] ?? 0
        if errors > 0 { self.progress.errors.add(errors, ordering: .relaxed) }
        return result
    }

    /// What the receiving task counted.
    private struct Received: Sendable {
        var count = 0
        var bytes = 0
        var lastArrival: UInt64 = 0
        var histogram = Histogram<UInt64>(numberOfSignificantValueDigits: .three)
    }

    /// Receives the echoes in order, times the measured ones; ends when the incoming frames end or fail.
    private func receive(_ payload: BenchPayload, schedule: OpenLoopSchedule?) async -> (ReceiverEnd, Received) {
        let flow = self.flow
        var received = Received()
        var expected: UInt64 = 0
        var end = ReceiverEnd.closed
        do {
            for try await frame in self.session.incoming {
                switch frame.kind {
                case .text, .binary:
                    let now = monotonicNanoseconds()
                    guard payload.isEcho(frame, of: expected) else {
                        let head = MessagePrinter.hex(Array(frame.data.prefix(8)))
                        end = .unexpectedEcho(
                            "expected the echo of message \(expected) (\(payload.kind), \(payload.template.count) bytes), "
                                + "got \(frame.kind) of \(frame.data.count) bytes starting \(head)")
                        flow.stop()
                        return (end, received)
                    }
                    let sequence = expected
                    expected += 1
                    guard let sendTime = flow.answered(sequence) else { continue }  // too late: closing
                    let sent = schedule?.due(sequence) ?? sendTime
                    self.progress.messages.add(1, ordering: .relaxed)
                    self.progress.bytes.add(frame.data.count, ordering: .relaxed)
                    if self.control.isMeasured(sent) {
                        received.count += 1
                        received.bytes += frame.data.count
                        received.histogram.record(now > sent ? now - sent : 0)
                        received.lastArrival = now
                    }
                case .close:
                    if !flow.isClosing {
                        end = .serverClosed(frame.readReason())
                        flow.stop()
                    }
                default:
                    break  // pings are answered by the session
                }
            }
        } catch {
            end = .failed(error)
            flow.stop()
        }
        return (end, received)
    }
}

/// The open-loop schedule of one connection: message n is due at `start + offset + n × interval` nanoseconds.
struct OpenLoopSchedule: Sendable {
    /// When the run started (monotonic nanoseconds).
    let start: UInt64
    /// This connection's offset, so that the connections' sends interleave.
    let offset: Double
    /// The time between two messages of this connection, in nanoseconds.
    let interval: Double

    /// When message `sequence` is due.
    func due(_ sequence: UInt64) -> UInt64 {
        self.start + UInt64(self.offset + Double(sequence) * self.interval)
    }

    /// The number of the first message due at or after `time` (= how many are due before it).
    func firstDue(atOrAfter time: UInt64) -> UInt64 {
        guard time > self.start else { return 0 }
        let estimate = (Double(time - self.start) - self.offset) / self.interval
        var sequence = estimate > 0 ? UInt64(estimate.rounded(.up)) : 0
        while sequence > 0 && self.due(sequence - 1) >= time { sequence -= 1 }
        while self.due(sequence) < time { sequence += 1 }
        return sequence
    }
}

// MARK: - The report

/// The final report, as printed with `--json` (keys in Docs/CLI.md) or as text.
struct BenchReport: Encodable, Sendable {
    /// Requested, opened and failed connections.
    struct Connections: Encodable, Sendable {
        /// `--connections`.
        let requested: Int
        /// Connections that opened.
        let ok: Int
        /// Connections that could not be opened.
        let failed: Int
    }

    /// Measured messages, or their payload bytes.
    struct Counts: Encodable, Sendable {
        /// Sent during the measurement.
        let sent: Int
        /// Echoes of those received.
        let received: Int
    }

    /// Latency percentiles in microseconds.
    struct Latency: Encodable, Sendable {
        /// How many latencies were recorded (= messages received).
        let count: Int
        /// The mean.
        let mean: Double
        /// The 50th percentile (median).
        let p50: Double
        /// The 90th percentile.
        let p90: Double
        /// The 99th percentile.
        let p99: Double
        /// The 99.9th percentile.
        let p999: Double
        /// The largest latency.
        let max: Double

        enum CodingKeys: String, CodingKey {
            case count, mean, p50, p90, p99
            case p999 = "p99_9"
            case max
        }
    }

    /// The URL.
    let url: String
    /// `cio` or `curl`.
    let engine: String
    /// `closed` or `open`.
    let mode: String
    /// Closed loop: unanswered messages allowed per connection.
    let inFlight: Int?
    /// Open loop: the total rate asked for.
    let rate: Double?
    /// `text` or `binary`.
    let payload: String
    /// The payload size in bytes.
    let size: Int
    /// The connections.
    let connections: Connections
    /// The measured messages.
    let messages: Counts
    /// Their payload bytes.
    let bytes: Counts
    /// The measured time in seconds: from the end of the warmup until sending stopped (the end of `--duration`,
    /// Ctrl-C, or the failure of every session) or, if later, the last measured echo arrived; 0 without sessions.
    let durationSeconds: Double
    /// The warmup in seconds.
    let warmupSeconds: Double
    /// Echoes received per second.
    let messagesPerSecond: Double
    /// Echoed payload megabytes (10^6 bytes) received per second.
    let megabytesPerSecond: Double
    /// All errors.
    let errorCount: Int
    /// Errors by kind.
    let errors: [String: Int]
    /// The latencies.
    let latencyMicroseconds: Latency
    /// The SDK's own counters (``WebSocketSessionStatistics``), summed over the connections: the whole sessions,
    /// warmup, pings and close frames included, so they are at least the measured counts.
    let sdk: SDKCounters

    /// The SDK's session statistics, summed.
    struct SDKCounters: Encodable, Sendable {
        /// Frames sent and received.
        var framesSent = 0, framesReceived = 0
        /// Text and binary messages sent and received.
        var messagesSent = 0, messagesReceived = 0
        /// Message payload bytes sent and received (before compression and after decompression).
        var messageBytesSent = 0, messageBytesReceived = 0
        /// Bytes on the wire after the handshakes, each way.
        var wireBytesSent = 0, wireBytesReceived = 0

        enum CodingKeys: String, CodingKey {
            case framesSent = "frames_sent"
            case framesReceived = "frames_received"
            case messagesSent = "messages_sent"
            case messagesReceived = "messages_received"
            case messageBytesSent = "message_bytes_sent"
            case messageBytesReceived = "message_bytes_received"
            case wireBytesSent = "wire_bytes_sent"
            case wireBytesReceived = "wire_bytes_received"
        }

        mutating func add(_ statistics: WebSocketSessionStatistics) {
            self.framesSent += statistics.framesSent
            self.framesReceived += statistics.framesReceived
            self.messagesSent += statistics.messagesSent
            self.messagesReceived += statistics.messagesReceived
            self.messageBytesSent += statistics.messageBytesSent
            self.messageBytesReceived += statistics.messageBytesReceived
            self.wireBytesSent += statistics.wireBytesSent
            self.wireBytesReceived += statistics.wireBytesReceived
        }
    }

    enum CodingKeys: String, CodingKey {
        case url, engine, mode
        case inFlight = "in_flight"
        case rate, payload, size, connections, messages, bytes
        case durationSeconds = "duration_s"
        case warmupSeconds = "warmup_s"
        case messagesPerSecond = "msgs_per_sec"
        case megabytesPerSecond = "mb_per_sec"
        case errorCount = "error_count"
        case errors
        case latencyMicroseconds = "latency_us"
        case sdk
    }

    /// Sums up the connections' results.
    init(
        url: String, engine: String, plan: BenchPlan, control: BenchControl, connectErrors: [String],
        results: [BenchConnectionResult]
    ) {
        self.url = url
        self.engine = engine
        switch plan.mode {
        case .closedLoop(let inFlight):
            (self.mode, self.inFlight, self.rate) = ("closed", inFlight, nil)
        case .openLoop(let rate):
            (self.mode, self.inFlight, self.rate) = ("open", nil, rate)
        }
        self.payload = plan.binary ? "binary" : "text"
        self.size = plan.size
        self.connections = Connections(requested: plan.connections, ok: results.count, failed: connectErrors.count)
        var histogram = Histogram<UInt64>(numberOfSignificantValueDigits: .three)
        var errors: [String: Int] = [:]
        for kind in connectErrors { errors[kind, default: 0] += 1 }
        var sdk = SDKCounters()
        for result in results {
            histogram.add(result.histogram)
            errors.merge(result.errors, uniquingKeysWith: +)
            sdk.add(result.statistics)
        }
        self.sdk = sdk
        self.messages = Counts(
            sent: results.reduce(0) { $0 + $1.sent }, received: results.reduce(0) { $0 + $1.received })
        self.bytes = Counts(
            sent: results.reduce(0) { $0 + $1.bytesSent }, received: results.reduce(0) { $0 + $1.bytesReceived })
        // From the end of the warmup until sending stopped or, if later, the last measured echo arrived.
        let end = results.map { max($0.stoppedAt, $0.lastArrival) }.max() ?? 0
        let duration = end > control.measureStart ? Double(end - control.measureStart) / 1e9 : 0
        self.durationSeconds = rounded(duration, 3)
        self.warmupSeconds = plan.warmup
        self.messagesPerSecond = duration > 0 ? rounded(Double(self.messages.received) / duration, 1) : 0
        self.megabytesPerSecond = duration > 0 ? rounded(Double(self.bytes.received) / duration / 1e6, 3) : 0
        self.errors = errors
        self.errorCount = errors.values.reduce(0, +)
        let microseconds = { (nanoseconds: UInt64) in rounded(Double(nanoseconds) / 1000, 1) }
        let count = Int(histogram.totalCount)
        self.latencyMicroseconds = Latency(
            count: count,
            mean: count > 0 ? rounded(histogram.mean / 1000, 1) : 0,
            p50: count > 0 ? microseconds(histogram.valueAtPercentile(50)) : 0,
            p90: count > 0 ? microseconds(histogram.valueAtPercentile(90)) : 0,
            p99: count > 0 ? microseconds(histogram.valueAtPercentile(99)) : 0,
            p999: count > 0 ? microseconds(histogram.valueAtPercentile(99.9)) : 0,
            max: count > 0 ? microseconds(histogram.maxRecorded) : 0)
    }

    /// The report as one line of JSON, keys sorted.
    func jsonLine() -> String {
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.sortedKeys, .withoutEscapingSlashes]
        guard let data = try? encoder.encode(self) else { return "{}" }
        return String(decoding: data, as: UTF8.self)
    }

    /// The report as aligned text lines.
    func textLines() -> [String] {
        let setup: String
        switch self.mode {
        case "open": setup = "open loop, \(format(self.rate ?? 0)) msg/s in total"
        default: setup = "closed loop, \(self.inFlight ?? 1) in flight per connection"
        }
        let latency = self.latencyMicroseconds
        let warmup = self.warmupSeconds > 0 ? " (after \(format(self.warmupSeconds)) s warmup)" : ""
        let errorText =
            self.errors.isEmpty
            ? "none" : self.errors.sorted { $0.key < $1.key }.map { "\($0.key) \($0.value)" }.joined(separator: ", ")
        var lines = [
            "wsc bench \(self.url) (engine \(self.engine), \(setup), \(self.payload) \(self.size) bytes)",
            "  connections  \(self.connections.ok) ok, \(self.connections.failed) failed",
            "  messages     \(self.messages.sent) sent, \(self.messages.received) received",
            "  duration     \(format(self.durationSeconds)) s\(warmup)",
            "  throughput   \(format(self.messagesPerSecond)) msg/s, \(format(self.megabytesPerSecond, decimals: 3)) MB/s",
            "  errors       \(errorText)",
        ]
        if latency.count > 0 {
            lines.append(
                "  latency µs   p50 \(format(latency.p50))  p90 \(format(latency.p90))  p99 \(format(latency.p99))  "
                    + "p99.9 \(format(latency.p999))  max \(format(latency.max))  (mean \(format(latency.mean)))"
            )
        } else {
            lines.append("  latency µs   no echo measured")
        }
        let sdk = self.sdk
        lines.append(
            "  SDK counters frames \(sdk.framesSent) sent, \(sdk.framesReceived) received; messages \(sdk.messagesSent) sent, "
                + "\(sdk.messagesReceived) received; wire bytes \(sdk.wireBytesSent) sent, \(sdk.wireBytesReceived) received"
        )
        return lines
    }
}

// MARK: - Helpers

/// Nanoseconds on the monotonic clock.
func monotonicNanoseconds() -> UInt64 {
    var time = timespec()
    clock_gettime(CLOCK_MONOTONIC, &time)
    return UInt64(time.tv_sec) * 1_000_000_000 + UInt64(time.tv_nsec)
}

/// `seconds` in nanoseconds.
private func nanoseconds(_ seconds: Double) -> UInt64 {
    UInt64((seconds * 1e9).rounded())
}

/// `value` rounded to `decimals` decimal places.
private func rounded(_ value: Double, _ decimals: Int) -> Double {
    let scale = Foundation.pow(10.0, Double(decimals))
    return (value * scale).rounded() / scale
}

/// `value` with at most `decimals` decimal places, without trailing zeros (`2`, `2.5`, `0.125`).
private func format(_ value: Double, decimals: Int = 1) -> String {
    var text = String(format: "%.\(decimals)f", value)
    if text.contains(".") {
        while text.hasSuffix("0") { text.removeLast() }
        if text.hasSuffix(".") { text.removeLast() }
    }
    return text
}
