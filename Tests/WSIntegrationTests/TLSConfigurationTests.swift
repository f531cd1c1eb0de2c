// One WebSocketTLSConfiguration, both engines: each case runs the CIO and the Curl engine against the same wss peer
// (the Python websockets server with certificates made by openssl) and expects the same outcome from both.
import Foundation
import Synchronization
import Testing
import WSCore

/// One peer per kind of server for the whole table, started on first use; they exit with the test process (their
/// stdin closes).
private let sharedPeers = Mutex<[TLSServer: PythonPeer]>([:])

private func peer(_ kind: TLSServer, _ certs: TestCertificates) async throws -> PythonPeer {
    if let peer = sharedPeers.withLock({ $0[kind] }) { return peer }
    let started = try await PythonPeer.start(tls: kind.tls(certs))
    return sharedPeers.withLock { peers in
        if let existing = peers[kind] { return existing }  // another case started one meanwhile
        peers[kind] = started
        return started
    }
}

/// What a connect and one echo ended with.
private enum TLSOutcome: Equatable, CustomStringConvertible {
    /// The session opened and echoed a message.
    case echoed
    /// The connect failed with this code.
    case failed(WebSocketError.Code)
    /// The connect failed with `.tlsFailure` or `.network` (expected only: what the peer does decides which).
    case failedTLSOrNetwork
    /// Anything else (the text says what).
    case other(String)

    var description: String {
        switch self {
        case .echoed: return "echoed"
        case .failed(let code): return "failed(\(code))"
        case .failedTLSOrNetwork: return "failed(tlsFailure or network)"
        case .other(let text): return "other(\(text))"
        }
    }

    /// Whether this result is what `expected` allows.
    func matches(_ expected: TLSOutcome) -> Bool {
        if case .failedTLSOrNetwork = expected { return self == .failed(.tlsFailure) || self == .failed(.network) }
        return self == expected
    }
}

/// How the peer serves TLS.
private enum TLSServer: Sendable, Hashable {
    /// `server.pem` (localhost, 127.0.0.1, ::1), signed by the test CA.
    case trusted
    /// A self-signed certificate for localhost.
    case selfSigned
    /// Signed by the test CA for wrong.example only.
    case wrongHost
    /// `server.pem`, requiring a client certificate signed by the test CA.
    case requiresClientCertificate
    /// `server.pem`, requiring a client certificate signed by the test CA, TLS 1.2 at most.
    case requiresClientCertificateTLS12
    /// `server.pem`, TLS 1.2 at most.
    case tls12Only

    func tls(_ certs: TestCertificates) -> PythonPeer.TLS {
        switch self {
        case .trusted: return .init(certs.server)
        case .selfSigned: return .init(certs.selfSigned)
        case .wrongHost: return .init(certs.wrongHost)
        case .requiresClientCertificate: return .init(certs.server, clientCA: certs.caCertificate)
        case .requiresClientCertificateTLS12:
            return .init(certs.server, clientCA: certs.caCertificate, maxVersion: "1.2")
        case .tls12Only: return .init(certs.server, maxVersion: "1.2")
        }
    }
}

/// One row of the table.
private struct TLSCase: Sendable, CustomTestStringConvertible {
    let name: String
    let server: TLSServer
    /// The URL's host.
    var host = "localhost"
    let configuration: @Sendable (TestCertificates) throws -> WebSocketTLSConfiguration
    let expected: TLSOutcome

    var testDescription: String { self.name }
}

private func read(_ path: String) throws -> String { try String(contentsOfFile: path, encoding: .utf8) }

private let tlsCases: [TLSCase] = [
    TLSCase(
        name: "trusted via a CA file", server: .trusted, configuration: { .init(trustRoots: .file($0.caCertificate)) },
        expected: .echoed),
    TLSCase(
        name: "trusted via a hashed CA directory", server: .trusted,
        configuration: { .init(trustRoots: .directory($0.caDirectory)) }, expected: .echoed),
    TLSCase(
        name: "trusted via CA PEM in memory", server: .trusted,
        configuration: { .init(trustRoots: .pem(try read($0.caCertificate))) }, expected: .echoed),
    TLSCase(
        name: "the system store does not know the test CA", server: .trusted, configuration: { _ in .init() },
        expected: .failed(.tlsFailure)),
    TLSCase(
        name: "a self-signed certificate is untrusted", server: .selfSigned,
        configuration: { .init(trustRoots: .file($0.caCertificate)) }, expected: .failed(.tlsFailure)),
    TLSCase(
        name: "a certificate for another host fails", server: .wrongHost,
        configuration: { .init(trustRoots: .file($0.caCertificate)) }, expected: .failed(.tlsFailure)),
    TLSCase(
        name: "the server name override is what gets verified", server: .wrongHost,
        configuration: { .init(trustRoots: .file($0.caCertificate), serverNameOverride: "wrong.example") },
        expected: .echoed),
    TLSCase(
        name: "an override that the certificate does not name fails", server: .trusted,
        configuration: { .init(trustRoots: .file($0.caCertificate), serverNameOverride: "wrong.example") },
        expected: .failed(.tlsFailure)),
    TLSCase(
        name: "connecting to an address with the certificate's name as override", server: .wrongHost, host: "127.0.0.1",
        configuration: { .init(trustRoots: .file($0.caCertificate), serverNameOverride: "wrong.example") },
        expected: .echoed),
    TLSCase(
        name: "client certificate from files", server: .requiresClientCertificate,
        configuration: {
            .init(
                trustRoots: .file($0.caCertificate),
                clientIdentity: .files(certificate: $0.client.certificate, privateKey: $0.client.privateKey))
        }, expected: .echoed),
    TLSCase(
        name: "client certificate from PEM in memory", server: .requiresClientCertificate,
        configuration: {
            .init(
                trustRoots: .file($0.caCertificate),
                clientIdentity: .pem(
                    certificate: try read($0.client.certificate), privateKey: try read($0.client.privateKey)))
        }, expected: .echoed),
    TLSCase(
        name: "client certificate with an encrypted key and its password", server: .requiresClientCertificate,
        configuration: {
            .init(
                trustRoots: .file($0.caCertificate),
                clientIdentity: .files(
                    certificate: $0.clientEncrypted.certificate, privateKey: $0.clientEncrypted.privateKey,
                    password: $0.clientKeyPassword))
        }, expected: .echoed),
    TLSCase(
        name: "an encrypted key in memory without its password fails", server: .requiresClientCertificate,
        configuration: {
            .init(
                trustRoots: .file($0.caCertificate),
                clientIdentity: .pem(
                    certificate: try read($0.clientEncrypted.certificate),
                    privateKey: try read($0.clientEncrypted.privateKey)))
        }, expected: .failed(.tlsFailure)),
    TLSCase(
        name: "no client certificate where a TLS 1.2 server requires one", server: .requiresClientCertificateTLS12,
        configuration: { .init(trustRoots: .file($0.caCertificate)) }, expected: .failed(.tlsFailure)),
    // Under TLS 1.3 the server checks the client certificate after the client's handshake is done: the rejection
    // comes with the first read, as a TLS alert (.tlsFailure) or, from Python's asyncio server, which closes without
    // sending one, as an end of stream or a reset (.network).
    TLSCase(
        name: "no client certificate where a TLS 1.3 server requires one", server: .requiresClientCertificate,
        configuration: { .init(trustRoots: .file($0.caCertificate)) }, expected: .failedTLSOrNetwork),
    TLSCase(
        name: "minimum TLS 1.3 against a TLS 1.2 server fails", server: .tls12Only,
        configuration: { .init(trustRoots: .file($0.caCertificate), minimumVersion: .tls13) },
        expected: .failed(.tlsFailure)),
    TLSCase(
        name: "TLS 1.2 against a TLS 1.2 server works", server: .tls12Only,
        configuration: { .init(trustRoots: .file($0.caCertificate)) }, expected: .echoed),
    TLSCase(
        name: "the opt-out accepts an untrusted certificate", server: .selfSigned,
        configuration: { _ in .init(dangerouslyDisableCertificateVerification: true) }, expected: .echoed),
]

/// Connects with `engine`, sends one message and reads its echo.
private func outcome(_ engine: TestEngine, _ tls: WebSocketTLSConfiguration, url: String) async
    -> (TLSOutcome, message: String)
{
    let client = WebSocketClient(engine: engine.make(tls: tls)) { $0.install(WebSockets.self) }
    let result: TLSOutcome
    var message = ""
    do {
        result = try await client.webSocket(url) { session in
            try await session.send("over TLS")
            let text = try await session.receiveText()
            return text == "over TLS" ? .echoed : .other("echo was \(text)")
        }
    } catch let error as WebSocketError {
        result = .failed(error.code)
        message = error.message
    } catch {
        result = .other("\(error)")
    }
    await client.close()
    return (result, message)
}

@Suite("One TLS configuration on both engines", .timeLimit(.minutes(2)))
struct TLSConfigurationTests {
    @Test("the same outcome on CIO and Curl", arguments: tlsCases)
    fileprivate func sameOutcome(_ tlsCase: TLSCase) async throws {
        let certs = try await TestCertificates.load()
        let peer = try await peer(tlsCase.server, certs)
        let tls = try tlsCase.configuration(certs)
        for engine in TestEngine.allCases {
            let (result, message) = await outcome(engine, tls, url: peer.url(path: "/echo", host: tlsCase.host))
            #expect(result.matches(tlsCase.expected), "\(engine): \(tlsCase.name): \(message)")
        }
    }

    @Test("with a server name override the Host header stays the URL's host on both engines")
    func hostHeaderWithOverride() async throws {
        let certs = try await TestCertificates.load()
        let peer = try await PythonPeer.start(tls: .init(certs.wrongHost))
        defer { peer.stop() }
        let tls = WebSocketTLSConfiguration(trustRoots: .file(certs.caCertificate), serverNameOverride: "wrong.example")
        for engine in TestEngine.allCases {
            let client = WebSocketClient(engine: engine.make(tls: tls)) { $0.install(WebSockets.self) }
            let host = try await withClient(client) { client in
                try await client.webSocket(peer.url(path: "/headers", host: "127.0.0.1")) { session in
                    let json = try await session.receiveText()
                    let headers = try JSONSerialization.jsonObject(with: Data(json.utf8)) as? [String: String]
                    return headers?["host"]
                }
            }
            #expect(host == "127.0.0.1:\(peer.port)", "\(engine)")
        }
    }
}
