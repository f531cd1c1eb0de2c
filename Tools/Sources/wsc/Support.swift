import ArgumentParser
import Dispatch
import Glibc
import Logging
import WSCore
import WSEngineCIO
import WSEngineCurl

/// The engines `wsc` can run on, chosen with `--engine`.
enum EngineChoice: String, CaseIterable, ExpressibleByArgument {
    /// The native epoll + OpenSSL engine (WSEngineCIO).
    case cio
    /// The libcurl engine (WSEngineCurl).
    case curl

    /// Creates the engine with default settings.
    /// - Throws: ``ToolError`` when the engine cannot run WebSockets on this machine (e.g. a libcurl without ws).
    func makeEngine() throws -> any WebSocketEngine {
        switch self {
        case .cio:
            return CIOEngine()
        case .curl:
            let engine = CurlEngine()
            if let reason = engine.unsupportedReason(.webSocket) { throw ToolError(reason) }
            return engine
        }
    }
}

/// `wsc --http2`: WebSockets over HTTP/2 (RFC 8441) on the CIO engine.
enum HTTP2Choice: String, CaseIterable, ExpressibleByArgument {
    /// HTTP/1.1 only (the engine's default).
    case disabled
    /// HTTP/2 when the server offers it with extended CONNECT, else HTTP/1.1 (the reason is logged with --verbose).
    case preferred
    /// HTTP/2 or a failure saying why it is not available.
    case required

    /// The engine's setting.
    var mode: CIOEngine.HTTP2Mode {
        switch self {
        case .disabled: return .disabled
        case .preferred: return .preferred
        case .required: return .required
        }
    }
}

/// Options every command that runs a client shares (`wsc demo` uses only these).
struct ClientOptions: ParsableArguments {
    @Option(help: "The engine to connect with: \(EngineChoice.allCases.map(\.rawValue).joined(separator: ", ")).")
    var engine: EngineChoice = .cio

    @Flag(name: [.short, .long], help: "Log the SDK's debug messages to stderr.")
    var verbose = false

    /// A logger writing to stderr: debug level with `--verbose`, warnings otherwise.
    func makeLogger() -> Logger {
        makeStderrLogger(verbose: self.verbose)
    }
}

/// A logger writing to stderr: debug level when `verbose`, warnings otherwise.
func makeStderrLogger(verbose: Bool) -> Logger {
    LoggingSystem.bootstrap { label in StreamLogHandler.standardError(label: label) }
    var logger = Logger(label: "wsc")
    logger.logLevel = verbose ? .debug : .warning
    return logger
}

/// The connection options of every subcommand that connects to a server (`wsc URL`, `wsc echo`, `wsc bench`): the
/// engine, request headers and subprotocols, pings, limits, TLS, proxy and timeout.
struct ConnectionOptions: ParsableArguments {
    @Option(help: "The engine to connect with: \(EngineChoice.allCases.map(\.rawValue).joined(separator: ", ")).")
    var engine: EngineChoice = .cio

    @Option(
        name: [.customShort("H"), .customLong("header")],
        help: ArgumentHelp("An extra handshake request header, 'Name: value' (repeatable).", valueName: "header"))
    var headers: [String] = []

    @Option(
        name: .customLong("subprotocol"),
        help: ArgumentHelp("A subprotocol to offer, most preferred first (repeatable).", valueName: "name"))
    var subprotocols: [String] = []

    @Option(
        help: ArgumentHelp("Send a ping every SECONDS; no pong in time ends the session (1011).", valueName: "seconds"))
    var pingInterval: Double?

    @Option(help: "The largest frame accepted from the server, in bytes.")
    var maxFrameSize: Int?

    @Option(help: "The largest message accepted from the server, in bytes (after reassembly and inflation).")
    var maxMessageSize: Int?

    @Option(
        name: .customLong("cacert"),
        help: ArgumentHelp("A PEM file of trusted CA certificates (wss).", valueName: "file"))
    var caCertificateFile: String?

    @Option(
        name: .customLong("cert"),
        help: ArgumentHelp("A PEM client certificate for mutual TLS (with --key).", valueName: "file"))
    var clientCertificateFile: String?

    @Option(name: .customLong("key"), help: ArgumentHelp("The PEM private key of --cert.", valueName: "file"))
    var clientPrivateKeyFile: String?

    @Option(
        name: .customLong("servername"),
        help: ArgumentHelp("The name to send as SNI and verify instead of the URL's host (wss).", valueName: "name"))
    var serverName: String?

    @Option(
        help: ArgumentHelp(
            "The proxy URL (http, https, socks5, socks5h), e.g. http://127.0.0.1:3128; '' for none (ignoring http_proxy etc.).",
            valueName: "url"))
    var proxy: String?

    @Flag(
        name: .customLong("insecure-skip-verify"),
        help: "DANGEROUS: accept any TLS certificate for any host name (tests against self-signed servers only).")
    var insecureSkipVerify = false

    @Option(
        help: ArgumentHelp(
            "How long connecting and the opening handshake may take, in seconds (default 10).", valueName: "seconds"))
    var timeout: Double?

    @Option(
        help: ArgumentHelp(
            "WebSockets over HTTP/2 for wss:// (CIO engine): disabled (HTTP/1.1 only, the default), preferred (h2 when the server offers it, else HTTP/1.1) or required.",
            valueName: "mode"))
    var http2: HTTP2Choice?

    @Flag(name: [.short, .long], help: "No notices on stderr (connected, closed, progress); errors are still printed.")
    var quiet = false

    @Flag(name: [.short, .long], help: "Log the SDK's debug messages to stderr.")
    var verbose = false

    func validate() throws {
        for header in self.headers {
            guard let colon = header.firstIndex(of: ":"), !header[..<colon].trimmed.isEmpty else {
                throw ValidationError("-H '\(header)': expected 'Name: value'")
            }
        }
        if (self.clientCertificateFile == nil) != (self.clientPrivateKeyFile == nil) {
            throw ValidationError("--cert and --key go together")
        }
        if let proxy = self.proxy {
            do { _ = try ProxyConfiguration(url: proxy) } catch { throw ValidationError("--proxy: \(error.message)") }
        }
        if let timeout = self.timeout, !(timeout > 0) { throw ValidationError("--timeout must be positive") }
        if let http2 = self.http2, http2 != .disabled, self.engine != .cio {
            throw ValidationError("--http2 \(http2.rawValue) needs --engine cio (the curl engine speaks HTTP/1.1 only)")
        }
        if let interval = self.pingInterval, !(interval > 0) {
            throw ValidationError("--ping-interval must be positive")
        }
        if let size = self.maxFrameSize, size < 1 { throw ValidationError("--max-frame-size must be at least 1") }
        if let size = self.maxMessageSize, size < 1 { throw ValidationError("--max-message-size must be at least 1") }
    }

    /// A logger writing to stderr: debug level with `--verbose`, warnings otherwise.
    func makeLogger() -> Logger {
        makeStderrLogger(verbose: self.verbose)
    }

    /// Creates the engine with the TLS and proxy options; warns on stderr about `--insecure-skip-verify`.
    /// - Throws: ``ToolError`` when the engine cannot run WebSockets on this machine.
    func makeEngine() throws -> any WebSocketEngine {
        if self.insecureSkipVerify {
            printError(
                "wsc: WARNING: --insecure-skip-verify: TLS certificates and host names are NOT verified; anyone can impersonate the server"
            )
        }
        // One TLS configuration, whichever engine takes it.
        var tls = WebSocketTLSConfiguration()
        if let file = self.caCertificateFile { tls.trustRoots = .file(file) }
        if let certificate = self.clientCertificateFile, let key = self.clientPrivateKeyFile {
            tls.clientIdentity = .files(certificate: certificate, privateKey: key)
        }
        tls.serverNameOverride = self.serverName
        tls.dangerouslyDisableCertificateVerification = self.insecureSkipVerify
        switch self.engine {
        case .cio:
            return CIOEngine(configuration: .init(tls: tls, http2: .init(mode: (self.http2 ?? .disabled).mode)))
        case .curl:
            let engine = CurlEngine(configuration: .init(tls: tls))
            if let reason = engine.unsupportedReason(.webSocket) { throw ToolError(reason) }
            return engine
        }
    }

    /// Creates a client with these options; `configure` edits the WebSockets settings afterwards.
    /// - Parameters:
    ///   - maxFrameSize: The frame limit when `--max-frame-size` is not given.
    ///   - maxMessageSize: The message limit when `--max-message-size` is not given.
    ///   - configure: Further settings (extensions, ...).
    func makeClient(
        maxFrameSize: Int = 16 << 20,
        maxMessageSize: Int = 16 << 20,
        _ configure: (inout WebSockets.Configuration) throws -> Void = { _ in }
    ) throws -> WebSocketClient {
        let engine = try self.makeEngine()
        let logger = self.makeLogger()
        let frameLimit = self.maxFrameSize ?? maxFrameSize
        let messageLimit = self.maxMessageSize ?? max(maxMessageSize, frameLimit)
        let pingInterval = self.pingInterval.map { Duration.milliseconds(Int64(($0 * 1000).rounded())) }
        let timeout = self.timeout.map { Duration.milliseconds(Int64(($0 * 1000).rounded())) }
        let proxy = try self.proxy.map { url throws(WebSocketError) in try ProxyConfiguration(url: url) }
        return try WebSocketClient(engine: engine) { config in
            config.logger = logger
            if let proxy { config.proxy = proxy }
            if let timeout {
                config.openTimeout = timeout
                config.connectTimeout = timeout
            }
            try config.install(WebSockets.self) { ws in
                ws.maxFrameSize = frameLimit
                ws.maxMessageSize = messageLimit
                ws.pingInterval = pingInterval
                try configure(&ws)
            }
        }
    }

    /// Adds the headers and subprotocols to the opening handshake request.
    func apply(to request: inout WebSocketRequestBuilder) {
        for header in self.headers {
            guard let colon = header.firstIndex(of: ":") else { continue }
            request.headers.add(header[..<colon].trimmed, header[header.index(after: colon)...].trimmed)
        }
        request.subprotocols = self.subprotocols
    }
}

extension StringProtocol {
    /// The text without leading and trailing spaces and tabs.
    var trimmed: String {
        let isSpace: (Character) -> Bool = { $0 == " " || $0 == "\t" }
        return String(String(self).drop(while: isSpace).reversed().drop(while: isSpace).reversed())
    }
}

/// A failure `wsc` reports with a plain message.
struct ToolError: Error, CustomStringConvertible {
    /// What went wrong.
    let description: String
    init(_ description: String) { self.description = description }
}

/// Writes all of `bytes` to a file descriptor, unbuffered.
func writeAll(_ fd: Int32, _ bytes: UnsafeRawBufferPointer) {
    var offset = 0
    while offset < bytes.count {
        let n = write(fd, bytes.baseAddress! + offset, bytes.count - offset)
        if n < 0 && errno == EINTR { continue }
        if n <= 0 { return }
        offset += n
    }
}

/// Writes a line to stderr, unbuffered.
func printError(_ line: String) {
    var text = line + "\n"
    text.withUTF8 { writeAll(2, UnsafeRawBufferPointer($0)) }
}

/// Writes a line to stdout, unbuffered (so that a pipe sees each message as it arrives).
func printOutput(_ line: String) {
    var text = line + "\n"
    text.withUTF8 { writeAll(1, UnsafeRawBufferPointer($0)) }
}

/// A short, readable description of an error thrown by the SDK.
func describe(_ error: any Error) -> String {
    if let error = error as? WebSocketError { return error.description }
    return String(describing: error)
}

/// Delivers SIGINT and SIGTERM as values instead of ending the process; the sources live as long as it does.
final class SignalWatcher: @unchecked Sendable {  // safe: `sources` is set once in init and never mutated after
    private let sources: [any DispatchSourceSignal]
    /// The signals received, in order.
    let signals: AsyncStream<Int32>

    /// Starts watching `signals` (their default action is turned off).
    init(_ watched: [Int32] = [SIGINT, SIGTERM]) {
        let (stream, continuation) = AsyncStream.makeStream(of: Int32.self)
        self.signals = stream
        self.sources = watched.map { number in
            signal(number, SIG_IGN)
            let source = DispatchSource.makeSignalSource(signal: number, queue: .global())
            source.setEventHandler { continuation.yield(number) }
            source.resume()
            return source
        }
    }
}
