// A program written as a user of the SDK writes it, from the README: every entry point (webSocket,
// webSocketSession, ws, wss; String, Foundation URL and component forms), both engines and the default one, TLS,
// one `catch let error as WebSocketError` for every failure, and message-level receive. It starts its own servers on
// loopback (WSTesting) and exits 1 with a `consumer: MISMATCH: ...` line at the first difference.
//
// Environment (scripts/consumer.sh sets it): CONSUMER_CA (the CA certificate, PEM), CONSUMER_CERT and CONSUMER_KEY
// (a certificate for localhost signed by it, and its key).
import Foundation
import WSEngineCurl
import WSTesting
import WebSocketClientKit

/// A difference between what the SDK did and what the program expected.
struct Mismatch: Error, CustomStringConvertible {
    let description: String
}

/// Fails with `what` unless `condition` holds.
func expect(_ condition: Bool, _ what: @autoclosure () -> String) throws {
    if !condition { throw Mismatch(description: what()) }
}

/// Runs `body`, which must fail; returns the error through the one catch a user writes for every failure.
func failure(_ what: String, _ body: () async throws -> Void) async throws -> WebSocketError {
    do {
        try await body()
    } catch let error as WebSocketError {
        return error
    }
    throw Mismatch(description: "\(what): succeeded, expected a WebSocketError")
}

/// The servers the program talks to, all on 127.0.0.1 with free ports.
struct Servers {
    let echo: WebSocketTestServer
    let tlsEcho: WebSocketTestServer
    let rejecting: WebSocketTestServer
    let broken: WebSocketTestServer
    let closedPort: Int

    static func start(certificate: String, key: String) throws -> Servers {
        var tls = WebSocketTestServer.Configuration()
        tls.tlsCertificateFile = certificate
        tls.tlsPrivateKeyFile = key
        var rejecting = WebSocketTestServer.Configuration()
        rejecting.handshake = .reject(status: 403, body: "members only")
        // A port that was free a moment ago and has nobody listening now.
        let gone = try WebSocketTestServer.start()
        let closedPort = gone.port
        gone.stop()
        return Servers(
            echo: try WebSocketTestServer.start(),
            tlsEcho: try WebSocketTestServer.start(tls),
            rejecting: try WebSocketTestServer.start(rejecting),
            broken: try WebSocketTestServer.start(
                handler: .custom { session in
                    try session.sendMalformedFrame(.reservedOpcode)
                    while (try? session.receive()) != nil {}
                }),
            closedPort: closedPort)
    }

    func stop() {
        for server in [self.echo, self.tlsEcho, self.rejecting, self.broken] { server.stop() }
    }
}

/// Sends `text` and expects it back with `receiveText()`.
func roundTrip(_ session: WebSocketSession, _ text: String, _ label: String) async throws {
    try await session.send(text)
    let reply = try await session.receiveText()
    try expect(reply == text, "\(label): sent \"\(text)\", received \"\(reply)\"")
}

/// Every entry point against the plain and the TLS echo server, on one client.
func entryPoints(_ client: WebSocketClient, _ name: String, _ servers: Servers) async throws {
    let plain = servers.echo.url(path: "/chat")
    let secure = servers.tlsEcho.url(path: "/chat")
    try expect(secure.hasPrefix("wss://localhost:"), "the TLS server's URL is \(secure)")
    let port = servers.echo.port
    let tlsPort = servers.tlsEcho.port

    // Blocks: the session is closed when the block returns.
    try await client.webSocket(plain) { try await roundTrip($0, "webSocket(String)", name) }
    try await client.webSocket(URL(string: plain)!) { try await roundTrip($0, "webSocket(URL)", name) }
    try await client.webSocket(host: "127.0.0.1", port: port, path: "/chat") {
        try await roundTrip($0, "webSocket(host:port:path:)", name)
    }
    try await client.webSocket(request: { try $0.url(plain) }) { try await roundTrip($0, "webSocket(request:)", name) }
    try await client.ws(plain) { try await roundTrip($0, "ws(String)", name) }
    try await client.ws(URL(string: plain)!) { try await roundTrip($0, "ws(URL)", name) }
    try await client.ws(host: "127.0.0.1", port: port, path: "/chat") {
        try await roundTrip($0, "ws(host:port:path:)", name)
    }
    try await client.wss(secure) { try await roundTrip($0, "wss(String)", name) }
    try await client.wss(URL(string: secure)!) { try await roundTrip($0, "wss(URL)", name) }
    try await client.wss(host: "localhost", port: tlsPort, path: "/chat") {
        try await roundTrip($0, "wss(host:port:path:)", name)
    }
    try await client.webSocket(secure) { try await roundTrip($0, "webSocket(wss String)", name) }

    // Sessions for manual control; message-level receive skips the pongs of the keepalive pings.
    let sessions = [
        (try await client.webSocketSession(plain), "webSocketSession(String)"),
        (try await client.webSocketSession(URL(string: secure)!), "webSocketSession(URL)"),
        (
            try await client.webSocketSession(host: "127.0.0.1", port: port, path: "/chat"),
            "webSocketSession(host:port:path:)"
        ),
        (try await client.webSocketSession { try $0.url(secure) }, "webSocketSession { request }"),
    ]
    for (session, label) in sessions {
        try await roundTrip(session, label, "\(name) \(label)")
        try await session.send([1, 2, 3])
        let bytes = try await session.receiveBinary()
        try expect(bytes == [1, 2, 3], "\(name) \(label): receiveBinary() returned \(bytes)")
        for text in ["one", "two", "three"] { try await session.send(text) }
        var received: [WebSocketMessage] = []
        for try await message in session.messages {
            received.append(message)
            if received.count == 3 { break }
        }
        try expect(
            received == [.text("one"), .text("two"), .text("three")],
            "\(name) \(label): messages yielded \(received)")
        await session.close()
        try expect(session.isClosed, "\(name) \(label): still open after close()")
    }
    print("consumer: \(name): every entry point, ws and wss, String, URL and components: ok")
}

/// Every failure through one `catch let error as WebSocketError`.
func failures(_ client: WebSocketClient, _ name: String, _ servers: Servers, untrustingClient: WebSocketClient)
    async throws
{
    let refused = try await failure("\(name) refused") {
        try await client.ws("ws://127.0.0.1:\(servers.closedPort)/") { _ in }
    }
    try expect(
        refused.code == .connectionRefused && refused.isConnectionFailure,
        "\(name) refused: expected connectionRefused with isConnectionFailure, got \(refused)")

    let rejected = try await failure("\(name) 403") {
        _ = try await client.webSocketSession(servers.rejecting.url(path: "/private"))
    }
    try expect(
        rejected.code == .upgradeRejected && rejected.isConnectionFailure,
        "\(name) 403: expected upgradeRejected with isConnectionFailure, got \(rejected)")
    try expect(rejected.status == 403, "\(name) 403: expected status 403, got \(String(describing: rejected.status))")
    try expect(
        rejected.headers["Content-Type"]?.hasPrefix("text/plain") == true,
        "\(name) 403: expected a text/plain Content-Type, got headers \(rejected.headers)")
    try expect(
        rejected.bodyText.hasPrefix("members only"),
        "\(name) 403: expected the body \"members only\", got \"\(rejected.bodyText)\"")

    let untrusted = try await failure("\(name) TLS") {
        try await untrustingClient.wss(servers.tlsEcho.url) { _ in }
    }
    try expect(
        untrusted.code == .tlsFailure && untrusted.isConnectionFailure,
        "\(name) TLS: expected tlsFailure with isConnectionFailure, got \(untrusted)")

    let broken = try await failure("\(name) session") {
        try await client.webSocket(servers.broken.url) { session in
            for try await _ in session.incoming {}
        }
    }
    try expect(
        broken.code == .protocolViolation && !broken.isConnectionFailure,
        "\(name) session: expected protocolViolation without isConnectionFailure, got \(broken)")
    try expect(
        broken.closeCode == .protocolError,
        "\(name) session: expected close code 1002, got \(String(describing: broken.closeCode))")
    print("consumer: \(name): refused, 403 (status, headers, body), TLS and session failures in one catch: ok")
}

/// Pings every 20 ms (message-level receive must skip their pongs), with a pong timeout that a loaded CI machine
/// still meets (the default, the ping interval, failed a run under a load of 10 on two cores).
func keepalive(_ ws: inout WebSockets.Configuration) {
    ws.pingInterval = .milliseconds(20)
    ws.pongTimeout = .seconds(5)
}

@main
struct Consumer {
    static func main() async {
        do {
            try await run()
            print("consumer: PASSED")
        } catch {
            print("consumer: MISMATCH: \(error)")
            exit(1)
        }
    }

    static func run() async throws {
        let environment = ProcessInfo.processInfo.environment
        guard let ca = environment["CONSUMER_CA"], let certificate = environment["CONSUMER_CERT"],
            let key = environment["CONSUMER_KEY"]
        else {
            throw Mismatch(description: "set CONSUMER_CA, CONSUMER_CERT and CONSUMER_KEY (scripts/consumer.sh does)")
        }
        let servers = try Servers.start(certificate: certificate, key: key)
        defer { servers.stop() }

        // The default engine, in one line; it trusts the system's CAs only, so it refuses the test certificate.
        let defaultClient = WebSocketClient { $0.install(WebSockets.self) { keepalive(&$0) } }
        try expect(defaultClient.engine is CIOEngine, "the default engine is \(defaultClient.engine.name)")
        try expect(defaultClient.isSupported(.webSocket), "the default engine does not support WebSockets")

        // The engine chosen per client, both with the same TLS configuration value, which trusts the test CA, and
        // no proxy from the environment for these loopback servers (the client's proxy setting, on both engines).
        let tls = WebSocketTLSConfiguration(trustRoots: .file(ca))
        let cio = WebSocketClient(engine: CIOEngine(configuration: .init(tls: tls))) {
            $0.proxy = .direct
            $0.install(WebSockets.self) { keepalive(&$0) }
        }
        let curl = WebSocketClient(engine: CurlEngine(configuration: .init(tls: tls))) {
            $0.proxy = .direct
            $0.install(WebSockets.self) { keepalive(&$0) }
        }
        if let reason = curl.unsupportedReason(.webSocket) {
            throw Mismatch(description: "the Curl engine cannot run here: \(reason)")
        }

        do {
            try await entryPoints(cio, "CIO", servers)
            try await entryPoints(curl, "Curl", servers)
            try await defaultClient.webSocket(servers.echo.url) { try await roundTrip($0, "default engine", "default") }
            print("consumer: default engine (WebSocketClient { }): ok")
            try await failures(cio, "CIO", servers, untrustingClient: defaultClient)
            try await failures(curl, "Curl", servers, untrustingClient: defaultClient)
            try await failures(defaultClient, "default", servers, untrustingClient: defaultClient)
        } catch {
            await defaultClient.close()
            await cio.close()
            await curl.close()
            throw error
        }
        await defaultClient.close()
        await cio.close()
        await curl.close()
    }
}
