public import WSCore

/// The permessage-deflate extension (RFC 7692): messages are compressed with DEFLATE (the system zlib) on the
/// way out and decompressed on the way in, marked by RSV1.
///
/// Install it in the WebSockets plugin's `extensions` block; the client then offers it in every opening
/// handshake, and it is used on the connections where the server accepts it:
/// ```swift
/// let client = WebSocketClient(engine: CIOEngine()) { config in
///     config.install(WebSockets.self) { ws in
///         try ws.extensions { try $0.install(.perMessageDeflate()) }
///     }
/// }
/// let session = try await client.webSocketSession("wss://example.com/feed")
/// print(session.extensions.map(\.header))  // [permessage-deflate; server_max_window_bits=12; ...]
/// ```
///
/// Decompressed sizes count against `WebSockets.Configuration.maxMessageSize`: inflation stops, and the
/// session fails with close code 1009, as soon as a message would exceed it, so a small "decompression bomb"
/// cannot make the client allocate more than that limit. Only engines with
/// `EngineCapability.webSocketExtensions` can carry the extension; on others opening a session fails with
/// `WebSocketError.Code.unsupported`.
///
/// Security: compressing secrets together with attacker-controlled data over TLS can leak the secrets through
/// the compressed size (CRIME/BREACH; RFC 7692 section 8). Use ``Configuration/shouldCompress`` or a separate
/// connection without compression for such messages.
public struct PerMessageDeflate: WebSocketExtensionFactory {
    /// What the client offers and how it compresses. The defaults suit most servers and messages.
    public struct Configuration: Sendable {
        /// The zlib compression level, 0 (store only) to 9 (smallest, slowest); default 6, zlib's own default
        /// (`Z_DEFAULT_COMPRESSION`), also what Ktor's `Deflater`, Python websockets and browsers use. On JSON and
        /// log text level 1 measured 1.6–2.7 times faster with 25–45 % more output, level 9 2.4–2.9 times slower
        /// for 2–5 % less (Docs/Extensions.md).
        public var compressionLevel: Int = 6
        /// zlib's `memLevel`, 1 to 9: memory for the compressor's hash tables against speed and ratio; default 8
        /// (zlib's default). The compressor takes about `2^(windowBits + 2) + 2^(memoryLevel + 9)` bytes per
        /// connection (256 KiB at the defaults), allocated with the first compressed message.
        public var memoryLevel: Int = 8
        /// Offer `client_no_context_takeover`: compress every message on its own instead of with the previous
        /// messages as context. Costs ratio on streams of similar messages; saves the peer the window memory
        /// between messages. Applied whether or not the server repeats it. Default `false`.
        public var clientNoContextTakeover = false
        /// Offer `server_no_context_takeover`: ask the server to compress every message on its own. The server
        /// must accept it to accept the offer. Default `false`.
        public var serverNoContextTakeover = false
        /// The LZ77 window (8...15, as a power of two) the client compresses with at most. `nil` (the default)
        /// offers a bare `client_max_window_bits`, as browsers do: the server may then choose any window and the
        /// client uses 15 unless it does. A value offers `client_max_window_bits=N`. zlib cannot deflate with an
        /// 8-bit window; 8 is offered and honoured with zlib's 9-bit window, whose output never refers further
        /// back than 250 bytes, so it stays valid for an 8-bit inflater.
        public var clientMaxWindowBits: Int? = nil
        /// The LZ77 window (8...15) the server may compress with at most: offers `server_max_window_bits=N`, which
        /// the server must accept with the same or a smaller value; it bounds the client's inflater memory to
        /// `2^N` bytes. `nil` (the default) does not limit the server (a 32 KiB window).
        public var serverMaxWindowBits: Int? = nil
        /// Messages shorter than this many bytes are sent uncompressed (without RSV1); default 32. Below that
        /// DEFLATE rarely saves anything (a few bytes at best, against the CPU of a deflate call and a flush).
        /// Judged for unfragmented messages only: a message sent in fragments is compressed unless
        /// ``shouldCompress`` declines it at its first frame.
        public var compressionThreshold: Int = 32
        /// Decides per message whether to compress it, called with the first frame of each outgoing message (a
        /// whole message, or the first fragment of one) at or above ``compressionThreshold``; return `false` to
        /// send it uncompressed, e.g. for data that is compressed already (images, archives) or that mixes secrets
        /// with attacker-controlled text. Runs while the session's send lock is held: keep it cheap. `nil` (the
        /// default) compresses every message.
        public var shouldCompress: (@Sendable (Frame) -> Bool)? = nil

        /// Creates the default configuration: level 6, context takeover both ways, a bare
        /// `client_max_window_bits` offer, a 32-byte threshold.
        public init() {}

        /// Creates a configuration.
        /// - Parameters:
        ///   - compressionLevel: zlib level 0...9.
        ///   - memoryLevel: zlib memLevel 1...9.
        ///   - clientNoContextTakeover: Compress each message on its own.
        ///   - serverNoContextTakeover: Ask the server to compress each message on its own.
        ///   - clientMaxWindowBits: The client's window (8...15), or `nil` to let the server choose.
        ///   - serverMaxWindowBits: The most the server may use (8...15), or `nil` for no limit.
        ///   - compressionThreshold: Smaller messages are sent uncompressed.
        ///   - shouldCompress: Per-message decision, or `nil` to compress all.
        public init(
            compressionLevel: Int = 6,
            memoryLevel: Int = 8,
            clientNoContextTakeover: Bool = false,
            serverNoContextTakeover: Bool = false,
            clientMaxWindowBits: Int? = nil,
            serverMaxWindowBits: Int? = nil,
            compressionThreshold: Int = 32,
            shouldCompress: (@Sendable (Frame) -> Bool)? = nil
        ) {
            self.compressionLevel = compressionLevel
            self.memoryLevel = memoryLevel
            self.clientNoContextTakeover = clientNoContextTakeover
            self.serverNoContextTakeover = serverNoContextTakeover
            self.clientMaxWindowBits = clientMaxWindowBits
            self.serverMaxWindowBits = serverMaxWindowBits
            self.compressionThreshold = compressionThreshold
            self.shouldCompress = shouldCompress
        }
    }

    /// The token of the extension, `permessage-deflate`.
    public static let extensionName = "permessage-deflate"

    /// The configuration, as validated.
    public let configuration: Configuration

    /// The offer this factory makes.
    let offer: DeflateOffer

    /// Creates the factory; usually written `.perMessageDeflate(configuration)` inside `install`.
    /// - Parameter configuration: What to offer and how to compress.
    /// - Throws: `WebSocketError` (`WebSocketError.Code.invalidArgument`) when a value is out of range.
    public init(_ configuration: Configuration = .init()) throws(WebSocketError) {
        func check(_ ok: Bool, _ what: String) throws(WebSocketError) {
            if !ok { throw WebSocketError(.invalidArgument, "PerMessageDeflate.Configuration: \(what)") }
        }
        try check(
            (0...9).contains(configuration.compressionLevel),
            "compressionLevel must be 0...9, not \(configuration.compressionLevel)")
        try check(
            (1...9).contains(configuration.memoryLevel),
            "memoryLevel must be 1...9, not \(configuration.memoryLevel)")
        try check(
            configuration.clientMaxWindowBits.map { DeflateOffer.windowRange.contains($0) } ?? true,
            "clientMaxWindowBits must be 8...15 or nil, not \(configuration.clientMaxWindowBits ?? 0)")
        try check(
            configuration.serverMaxWindowBits.map { DeflateOffer.windowRange.contains($0) } ?? true,
            "serverMaxWindowBits must be 8...15 or nil, not \(configuration.serverMaxWindowBits ?? 0)")
        try check(
            configuration.compressionThreshold >= 0,
            "compressionThreshold must not be negative, not \(configuration.compressionThreshold)")
        self.configuration = configuration
        self.offer = DeflateOffer(
            clientNoContextTakeover: configuration.clientNoContextTakeover,
            serverNoContextTakeover: configuration.serverNoContextTakeover,
            serverMaxWindowBits: configuration.serverMaxWindowBits,
            clientMaxWindowBits: configuration.clientMaxWindowBits.map { .bits($0) } ?? .any
        )
    }

    /// `permessage-deflate`.
    public var name: String { Self.extensionName }

    /// RSV1, the "compressed" bit.
    public var reservedBits: Frame.ReservedBits { .rsv1 }

    /// One offer, e.g. `permessage-deflate; client_max_window_bits` with the defaults.
    public func makeOffers() -> [WebSocketExtensionHeader] {
        [self.offer.header]
    }

    /// Checks the server's accepted parameters against the offer (RFC 7692 section 7.1) and creates the
    /// connection's compressor and decompressor.
    /// - Parameter response: The server's `permessage-deflate` element.
    /// - Returns: The negotiated extension; its `WebSocketExtension.header` is the server's element.
    /// - Throws: `WebSocketError` (`WebSocketError.Code.extensionFailure`) for an unknown, repeated or
    ///   malformed parameter, a window out of 8...15 or above the offer, `client_max_window_bits` that was not
    ///   offered, or an offered `server_no_context_takeover` / `server_max_window_bits` the server left out.
    public func negotiate(response: WebSocketExtensionHeader) throws -> any WebSocketExtension {
        let agreement = try self.offer.accept(response)
        var header = response
        header.name = Self.extensionName
        return PerMessageDeflateExtension(header: header, agreement: agreement, configuration: self.configuration)
    }
}

extension WebSocketExtensionFactory where Self == PerMessageDeflate {
    /// The permessage-deflate extension (RFC 7692), for `install`:
    /// `try ws.extensions { try $0.install(.perMessageDeflate()) }`.
    /// - Parameter configuration: What to offer and how to compress; the defaults suit most servers.
    /// - Returns: The factory.
    /// - Throws: `WebSocketError` (`WebSocketError.Code.invalidArgument`) when a value is out of range.
    public static func perMessageDeflate(
        _ configuration: PerMessageDeflate.Configuration = .init()
    ) throws(WebSocketError) -> PerMessageDeflate {
        try PerMessageDeflate(configuration)
    }
}
