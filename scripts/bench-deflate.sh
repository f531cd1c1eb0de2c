#!/usr/bin/env bash
# Measures permessage-deflate (WSExtensions) in release mode: the extension's compress + decompress round trip
# against raw zlib on the same messages, and echo throughput through a session against the Python websockets
# server with and without compression. Figures go to stdout (recorded in Docs/Extensions.md).
#
#   bash scripts/bench-deflate.sh            # needs the .venv from scripts/setup.sh for the echo part
#
# It builds a throwaway package in a temporary directory that depends on this repository by path (no benchmark
# product lives in the main package), with its build directory in .build-bench (reused between runs).
# Environment: BENCH_ECHO=0 skips the echo part; BENCH_SCALE=N multiplies the message counts (default 1).
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
if ! command -v swift >/dev/null 2>&1 && [ -x /opt/swift/usr/bin/swift ]; then export PATH="/opt/swift/usr/bin:$PATH"; fi
WORK="$(mktemp -d /tmp/ws-bench-deflate.XXXXXX)"
trap 'rm -rf "$WORK"' EXIT

mkdir -p "$WORK/Sources/bench-deflate" "$WORK/Sources/CBenchZlib"
cat >"$WORK/Package.swift" <<SWIFT
// swift-tools-version: 6.1
import PackageDescription

let package = Package(
    name: "ws-bench-deflate",
    platforms: [.macOS(.v15)],
    dependencies: [.package(name: "swift-websocket-client", path: "$ROOT")],
    targets: [
        .systemLibrary(name: "CBenchZlib"),
        .executableTarget(
            name: "bench-deflate",
            dependencies: [
                "CBenchZlib",
                .product(name: "WSCore", package: "swift-websocket-client"),
                .product(name: "WSEngineCIO", package: "swift-websocket-client"),
                .product(name: "WSExtensions", package: "swift-websocket-client"),
            ],
            swiftSettings: [.swiftLanguageMode(.v6)]
        ),
    ]
)
SWIFT
[ -f "$ROOT/Package.resolved" ] && cp "$ROOT/Package.resolved" "$WORK/Package.resolved"

cat >"$WORK/Sources/CBenchZlib/module.modulemap" <<'MAP'
module CBenchZlib [system] {
    header "shim.h"
    link "z"
    export *
}
MAP
cat >"$WORK/Sources/CBenchZlib/shim.h" <<'C'
#include <zlib.h>
static inline int bench_deflateInit2(z_streamp s, int level, int bits, int mem) {
    return deflateInit2(s, level, Z_DEFLATED, bits, mem, Z_DEFAULT_STRATEGY);
}
static inline int bench_inflateInit2(z_streamp s, int bits) { return inflateInit2(s, bits); }
C

cat >"$WORK/Sources/bench-deflate/main.swift" <<'SWIFT'
import CBenchZlib
import Foundation
import WSCore
import WSEngineCIO
import WSExtensions

let scale = Int(ProcessInfo.processInfo.environment["BENCH_SCALE"] ?? "1") ?? 1

// MARK: data

/// JSON-like events: similar structure, varying values (what chat and feed traffic looks like).
func jsonMessages(_ count: Int) -> [[UInt8]] {
    let users = ["alice", "bob", "carol", "dave", "erin", "frank"]
    let words = ["market", "update", "price", "volume", "order", "filled", "cancelled", "pending", "EUR", "USD"]
    var state: UInt64 = 42
    func next() -> Int {
        state = state &* 6_364_136_223_846_793_005 &+ 1_442_695_040_888_963_407
        return Int(state >> 33)
    }
    return (0..<count).map { i in
        var items: [String] = []
        for _ in 0..<(8 + next() % 8) {
            items.append("{\"sym\":\"\(words[next() % words.count])\",\"px\":\(next() % 100_000),\"qty\":\(next() % 5000)}")
        }
        let text = "{\"seq\":\(i),\"user\":\"\(users[next() % users.count])\",\"type\":\"\(words[next() % words.count])\",\"items\":[\(items.joined(separator: ","))]}"
        return Array(text.utf8)
    }
}

/// 64 KiB of log-like text per message.
func logMessages(_ count: Int) -> [[UInt8]] {
    let json = jsonMessages(64)
    return (0..<count).map { i in
        var out: [UInt8] = []
        var j = i
        while out.count < 65_536 {
            out += Array("2026-11-27T03:\(10 + j % 50):\(10 + j % 49) INFO request id=\(j * 7919 % 100_003) ".utf8)
            out += json[j % json.count]
            out.append(0x0A)
            j += 1
        }
        return Array(out.prefix(65_536))
    }
}

/// 64 KiB of random bytes per message (already-compressed data).
func randomMessages(_ count: Int) -> [[UInt8]] {
    var state: UInt64 = 7
    return (0..<count).map { _ in
        (0..<65_536).map { _ in
            state = state &* 6_364_136_223_846_793_005 &+ 1_442_695_040_888_963_407
            return UInt8(truncatingIfNeeded: state >> 56)
        }
    }
}

// MARK: raw zlib

/// Raw deflate with a sync flush per message, then raw inflate: the C baseline for one round trip.
func rawZlibRoundTrip(_ messages: [[UInt8]], level: Int32) -> (seconds: Double, compressed: Int) {
    let d = UnsafeMutablePointer<z_stream>.allocate(capacity: 1)
    let i = UnsafeMutablePointer<z_stream>.allocate(capacity: 1)
    d.initialize(to: z_stream())
    i.initialize(to: z_stream())
    precondition(bench_deflateInit2(d, level, -15, 8) == Z_OK && bench_inflateInit2(i, -15) == Z_OK)
    defer {
        deflateEnd(d); inflateEnd(i); d.deallocate(); i.deallocate()
    }
    var compressedTotal = 0
    var out = [UInt8](repeating: 0, count: 1 << 20)
    var back = [UInt8](repeating: 0, count: 1 << 20)
    let start = ContinuousClock.now
    for message in messages {
        var message = message
        let produced = message.withUnsafeMutableBufferPointer { src in
            out.withUnsafeMutableBufferPointer { dst in
                d.pointee.next_in = src.baseAddress; d.pointee.avail_in = uInt(src.count)
                d.pointee.next_out = dst.baseAddress; d.pointee.avail_out = uInt(dst.count)
                _ = deflate(d, Z_SYNC_FLUSH)
                return dst.count - Int(d.pointee.avail_out)
            }
        }
        compressedTotal += produced - 4
        let inflated = out.withUnsafeMutableBufferPointer { src in
            back.withUnsafeMutableBufferPointer { dst in
                i.pointee.next_in = src.baseAddress; i.pointee.avail_in = uInt(produced)
                i.pointee.next_out = dst.baseAddress; i.pointee.avail_out = uInt(dst.count)
                _ = inflate(i, Z_SYNC_FLUSH)
                return dst.count - Int(i.pointee.avail_out)
            }
        }
        precondition(inflated == message.count)
    }
    return (elapsed(since: start), compressedTotal)
}

func elapsed(since start: ContinuousClock.Instant) -> Double {
    let d = ContinuousClock.now - start
    return Double(d.components.seconds) + Double(d.components.attoseconds) / 1e18
}

// MARK: the extension

/// processOutgoing (compress, RSV1) then processIncoming (inflate) through the negotiated extension.
func extensionRoundTrip(_ messages: [[UInt8]], level: Int) throws -> (seconds: Double, compressed: Int) {
    let factory = try PerMessageDeflate(.init(compressionLevel: level, compressionThreshold: 0))
    let ext = try factory.negotiate(response: WebSocketExtensionHeader(name: "permessage-deflate"))
    let context = WebSocketExtensionContext(maxMessageSize: 64 << 20)
    let frames = messages.map { Frame(kind: .binary, data: $0) }
    var compressedTotal = 0
    let start = ContinuousClock.now
    for frame in frames {
        let sent = try ext.processOutgoing(frame, context: context)
        compressedTotal += sent.data.count
        let received = try ext.processIncoming(sent, context: context)
        precondition(received.data.count == frame.data.count)
    }
    return (elapsed(since: start), compressedTotal)
}

func mb(_ bytes: Int, _ seconds: Double) -> String { String(format: "%7.1f MB/s", Double(bytes) / seconds / 1e6) }

let sets: [(String, [[UInt8]])] = [
    ("json ~1 KiB x \(4000 * scale)", jsonMessages(4000 * scale)),
    ("log text 64 KiB x \(200 * scale)", logMessages(200 * scale)),
    ("random 64 KiB x \(100 * scale)", randomMessages(100 * scale)),
]

print("== compress + decompress round trip, context takeover, window 15, memLevel 8 (MB/s of uncompressed data, best of 3)")
print("data set                     level  raw zlib      extension     ext/raw  ratio")
for (name, messages) in sets {
    let bytes = messages.reduce(0) { $0 + $1.count }
    for level in [1, 6, 9] {
        // Best of three runs each, interleaved: the machine may be shared.
        var raw = rawZlibRoundTrip(messages, level: Int32(level))
        var ext = try extensionRoundTrip(messages, level: level)
        for _ in 0..<2 {
            let r = rawZlibRoundTrip(messages, level: Int32(level))
            if r.seconds < raw.seconds { raw = r }
            let e = try extensionRoundTrip(messages, level: level)
            if e.seconds < ext.seconds { ext = e }
        }
        print(
            name.padding(toLength: 28, withPad: " ", startingAt: 0),
            String(format: "%5d", level), mb(bytes, raw.seconds), mb(bytes, ext.seconds),
            String(format: "%6.0f%%", raw.seconds / ext.seconds * 100),
            String(format: "%6.1f%%", Double(ext.compressed) / Double(bytes) * 100))
    }
}

// MARK: echo through a session

if ProcessInfo.processInfo.environment["BENCH_ECHO"] != "0", let url = CommandLine.arguments.dropFirst().first {
    print("")
    print("== echo through a session (CIO engine) against Python websockets on loopback, one message in flight")
    print("data set                     deflate  msgs/s     MB/s (each way)")
    for (name, messages) in sets {
        let subset = Array(messages.prefix(name.hasPrefix("json") ? 2000 : 100))
        let bytes = subset.reduce(0) { $0 + $1.count }
        for deflate in [false, true] {
            let client = try WebSocketClient(engine: CIOEngine()) { config in
                try config.install(WebSockets.self) { ws in
                    ws.maxMessageSize = 16 << 20
                    ws.maxFrameSize = 16 << 20
                    if deflate { try ws.extensions { try $0.install(.perMessageDeflate()) } }
                }
            }
            let seconds = try await client.webSocket(url) { session in
                precondition(session.extensions.isEmpty != deflate)
                let start = ContinuousClock.now
                for message in subset {
                    try await session.send(Frame(kind: .binary, data: message))
                    var reply = try await session.incoming.receive()
                    while reply.kind != .binary { reply = try await session.incoming.receive() }
                    precondition(reply.data.count == message.count)
                }
                return elapsed(since: start)
            }
            await client.close()
            print(
                name.padding(toLength: 28, withPad: " ", startingAt: 0), deflate ? "  yes  " : "  no   ",
                String(format: "%8.0f", Double(subset.count) / seconds), String(format: "%9.1f", Double(bytes) / seconds / 1e6))
        }
    }
}
SWIFT

echo "bench-deflate: building (release) in $ROOT/.build-bench ..."
(cd "$WORK" && swift build -c release --scratch-path "$ROOT/.build-bench" 2>&1 | grep -E "error|warning: |Compiling bench|Build complete" || true)
BIN="$ROOT/.build-bench/release/bench-deflate"
[ -x "$BIN" ] || { echo "bench-deflate: build failed" >&2; exit 1; }

echo "bench-deflate: $(uname -m), $(nproc) cores, zlib $(python3 -c 'import zlib; print(zlib.ZLIB_RUNTIME_VERSION)' 2>/dev/null || echo '?'), $(swift --version 2>&1 | head -1)"
PEER_PID=""
if [ "${BENCH_ECHO:-1}" != 0 ] && [ -x "$ROOT/.venv/bin/python" ]; then
    coproc PEER { exec "$ROOT/.venv/bin/python" "$ROOT/Tests/Fixtures/ws_server.py" --deflate 2>/dev/null; }
    PEER_PID=$PEER_PID
    read -r -u "${PEER[0]}" line
    PORT="${line#PORT }"
    trap 'kill "$PEER_PID" 2>/dev/null || true; rm -rf "$WORK"' EXIT
    "$BIN" "ws://127.0.0.1:$PORT/echo"
else
    BENCH_ECHO=0 "$BIN"
fi
