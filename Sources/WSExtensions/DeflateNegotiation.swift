import WSCore

/// What the client offers for permessage-deflate (RFC 7692 section 7.1).
struct DeflateOffer: Sendable, Equatable {
    /// How `client_max_window_bits` appears in the offer.
    enum ClientWindow: Sendable, Equatable {
        /// Not offered: the server must not send it back.
        case notOffered
        /// Offered without a value: the server may pick any window for us.
        case any
        /// Offered with a value: the server may pick that or a smaller one.
        case bits(Int)
    }

    /// Valid LZ77 window sizes (log2).
    static let windowRange = 8...15

    var clientNoContextTakeover = false
    var serverNoContextTakeover = false
    var serverMaxWindowBits: Int? = nil
    var clientMaxWindowBits: ClientWindow = .any

    /// The offer as a `Sec-WebSocket-Extensions` element.
    var header: WebSocketExtensionHeader {
        var parameters: [WebSocketExtensionHeader.Parameter] = []
        if self.clientNoContextTakeover { parameters.append(.init(name: "client_no_context_takeover")) }
        if self.serverNoContextTakeover { parameters.append(.init(name: "server_no_context_takeover")) }
        if let bits = self.serverMaxWindowBits {
            parameters.append(.init(name: "server_max_window_bits", value: String(bits)))
        }
        switch self.clientMaxWindowBits {
        case .notOffered: break
        case .any: parameters.append(.init(name: "client_max_window_bits"))
        case .bits(let bits): parameters.append(.init(name: "client_max_window_bits", value: String(bits)))
        }
        return WebSocketExtensionHeader(name: PerMessageDeflate.extensionName, parameters: parameters)
    }

    /// Checks the server's response element against this offer (RFC 7692 sections 7.1.1 and 7.1.2) and
    /// settles the parameters in force.
    /// - Parameter response: The server's `permessage-deflate` element.
    /// - Returns: What each direction uses.
    /// - Throws: `WebSocketError` (`extensionFailure`) saying which rule the response breaks.
    func accept(_ response: WebSocketExtensionHeader) throws(WebSocketError) -> DeflateAgreement {
        func reject(_ why: String) -> WebSocketError {
            WebSocketError(.extensionFailure, "permessage-deflate response '\(response)': \(why)")
        }
        guard response.name.lowercased() == PerMessageDeflate.extensionName else {
            throw reject("the extension is not permessage-deflate")
        }
        var seen: Set<String> = []
        var serverNoContextTakeover = false
        var clientNoContextTakeover = false
        var serverWindow: Int?
        var clientWindow: Int?

        for parameter in response.parameters {
            let name = parameter.name.lowercased()
            guard seen.insert(name).inserted else {
                throw reject("parameter \(name) appears more than once (RFC 7692 section 7.1)")
            }
            switch name {
            case "server_no_context_takeover", "client_no_context_takeover":
                if let value = parameter.value {
                    throw reject("\(name) takes no value, but has '\(value)' (RFC 7692 section 7.1.1)")
                }
                if name == "server_no_context_takeover" {
                    serverNoContextTakeover = true
                } else {
                    clientNoContextTakeover = true
                }
            case "server_max_window_bits":
                let bits = try Self.windowBits(parameter, reject)
                if let offered = self.serverMaxWindowBits, bits > offered {
                    throw reject(
                        "server_max_window_bits=\(bits) is more than the \(offered) offered (RFC 7692 section 7.1.2.1)")
                }
                serverWindow = bits
            case "client_max_window_bits":
                let bits = try Self.windowBits(parameter, reject)
                switch self.clientMaxWindowBits {
                case .notOffered:
                    throw reject(
                        "client_max_window_bits was not offered, so the server may not send it (RFC 7692 section 7.1.2.2)"
                    )
                case .any:
                    break
                case .bits(let offered):
                    if bits > offered {
                        throw reject(
                            "client_max_window_bits=\(bits) is more than the \(offered) offered (RFC 7692 section 7.1.2.2)"
                        )
                    }
                }
                clientWindow = bits
            default:
                throw reject("unknown parameter \(parameter.name) (RFC 7692 section 7.1)")
            }
        }
        // A server accepts these parameters of an offer by repeating them; leaving them out accepts an offer we
        // did not make.
        if self.serverNoContextTakeover && !serverNoContextTakeover {
            throw reject(
                "server_no_context_takeover was offered but the server did not accept it (RFC 7692 section 7.1.1.1)")
        }
        if let offered = self.serverMaxWindowBits, serverWindow == nil {
            throw reject(
                "server_max_window_bits=\(offered) was offered but the server did not accept it (RFC 7692 section 7.1.2.1)"
            )
        }
        let ownWindow: Int
        switch self.clientMaxWindowBits {
        case .bits(let offered): ownWindow = clientWindow ?? offered
        case .any, .notOffered: ownWindow = clientWindow ?? 15
        }
        return DeflateAgreement(
            clientNoContextTakeover: clientNoContextTakeover || self.clientNoContextTakeover,
            serverNoContextTakeover: serverNoContextTakeover,
            clientWindowBits: ownWindow,
            serverWindowBits: serverWindow ?? 15
        )
    }

    /// A window-bits value: a decimal 8...15 without leading zeros.
    private static func windowBits(
        _ parameter: WebSocketExtensionHeader.Parameter, _ reject: (String) -> WebSocketError
    ) throws(WebSocketError) -> Int {
        guard let value = parameter.value else {
            throw reject("\(parameter.name) needs a value 8...15 in a response (RFC 7692 section 7.1.2)")
        }
        guard !value.isEmpty, value.utf8.allSatisfy({ $0 >= UInt8(ascii: "0") && $0 <= UInt8(ascii: "9") }),
            !value.hasPrefix("0"), value.utf8.count <= 2, let bits = Int(value), windowRange.contains(bits)
        else {
            throw reject("\(parameter.name)='\(value)' is not a window size 8...15 (RFC 7692 section 7.1.2)")
        }
        return bits
    }
}

/// The permessage-deflate parameters in force on one connection, from the client's side.
struct DeflateAgreement: Sendable, Equatable {
    /// Our compressor starts every message with an empty window.
    var clientNoContextTakeover: Bool
    /// The server compresses every message on its own, so our decompressor may reset between messages.
    var serverNoContextTakeover: Bool
    /// The window we compress with, as agreed (zlib uses 9 for 8).
    var clientWindowBits: Int
    /// The window the server compresses with at most: our inflater's window.
    var serverWindowBits: Int
}
