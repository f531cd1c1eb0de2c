// WebSocketTLSConfiguration → libcurl options, for the endpoint's TLS (a proxy's TLS keeps libcurl's defaults).
import CWSCurl
import Glibc
import WSCore

/// libcurl 7.71.0, the first with CURLOPT_SSLCERT_BLOB and CURLOPT_SSLKEY_BLOB.
let clientPEMVersion: UInt32 = 0x07_47_00
/// libcurl 7.77.0, the first with CURLOPT_CAINFO_BLOB.
let trustPEMVersion: UInt32 = 0x07_4D_00

/// Sets the TLS options of `tls` on the easy handle.
/// - Throws: `.tlsFailure` for a configuration the engine refuses (a client certificate without its key, an
///   unreadable CA file to merge with PEM text), `.unsupported` when the loaded libcurl is too old for PEM in
///   memory, or the error of a rejected option.
func setTLSOptions(_ tls: WebSocketTLSConfiguration, _ options: EasyOptions) throws(CurlOptionError) {
    let roots = tls.trustRoots
    if !roots.isSystem && !tls.dangerouslyDisableCertificateVerification {
        // Our roots replace the built-in store: an unset file or directory means "none", not libcurl's default.
        try options.set(CURLOPT_CAPATH, roots.directory, "CURLOPT_CAPATH")
        if var pem = roots.pem {
            try requireVersion(trustPEMVersion, "7.77", for: "trusted CA certificates in memory (CURLOPT_CAINFO_BLOB)")
            // CURLOPT_CAINFO_BLOB overrides CURLOPT_CAINFO: a file given as well joins the text.
            if let file = roots.file {
                guard let contents = readTextFile(file) else {
                    throw CurlOptionError(
                        error: WebSocketError(
                            .tlsFailure, "TLS configuration: could not load the trusted CA certificates from '\(file)'"))
                }
                pem = contents + "\n" + pem
            }
            try options.set(CURLOPT_CAINFO, nil, "CURLOPT_CAINFO")
            try options.setPEM(CWS_CURL_PEM_CAINFO, pem, "CURLOPT_CAINFO_BLOB")
        } else {
            try options.set(CURLOPT_CAINFO, roots.file, "CURLOPT_CAINFO")
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
            try options.set(CURLOPT_SSLCERT, certificate, "CURLOPT_SSLCERT")
            try options.set(CURLOPT_SSLKEY, key, "CURLOPT_SSLKEY")
        case .pem(let certificate, let key):
            try requireVersion(clientPEMVersion, "7.71", for: "a client identity in memory (CURLOPT_SSLCERT_BLOB)")
            try options.setPEM(CWS_CURL_PEM_SSLCERT, certificate, "CURLOPT_SSLCERT_BLOB")
            try options.setPEM(CWS_CURL_PEM_SSLKEY, key, "CURLOPT_SSLKEY_BLOB")
        }
        try options.set(CURLOPT_SSLCERTTYPE, "PEM", "CURLOPT_SSLCERTTYPE")
        try options.set(CURLOPT_SSLKEYTYPE, "PEM", "CURLOPT_SSLKEYTYPE")
        if let password = identity.privateKeyPassword {
            try options.set(CURLOPT_KEYPASSWD, password, "CURLOPT_KEYPASSWD")
        }
    }

    let minimumVersion = tls.minimumVersion == .tls13 ? cws_curl_sslversion_tls13() : cws_curl_sslversion_tls12()
    try options.set(CURLOPT_SSLVERSION, minimumVersion, "CURLOPT_SSLVERSION")
    if tls.dangerouslyDisableCertificateVerification {
        try options.set(CURLOPT_SSL_VERIFYPEER, 0, "CURLOPT_SSL_VERIFYPEER")
        try options.set(CURLOPT_SSL_VERIFYHOST, 0, "CURLOPT_SSL_VERIFYHOST")
    } else {
        try options.set(CURLOPT_SSL_VERIFYPEER, 1, "CURLOPT_SSL_VERIFYPEER")
        try options.set(CURLOPT_SSL_VERIFYHOST, 2, "CURLOPT_SSL_VERIFYHOST")
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
