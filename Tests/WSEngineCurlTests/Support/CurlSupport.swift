// What only the Curl engine tests need besides EngineTestSupport: a capturing log handler and a configuration
// that never uses a proxy.
import Logging
import Synchronization
import WSCore
import WSEngineCurl

/// A log handler that keeps every message (with its metadata) for inspection.
struct CapturingLogHandler: LogHandler {
    final class Storage: Sendable {
        let lines = Mutex<[String]>([])
        var all: [String] { self.lines.withLock { $0 } }
    }

    let storage: Storage
    var metadata: Logger.Metadata = [:]
    var logLevel: Logger.Level = .trace

    subscript(metadataKey key: String) -> Logger.Metadata.Value? {
        get { self.metadata[key] }
        set { self.metadata[key] = newValue }
    }

    func log(event: LogEvent) {
        let merged = self.metadata.merging(event.metadata ?? [:]) { $1 }
        self.storage.lines.withLock { $0.append("\(event.level) \(event.message) \(merged)") }
    }
}

/// A configuration for direct connections: engine-level connects get no proxy unless the options name one, so test
/// traffic cannot leave the machine whatever the environment says.
func directConfiguration(
    trustedCAFile: String? = nil, insecure: Bool = false, verbose: Bool = false
) -> CurlEngine.Configuration {
    CurlEngine.Configuration(
        tls: WebSocketTLSConfiguration(
            trustRoots: trustedCAFile.map { .file($0) } ?? .system,
            dangerouslyDisableCertificateVerification: insecure),
        verbose: verbose)
}
