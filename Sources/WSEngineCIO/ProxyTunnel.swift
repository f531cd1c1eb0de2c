// The tunnel step of a connect through a proxy, on the connector's loop: send the HTTP CONNECT request or the SOCKS5
// messages (WSCore's pure HTTPConnectTunnel and SOCKS5Handshake decide what), over the socket or the TLS connection
// to an https:// proxy, and read the proxy's replies without taking a single byte past them: a CONNECT reply is
// read one byte at a time until its blank line (from OpenSSL's buffer for an https:// proxy, so no system call per
// byte), a SOCKS5 reply exactly as long as the protocol says. Whatever the proxy or the server sent after that stays
// in the socket (or in OpenSSL) as the start of the server's stream.
import CWSLazyOpenSSL
import Glibc
import WSCore
import WSPosix

/// The non-blocking byte I/O of the tunnel step: the socket, or the TLS connection to the proxy.
struct TunnelIO {
    let fd: Int32
    let ssl: OpaquePointer?

    enum ReadResult {
        case data(Int)
        case wouldBlock
        case endOfStream
        case failed(String)
    }

    /// Sends as much of `bytes` as the socket takes now.
    func send(_ bytes: ArraySlice<UInt8>) -> Result<Int, WSCoreMessage> {
        bytes.withUnsafeBytes { raw -> Result<Int, WSCoreMessage> in
            guard let base = raw.baseAddress, raw.count > 0 else { return .success(0) }
            if let ssl = self.ssl {
                cwsl_ERR_clear_error()
                let result = cwsl_SSL_write(ssl, base, Int32(clamping: raw.count))
                if result > 0 { return .success(Int(result)) }
                let error = cwsl_SSL_get_error(ssl, result)
                if error == SSL_ERROR_WANT_WRITE || error == SSL_ERROR_WANT_READ { return .success(0) }
                return .failure(WSCoreMessage(text: drainOpenSSLErrors() ?? "TLS error \(error)"))
            }
            while true {
                let result = Glibc.send(self.fd, base, raw.count, Int32(MSG_NOSIGNAL))
                if result >= 0 { return .success(result) }
                let code = errno
                if code == EINTR { continue }
                if code == EAGAIN || code == EWOULDBLOCK { return .success(0) }
                return .failure(WSCoreMessage(text: errnoText(code)))
            }
        }
    }

    /// Reads at most `count` bytes into `buffer`.
    func read(into buffer: UnsafeMutableRawPointer, count: Int) -> ReadResult {
        if let ssl = self.ssl {
            cwsl_ERR_clear_error()
            errno = 0
            let result = cwsl_SSL_read(ssl, buffer, Int32(clamping: count))
            if result > 0 { return .data(Int(result)) }
            let code = errno
            switch cwsl_SSL_get_error(ssl, result) {
            case SSL_ERROR_WANT_READ, SSL_ERROR_WANT_WRITE: return .wouldBlock
            case SSL_ERROR_ZERO_RETURN: return .endOfStream
            case SSL_ERROR_SYSCALL where code == 0: return .endOfStream
            case let error: return .failed(drainOpenSSLErrors() ?? (code != 0 ? errnoText(code) : "TLS error \(error)"))
            }
        }
        while true {
            let result = recv(self.fd, buffer, count, 0)
            if result > 0 { return .data(result) }
            if result == 0 { return .endOfStream }
            let code = errno
            if code == EINTR { continue }
            if code == EAGAIN || code == EWOULDBLOCK { return .wouldBlock }
            return .failed(errnoText(code))
        }
    }
}

/// A message from a failed I/O call.
struct WSCoreMessage: Error {
    let text: String
}

/// The state of the tunnel step: what is left to send and what has been read of the proxy's reply.
struct ProxyTunnel {
    enum Outcome {
        case waiting
        case established
        case failed(WebSocketError)
    }

    private enum Exchange {
        case http
        case socks(SOCKS5Handshake)
    }

    private let proxy: ProxyServer
    private let target: String
    private var exchange: Exchange
    private var output: [UInt8]
    private var outputSent = 0
    private var input: [UInt8] = []
    private var statusLineChecked = false

    /// Prepares the exchange for `host:port`; `address` is the target's address for `socks5://` (local resolution).
    init(proxy: ProxyServer, host: String, port: Int, address: [UInt8]?) throws(WebSocketError) {
        self.proxy = proxy
        self.target = hostPortText(host: host, port: port)
        if proxy.kind.isSOCKS {
            let target: SOCKS5Handshake.Target
            if let address {
                target = .address(address)
            } else if let literal = ipAddressBytes(host) {
                target = .address(literal)
            } else {
                target = .name(host)
            }
            let handshake = try SOCKS5Handshake(target: target, port: port, proxy: proxy, targetText: self.target)
            self.output = handshake.greeting
            self.exchange = .socks(handshake)
        } else {
            self.output = HTTPConnectTunnel.request(host: host, port: port, proxy: proxy)
            self.exchange = .http
        }
    }

    /// Sends what is pending and reads what the proxy sent, as far as the socket allows now.
    mutating func step(_ io: TunnelIO) -> Outcome {
        while true {
            while self.outputSent < self.output.count {
                switch io.send(self.output[self.outputSent...]) {
                case .success(0): return .waiting  // EPOLLOUT (or, for TLS, EPOLLIN) comes back here.
                case .success(let sent): self.outputSent += sent
                case .failure(let error): return .failed(self.ioFailure("sending to", error.text))
                }
            }
            let outcome: Outcome?
            switch self.exchange {
            case .http: outcome = self.readHTTPReply(io)
            case .socks(var handshake):
                outcome = self.readSOCKSReply(io, &handshake)
                self.exchange = .socks(handshake)
            }
            if let outcome { return outcome }
            // The SOCKS handshake queued its next message: send it.
        }
    }

    private mutating func readHTTPReply(_ io: TunnelIO) -> Outcome? {
        if io.ssl == nil { return self.peekHTTPReply(io) }
        var byte: UInt8 = 0
        while true {
            switch io.read(into: &byte, count: 1) {
            case .wouldBlock:
                return .waiting
            case .failed(let text):
                return .failed(self.ioFailure("reading the reply of", text))
            case .endOfStream:
                return self.parse(endOfStream: true)
            case .data:
                self.input.append(byte)
            }
            if byte == UInt8(ascii: "\n"), let outcome = self.lineEnded() { return outcome }
        }
    }

    /// After a line feed: the status line must be HTTP; a blank line ends the head.
    private mutating func lineEnded() -> Outcome? {
        if !self.statusLineChecked {
            self.statusLineChecked = true
            guard self.input.starts(with: Array("HTTP/1.".utf8)) else {
                let line = String(decoding: self.input.prefix(80), as: UTF8.self)
                    .filter { !$0.isNewline && ($0.isASCII && ($0.asciiValue! >= 0x20) || !$0.isASCII) }
                return .failed(
                    WebSocketError(
                        .proxyFailure,
                        "the proxy \(self.proxy) did not answer the CONNECT to \(self.target) with HTTP: it sent '\(line)'"
                    ))
            }
        }
        if self.input.suffix(2) == [10, 10] || self.input.suffix(4) == [13, 10, 13, 10] {
            return self.parse(endOfStream: false)
        }
        if self.input.count >= HTTPConnectTunnel.maxReplyHeadBytes {
            return .failed(
                WebSocketError(
                    .proxyFailure,
                    "the head of the proxy \(self.proxy)'s reply to the CONNECT to \(self.target) exceeds \(HTTPConnectTunnel.maxReplyHeadBytes) bytes"
                ))
        }
        return nil
    }

    /// Plain TCP: peeks at what the socket holds and takes exactly the bytes up to the end of the head (two system
    /// calls per wakeup instead of one per byte); the rest stays in the socket.
    private mutating func peekHTTPReply(_ io: TunnelIO) -> Outcome? {
        var window = [UInt8](repeating: 0, count: HTTPConnectTunnel.maxReplyHeadBytes - self.input.count)
        while true {
            let peeked = window.withUnsafeMutableBytes { recv(io.fd, $0.baseAddress!, $0.count, Int32(MSG_PEEK)) }
            if peeked == 0 { return self.parse(endOfStream: true) }
            if peeked < 0 {
                let code = errno
                if code == EINTR { continue }
                if code == EAGAIN || code == EWOULDBLOCK { return .waiting }
                return .failed(self.ioFailure("reading the reply of", errnoText(code)))
            }
            // Take bytes up to and including each line feed, checking each line as it ends.
            var taken = 0
            var outcome: Outcome?
            while taken < peeked, outcome == nil {
                let end = window[taken..<peeked].firstIndex(of: 10).map { $0 + 1 } ?? peeked
                self.input += window[taken..<end]
                taken = end
                if self.input.last == 10 {
                    outcome = self.lineEnded()
                } else if self.input.count >= HTTPConnectTunnel.maxReplyHeadBytes {
                    outcome = self.lineEnded()
                }
            }
            // Consume exactly what was taken (it is in the socket: the peek just saw it).
            let consumed = window.withUnsafeMutableBytes { recv(io.fd, $0.baseAddress!, taken, 0) }
            if consumed != taken {
                return .failed(self.ioFailure("reading the reply of", "the socket lost bytes it had shown"))
            }
            if let outcome { return outcome }
            window.removeLast(min(window.count, taken))
            if window.isEmpty { return self.lineEnded() }
        }
    }

    private func parse(endOfStream: Bool) -> Outcome {
        let result = self.input.withUnsafeBytes { received in
            Result { () throws(WebSocketError) in
                try HTTPConnectTunnel.parseReply(
                    received, target: self.target, proxy: self.proxy, endOfStream: endOfStream)
            }
        }
        do throws(WebSocketError) {
            switch try result.get() {
            case .established: return .established
            case .incomplete:
                return .failed(
                    WebSocketError(
                        .proxyFailure,
                        "the proxy \(self.proxy) sent an incomplete reply to the CONNECT to \(self.target)"))
            }
        } catch {
            return .failed(error)
        }
    }

    /// Reads exactly what the handshake needs; `nil` when it queued a message to send.
    private mutating func readSOCKSReply(_ io: TunnelIO, _ handshake: inout SOCKS5Handshake) -> Outcome? {
        while true {
            let needed = handshake.bytesNeeded
            if self.input.count < needed {
                var chunk = [UInt8](repeating: 0, count: needed - self.input.count)
                let result = chunk.withUnsafeMutableBytes { io.read(into: $0.baseAddress!, count: $0.count) }
                switch result {
                case .wouldBlock:
                    return .waiting
                case .failed(let text):
                    return .failed(self.ioFailure("reading the reply of", text))
                case .endOfStream:
                    return .failed(
                        WebSocketError(
                            .proxyFailure,
                            "the SOCKS5 proxy \(self.proxy) closed the connection before the tunnel to \(self.target) was open"
                        ))
                case .data(let count):
                    self.input += chunk[..<count]
                    if self.input.count < needed { continue }
                }
            }
            let bytes = self.input
            self.input.removeAll(keepingCapacity: true)
            do throws(WebSocketError) {
                switch try handshake.receive(bytes) {
                case .established:
                    return .established
                case .read:
                    continue
                case .send(let message):
                    self.output = message
                    self.outputSent = 0
                    return nil
                }
            } catch {
                return .failed(error)
            }
        }
    }

    private func ioFailure(_ doing: String, _ text: String) -> WebSocketError {
        WebSocketError(.network, "\(doing) the proxy \(self.proxy) failed: \(text)")
    }
}
