// libcurl plumbing: one-time global init, the loaded library's version and protocols, typed option setters that
// turn a rejected option into a thrown error, CURLcode → WebSocketError mapping, and the verbose-trace
// bridge from CURLOPT_DEBUGFUNCTION into swift-log.
import CWSCurl
import Glibc
import Logging
import Synchronization
import WSCore
import WSPosix

/// Facts about the libcurl loaded into this process.
enum LoadedCurl {
    /// `curl_global_init(CURL_GLOBAL_DEFAULT)`, run once (Swift runs a global's initializer exactly once,
    /// thread-safely); `nil` on success, else the failure text.
    static let initializationFailure: String? = {
        let code = cws_curl_global_init()
        return code == CURLE_OK ? nil : "curl_global_init failed: \(String(cString: curl_easy_strerror(code)))"
    }()

    /// The version text, e.g. `8.14.1`.
    static let version: String = {
        _ = initializationFailure
        return String(cString: cws_curl_version_text())
    }()

    /// The TLS backend text, e.g. `OpenSSL/3.0.17`; empty without TLS.
    static let sslVersion: String = {
        _ = initializationFailure
        return String(cString: cws_curl_ssl_version_text())
    }()

    /// Whether the protocols list has both `ws` and `wss`.
    static let hasWebSockets: Bool = {
        _ = initializationFailure
        return cws_curl_has_protocol("ws") != 0 && cws_curl_has_protocol("wss") != 0
    }()

    /// Whether the protocols list has `https` (a TLS backend is built in).
    static let hasHTTPS: Bool = {
        _ = initializationFailure
        return cws_curl_has_protocol("https") != 0
    }()

    /// Why this libcurl cannot serve WebSockets, or `nil` when it can.
    static var webSocketUnsupportedReason: String? {
        webSocketUnsupportedReason(
            version: version, hasWebSockets: hasWebSockets, initializationFailure: initializationFailure)
    }

    /// The reason text for a libcurl `version` with or without `ws`/`wss` (separate for tests).
    static func webSocketUnsupportedReason(version: String, hasWebSockets: Bool, initializationFailure: String?)
        -> String?
    {
        if let initializationFailure {
            return "libcurl could not be initialized (\(initializationFailure)) — use the CIO engine instead"
        }
        guard !hasWebSockets else { return nil }
        return "the loaded libcurl \(version) was built without WebSocket support (needs 7.86+ with ws/wss; on "
            + "Debian 12 install libcurl4-openssl-dev from bookworm-backports) — use the CIO engine instead"
    }
}

/// A libcurl failure outside the classified connect errors, carried as the `underlying` error.
struct CurlError: Error, Sendable, CustomStringConvertible {
    /// The `CURLcode` value.
    let code: Int
    /// `curl_easy_strerror` of the code.
    let text: String
    /// The CURLOPT_ERRORBUFFER detail, if any.
    let detail: String

    init(_ code: CURLcode, detail: String) {
        self.code = Int(code.rawValue)
        self.text = String(cString: curl_easy_strerror(code))
        self.detail = detail
    }

    /// `Could not connect to server (Failed to connect to 127.0.0.1 port 1 after 0 ms: ...)`: the
    /// `curl_easy_strerror` text, then the CURLOPT_ERRORBUFFER detail when there is one.
    var summary: String {
        self.detail.isEmpty || self.detail == self.text ? self.text : "\(self.text) (\(self.detail))"
    }

    /// `CURLE 7: Could not connect to server (Failed to connect to ...)`.
    var description: String { "CURLE \(self.code): \(self.summary)" }
}

/// A CURLOPT_ERRORBUFFER of CURL_ERROR_SIZE bytes, owned by one easy handle; free it after the handle is cleaned up.
struct ErrorBuffer: @unchecked Sendable {  // Guarded like its easy handle (see CurlHandles).
    let pointer: UnsafeMutablePointer<CChar>

    static func allocate() -> ErrorBuffer {
        let size = cws_curl_error_size() + 1
        let pointer = UnsafeMutablePointer<CChar>.allocate(capacity: size)
        pointer.initialize(repeating: 0, count: size)
        return ErrorBuffer(pointer: pointer)
    }

    /// Empties the buffer before a call whose failure detail we want.
    func clear() { self.pointer[0] = 0 }

    /// The detail text, trimmed.
    var text: String {
        var text = String(cString: self.pointer)
        while text.last?.isWhitespace == true { text.removeLast() }
        return text
    }

    func deallocate() { self.pointer.deallocate() }
}

/// The easy handles alive in this process (connects in progress, and connections that keep libcurl's handles).
let liveCurlEasyHandles = Atomic<Int>(0)
/// The multi handles alive in this process: one per connection that keeps libcurl's handles (and per such connect in
/// progress), plus one per event loop that has made a connect without TLS on its path (``ConnectMulti``).
let liveCurlMultiHandles = Atomic<Int>(0)
/// The multi handles this process has created so far (for tests: plain connects must not create one each).
let createdCurlMultiHandles = Atomic<Int>(0)
/// Taken-over connections whose libcurl connection was not closed when their easy handle was removed from the shared
/// multi handle (their transport then got a duplicate of the socket; for tests, which expect none).
let curlConnectionsKeptByLibcurl = Atomic<Int>(0)

/// An easy handle, and the connection's own multi handle when it has one (see CurlConnector for which do).
struct CurlHandles: @unchecked Sendable {  // Loop thread while connecting, then the CurlTransport's `state` Mutex.
    let easy: UnsafeMutableRawPointer
    /// The connection's own multi handle; `nil` when the easy handle is driven by its loop's shared
    /// ``ConnectMulti``, which it must have been removed from before ``cleanup()``.
    let multi: UnsafeMutableRawPointer?
    let errorBuffer: ErrorBuffer
    /// The retained CurlDebugContext passed as CURLOPT_DEBUGDATA, or `nil` when not verbose.
    let debugContext: UnsafeMutableRawPointer?
    /// The CURLOPT_CONNECT_TO list (a server name override), freed after the easy handle; `nil` when not set.
    var connectTo: UnsafeMutablePointer<curl_slist>? = nil
    /// The engine's share handle (CURLOPT_SHARE), held so that it outlives the easy handle; `nil` when not used.
    var share: CurlShare? = nil
    /// The engine's trust store (CURLOPT_SSL_CTX_DATA), held while libcurl may still hand it to an SSL_CTX.
    var trustStore: SharedTrustStore? = nil

    /// Releases everything: removes the easy handle from its own multi (which closes a CONNECT_ONLY connection at
    /// once; libcurl treats such connections as aborted, so no TLS close_notify is sent), then cleans up the handles.
    func cleanup() {
        if let multi = self.multi {
            _ = cws_curl_multi_set_socketfunction(multi, nil)
            _ = cws_curl_multi_set_timerfunction(multi, nil)
            _ = curl_multi_remove_handle(multi, self.easy)
        }
        curl_easy_cleanup(self.easy)
        liveCurlEasyHandles.subtract(1, ordering: .relaxed)
        if let multi = self.multi {
            _ = curl_multi_cleanup(multi)
            liveCurlMultiHandles.subtract(1, ordering: .relaxed)
        }
        if let connectTo = self.connectTo { curl_slist_free_all(connectTo) }
        self.errorBuffer.deallocate()
        if let debugContext = self.debugContext {
            Unmanaged<CurlDebugContext>.fromOpaque(debugContext).release()
        }
    }
}

/// Thrown by the option setters when libcurl rejects an option.
struct CurlOptionError: Error {
    let error: WebSocketError
}

/// Sets options on an easy handle, turning a rejected option into a `.network` or `.unsupported` error.
struct EasyOptions {
    let easy: UnsafeMutableRawPointer

    /// Throws the error for `code` when libcurl rejected the option `name` (for options set through a helper of
    /// their own).
    func check(_ code: CURLcode, _ name: String) throws(CurlOptionError) {
        guard code != CURLE_OK else { return }
        let text = String(cString: curl_easy_strerror(code))
        let kind: WebSocketError.Code =
            code == CURLE_UNKNOWN_OPTION || code == CURLE_NOT_BUILT_IN ? .unsupported : .network
        throw CurlOptionError(
            error: WebSocketError(
                kind, "libcurl \(LoadedCurl.version) rejected \(name): \(text)",
                underlying: CurlError(code, detail: "")))
    }

    func set(_ option: CURLoption, _ value: Int, _ name: String) throws(CurlOptionError) {
        try self.check(cws_curl_setopt_long(self.easy, option, value), name)
    }

    func set(_ option: CURLoption, _ value: String?, _ name: String) throws(CurlOptionError) {
        // libcurl copies string options (since 7.17), so the C string only has to live during the call.
        let code: CURLcode
        if let value {
            code = value.withCString { cws_curl_setopt_str(self.easy, option, $0) }
        } else {
            code = cws_curl_setopt_str(self.easy, option, nil)
        }
        try self.check(code, name)
    }

    func set(_ option: CURLoption, pointer: UnsafeMutableRawPointer?, _ name: String) throws(CurlOptionError) {
        try self.check(cws_curl_setopt_ptr(self.easy, option, pointer), name)
    }

    /// Sets an in-memory PEM option (`CWS_CURL_PEM_*`); libcurl copies the text.
    func setPEM(_ which: Int32, _ text: String, _ name: String) throws(CurlOptionError) {
        let code = text.utf8CString.withUnsafeBufferPointer {
            cws_curl_setopt_pem(self.easy, which, $0.baseAddress, $0.count - 1)
        }
        try self.check(code, name)
    }
}

/// Maps a failed connect to the SDK's error codes.
/// - Parameters:
///   - code: The transfer's result.
///   - easy: The easy handle (for CURLINFO_OS_ERRNO).
///   - detail: The CURLOPT_ERRORBUFFER text.
///   - hostPort: The endpoint, for the message.
///   - timeout: The connect timeout, for the message.
///   - proxied: Whether a proxy was configured explicitly.
func connectError(
    _ code: CURLcode, easy: UnsafeMutableRawPointer, detail: String, hostPort: String, timeout: Duration,
    proxied: Bool
) -> WebSocketError {
    let curlError = CurlError(code, detail: detail)
    let explanation = curlError.summary
    if code == CURLE_PROXY {
        // A SOCKS or proxy handshake failure: the same code the CIO engine reports.
        return WebSocketError(
            .proxyFailure, "the proxy did not open a tunnel to \(hostPort): \(explanation)", underlying: curlError)
    }
    switch cws_curl_error_class(code) {
    case CWS_CURL_ERROR_DNS:
        let what = code == CURLE_COULDNT_RESOLVE_PROXY ? "the proxy's host name" : "the host name"
        return WebSocketError(
            .dnsFailure, "cannot connect to \(hostPort): could not resolve \(what) (\(explanation))",
            underlying: curlError)
    case CWS_CURL_ERROR_CONNECT:
        var osErrno = 0
        _ = cws_curl_getinfo_long(easy, CURLINFO_OS_ERRNO, &osErrno)
        if osErrno == Int(ECONNREFUSED) {
            let target = proxied ? "\(hostPort) (or its proxy)" : hostPort
            return WebSocketError(
                .connectionRefused, "connection refused by \(target): nothing is listening there (\(explanation))",
                underlying: systemError("connect", ECONNREFUSED))
        }
        return WebSocketError(
            .network, "connecting to \(hostPort) failed: \(explanation)",
            underlying: osErrno != 0 ? systemError("connect", Int32(osErrno)) : curlError)
    case CWS_CURL_ERROR_TIMEOUT:
        return WebSocketError(
            .timedOut, "connecting to \(hostPort) timed out after \(timeout.secondsText) s (\(explanation))",
            underlying: curlError)
    case CWS_CURL_ERROR_TLS:
        return WebSocketError(
            .tlsFailure, "TLS handshake with \(hostPort) failed: \(explanation)", underlying: curlError)
    default:
        return WebSocketError(
            .network, "connecting to \(hostPort) failed: \(explanation)", underlying: curlError)
    }
}

/// What CURLOPT_DEBUGFUNCTION logs to: the connection's logger. Retained by the easy handle's CurlHandles.
final class CurlDebugContext: Sendable {
    let logger: Logger

    init(logger: Logger) { self.logger = logger }

    /// Logs one debug callback: informational text at `.debug`, header blocks at `.trace` with every header VALUE
    /// removed (so Authorization, Proxy-Authorization and cookies never reach a log), data never.
    func log(type: curl_infotype, bytes: UnsafeRawBufferPointer) {
        switch type {
        case CURLINFO_TEXT:
            guard self.logger.logLevel <= .debug else { return }
            var text = String(decoding: bytes, as: UTF8.self)
            while text.last?.isWhitespace == true { text.removeLast() }
            self.logger.debug("curl: \(redactingCredentials(text))")
        case CURLINFO_HEADER_IN, CURLINFO_HEADER_OUT:
            guard self.logger.logLevel <= .trace else { return }
            let direction = type == CURLINFO_HEADER_IN ? "<" : ">"
            for line in String(decoding: bytes, as: UTF8.self).split(whereSeparator: \.isNewline) {
                self.logger.trace("curl: \(direction) \(headerLineWithoutValue(line))")
            }
        default:
            return
        }
    }
}

/// A header line with its value removed (`Proxy-Authorization: <redacted>`); request and status lines unchanged.
func headerLineWithoutValue(_ line: Substring) -> String {
    guard let colon = line.firstIndex(of: ":") else { return String(line) }
    let name = line[..<colon]
    guard !name.isEmpty, !name.contains(where: { $0 == " " || $0 == "\t" }) else { return String(line) }
    return "\(name): <redacted>"
}

/// `text` with the user information of any URL in it removed (`http://user:secret@proxy` → `http://***@proxy`):
/// libcurl's informational text quotes proxy URLs from the environment verbatim.
func redactingCredentials(_ text: String) -> String {
    guard text.contains("@") else { return text }
    var result = ""
    var rest = Substring(text)
    while let scheme = rest.firstRange(of: "://") {
        result += rest[..<scheme.upperBound]
        rest = rest[scheme.upperBound...]
        let authorityEnd =
            rest.firstIndex(where: { $0 == "/" || $0 == " " || $0 == "'" || $0 == "\"" }) ?? rest.endIndex
        if let at = rest[..<authorityEnd].lastIndex(of: "@") {
            result += "***"
            rest = rest[at...]
        }
    }
    return result + rest
}
