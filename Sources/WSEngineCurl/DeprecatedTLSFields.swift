// The Curl engine's flat TLS fields before they moved into `tls` (WSCore's WebSocketTLSConfiguration), kept as
// deprecated forwarders so that existing code compiles with a deprecation warning instead of an error.
public import WSCore

extension CurlEngine.Configuration {
    /// Creates a configuration from the former flat TLS fields.
    /// - Parameters:
    ///   - trustedCAFile: A PEM file of trusted CAs (replaces the built-in store).
    ///   - trustedCADirectory: A hashed directory of trusted CAs (replaces the built-in store).
    ///   - clientCertificateFile: A PEM client certificate chain for mutual TLS.
    ///   - clientPrivateKeyFile: The PEM private key of the client certificate.
    ///   - proxy: The proxy URL as libcurl reads it, `""` for none; `nil` for the client's setting
    ///     (`WebSocketClient.Configuration.proxy`).
    ///   - noProxy: Hosts that bypass that proxy.
    ///   - dangerouslyDisableCertificateVerification: Accept any certificate for any name (tests only).
    ///   - minimumTLSVersion: The lowest TLS version accepted.
    ///   - verbose: Log libcurl's trace (without header values) at `.debug`/`.trace`.
    ///   - readBufferSize: Bytes per read.
    ///   - eventLoopCount: Event-loop threads (at least 1).
    @available(
        *, deprecated, message: "use init(tls: WebSocketTLSConfiguration(...)) and WebSocketClient.Configuration.proxy"
    )
    public init(
        trustedCAFile: String? = nil,
        trustedCADirectory: String? = nil,
        clientCertificateFile: String? = nil,
        clientPrivateKeyFile: String? = nil,
        proxy: String? = nil,
        noProxy: String? = nil,
        dangerouslyDisableCertificateVerification: Bool = false,
        minimumTLSVersion: WebSocketTLSConfiguration.Version = .tls12,
        verbose: Bool = false,
        readBufferSize: Int = 256 * 1024,
        eventLoopCount: Int = CurlEngine.defaultEventLoopCount
    ) {
        self.init(
            tls: WebSocketTLSConfiguration(
                trustRoots: .certificates(file: trustedCAFile, directory: trustedCADirectory),
                clientIdentity: fileIdentity(certificate: clientCertificateFile, privateKey: clientPrivateKeyFile),
                minimumVersion: minimumTLSVersion,
                dangerouslyDisableCertificateVerification: dangerouslyDisableCertificateVerification),
            verbose: verbose, readBufferSize: readBufferSize, eventLoopCount: eventLoopCount)
        self.legacyProxy = proxy
        self.legacyNoProxy = noProxy
    }

    /// A PEM file of trusted CA certificates; now `tls.trustRoots` (`.file(_:)`).
    @available(*, deprecated, message: "use tls.trustRoots = .file(path)")
    public var trustedCAFile: String? {
        get { self.tls.trustRoots.file }
        set {
            let roots = self.tls.trustRoots
            self.tls.trustRoots = .certificates(file: newValue, directory: roots.directory, pem: roots.pem)
        }
    }

    /// A hashed directory of trusted CA certificates; now `tls.trustRoots` (`.directory(_:)`).
    @available(*, deprecated, message: "use tls.trustRoots = .directory(path)")
    public var trustedCADirectory: String? {
        get { self.tls.trustRoots.directory }
        set {
            let roots = self.tls.trustRoots
            self.tls.trustRoots = .certificates(file: roots.file, directory: newValue, pem: roots.pem)
        }
    }

    /// A PEM file with the client certificate; now `tls.clientIdentity` (`.files(certificate:privateKey:)`).
    @available(*, deprecated, message: "use tls.clientIdentity = .files(certificate:privateKey:)")
    public var clientCertificateFile: String? {
        get { identityFiles(self.tls.clientIdentity).certificate }
        set {
            self.tls.clientIdentity = fileIdentity(
                certificate: newValue, privateKey: identityFiles(self.tls.clientIdentity).privateKey)
        }
    }

    /// A PEM file with the client's private key; now `tls.clientIdentity` (`.files(certificate:privateKey:)`).
    @available(*, deprecated, message: "use tls.clientIdentity = .files(certificate:privateKey:)")
    public var clientPrivateKeyFile: String? {
        get { identityFiles(self.tls.clientIdentity).privateKey }
        set {
            self.tls.clientIdentity = fileIdentity(
                certificate: identityFiles(self.tls.clientIdentity).certificate, privateKey: newValue)
        }
    }

    /// Whether verification is off; now `tls.dangerouslyDisableCertificateVerification`.
    @available(*, deprecated, message: "use tls.dangerouslyDisableCertificateVerification")
    public var dangerouslyDisableCertificateVerification: Bool {
        get { self.tls.dangerouslyDisableCertificateVerification }
        set { self.tls.dangerouslyDisableCertificateVerification = newValue }
    }

    /// The lowest TLS version accepted; now `tls.minimumVersion`.
    @available(*, deprecated, message: "use tls.minimumVersion")
    public var minimumTLSVersion: WebSocketTLSConfiguration.Version {
        get { self.tls.minimumVersion }
        set { self.tls.minimumVersion = newValue }
    }
}

/// The file paths of a file identity (an empty path is an unset one).
private func identityFiles(_ identity: WebSocketTLSConfiguration.ClientIdentity?)
    -> (certificate: String?, privateKey: String?)
{
    guard case .files(let certificate, let privateKey)? = identity?.source else { return (nil, nil) }
    return (certificate.isEmpty ? nil : certificate, privateKey.isEmpty ? nil : privateKey)
}

/// A file identity from two optional paths: `nil` when both are unset. One unset path stays an empty string, which
/// the engine refuses with "must be set together" (before, libcurl looked for the key in the certificate file).
private func fileIdentity(certificate: String?, privateKey: String?) -> WebSocketTLSConfiguration.ClientIdentity? {
    guard certificate != nil || privateKey != nil else { return nil }
    return .files(certificate: certificate ?? "", privateKey: privateKey ?? "")
}
