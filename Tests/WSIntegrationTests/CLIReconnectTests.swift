// `wsc URL --reconnect` and `wsc echo URL --reconnect` against the Python peer: state changes on stderr and the exit
// status.
import Testing

/// The arguments that select `engine` for wsc (and keep curl away from any proxy in the environment).
private func engineArguments(_ engine: TestEngine) -> [String] {
    engine == .curl ? ["--engine", "curl", "--proxy", ""] : ["--engine", "cio"]
}

@Suite("wsc --reconnect")
struct CLIReconnectTests {
    @Test(
        "wsc URL --reconnect prints the state changes on stderr and the echoes on stdout",
        arguments: TestEngine.allCases)
    func interactive(engine: TestEngine) async throws {
        let peer = try await PythonPeer.start()
        defer { peer.stop() }
        let result = try await WSCTool.run(
            [peer.url(path: "/echo"), "--reconnect", "--linger", "2"] + engineArguments(engine), stdin: "one\ntwo\n")
        #expect(result.status == 0, "\(result)")
        #expect(result.stdout == "one\ntwo\n", "\(result)")
        #expect(result.stderr.contains("wsc: open\n"), "\(result)")
        #expect(result.stderr.hasSuffix("wsc: closed: closed by the client (1000 NORMAL)\n"), "\(result)")
    }

    @Test(
        "wsc echo --reconnect: a 1012 close is retried until --reconnect-attempts, then it fails",
        arguments: TestEngine.allCases)
    func echoGivesUp(engine: TestEngine) async throws {
        let peer = try await PythonPeer.start()
        defer { peer.stop() }
        let result = try await WSCTool.run(
            ["echo", peer.url(path: "/close?code=1012&reason=restarting"), "--reconnect", "--reconnect-attempts", "1"]
                + engineArguments(engine))
        #expect(result.status == 1, "\(result)")
        #expect(result.stderr.contains("wsc echo: reconnecting (attempt 1 in "), "\(result)")
        #expect(result.stderr.contains("wsc echo: closed: 1012 SERVICE_RESTART: restarting\n"), "\(result)")
        #expect(!result.stderr.contains("attempt 2"), "\(result)")
    }

    @Test("wsc URL --reconnect: a 1008 close is not retried and exits 5", arguments: TestEngine.allCases)
    func notRetried(engine: TestEngine) async throws {
        let peer = try await PythonPeer.start()
        defer { peer.stop() }
        let result = try await WSCTool.run(
            [peer.url(path: "/close?code=1008&reason=banned"), "--reconnect", "--linger", "5"]
                + engineArguments(engine),
            stdin: nil)
        #expect(result.status == 5, "\(result)")
        #expect(result.stderr.contains("wsc: closed: 1008 POLICY_VIOLATION: banned\n"), "\(result)")
        #expect(!result.stderr.contains("reconnecting"), "\(result)")
    }
}
