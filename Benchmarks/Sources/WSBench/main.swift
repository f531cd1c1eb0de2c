import BenchSupport
import NIOCore
import NIOPosix
import NIOSSL
import WebSocketKit

// wsbench: runs one workload of issue 7 with one client and prints one JSON line.
//
//   wsbench --client ours-cio|ours-curl|ours-cio-pool|ours-curl-pool|websocket-kit|wsclient --workload w1|w2|w3|w4|w5
//           --url ws://127.0.0.1:PORT/ [--w3-mib N] [--connections N]
//           [--w5-size BYTES] [--w5-count N | --w5-mib N] [--w5-window N] [--w5-nct 0|1]
//
// W5 (permessage-deflate) runs with our SDK (`ours-*`, and `ours-cio+nodeflate` as the uncompressed reference) and
// WSClient (its WSCompression product); websocket-kit 2.16.2 has no permessage-deflate (neither it nor NIOWebSocket
// implements any extension), so it refuses W5.
//
// Each client is driven through its idiomatic public API: our SDK and WSClient with async/await in one task,
// websocket-kit with its callbacks on its event loop. The peers' 16 KiB frame limit is raised to 1 MiB.
// Over wss:// websocket-kit uses NIOSSL as its users configure it: a TLSConfiguration in its client configuration
// that trusts the PEM file named by WSBENCH_CA_FILE (the run's self-signed certificate), full verification.
#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#endif

// MARK: - vapor/websocket-kit (callbacks on its event loop)

/// Per-connection driver state; touched only on the connection's event loop.
final class KitDriver: @unchecked Sendable {
    let p: Params
    let done: EventLoopPromise<Outcome>
    var sent = 0
    var received = 0
    var lat: [Double] = []
    var start = clock.now
    var t0 = clock.now
    let text = String(repeating: "a", count: 32)
    let payload: [UInt8]
    let shape: (count: Int, size: Int, window: Int)

    init(_ p: Params, done: EventLoopPromise<Outcome>) {
        self.p = p
        self.done = done
        self.shape = p.workload == .w1 ? (0, 0, 0) : streamShape(p)
        self.payload = [UInt8](repeating: 0x5A, count: self.shape.size)
        self.lat.reserveCapacity(p.w1Count)
    }

    func finish(_ ws: WebSocket, _ outcome: Outcome) {
        ws.close(code: .normalClosure).flatMap { ws.onClose }.whenComplete { _ in self.done.succeed(outcome) }
    }

    func startW1(_ ws: WebSocket) {
        ws.onText { ws, _ in
            let now = clock.now
            if self.sent > self.p.w1Warmup { self.lat.append(micros(now - self.t0)) }
            if self.sent == self.p.w1Warmup { self.start = now }
            if self.sent == self.p.w1Warmup + self.p.w1Count {
                self.finish(ws, pingPongOutcome(self.lat, now - self.start))
                return
            }
            self.sendText(ws)
        }
        sendText(ws)
    }

    private func sendText(_ ws: WebSocket) {
        t0 = clock.now
        sent += 1
        ws.send(text)
    }

    func startStream(_ ws: WebSocket) {
        ws.onBinary { ws, _ in
            self.received += 1
            if self.received == self.shape.count {
                self.finish(
                    ws, streamOutcome(self.p, count: self.shape.count, size: self.shape.size, clock.now - self.start))
                return
            }
            self.pump(ws)
        }
        start = clock.now
        pump(ws)
    }

    private func pump(_ ws: WebSocket) {
        while sent < shape.count && sent - received < shape.window {
            ws.send(payload)
            sent += 1
        }
    }
}

/// The TLS configuration for wss://: NIOSSL's client defaults (full certificate and hostname verification), trusting
/// the PEM file named by `WSBENCH_CA_FILE` instead of the system store when it is set.
func kitTLSConfiguration() -> TLSConfiguration {
    var tls = TLSConfiguration.makeClientConfiguration()
    if let ca = getenv("WSBENCH_CA_FILE"), ca.pointee != 0 { tls.trustRoots = .file(String(cString: ca)) }
    return tls
}

func runWebSocketKit(_ p: Params) async throws -> Outcome {
    let group = MultiThreadedEventLoopGroup.singleton
    let config = WebSocketKit.WebSocketClient.Configuration(
        tlsConfiguration: p.url.hasPrefix("wss://") ? kitTLSConfiguration() : nil,
        maxFrameSize: 1 << 20
    )
    switch p.workload {
    case .idle:
        throw BenchError(description: "the idle workload is measured for our SDK only")
    case .w5:
        throw BenchError(description: "websocket-kit 2.16.2 does not support permessage-deflate (W5)")
    case .w1, .w2, .w3:
        let loop = group.next()
        let done = loop.makePromise(of: Outcome.self)
        let driver = KitDriver(p, done: done)
        let workload = p.workload
        try await WebSocket.connect(to: p.url, configuration: config, on: loop) { ws in
            if workload == .w1 { driver.startW1(ws) } else { driver.startStream(ws) }
        }.get()
        return try await done.futureResult.get()
    case .w4:
        let start = clock.now
        var futures: [EventLoopFuture<Void>] = []
        for _ in 0..<p.connections {
            let loop = group.next()
            let closed = loop.makePromise(of: Void.self)
            let connected = WebSocket.connect(to: p.url, configuration: config, on: loop) { ws in
                ws.onText { ws, _ in
                    ws.close(code: .normalClosure).flatMap { ws.onClose }.cascade(to: closed)
                }
                ws.send(String(repeating: "b", count: 32))
            }
            connected.whenFailure { closed.fail($0) }
            futures.append(closed.futureResult)
        }
        for f in futures { try await f.get() }
        let elapsed = clock.now - start
        return Outcome(value: Double(p.connections) / seconds(elapsed), unit: "conn/s", seconds: seconds(elapsed))
    }
}

// MARK: - Main

do {
    raiseFileLimit()
    let p = try parseArguments()
    let outcome: Outcome
    switch p.client {
    case "websocket-kit": outcome = try await runWebSocketKit(p)
    case let client where client == "wsclient" || client.hasPrefix("ours-"):
        // Linked into executables of their own (our SDK alone, for its RSS; WSClient for a module-name clash,
        // see Package.swift): exec it with our arguments.
        let exe = String(unsafeUninitializedCapacity: 4096) { buf in
            buf.withMemoryRebound(to: CChar.self) { max(0, readlink("/proc/self/exe", $0.baseAddress!, 4095)) }
        }
        let dir = exe.split(separator: "/", omittingEmptySubsequences: false).dropLast().joined(separator: "/")
        let driver =
            client == "wsclient"
            ? "wsbench-wsclient" : client.hasPrefix("ours-curl") ? "wsbench-ours-curl" : "wsbench-ours-cio"
        let path = dir + "/" + driver
        var argv: [UnsafeMutablePointer<CChar>?] = [strdup(path)]
        for a in CommandLine.arguments.dropFirst() { argv.append(strdup(a)) }
        argv.append(nil)
        execv(path, &argv)
        throw BenchError(description: "cannot exec \(path)")
    default: throw BenchError(description: "unknown client \(p.client)")
    }
    printOutcome(p, outcome)
    exit(0)
} catch {
    let message = "wsbench: error: \(error)\n"
    _ = message.withCString { write(2, $0, strlen($0)) }
    exit(1)
}
