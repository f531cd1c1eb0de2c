// What an engine says to a proxy and how it reads the answer, as pure code: the HTTP CONNECT request and the
// bounded reading of the proxy's reply, and a SOCKS5 client (RFC 1928, username/password per RFC 1929) as a state
// machine that says how many bytes it needs next, so that an engine never reads past the proxy's reply: every
// byte after it belongs to the server.

/// The HTTP `CONNECT` exchange with an HTTP(S) proxy.
package enum HTTPConnectTunnel {
    /// The most bytes of the proxy's reply head (status line and headers) read before giving up.
    package static let maxReplyHeadBytes = 16384

    /// The `CONNECT` request for `host:port`, with `Proxy-Authorization: Basic` when the proxy has credentials.
    /// - Parameters:
    ///   - host: The endpoint's host (IPv6 without brackets).
    ///   - port: The endpoint's port.
    ///   - proxy: The proxy, for its credentials.
    package static func request(host: String, port: Int, proxy: ProxyServer) -> [UInt8] {
        let authority = "\(host.bracketedIfIPv6):\(port)"
        var text = "CONNECT \(authority) HTTP/1.1\r\nHost: \(authority)\r\n"
        if proxy.hasCredentials {
            let pair = "\(proxy.username ?? ""):\(proxy.password ?? "")"
            text += "Proxy-Authorization: Basic \(Base64.encode(Array(pair.utf8)))\r\n"
        }
        text += "Proxy-Connection: Keep-Alive\r\n\r\n"
        return Array(text.utf8)
    }

    /// The outcome of looking at the bytes received from the proxy so far.
    package enum ReplyStatus {
        /// The reply head is not complete yet: read more (the bytes seen are fewer than the limit).
        case incomplete
        /// The tunnel is open: exactly `headLength` bytes belong to the proxy; what follows is the server's.
        case established(headLength: Int)
    }

    /// Parses the proxy's reply from the start of what was received (the caller keeps every byte; only the first
    /// `headLength` bytes are the proxy's).
    /// - Parameters:
    ///   - received: All bytes received from the proxy so far (they may include the server's first bytes).
    ///   - host: The endpoint's host:port, for messages.
    ///   - proxy: The proxy, for messages.
    ///   - endOfStream: The proxy closed the connection after these bytes.
    /// - Throws: ``WebSocketError`` with code ``WebSocketError/Code/proxyFailure``: a status
    ///   other than 2xx (with the proxy's status, headers and the start of its body), a malformed, too large or
    ///   cut-short reply.
    package static func parseReply(
        _ received: UnsafeRawBufferPointer, target: String, proxy: ProxyServer, endOfStream: Bool
    ) throws(WebSocketError) -> ReplyStatus {
        var parser = HTTPResponseParser(maxHeaderBytes: Self.maxReplyHeadBytes, party: "the proxy's reply")
        let parsed: (head: HTTPResponseHead, consumed: Int)?
        do {
            parsed = try parser.feed(received)
        } catch {
            throw WebSocketError(
                .proxyFailure, "the proxy \(proxy) did not answer the CONNECT to \(target) with HTTP: \(error.message)")
        }
        guard let (head, consumed) = parsed else {
            if endOfStream {
                throw WebSocketError(
                    .proxyFailure,
                    received.isEmpty
                        ? "the proxy \(proxy) closed the connection without answering the CONNECT to \(target)"
                        : "the proxy \(proxy) closed the connection in the middle of its reply to the CONNECT to \(target)"
                )
            }
            return .incomplete
        }
        if (200...299).contains(head.status) { return .established(headLength: consumed) }
        let bodyLength = head.headers["Content-Length"].flatMap { Int($0) } ?? 0
        let body = Array(received[consumed..<min(received.count, consumed + max(0, bodyLength))])
        let statusText = "\(head.status)\(head.reason.isEmpty ? "" : " \(head.reason)")"
        var message: String
        switch head.status {
        case 407, 401:  // tinyproxy answers 401 to a missing or wrong Proxy-Authorization.
            let challenge = head.headers.values(for: "Proxy-Authenticate")
            let asks = challenge.isEmpty ? "" : "; it asks for \(challenge.joined(separator: ", "))"
            message =
                proxy.hasCredentials
                ? "the proxy \(proxy) rejected the credentials in the proxy URL (\(statusText)\(asks))"
                : "the proxy \(proxy) requires authentication (\(statusText)\(asks)); put user:password@ in the proxy URL"
        case 502, 503, 504:
            message = "the proxy \(proxy) could not open a tunnel to \(target) (\(statusText))"
        default:
            message = "the proxy \(proxy) refused to open a tunnel to \(target) (\(statusText))"
        }
        throw WebSocketError(
            .proxyFailure, message, status: head.status, headers: head.headers, body: body)
    }
}

/// A SOCKS5 client handshake (RFC 1928, with username/password authentication per RFC 1929) as a state machine.
///
/// Send ``greeting``; then repeatedly read exactly ``bytesNeeded`` bytes and pass them to ``receive(_:)``, sending
/// what it returns, until it returns ``Step/established``. It never asks for a byte past the proxy's last reply.
package struct SOCKS5Handshake {
    /// How the target is named to the proxy.
    package enum Target: Sendable, Equatable {
        /// An IPv4 (4 bytes) or IPv6 (16 bytes) address, resolved by the client (`socks5://`).
        case address([UInt8])
        /// A host name the proxy resolves (`socks5h://`), at most 255 bytes.
        case name(String)
    }

    /// What to do after ``receive(_:)``.
    package enum Step: Equatable {
        /// Send these bytes, then read ``bytesNeeded`` bytes.
        case send([UInt8])
        /// Read ``bytesNeeded`` more bytes.
        case read
        /// The tunnel is open; every later byte is the server's.
        case established
    }

    private enum State {
        case method, authentication, replyHead, replyAddress, done
    }

    private var state = State.method
    private let target: Target
    private let port: Int
    private let username: String?
    private let password: String?
    private let proxy: ProxyServer
    private let targetText: String
    /// How many bytes ``receive(_:)`` wants next.
    package private(set) var bytesNeeded = 2

    /// Creates the handshake.
    /// - Parameters:
    ///   - target: The target's address or name.
    ///   - port: The target's port.
    ///   - proxy: The proxy (credentials, and its name for messages).
    ///   - targetText: `host:port` of the target, for messages.
    /// - Throws: ``WebSocketError`` (`proxyFailure`) when the name, user name or password is longer than
    ///   SOCKS5 allows (255 bytes).
    package init(
        target: Target, port: Int, proxy: ProxyServer, targetText: String
    ) throws(WebSocketError) {
        self.target = target
        self.port = port
        self.proxy = proxy
        self.targetText = targetText
        self.username = proxy.hasCredentials ? proxy.username ?? "" : nil
        self.password = proxy.hasCredentials ? proxy.password ?? "" : nil
        if case .name(let name) = target, name.utf8.count > 255 || name.isEmpty {
            throw WebSocketError(
                .proxyFailure,
                "cannot ask the SOCKS5 proxy \(proxy) for \(targetText): the host name is longer than 255 bytes")
        }
        if (self.username?.utf8.count ?? 0) > 255 || (self.password?.utf8.count ?? 0) > 255 {
            throw WebSocketError(
                .proxyFailure, "the user name or password for the SOCKS5 proxy \(proxy) is longer than 255 bytes")
        }
    }

    /// The client's first message: version 5 and the methods offered (no authentication, and username/password
    /// when the proxy has credentials).
    package var greeting: [UInt8] {
        self.username == nil ? [5, 1, 0x00] : [5, 2, 0x00, 0x02]
    }

    /// Takes exactly ``bytesNeeded`` bytes of the proxy's reply.
    /// - Parameter bytes: The bytes read.
    /// - Returns: What to do next.
    /// - Throws: ``WebSocketError`` with code ``WebSocketError/Code/proxyFailure`` saying what
    ///   the proxy refused or got wrong.
    package mutating func receive(_ bytes: [UInt8]) throws(WebSocketError) -> Step {
        precondition(bytes.count == self.bytesNeeded, "SOCKS5Handshake: read exactly bytesNeeded bytes")
        switch self.state {
        case .method:
            guard bytes[0] == 5 else { throw self.failure("answered with version \(bytes[0]), not SOCKS5") }
            switch bytes[1] {
            case 0x00:
                return self.request()
            case 0x02 where self.username != nil:
                self.state = .authentication
                self.bytesNeeded = 2
                let user = Array(self.username!.utf8)
                let pass = Array(self.password!.utf8)
                return .send([1, UInt8(user.count)] + user + [UInt8(pass.count)] + pass)
            case 0xFF:
                throw self.failure(
                    self.username == nil
                        ? "accepts none of the offered authentication methods (it probably needs a user name and password: put user:password@ in the proxy URL)"
                        : "accepts none of the offered authentication methods (no authentication, username/password)")
            default:
                throw self.failure("chose authentication method \(bytes[1]), which was not offered")
            }
        case .authentication:
            guard bytes[1] == 0 else {
                throw self.failure("rejected the user name and password (RFC 1929 status \(bytes[1]))")
            }
            return self.request()
        case .replyHead:
            guard bytes[0] == 5 else { throw self.failure("answered with version \(bytes[0]), not SOCKS5") }
            guard bytes[1] == 0 else {
                throw self.failure("could not connect to \(self.targetText): \(Self.replyText(bytes[1]))")
            }
            self.state = .replyAddress
            switch bytes[3] {
            case 1: self.bytesNeeded = 4 + 2
            case 4: self.bytesNeeded = 16 + 2
            case 3:
                // The length byte first; then the name and the port.
                self.bytesNeeded = 1
                self.pendingNameLength = true
            default: throw self.failure("answered with the unknown address type \(bytes[3])")
            }
            return .read
        case .replyAddress:
            if self.pendingNameLength {
                self.pendingNameLength = false
                self.bytesNeeded = Int(bytes[0]) + 2
                return .read
            }
            self.state = .done
            self.bytesNeeded = 0
            return .established
        case .done:
            return .established
        }
    }

    private var pendingNameLength = false

    private mutating func request() -> Step {
        self.state = .replyHead
        self.bytesNeeded = 4
        var message: [UInt8] = [5, 1, 0]
        switch self.target {
        case .address(let bytes):
            message.append(bytes.count == 4 ? 1 : 4)
            message += bytes
        case .name(let name):
            message.append(3)
            message.append(UInt8(name.utf8.count))
            message += Array(name.utf8)
        }
        message += [UInt8(self.port >> 8 & 0xFF), UInt8(self.port & 0xFF)]
        return .send(message)
    }

    private func failure(_ what: String) -> WebSocketError {
        WebSocketError(.proxyFailure, "the SOCKS5 proxy \(self.proxy) \(what)")
    }

    /// The meaning of a SOCKS5 reply code (RFC 1928 section 6).
    package static func replyText(_ code: UInt8) -> String {
        let text: String
        switch code {
        case 1: text = "general SOCKS server failure"
        case 2: text = "connection not allowed by the proxy's rules"
        case 3: text = "network unreachable"
        case 4: text = "host unreachable"
        case 5: text = "connection refused by the host"
        case 6: text = "TTL expired"
        case 7: text = "command not supported"
        case 8: text = "address type not supported"
        default: text = "unknown reply"
        }
        return "\(text) (SOCKS5 reply \(code))"
    }
}
