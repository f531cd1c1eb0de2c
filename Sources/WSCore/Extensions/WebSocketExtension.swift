/// One extension in a `Sec-WebSocket-Extensions` header: a token and its parameters, as in
/// `permessage-deflate; client_max_window_bits=10; server_no_context_takeover`.
public struct WebSocketExtensionHeader: Sendable, Hashable, CustomStringConvertible {
    /// One parameter: a name and an optional value.
    public struct Parameter: Sendable, Hashable {
        /// The parameter name, e.g. `client_max_window_bits`.
        public var name: String
        /// The value, or `nil` for a bare parameter such as `server_no_context_takeover`.
        public var value: String?
        /// Creates a parameter.
        /// - Parameters:
        ///   - name: The parameter name.
        ///   - value: The value, or `nil`.
        public init(name: String, value: String? = nil) {
            self.name = name
            self.value = value
        }
    }

    /// The extension token, e.g. `permessage-deflate`.
    public var name: String
    /// The parameters in order.
    public var parameters: [Parameter]

    /// Creates an extension header element.
    /// - Parameters:
    ///   - name: The extension token.
    ///   - parameters: Its parameters.
    public init(name: String, parameters: [Parameter] = []) {
        self.name = name
        self.parameters = parameters
    }

    /// The value of parameter `name`, `.some(nil)` for a bare parameter, `nil` if absent.
    /// - Parameter name: The parameter name (case-insensitive).
    public func parameter(_ name: String) -> String?? {
        guard let p = self.parameters.first(where: { HTTPHeaders.equalNames($0.name, name) }) else { return nil }
        return .some(p.value)
    }

    /// The element as it appears in the header, e.g. `permessage-deflate; server_no_context_takeover`.
    public var description: String {
        ([self.name] + self.parameters.map { p in p.value.map { "\(p.name)=\($0)" } ?? p.name })
            .joined(separator: "; ")
    }
}

/// Installs one kind of extension on a client and negotiates it for each connection. Added in the plugin's
/// `extensions { }` block; the permessage-deflate factory is in WSExtensions.
public protocol WebSocketExtensionFactory: Sendable {
    /// The extension token, e.g. `permessage-deflate`.
    var name: String { get }
    /// The reserved bits the extension uses; two installed extensions may not claim the same bit.
    var reservedBits: Frame.ReservedBits { get }
    /// The offers for the `Sec-WebSocket-Extensions` request header, most preferred first.
    func makeOffers() -> [WebSocketExtensionHeader]
    /// Creates the connection's extension from the server's accepted element, or throws when the server's
    /// parameters violate the offer (the connection then fails with close code 1010).
    /// - Parameter response: The element of the server's `Sec-WebSocket-Extensions` with this factory's name.
    func negotiate(response: WebSocketExtensionHeader) throws -> any WebSocketExtension
}

/// Limits and facts an extension needs while it transforms frames.
public struct WebSocketExtensionContext: Sendable {
    /// The most bytes a received message may have after every extension has processed it (for
    /// decompression-bomb protection); exceed it by throwing a ``WebSocketError`` with
    /// ``WebSocketError/Code/messageTooBig``.
    public var maxMessageSize: Int
    /// Creates a context.
    /// - Parameter maxMessageSize: The message size limit.
    public init(maxMessageSize: Int) { self.maxMessageSize = maxMessageSize }
}

/// A negotiated extension on one connection. It transforms data frames on their way out and whole messages
/// on their way in. Calls for one direction never overlap: outgoing calls are serialized by the session's send
/// lock, incoming calls arrive on the engine's thread one at a time; the two directions may run concurrently,
/// so keep their state apart.
public protocol WebSocketExtension: AnyObject, Sendable {
    /// The extension token, e.g. `permessage-deflate`.
    var name: String { get }
    /// The negotiated parameters, as the server accepted them.
    var header: WebSocketExtensionHeader { get }
    /// The reserved bits this extension uses.
    var reservedBits: Frame.ReservedBits { get }
    /// Transforms an outgoing data frame (text, binary or continuation). Applied in installation order.
    /// - Parameters:
    ///   - frame: The frame to send.
    ///   - context: Limits.
    /// - Returns: The frame to put on the wire.
    func processOutgoing(_ frame: Frame, context: WebSocketExtensionContext) throws -> Frame
    /// Transforms an incoming whole message (text or binary, `fin` set, reserved bits of its first frame).
    /// Applied in reverse installation order.
    /// - Parameters:
    ///   - message: The reassembled message.
    ///   - context: Limits: throw ``WebSocketError/Code/messageTooBig`` beyond `maxMessageSize`.
    /// - Returns: The message to deliver.
    func processIncoming(_ message: Frame, context: WebSocketExtensionContext) throws -> Frame
    /// Transforms one fragment of an incoming message that is handed over as a stream
    /// (`WebSockets.Configuration.streamsIncomingMessages`): the message's first frame (kind `.text` or `.binary`,
    /// with its reserved bits), then its continuation frames, in order; the last has `fin` set. Applied in reverse
    /// installation order. The default transforms a message that arrives in one frame with
    /// ``processIncoming(_:context:)`` and fails a fragmented one; permessage-deflate implements it.
    /// - Parameters:
    ///   - fragment: The fragment as received.
    ///   - context: Limits: the fragment's output may not exceed `maxMessageSize` bytes.
    /// - Returns: The fragment to hand over.
    func processIncomingFragment(_ fragment: Frame, context: WebSocketExtensionContext) throws -> Frame
}

extension WebSocketExtension {
    /// Transforms a message that arrived in one frame with ``processIncoming(_:context:)``; a fragmented message
    /// fails with ``WebSocketError/Code/extensionFailure``, as this extension cannot stream.
    /// - Parameters:
    ///   - fragment: The fragment as received.
    ///   - context: Limits.
    /// - Returns: The transformed fragment.
    public func processIncomingFragment(_ fragment: Frame, context: WebSocketExtensionContext) throws -> Frame {
        if fragment.kind != .continuation && fragment.fin {
            return try self.processIncoming(fragment, context: context)
        }
        throw WebSocketError(
            .extensionFailure, "the \(self.name) extension cannot transform a message that is received as a stream",
            closeCode: .internalError)
    }
}

/// The plugin's `extensions { }` block: the extensions to offer, in order (Ktor's
/// `WebSocketExtensionsConfig`).
public struct WebSocketExtensionsConfiguration: Sendable {
    /// The installed factories, in order.
    public private(set) var factories: [any WebSocketExtensionFactory] = []

    /// Creates an empty configuration.
    public init() {}

    /// Installs an extension factory.
    /// - Parameter factory: The extension to offer, e.g. `.perMessageDeflate()` from WSExtensions.
    /// - Throws: ``WebSocketError`` (``WebSocketError/Code/invalidArgument``) if it claims a reserved bit that
    ///   an installed extension already claims.
    public mutating func install(_ factory: any WebSocketExtensionFactory) throws(WebSocketError) {
        for other in self.factories where !other.reservedBits.isDisjoint(with: factory.reservedBits) {
            throw WebSocketError(
                .invalidArgument,
                "extension \(factory.name) claims reserved bits already claimed by \(other.name)"
            )
        }
        self.factories.append(factory)
    }
}
