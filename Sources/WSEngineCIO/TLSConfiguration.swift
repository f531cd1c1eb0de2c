// The CIO engine's TLS settings before they moved to WSCore's WebSocketTLSConfiguration, kept as deprecated
// forwarders so that existing code compiles with a deprecation warning instead of an error.
public import WSCore

extension CIOEngine {
    /// The CIO engine's TLS settings; now the engine-neutral `WebSocketTLSConfiguration`, which the Curl
    /// engine takes too.
    @available(*, deprecated, renamed: "WebSocketTLSConfiguration")
    public typealias TLSConfiguration = WebSocketTLSConfiguration

    /// A TLS protocol version; now `WebSocketTLSConfiguration.Version`.
    @available(*, deprecated, renamed: "WebSocketTLSConfiguration.Version")
    public typealias TLSVersion = WebSocketTLSConfiguration.Version
}

extension WebSocketTLSConfiguration {
    /// Creates a configuration from the fields of the CIO engine's former `TLSConfiguration`.
    /// - Parameters:
    ///   - trustedCAFile: A PEM file of trusted CAs (replaces the system store).
    ///   - trustedCADirectory: A hashed directory of trusted CAs (replaces the system store).
    ///   - clientCertificateFile: A PEM client certificate chain for mutual TLS.
    ///   - clientPrivateKeyFile: The PEM private key of the client certificate.
    ///   - minimumVersion: The lowest TLS version accepted.
    ///   - serverNameOverride: The name to send as SNI and to verify instead of the endpoint's host.
    ///   - dangerouslyDisableCertificateVerification: Accept any certificate for any name (tests only).
    @available(*, deprecated, message: "use init(trustRoots: .file(...), clientIdentity: .files(...), ...)")
    public init(
        trustedCAFile: String? = nil,
        trustedCADirectory: String? = nil,
        clientCertificateFile: String? = nil,
        clientPrivateKeyFile: String? = nil,
        minimumVersion: Version = .tls12,
        serverNameOverride: String? = nil,
        dangerouslyDisableCertificateVerification: Bool = false
    ) {
        self.init(
            trustRoots: .certificates(file: trustedCAFile, directory: trustedCADirectory),
            clientIdentity: Self.identity(certificate: clientCertificateFile, privateKey: clientPrivateKeyFile),
            minimumVersion: minimumVersion, serverNameOverride: serverNameOverride,
            dangerouslyDisableCertificateVerification: dangerouslyDisableCertificateVerification)
    }

    /// A PEM file of trusted CA certificates; now `trustRoots` (`.file(_:)`).
    @available(*, deprecated, message: "use trustRoots = .file(path)")
    public var trustedCAFile: String? {
        get { self.trustRoots.file }
        set {
            self.trustRoots = .certificates(
                file: newValue, directory: self.trustRoots.directory, pem: self.trustRoots.pem)
        }
    }

    /// A hashed directory of trusted CA certificates; now `trustRoots` (`.directory(_:)`).
    @available(*, deprecated, message: "use trustRoots = .directory(path)")
    public var trustedCADirectory: String? {
        get { self.trustRoots.directory }
        set {
            self.trustRoots = .certificates(file: self.trustRoots.file, directory: newValue, pem: self.trustRoots.pem)
        }
    }

    /// A PEM file with the client certificate; now `clientIdentity` (`.files(certificate:privateKey:)`).
    @available(*, deprecated, message: "use clientIdentity = .files(certificate:privateKey:)")
    public var clientCertificateFile: String? {
        get { self.identityFiles.certificate }
        set { self.clientIdentity = Self.identity(certificate: newValue, privateKey: self.identityFiles.privateKey) }
    }

    /// A PEM file with the client's private key; now `clientIdentity` (`.files(certificate:privateKey:)`).
    @available(*, deprecated, message: "use clientIdentity = .files(certificate:privateKey:)")
    public var clientPrivateKeyFile: String? {
        get { self.identityFiles.privateKey }
        set { self.clientIdentity = Self.identity(certificate: self.identityFiles.certificate, privateKey: newValue) }
    }

    /// The file paths of a file identity (an empty path is an unset one).
    private var identityFiles: (certificate: String?, privateKey: String?) {
        guard case .files(let certificate, let privateKey)? = self.clientIdentity?.source else { return (nil, nil) }
        return (certificate.isEmpty ? nil : certificate, privateKey.isEmpty ? nil : privateKey)
    }

    /// A file identity from two optional paths: `nil` when both are unset; one unset path stays an empty string,
    /// which the engine refuses ("must be set together") as it always did.
    private static func identity(certificate: String?, privateKey: String?) -> ClientIdentity? {
        guard certificate != nil || privateKey != nil else { return nil }
        return .files(certificate: certificate ?? "", privateKey: privateKey ?? "")
    }
}
