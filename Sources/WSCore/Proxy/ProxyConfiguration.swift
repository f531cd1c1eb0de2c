// The proxy settings every engine honours: which proxy (or none) a connection goes through, chosen from an explicit
// setting or from the environment variables the way curl reads them. Pure: the environment is passed in as a lookup
// function, so the rules are tested without touching the process environment.
#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#endif

/// A proxy server: its kind, host, port and optional credentials.
///
/// Credentials never appear in ``description``, in log lines or in error messages.
///
/// ```swift
/// let proxy = try ProxyServer(url: "http://alice:s3cret@proxy.internal:3128")
/// ```
public struct ProxyServer: Sendable, Hashable, CustomStringConvertible {
    /// The protocol spoken with the proxy.
    public struct Kind: Sendable, Hashable, CustomStringConvertible {
        private enum Base: String, Sendable, Hashable {
            case http, https, socks5, socks5h
        }
        private let base: Base
        private init(_ base: Base) { self.base = base }

        /// An HTTP proxy (`http://`), asked for a `CONNECT` tunnel. Default port 1080, as in curl.
        public static let http = Kind(.http)
        /// An HTTP proxy reached over TLS (`https://`), asked for a `CONNECT` tunnel inside it. Default port 443.
        public static let https = Kind(.https)
        /// A SOCKS5 proxy (`socks5://`, RFC 1928); the client resolves the host name. Default port 1080.
        public static let socks5 = Kind(.socks5)
        /// A SOCKS5 proxy that resolves the host name itself (`socks5h://`). Default port 1080.
        public static let socks5h = Kind(.socks5h)

        /// The URL scheme, e.g. `socks5h`.
        public var scheme: String { self.base.rawValue }
        /// The port used when the URL names none: 443 for `https`, 1080 for the others (curl's defaults).
        public var defaultPort: Int { self.base == .https ? 443 : 1080 }
        /// Whether this is an HTTP or HTTPS proxy (a `CONNECT` tunnel).
        public var isHTTP: Bool { self.base == .http || self.base == .https }
        /// Whether this is a SOCKS5 proxy.
        public var isSOCKS: Bool { self.base == .socks5 || self.base == .socks5h }
        /// Whether the proxy resolves the target's host name (`socks5h`, and HTTP proxies, which get the name in
        /// the `CONNECT` request).
        public var resolvesTargetName: Bool { self.base != .socks5 }

        /// The scheme, e.g. `http`.
        public var description: String { self.base.rawValue }

        /// The kind for a URL scheme (lowercase), or `nil`.
        init?(scheme: String) {
            guard let base = Base(rawValue: scheme) else { return nil }
            self.base = base
        }
    }

    /// The protocol spoken with the proxy.
    public var kind: Kind
    /// The proxy's host name or IP address (without brackets).
    public var host: String
    /// The proxy's port.
    public var port: Int
    /// The user name for the proxy (HTTP Basic, or SOCKS5 username/password), percent-decoded.
    public var username: String?
    /// The password for the proxy, percent-decoded. Never logged nor shown in messages.
    public var password: String?

    /// Creates a proxy server from its parts.
    /// - Parameters:
    ///   - kind: The protocol spoken with the proxy.
    ///   - host: Host name or IP address (brackets around an IPv6 literal are removed).
    ///   - port: The port; ``Kind/defaultPort`` when `nil`.
    ///   - username: The user name, if the proxy needs one.
    ///   - password: The password, if the proxy needs one.
    public init(_ kind: Kind, host: String, port: Int? = nil, username: String? = nil, password: String? = nil) {
        self.kind = kind
        self.host =
            host.hasPrefix("[") && host.hasSuffix("]") && host.count > 2
            ? String(host.dropFirst().dropLast()) : host
        self.port = port ?? kind.defaultPort
        self.username = username
        self.password = password
    }

    /// Parses a proxy URL as curl does: `[scheme://][user[:password]@]host[:port][/]`.
    ///
    /// The scheme is `http` (the default when none is given), `https`, `socks5` or `socks5h`; the user name and
    /// password are percent-decoded (`%40` for `@`); the port defaults to 443 for `https` and 1080 otherwise.
    /// - Parameter url: The proxy URL, e.g. `socks5h://127.0.0.1:1080`.
    /// - Throws: ``WebSocketError`` with code ``WebSocketError/Code/invalidURL``; its message never contains the
    ///   password.
    public init(url: String) throws(WebSocketError) {
        let shown = ProxyServer.redactedURL(url)
        func fail(_ why: String) -> WebSocketError {
            WebSocketError(.invalidURL, "invalid proxy URL '\(shown)': \(why)")
        }
        var rest = Substring(url.trimmingASCIIWhitespace())
        var kind = Kind.http
        if let schemeEnd = rest.rangeOfSchemeSeparator() {
            let scheme = HTTPHeaders.lowercase(String(rest[..<schemeEnd.lowerBound]))
            guard let parsed = Kind(scheme: scheme) else {
                throw fail("unsupported proxy scheme '\(scheme)'; use http, https, socks5 or socks5h")
            }
            kind = parsed
            rest = rest[schemeEnd.upperBound...]
        }
        // Only an authority, optionally followed by "/" (curl ignores a path).
        if let slash = rest.firstIndex(where: { $0 == "/" || $0 == "?" || $0 == "#" }) {
            guard rest[slash...].allSatisfy({ $0 == "/" }) else { throw fail("a proxy URL has no path or query") }
            rest = rest[..<slash]
        }
        var username: String?
        var password: String?
        if let at = rest.lastIndex(of: "@") {
            let userInfo = rest[..<at]
            rest = rest[rest.index(after: at)...]
            let colon = userInfo.firstIndex(of: ":")
            let rawUser = colon.map { userInfo[..<$0] } ?? userInfo
            guard let user = percentDecoded(rawUser) else { throw fail("invalid percent-encoding in the user name") }
            username = user
            if let colon {
                guard let pass = percentDecoded(userInfo[userInfo.index(after: colon)...]) else {
                    throw fail("invalid percent-encoding in the password")
                }
                password = pass
            }
        }
        var host: Substring
        var portText: Substring?
        if rest.hasPrefix("[") {
            guard let close = rest.firstIndex(of: "]") else { throw fail("unterminated IPv6 literal") }
            host = rest[rest.index(after: rest.startIndex)..<close]
            let after = rest[rest.index(after: close)...]
            if !after.isEmpty {
                guard after.hasPrefix(":") else { throw fail("unexpected text after the IPv6 literal") }
                portText = after.dropFirst()
            }
        } else if let colon = rest.lastIndex(of: ":") {
            host = rest[..<colon]
            portText = rest[rest.index(after: colon)...]
        } else {
            host = rest
        }
        guard !host.isEmpty else { throw fail("no host") }
        guard !host.contains(where: { $0 == " " || $0 == "@" || $0.isNewline }) else { throw fail("invalid host") }
        var port = kind.defaultPort
        if let portText {
            guard !portText.isEmpty, portText.allSatisfy(\.isASCIIDigit), let value = Int(portText),
                (1...65535).contains(value)
            else { throw fail("invalid port '\(portText)'") }
            port = value
        }
        self.init(kind, host: String(host), port: port, username: username, password: password)
    }

    /// `scheme://host:port`, with `***@` in front of the host when there are credentials: never the user name or
    /// password.
    public var description: String {
        let credentials = self.username != nil || self.password != nil ? "***@" : ""
        return "\(self.kind.scheme)://\(credentials)\(self.hostPort)"
    }

    /// `host:port`, with brackets around an IPv6 literal.
    public var hostPort: String {
        "\(self.host.bracketedIfIPv6):\(self.port)"
    }

    /// Whether a user name or password is set.
    package var hasCredentials: Bool { self.username != nil || self.password != nil }

    /// `text` with the user information of a URL replaced by `***` (for messages about a URL that did not parse).
    package static func redactedURL(_ text: String) -> String {
        guard let at = text.lastIndex(of: "@") else { return text }
        let start = text.rangeOfSchemeSeparator()?.upperBound ?? text.startIndex
        guard start <= at else { return text }
        return String(text[..<start]) + "***" + String(text[at...])
    }
}

/// Which proxy, if any, a client's connections go through; honoured identically by every engine.
///
/// - ``environment`` (the default) reads the proxy environment variables as curl does (see
///   ``server(forHost:port:secure:environment:)``).
/// - ``direct`` never uses a proxy, whatever the environment says.
/// - ``server(_:noProxy:tls:)`` or ``init(url:noProxy:tls:)`` always uses that proxy, except for the hosts in its
///   own `noProxy` list; the environment is not read at all.
///
/// ```swift
/// let client = WebSocketClient(engine: CIOEngine()) { config in
///     config.proxy = try ProxyConfiguration(url: "http://proxy.internal:3128", noProxy: "localhost,.internal")
/// }
/// ```
public struct ProxyConfiguration: Sendable, Hashable {
    private enum Mode: Sendable, Hashable {
        case environment
        case direct
        case server(ProxyServer, noProxy: String?)
    }
    private var mode: Mode
    /// The TLS settings for the connection to an `https://` proxy (whether the proxy comes from this configuration
    /// or the environment), separate from the endpoint's: a company proxy often has a certificate from an internal
    /// CA, or asks for a client certificate. Every engine honours the trust roots (including PEM in memory), the
    /// client identity, the minimum version and the opt-out of verification, as for an endpoint. The
    /// ``WebSocketTLSConfiguration/serverNameOverride`` is ignored here: the proxy is verified against the host of
    /// its URL, so name the proxy by the host its certificate carries. Default: the system trust store, full
    /// verification, TLS 1.2 or newer.
    ///
    /// ```swift
    /// config.proxy = try ProxyConfiguration(
    ///     url: "https://proxy.internal:443", tls: WebSocketTLSConfiguration(trustRoots: .file("/etc/corp-ca.pem")))
    /// ```
    public var tls: WebSocketTLSConfiguration

    private init(mode: Mode, tls: WebSocketTLSConfiguration) {
        self.mode = mode
        self.tls = tls
    }

    /// Proxies from the environment variables, as curl reads them (the default).
    public static var environment: ProxyConfiguration { ProxyConfiguration(mode: .environment, tls: .init()) }

    /// No proxy: connect directly, ignoring the environment.
    public static var direct: ProxyConfiguration { ProxyConfiguration(mode: .direct, tls: .init()) }

    /// Always this proxy (the environment is not read).
    /// - Parameters:
    ///   - server: The proxy.
    ///   - noProxy: Hosts to reach directly, in `no_proxy` syntax (see ``bypasses(host:port:noProxy:)``).
    ///   - tls: TLS settings for an `https://` proxy (see ``tls``).
    public static func server(
        _ server: ProxyServer, noProxy: String? = nil, tls: WebSocketTLSConfiguration = .init()
    ) -> ProxyConfiguration {
        ProxyConfiguration(mode: .server(server, noProxy: noProxy), tls: tls)
    }

    /// Always the proxy at `url` (the environment is not read); `""` means ``direct``.
    /// - Parameters:
    ///   - url: A proxy URL as ``ProxyServer/init(url:)`` reads it, or `""` for no proxy.
    ///   - noProxy: Hosts to reach directly, in `no_proxy` syntax.
    ///   - tls: TLS settings for an `https://` proxy (see ``tls``).
    /// - Throws: ``WebSocketError`` with code ``WebSocketError/Code/invalidURL`` (without the password).
    public init(url: String, noProxy: String? = nil, tls: WebSocketTLSConfiguration = .init()) throws(WebSocketError) {
        if url.trimmingASCIIWhitespace().isEmpty {
            self.init(mode: .direct, tls: tls)
        } else {
            self.init(mode: .server(try ProxyServer(url: url), noProxy: noProxy), tls: tls)
        }
    }

    /// Whether the environment variables are read.
    public var readsEnvironment: Bool { self.mode == .environment }

    /// The explicit proxy, or `nil` for ``environment`` and ``direct``.
    public var explicitServer: ProxyServer? {
        if case .server(let server, _) = self.mode { return server }
        return nil
    }

    /// The proxy a connection to `host:port` goes through, or `nil` to connect directly.
    ///
    /// With ``environment``, the variables are read as curl reads them:
    ///
    /// | endpoint | variables, first one set wins |
    /// |---|---|
    /// | `ws://` | `ws_proxy`, `WS_PROXY`, `http_proxy` (lowercase only, as in curl), `all_proxy`, `ALL_PROXY` |
    /// | `wss://` | `wss_proxy`, `WSS_PROXY`, `https_proxy`, `HTTPS_PROXY`, `all_proxy`, `ALL_PROXY` |
    ///
    /// unless `no_proxy` (or, when that is unset, `NO_PROXY`) lists the host. An empty variable counts as unset;
    /// a value without a scheme is an `http://` proxy.
    /// - Parameters:
    ///   - host: The endpoint's host (without brackets).
    ///   - port: The endpoint's port.
    ///   - secure: Whether the endpoint is `wss`.
    ///   - environment: Looks up an environment variable; the process environment by default.
    /// - Returns: The proxy, or `nil` for a direct connection.
    /// - Throws: ``WebSocketError`` with code ``WebSocketError/Code/invalidURL`` when the chosen variable is not a
    ///   proxy URL (its message names the variable, never the password).
    public func server(
        forHost host: String, port: Int, secure: Bool,
        environment: (String) -> String? = ProxyConfiguration.processEnvironment
    ) throws(WebSocketError) -> ProxyServer? {
        switch self.mode {
        case .direct:
            return nil
        case .server(let server, let noProxy):
            if let noProxy, Self.bypasses(host: host, port: port, noProxy: noProxy) { return nil }
            return server
        case .environment:
            func value(_ name: String) -> String? {
                guard let value = environment(name), !value.trimmingASCIIWhitespace().isEmpty else { return nil }
                return value
            }
            let names =
                secure
                ? ["wss_proxy", "WSS_PROXY", "https_proxy", "HTTPS_PROXY", "all_proxy", "ALL_PROXY"]
                : ["ws_proxy", "WS_PROXY", "http_proxy", "all_proxy", "ALL_PROXY"]
            var chosen: (name: String, url: String)?
            for name in names {
                if let url = value(name) {
                    chosen = (name, url)
                    break
                }
            }
            guard let (name, url) = chosen else { return nil }
            if let noProxy = value("no_proxy") ?? value("NO_PROXY"),
                Self.bypasses(host: host, port: port, noProxy: noProxy)
            {
                return nil
            }
            do {
                return try ProxyServer(url: url)
            } catch {
                throw WebSocketError(.invalidURL, "the environment variable \(name): \(error.message)")
            }
        }
    }

    /// Reads a variable of the process environment (`getenv`).
    public static let processEnvironment: @Sendable (String) -> String? = { name in
        getenv(name).map { String(cString: $0) }
    }

    /// Whether `no_proxy` (curl's syntax, plus ports) lists `host:port`.
    ///
    /// The list is separated by commas or blanks. `*` alone matches every host. A name matches itself and its
    /// subdomains, case-insensitively: `example.com` and `.example.com` both match `example.com` and
    /// `www.example.com`, not `notexample.com`; trailing dots are ignored. An IP literal (IPv6 without brackets)
    /// matches that address, and with `/bits` a CIDR range. An entry with a port (`example.com:8080`,
    /// `[::1]:8080`) matches only that port (curl ignores such entries; Python and Go honour them).
    /// - Parameters:
    ///   - host: The endpoint's host name or IP literal (brackets allowed).
    ///   - port: The endpoint's port.
    ///   - noProxy: The list.
    public static func bypasses(host: String, port: Int, noProxy: String) -> Bool {
        let list = noProxy.trimmingASCIIWhitespace()
        if list == "*" { return true }
        var name = Substring(host)
        if name.hasPrefix("[") && name.hasSuffix("]") { name = name.dropFirst().dropLast() }
        let address = ipAddressBytes(String(name))
        if address == nil { while name.hasSuffix(".") { name = name.dropLast() } }
        for rawEntry in list.split(whereSeparator: { $0 == "," || $0 == " " || $0 == "\t" }) {
            var entry = rawEntry
            // A port: "name:port", "[v6]:port" or "v4:port" (a bare IPv6 literal has several colons: no port).
            var entryPort: Int?
            if entry.hasPrefix("["), let close = entry.firstIndex(of: "]") {
                let after = entry[entry.index(after: close)...]
                if after.hasPrefix(":"), let value = Int(after.dropFirst()) { entryPort = value }
                entry = entry[entry.index(after: entry.startIndex)..<close]
            } else if let colon = entry.firstIndex(of: ":"),
                entry[entry.index(after: colon)...].firstIndex(of: ":") == nil
            {
                guard let value = Int(entry[entry.index(after: colon)...]) else { continue }
                entryPort = value
                entry = entry[..<colon]
            }
            if let entryPort, entryPort != port { continue }
            if let address {
                var bits: Int?
                var network = entry
                if let slash = entry.firstIndex(of: "/") {
                    guard let value = Int(entry[entry.index(after: slash)...]) else { continue }
                    bits = value
                    network = entry[..<slash]
                }
                guard let networkAddress = ipAddressBytes(String(network)),
                    networkAddress.count == address.count
                else { continue }
                if Self.prefixMatches(address, networkAddress, bits: bits ?? address.count * 8) { return true }
                continue
            }
            while entry.hasSuffix(".") { entry = entry.dropLast() }
            if entry.hasPrefix(".") { entry = entry.dropFirst() }
            guard !entry.isEmpty else { continue }
            let lowerName = HTTPHeaders.lowercase(String(name))
            let lowerEntry = HTTPHeaders.lowercase(String(entry))
            if lowerName == lowerEntry || lowerName.hasSuffix("." + lowerEntry) { return true }
        }
        return false
    }

    private static func prefixMatches(_ a: [UInt8], _ b: [UInt8], bits: Int) -> Bool {
        guard bits >= 0, bits <= a.count * 8 else { return false }
        let whole = bits / 8
        if a[..<whole] != b[..<whole] { return false }
        let rest = bits % 8
        guard rest > 0 else { return true }
        let mask = UInt8(0xFF) << (8 - rest)
        return a[whole] & mask == b[whole] & mask
    }
}

/// The bytes of an IPv4 (4) or IPv6 (16) literal, or `nil` for anything else.
package func ipAddressBytes(_ text: String) -> [UInt8]? {
    var v4 = in_addr()
    if inet_pton(AF_INET, text, &v4) == 1 { return withUnsafeBytes(of: v4) { Array($0) } }
    var v6 = in6_addr()
    if inet_pton(AF_INET6, text, &v6) == 1 { return withUnsafeBytes(of: v6) { Array($0) } }
    return nil
}

/// `text` percent-decoded, or `nil` for a malformed escape or invalid UTF-8.
private func percentDecoded(_ text: Substring) -> String? {
    var bytes: [UInt8] = []
    var utf8 = text.utf8.makeIterator()
    while let byte = utf8.next() {
        guard byte == UInt8(ascii: "%") else {
            bytes.append(byte)
            continue
        }
        guard let high = utf8.next().flatMap(hexValue), let low = utf8.next().flatMap(hexValue) else { return nil }
        bytes.append(high << 4 | low)
    }
    return String(validating: bytes, as: UTF8.self)
}

private func hexValue(_ byte: UInt8) -> UInt8? {
    switch byte {
    case UInt8(ascii: "0")...UInt8(ascii: "9"): byte - UInt8(ascii: "0")
    case UInt8(ascii: "a")...UInt8(ascii: "f"): byte - UInt8(ascii: "a") + 10
    case UInt8(ascii: "A")...UInt8(ascii: "F"): byte - UInt8(ascii: "A") + 10
    default: nil
    }
}

extension StringProtocol {
    /// The text without leading and trailing ASCII spaces, tabs and line breaks.
    func trimmingASCIIWhitespace() -> String {
        let isSpace: (Character) -> Bool = { $0 == " " || $0 == "\t" || $0 == "\n" || $0 == "\r" }
        guard let first = self.firstIndex(where: { !isSpace($0) }), let last = self.lastIndex(where: { !isSpace($0) })
        else { return "" }
        return String(self[first...last])
    }
}

extension Character {
    /// Whether this is an ASCII digit.
    var isASCIIDigit: Bool { self.isASCII && self.isNumber }
}
