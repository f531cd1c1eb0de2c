// What the connections of one CurlEngine share, although each has its own multi handle (see Connector.swift):
//
// - TLS sessions: libcurl (8.12+) keeps its session cache in the multi handle, or in a share handle with
//   CURL_LOCK_DATA_SSL_SESSION. One share handle per engine lets a connection resume a session an earlier one got.
//   libcurl keys the sessions by host name, port and the TLS options that go into verification (lib/vtls/
//   vtls_scache.c, Curl_ssl_peer_key_make), and the engine keeps them per engine (one endpoint configuration).
// - The trust store: libcurl's CA cache (CURLOPT_CA_CACHE_TIMEOUT) lives in the multi handle and cannot be shared,
//   so libcurl would parse the CA file again for every connection. When libcurl's TLS backend is the OpenSSL this
//   process links, the engine builds one X509_STORE per engine, with the verification flags libcurl sets on its own
//   store, and hands it to each connection's SSL_CTX from CURLOPT_SSL_CTX_FUNCTION, libcurl's CA loading turned off
//   (CURLOPT_CAINFO and CURLOPT_CAPATH NULL). Verification stays on and the host name check stays libcurl's: the
//   callback only swaps an empty store for the full one, so a connection without it verifies against nothing.
import CWSCurl
import CWSOpenSSL
import Glibc
import Synchronization
import WSCore

/// A libcurl share handle that shares TLS sessions between the easy handles that use it. Every easy handle that
/// uses it holds a reference (``CurlHandles``), so it is cleaned up after the last of them.
final class CurlShare: @unchecked Sendable {  // libcurl serializes its use with the handle's own mutexes (shim.h).
    let pointer: UnsafeMutablePointer<cws_curl_share>

    /// A new share handle, or `nil` when libcurl refuses one (then sessions are not shared).
    init?() {
        var code = CURLSHE_OK
        guard let pointer = cws_curl_share_new(&code) else { return nil }
        self.pointer = pointer
    }

    deinit {
        // CURLSHE_IN_USE (an easy handle was dropped without cleanup) leaks the handle rather than freeing it in use.
        _ = cws_curl_share_free(self.pointer)
    }
}

/// An X509_STORE built once and handed to many connections' SSL_CTXs (each takes a reference of its own).
final class SharedTrustStore: @unchecked Sendable {  // Not changed after init; OpenSSL locks lookups in the store.
    let store: OpaquePointer

    fileprivate init(store: OpaquePointer) { self.store = store }

    deinit { X509_STORE_free(self.store) }
}

/// What every connection of one engine shares: the TLS session cache and the trust store.
final class SharedTLS: Sendable {
    /// The share handle; `nil` when libcurl refused one.
    let share: CurlShare?
    /// The endpoints' TLS settings the store is built from.
    private let configuration: WebSocketTLSConfiguration
    /// The store once built (a failure is not kept: the next connect tries again).
    private let store = Mutex<SharedTrustStore?>(nil)

    init(configuration: WebSocketTLSConfiguration) {
        self.configuration = configuration
        self.share = LoadedCurl.initializationFailure == nil ? CurlShare() : nil
    }

    /// Whether libcurl's TLS backend is the OpenSSL this process links, so that an X509_STORE made here can go into
    /// libcurl's SSL_CTX: `curl_version_info()->ssl_version` must be exactly `OpenSSL/<major>.<minor>.<patch>` of
    /// the libssl loaded here (a libcurl with several backends lists them, and never matches).
    static let backendIsOurOpenSSL: Bool = sameOpenSSL(
        curlSSLVersion: LoadedCurl.sslVersion,
        ours: "OpenSSL/\(OPENSSL_version_major()).\(OPENSSL_version_minor()).\(OPENSSL_version_patch())")

    /// Whether libcurl's `curlSSLVersion` names the OpenSSL `ours` (separate for tests).
    static func sameOpenSSL(curlSSLVersion: String, ours: String) -> Bool { curlSSLVersion == ours }

    /// The engine's trust store for a connection that verifies the endpoint with the engine's settings, built on
    /// first use; `nil` when libcurl must load the CA certificates itself (another TLS backend, verification off,
    /// or a libcurl that does not say where its built-in store is).
    /// - Throws: `.tlsFailure` when the CA certificates cannot be loaded.
    func trustStore() throws(WebSocketError) -> SharedTrustStore? {
        guard Self.backendIsOurOpenSSL, !self.configuration.dangerouslyDisableCertificateVerification else {
            return nil
        }
        return try self.store.withLock { store throws(WebSocketError) -> SharedTrustStore? in
            if let store { return store }
            guard let built = try buildTrustStore(self.configuration.trustRoots) else { return nil }
            store = built
            return built
        }
    }
}

/// CURLOPT_SSL_CTX_FUNCTION for a connection with the engine's trust store (`userdata`, an X509_STORE): makes it
/// the SSL_CTX's store in place of the one libcurl left empty. Fails the handshake if either pointer is missing.
let useSharedTrustStore: curl_ssl_ctx_callback = { _, sslContext, userdata in
    guard let sslContext, let userdata else { return CURLE_SSL_CERTPROBLEM }
    SSL_CTX_set1_cert_store(OpaquePointer(sslContext), OpaquePointer(userdata))
    return CURLE_OK
}

/// Loads `roots` as libcurl would (ossl_populate_x509_store in lib/vtls/openssl.c): the system store is libcurl's
/// built-in CA bundle and directory; a file, a directory and PEM text are loaded as given. The store gets the flags
/// libcurl sets when it verifies the peer: X509_V_FLAG_TRUSTED_FIRST and X509_V_FLAG_PARTIAL_CHAIN (the engine sets
/// no CRL file and no CURLSSLOPT_NO_PARTIALCHAIN). Returns `nil` for the system store when libcurl names none.
private func buildTrustStore(_ roots: WebSocketTLSConfiguration.TrustRoots) throws(WebSocketError)
    -> SharedTrustStore?
{
    var file = roots.file
    var directory = roots.directory
    if roots.isSystem {
        file = cws_curl_default_ca(0).map { String(cString: $0) }
        directory = cws_curl_default_ca(1).map { String(cString: $0) }
        guard file != nil || directory != nil else { return nil }
    }
    // A client SSL_CTX is the simplest owner of a store while it is filled (the same loading as the CIO engine's).
    guard let context = SSL_CTX_new(TLS_client_method()) else {
        throw trustStoreError("could not create an OpenSSL context")
    }
    defer {
        SSL_CTX_free(context)
        ERR_clear_error()
    }
    if file != nil || directory != nil {
        guard SSL_CTX_load_verify_locations(context, file, directory) == 1 else {
            let what = [file, directory].compactMap { $0.map { "'\($0)'" } }.joined(separator: " and ")
            throw trustStoreError(
                roots.isSystem
                    ? "could not load the system trust store (libcurl's \(what))"
                    : "could not load the trusted CA certificates from \(what)")
        }
    }
    if let pem = roots.pem {
        let added = pem.utf8CString.withUnsafeBufferPointer {
            cws_ssl_ctx_add_trusted_pem(context, $0.baseAddress, Int32($0.count - 1))
        }
        guard added > 0 else {
            throw trustStoreError(
                added == 0
                    ? "the trusted CA PEM text holds no certificate"
                    : "could not load the trusted CA certificates from the PEM text")
        }
    }
    guard let store = SSL_CTX_get_cert_store(context), X509_STORE_up_ref(store) == 1 else {
        throw trustStoreError("could not keep the trust store")
    }
    guard X509_STORE_set_flags(store, UInt(X509_V_FLAG_TRUSTED_FIRST | X509_V_FLAG_PARTIAL_CHAIN)) == 1 else {
        X509_STORE_free(store)
        throw trustStoreError("could not set the trust store's verification flags")
    }
    return SharedTrustStore(store: store)
}

/// `TLS configuration: <what>`, with OpenSSL's first queued reason when there is one.
private func trustStoreError(_ what: String) -> WebSocketError {
    let code = ERR_get_error()
    guard code != 0, let reason = ERR_reason_error_string(code) else {
        return WebSocketError(.tlsFailure, "TLS configuration: \(what)")
    }
    return WebSocketError(.tlsFailure, "TLS configuration: \(what) (\(String(cString: reason)))")
}
