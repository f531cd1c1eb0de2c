/// The client side of the opening handshake (RFC 6455 section 4.1): builds the upgrade request and checks the
/// server's response. Engine-independent; pure functions over bytes and headers.
final class OpeningHandshake: Sendable {
    /// The request as the session sends it.
    let request: WebSocketRequestBuilder
    /// The `Sec-WebSocket-Key` of this connection, fresh from a CSPRNG.
    let key: String
    /// The extension factories offered, in order.
    let extensionFactories: [any WebSocketExtensionFactory]

    init(request: WebSocketRequestBuilder, extensionFactories: [any WebSocketExtensionFactory]) {
        self.request = request
        self.key = WebSocketHandshake.makeKey()
        self.extensionFactories = extensionFactories
    }

    /// Header names the session owns; user values for them are dropped.
    private static let reservedHeaders = [
        "host", "upgrade", "connection", "sec-websocket-key", "sec-websocket-version", "sec-websocket-accept",
    ]

    /// The request head bytes.
    func requestBytes() -> [UInt8] {
        // Appended piece by piece into one buffer (string interpolation would make a string per line).
        var text = ""
        text.reserveCapacity(256)
        func line(_ parts: String...) {
            for part in parts { text.append(part) }
            text.append("\r\n")
        }
        line(self.request.method.rawValue, " ", self.request.url.pathAndQuery, " HTTP/1.1")
        line("Host: ", self.request.url.hostHeader)
        line("Upgrade: websocket")
        line("Connection: Upgrade")
        line("Sec-WebSocket-Key: ", self.key)
        line("Sec-WebSocket-Version: 13")
        if !self.request.subprotocols.isEmpty {
            line("Sec-WebSocket-Protocol: ", self.request.subprotocols.joined(separator: ", "))
        }
        let offers = self.extensionFactories.flatMap { $0.makeOffers() }
        if !offers.isEmpty, !self.request.headers.contains("Sec-WebSocket-Extensions") {
            line("Sec-WebSocket-Extensions: ", WebSocketExtensionHeader.format(offers))
        }
        if let userInfo = self.request.url.userInfo, !self.request.headers.contains("Authorization") {
            line("Authorization: Basic ", Base64.encode(Array(Self.percentDecoded(userInfo).utf8)))
        }
        for field in self.request.headers
        where !Self.reservedHeaders.contains(HTTPHeaders.lowercase(field.name)) {
            line(field.name, ": ", field.value)
        }
        text.append("\r\n")
        return Array(text.utf8)
    }

    /// The request as an engine that opens the session itself sends it (an HTTP/2 extended CONNECT): the same header
    /// fields as ``requestBytes()`` without the HTTP/1.1 connection-specific ones.
    func openingRequest() -> EngineOpeningRequest {
        var headers = HTTPHeaders()
        if !self.request.subprotocols.isEmpty {
            headers.add("Sec-WebSocket-Protocol", self.request.subprotocols.joined(separator: ", "))
        }
        let offers = self.extensionFactories.flatMap { $0.makeOffers() }
        if !offers.isEmpty, !self.request.headers.contains("Sec-WebSocket-Extensions") {
            headers.add("Sec-WebSocket-Extensions", WebSocketExtensionHeader.format(offers))
        }
        if let userInfo = self.request.url.userInfo, !self.request.headers.contains("Authorization") {
            headers.add("Authorization", "Basic " + Base64.encode(Array(Self.percentDecoded(userInfo).utf8)))
        }
        for field in self.request.headers
        where !Self.reservedHeaders.contains(HTTPHeaders.lowercase(field.name)) {
            headers.add(field.name, field.value)
        }
        return EngineOpeningRequest(
            path: self.request.url.pathAndQuery, authority: self.request.url.hostHeader, headers: headers)
    }

    /// Checks the answer to an opening request the engine sent itself: a 2xx status, an offered subprotocol, and
    /// offered extensions only (there is no `Sec-WebSocket-Accept` outside HTTP/1.1).
    func validate(_ response: EngineOpeningResponse) throws(WebSocketError) -> Outcome {
        guard (200..<300).contains(response.status) else {
            throw WebSocketError(
                .upgradeRejected,
                "the server answered the \(response.httpVersion) WebSocket request with status \(response.status)",
                status: response.status, headers: response.headers)
        }
        return try self.negotiate(response.headers, status: response.status)
    }

    /// What a valid 101 response settled.
    struct Outcome: Sendable {
        var subprotocol: String?
        var extensions: [any WebSocketExtension]
        var headers: HTTPHeaders
    }

    /// Checks a 101 response: Upgrade, Connection, exactly one matching Sec-WebSocket-Accept, an offered
    /// subprotocol, and offered extensions only.
    func validate(_ head: HTTPResponseHead) throws(WebSocketError) -> Outcome {
        func invalid(_ why: String) -> WebSocketError {
            WebSocketError(.invalidHandshake, why, status: head.status, headers: head.headers)
        }
        let headers = head.headers
        guard headers.values(for: "Upgrade").contains(where: { HTTPHeaders.equalNames($0, "websocket") }) else {
            throw invalid("the server's 101 response has no 'Upgrade: websocket' header")
        }
        guard
            httpTokenList(headers.values(for: "Connection")).contains(where: { HTTPHeaders.equalNames($0, "upgrade") })
        else {
            throw invalid("the server's 101 response has no 'Connection: Upgrade' header")
        }
        let accepts = headers.values(for: "Sec-WebSocket-Accept")
        guard accepts.count == 1 else {
            throw invalid(
                accepts.isEmpty
                    ? "the server's 101 response has no Sec-WebSocket-Accept header"
                    : "the server's 101 response has \(accepts.count) Sec-WebSocket-Accept headers; exactly one is allowed"
            )
        }
        let expected = WebSocketHandshake.acceptValue(forKey: self.key)
        guard accepts[0].trimmingASCIIWhitespace() == expected else {
            throw invalid(
                "Sec-WebSocket-Accept is '\(accepts[0])' but the key we sent requires '\(expected)': the server (or a proxy) did not answer this handshake"
            )
        }
        return try self.negotiate(headers, status: head.status)
    }

    /// Checks the subprotocol and extensions a successful response selected.
    private func negotiate(_ headers: HTTPHeaders, status: Int) throws(WebSocketError) -> Outcome {
        func invalid(_ why: String) -> WebSocketError {
            WebSocketError(.invalidHandshake, why, status: status, headers: headers)
        }
        var subprotocol: String?
        let protocols = httpTokenList(headers.values(for: "Sec-WebSocket-Protocol"))
        if protocols.count > 1 {
            throw invalid(
                "the server selected several subprotocols (\(protocols.joined(separator: ", "))); at most one is allowed"
            )
        }
        if let chosen = protocols.first {
            guard self.request.subprotocols.contains(chosen) else {
                throw invalid(
                    "the server selected subprotocol '\(chosen)', which was not offered (offered: \(self.request.subprotocols.isEmpty ? "none" : self.request.subprotocols.joined(separator: ", ")))"
                )
            }
            subprotocol = chosen
        }
        let accepted = try WebSocketExtensionHeader.parse(headers.values(for: "Sec-WebSocket-Extensions"))
        var extensions: [any WebSocketExtension] = []
        var seen: Set<String> = []
        for element in accepted {
            let name = HTTPHeaders.lowercase(element.name)
            guard let factory = self.extensionFactories.first(where: { HTTPHeaders.equalNames($0.name, name) }) else {
                throw invalid("the server accepted extension '\(element.name)', which was not offered")
            }
            guard seen.insert(name).inserted else {
                throw invalid("the server accepted extension '\(element.name)' twice")
            }
            do {
                extensions.append(try factory.negotiate(response: element))
            } catch {
                throw WebSocketError(
                    .invalidHandshake,
                    "the server's parameters for extension '\(element.name)' violate our offer: \(error)",
                    status: status, headers: headers, underlying: error
                )
            }
        }
        return Outcome(subprotocol: subprotocol, extensions: extensions, headers: headers)
    }

    private static func percentDecoded(_ s: String) -> String {
        var out: [UInt8] = []
        var bytes = s.utf8.makeIterator()
        while let c = bytes.next() {
            if c == UInt8(ascii: "%"), let h = bytes.next(), let l = bytes.next(),
                let v = UInt8(String(decoding: [h, l], as: UTF8.self), radix: 16)
            {
                out.append(v)
            } else {
                out.append(c)
            }
        }
        return String(decoding: out, as: UTF8.self)
    }
}

extension String {
    /// The string without leading and trailing spaces and tabs.
    func trimmingASCIIWhitespace() -> String {
        let utf8 = self.utf8
        guard let start = utf8.firstIndex(where: { $0 != 0x20 && $0 != 0x09 }) else { return "" }
        let end = utf8.lastIndex(where: { $0 != 0x20 && $0 != 0x09 })!
        return String(self[start...end])
    }
}
