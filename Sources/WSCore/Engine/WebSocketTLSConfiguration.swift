/// How an engine runs TLS for `wss` endpoints: which certificate authorities it trusts, the client certificate it
/// presents, the lowest protocol version, the name it verifies, and the loudly named opt-out of verification.
///
/// Every engine of this package takes the same value (`CIOEngine.Configuration(tls:)`,
/// `CurlEngine.Configuration(tls:)`) and honours it identically: a setting that one engine cannot carry out is not
/// offered here. Secure by default: the server's certificate chain is verified against the system's trust store,
/// its name is checked against the URL's host (DNS name or IP address), SNI is sent for host names, and TLS 1.2 is
/// the lowest version accepted.
///
/// ```swift
/// var tls = WebSocketTLSConfiguration()
/// tls.trustRoots = .file("/etc/my-app/ca.pem")          // only our CA (replaces the system store)
/// tls.clientIdentity = .files(certificate: "/etc/my-app/client.pem", privateKey: "/etc/my-app/client.key")
/// tls.minimumVersion = .tls13
/// let engine = CIOEngine(configuration: .init(tls: tls))  // or CurlEngine(configuration: .init(tls: tls))
/// ```
///
/// The name is prefixed so that a file importing both this package and SwiftNIO's NIOSSL, which has a
/// `TLSConfiguration` of its own, can use both without qualifying either.
public struct WebSocketTLSConfiguration: Sendable, Hashable {
    /// The certificate authorities a server's chain must lead to.
    ///
    /// Anything but ``system`` REPLACES the system trust store, as Python's `ssl.create_default_context(cafile:)`
    /// and Go's `tls.Config.RootCAs` do: both engines can honour "replace" identically, while "add to the system
    /// store" would mean two different stores (OpenSSL's default paths for CIO, libcurl's configured bundle for
    /// Curl). To trust a private CA as well as the public ones, give a bundle that holds both, e.g.
    /// `.pem(systemBundle + myCA)` with the system bundle read from `/etc/ssl/certs/ca-certificates.crt`.
    public struct TrustRoots: Sendable, Hashable, CustomStringConvertible {
        /// A PEM file of CA certificates, or `nil`.
        public let file: String?
        /// A directory of CA certificates in OpenSSL's hashed layout (`openssl rehash` / `c_rehash`), or `nil`.
        public let directory: String?
        /// PEM text of CA certificates, or `nil`.
        public let pem: String?

        private init(file: String?, directory: String?, pem: String?) {
            self.file = file
            self.directory = directory
            self.pem = pem
        }

        /// The system's trust store: OpenSSL's default locations on the CIO engine, libcurl's configured CA bundle
        /// and directory on the Curl engine (both `/etc/ssl/certs` on Debian and Ubuntu).
        public static let system = TrustRoots(file: nil, directory: nil, pem: nil)

        /// Only the CA certificates in a PEM file (one or more certificates).
        /// - Parameter path: The file.
        public static func file(_ path: String) -> TrustRoots { TrustRoots(file: path, directory: nil, pem: nil) }

        /// Only the CA certificates in a directory in OpenSSL's hashed layout (`openssl rehash DIR` or `c_rehash`
        /// makes the `<hash>.0` links). The directory is searched during verification, so a wrong one shows up as
        /// "unable to get local issuer certificate" rather than at configuration time.
        /// - Parameter path: The directory.
        public static func directory(_ path: String) -> TrustRoots {
            TrustRoots(file: nil, directory: path, pem: nil)
        }

        /// Only the CA certificates in PEM text held in memory (one or more `BEGIN CERTIFICATE` blocks), e.g. read
        /// from a secret store. The Curl engine needs libcurl 7.77 or newer for this.
        /// - Parameter text: The PEM text.
        public static func pem(_ text: String) -> TrustRoots { TrustRoots(file: nil, directory: nil, pem: text) }

        /// The CA certificates of every source given, together (at least one; all `nil` is ``system``).
        /// - Parameters:
        ///   - file: A PEM file.
        ///   - directory: A hashed directory.
        ///   - pem: PEM text in memory.
        public static func certificates(file: String? = nil, directory: String? = nil, pem: String? = nil)
            -> TrustRoots
        {
            TrustRoots(file: file, directory: directory, pem: pem)
        }

        /// Whether this is the system trust store.
        public var isSystem: Bool { self.file == nil && self.directory == nil && self.pem == nil }

        /// `system`, or the sources, e.g. `file '/etc/ca.pem' and PEM in memory`.
        public var description: String {
            guard !self.isSystem else { return "system" }
            var parts: [String] = []
            if let file = self.file { parts.append("file '\(file)'") }
            if let directory = self.directory { parts.append("directory '\(directory)'") }
            if self.pem != nil { parts.append("PEM in memory") }
            return parts.joined(separator: " and ")
        }
    }

    /// The certificate and private key a client presents for mutual TLS.
    public struct ClientIdentity: Sendable, Hashable, CustomStringConvertible {
        /// Where the certificate and key come from (package-level, so that more kinds can be added later without
        /// breaking a `switch`).
        package enum Source: Sendable, Hashable {
            /// PEM files: the certificate file holds the leaf first, then any intermediates.
            case files(certificate: String, privateKey: String)
            /// PEM text in memory, laid out as the files are.
            case pem(certificate: String, privateKey: String)
        }

        /// Where the certificate and key come from.
        package let source: Source
        /// The password of an encrypted private key (PKCS#8 or traditional PEM encryption), or `nil` for an
        /// unencrypted key.
        public let privateKeyPassword: String?

        /// A certificate (chain) and private key from PEM files.
        /// - Parameters:
        ///   - certificate: The PEM certificate file: the leaf first, then any intermediates.
        ///   - privateKey: The PEM private key file.
        ///   - password: The password of an encrypted key.
        public static func files(certificate: String, privateKey: String, password: String? = nil) -> ClientIdentity {
            ClientIdentity(
                source: .files(certificate: certificate, privateKey: privateKey), privateKeyPassword: password)
        }

        /// A certificate (chain) and private key from PEM text in memory. The Curl engine needs libcurl 7.71 or
        /// newer for this.
        /// - Parameters:
        ///   - certificate: The PEM certificate text: the leaf first, then any intermediates.
        ///   - privateKey: The PEM private key text.
        ///   - password: The password of an encrypted key.
        public static func pem(certificate: String, privateKey: String, password: String? = nil) -> ClientIdentity {
            ClientIdentity(source: .pem(certificate: certificate, privateKey: privateKey), privateKeyPassword: password)
        }

        /// `files 'client.pem' + 'client.key'` or `PEM in memory`, never the key or its password.
        public var description: String {
            switch self.source {
            case .files(let certificate, let privateKey): return "files '\(certificate)' + '\(privateKey)'"
            case .pem: return "PEM in memory"
            }
        }
    }

    /// A TLS protocol version, used as the lowest version accepted. Older versions than TLS 1.2 cannot be enabled.
    public struct Version: Sendable, Hashable, Comparable, CustomStringConvertible {
        private let minor: Int
        private init(minor: Int) { self.minor = minor }

        /// TLS 1.2 (RFC 5246).
        public static let tls12 = Version(minor: 2)
        /// TLS 1.3 (RFC 8446).
        public static let tls13 = Version(minor: 3)

        /// Whether `lhs` is an older version than `rhs`.
        public static func < (lhs: Version, rhs: Version) -> Bool { lhs.minor < rhs.minor }

        /// `TLSv1.2` or `TLSv1.3`.
        public var description: String { "TLSv1.\(self.minor)" }
    }

    /// The certificate authorities trusted. Default ``TrustRoots/system``.
    public var trustRoots: TrustRoots
    /// The client certificate presented when the server asks for one (mutual TLS). Default `nil`: none.
    public var clientIdentity: ClientIdentity?
    /// The lowest TLS version accepted. Default ``Version/tls12``.
    public var minimumVersion: Version
    /// The name sent as SNI and checked against the server's certificate instead of the URL's host, while the
    /// connection still goes to the URL's host: for connecting to an IP address, a tunnel or a node of a cluster
    /// whose certificate names another host. An IP address here is verified as an IP address and sends no SNI.
    /// The `Host` header of the upgrade request stays the URL's host on every engine. Default `nil`: the URL's host.
    public var serverNameOverride: String?
    /// Turns off certificate chain AND host name verification, so that any server, including an attacker in the
    /// middle, is accepted. Only for tests against self-signed servers; never in production. SNI and the client
    /// identity still apply. Default `false`.
    public var dangerouslyDisableCertificateVerification: Bool
    /// Whether the engine keeps the TLS sessions (session tickets) servers hand out and offers one when it connects
    /// to the same server again, so that the new connection skips the certificate exchange and its verification:
    /// reconnects and many connections to one server open with less CPU on both sides. Sessions stay inside the
    /// engine (memory only), are kept per server name and port, and are used only with this same configuration.
    /// Turn it off when a server must not be able to link two connections of this client by their session.
    /// Default `true`.
    public var resumesSessions: Bool

    /// Creates a TLS configuration; every argument defaults to the secure choice.
    /// - Parameters:
    ///   - trustRoots: The certificate authorities trusted.
    ///   - clientIdentity: The client certificate for mutual TLS.
    ///   - minimumVersion: The lowest TLS version accepted.
    ///   - serverNameOverride: The name to send as SNI and to verify instead of the URL's host.
    ///   - dangerouslyDisableCertificateVerification: Accept any certificate for any name (tests only).
    ///   - resumesSessions: Keep servers' TLS sessions and resume them on later connections.
    public init(
        trustRoots: TrustRoots = .system,
        clientIdentity: ClientIdentity? = nil,
        minimumVersion: Version = .tls12,
        serverNameOverride: String? = nil,
        dangerouslyDisableCertificateVerification: Bool = false,
        resumesSessions: Bool = true
    ) {
        self.trustRoots = trustRoots
        self.clientIdentity = clientIdentity
        self.minimumVersion = minimumVersion
        self.serverNameOverride = serverNameOverride
        self.dangerouslyDisableCertificateVerification = dangerouslyDisableCertificateVerification
        self.resumesSessions = resumesSessions
    }
}
