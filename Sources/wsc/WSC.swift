import ArgumentParser

/// `wsc`: the WebSocket client SDK's command-line tool.
@main
struct WSC: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "wsc",
        abstract: "WebSocket client tool for the Swift WebSocket client SDK.",
        discussion: """
            Start with `wsc demo`: it runs a WebSocket echo server inside the process and walks through the \
            client API against it.
            """,
        subcommands: [DemoCommand.self, EchoCommand.self]
    )
}
