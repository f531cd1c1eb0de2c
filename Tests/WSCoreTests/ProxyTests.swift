// The pure proxy code: proxy URLs, the environment rules (as curl reads them), no_proxy, the CONNECT request and
// reply, and the SOCKS5 state machine. Every error text is checked to be free of the password.
import Testing

@testable import WSCore

private let secret = "pa:ss@w%rd"

@Suite("Proxies (pure)")
struct ProxyTests {
    @Test("proxy URLs: schemes, default ports, percent-decoded credentials, IPv6, errors without the password")
    func urls() throws {
        let http = try ProxyServer(url: "http://alice:pa%3Ass%40w%25rd@proxy.example:3128/")
        #expect(http.kind == .http && http.host == "proxy.example" && http.port == 3128)
        #expect(http.username == "alice" && http.password == secret)
        #expect(http.description == "http://***@proxy.example:3128")
        #expect(try ProxyServer(url: "proxy.example").kind == .http)
        #expect(try ProxyServer(url: "proxy.example").port == 1080)
        #expect(try ProxyServer(url: "https://proxy.example").port == 443)
        #expect(try ProxyServer(url: "SOCKS5H://[::1]:1081").kind == .socks5h)
        #expect(try ProxyServer(url: "socks5h://[::1]:1081").host == "::1")
        #expect(try ProxyServer(url: "socks5://10.0.0.1").port == 1080)
        for bad in ["socks4://h:1", "http://user:\(secret)@:80", "http://user:\(secret)@h:99999", "http://h/path"] {
            #expect(throws: WebSocketError.self) { try ProxyServer(url: bad) }
            do { _ = try ProxyServer(url: bad) } catch {
                #expect(!error.description.contains(secret), "\(error)")
                #expect(!error.description.contains("pa:ss"), "\(error)")
            }
        }
        #expect(try ProxyConfiguration(url: "") == .direct)
    }

    @Test(
        "environment: ws uses ws_proxy then http_proxy (lower case only), wss https_proxy/HTTPS_PROXY, then all_proxy")
    func environment() throws {
        func resolve(_ env: [String: String], host: String = "example.com", port: Int = 443, secure: Bool)
            throws -> String?
        {
            try ProxyConfiguration.environment.server(forHost: host, port: port, secure: secure) { env[$0] }?
                .description
        }
        #expect(try resolve(["http_proxy": "http://p:1"], secure: false) == "http://p:1")
        #expect(try resolve(["HTTP_PROXY": "http://p:1"], secure: false) == nil)  // curl: lower case only
        #expect(try resolve(["http_proxy": "http://p:1"], secure: true) == nil)
        #expect(try resolve(["https_proxy": "http://p:2"], secure: true) == "http://p:2")
        #expect(try resolve(["HTTPS_PROXY": "http://p:2"], secure: true) == "http://p:2")
        #expect(
            try resolve(["https_proxy": "http://lower:2", "HTTPS_PROXY": "http://upper:2"], secure: true)
                == "http://lower:2")
        #expect(try resolve(["ws_proxy": "socks5://w:3", "http_proxy": "http://p:1"], secure: false) == "socks5://w:3")
        #expect(
            try resolve(["WSS_PROXY": "socks5h://w:3", "https_proxy": "http://p:1"], secure: true)
                == "socks5h://w:3")
        #expect(try resolve(["all_proxy": "socks5h://a:4"], secure: false) == "socks5h://a:4")
        #expect(try resolve(["ALL_PROXY": "socks5h://a:4"], secure: true) == "socks5h://a:4")
        #expect(try resolve(["http_proxy": "http://p:1", "all_proxy": "socks5h://a:4"], secure: false) == "http://p:1")
        #expect(try resolve(["http_proxy": "", "all_proxy": "socks5h://a:4"], secure: false) == "socks5h://a:4")
        #expect(try resolve([:], secure: false) == nil)
        // no_proxy, then NO_PROXY when no_proxy is unset.
        #expect(try resolve(["https_proxy": "p:1", "no_proxy": "example.com"], secure: true) == nil)
        #expect(try resolve(["https_proxy": "p:1", "NO_PROXY": ".example.com"], secure: true) == nil)
        #expect(
            try resolve(["https_proxy": "p:1", "no_proxy": "other.org", "NO_PROXY": "example.com"], secure: true)
                == "http://p:1")
        // A broken variable: a clear error naming it, never the password.
        do {
            _ = try resolve(["https_proxy": "ftp://u:\(secret)@p:1"], secure: true)
            Issue.record("no error")
        } catch let error as WebSocketError {
            #expect(error.code == .invalidURL && error.message.contains("https_proxy"), "\(error)")
            #expect(!error.description.contains(secret))
        }
    }

    @Test("an explicit setting wins and turns the environment off; direct ignores it")
    func explicitWins() throws {
        let env: (String) -> String? = { ["https_proxy": "http://env:1", "no_proxy": "*"][$0] }
        let explicit = try ProxyConfiguration(url: "socks5h://mine:2")
        #expect(try explicit.server(forHost: "example.com", port: 443, secure: true, environment: env)?.host == "mine")
        #expect(
            try ProxyConfiguration.direct.server(forHost: "example.com", port: 443, secure: true, environment: env)
                == nil)
        let bypassing = try ProxyConfiguration(url: "http://mine:2", noProxy: "localhost")
        #expect(try bypassing.server(forHost: "localhost", port: 80, secure: false, environment: env) == nil)
        #expect(try bypassing.server(forHost: "example.com", port: 80, secure: false, environment: env) != nil)
    }

    @Test("no_proxy: *, suffixes, leading dot, case, trailing dots, IP literals, CIDR, IPv6, ports")
    func noProxy() {
        func bypass(_ host: String, _ list: String, port: Int = 443) -> Bool {
            ProxyConfiguration.bypasses(host: host, port: port, noProxy: list)
        }
        #expect(bypass("anything.org", "*"))
        #expect(bypass("anything.org", " * "))
        #expect(bypass("example.com", "example.com"))
        #expect(bypass("www.Example.COM", "example.com"))
        #expect(bypass("www.example.com", ".example.com"))
        #expect(bypass("example.com", ".example.com"))
        #expect(bypass("example.com.", "example.com"))
        #expect(!bypass("notexample.com", "example.com"))
        #expect(!bypass("example.com.org", "example.com"))
        #expect(bypass("b.org", "a.org, b.org"))
        #expect(bypass("b.org", "a.org b.org"))
        #expect(bypass("10.1.2.3", "10.1.2.3"))
        #expect(!bypass("10.1.2.4", "10.1.2.3"))
        #expect(bypass("10.1.2.3", "10.0.0.0/8"))
        #expect(!bypass("11.1.2.3", "10.0.0.0/8"))
        #expect(bypass("::1", "::1"))
        #expect(bypass("[::1]", "::1"))
        #expect(bypass("fd00::5", "fd00::/8"))
        #expect(!bypass("10.1.2.3", "10.1.2"))  // No partial IP match (curl compares addresses).
        #expect(bypass("example.com", "example.com:443", port: 443))
        #expect(!bypass("example.com", "example.com:8443", port: 443))
        #expect(bypass("::1", "[::1]:8080", port: 8080))
        #expect(!bypass("::1", "[::1]:8080", port: 80))
        #expect(bypass("10.1.2.3", "10.1.2.3:80", port: 80))
        #expect(!bypass("example.com", ""))
    }

    @Test("the CONNECT request carries Basic credentials; its reply is read without the bytes after it")
    func connect() throws {
        let proxy = try ProxyServer(url: "http://alice:\("pa%3Ass%40w%25rd")@p:3128")
        let request = String(decoding: HTTPConnectTunnel.request(host: "::1", port: 8080, proxy: proxy), as: UTF8.self)
        #expect(request.hasPrefix("CONNECT [::1]:8080 HTTP/1.1\r\nHost: [::1]:8080\r\n"))
        let basic = Base64.encode(Array("alice:\(secret)".utf8))
        #expect(request.contains("Proxy-Authorization: Basic \(basic)\r\n"))
        #expect(request.hasSuffix("\r\n\r\n"))
        let anonymous = String(
            decoding: HTTPConnectTunnel.request(host: "h", port: 1, proxy: ProxyServer(.http, host: "p")), as: UTF8.self
        )
        #expect(!anonymous.contains("Proxy-Authorization"))

        func parse(_ text: String, end: Bool = false) throws(WebSocketError) -> HTTPConnectTunnel.ReplyStatus {
            try Array(text.utf8).withUnsafeBytes { bytes in
                Result { () throws(WebSocketError) in
                    try HTTPConnectTunnel.parseReply(bytes, target: "h:1", proxy: proxy, endOfStream: end)
                }
            }.get()
        }
        let head = "HTTP/1.1 200 Connection established\r\nProxy-Agent: x\r\n\r\n"
        guard case .established(let length) = try parse(head + "HTTP/1.1 101 Switching") else {
            Issue.record("not established")
            return
        }
        #expect(length == head.utf8.count)  // The server's bytes after the head are not the proxy's.
        guard case .incomplete = try parse("HTTP/1.1 200 Conn") else {
            Issue.record("a partial head was accepted")
            return
        }
        func failure(_ text: String, end: Bool = false) -> WebSocketError? {
            do {
                _ = try parse(text, end: end)
                return nil
            } catch { return error }
        }
        let refused = failure(
            "HTTP/1.1 407 Proxy Authentication Required\r\nProxy-Authenticate: Basic realm=\"corp\"\r\nContent-Length: 2\r\n\r\nno"
        )
        #expect(refused?.code == .proxyFailure && refused?.status == 407)
        #expect(refused?.message.contains("Basic realm=\"corp\"") == true, "\(String(describing: refused))")
        #expect(refused?.body == Array("no".utf8))
        #expect(failure("HTTP/1.1 403 Forbidden\r\n\r\n")?.status == 403)
        #expect(failure("HTTP/1.1 502 Bad Gateway\r\n\r\n")?.message.contains("could not open a tunnel") == true)
        #expect(failure("SSH-2.0-OpenSSH\r\n\r\n")?.code == .proxyFailure)
        #expect(failure("HTTP/1.1 200 OK\r\nX: y", end: true)?.message.contains("in the middle") == true)
        #expect(failure("", end: true)?.message.contains("without answering") == true)
        let endless = "HTTP/1.1 200 OK\r\n" + String(repeating: "X-Filler: aaaaaaaaaaaaaaaa\r\n", count: 1000)
        #expect(failure(endless)?.code == .proxyFailure)
        for error in [refused, failure("HTTP/1.1 403 Forbidden\r\n\r\n"), failure("", end: true)] {
            #expect(!(error?.description.contains(secret) ?? true))
            #expect(!(error?.description.contains(basic) ?? true))
        }
    }

    @Test("SOCKS5: greeting, username/password, request by address and by name, exact reply lengths")
    func socks5() throws {
        let proxy = try ProxyServer(url: "socks5h://alice:\("pa%3Ass%40w%25rd")@p:1080")
        var machine = try SOCKS5Handshake(target: .name("example.com"), port: 443, proxy: proxy, targetText: "x")
        #expect(machine.greeting == [5, 2, 0, 2])
        #expect(machine.bytesNeeded == 2)
        let pass = Array(secret.utf8)
        #expect(try machine.receive([5, 2]) == .send([1, 5] + Array("alice".utf8) + [UInt8(pass.count)] + pass))
        #expect(try machine.receive([1, 0]) == .send([5, 1, 0, 3, 11] + Array("example.com".utf8) + [1, 0xBB]))
        #expect(machine.bytesNeeded == 4)
        #expect(try machine.receive([5, 0, 0, 3]) == .read)
        #expect(machine.bytesNeeded == 1)
        #expect(try machine.receive([4]) == .read)
        #expect(machine.bytesNeeded == 6)
        #expect(try machine.receive([1, 2, 3, 4, 0, 80]) == .established)

        var anonymous = try SOCKS5Handshake(
            target: .address([127, 0, 0, 1]), port: 80, proxy: ProxyServer(.socks5, host: "p"), targetText: "x")
        #expect(anonymous.greeting == [5, 1, 0])
        #expect(try anonymous.receive([5, 0]) == .send([5, 1, 0, 1, 127, 0, 0, 1, 0, 80]))
        #expect(try anonymous.receive([5, 0, 0, 4]) == .read)
        #expect(anonymous.bytesNeeded == 18)
    }

    @Test("SOCKS5: every refusal is a clear proxyFailure without the password")
    func socks5Errors() throws {
        let proxy = try ProxyServer(url: "socks5h://alice:\("pa%3Ass%40w%25rd")@p:1080")
        func replyError(_ code: UInt8) throws -> WebSocketError? {
            var machine = try SOCKS5Handshake(target: .name("h"), port: 1, proxy: proxy, targetText: "h:1")
            _ = try machine.receive([5, 0])
            do {
                _ = try machine.receive([5, code, 0, 1])
                return nil
            } catch { return error }
        }
        let texts = [
            1: "general", 2: "not allowed", 3: "network unreachable", 4: "host unreachable",
            5: "connection refused", 6: "TTL expired", 7: "command not supported", 8: "address type",
        ]
        for (code, text) in texts {
            let error = try replyError(UInt8(code))
            #expect(error?.code == .proxyFailure)
            #expect(error?.message.contains(text) == true && error?.message.contains("reply \(code)") == true)
            #expect(!(error?.description.contains(secret) ?? true))
        }
        #expect(try replyError(9)?.message.contains("unknown reply") == true)
        var rejected = try SOCKS5Handshake(target: .name("h"), port: 1, proxy: proxy, targetText: "h:1")
        _ = try rejected.receive([5, 2])
        #expect(throws: WebSocketError.self) { try rejected.receive([1, 1]) }
        var noMethod = try SOCKS5Handshake(
            target: .name("h"), port: 1, proxy: ProxyServer(.socks5h, host: "p"), targetText: "h:1")
        do {
            _ = try noMethod.receive([5, 0xFF])
            Issue.record("no error")
        } catch { #expect(error.message.contains("user name and password")) }
        var wrongVersion = try SOCKS5Handshake(target: .name("h"), port: 1, proxy: proxy, targetText: "h:1")
        #expect(throws: WebSocketError.self) { try wrongVersion.receive([4, 0]) }
        #expect(throws: WebSocketError.self) {
            try SOCKS5Handshake(
                target: .name(String(repeating: "a", count: 256)), port: 1, proxy: proxy, targetText: "x")
        }
    }
}
