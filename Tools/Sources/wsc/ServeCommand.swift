import ArgumentParser
import Glibc
import WSTesting

/// `wsc serve`: runs the WSTesting echo (or broadcast) server in the foreground until SIGINT or SIGTERM.
struct ServeCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "serve",
        abstract: "Run a WebSocket echo server (WSTesting) in the foreground until Ctrl-C.",
        discussion: """
            Prints the server's URL on stdout (one line), then serves until SIGINT (Ctrl-C) or SIGTERM, which \
            stop it cleanly (open sessions get close code 1001) and exit 0. The default handler echoes every \
            message; --broadcast sends every message to every connected client.

            Examples:
              wsc serve                                  # ws://127.0.0.1:<free port>/
              wsc serve --port 9001
              wsc serve --port 8443 --tls-cert server.pem --tls-key server-key.pem
              wsc serve --host :: --subprotocol chat.v1 --broadcast
            """
    )

    @Option(help: "The address to bind: an IPv4 or IPv6 literal, or localhost.")
    var host = "127.0.0.1"

    @Option(help: "The port to listen on; 0 picks a free one.")
    var port = 0

    @Option(
        name: .customLong("tls-cert"),
        help: ArgumentHelp("A PEM certificate chain: serve wss (with --tls-key).", valueName: "file"))
    var tlsCertificateFile: String?

    @Option(name: .customLong("tls-key"), help: ArgumentHelp("The PEM private key of --tls-cert.", valueName: "file"))
    var tlsPrivateKeyFile: String?

    @Option(
        name: .customLong("subprotocol"),
        help: ArgumentHelp("A subprotocol the server accepts (repeatable).", valueName: "name"))
    var subprotocols: [String] = []

    @Flag(help: "Broadcast every message to every client instead of echoing it.")
    var broadcast = false

    @Flag(name: [.short, .long], help: "Print only the URL.")
    var quiet = false

    func validate() throws {
        if (self.tlsCertificateFile == nil) != (self.tlsPrivateKeyFile == nil) {
            throw ValidationError("--tls-cert and --tls-key go together")
        }
        guard (0...65535).contains(self.port) else { throw ValidationError("--port must be 0...65535") }
    }

    func run() async throws {
        let signals = SignalWatcher()
        var configuration = WebSocketTestServer.Configuration()
        configuration.host = self.host
        configuration.port = self.port
        configuration.tlsCertificateFile = self.tlsCertificateFile
        configuration.tlsPrivateKeyFile = self.tlsPrivateKeyFile
        configuration.subprotocols = self.subprotocols
        let server: WebSocketTestServer
        do {
            server = try WebSocketTestServer.start(configuration, handler: self.broadcast ? .broadcast : .echo)
        } catch {
            printError("wsc serve: error: \(error)")
            throw ExitCode.failure
        }
        printOutput(server.url)
        if !self.quiet {
            printError("wsc serve: \(self.broadcast ? "broadcasting" : "echoing") on \(server.url); Ctrl-C stops")
        }
        for await number in signals.signals {
            if !self.quiet { printError("wsc serve: \(number == SIGINT ? "interrupted" : "terminated"), stopping") }
            break
        }
        server.stop()
        if !self.quiet { printError("wsc serve: stopped after \(server.requests.count) connections") }
    }
}
