// WebSocketTLSConfiguration → libcurl options, for the endpoint's TLS and for an https:// proxy's TLS.
import CWSCurl
import Glibc
import WSCore

/// libcurl 7.71.0, the first with CURLOPT_SSLCERT_BLOB and CURLOPT_SSLKEY_BLOB.
let clientPEMVersion: UInt32 = 0x07_47_00
/// libcurl 7.77.0, the first with CURLOPT_CAINFO_BLOB.
let trustPEMVersion: UInt32 = 0x07_4D_00

/// The libcurl options one TLS connection is configured with: the endpoint's (`CURLOPT_CAINFO`, ...) or an
/// `https://` proxy's (`CURLOPT_PROXY_CAINFO`, ...).
struct TLSOptionSet {
    let caInfo: CURLoption
    let caPath: CURLoption
    let caInfoPEM: Int32
    let certificate: CURLoption
    let privateKey: CURLoption
    let certificatePEM: Int32
    let privateKeyPEM: Int32
    let certificateType: CURLoption
    let privateKeyType: CURLoption
    let keyPassword: CURLoption
    let version: CURLoption
    let verifyPeer: CURLoption
    let verifyHost: CURLoption
    /// `""` or `PROXY_`, for the option names in error messages.
    let prefix: String

    /// The options of the TLS connection with the endpoint.
    static let endpoint = TLSOptionSet(
        caInfo: CURLOPT_CAINFO, caPath: CURLOPT_CAPATH, caInfoPEM: CWS_CURL_PEM_CAINFO, certificate: CURLOPT_SSLCERT,
        privateKey: CURLOPT_SSLKEY, certificatePEM: CWS_CURL_PEM_SSLCERT, privateKeyPEM: CWS_CURL_PEM_SSLKEY,
        certificateType: CURLOPT_SSLCERTTYPE, privateKeyType: CURLOPT_SSLKEYTYPE, keyPassword: CURLOPT_KEYPASSWD,
        version: CURLOPT_SSLVERSION, verifyPeer: CURLOPT_SSL_VERIFYPEER, verifyHost: CURLOPT_SSL_VERIFYHOST,
        prefix: "")

    /// The options of the TLS connection with an `https://` proxy.
    static let proxy = TLSOptionSet(
        caInfo: CURLOPT_PROXY_CAINFO, caPath: CURLOPT_PROXY_CAPATH, caInfoPEM: CWS_CURL_PEM_PROXY_CAINFO,
        certificate: CURLOPT_PROXY_SSLCERT, privateKey: CURLOPT_PROXY_SSLKEY,
        certificatePEM: CWS_CURL_PEM_PROXY_SSLCERT, privateKeyPEM: CWS_CURL_PEM_PROXY_SSLKEY,
        certificateType: CURLOPT_PROXY_SSLCERTTYPE, privateKeyType: CURLOPT_PROXY_SSLKEYTYPE,
        keyPassword: CURLOPT_PROXY_KEYPASSWD, version: CURLOPT_PROXY_SSLVERSION,
        verifyPeer: CURLOPT_PROXY_SSL_VERIFYPEER, verifyHost: CURLOPT_PROXY_SSL_VERIFYHOST, prefix: "PROXY_")

    /// `CURLOPT_<prefix><name>`.
    func name(_ name: String) -> String { "CURLOPT_\(self.prefix)\(name)" }
}

/// Sets the TLS options of `tls` on the easy handle, as `names` names them (the endpoint's or a proxy's). The
/// server name override is the caller's business (it applies to the endpoint only). With `engineTrustStore`,
/// libcurl loads no CA certificates (`CURLOPT_CAINFO` and `CURLOPT_CAPATH` NULL): the engine's store goes into the
/// SSL_CTX from CURLOPT_SSL_CTX_FUNCTION instead (SharedTLS.swift).
/// - Throws: `.tlsFailure` for a configuration the engine refuses (a client certificate without its key, an
///   unreadable CA file to merge with PEM text), `.unsupported` when the loaded libcurl is too old for PEM in
///   memory, or the error of a rejected option.
func setTLSOptions(
    _ tls: WebSocketTLSConfiguration, _ options: EasyOptions, _ names: TLSOptionSet = .endpoint,
    engineTrustStore: Bool = false
) throws(CurlOptionError) {
    let roots = tls.trustRoots
    if engineTrustStore {
        try options.set(names.caInfo, nil, names.name("CAINFO"))
        try options.set(names.caPath, nil, names.name("CAPATH"))
    } else if !roots.isSystem && !tls.dangerouslyDisableCertificateVerification {
        // Our roots replace the built-in store: an unset file or directory means "none", not libcurl's default.
        try options.set(names.caPath, roots.directory, names.name("CAPATH"))
        if var pem = roots.pem {
            try requireVersion(
                trustPEMVersion, "7.77", for: "trusted CA certificates in memory (\(names.name("CAINFO_BLOB")))")
            // CURLOPT_CAINFO_BLOB overrides CURLOPT_CAINFO: a file given as well joins the text.
            if let file = roots.file {
                guard let contents = readTextFile(file) else {
                    throw CurlOptionError(
                        error: WebSocketError(
                            .tlsFailure, "TLS configuration: could not load the trusted CA certificates from '\(file)'")
                    )
                }
                pem = contents + "\n" + pem
            }
            try options.set(names.caInfo, nil, names.name("CAINFO"))
            try options.setPEM(names.caInfoPEM, pem, names.name("CAINFO_BLOB"))
        } else {
            try options.set(names.caInfo, roots.file, names.name("CAINFO"))
        }
    }

    if let identity = tls.clientIdentity {
        switch identity.source {
        case .files(let certificate, let key):
            guard !certificate.isEmpty, !key.isEmpty else {
                throw CurlOptionError(
                    error: WebSocketError(
                        .tlsFailure, "TLS configuration: the client certificate and private key must be set together"))
            }
            try options.set(names.certificate, certificate, names.name("SSLCERT"))
            try options.set(names.privateKey, key, names.name("SSLKEY"))
        case .pem(let certificate, let key):
            try requireVersion(
                clientPEMVersion, "7.71", for: "a client identity in memory (\(names.name("SSLCERT_BLOB")))")
            try options.setPEM(names.certificatePEM, certificate, names.name("SSLCERT_BLOB"))
            try options.setPEM(names.privateKeyPEM, key, names.name("SSLKEY_BLOB"))
        }
        try options.set(names.certificateType, "PEM", names.name("SSLCERTTYPE"))
        try options.set(names.privateKeyType, "PEM", names.name("SSLKEYTYPE"))
        if let password = identity.privateKeyPassword {
            try options.set(names.keyPassword, password, names.name("KEYPASSWD"))
        }
    }

    let minimumVersion = tls.minimumVersion == .tls13 ? cws_curl_sslversion_tls13() : cws_curl_sslversion_tls12()
    try options.set(names.version, minimumVersion, names.name("SSLVERSION"))
    if tls.dangerouslyDisableCertificateVerification {
        try options.set(names.verifyPeer, 0, names.name("SSL_VERIFYPEER"))
        try options.set(names.verifyHost, 0, names.name("SSL_VERIFYHOST"))
    } else {
        try options.set(names.verifyPeer, 1, names.name("SSL_VERIFYPEER"))
        try options.set(names.verifyHost, 2, names.name("SSL_VERIFYHOST"))
    }
}

/// Throws `.unsupported` naming the loaded version unless libcurl is at least `minimum`.
private func requireVersion(_ minimum: UInt32, _ text: String, for what: String) throws(CurlOptionError) {
    if let reason = tooOldReason(
        loaded: cws_curl_version_num(), loadedText: LoadedCurl.version, minimum: minimum, minimumText: text, for: what)
    {
        throw CurlOptionError(error: WebSocketError(.unsupported, reason))
    }
}

/// Why a libcurl `loaded` (0xXXYYZZ) cannot do `what`, which needs `minimum`; `nil` when it can (separate for tests).
func tooOldReason(loaded: UInt32, loadedText: String, minimum: UInt32, minimumText: String, for what: String)
    -> String?
{
    guard loaded < minimum else { return nil }
    return "\(what) needs libcurl \(minimumText) or newer, and this process loaded libcurl \(loadedText): give "
        + "PEM files instead, install a newer libcurl (Debian 12: bookworm-backports), or use the CIO engine"
}

/// The contents of a text file, or `nil` when it cannot be read.
private func readTextFile(_ path: String) -> String? {
    guard let file = fopen(path, "rb") else { return nil }
    defer { fclose(file) }
    var bytes: [UInt8] = []
    var chunk = [UInt8](repeating: 0, count: 16 * 1024)
    while true {
        let count = fread(&chunk, 1, chunk.count, file)
        if count > 0 { bytes.append(contentsOf: chunk[..<count]) }
        if count < chunk.count { break }
    }
    guard ferror(file) == 0 else { return nil }
    return String(decoding: bytes, as: UTF8.self)
}
