extension CIOEngine {
    /// A TLS protocol version, used as the lowest version the engine accepts.
    public struct TLSVersion: Sendable, Hashable, Comparable, CustomStringConvertible {
        private enum Base: Int, Sendable, Hashable {
            case tls12 = 12
            case tls13 = 13
        }
        private let base: Base
        private init(_ base: Base) { self.base = base }

        /// TLS 1.2 (RFC 5246).
        public static let tls12 = TLSVersion(.tls12)
        /// TLS 1.3 (RFC 8446).
        public static let tls13 = TLSVersion(.tls13)

        /// Whether `lhs` is an older version than `rhs`.
        public static func < (lhs: TLSVersion, rhs: TLSVersion) -> Bool { lhs.base.rawValue < rhs.base.rawValue }

        /// `TLSv1.2` or `TLSv1.3`.
        public var description: String { self.base == .tls12 ? "TLSv1.2" : "TLSv1.3" }

        /// Whether this is TLS 1.3.
        var isTLS13: Bool { self.base == .tls13 }
    }

    /// How the engine runs TLS for `wss` endpoints. Secure by default: the server's certificate chain is verified
    /// against the system trust store, its name is checked against the host (DNS name or IP address), SNI is sent
    /// for host names, and TLS 1.2 is the lowest version accepted.
    public struct TLSConfiguration: Sendable, Hashable {
        /// A PEM file of trusted CA certificates. When this or ``trustedCADirectory`` is set, it replaces the
        /// system trust store; when both are `nil` the system store is used (`SSL_CTX_set_default_verify_paths`).
        public var trustedCAFile: String?
        /// A directory of trusted CA certificates in OpenSSL's hashed layout (`c_rehash`); see ``trustedCAFile``.
        public var trustedCADirectory: String?
        /// A PEM file with the client certificate (chain) for mutual TLS; needs ``clientPrivateKeyFile``.
        public var clientCertificateFile: String?
        /// A PEM file with the private key of ``clientCertificateFile``.
        public var clientPrivateKeyFile: String?
        /// The lowest TLS version accepted. Default ``TLSVersion/tls12``.
        public var minimumVersion: TLSVersion
        /// The name sent as SNI and checked against the certificate instead of the endpoint's host, e.g. when
        /// connecting to an IP address of a named server.
        public var serverNameOverride: String?
        /// Turns off certificate chain AND host name verification, so that any server, including an attacker in
        /// the middle, is accepted. Only for tests against self-signed servers; never in production. Default
        /// `false`.
        public var dangerouslyDisableCertificateVerification: Bool

        /// Creates a TLS configuration; every argument defaults to the secure choice.
        /// - Parameters:
        ///   - trustedCAFile: A PEM file of trusted CAs (replaces the system store).
        ///   - trustedCADirectory: A hashed directory of trusted CAs (replaces the system store).
        ///   - clientCertificateFile: A PEM client certificate chain for mutual TLS.
        ///   - clientPrivateKeyFile: The PEM private key of the client certificate.
        ///   - minimumVersion: The lowest TLS version accepted.
        ///   - serverNameOverride: The name to send as SNI and to verify instead of the endpoint's host.
        ///   - dangerouslyDisableCertificateVerification: Accept any certificate for any name (tests only).
        public init(
            trustedCAFile: String? = nil,
            trustedCADirectory: String? = nil,
            clientCertificateFile: String? = nil,
            clientPrivateKeyFile: String? = nil,
            minimumVersion: TLSVersion = .tls12,
            serverNameOverride: String? = nil,
            dangerouslyDisableCertificateVerification: Bool = false
        ) {
            self.trustedCAFile = trustedCAFile
            self.trustedCADirectory = trustedCADirectory
            self.clientCertificateFile = clientCertificateFile
            self.clientPrivateKeyFile = clientPrivateKeyFile
            self.minimumVersion = minimumVersion
            self.serverNameOverride = serverNameOverride
            self.dangerouslyDisableCertificateVerification = dangerouslyDisableCertificateVerification
        }
    }
}
