import ArgumentParser
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

    /// Creates the engine.
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

/// Options every command that connects shares.
struct ClientOptions: ParsableArguments {
    @Option(help: "The engine to connect with: \(EngineChoice.allCases.map(\.rawValue).joined(separator: ", ")).")
    var engine: EngineChoice = .cio

    @Flag(name: [.short, .long], help: "Log the SDK's debug messages to stderr.")
    var verbose = false

    /// A logger writing to stderr: debug level with `--verbose`, warnings otherwise.
    func makeLogger() -> Logger {
        LoggingSystem.bootstrap { label in StreamLogHandler.standardError(label: label) }
        var logger = Logger(label: "wsc")
        logger.logLevel = self.verbose ? .debug : .warning
        return logger
    }
}

/// A failure `wsc` reports with a plain message.
struct ToolError: Error, CustomStringConvertible {
    /// What went wrong.
    let description: String
    init(_ description: String) { self.description = description }
}

/// Writes a line to stderr, unbuffered.
func printError(_ line: String) {
    var text = line + "\n"
    text.withUTF8 { bytes in
        var offset = 0
        while offset < bytes.count {
            let n = write(2, bytes.baseAddress! + offset, bytes.count - offset)
            if n <= 0 { return }
            offset += n
        }
    }
}

/// A short, readable description of an error thrown by the SDK.
func describe(_ error: any Error) -> String {
    if let error = error as? WebSocketError { return error.description }
    if let error = error as? WebSocketConnectionError { return error.description }
    return String(describing: error)
}
