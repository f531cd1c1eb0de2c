import CWSZlib
import WSCore

// Raw DEFLATE streams (RFC 1951, no zlib or gzip wrapper) over the system zlib, as RFC 7692 needs them.
//
// zlib keeps pointers into its `z_stream` (the state points back at the stream), so each stream is allocated once
// on the heap and never moves; `deinit` ends it. The classes are deliberately not Sendable: one owner drives each
// stream at a time (the extension keeps each behind a Mutex).

/// zlib's return codes by name, for messages.
private func zlibCodeName(_ code: Int32) -> String {
    switch code {
    case Z_OK: "Z_OK"
    case Z_STREAM_END: "Z_STREAM_END"
    case Z_NEED_DICT: "Z_NEED_DICT"
    case Z_ERRNO: "Z_ERRNO"
    case Z_STREAM_ERROR: "Z_STREAM_ERROR"
    case Z_DATA_ERROR: "Z_DATA_ERROR"
    case Z_MEM_ERROR: "Z_MEM_ERROR"
    case Z_BUF_ERROR: "Z_BUF_ERROR"
    case Z_VERSION_ERROR: "Z_VERSION_ERROR"
    default: "zlib code \(code)"
    }
}

/// zlib's message for the last error on `stream`, or the code's name.
private func zlibMessage(_ stream: UnsafeMutablePointer<z_stream>, _ code: Int32) -> String {
    if let message = stream.pointee.msg { return "\(String(cString: message)) (\(zlibCodeName(code)))" }
    return zlibCodeName(code)
}

/// The biggest count zlib's 32-bit `avail_in` / `avail_out` take at once.
private let maxChunk = Int(cws_zlib_max_chunk())

/// An error of our own zlib use (not the peer's): close code 1011.
private func localFailure(_ what: String) -> WebSocketError {
    WebSocketError(.extensionFailure, "permessage-deflate: \(what)", closeCode: .internalError)
}

/// A raw DEFLATE compressor whose LZ77 window carries over from one message to the next until ``reset()``.
final class ZlibDeflater {
    private let stream: UnsafeMutablePointer<z_stream>
    /// Output space, reused between messages while it stays small.
    private var scratch: UnsafeMutableRawBufferPointer
    /// The window size zlib really uses (9...15: raw deflate refuses 8, see ``init(level:windowBits:memoryLevel:)``).
    let windowBits: Int

    /// Scratch space kept between messages; bigger buffers are freed after the message that needed them.
    private static let retainedScratch = 64 << 10

    /// Starts a raw deflate stream.
    /// - Parameters:
    ///   - level: zlib level 0...9.
    ///   - windowBits: The LZ77 window, 8...15. zlib 1.2.9 and later refuse 8 for raw deflate; 9 is used instead,
    ///     which is still valid for a peer that inflates with an 8-bit window: zlib never emits a distance beyond
    ///     window size minus 262 bytes (250 bytes for a 512-byte window), less than the 256 bytes of an 8-bit one.
    ///   - memoryLevel: zlib memLevel 1...9.
    init(level: Int, windowBits: Int, memoryLevel: Int) throws(WebSocketError) {
        self.windowBits = max(windowBits, 9)
        self.stream = .allocate(capacity: 1)
        self.stream.initialize(to: z_stream())
        let code = cws_deflateInit2(self.stream, Int32(level), -Int32(self.windowBits), Int32(memoryLevel))
        guard code == Z_OK else {
            self.stream.deinitialize(count: 1)
            self.stream.deallocate()
            throw localFailure(
                "zlib deflateInit2(level \(level), windowBits -\(self.windowBits), memLevel \(memoryLevel)) failed: \(zlibCodeName(code))"
            )
        }
        self.scratch = .allocate(byteCount: 4096, alignment: 1)
    }

    deinit {
        deflateEnd(self.stream)
        self.stream.deinitialize(count: 1)
        self.stream.deallocate()
        self.scratch.deallocate()
    }

    /// Forgets the LZ77 window (no context takeover): the next message is compressed on its own.
    func reset() {
        deflateReset(self.stream)
    }

    /// Compresses `input` as the next part of the stream and flushes it to a byte boundary with `Z_SYNC_FLUSH`,
    /// so the output ends with the empty stored block `00 00 FF FF`.
    /// - Parameters:
    ///   - input: The bytes.
    ///   - removingTail: Drop that trailing `00 00 FF FF` (RFC 7692 section 7.2.1: only at the end of a message).
    /// - Returns: The compressed bytes.
    func compress(_ input: [UInt8], removingTail: Bool) throws(WebSocketError) -> [UInt8] {
        let bound = Int(deflateBound(self.stream, uLong(input.count))) + 16
        self.ensureScratch(bound)
        var written = 0
        var failure: Int32?
        input.withUnsafeBytes { source in
            var consumed = 0
            while true {
                let chunk = min(source.count - consumed, maxChunk)
                let lastInput = consumed + chunk == source.count
                if written == self.scratch.count { self.growScratch(to: self.scratch.count * 2, keeping: written) }
                let room = min(self.scratch.count - written, maxChunk)
                let next = source.baseAddress.map { $0 + consumed }
                self.stream.pointee.next_in = UnsafeMutablePointer(mutating: next?.assumingMemoryBound(to: Bytef.self))
                self.stream.pointee.avail_in = uInt(chunk)
                self.stream.pointee.next_out = (self.scratch.baseAddress! + written).assumingMemoryBound(to: Bytef.self)
                self.stream.pointee.avail_out = uInt(room)
                let code = deflate(self.stream, lastInput ? Z_SYNC_FLUSH : Z_NO_FLUSH)
                consumed += chunk - Int(self.stream.pointee.avail_in)
                written += room - Int(self.stream.pointee.avail_out)
                // Z_BUF_ERROR only says no progress was possible: a flush right after a flush has nothing to add.
                guard code == Z_OK || code == Z_BUF_ERROR else {
                    failure = code
                    return
                }
                // Done once all input is in and zlib had output space to spare (nothing left pending).
                if lastInput && consumed == source.count && self.stream.pointee.avail_out > 0 { return }
            }
        }
        self.stream.pointee.next_in = nil
        self.stream.pointee.next_out = nil
        if let failure {
            throw localFailure("zlib deflate failed: \(zlibMessage(self.stream, failure))")
        }
        var count = written
        if removingTail {
            if count >= 5 && self.scratch[(count - 4)..<count].elementsEqual([0x00, 0x00, 0xFF, 0xFF]) {
                count -= 4
            } else {
                // No flush marker: zlib had nothing to flush (an empty message, or an empty last fragment right
                // after a flushed one) and returned Z_BUF_ERROR. The receiver appends 00 00 FF FF, which is only
                // the LEN/NLEN half of an empty stored block: supply its header byte (RFC 7692 section 7.2.3.6).
                self.scratch[count] = 0x00
                count += 1
            }
        }
        let output = [UInt8](UnsafeRawBufferPointer(rebasing: self.scratch[0..<count]))
        if self.scratch.count > Self.retainedScratch { self.replaceScratch(byteCount: 4096) }
        return output
    }

    private func ensureScratch(_ byteCount: Int) {
        if self.scratch.count < byteCount { self.replaceScratch(byteCount: byteCount) }
    }

    private func replaceScratch(byteCount: Int) {
        self.scratch.deallocate()
        self.scratch = .allocate(byteCount: byteCount, alignment: 1)
    }

    private func growScratch(to byteCount: Int, keeping used: Int) {
        let bigger = UnsafeMutableRawBufferPointer.allocate(byteCount: byteCount, alignment: 1)
        bigger.copyMemory(from: UnsafeRawBufferPointer(rebasing: self.scratch[0..<used]))
        self.scratch.deallocate()
        self.scratch = bigger
    }
}

/// A raw DEFLATE decompressor whose LZ77 window carries over from one message to the next until ``reset()``.
final class ZlibInflater {
    private let stream: UnsafeMutablePointer<z_stream>
    /// Output is inflated into this chunk and appended to the message, so no more than the limit is ever produced.
    private let chunk: UnsafeMutableRawBufferPointer
    /// The window size, 8...15.
    let windowBits: Int

    /// The empty stored block RFC 7692 section 7.2.2 appends to every compressed message before inflating it.
    private static let tail: [UInt8] = [0x00, 0x00, 0xFF, 0xFF]
    private static let chunkSize = 32 << 10

    /// Starts a raw inflate stream.
    /// - Parameter windowBits: The LZ77 window, 8...15; at least the one the peer compresses with.
    init(windowBits: Int) throws(WebSocketError) {
        self.windowBits = windowBits
        self.stream = .allocate(capacity: 1)
        self.stream.initialize(to: z_stream())
        let code = cws_inflateInit2(self.stream, -Int32(windowBits))
        guard code == Z_OK else {
            self.stream.deinitialize(count: 1)
            self.stream.deallocate()
            throw localFailure("zlib inflateInit2(windowBits -\(windowBits)) failed: \(zlibCodeName(code))")
        }
        self.chunk = .allocate(byteCount: Self.chunkSize, alignment: 1)
    }

    deinit {
        inflateEnd(self.stream)
        self.stream.deinitialize(count: 1)
        self.stream.deallocate()
        self.chunk.deallocate()
    }

    /// Forgets the LZ77 window (no context takeover).
    func reset() {
        inflateReset(self.stream)
    }

    /// Total bytes this stream has produced (for tests: how far a bomb got before it was stopped).
    var totalOut: Int { Int(self.stream.pointee.total_out) }

    /// Decompresses one message's payload (RFC 7692 section 7.2.2: the payload followed by `00 00 FF FF`).
    /// - Parameters:
    ///   - payload: The compressed payload, without the tail.
    ///   - limit: The most bytes the message may inflate to; one byte more fails it, and inflation stops there.
    ///   - keepWindow: Whether the window must survive a final block (context takeover).
    /// - Returns: The decompressed message.
    /// - Throws: `WebSocketError` `messageTooBig` (1009) past `limit`, `protocolViolation` (1002) for data that
    ///   is not DEFLATE, `extensionFailure` (1011) when zlib itself fails.
    func decompress(_ payload: [UInt8], limit: Int, keepWindow: Bool) throws(WebSocketError) -> [UInt8] {
        // An empty payload is not valid (the appended tail lacks its block header, RFC 7692 section 7.2.3.6 sends
        // 0x00) but some senders produce it for empty messages: read it as empty and leave the stream alone.
        if payload.isEmpty { return [] }
        var output: [UInt8] = []
        // A first guess from typical ratios, never more than the limit allows.
        output.reserveCapacity(min(limit, max(payload.count.multipliedReportingOverflow(by: 4).partialValue, 1024)))
        // (withUnsafeBytes rethrows untyped errors; carry ours out as a Result.)
        let ended = payload.withUnsafeBytes { bytes in
            Result { () throws(WebSocketError) -> Bool in
                try self.inflate(bytes, into: &output, limit: limit, keepWindow: keepWindow, isTail: false)
            }
        }
        // After a final block (BFINAL, RFC 7692 section 7.2.3.4) the tail would start a block of the next stream.
        if try !ended.get() {
            _ = try Self.tail.withUnsafeBytes { bytes in
                Result { () throws(WebSocketError) -> Bool in
                    try self.inflate(bytes, into: &output, limit: limit, keepWindow: keepWindow, isTail: true)
                }
            }.get()
        }
        return output
    }

    /// Decompresses one fragment of a message that is inflated fragment by fragment (RFC 7692 section 7.2.2: the
    /// fragments' payloads are one DEFLATE stream, followed by `00 00 FF FF` after the last).
    /// - Parameters:
    ///   - payload: The fragment's compressed payload.
    ///   - state: Where the message stands; start each message with a fresh one.
    ///   - last: Whether this is the message's last fragment (the tail is inflated after it).
    ///   - limit: The most bytes this fragment may inflate to; one byte more fails it, and inflation stops there.
    ///   - keepWindow: Whether the window must survive a final block (context takeover).
    /// - Returns: The fragment's decompressed bytes.
    /// - Throws: The errors of ``decompress(_:limit:keepWindow:)``.
    func decompressFragment(
        _ payload: [UInt8], state: inout FragmentState, last: Bool, limit: Int, keepWindow: Bool
    ) throws(WebSocketError) -> [UInt8] {
        var output: [UInt8] = []
        if !payload.isEmpty {
            output.reserveCapacity(min(limit, max(payload.count.multipliedReportingOverflow(by: 4).partialValue, 1024)))
            state.compressedBytes += payload.count
            state.endedStream = try payload.withUnsafeBytes { bytes in
                Result { () throws(WebSocketError) -> Bool in
                    try self.inflate(bytes, into: &output, limit: limit, keepWindow: keepWindow, isTail: false)
                }
            }.get()
        }
        // As for a whole message: an empty message is read as empty, and after a final block that ended the
        // payload the tail would start a block of the next stream.
        if last && state.compressedBytes > 0 && !state.endedStream {
            var tailOutput: [UInt8] = []
            _ = try Self.tail.withUnsafeBytes { bytes in
                Result { () throws(WebSocketError) -> Bool in
                    try self.inflate(
                        bytes, into: &tailOutput, limit: limit - output.count, keepWindow: keepWindow, isTail: true)
                }
            }.get()
            output += tailOutput
        }
        return output
    }

    /// Where a message inflated fragment by fragment stands (see ``decompressFragment(_:state:last:limit:keepWindow:)``).
    struct FragmentState {
        /// Compressed bytes of the message so far.
        var compressedBytes = 0
        /// Whether the last non-empty fragment ended exactly with a final block.
        var endedStream = false
    }

    /// Inflates all of `input`; returns `true` when the stream ended with a final block and nothing followed
    /// (or, for the appended tail, when a final block ended at all: the rest of the tail is then ignored).
    private func inflate(
        _ input: UnsafeRawBufferPointer, into output: inout [UInt8], limit: Int, keepWindow: Bool, isTail: Bool
    ) throws(WebSocketError) -> Bool {
        var consumed = 0
        defer {
            self.stream.pointee.next_in = nil
            self.stream.pointee.next_out = nil
        }
        while true {
            let chunk = min(input.count - consumed, maxChunk)
            let next = input.baseAddress.map { $0 + consumed }
            self.stream.pointee.next_in = UnsafeMutablePointer(mutating: next?.assumingMemoryBound(to: Bytef.self))
            self.stream.pointee.avail_in = uInt(chunk)
            // Never let zlib produce more than one byte past the limit: a bomb stops here, not after inflating.
            let allowed = limit - output.count  // >= 0: past the limit we have thrown
            let room = min(self.chunk.count, allowed == .max ? allowed : allowed + 1)
            self.stream.pointee.next_out = self.chunk.baseAddress!.assumingMemoryBound(to: Bytef.self)
            self.stream.pointee.avail_out = uInt(room)
            let code = CWSZlib.inflate(self.stream, Z_SYNC_FLUSH)
            consumed += chunk - Int(self.stream.pointee.avail_in)
            let produced = room - Int(self.stream.pointee.avail_out)
            if produced > 0 {
                output.append(contentsOf: UnsafeRawBufferPointer(rebasing: self.chunk[0..<produced]))
            }
            if output.count > limit {
                throw WebSocketError(
                    .messageTooBig,
                    "a compressed message inflates to more than the \(limit)-byte limit (stopped there; raise WebSockets.Configuration.maxMessageSize if this is expected)",
                    closeCode: .messageTooBig
                )
            }
            switch code {
            case Z_OK, Z_BUF_ERROR:
                if consumed == input.count && self.stream.pointee.avail_out > 0 { return false }
                if code == Z_BUF_ERROR && produced == 0 && self.stream.pointee.avail_out > 0 {
                    // No progress with input and output room left: cannot happen for a valid stream.
                    throw Self.corrupt("zlib made no progress (\(zlibMessage(self.stream, code)))")
                }
            case Z_STREAM_END:
                // A block with BFINAL set ended the DEFLATE stream. Start a new one for what follows, keeping the
                // window: RFC 7692 section 7.2.2 decompresses the next message with the window of the last.
                try self.restart(keepWindow: keepWindow)
                if consumed == input.count || isTail { return true }
            case Z_MEM_ERROR:
                throw localFailure("zlib inflate ran out of memory")
            case Z_NEED_DICT:
                throw Self.corrupt("the data asks for a preset dictionary, which raw DEFLATE does not have")
            default:  // Z_DATA_ERROR, Z_STREAM_ERROR
                throw Self.corrupt(zlibMessage(self.stream, code))
            }
        }
    }

    /// Resets the stream after a final block, carrying the window over when `keepWindow`.
    private func restart(keepWindow: Bool) throws(WebSocketError) {
        guard keepWindow else {
            inflateReset(self.stream)
            return
        }
        var window = [UInt8](repeating: 0, count: 1 << self.windowBits)
        var length: uInt = 0
        let saved = window.withUnsafeMutableBufferPointer { inflateGetDictionary(self.stream, $0.baseAddress, &length) }
        inflateReset(self.stream)
        guard saved == Z_OK else { return }
        let restored = window.withUnsafeBufferPointer { inflateSetDictionary(self.stream, $0.baseAddress, length) }
        if restored != Z_OK {
            throw localFailure("zlib inflateSetDictionary failed: \(zlibCodeName(restored))")
        }
    }

    /// The error for a payload that is not valid DEFLATE.
    private static func corrupt(_ detail: String) -> WebSocketError {
        // 1002: the peer broke the framing of the negotiated extension (RFC 7692 section 7.2.2 promises DEFLATE
        // data under RSV1); the message's own type is not at fault, so not 1007. Python websockets does the same.
        WebSocketError(
            .protocolViolation, "a compressed message is not valid DEFLATE data: \(detail)", closeCode: .protocolError
        )
    }
}
