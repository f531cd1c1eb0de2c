// wsbench-wsclient: the hummingbird-project/swift-websocket (WSClient) driver, exec'd by `wsbench --client
// wsclient` with the same arguments. An executable of its own: that package has a module named WSCore, like our
// SDK, so it is built in a package of its own (Benchmarks/WSClientBench) and never next to ours.
#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#endif
import BenchSupport
import Logging
import NIOCore
import Synchronization
import WSClient

// MARK: - hummingbird-project/swift-websocket (WSClient)

func runWSClient(_ p: Params) async throws -> Outcome {
    let logger = {
        var logger = Logger(label: "wsbench.wsclient")
        logger.logLevel = .error
        return logger
    }()
    let config = WebSocketClientConfiguration(maxFrameSize: 1 << 20)
    switch p.workload {
    case .idle:
        throw BenchError(description: "the idle workload is measured for our SDK only")
    case .w1:
        let box = ResultBox()
        try await WSClient.WebSocketClient.connect(url: p.url, configuration: config, logger: logger) {
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
        return try box.get()
    case .w2, .w3:
        let (count, size, window) = streamShape(p)
        let box = ResultBox()
        try await WSClient.WebSocketClient.connect(url: p.url, configuration: config, logger: logger) {
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
        return try box.get()
    case .w4:
        let start = clock.now
        try await withThrowingTaskGroup(of: Void.self) { group in
            for _ in 0..<p.connections {
                group.addTask {
                    try await WSClient.WebSocketClient.connect(url: p.url, configuration: config, logger: logger) {
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
        return Outcome(value: Double(p.connections) / seconds(elapsed), unit: "conn/s", seconds: seconds(elapsed))
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
    printOutcome(p, try await runWSClient(p))
    exit(0)
} catch {
    let message = "wsbench-wsclient: error: \(error)\n"
    _ = message.withCString { write(2, $0, strlen($0)) }
    exit(1)
}
