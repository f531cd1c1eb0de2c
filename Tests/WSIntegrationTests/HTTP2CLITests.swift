// `wsc --http2` and the HTTP/2 step of `wsc demo`, through the wsc binary, against Hypercorn
// (Tests/Fixtures/h2_ws_server.py).
import EngineTestSupport
import Testing

@Suite("wsc over HTTP/2", .serialized, .timeLimit(.minutes(2)))
struct HTTP2CLITests {
    @Test("--http2 required runs the session over HTTP/2 and says so")
    func required() async throws {
        let peer = try await HypercornPeer.start("h2")
        let ca = try await TestCertificates.load().caCertificate
        let result = try await WSCTool.run([peer.url, "--cacert", ca, "--http2", "required", "--once", "stats"])
        #expect(result.status == 0, "\(result)")
        #expect(result.stdout == "connections=1 http=2\n", "\(result)")
        #expect(result.stderr.contains("(engine CIO, HTTP/2)"), "\(result)")
    }

    @Test("--http2 preferred falls back to HTTP/1.1 on a server without h2; required fails with exit 1")
    func fallback() async throws {
        let peer = try await HypercornPeer.start("http1")
        let ca = try await TestCertificates.load().caCertificate
        let preferred = try await WSCTool.run([peer.url, "--cacert", ca, "--http2", "preferred", "--once", "stats"])
        #expect(preferred.status == 0, "\(preferred)")
        #expect(preferred.stdout == "connections=1 http=1.1\n", "\(preferred)")
        #expect(preferred.stderr.contains("connected to") && !preferred.stderr.contains("HTTP/2"), "\(preferred)")

        let required = try await WSCTool.run([peer.url, "--cacert", ca, "--http2", "required", "--once", "x"])
        #expect(required.status == 1, "\(required)")
        #expect(required.stderr.contains("HTTP/2 is required") && required.stderr.contains("ALPN"), "\(required)")
    }

    @Test("--http2 with the curl engine or an unknown mode is a usage error (exit 64)")
    func usage() async throws {
        let curl = try await WSCTool.run(["wss://localhost:1/", "--engine", "curl", "--http2", "preferred"])
        #expect(curl.status == 64, "\(curl)")
        #expect(curl.stderr.contains("--engine cio"), "\(curl)")
        let unknown = try await WSCTool.run(["wss://localhost:1/", "--http2", "sometimes"])
        #expect(unknown.status == 64, "\(unknown)")
    }

    @Test("wsc demo shows the HTTP/2 capability and the session's HTTP version")
    func demo() async throws {
        let result = try await WSCTool.run(["demo"], timeout: 60)
        #expect(result.status == 0, "\(result)")
        let line = result.stdout.split(separator: "\n").first { $0.contains("HTTP/2 ") && $0.contains("✓") }
        #expect(line?.contains("session.httpVersion = HTTP/1.1") == true, "\(result)")
        #expect(line?.contains("isSupported(.webSocketOverHTTP2) = true") == true, "\(result)")
    }
}
