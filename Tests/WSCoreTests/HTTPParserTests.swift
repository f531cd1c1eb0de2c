import Testing
import WSCore

private let response101 = Array(
    ("HTTP/1.1 101 Switching Protocols\r\n" + "Upgrade: websocket\r\n" + "Connection:   Upgrade  \r\n"
        + "Sec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n" + "Sec-WebSocket-Protocol: chat\r\n"
        + "X-Empty:\r\n" + "x-multi: a\r\n" + "X-Multi: b\r\n" + "\r\n").utf8
)
private let frameBytes: [UInt8] = [0x81, 0x05, 0x48, 0x65, 0x6C, 0x6C, 0x6F]

/// Feeds `bytes` to a response parser (`withUnsafeBytes` rethrows untyped errors, so go through `Result`).
private func feed(
    _ parser: inout HTTPResponseParser,
    _ bytes: [UInt8]
) throws(WebSocketError) -> (head: HTTPResponseHead, consumed: Int)? {
    try bytes.withUnsafeBytes { raw in
        Result { () throws(WebSocketError) in try parser.feed(raw) }
    }.get()
}

/// Feeds `bytes` to a request parser.
private func feed(
    _ parser: inout HTTPRequestParser,
    _ bytes: [UInt8]
) throws(WebSocketError) -> (head: HTTPRequestHead, consumed: Int)? {
    try bytes.withUnsafeBytes { raw in
        Result { () throws(WebSocketError) in try parser.feed(raw) }
    }.get()
}

/// Feeds chunks until the head completes; returns it with the bytes after it, or the error.
private func parseResponse(
    _ chunks: [[UInt8]],
    maxHeaderBytes: Int = 16384,
    maxHeaderCount: Int = 128
) -> (head: HTTPResponseHead?, leftover: [UInt8], error: WebSocketError?) {
    var parser = HTTPResponseParser(maxHeaderBytes: maxHeaderBytes, maxHeaderCount: maxHeaderCount)
    for (index, chunk) in chunks.enumerated() {
        do {
            if let (head, consumed) = try feed(&parser, chunk) {
                #expect((0...chunk.count).contains(consumed))
                return (head, Array(chunk[consumed...]) + chunks[(index + 1)...].flatMap { $0 }, nil)
            }
        } catch {
            return (nil, [], error)
        }
    }
    return (nil, [], nil)
}

private func parseRequest(_ bytes: [UInt8]) -> (head: HTTPRequestHead?, consumed: Int, error: WebSocketError?) {
    var parser = HTTPRequestParser()
    do {
        let result = try feed(&parser, bytes)
        return (result?.head, result?.consumed ?? 0, nil)
    } catch {
        return (nil, 0, error)
    }
}

private func fields(_ headers: HTTPHeaders) -> [String] {
    headers.fields.map { "\($0.name)=\($0.value)" }
}

@Suite("HTTP head parsers")
struct HTTPParserTests {
    @Test("a 101 response: status, reason, headers in order, values trimmed, frame bytes left over")
    func parsesResponse() throws {
        let result = parseResponse([response101 + frameBytes])
        let head = try #require(result.head)
        #expect(head.version == "HTTP/1.1")
        #expect(head.status == 101)
        #expect(head.reason == "Switching Protocols")
        #expect(
            fields(head.headers) == [
                "Upgrade=websocket", "Connection=Upgrade", "Sec-WebSocket-Accept=s3pPLMBiTxaQ9kYGzzhZRbK+xOo=",
                "Sec-WebSocket-Protocol=chat", "X-Empty=", "x-multi=a", "X-Multi=b",
            ])
        #expect(head.headers.values(for: "X-MULTI") == ["a", "b"])
        #expect(result.leftover == frameBytes)
    }

    @Test("long field names keep their exact spelling (the common ones are shared literals)")
    func longFieldNames() throws {
        let names = [
            "Sec-WebSocket-Accept", "sec-websocket-accept", "SEC-WEBSOCKET-ACCEPT", "Sec-WebSocket-Acceps",
            "Sec-WebSocket-Acceptx", "Sec-WebSocket-Extensions", "Sec-WebSocket-Protocol", "X-Sixteen-Bytes-",
        ]
        let head = names.map { "\($0): v\r\n" }.joined()
        let result = parseResponse([Array("HTTP/1.1 101 Switching Protocols\r\n\(head)\r\n".utf8)])
        #expect(try #require(result.head).headers.fields.map(\.name) == names)
    }

    @Test("split at every byte, the head is the same and no frame byte is lost")
    func everySplit() throws {
        let wire = response101 + frameBytes
        for cut in 0...wire.count {
            let result = parseResponse([Array(wire[..<cut]), Array(wire[cut...])])
            let head = try #require(result.head, "cut \(cut)")
            #expect(head.status == 101)
            #expect(head.headers.count == 7)
            #expect(result.leftover == frameBytes, "cut \(cut)")
        }
        let byteByByte = parseResponse(wire.map { [$0] })
        #expect(byteByByte.head?.headers["sec-websocket-accept"] == "s3pPLMBiTxaQ9kYGzzhZRbK+xOo=")
        #expect(byteByByte.leftover == frameBytes)
    }

    @Test("consumed counts only this call's bytes")
    func consumedIsPerCall() throws {
        var parser = HTTPResponseParser()
        let first = Array(response101.prefix(40))
        let second = Array(response101.dropFirst(40)) + frameBytes
        #expect(try feed(&parser, first) == nil)
        let done = try #require(try feed(&parser, second))
        #expect(done.consumed == response101.count - 40)
    }

    @Test("bare LF line endings and mixed endings are tolerated")
    func bareLF() throws {
        let lf = parseResponse([Array("HTTP/1.1 101 Switching Protocols\nUpgrade: websocket\n\nrest".utf8)])
        #expect(lf.head?.headers["Upgrade"] == "websocket")
        #expect(lf.leftover == Array("rest".utf8))
        let mixed = parseResponse([Array("HTTP/1.0 400 Bad Request\r\nA: 1\nB: 2\r\n\n".utf8)])
        #expect(mixed.head?.status == 400)
        #expect(mixed.head?.version == "HTTP/1.0")
        #expect(mixed.head.map { fields($0.headers) } == ["A=1", "B=2"])
        #expect(mixed.leftover.isEmpty)
    }

    @Test("a status line without reason phrase, and with an empty one")
    func noReason() {
        #expect(parseResponse([Array("HTTP/1.1 101\r\n\r\n".utf8)]).head?.reason == "")
        #expect(parseResponse([Array("HTTP/1.1 404 \r\n\r\n".utf8)]).head?.status == 404)
        #expect(parseResponse([Array("HTTP/1.1 200 OK then more\r\n\r\n".utf8)]).head?.reason == "OK then more")
    }

    @Test(
        "malformed status lines are rejected",
        arguments: [
            "HTTP/2 101 Switching", "HTTP/1.1 10 Short", "HTTP/1.1 1011 Long", "HTTP/1.1  101 Double",
            "http/1.1 101 Lower",
            "HTTP/1.1 abc Letters", "ICY 200 OK", "", "HTTP/1.1101 NoSpace", "HTTP/1.x 101 X", " HTTP/1.1 101 Lead",
            "HTTP/1.1 101 Bad\u{01}Reason",
        ]
    )
    func malformedStatusLines(line: String) throws {
        let result = parseResponse([Array((line + "\r\nUpgrade: websocket\r\n\r\n").utf8)])
        #expect(result.head == nil)
        let error = try #require(result.error)
        #expect(error.code == .invalidHandshake)
        #expect(error.message.contains("status line"), "\(error.message)")
    }

    @Test(
        "malformed header lines are rejected with a message saying why",
        arguments: [
            ("X-A: 1\r\n folded\r\n", "obsolete line folding"),
            ("X-A: 1\r\n\tfolded\r\n", "obsolete line folding"),
            ("X-A: a\u{01}b\r\n", "control character"),
            ("X-A: a\u{7F}b\r\n", "control character"),
            ("X-A: a\u{00}b\r\n", "control character"),
            ("X-A: a\rb\r\n", "CR not followed by LF"),
            ("NoColon\r\n", "no colon"),
            ("X-A : 1\r\n", "invalid header field name"),
            (": 1\r\n", "invalid header field name"),
            ("X(A): 1\r\n", "invalid header field name"),
        ]
    )
    func malformedHeaders(line: String, why: String) throws {
        let result = parseResponse([Array(("HTTP/1.1 101 OK\r\n" + line + "\r\n").utf8)])
        let error = try #require(result.error)
        #expect(error.code == .invalidHandshake)
        #expect(error.message.contains(why), "\(error.message)")
    }

    @Test("obs-text bytes (0x80-0xFF) and tabs in values are allowed")
    func obsText() {
        let result = parseResponse([Array("HTTP/1.1 101 OK\r\nX-A: caf\u{E9}\tbar\r\n\r\n".utf8)])
        #expect(result.head?.headers["X-A"] == "caf\u{E9}\tbar")
    }

    @Test("the byte limit: a head of exactly maxHeaderBytes passes, one more byte fails")
    func byteLimit() throws {
        let head = Array("HTTP/1.1 101 OK\r\nX-Pad: \(String(repeating: "p", count: 30))\r\n\r\n".utf8)
        #expect(parseResponse([head + frameBytes], maxHeaderBytes: head.count).head != nil)
        let error = try #require(parseResponse([head], maxHeaderBytes: head.count - 1).error)
        #expect(error.message == "the server's response headers exceed \(head.count - 1) bytes")

        // An endless head fails as soon as the limit is crossed, without waiting for the blank line.
        var parser = HTTPResponseParser()
        let chunk = Array("X-Filler: \(String(repeating: "y", count: 1000))\r\n".utf8)
        var thrown: WebSocketError?
        var fed = 0
        while thrown == nil && fed < 100_000 {
            do {
                _ = try feed(&parser, chunk)
                fed += chunk.count
            } catch {
                thrown = error
            }
        }
        #expect(thrown?.message == "the server's response headers exceed 16384 bytes")
        #expect(fed <= 16384)
        // The parser stays failed.
        #expect(throws: WebSocketError.self) {
            try feed(&parser, Array("\r\n\r\n".utf8))
        }
    }

    @Test("the field count limit: maxHeaderCount fields pass, one more fails")
    func countLimit() throws {
        let lines = (0..<5).map { "X-\($0): v\r\n" }.joined()
        let head = Array(("HTTP/1.1 101 OK\r\n" + lines + "\r\n").utf8)
        #expect(parseResponse([head], maxHeaderCount: 5).head?.headers.count == 5)
        let error = try #require(parseResponse([head], maxHeaderCount: 4).error)
        #expect(error.message == "the server's response has more than 4 header fields")
    }

    @Test("a request head: method, target, version, headers and leftover")
    func parsesRequest() throws {
        let text =
            "GET /chat?room=1 HTTP/1.1\r\nHost: example.com\r\nUpgrade: websocket\r\nConnection: keep-alive, Upgrade\r\n"
            + "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
        let bytes = Array(text.utf8) + [0x81, 0x80]
        let result = parseRequest(bytes)
        let head = try #require(result.head)
        #expect(head.method == "GET")
        #expect(head.target == "/chat?room=1")
        #expect(head.version == "HTTP/1.1")
        #expect(head.headers["sec-websocket-key"] == "dGhlIHNhbXBsZSBub25jZQ==")
        #expect(httpTokenList(head.headers.values(for: "Connection"), contains: "upgrade"))
        #expect(result.consumed == text.utf8.count)
    }

    @Test(
        "malformed request lines are rejected",
        arguments: [
            "GET /chat", "GET  /chat HTTP/1.1", "GET /chat HTTP/2.0", "G@T /chat HTTP/1.1", "GET /chat HTTP/1.1 extra",
            "",
        ]
    )
    func malformedRequestLines(line: String) throws {
        let error = try #require(parseRequest(Array((line + "\r\nHost: x\r\n\r\n").utf8)).error)
        #expect(error.code == .invalidHandshake)
        #expect(error.message.contains("request line"))
    }

    @Test("the request parser names the client in its limit errors")
    func requestLimitMessage() throws {
        var parser = HTTPRequestParser(maxHeaderBytes: 10)
        #expect(throws: WebSocketError.self) {
            try feed(&parser, Array("GET / HTTP/1.1\r\n\r\n".utf8))
        }
        let error = try #require(parseRequestLimitError())
        #expect(error.message == "the client's request headers exceed 10 bytes")
    }

    @Test("after a complete head the parser can parse another")
    func parsesAgain() throws {
        var parser = HTTPResponseParser()
        for status in [100, 101] {
            let bytes = Array("HTTP/1.1 \(status) X\r\n\r\n".utf8)
            let result = try feed(&parser, bytes)
            #expect(result?.head.status == status)
            #expect(result?.consumed == bytes.count)
        }
    }

    @Test(
        "httpTokenList splits, trims and drops empty elements",
        arguments: [
            ([] as [String], [] as [String]),
            (["chat"], ["chat"]),
            (["chat, superchat", " v2.bin ,\tv1 "], ["chat", "superchat", "v2.bin", "v1"]),
            (["keep-alive, Upgrade"], ["keep-alive", "Upgrade"]),
            ([",, a ,, b,"], ["a", "b"]),
            (["", " "], []),
        ]
    )
    func tokenLists(values: [String], expected: [String]) {
        #expect(httpTokenList(values) == expected)
    }

    @Test("httpTokenList(contains:) compares case-insensitively and whole elements only")
    func tokenListContains() {
        #expect(httpTokenList(["keep-alive, Upgrade"], contains: "upgrade"))
        #expect(!httpTokenList(["keep-alive, Upgraded"], contains: "upgrade"))
        #expect(!httpTokenList([], contains: "upgrade"))
    }

    @Test("header names compare ignoring ASCII case only: other bytes, and lengths, must match")
    func headerNameEquality() {
        #expect(HTTPHeaders.equalNames("Sec-WebSocket-Accept", "sec-websocket-ACCEPT"))
        #expect(HTTPHeaders.equalNames("", ""))
        #expect(!HTTPHeaders.equalNames("Upgrade", "Upgrad"))
        #expect(!HTTPHeaders.equalNames("Upgrade", "Upgradf"))
        // Only A–Z fold: '@' (before 'A') and '[' (after 'Z') are not the lowercase '`' and '{'.
        #expect(!HTTPHeaders.equalNames("a@", "A`"))
        #expect(!HTTPHeaders.equalNames("[x", "{X"))
        // Non-ASCII bytes match exactly (no Unicode case mapping).
        #expect(HTTPHeaders.equalNames("Äb", "ÄB"))
        #expect(!HTTPHeaders.equalNames("Äb", "äb"))
        var headers = HTTPHeaders()
        headers.add("X-Multi", "a")
        headers.add("x-other", "c")
        headers.add("X-MULTI", "b")
        #expect(headers.values(for: "x-multi") == ["a", "b"])
        #expect(headers.contains("X-OTHER") && !headers.contains("X-Othe"))
    }
}

private func parseRequestLimitError() -> WebSocketError? {
    var parser = HTTPRequestParser(maxHeaderBytes: 10)
    do {
        _ = try feed(&parser, Array("GET / HTTP/1.1\r\n\r\n".utf8))
        return nil
    } catch {
        return error
    }
}
