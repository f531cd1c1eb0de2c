// `wsc` exits 0 when the server ends the session normally, even when its close arrives together with a message
// that wsc would answer.
import Testing
import WSCore
import WSTesting

@Suite("wsc and a server that closes normally")
struct CLINormalCloseTests {
    /// The arguments that select `engine` for wsc (and keep curl away from any proxy in the environment).
    private static func engineArguments(_ engine: TestEngine) -> [String] {
        engine == .curl ? ["--engine", "curl", "--proxy", ""] : ["--engine", "cio"]
    }

    @Test(
        "wsc echo exits 0 when a message and the server's close 1000 arrive in one write",
        arguments: TestEngine.allCases)
    func echoMessageWithClose(engine: TestEngine) async throws {
        let server = try scriptedServer(echoThenMessageWithClose(last: "bye"))
        defer { server.stop() }
        let result = try await WSCTool.run(
            ["echo", server.url, "--verbose"] + Self.engineArguments(engine), stdin: nil)
        #expect(result.status == 0, "\(result)")
        #expect(!result.stderr.contains("error"), "\(result)")
        #expect(result.stderr.contains("echoed 1 messages (1 arrived with the server's close"), "\(result)")
    }

    @Test(
        "wsc echo still exits 1 when the connection drops right after a message, without a close frame",
        arguments: TestEngine.allCases)
    func echoMessageThenDrop(engine: TestEngine) async throws {
        let server = try scriptedServer { session in
            try session.sendRaw(rawFrame(0x81, Array("bye".utf8)))
            session.closeSocket()
        }
        defer { server.stop() }
        let result = try await WSCTool.run(["echo", server.url] + Self.engineArguments(engine), stdin: nil)
        #expect(result.status == 1, "\(result)")
        #expect(result.stderr.contains("error"), "\(result)")
    }

    @Test(
        "wsc URL prints the message and exits 0 when the server's close comes with it", arguments: TestEngine.allCases)
    func connectMessageWithClose(engine: TestEngine) async throws {
        let server = try scriptedServer { session in try session.sendRaw(textThenClose("bye")) }
        defer { server.stop() }
        let result = try await WSCTool.run([server.url] + Self.engineArguments(engine), stdin: nil)
        #expect(result.status == 0, "\(result)")
        #expect(result.stdout == "bye\n", "\(result)")
        #expect(result.stderr.contains("closed: 1000"), "\(result)")
    }
}
