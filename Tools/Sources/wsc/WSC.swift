import ArgumentParser

/// `wsc`: the WebSocket client SDK's command-line tool.
@main
struct WSC: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "wsc",
        abstract: "WebSocket client tool for the Swift WebSocket client SDK.",
        discussion: """
            Start with `wsc demo`: it runs a WebSocket echo server inside the process and walks through the \
            client API against it. `wsc URL` opens an interactive session (see `wsc help connect`).

            Examples:
              wsc demo
              wsc ws://127.0.0.1:9001/             # interactive session
              wsc serve --port 9001                # an echo server to try it against
              wsc echo ws://127.0.0.1:9001/runCase?case=1&agent=wsc
              wsc bench ws://127.0.0.1:9001/ -c 4 --duration 5    # load test an echo server
            """,
        subcommands: [ConnectCommand.self, BenchCommand.self, DemoCommand.self, EchoCommand.self, ServeCommand.self],
        defaultSubcommand: ConnectCommand.self
    )
}
