/// The head of an HTTP/1.1 response: the status line and the header fields.
package struct HTTPResponseHead: Sendable {
    /// The protocol version, e.g. `HTTP/1.1`.
    package var version: String
    /// The status code, e.g. 101.
    package var status: Int
    /// The reason phrase, e.g. `Switching Protocols`; may be empty.
    package var reason: String
    /// The header fields in order.
    package var headers: HTTPHeaders

    /// Creates a response head.
    /// - Parameters:
    ///   - version: The protocol version, e.g. `HTTP/1.1`.
    ///   - status: The status code.
    ///   - reason: The reason phrase.
    ///   - headers: The header fields.
    package init(version: String = "HTTP/1.1", status: Int, reason: String, headers: HTTPHeaders = HTTPHeaders()) {
        self.version = version
        self.status = status
        self.reason = reason
        self.headers = headers
    }
}

/// The head of an HTTP/1.1 request: the request line and the header fields.
package struct HTTPRequestHead: Sendable {
    /// The method, e.g. `GET`.
    package var method: String
    /// The request target, e.g. `/chat?room=1`.
    package var target: String
    /// The protocol version, e.g. `HTTP/1.1`.
    package var version: String
    /// The header fields in order.
    package var headers: HTTPHeaders

    /// Creates a request head.
    /// - Parameters:
    ///   - method: The method.
    ///   - target: The request target.
    ///   - version: The protocol version.
    ///   - headers: The header fields.
    package init(method: String, target: String, version: String = "HTTP/1.1", headers: HTTPHeaders = HTTPHeaders()) {
        self.method = method
        self.target = target
        self.version = version
        self.headers = headers
    }
}

/// An incremental parser for an HTTP/1.1 response head, bounded in size and field count.
///
/// It tolerates bare LF line endings, rejects bare CRs, obsolete line folding, control characters in field
/// values, malformed field names and any status line that is not `HTTP/1.x SP 3DIGIT [SP reason]`. Errors are
/// ``WebSocketError``s with code ``WebSocketError/Code/invalidHandshake``; after one, the
/// parser stays failed. After a complete head it starts over, ready for another head.
package struct HTTPResponseParser {
    private var scanner: HTTPHeadScanner

    /// Creates a parser.
    /// - Parameters:
    ///   - maxHeaderBytes: The most bytes the head may have, status line and final blank line included.
    ///   - maxHeaderCount: The most header fields the head may have.
    ///   - party: Who sent the response, for error messages (e.g. `the proxy's reply`).
    package init(maxHeaderBytes: Int = 16384, maxHeaderCount: Int = 128, party: String = "the server's response") {
        self.scanner = HTTPHeadScanner(
            party: party,
            maxHeaderBytes: maxHeaderBytes,
            maxHeaderCount: maxHeaderCount
        )
    }

    /// Feeds received bytes.
    /// - Parameter bytes: The next bytes from the connection.
    /// - Returns: `nil` while the head is incomplete; once the blank line ending it has been seen, the head and
    ///   how many bytes of this call's `bytes` belong to it. The bytes after those already belong to the
    ///   WebSocket frame stream.
    /// - Throws: ``WebSocketError`` (`invalidHandshake`) saying what was wrong.
    package mutating func feed(
        _ bytes: UnsafeRawBufferPointer
    ) throws(WebSocketError) -> (head: HTTPResponseHead, consumed: Int)? {
        guard let (lines, consumed) = try self.scanner.feed(bytes) else { return nil }
        do {
            let (version, status, reason) = try self.parseStatusLine(lines[0])
            let headers = try self.scanner.parseFields(lines)
            return (HTTPResponseHead(version: version, status: status, reason: reason, headers: headers), consumed)
        } catch {
            throw self.scanner.fail(error)
        }
    }

    private func parseStatusLine(
        _ line: ArraySlice<UInt8>
    ) throws(WebSocketError) -> (String, Int, String) {
        func malformed() -> WebSocketError {
            WebSocketError(
                .invalidHandshake,
                "malformed status line '\(HTTPGrammar.printable(line))' in \(self.scanner.party): expected "
                    + "'HTTP/1.x' followed by a space and a 3-digit status code"
            )
        }
        let s = line.startIndex
        guard line.count >= 12, HTTPGrammar.isHTTP1Version(line[s..<s + 8]), line[s + 8] == UInt8(ascii: " ")
        else { throw malformed() }
        var status = 0
        for i in s + 9..<s + 12 {
            guard HTTPGrammar.isDigit(line[i]) else { throw malformed() }
            status = status * 10 + Int(line[i] - UInt8(ascii: "0"))
        }
        var reason = line[(s + 12)...]
        if !reason.isEmpty {
            guard reason.first == UInt8(ascii: " ") else { throw malformed() }
            reason = reason.dropFirst()
        }
        guard reason.allSatisfy(HTTPGrammar.isFieldValueByte) else {
            throw WebSocketError(
                .invalidHandshake,
                "the reason phrase of the status line in \(self.scanner.party) contains a control character"
            )
        }
        return (String(decoding: line[s..<s + 8], as: UTF8.self), status, String(decoding: reason, as: UTF8.self))
    }
}

/// An incremental parser for an HTTP/1.1 request head (used by the test server in WSTesting), with the same
/// bounds and strictness as ``HTTPResponseParser``; the request line must be `method SP target SP HTTP/1.x`.
package struct HTTPRequestParser {
    private var scanner: HTTPHeadScanner

    /// Creates a parser.
    /// - Parameters:
    ///   - maxHeaderBytes: The most bytes the head may have, request line and final blank line included.
    ///   - maxHeaderCount: The most header fields the head may have.
    package init(maxHeaderBytes: Int = 16384, maxHeaderCount: Int = 128) {
        self.scanner = HTTPHeadScanner(
            party: "the client's request",
            maxHeaderBytes: maxHeaderBytes,
            maxHeaderCount: maxHeaderCount
        )
    }

    /// Feeds received bytes.
    /// - Parameter bytes: The next bytes from the connection.
    /// - Returns: `nil` while the head is incomplete; once the blank line ending it has been seen, the head and
    ///   how many bytes of this call's `bytes` belong to it (the rest belong to the frame stream).
    /// - Throws: ``WebSocketError`` (`invalidHandshake`) saying what was wrong.
    package mutating func feed(
        _ bytes: UnsafeRawBufferPointer
    ) throws(WebSocketError) -> (head: HTTPRequestHead, consumed: Int)? {
        guard let (lines, consumed) = try self.scanner.feed(bytes) else { return nil }
        do {
            let (method, target, version) = try Self.parseRequestLine(lines[0])
            let headers = try self.scanner.parseFields(lines)
            return (HTTPRequestHead(method: method, target: target, version: version, headers: headers), consumed)
        } catch {
            throw self.scanner.fail(error)
        }
    }

    private static func parseRequestLine(
        _ line: ArraySlice<UInt8>
    ) throws(WebSocketError) -> (String, String, String) {
        let parts = line.split(separator: UInt8(ascii: " "), omittingEmptySubsequences: false)
        guard parts.count == 3, !parts[0].isEmpty, parts[0].allSatisfy(HTTPGrammar.isTokenByte), !parts[1].isEmpty,
            parts[1].allSatisfy({ $0 > 0x20 && $0 != 0x7F }), parts[2].count == 8,
            HTTPGrammar.isHTTP1Version(parts[2])
        else {
            throw WebSocketError(
                .invalidHandshake,
                "malformed request line '\(HTTPGrammar.printable(line))' in the client's request: expected "
                    + "'METHOD target HTTP/1.x'"
            )
        }
        return (
            String(decoding: parts[0], as: UTF8.self),
            String(decoding: parts[1], as: UTF8.self),
            String(decoding: parts[2], as: UTF8.self)
        )
    }
}

/// Splits comma-separated header values into their trimmed, non-empty elements, as for
/// `Sec-WebSocket-Protocol: chat, superchat` or `Connection: keep-alive, Upgrade`.
/// - Parameter values: Every value of the header field (one per header line).
/// - Returns: The elements in order, without surrounding spaces or tabs.
package func httpTokenList(_ values: [String]) -> [String] {
    var result: [String] = []
    for value in values {
        for element in value.utf8.split(separator: UInt8(ascii: ","), omittingEmptySubsequences: false) {
            let trimmed = HTTPGrammar.trimmed(element)
            if !trimmed.isEmpty { result.append(String(decoding: trimmed, as: UTF8.self)) }
        }
    }
    return result
}

/// Whether comma-separated header values contain `token`, compared case-insensitively (ASCII), as in checking
/// that `Connection` contains `upgrade`.
/// - Parameters:
///   - values: Every value of the header field.
///   - token: The element to look for.
package func httpTokenList(_ values: [String], contains token: String) -> Bool {
    httpTokenList(values).contains { HTTPHeaders.equalNames($0, token) }
}

/// Byte classes of the HTTP/1.1 grammar (RFC 9110 section 5.6, RFC 9112).
enum HTTPGrammar {
    /// Whether `c` is a `tchar`: a letter, digit or one of ``!#$%&'*+-.^_`|~``.
    static func isTokenByte(_ c: UInt8) -> Bool {
        switch c {
        case UInt8(ascii: "a")...UInt8(ascii: "z"), UInt8(ascii: "A")...UInt8(ascii: "Z"),
            UInt8(ascii: "0")...UInt8(ascii: "9"):
            true
        case UInt8(ascii: "!"), UInt8(ascii: "#"), UInt8(ascii: "$"), UInt8(ascii: "%"), UInt8(ascii: "&"),
            UInt8(ascii: "'"), UInt8(ascii: "*"), UInt8(ascii: "+"), UInt8(ascii: "-"), UInt8(ascii: "."),
            UInt8(ascii: "^"), UInt8(ascii: "_"), UInt8(ascii: "`"), UInt8(ascii: "|"), UInt8(ascii: "~"):
            true
        default:
            false
        }
    }

    /// Whether `c` may appear in a field value or reason phrase: VCHAR, SP, HTAB or obs-text (0x80–0xFF).
    static func isFieldValueByte(_ c: UInt8) -> Bool {
        c == 0x09 || (c >= 0x20 && c != 0x7F)
    }

    static func isDigit(_ c: UInt8) -> Bool { c >= UInt8(ascii: "0") && c <= UInt8(ascii: "9") }

    static func isWhitespace(_ c: UInt8) -> Bool { c == UInt8(ascii: " ") || c == 0x09 }

    /// Whether `bytes` is `HTTP/1.` followed by one digit.
    static func isHTTP1Version(_ bytes: some Collection<UInt8>) -> Bool {
        bytes.count == 8 && bytes.prefix(7).elementsEqual("HTTP/1.".utf8)
            && isDigit(bytes[bytes.index(bytes.startIndex, offsetBy: 7)])
    }

    /// `bytes` without leading and trailing spaces and tabs.
    static func trimmed<C: BidirectionalCollection<UInt8>>(_ bytes: C) -> C.SubSequence {
        var slice = bytes[...]
        while let first = slice.first, isWhitespace(first) { slice = slice.dropFirst() }
        while let last = slice.last, isWhitespace(last) { slice = slice.dropLast() }
        return slice
    }

    /// Bytes as text for an error message: at most 100 characters, control characters escaped.
    static func printable(_ bytes: some Collection<UInt8>) -> String {
        var text = ""
        for c in bytes.prefix(100) {
            if c >= 0x20 && c < 0x7F {
                text.unicodeScalars.append(Unicode.Scalar(c))
            } else {
                text += "\\x" + (c < 0x10 ? "0" : "") + String(c, radix: 16, uppercase: true)
            }
        }
        return bytes.count > 100 ? text + "..." : text
    }
}

/// Finds the end of an HTTP/1.1 head across `feed` calls, enforcing the byte limit, and splits it into lines;
/// shared by the request and response parsers.
struct HTTPHeadScanner {
    /// Whose head this is in messages: "the server's response" or "the client's request".
    let party: String
    let maxHeaderBytes: Int
    let maxHeaderCount: Int

    private var head: [UInt8] = []
    private var atLineStart = false
    private var pendingCR = false
    private var failure: WebSocketError?

    init(party: String, maxHeaderBytes: Int, maxHeaderCount: Int) {
        self.party = party
        self.maxHeaderBytes = maxHeaderBytes
        self.maxHeaderCount = maxHeaderCount
    }

    /// Scans `bytes`; once the blank line is found returns the head's lines (without line endings; the start
    /// line first, the final empty line dropped) and how many of `bytes` were consumed, and starts over.
    mutating func feed(
        _ bytes: UnsafeRawBufferPointer
    ) throws(WebSocketError) -> (lines: [ArraySlice<UInt8>], consumed: Int)? {
        if let failure = self.failure { throw failure }
        var end: Int?
        var i = 0
        while i < bytes.count {
            let c = bytes[i]
            if self.pendingCR {
                guard c == 0x0A else { throw self.fail(self.bareCR()) }
                self.pendingCR = false
            } else if c == 0x0D {
                // A CR must be followed by LF; it does not end the line itself.
                self.pendingCR = true
                i += 1
                continue
            }
            if c == 0x0A {
                if self.atLineStart {
                    end = i + 1
                    break
                }
                self.atLineStart = true
            } else {
                self.atLineStart = false
            }
            i += 1
        }
        let consumed = end ?? bytes.count
        if self.head.count + consumed > self.maxHeaderBytes {
            throw self.fail(
                WebSocketError(
                    .invalidHandshake,
                    "\(self.party) headers exceed \(self.maxHeaderBytes) bytes"
                )
            )
        }
        self.head.append(contentsOf: UnsafeRawBufferPointer(rebasing: bytes[0..<consumed]))
        guard end != nil else { return nil }

        let head = self.head
        self.head = []
        self.atLineStart = false
        self.pendingCR = false
        var lines: [ArraySlice<UInt8>] = []
        lines.reserveCapacity(16)
        var start = head.startIndex
        for index in head.indices where head[index] == 0x0A {
            let line = head[start..<index]
            lines.append(line.last == 0x0D ? line.dropLast() : line)
            start = index + 1
        }
        // The head ends with an empty line (CR removed): drop it.
        lines.removeLast()
        return (lines, consumed)
    }

    /// The names of a WebSocket handshake response's fields longer than 15 bytes, which a string made from the bytes
    /// would store on the heap: matched, they are these literals (no allocation), and a session keeps its response
    /// headers for its whole life.
    private static let longFieldNames = [
        "Sec-WebSocket-Accept", "Sec-WebSocket-Extensions", "Sec-WebSocket-Protocol", "sec-websocket-accept",
        "sec-websocket-extensions", "sec-websocket-protocol",
    ]

    /// A field name as a string: one of ``longFieldNames`` when it is one.
    static func fieldName(_ bytes: ArraySlice<UInt8>) -> String {
        if bytes.count > 15 {
            for known in Self.longFieldNames where known.utf8.count == bytes.count && known.utf8.elementsEqual(bytes) {
                return known
            }
        }
        return String(decoding: bytes, as: UTF8.self)
    }

    /// Parses `lines[1...]` as header fields.
    func parseFields(_ lines: [ArraySlice<UInt8>]) throws(WebSocketError) -> HTTPHeaders {
        var headers = HTTPHeaders()
        guard lines.count > 1 else { return headers }
        headers.reserveCapacity(lines.count - 1)
        if lines.count - 1 > self.maxHeaderCount {
            throw WebSocketError(
                .invalidHandshake,
                "\(self.party) has more than \(self.maxHeaderCount) header fields"
            )
        }
        for line in lines[1...] {
            if let first = line.first, HTTPGrammar.isWhitespace(first) {
                throw WebSocketError(
                    .invalidHandshake,
                    "\(self.party) uses obsolete line folding (a header line starting with whitespace), "
                        + "which is not allowed"
                )
            }
            guard let colon = line.firstIndex(of: UInt8(ascii: ":")) else {
                throw WebSocketError(
                    .invalidHandshake,
                    "malformed header line '\(HTTPGrammar.printable(line))' in \(self.party): no colon"
                )
            }
            let name = line[..<colon]
            guard !name.isEmpty, name.allSatisfy(HTTPGrammar.isTokenByte) else {
                throw WebSocketError(
                    .invalidHandshake,
                    "invalid header field name '\(HTTPGrammar.printable(name))' in \(self.party)"
                )
            }
            let value = HTTPGrammar.trimmed(line[(colon + 1)...])
            guard value.allSatisfy(HTTPGrammar.isFieldValueByte) else {
                throw WebSocketError(
                    .invalidHandshake,
                    "the value of header field '\(HTTPGrammar.printable(name))' in \(self.party) contains a "
                        + "control character"
                )
            }
            headers.add(Self.fieldName(name), String(decoding: value, as: UTF8.self))
        }
        return headers
    }

    /// Records `error` so that every later call throws it, and returns it.
    mutating func fail(_ error: WebSocketError) -> WebSocketError {
        self.failure = error
        self.head = []
        return error
    }

    private func bareCR() -> WebSocketError {
        WebSocketError(.invalidHandshake, "\(self.party) head contains a CR not followed by LF")
    }
}
