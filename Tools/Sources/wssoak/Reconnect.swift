// wssoak reconnect: reconnecting sessions while scripts/soak.sh kills and restarts the echo server on its port.
//
//   wssoak reconnect URL [--minutes M] [--engine cio|curl] [--workers W] [--sample-seconds S] [--warmup-seconds S]
//                        [--size BYTES]
//       W reconnecting sessions (backoff 50 ms to 1 s, full jitter) each send a binary message and wait up to 3 s
//       for its echo, over and over, for M minutes, while the server goes away and comes back. A message whose
//       connection died before the echo came is counted as lost (at most once: allowed); a session that ends for
//       good, an echo that does not match, or a send that fails otherwise is a failure. Samples the RSS every S
//       seconds; fails (exit 1) on a failure, when no reconnection happened, or when the RSS keeps growing (the
//       rule of `loop`: the last sample above 1.2 × the first after the warm-up + 5 MiB).
import Synchronization
import WSCore

/// Counters shared by the reconnect workers.
final class ReconnectCounters: Sendable {
    let echoes = Atomic<Int>(0)
    let lost = Atomic<Int>(0)
    let queueFull = Atomic<Int>(0)
    let reconnections = Atomic<Int>(0)
    let failures = Atomic<Int>(0)
    let firstFailure = Mutex<String?>(nil)
    let stop = Atomic<Bool>(false)

    func fail(_ message: String) {
        self.failures.add(1, ordering: .relaxed)
        self.firstFailure.withLock { $0 = $0 ?? message }
    }
}

/// One worker's receive deadline, watched by a single timer task per worker.
///
/// Racing every receive against its own `Task.sleep` (a task group of two) made the soak measure Swift's sleeps,
/// not the SDK: a cancelled `Task.sleep` keeps its timer job queued until the deadline, so at ≈ 6,000 echoes/s per
/// worker a 3 s timeout held ≈ 70,000 sleeping jobs (tens of MiB) at any time.
final class ReceiveWatchdog: Sendable {
    private let pending = Mutex<(task: Task<WebSocketMessage, any Error>, deadline: Double)?>(nil)
    private let fired = Atomic<Bool>(false)

    /// The next message, or `nil` when `timeout` seconds passed first (the receive is cancelled then).
    func receive(_ session: ReconnectingWebSocketSession, within timeout: Double) async throws -> WebSocketMessage? {
        let task = Task { try await session.receiveMessage() }
        self.fired.store(false, ordering: .relaxed)
        self.pending.withLock { $0 = (task, monotonicSeconds() + timeout) }
        let result = await task.result
        self.pending.withLock { $0 = nil }
        switch result {
        case .success(let message): return message
        case .failure(let error):
            if error is CancellationError, self.fired.load(ordering: .relaxed) { return nil }
            throw error
        }
    }

    /// Cancels the pending receive once its deadline has passed; call it periodically.
    func check() {
        self.pending.withLock { pending in
            guard let current = pending, monotonicSeconds() >= current.deadline else { return }
            self.fired.store(true, ordering: .relaxed)
            current.task.cancel()
            pending = nil
        }
    }
}

func runReconnect(url: String, options: Options) async -> Int32 {
    let minutes = options.double("minutes", 10)
    let engine = options.string("engine", "cio")
    let workers = max(1, options.int("workers", 4))
    let sampleSeconds = max(1, options.double("sample-seconds", 30))
    let duration = minutes * 60
    let warmup = options.double("warmup-seconds", min(120, duration / 4))
    let size = max(8, options.int("size", 256))
    say(
        "reconnect: engine=\(engine) \(format(minutes, decimals: 1)) min, \(workers) reconnecting sessions, "
            + "\(size)-byte messages, RSS sample every \(format(sampleSeconds, decimals: 0)) s, warm-up "
            + "\(format(warmup, decimals: 0)) s")
    let counters = ReconnectCounters()
    let client = makeClient(engine: engine, timeout: .seconds(5))
    let configuration = {
        var configuration = ReconnectingWebSocketSession.Configuration()
        configuration.policy.initialDelay = .milliseconds(50)
        configuration.policy.maximumDelay = .seconds(1)
        configuration.pingInterval = .seconds(5)
        return configuration
    }()
    let start = monotonicSeconds()
    let end = start + duration

    let workerTasks = (0..<workers).map { worker in
        Task {
            let session: ReconnectingWebSocketSession
            do {
                session = try client.reconnectingWebSocketSession(url, configuration: configuration)
            } catch {
                counters.fail("cannot open: \(describe(error))")
                return
            }
            let watcher = Task {
                for await state in session.states where state.isOpen {
                    counters.reconnections.add(1, ordering: .relaxed)
                }
            }
            let watchdog = ReceiveWatchdog()
            let timer = Task {
                while !Task.isCancelled {
                    try? await Task.sleep(for: .milliseconds(250))
                    watchdog.check()
                }
            }
            var sequence = worker << 40
            while !counters.stop.load(ordering: .relaxed) && monotonicSeconds() < end {
                sequence += 1
                let bytes = payload(sequence, size: size)
                do {
                    try await session.send(bytes)
                } catch let error as WebSocketError where error.code == .sendQueueFull {
                    counters.queueFull.add(1, ordering: .relaxed)
                    try? await Task.sleep(for: .milliseconds(100))
                    continue
                } catch {
                    counters.fail("send: \(describe(error))")
                    break
                }
                do {
                    while true {
                        guard let message = try await watchdog.receive(session, within: 3) else {
                            counters.lost.add(1, ordering: .relaxed)
                            break
                        }
                        guard case .binary(let echoed) = message else {
                            counters.fail("a text message came back")
                            break
                        }
                        if echoed == bytes {
                            counters.echoes.add(1, ordering: .relaxed)
                            break
                        }
                        // The late echo of a message counted as lost: skip it.
                    }
                } catch {
                    counters.fail("receive: \(describe(error))")
                    break
                }
            }
            timer.cancel()
            await timer.value
            await session.close()
            await watcher.value
            if case .closed(let cause) = session.state, case .closedByClient = cause {
            } else {
                counters.fail("the session did not end by close(): \(session.state)")
            }
        }
    }

    var samples: [(seconds: Double, rss: Int, echoes: Int)] = []
    func sample() {
        let now = monotonicSeconds()
        let rss = residentBytes()
        let echoes = counters.echoes.load(ordering: .relaxed)
        samples.append((now - start, rss, echoes))
        say(
            "sample t=\(format(now - start, decimals: 0))s rss=\(mib(rss))MiB echoes=\(echoes) "
                + "lost=\(counters.lost.load(ordering: .relaxed)) "
                + "opens=\(counters.reconnections.load(ordering: .relaxed)) "
                + "failures=\(counters.failures.load(ordering: .relaxed))")
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
    await client.close()
    try? await Task.sleep(for: .milliseconds(500))
    sample()

    let running = samples.dropLast()
    let baseline = running.first { $0.seconds >= warmup - 0.5 } ?? running.first!
    let last = running.last!
    let limit = Int(Double(baseline.rss) * 1.2) + 5 * 1_048_576
    let peak = running.map(\.rss).max() ?? 0
    let echoes = counters.echoes.load(ordering: .relaxed)
    let failures = counters.failures.load(ordering: .relaxed)
    // Each session's first open is not a reconnection.
    let reconnections = max(0, counters.reconnections.load(ordering: .relaxed) - workers)
    let grew = last.rss > limit
    say(
        "reconnect: \(echoes) echoes, \(counters.lost.load(ordering: .relaxed)) lost with their connection, "
            + "\(counters.queueFull.load(ordering: .relaxed)) refused by a full queue, \(reconnections) reconnections, "
            + "\(failures) failures" + (counters.firstFailure.withLock { $0 }.map { " (first: \($0))" } ?? ""))
    say(
        "reconnect: RSS after warm-up \(mib(baseline.rss)) MiB (t=\(format(baseline.seconds, decimals: 0)) s), last "
            + "\(mib(last.rss)) MiB, peak \(mib(peak)) MiB, limit \(mib(limit)) MiB, after closing "
            + "\(mib(samples.last!.rss)) MiB: \(grew ? "GROWING" : "flat")")
    let ok = !grew && failures == 0 && echoes > 0 && reconnections > 0
    say(
        "RESULT mode=reconnect engine=\(engine) minutes=\(format(minutes, decimals: 1)) echoes=\(echoes) "
            + "lost=\(counters.lost.load(ordering: .relaxed)) reconnections=\(reconnections) failures=\(failures) "
            + "rss_warm_mib=\(mib(baseline.rss)) rss_last_mib=\(mib(last.rss)) rss_peak_mib=\(mib(peak)) "
            + "rss_limit_mib=\(mib(limit)) rss_idle_mib=\(mib(samples.last!.rss)) "
            + "samples=\(running.map { mib($0.rss) }.joined(separator: ",")) status=\(ok ? "PASS" : "FAIL")")
    return ok ? 0 : 1
}
