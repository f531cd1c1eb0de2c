import Logging
import Testing
import WSCore

/// `EngineConnectOptions` keeps its values in a shared box (a copy is one word): it must still behave as a value.
@Suite("Engine connect options")
struct EngineConnectOptionsTests {
    @Test("a copy keeps its values when the original changes, and the other way round")
    func copiesAreIndependent() {
        var original = EngineConnectOptions(
            connectTimeout: .seconds(10), logger: Logger(label: "original"),
            proxy: ProxyServer(.http, host: "proxy.example", port: 3128))
        let copy = original

        original.connectTimeout = .seconds(1)
        original.logger = Logger(label: "changed")
        original.proxy = nil
        original.progress = { _ in }
        original.openingRequest = EngineOpeningRequest(path: "/chat", authority: "example.com", headers: HTTPHeaders())

        #expect(copy.connectTimeout == .seconds(10))
        #expect(copy.logger.label == "original")
        #expect(copy.proxy?.host == "proxy.example")
        #expect(copy.progress == nil)
        #expect(copy.openingRequest == nil)

        #expect(original.connectTimeout == .seconds(1))
        #expect(original.logger.label == "changed")
        #expect(original.proxy == nil)
        #expect(original.progress != nil)
        #expect(original.openingRequest?.path == "/chat")

        var second = copy
        second.executor = nil
        second.proxyTLS.serverNameOverride = "other.example"
        #expect(copy.proxyTLS.serverNameOverride == nil)
        #expect(second.proxyTLS.serverNameOverride == "other.example")
        #expect(second.connectTimeout == .seconds(10))
    }

    @Test("the proxy and its TLS settings change independently")
    func proxyAndItsTLS() {
        var tls = WebSocketTLSConfiguration()
        tls.serverNameOverride = "proxy.internal"
        var options = EngineConnectOptions(
            connectTimeout: .seconds(10), logger: Logger(label: "options"),
            proxy: ProxyServer(.https, host: "proxy.example", port: 443), proxyTLS: tls)
        options.proxy = nil
        #expect(options.proxyTLS.serverNameOverride == "proxy.internal")
        options.proxy = ProxyServer(.http, host: "other.example", port: 3128)
        options.proxyTLS = WebSocketTLSConfiguration()
        #expect(options.proxy?.host == "other.example")
        #expect(options.proxyTLS.serverNameOverride == nil)
    }
}
