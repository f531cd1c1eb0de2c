extension WebSocketExtensionHeader {
    /// Parses `Sec-WebSocket-Extensions` header values (RFC 6455 section 9.1 with the token and quoted-string
    /// grammar of RFC 9110): several header lines, each with comma-separated elements (empty elements are
    /// skipped), each element a token followed by `;`-separated parameters `name` or `name=value`, where a value
    /// is a token or a quoted-string (unquoted here; RFC 6455 requires its content to be a token too). Optional
    /// whitespace is allowed around `,`, `;` and `=`.
    /// - Parameter headerValues: Every value of the header, one per header line, in order.
    /// - Returns: The elements in order.
    /// - Throws: ``WebSocketError`` (`invalidHandshake`) saying what is malformed and where.
    package static func parse(
        _ headerValues: [String]
    ) throws(WebSocketError) -> [WebSocketExtensionHeader] {
        var elements: [WebSocketExtensionHeader] = []
        for value in headerValues {
            var parser = ExtensionHeaderScanner(value)
            try parser.parse(into: &elements)
        }
        return elements
    }

    /// Formats elements as one header value, e.g.
    /// `permessage-deflate; client_max_window_bits, permessage-deflate; server_max_window_bits=10`. Parameter
    /// values that are not tokens are written as quoted-strings.
    /// - Parameter elements: The elements, in order.
    package static func format(_ elements: [WebSocketExtensionHeader]) -> String {
        elements.map { element in
            var text = element.name
            for parameter in element.parameters {
                text += "; " + parameter.name
                if let value = parameter.value {
                    text += "=" + Self.formatValue(value)
                }
            }
            return text
        }.joined(separator: ", ")
    }

    private static func formatValue(_ value: String) -> String {
        if !value.isEmpty && value.utf8.allSatisfy(HTTPGrammar.isTokenByte) { return value }
        var quoted = "\""
        for scalar in value.unicodeScalars {
            if scalar == "\"" || scalar == "\\" { quoted += "\\" }
            quoted.unicodeScalars.append(scalar)
        }
        return quoted + "\""
    }
}

/// A cursor over one `Sec-WebSocket-Extensions` header value.
private struct ExtensionHeaderScanner {
    private let bytes: [UInt8]
    private var index = 0

    init(_ text: String) {
        self.bytes = Array(text.utf8)
    }

    private var current: UInt8? { self.index < self.bytes.count ? self.bytes[self.index] : nil }

    mutating func parse(into elements: inout [WebSocketExtensionHeader]) throws(WebSocketError) {
        while true {
            self.skipWhitespace()
            guard let c = self.current else { return }
            if c == UInt8(ascii: ",") {  // An empty list element.
                self.index += 1
                continue
            }
            let name = try self.token(expected: "an extension name")
            var parameters: [WebSocketExtensionHeader.Parameter] = []
            self.skipWhitespace()
            while self.current == UInt8(ascii: ";") {
                self.index += 1
                self.skipWhitespace()
                let parameterName = try self.token(expected: "a parameter name after ';'")
                self.skipWhitespace()
                var value: String?
                if self.current == UInt8(ascii: "=") {
                    self.index += 1
                    self.skipWhitespace()
                    if self.current == UInt8(ascii: "\"") {
                        value = try self.quotedString()
                    } else {
                        value = try self.token(expected: "a parameter value after '='")
                    }
                    self.skipWhitespace()
                }
                parameters.append(WebSocketExtensionHeader.Parameter(name: parameterName, value: value))
            }
            elements.append(WebSocketExtensionHeader(name: name, parameters: parameters))
            guard let next = self.current else { return }
            guard next == UInt8(ascii: ",") else { throw self.error("expected ',' or ';'") }
            self.index += 1
        }
    }

    private mutating func skipWhitespace() {
        while let c = self.current, HTTPGrammar.isWhitespace(c) { self.index += 1 }
    }

    private mutating func token(expected what: String) throws(WebSocketError) -> String {
        let start = self.index
        while let c = self.current, HTTPGrammar.isTokenByte(c) { self.index += 1 }
        guard self.index > start else { throw self.error("expected \(what)") }
        return String(decoding: self.bytes[start..<self.index], as: UTF8.self)
    }

    /// A quoted-string starting at the current `"`, unquoted; its content must be a token (RFC 6455 9.1).
    private mutating func quotedString() throws(WebSocketError) -> String {
        let start = self.index
        self.index += 1
        var content: [UInt8] = []
        while true {
            guard let c = self.current else {
                self.index = start
                throw self.error("unterminated quoted-string")
            }
            self.index += 1
            switch c {
            case UInt8(ascii: "\""):
                guard !content.isEmpty, content.allSatisfy(HTTPGrammar.isTokenByte) else {
                    self.index = start
                    throw self.error("a quoted parameter value must contain a token")
                }
                return String(decoding: content, as: UTF8.self)
            case UInt8(ascii: "\\"):
                guard let escaped = self.current, HTTPGrammar.isFieldValueByte(escaped) else {
                    throw self.error("invalid escape in quoted-string")
                }
                content.append(escaped)
                self.index += 1
            default:
                guard HTTPGrammar.isFieldValueByte(c) else {
                    self.index -= 1
                    throw self.error("control character in quoted-string")
                }
                content.append(c)
            }
        }
    }

    private func error(_ what: String) -> WebSocketError {
        WebSocketError(
            .invalidHandshake,
            "malformed Sec-WebSocket-Extensions header '\(HTTPGrammar.printable(self.bytes))': \(what) at "
                + "offset \(self.index)"
        )
    }
}
