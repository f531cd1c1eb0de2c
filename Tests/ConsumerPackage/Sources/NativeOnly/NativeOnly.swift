// A program that uses only WSCore and the CIO engine, as an app that needs nothing else would. scripts/consumer.sh
// checks that its executable does not link libssl or libcrypto, then runs it against a ws:// and a wss:// echo
// server (Tests/Fixtures/ws_server.py): OpenSSL must not be in the process after the ws:// session, and must be
// after the wss:// one (the engine loads it for its first TLS connection); libnghttp2 must not be there at all (HTTP/2
// is off by default, and the engine loads it only for an HTTP/2 connection). Exits 1 with a `native-only: MISMATCH:`
// line at the first difference.
import Foundation
import WSCore
import WSEngineCIO

/// Whether a library whose file name starts with `prefix` is mapped into this process (read with stdio: /proc files
/// report a size of 0, so whole-file readers may return nothing).
func mapped(_ prefix: String) throws -> Bool {
    guard let file = fopen("/proc/self/maps", "r") else { throw Mismatch("cannot open /proc/self/maps") }
    defer { fclose(file) }
    var lines = 0
    var line = [CChar](repeating: 0, count: 4096)
    while fgets(&line, Int32(line.count), file) != nil {
        lines += 1
        let text = String(decoding: line.prefix { $0 != 0 }.map { UInt8(bitPattern: $0) }, as: UTF8.self)
        let name = text.split(separator: "/").last.map { $0.trimmingCharacters(in: .whitespacesAndNewlines) } ?? ""
        if name.hasPrefix(prefix) { return true }
    }
    guard lines > 0 else { throw Mismatch("/proc/self/maps read as empty") }
    return false
}

/// One text message to `url` and its echo.
func echo(_ client: WebSocketClient, _ url: String, _ text: String) async throws {
    let answer = try await client.webSocket(url) { session in
        try await session.send(text)
        return try await session.incoming.receive().readText()
    }
    guard answer == text else {
        throw Mismatch("\(url) echoed \(answer.debugDescription), not \(text.debugDescription)")
    }
}

struct Mismatch: Error, CustomStringConvertible {
    let description: String
    init(_ description: String) { self.description = description }
}

let arguments = CommandLine.arguments
guard arguments.count == 4 else {
    print("usage: NativeOnly ws://HOST:PORT/ wss://HOST:PORT/ CA.pem")
    exit(2)
}
let client = WebSocketClient(
    engine: CIOEngine(configuration: .init(tls: .init(trustRoots: .file(arguments[3]))))
) {
    $0.proxy = .direct
    $0.install(WebSockets.self)
}
do {
    try await echo(client, arguments[1], "plain")
    for library in ["libssl.so", "libcrypto.so"] where try mapped(library) {
        throw Mismatch("\(library) is mapped after a ws:// session; the CIO engine should load OpenSSL only for TLS")
    }
    print("native-only: ws:// echo without OpenSSL in the process: ok")
    try await echo(client, arguments[2], "secure")
    guard try mapped("libssl.so") else { throw Mismatch("a wss:// session worked but libssl is not mapped") }
    print("native-only: wss:// echo, OpenSSL loaded for it: ok")
    // HTTP/2 is off (the default): the engine never needs libnghttp2, so it never loads it.
    guard try !mapped("libnghttp2.so") else {
        throw Mismatch("libnghttp2 is mapped with HTTP/2 off; the CIO engine should load it only for HTTP/2")
    }
    print("native-only: no libnghttp2 in the process with HTTP/2 off: ok")
    await client.close()
} catch {
    print("native-only: MISMATCH: \(error)")
    await client.close()
    exit(1)
}
