/// Reads the server's answer to the opening handshake (RFC 6455 section 4.1): parses the response head, validates a
/// 101 with ``OpeningHandshake/validate(_:)``, and for any other status collects the body (up to its
/// `Content-Length`, at most ``WebSocketError/maxBodyBytes``) for the rejection error. Pure: no I/O.
struct HandshakeResponseReader {
    /// What the bytes read so far settled.
    enum Step {
        /// More bytes are needed.
        case needMore
        /// A valid 101: the session is open; the input's bytes from `consumed` on are WebSocket frames.
        case upgraded(OpeningHandshake.Outcome, consumed: Int)
        /// The handshake failed (invalid response, rejection with its body collected): drop the connection.
        case failed(any Error)
    }

    private let handshake: OpeningHandshake
    private var parser = HTTPResponseParser()
    /// The head of a response that did not upgrade; its body is being collected.
    private var rejectedHead: HTTPResponseHead?
    private var rejectedBody: [UInt8] = []
    private var rejectedBodyExpected = WebSocketError.maxBodyBytes

    /// Creates a reader for the response to `handshake`'s request.
    /// - Parameter handshake: The request sent and what its response must satisfy.
    init(handshake: OpeningHandshake) {
        self.handshake = handshake
    }

    /// Reads the next bytes of the response.
    /// - Parameter bytes: Bytes read from the connection.
    /// - Returns: What they settled.
    mutating func read(_ bytes: UnsafeRawBufferPointer) -> Step {
        if self.rejectedHead != nil { return self.collectBody(bytes) }
        let parsed: (head: HTTPResponseHead, consumed: Int)?
        do {
            parsed = try self.parser.feed(bytes)
        } catch {
            return .failed(error)
        }
        guard let (head, consumed) = parsed else { return .needMore }
        guard head.status == 101 else {
            self.rejectedHead = head
            if let length = head.headers["Content-Length"].flatMap({ Int($0.trimmingASCIIWhitespace()) }) {
                self.rejectedBodyExpected = min(max(length, 0), WebSocketError.maxBodyBytes)
            }
            return self.collectBody(UnsafeRawBufferPointer(rebasing: bytes[consumed...]))
        }
        do {
            return .upgraded(try self.handshake.validate(head), consumed: consumed)
        } catch {
            return .failed(error)
        }
    }

    /// The error for a connection that closed before the handshake settled.
    /// - Parameter error: The transport's error, if any.
    func closedError(_ error: (any Error)?) -> WebSocketError {
        if self.rejectedHead != nil { return self.rejectionError() }
        // A TLS alert read here (e.g. a client certificate the server rejects after a TLS 1.3 handshake) stays a
        // TLS failure.
        let code: WebSocketError.Code =
            (error as? WebSocketError)?.code == .tlsFailure ? .tlsFailure : .network
        return WebSocketError(
            code,
            "the server closed the connection during the opening handshake"
                + (error.map { ": \($0)" } ?? " without answering"),
            underlying: error
        )
    }

    private mutating func collectBody(_ bytes: UnsafeRawBufferPointer) -> Step {
        let room = self.rejectedBodyExpected - self.rejectedBody.count
        if room > 0 { self.rejectedBody.append(contentsOf: bytes.prefix(room)) }
        guard self.rejectedBody.count >= self.rejectedBodyExpected else { return .needMore }
        return .failed(self.rejectionError())
    }

    private func rejectionError() -> WebSocketError {
        let head = self.rejectedHead
        let status = head?.status ?? 0
        let hint: String =
            switch status {
            case 401, 403: " (check the credentials or Origin the server expects)"
            case 404: " (check the URL path)"
            case 426: " (the server wants another protocol version)"
            case 300..<400: " (redirects are not followed; Location: \(head?.headers["Location"] ?? "none"))"
            default: ""
            }
        return WebSocketError(
            .upgradeRejected,
            "the server refused the WebSocket upgrade with HTTP \(status) \(head?.reason ?? "")\(hint)",
            status: status,
            headers: head?.headers ?? HTTPHeaders(),
            body: self.rejectedBody
        )
    }
}
