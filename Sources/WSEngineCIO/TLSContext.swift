// The engine's one SSL_CTX (built lazily on the first wss connect, then shared by every connection) and the
// helpers that turn OpenSSL failures into readable `.tlsFailure` errors. Its client session store, for resumption,
// is in TLSSessionCache.swift.
//
// TLS I/O goes through a custom socket BIO (cwsl_sockbio_* in CWSLazyOpenSSL) that calls send(MSG_NOSIGNAL)
// and recv on the connection's socket: no SIGPIPE and no process-wide signal change, and no extra copy through a
// memory BIO.
//
// OpenSSL is loaded here, when the first context is built (CWSLazyOpenSSL: dlopen, not linked), so a process that
// never opens a TLS connection does not map libssl and libcrypto. Every other OpenSSL call works on an object made
// from a context, so it runs after the load.
import CWSLazyOpenSSL
import WSCore

/// The configured OpenSSL client context and the BIO method table of the no-SIGPIPE socket BIO.
final class TLSContext: @unchecked Sendable {  // Immutable after init; OpenSSL locks SSL_CTX internally.
    // Thread rules: `context` and `bioMethod` are configured in init and never changed afterwards; OpenSSL
    // locks SSL_CTX internally, so SSL_new may run on any thread. Connections retain this object, so the BIO
    // method outlives every BIO made from it.

    /// The SSL_CTX.
    let context: OpaquePointer
    /// The BIO_METHOD of the no-SIGPIPE socket BIO.
    private let bioMethod: OpaquePointer
    /// The configuration the context was built from.
    let configuration: WebSocketTLSConfiguration
    /// The kept client sessions, or `nil` when ``WebSocketTLSConfiguration/resumesSessions`` is off (then nothing is
    /// kept and nothing offered).
    let sessions: TLSSessionCache?

    /// Whether certificates and host names are verified.
    var verifiesPeer: Bool { !self.configuration.dangerouslyDisableCertificateVerification }

    /// Builds the context: verification, trust store, client identity, minimum version, options.
    init(configuration: WebSocketTLSConfiguration) throws(WebSocketError) {
        var loadError: UnsafePointer<CChar>?
        guard cwsl_openssl_load(&loadError) == 1 else {
            throw WebSocketError(
                .tlsFailure, "TLS configuration: " + (loadError.map { String(cString: $0) } ?? "no OpenSSL"))
        }
        self.configuration = configuration
        self.sessions = configuration.resumesSessions ? TLSSessionCache() : nil
        cwsl_ERR_clear_error()
        guard let method = cwsl_sockbio_method_new() else {
            throw tlsConfigurationError("could not create the socket BIO method")
        }
        guard let context = cwsl_SSL_CTX_new(cwsl_TLS_client_method()) else {
            cwsl_BIO_meth_free(method)
            throw tlsConfigurationError("could not create an OpenSSL client context")
        }
        self.bioMethod = method
        self.context = context
        // From here on deinit frees both on a throw.

        let minimum = configuration.minimumVersion == .tls13 ? cwsl_tls1_3_version() : cwsl_tls1_2_version()
        guard cwsl_ssl_ctx_set_min_proto(context, minimum) == 1 else {
            throw tlsConfigurationError("could not set the minimum TLS version \(configuration.minimumVersion)")
        }
        // No TLS compression (CRIME) and no TLS 1.2 renegotiation (so SSL_write never needs to read); an EOF
        // without close_notify reads as a clean end of stream: WebSocket has its own close handshake, so the
        // session still detects a truncated connection (close code 1006).
        _ = cwsl_SSL_CTX_set_options(
            context,
            UInt64(cwsl_ssl_op_no_compression()) | cwsl_ssl_op_no_renegotiation() | cwsl_ssl_op_ignore_unexpected_eof())
        _ = cwsl_ssl_ctx_set_mode(context, cwsl_ssl_mode_partial_write())
        // A connection with nothing to read or write gives its record buffers back (about 34 KiB per connection that
        // would otherwise stay allocated for as long as it is open, idle or not).
        _ = cwsl_ssl_ctx_set_mode(context, cwsl_ssl_mode_release_buffers())
        // Read whole socket chunks instead of a header and a body per record: half the recv calls. Readers use
        // SSL_has_pending, which counts these read-ahead bytes.
        cwsl_ssl_ctx_set_read_ahead(context, 1)

        if configuration.dangerouslyDisableCertificateVerification {
            cwsl_SSL_CTX_set_verify(context, SSL_VERIFY_NONE, nil)
        } else {
            cwsl_SSL_CTX_set_verify(context, SSL_VERIFY_PEER, nil)
            try Self.loadTrustRoots(configuration.trustRoots, into: context)
        }
        if let identity = configuration.clientIdentity {
            try Self.loadIdentity(identity, into: context)
        }
        if self.sessions != nil {
            // Resumed handshakes skip the certificate and its verification: see TLSSessionCache.swift for why a
            // session is only offered to what it was verified for.
            TLSSessionCache.install(on: context)
        }
    }

    /// Loads `roots` into the context's trust store; any roots but the system's replace it.
    private static func loadTrustRoots(_ roots: WebSocketTLSConfiguration.TrustRoots, into context: OpaquePointer)
        throws(WebSocketError)
    {
        guard !roots.isSystem else {
            guard cwsl_SSL_CTX_set_default_verify_paths(context) == 1 else {
                throw tlsConfigurationError("could not load the system trust store")
            }
            return
        }
        if roots.file != nil || roots.directory != nil {
            guard cwsl_SSL_CTX_load_verify_locations(context, roots.file, roots.directory) == 1 else {
                let what = [roots.file, roots.directory].compactMap { $0.map { "'\($0)'" } }.joined(separator: " and ")
                throw tlsConfigurationError("could not load the trusted CA certificates from \(what)")
            }
        }
        if let pem = roots.pem {
            let added = pem.utf8CString.withUnsafeBufferPointer {
                cwsl_ssl_ctx_add_trusted_pem(context, $0.baseAddress, Int32($0.count - 1))
            }
            guard added > 0 else {
                throw tlsConfigurationError(
                    added == 0
                        ? "the trusted CA PEM text holds no certificate"
                        : "could not load the trusted CA certificates from the PEM text")
            }
        }
    }

    /// Makes `identity` the context's client certificate chain and private key, and checks that they match.
    private static func loadIdentity(_ identity: WebSocketTLSConfiguration.ClientIdentity, into context: OpaquePointer)
        throws(WebSocketError)
    {
        let password = identity.privateKeyPassword
        switch identity.source {
        case .files(let certificate, let key):
            guard !certificate.isEmpty, !key.isEmpty else {
                throw WebSocketError(
                    .tlsFailure,
                    "TLS configuration: the client certificate and private key must be set together")
            }
            guard cwsl_SSL_CTX_use_certificate_chain_file(context, certificate) == 1 else {
                throw tlsConfigurationError("could not load the client certificate '\(certificate)'")
            }
            guard cwsl_ssl_ctx_use_private_key_file(context, key, password) == 1 else {
                throw tlsConfigurationError(
                    "could not load the client private key '\(key)'"
                        + (password == nil ? " (an encrypted key needs its password)" : ""))
            }
            guard cwsl_SSL_CTX_check_private_key(context) == 1 else {
                throw tlsConfigurationError("the client private key '\(key)' does not match '\(certificate)'")
            }
        case .pem(let certificate, let key):
            let loaded = certificate.utf8CString.withUnsafeBufferPointer {
                cwsl_ssl_ctx_use_certificate_chain_pem(context, $0.baseAddress, Int32($0.count - 1))
            }
            guard loaded == 1 else {
                throw tlsConfigurationError("could not load the client certificate from the PEM text")
            }
            let keyLoaded = key.utf8CString.withUnsafeBufferPointer {
                cwsl_ssl_ctx_use_private_key_pem(context, $0.baseAddress, Int32($0.count - 1), password)
            }
            guard keyLoaded == 1 else {
                throw tlsConfigurationError(
                    "could not load the client private key from the PEM text"
                        + (password == nil ? " (an encrypted key needs its password)" : ""))
            }
            guard cwsl_SSL_CTX_check_private_key(context) == 1 else {
                throw tlsConfigurationError("the client private key does not match the client certificate")
            }
        }
    }

    deinit {
        cwsl_SSL_CTX_free(self.context)
        cwsl_BIO_meth_free(self.bioMethod)
    }

    /// A new client SSL over `fd` to `server`: set up to send SNI for its server name (unless it is an IP
    /// literal), when verifying to check the certificate against that name (`SSL_set1_host`, or the IP address for
    /// literals), to offer its ALPN protocols (wire format: length-prefixed names; empty for none), and, when
    /// sessions are resumed, to offer a session kept for `server` and to keep the sessions it brings.
    func makeSSL(fd: Int32, server: TLSSessionKey) throws(WebSocketError) -> OpaquePointer {
        try self.makeSSL(server: server) { cwsl_sockbio_new(self.bioMethod, fd) }
    }

    /// A new client SSL that runs inside `outer` (TLS to the endpoint through the TLS connection to an https://
    /// proxy), set up like ``makeSSL(fd:server:)``: ALPN is end to end, so the endpoint sees the same offer as on a
    /// direct connection. `outer` must outlive the returned SSL.
    func makeSSL(over outer: OpaquePointer, server: TLSSessionKey) throws(WebSocketError) -> OpaquePointer {
        try self.makeSSL(server: server) { cwsl_bio_new_ssl_filter(outer) }
    }

    private func makeSSL(server: TLSSessionKey, bio makeBIO: () -> OpaquePointer?) throws(WebSocketError)
        -> OpaquePointer
    {
        let serverName = server.serverName
        let alpn = server.alpn
        cwsl_ERR_clear_error()
        guard let ssl = cwsl_SSL_new(self.context) else {
            throw tlsConfigurationError("could not create an OpenSSL connection")
        }
        guard let bio = makeBIO() else {
            cwsl_SSL_free(ssl)
            throw tlsConfigurationError("could not create the BIO")
        }
        cwsl_SSL_set_bio(ssl, bio, bio)
        cwsl_SSL_set_connect_state(ssl)
        let isIPLiteral = SocketAddress.isIPLiteral(serverName)
        var configured = true
        if !isIPLiteral {
            configured = cwsl_ssl_set_sni(ssl, serverName) == 1
        }
        if configured && self.verifiesPeer {
            if isIPLiteral {
                configured = cwsl_X509_VERIFY_PARAM_set1_ip_asc(cwsl_SSL_get0_param(ssl), serverName) == 1
            } else {
                cwsl_SSL_set_hostflags(ssl, UInt32(X509_CHECK_FLAG_NO_PARTIAL_WILDCARDS))
                configured = cwsl_SSL_set1_host(ssl, serverName) == 1
            }
        }
        guard configured else {
            cwsl_SSL_free(ssl)
            throw tlsConfigurationError("could not set the TLS server name '\(serverName)'")
        }
        // SSL_set_alpn_protos returns 0 on success.
        if !alpn.isEmpty, cwsl_SSL_set_alpn_protos(ssl, alpn, UInt32(alpn.count)) != 0 {
            cwsl_SSL_free(ssl)
            throw tlsConfigurationError("could not set the ALPN protocols")
        }
        // Only after the name to verify is set: a session is offered to the server it was verified for.
        self.sessions?.prepare(ssl, for: server)
        return ssl
    }
}

/// Drains OpenSSL's error queue of this thread into one line (`error:0A000086:...; ...`), or `nil` if empty.
func drainOpenSSLErrors() -> String? {
    var parts: [String] = []
    var buffer = [CChar](repeating: 0, count: 256)
    while true {
        let code = cwsl_ERR_get_error()
        if code == 0 { break }
        cwsl_ERR_error_string_n(code, &buffer, buffer.count)
        parts.append(string(fromCBuffer: buffer))
    }
    return parts.isEmpty ? nil : parts.joined(separator: "; ")
}

/// A `.tlsFailure` for a local setup problem, with the OpenSSL error queue appended.
func tlsConfigurationError(_ message: String) -> WebSocketError {
    let queue = drainOpenSSLErrors()
    return WebSocketError(.tlsFailure, "TLS configuration: \(message)" + (queue.map { " (\($0))" } ?? ""))
}

/// A `.tlsFailure` for a failed TLS operation on `ssl`: the verification failure (e.g. "certificate verify
/// failed: hostname mismatch") when there is one, the OpenSSL error queue, and the OS error if any.
/// - Parameters:
///   - prefix: What failed, e.g. "TLS handshake with localhost:443 failed".
///   - ssl: The connection, to read its verification result.
///   - verifying: Whether certificate verification was on.
///   - sslError: The SSL_get_error code.
///   - systemErrno: `errno` right after the failed call, for SSL_ERROR_SYSCALL.
func tlsFailure(
    _ prefix: String, ssl: OpaquePointer, verifying: Bool, sslError: Int32, systemErrno: Int32
) -> WebSocketError {
    var reasons: [String] = []
    let verifyResult = cwsl_SSL_get_verify_result(ssl)
    if verifying && verifyResult != Int(X509_V_OK) {
        reasons.append(
            "certificate verify failed: \(String(cString: cwsl_X509_verify_cert_error_string(verifyResult)))")
    }
    var underlying: SystemError?
    if sslError == SSL_ERROR_SYSCALL {
        if systemErrno != 0 {
            let error = systemError("SSL I/O", systemErrno)
            underlying = error
            reasons.append(error.text)
        } else {
            reasons.append("the peer closed the connection")
        }
    }
    if let queue = drainOpenSSLErrors() { reasons.append(queue) }
    if reasons.isEmpty { reasons.append("SSL error \(sslError)") }
    return WebSocketError(.tlsFailure, "\(prefix): \(reasons.joined(separator: "; "))", underlying: underlying)
}
