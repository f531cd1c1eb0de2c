/// A parsed WebSocket URL: scheme (ws, wss, http or https), host, port and the path with its query.
///
/// `http` is treated as `ws` and `https` as `wss`. IPv6 literals are written in brackets
/// (`ws://[::1]:8080/chat`). Userinfo (`user:pass@`) becomes an `Authorization: Basic` header and is never
/// logged.
public struct WebSocketURL: Sendable, Hashable, CustomStringConvertible {
    /// The scheme as given, lowercased: `ws`, `wss`, `http` or `https`.
    public var scheme: String
    /// The host name or IP address, without brackets.
    public var host: String
    /// The port; 80 or 443 by default.
    public var port: Int
    /// The path and query, starting with `/`.
    public var pathAndQuery: String
    /// `user:password` from the URL, if any (sent as HTTP Basic authorization).
    public var userInfo: String?

    /// Whether the connection uses TLS (`wss` or `https`).
    public var isSecure: Bool { self.scheme == "wss" || self.scheme == "https" }

    /// The default port of a scheme: 443 for wss/https, 80 otherwise.
    /// - Parameter secure: Whether the scheme is wss/https.
    public static func defaultPort(secure: Bool) -> Int { secure ? 443 : 80 }

    /// Creates a URL from its parts.
    /// - Parameters:
    ///   - secure: `true` for wss, `false` for ws.
    ///   - host: Host name or IP address.
    ///   - port: The port; the scheme's default if `nil`.
    ///   - path: The path and query; `/` if empty.
    public init(secure: Bool, host: String, port: Int? = nil, path: String = "/") {
        self.scheme = secure ? "wss" : "ws"
        self.host = host
        self.port = port ?? Self.defaultPort(secure: secure)
        self.pathAndQuery = path.hasPrefix("/") ? path : "/" + path
        self.userInfo = nil
    }

    /// Parses a URL string.
    /// - Parameter string: A URL such as `wss://example.com/chat?room=1`.
    /// - Throws: ``WebSocketError`` with code ``WebSocketError/Code/invalidURL`` saying what is wrong.
    public init(parsing string: String) throws(WebSocketError) {
        func fail(_ why: String) -> WebSocketError {
            WebSocketError(.invalidURL, "invalid WebSocket URL '\(string)': \(why)")
        }
        guard let schemeEnd = string.rangeOfSchemeSeparator() else {
            throw fail("expected scheme://host, e.g. ws://localhost:8080/")
        }
        let scheme = HTTPHeaders.lowercase(String(string[..<schemeEnd.lowerBound]))
        guard ["ws", "wss", "http", "https"].contains(scheme) else {
            throw fail("unsupported scheme '\(scheme)'; use ws, wss, http or https")
        }
        var rest = string[schemeEnd.upperBound...]
        if let hash = rest.firstIndex(of: "#") { rest = rest[..<hash] }
        let authorityEnd = rest.firstIndex { $0 == "/" || $0 == "?" } ?? rest.endIndex
        var authority = rest[..<authorityEnd]
        var path = String(rest[authorityEnd...])
        if path.isEmpty { path = "/" } else if path.hasPrefix("?") { path = "/" + path }
        var userInfo: String?
        if let at = authority.lastIndex(of: "@") {
            userInfo = String(authority[..<at])
            authority = authority[authority.index(after: at)...]
        }
        var host: Substring
        var portText: Substring?
        if authority.hasPrefix("[") {
            guard let close = authority.firstIndex(of: "]") else { throw fail("unterminated IPv6 literal") }
            host = authority[authority.index(after: authority.startIndex)..<close]
            let after = authority[authority.index(after: close)...]
            if after.hasPrefix(":") {
                portText = after.dropFirst()
            } else if !after.isEmpty {
                throw fail("unexpected text after IPv6 literal")
            }
        } else if let colon = authority.lastIndex(of: ":") {
            host = authority[..<colon]
            portText = authority[authority.index(after: colon)...]
        } else {
            host = authority
        }
        guard !host.isEmpty else { throw fail("missing host") }
        guard !host.contains(where: { $0 == " " || $0 == "\r" || $0 == "\n" || $0 == "\t" }),
            !path.contains(where: { $0 == " " || $0 == "\r" || $0 == "\n" })
        else { throw fail("whitespace or line breaks are not allowed; percent-encode them") }
        let secure = scheme == "wss" || scheme == "https"
        var port = Self.defaultPort(secure: secure)
        if let portText, !portText.isEmpty {
            guard let value = Int(portText), (1...65535).contains(value) else {
                throw fail("port '\(portText)' is not a number in 1...65535")
            }
            port = value
        }
        self.scheme = scheme
        self.host = String(host)
        self.port = port
        self.pathAndQuery = path
        self.userInfo = userInfo
    }

    /// The `Host` header value: the host (bracketed for IPv6) and the port when it is not the default.
    public var hostHeader: String {
        let h = self.host.bracketedIfIPv6
        return self.port == Self.defaultPort(secure: self.isSecure) ? h : "\(h):\(self.port)"
    }

    /// The URL as a string, without userinfo.
    public var description: String {
        "\(self.scheme)://\(self.host.bracketedIfIPv6):\(self.port)\(self.pathAndQuery)"
    }
}

// Character searches of the standard library (`Collection.firstIndex(of:)`, `Sequence.contains(_:)`), with the same
// results as `firstRange(of: "://")` and `contains(":")`: those take a string argument, so they are
// _StringProcessing's substring searches, whose code a process would page in for these few calls (about 0.1 MiB of
// resident memory).
extension StringProtocol {
    /// The range of the first `://` in the text, compared character by character (as `firstRange(of: "://")` does:
    /// a `/` followed by a combining mark is another character); `nil` if there is none.
    package func rangeOfSchemeSeparator() -> Range<Index>? {
        var from = self.startIndex
        while let colon = self[from...].firstIndex(of: ":") {
            let afterColon = self.index(after: colon)
            if self[afterColon...].starts(with: "//") { return colon..<self.index(afterColon, offsetBy: 2) }
            from = afterColon
        }
        return nil
    }

    /// Whether the host contains a colon (an IPv6 literal, written in brackets in a URL, a `Host` header or a
    /// `host:port` text).
    package var isIPv6Literal: Bool { self.contains(":" as Character) }

    /// The host as a URL, a `Host` header or a `host:port` text writes it: in brackets when it is an IPv6 literal.
    package var bracketedIfIPv6: String { self.isIPv6Literal ? "[" + String(self) + "]" : String(self) }
}
