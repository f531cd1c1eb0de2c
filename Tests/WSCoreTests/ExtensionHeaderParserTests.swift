import Testing
import WSCore

private typealias Ext = WebSocketExtensionHeader
private typealias Param = WebSocketExtensionHeader.Parameter

private func parse(_ values: [String]) -> (elements: [Ext]?, error: WebSocketError?) {
    do {
        return (try Ext.parse(values), nil)
    } catch {
        return (nil, error)
    }
}

@Suite("Sec-WebSocket-Extensions parser")
struct ExtensionHeaderParserTests {
    @Test("a bare extension token")
    func bareToken() {
        #expect(parse(["permessage-deflate"]).elements == [Ext(name: "permessage-deflate")])
    }

    @Test("parameters with and without values, in order")
    func parameters() {
        let result = parse([
            "permessage-deflate; client_max_window_bits; server_max_window_bits=10; server_no_context_takeover"
        ])
        #expect(
            result.elements == [
                Ext(
                    name: "permessage-deflate",
                    parameters: [
                        Param(name: "client_max_window_bits"), Param(name: "server_max_window_bits", value: "10"),
                        Param(name: "server_no_context_takeover"),
                    ])
            ])
        #expect(result.elements?.first?.parameter("SERVER_MAX_WINDOW_BITS") == .some("10"))
        #expect(result.elements?.first?.parameter("client_max_window_bits") == .some(nil))
    }

    @Test("quoted values are unquoted, escapes included")
    func quotedValues() {
        #expect(
            parse(["permessage-deflate; client_max_window_bits=\"10\""]).elements?.first?.parameters
                == [Param(name: "client_max_window_bits", value: "10")])
        #expect(parse(["x; a=\"b\\c\""]).elements?.first?.parameters == [Param(name: "a", value: "bc")])
    }

    @Test("several header lines and comma-separated elements keep their order")
    func severalElements() {
        let result = parse(["foo, bar; baz=2", "qux;a=1;b"])
        #expect(
            result.elements == [
                Ext(name: "foo"), Ext(name: "bar", parameters: [Param(name: "baz", value: "2")]),
                Ext(name: "qux", parameters: [Param(name: "a", value: "1"), Param(name: "b")]),
            ])
    }

    @Test("optional whitespace around separators and empty list elements are accepted")
    func whitespaceAndEmptyElements() {
        #expect(
            parse(["  foo ;  a = 1 ,\tbar  "]).elements == [
                Ext(name: "foo", parameters: [Param(name: "a", value: "1")]), Ext(name: "bar"),
            ])
        #expect(parse([", foo,, bar ,"]).elements == [Ext(name: "foo"), Ext(name: "bar")])
        #expect(parse([]).elements == [])
        #expect(parse(["", "  "]).elements == [])
    }

    @Test(
        "malformed values throw invalidHandshake with what was expected",
        arguments: [
            ("foo;", "expected a parameter name"),
            ("foo; =1", "expected a parameter name"),
            ("foo; a=", "expected a parameter value"),
            ("foo bar", "expected ',' or ';'"),
            ("foo; a=1 b", "expected ',' or ';'"),
            ("foo; a=\"1", "unterminated quoted-string"),
            ("foo; a=\"\"", "must contain a token"),
            ("foo; a=\"1 2\"", "must contain a token"),
            ("@foo", "expected an extension name"),
            ("foo; a\"=1", "expected ',' or ';'"),
            ("foo; a=1=2", "expected ',' or ';'"),
            ("foo; a=\"x\u{01}\"", "control character"),
        ]
    )
    func malformed(value: String, why: String) throws {
        let error = try #require(parse(["ok", value]).error)
        #expect(error.code == .invalidHandshake)
        #expect(error.message.contains("Sec-WebSocket-Extensions"))
        #expect(error.message.contains(why), "\(error.message)")
    }

    @Test("format writes one header value; parse(format(x)) == x")
    func formatRoundTrip() throws {
        let elements = [
            Ext(
                name: "permessage-deflate",
                parameters: [Param(name: "client_max_window_bits"), Param(name: "server_max_window_bits", value: "10")]),
            Ext(name: "x-custom", parameters: [Param(name: "q", value: "needs quoting"), Param(name: "e", value: "")]),
            Ext(name: "permessage-deflate"),
        ]
        let value = Ext.format(elements)
        #expect(
            value
                == "permessage-deflate; client_max_window_bits; server_max_window_bits=10, x-custom; q=\"needs quoting\"; e=\"\", permessage-deflate"
        )
        let tokenOnly = [elements[0], elements[2]]
        #expect(try Ext.parse([Ext.format(tokenOnly)]) == tokenOnly)
        #expect(Ext.format([]) == "")
    }
}
