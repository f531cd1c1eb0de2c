// `wsc --send-file` and `--save-to`: a file streamed through the C echo server (Benchmarks/c) and saved back.
import EngineTestSupport
import Foundation
import SpawnSupport
import Testing

@Suite("wsc streaming files")
struct StreamingCLITests {
    @Test(
        "--send-file streams a 3 MiB file as one message; --save-to writes its echo to a file, byte for byte",
        arguments: ["cio", "curl"])
    func sendFileSaveTo(engine: String) async throws {
        let port = freeLoopbackPort()
        let null = open("/dev/null", O_RDWR | O_CLOEXEC)
        defer { close(null) }
        let binary = try StreamingProofTests.buildEchoServer()
        defer { unlink(binary) }  // the running server keeps its file
        let echo = try ChildProcess(binary, ["\(port)"], stdin: null, stdout: null, stderr: null)
        defer { _ = echo.terminate(grace: .seconds(2)) }
        while !canConnect(toLoopbackPort: port) { try await Task.sleep(for: .milliseconds(20)) }

        let directory = FileManager.default.temporaryDirectory.appendingPathComponent(
            "wsc-stream-\(getpid())-\(engine)")
        try? FileManager.default.removeItem(at: directory)
        try FileManager.default.createDirectory(at: directory, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(at: directory) }
        // 3 MiB, three times the message limit given below, so only a streamed receive can save it.
        var rng = SystemRandomNumberGenerator()
        let bytes = (0..<(3 << 20) / 8).flatMap { _ in withUnsafeBytes(of: rng.next() as UInt64) { Array($0) } }
        let input = directory.appendingPathComponent("input.bin")
        try Data(bytes).write(to: input)
        let output = directory.appendingPathComponent("out")
        try FileManager.default.createDirectory(at: output, withIntermediateDirectories: true)

        let result = try await WSCTool.run(
            [
                "ws://127.0.0.1:\(port)/", "--send-file", input.path, "--save-to", output.path, "--linger", "2",
                "--max-message-size", "\(1 << 20)", "--engine", engine,
            ], stdin: "",
            timeout: 60)
        #expect(result.status == 0, "\(result)")
        #expect(result.stderr.contains("saved \(bytes.count) bytes"), "\(result)")
        let saved = try Data(contentsOf: output.appendingPathComponent("message-1.bin"))
        #expect(saved == Data(bytes))
    }
}
