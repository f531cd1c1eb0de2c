// `wsc URL --stats` and the SDK counters in `wsc bench`'s report.
import Foundation
import Testing
import WSTesting

@Suite("wsc statistics")
struct CLIStatsTests {
    @Test("--stats prints the session's statistics when it ends")
    func stats() async throws {
        let server = try WebSocketTestServer.start()
        defer { server.stop() }
        let result = try await WSCTool.run([server.url, "--once", "--quiet", "--stats", "hello"], stdin: nil)
        #expect(result.status == 0, "\(result)")
        #expect(result.stdout == "hello\n", "\(result)")
        #expect(result.stderr.contains("wsc: statistics:"), "\(result)")
        #expect(
            result.stderr.contains("messages        sent 1 (1 text, 0 binary), received 1 (1 text, 0 binary)"),
            "\(result)")
        #expect(result.stderr.contains("message bytes   sent 5, received 5"), "\(result)")
    }

    @Test("without --stats no statistics are printed")
    func noStats() async throws {
        let server = try WebSocketTestServer.start()
        defer { server.stop() }
        let result = try await WSCTool.run([server.url, "--once", "--quiet", "hello"], stdin: nil)
        #expect(result.status == 0, "\(result)")
        #expect(!result.stderr.contains("statistics"), "\(result)")
    }

    @Test("wsc bench reports the SDK's counters beside its own")
    func benchCounters() async throws {
        let server = try WebSocketTestServer.start()
        defer { server.stop() }
        let result = try await WSCTool.run(
            ["bench", server.url, "-c", "2", "--duration", "1", "--json", "--engine", "cio"], stdin: nil, timeout: 60)
        #expect(result.status == 0, "\(result)")
        struct Report: Decodable {
            struct Counts: Decodable { var sent: Int, received: Int }
            struct SDK: Decodable {
                var framesSent: Int, framesReceived: Int, messagesSent: Int, messagesReceived: Int
                var messageBytesSent: Int, messageBytesReceived: Int, wireBytesSent: Int, wireBytesReceived: Int
            }
            var messages: Counts
            var bytes: Counts
            var sdk: SDK
        }
        let line = try #require(result.stdout.split(separator: "\n").last)
        let decoder = JSONDecoder()
        decoder.keyDecodingStrategy = .convertFromSnakeCase
        let report = try decoder.decode(Report.self, from: Data(line.utf8))
        // The SDK counts whole sessions (warmup and close included): at least what the bench measured.
        #expect(report.sdk.messagesSent >= report.messages.sent && report.messages.sent > 0, "\(result)")
        #expect(report.sdk.messagesReceived >= report.messages.received, "\(result)")
        #expect(report.sdk.messageBytesReceived >= report.bytes.received, "\(result)")
        #expect(report.sdk.framesSent >= report.sdk.messagesSent + 2, "messages and two close frames: \(result)")
        #expect(report.sdk.wireBytesSent > report.sdk.messageBytesSent, "\(result)")
    }
}
