import Synchronization
import WSCore

/// permessage-deflate on one connection: a compressor for what the client sends and a decompressor for what it
/// receives, each with its own zlib stream for the life of the connection.
///
/// The two directions run concurrently (the session's send lock serializes outgoing calls, the engine thread
/// delivers incoming ones), so each direction's state sits behind its own Mutex; the locks are never contended
/// in practice and never held across anything but zlib work.
final class PerMessageDeflateExtension: WebSocketExtension, CustomStringConvertible {
    let name = PerMessageDeflate.extensionName
    let header: WebSocketExtensionHeader
    let reservedBits: Frame.ReservedBits = .rsv1
    /// The parameters in force.
    let agreement: DeflateAgreement

    private let compressor: Mutex<Compressor>
    private let decompressor: Mutex<Decompressor>

    init(header: WebSocketExtensionHeader, agreement: DeflateAgreement, configuration: PerMessageDeflate.Configuration)
    {
        self.header = header
        self.agreement = agreement
        self.compressor = Mutex(
            Compressor(
                level: configuration.compressionLevel,
                memoryLevel: configuration.memoryLevel,
                windowBits: agreement.clientWindowBits,
                noContextTakeover: agreement.clientNoContextTakeover,
                threshold: configuration.compressionThreshold,
                shouldCompress: configuration.shouldCompress
            )
        )
        self.decompressor = Mutex(
            Decompressor(windowBits: agreement.serverWindowBits, noContextTakeover: agreement.serverNoContextTakeover)
        )
    }

    var description: String { self.header.description }

    func processOutgoing(_ frame: Frame, context: WebSocketExtensionContext) throws -> Frame {
        try self.compressor.withLock { compressor throws(WebSocketError) -> Frame in try compressor.process(frame) }
    }

    func processIncoming(_ message: Frame, context: WebSocketExtensionContext) throws -> Frame {
        guard message.rsv1 else { return message }
        let data = try self.decompressor.withLock { decompressor throws(WebSocketError) -> [UInt8] in
            try decompressor.decompress(message.data, limit: context.maxMessageSize)
        }
        var result = message
        result.data = data
        result.reservedBits.remove(.rsv1)
        return result
    }

    func processIncomingFragment(_ fragment: Frame, context: WebSocketExtensionContext) throws -> Frame {
        try self.decompressor.withLock { decompressor throws(WebSocketError) -> Frame in
            try decompressor.decompressFragment(fragment, limit: context.maxMessageSize)
        }
    }

    /// For tests: bytes the decompressor's zlib stream has produced so far (0 before the first message).
    var inflatedByteCount: Int { self.decompressor.withLock { $0.inflater?.totalOut ?? 0 } }
}

/// The sending side: decides per message whether to compress and runs the deflate stream.
private struct Compressor {
    let level: Int
    let memoryLevel: Int
    let windowBits: Int
    let noContextTakeover: Bool
    let threshold: Int
    let shouldCompress: (@Sendable (Frame) -> Bool)?
    /// Created with the first compressed message.
    var deflater: ZlibDeflater?
    /// Where a message sent in fragments stands.
    var fragmented: Fragmented = .none

    enum Fragmented {
        case none
        /// Its first frame was compressed: continuations are compressed too.
        case compressing
        /// Its first frame went out uncompressed: so do the continuations.
        case plain
    }

    init(
        level: Int, memoryLevel: Int, windowBits: Int, noContextTakeover: Bool, threshold: Int,
        shouldCompress: (@Sendable (Frame) -> Bool)?
    ) {
        self.level = level
        self.memoryLevel = memoryLevel
        self.windowBits = windowBits
        self.noContextTakeover = noContextTakeover
        self.threshold = threshold
        self.shouldCompress = shouldCompress
    }

    mutating func process(_ frame: Frame) throws(WebSocketError) -> Frame {
        switch frame.kind {
        case .text, .binary:
            guard !frame.rsv1 else {
                throw WebSocketError(
                    .invalidArgument, "RSV1 belongs to permessage-deflate on this session; send frames without it")
            }
            let compress =
                (!frame.fin || frame.data.count >= self.threshold) && (self.shouldCompress?(frame) ?? true)
            guard compress else {
                self.fragmented = frame.fin ? .none : .plain
                return frame
            }
            self.fragmented = frame.fin ? .none : .compressing
            return try self.compress(frame, firstFrame: true)
        case .continuation:
            switch self.fragmented {
            case .compressing:
                if frame.fin { self.fragmented = .none }
                return try self.compress(frame, firstFrame: false)
            case .plain, .none:
                if frame.fin { self.fragmented = .none }
                return frame
            }
        case .ping, .pong, .close:
            return frame
        }
    }

    /// Compresses one frame of a compressed message: RSV1 on the first frame only (RFC 7692 section 6.1), the
    /// `00 00 FF FF` tail removed only at the end of the message (section 7.2.1; earlier fragments keep their
    /// sync-flush marker, an empty stored block in the middle of the stream the receiver inflates as it is).
    private mutating func compress(_ frame: Frame, firstFrame: Bool) throws(WebSocketError) -> Frame {
        let deflater = try self.makeDeflater()
        var compressed = try deflater.compress(frame.data, removingTail: frame.fin)
        var bits = frame.reservedBits
        if firstFrame { bits.insert(.rsv1) }
        if frame.fin && self.noContextTakeover {
            deflater.reset()
            // Without a shared window, an unfragmented message that does not shrink can go out as it is.
            if firstFrame && compressed.count >= frame.data.count {
                compressed = frame.data
                bits.remove(.rsv1)
            }
        }
        return Frame(kind: frame.kind, fin: frame.fin, data: compressed, reservedBits: bits)
    }

    private mutating func makeDeflater() throws(WebSocketError) -> ZlibDeflater {
        if let deflater = self.deflater { return deflater }
        let deflater = try ZlibDeflater(level: self.level, windowBits: self.windowBits, memoryLevel: self.memoryLevel)
        self.deflater = deflater
        return deflater
    }
}

/// The receiving side: inflates messages with RSV1 set.
private struct Decompressor {
    let windowBits: Int
    let noContextTakeover: Bool
    /// Created with the first compressed message.
    var inflater: ZlibInflater?
    /// Whether the message being streamed is compressed (its first frame had RSV1).
    var streamIsCompressed = false
    /// Where the streamed message's DEFLATE stream stands.
    var stream = ZlibInflater.FragmentState()

    init(windowBits: Int, noContextTakeover: Bool) {
        self.windowBits = windowBits
        self.noContextTakeover = noContextTakeover
    }

    mutating func decompress(_ payload: [UInt8], limit: Int) throws(WebSocketError) -> [UInt8] {
        let inflater = try self.makeInflater()
        let data = try inflater.decompress(payload, limit: limit, keepWindow: !self.noContextTakeover)
        if self.noContextTakeover { inflater.reset() }
        return data
    }

    /// Inflates one fragment of a streamed message: one DEFLATE stream runs through the message's fragments, each
    /// inflated as it arrives to at most `limit` bytes.
    mutating func decompressFragment(_ fragment: Frame, limit: Int) throws(WebSocketError) -> Frame {
        if fragment.kind != .continuation {
            self.streamIsCompressed = fragment.rsv1
            self.stream = ZlibInflater.FragmentState()
        }
        guard self.streamIsCompressed else { return fragment }
        let inflater = try self.makeInflater()
        var result = fragment
        result.data = try inflater.decompressFragment(
            fragment.data, state: &self.stream, last: fragment.fin, limit: limit, keepWindow: !self.noContextTakeover)
        result.reservedBits.remove(.rsv1)
        if fragment.fin {
            if self.noContextTakeover { inflater.reset() }
            self.streamIsCompressed = false
        }
        return result
    }

    private mutating func makeInflater() throws(WebSocketError) -> ZlibInflater {
        if let existing = self.inflater { return existing }
        let inflater = try ZlibInflater(windowBits: self.windowBits)
        self.inflater = inflater
        return inflater
    }
}
