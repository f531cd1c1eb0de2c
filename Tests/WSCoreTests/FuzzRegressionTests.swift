import WSCore

// The fuzz oracles for the WSCore parsers, and the tests that replay fuzz inputs through them.
//
// This one file has two users:
//   - the libFuzzer targets in Fuzz/ compile it through a symlink (Fuzz/Sources/CoreHarness/), with FUZZING
//     defined, and turn a thrown `FuzzHarness.Failure` into a crash that libFuzzer records;
//   - the normal test run (FUZZING undefined) replays every seed in Fuzz/corpus/<target>/ and every kept crash
//     input in Tests/Fixtures/fuzz-regressions/<target>/ through the same oracles (the suite at the end).
// Input layouts and the invariants each oracle checks: Docs/Fuzzing.md.
#if !FUZZING
import Foundation
import Testing
#endif

/// The fuzz oracles for WSCore's parsers: each takes one fuzz input, runs the parser on it and throws
/// ``Failure`` when an invariant does not hold. A parser that crashes crashes the caller.
package enum FuzzHarness {
    /// A violated invariant: what was expected and what happened.
    package struct Failure: Error, CustomStringConvertible {
        /// The violated invariant, with the values involved.
        package let description: String
    }

    /// The fuzz targets by name (the names of the executables in Fuzz/ and of the corpus folders), with their
    /// oracle.
    package static let targets: [(name: String, oracle: @Sendable ([UInt8]) throws(Failure) -> Void)] = [
        ("FuzzFrameDecoder", frameDecoder),
        ("FuzzHTTPResponse", httpHead),
        ("FuzzExtensionHeader", extensionHeader),
        ("FuzzClosePayload", closePayload),
        ("FuzzUTF8", utf8Validator),
    ]

    /// Throws a ``Failure`` with `message` unless `condition` holds.
    /// - Parameters:
    ///   - condition: The invariant.
    ///   - message: What went wrong, built only when it did.
    @inline(__always)
    static func check(_ condition: Bool, _ message: @autoclosure () -> String) throws(Failure) {
        if !condition { throw Failure(description: message()) }
    }

    // MARK: - Input helpers

    /// Reads a fuzz input front to back: configuration bytes first, then the data under test.
    struct Input {
        /// The whole input.
        private let bytes: [UInt8]
        /// The next byte to read.
        private var index = 0

        /// Wraps an input.
        /// - Parameter bytes: The fuzz input.
        init(_ bytes: [UInt8]) { self.bytes = bytes }

        /// The next byte, or 0 once the input is used up (so every input is valid).
        mutating func byte() -> UInt8 {
            guard self.index < self.bytes.count else { return 0 }
            defer { self.index += 1 }
            return self.bytes[self.index]
        }

        /// Chunk sizes: one byte gives their number (1...8), then one byte per size: `(byte + 1) * scale`.
        /// - Parameter scale: Multiplies every size (1 for 1...256-byte chunks).
        mutating func chunkSizes(scale: Int) -> [Int] {
            let count = Int(self.byte() & 7) + 1
            return (0..<count).map { _ in (Int(self.byte()) + 1) * scale }
        }

        /// Everything not read yet.
        mutating func rest() -> [UInt8] {
            defer { self.index = self.bytes.count }
            return self.index < self.bytes.count ? Array(self.bytes[self.index...]) : []
        }
    }

    /// Splits `data` into consecutive chunks whose sizes cycle through `sizes` (the last one may be shorter).
    /// - Parameters:
    ///   - data: The bytes to split.
    ///   - sizes: Positive chunk sizes.
    static func chunks(_ data: [UInt8], sizes: [Int]) -> [ArraySlice<UInt8>] {
        var result: [ArraySlice<UInt8>] = []
        var start = 0
        var k = 0
        while start < data.count {
            let end = min(data.count, start + sizes[k % sizes.count])
            result.append(data[start..<end])
            start = end
            k += 1
        }
        return result
    }

    /// Whether an error message is safe to log: no control characters (peer bytes must arrive escaped).
    /// - Parameter message: An error message.
    static func isPrintable(_ message: String) -> Bool {
        message.unicodeScalars.allSatisfy { $0.value >= 0x20 && $0.value != 0x7F }
    }

    // MARK: - UTF-8 reference (the standard library)

    /// Whether `bytes` is complete, valid UTF-8, according to the standard library.
    /// - Parameter bytes: The input.
    static func stdlibValid(_ bytes: some Collection<UInt8>) -> Bool {
        String(validating: bytes, as: UTF8.self) != nil
    }

    /// Whether some continuation makes `bytes` valid UTF-8, judged with the standard library: it is valid, or
    /// becomes valid with 1 to 3 more bytes. The second byte of a sequence has lead-specific ranges (A0–BF
    /// after E0, 80–9F after ED, 90–BF after F0, 80–8F after F4), so the first added byte is tried as 80, 90
    /// and A0, the others as 80.
    /// - Parameter bytes: A prefix of some input.
    static func stdlibCompletable(_ bytes: [UInt8]) -> Bool {
        if stdlibValid(bytes) { return true }
        for first: UInt8 in [0x80, 0x90, 0xA0] {
            for extra in 0..<3 where stdlibValid(bytes + [first] + [UInt8](repeating: 0x80, count: extra)) {
                return true
            }
        }
        return false
    }

    /// The length of the shortest prefix of `bytes` that no continuation makes valid UTF-8, or `nil` when every
    /// prefix can still be completed: where a fail-fast validator must stop (binary search; completability only
    /// goes from true to false).
    /// - Parameter bytes: The input.
    static func stdlibFailLength(_ bytes: [UInt8]) -> Int? {
        if stdlibCompletable(bytes) { return nil }
        var low = 0  // completable
        var high = bytes.count  // not completable
        while high - low > 1 {
            let mid = (low + high) / 2
            if stdlibCompletable(Array(bytes[..<mid])) { low = mid } else { high = mid }
        }
        return high
    }

    /// The bytes of the incomplete character at the end of `bytes` (0 to 3 bytes), for input known to be
    /// completable: after the last lead byte, fewer continuation bytes than it announces.
    /// - Parameter bytes: Completable UTF-8.
    static func incompleteTail(_ bytes: [UInt8]) -> [UInt8] {
        for k in 1...min(3, max(bytes.count, 1)) where k <= bytes.count {
            let b = bytes[bytes.count - k]
            guard b & 0xC0 != 0x80 else { continue }
            let length = b < 0x80 ? 1 : (b < 0xE0 ? 2 : (b < 0xF0 ? 3 : 4))
            return length > k ? Array(bytes.suffix(k)) : []
        }
        return []
    }

    // MARK: - (1) Frame decoder and message assembler

    /// The `maxFrameSize` values the first configuration byte picks from.
    static let maxFrameSizes = [0, 1, 125, 126, 65_535, 65_536, 70_000, 1 << 20]
    /// The most bytes the frame decoder target appends to complete a frame.
    static let maxPadding = 192 << 10
    /// The most chunks the frame decoder target feeds one stream in: longer streams get proportionally bigger
    /// chunks, so that one input costs milliseconds, not a second (tiny chunks stay for streams under 1 KiB).
    static let maxChunkCount = 1024
    /// The `maxMessageSize` values for the assembler.
    static let maxMessageSizes = [0, 1, 125, 4096, 65_536, 1 << 20]
    /// The `maxFragments` values for the assembler.
    static let maxFragmentCounts = [0, 1, 2, 3, 16, 65_536]

    /// What the reference decoder makes of a whole byte stream: the complete frames, how many bytes they take,
    /// and the close code of the first invalid header (then nothing after it counts).
    struct ReferenceDecoding {
        /// The complete frames before the end or the first invalid header.
        var frames: [ParsedFrame] = []
        /// The bytes those frames take.
        var consumed = 0
        /// 1002 or 1009 for the first invalid header; `nil` if none.
        var error: UInt16?
        /// The payload bytes still missing when the stream ends inside a frame whose header is complete.
        var missing = 0
    }

    /// An independent, non-incremental RFC 6455 section 5.2 parser with the SDK's documented rules: reserved
    /// opcodes, reserved bits outside `allowed`, unfinished control frames, control payloads over 125 bytes, a
    /// mask bit wrong for the role and a 64-bit length with its top bit set fail with 1002 as soon as those
    /// header bytes are there; a declared length over `maxFrameSize` fails with 1009 before the payload.
    /// - Parameters:
    ///   - stream: Every byte received.
    ///   - role: The side that receives.
    ///   - allowed: Reserved bits of negotiated extensions.
    ///   - maxFrameSize: The payload limit.
    static func referenceDecode(
        _ stream: [UInt8], role: FrameDecoder.Role, allowed: UInt8, maxFrameSize: Int
    ) -> ReferenceDecoding {
        var result = ReferenceDecoding()
        var o = 0
        while true {
            let available = stream.count - o
            guard available >= 1 else { return result }
            let b0 = stream[o]
            // Raw bits, not `Opcode`'s properties: the reference does not share code with the decoder it checks.
            let opcode = b0 & 0x0F
            let fin = b0 & 0x80 != 0
            let isControl = opcode >= 8
            if ![0, 1, 2, 8, 9, 10].contains(opcode) || b0 & 0x70 & ~allowed != 0 || (isControl && !fin) {
                result.error = 1002
                return result
            }
            guard available >= 2 else { return result }
            let b1 = stream[o + 1]
            let masked = b1 & 0x80 != 0
            let length7 = Int(b1 & 0x7F)
            if (isControl && length7 > 125) || masked != (role == .server) {
                result.error = 1002
                return result
            }
            var length = UInt64(length7)
            var headerLength = 2
            if length7 == 126 {
                guard available >= 4 else { return result }
                length = UInt64(stream[o + 2]) << 8 | UInt64(stream[o + 3])
                headerLength = 4
            } else if length7 == 127 {
                guard available >= 10 else { return result }
                length = stream[(o + 2)..<(o + 10)].reduce(0) { $0 << 8 | UInt64($1) }
                if length >> 63 != 0 {
                    result.error = 1002
                    return result
                }
                headerLength = 10
            }
            if length > UInt64(max(maxFrameSize, 0)) {
                result.error = 1009
                return result
            }
            if masked { headerLength += 4 }
            guard available >= headerLength, UInt64(available - headerLength) >= length else {
                if available >= headerLength { result.missing = Int(length) - (available - headerLength) }
                return result
            }
            let start = o + headerLength
            var payload = Array(stream[start..<(start + Int(length))])
            if masked {
                for i in payload.indices { payload[i] ^= stream[start - 4 + i % 4] }
            }
            result.frames.append(
                ParsedFrame(
                    fin: fin, reservedBits: Frame.ReservedBits(rawValue: b0), opcode: Opcode(rawValue: opcode)!,
                    payload: payload
                )
            )
            o = start + Int(length)
            result.consumed = o
        }
    }

    /// A model of ``MessageAssembler`` built from its documented rules, which says which violations a data
    /// frame commits and what message results.
    struct AssemblerModel {
        /// The assembler's `maxMessageSize`.
        let maxMessageSize: Int
        /// The assembler's `maxFragments`.
        let maxFragments: Int
        /// The opcode of the message in progress (text or binary), if any.
        var opcode: Opcode?
        /// The first frame's reserved bits.
        var reservedBits: Frame.ReservedBits = []
        /// The payload so far.
        var data: [UInt8] = []
        /// The fragments so far.
        var fragments = 0
        /// Whether the message in progress is text that is validated.
        var validates = false
        /// The incomplete character at the end of `data` (only for validated text).
        var tail: [UInt8] = []

        /// The close codes `frame` violates, given the message in progress (empty when it is acceptable).
        /// - Parameters:
        ///   - frame: A data frame.
        ///   - validateUTF8: What the session passes for it.
        func violations(_ frame: ParsedFrame, validateUTF8: Bool) -> Set<UInt16> {
            var codes: Set<UInt16> = []
            if frame.opcode == .continuation {
                guard self.opcode != nil else { return [1002] }
                if self.fragments + 1 > self.maxFragments { codes.insert(1009) }
                if self.data.count + frame.payload.count > self.maxMessageSize { codes.insert(1009) }
                if self.validates {
                    let text = self.tail + frame.payload
                    if !FuzzHarness.stdlibCompletable(text) || (frame.fin && !FuzzHarness.stdlibValid(text)) {
                        codes.insert(1007)
                    }
                }
            } else {
                if self.opcode != nil { codes.insert(1002) }
                if frame.payload.count > self.maxMessageSize { codes.insert(1009) }
                let validate = validateUTF8 && frame.opcode == .text
                if !frame.fin && self.maxFragments < 1 { codes.insert(1009) }
                if validate {
                    let ok =
                        frame.fin
                        ? FuzzHarness.stdlibValid(frame.payload) : FuzzHarness.stdlibCompletable(frame.payload)
                    if !ok { codes.insert(1007) }
                }
            }
            return codes
        }

        /// Applies an acceptable frame; returns the complete message when it has FIN.
        /// - Parameters:
        ///   - frame: A data frame without violations.
        ///   - validateUTF8: What the session passes for it.
        mutating func accept(_ frame: ParsedFrame, validateUTF8: Bool) -> Frame? {
            if frame.opcode != .continuation {
                self.opcode = frame.opcode
                self.reservedBits = frame.reservedBits
                self.data = []
                self.fragments = 0
                self.validates = validateUTF8 && frame.opcode == .text
                self.tail = []
            }
            self.data += frame.payload
            self.fragments += 1
            if self.validates { self.tail = FuzzHarness.incompleteTail(self.tail + frame.payload) }
            guard frame.fin, let opcode = self.opcode else { return nil }
            let message = Frame(
                kind: opcode == .text ? .text : .binary, fin: true, data: self.data, reservedBits: self.reservedBits
            )
            self = AssemblerModel(maxMessageSize: self.maxMessageSize, maxFragments: self.maxFragments)
            return message
        }
    }

    /// Fuzz target 1: ``FrameDecoder`` fed in chunks, its frames pushed through ``MessageAssembler``.
    ///
    /// Input: byte 0 picks the role (bit 0: server), the allowed reserved bits (bits 1–3) and `maxFrameSize`
    /// (bits 4–6, from ``maxFrameSizes``); with bit 7 set, a stream that ends inside a frame's payload is completed
    /// (up to ``maxPadding`` bytes) with copies of the letter `0x40 | byte1 & 0x3F`, so that frames of 64 KiB and
    /// more (the decoder's direct-fill path) need no big inputs. Byte 1 bit 6 multiplies chunk sizes by 257; bit 7
    /// hands the chunks over as the session does, with ``FrameDecoder/beginInput(_:)`` and
    /// ``FrameDecoder/endInput()`` (each chunk in its own allocation, freed right after `endInput`, so that
    /// AddressSanitizer reports any later use of it), instead of ``FrameDecoder/append(_:)``. Byte 2 picks
    /// `maxMessageSize` (low nibble) and `maxFragments` (high nibble). Then the chunk sizes
    /// (``Input/chunkSizes(scale:)``, raised to at least a ``maxChunkCount``th of the stream); the rest is the
    /// stream.
    ///
    /// Invariants: the chunked decoder yields exactly the reference decoder's frames and error (1002 or 1009),
    /// keeps exactly the unconsumed bytes buffered, stays failed with the same error, and its messages are
    /// printable; every frame re-encodes with ``FrameEncoder`` to bytes that decode back to it; a partially
    /// received frame's header and payload prefix agree with the complete frame, and a partial UTF-8 failure is
    /// one the whole frame commits; the assembler throws exactly when the model finds a violation, with one of the
    /// model's codes, and otherwise produces the model's messages.
    /// - Parameter input: The fuzz input.
    package static func frameDecoder(_ input: [UInt8]) throws(Failure) {
        var reader = Input(input)
        let c0 = reader.byte()
        let c1 = reader.byte()
        let c2 = reader.byte()
        let role: FrameDecoder.Role = c0 & 1 == 0 ? .client : .server
        let allowed = ((c0 >> 1) & 7) << 4
        let maxFrameSize = Self.maxFrameSizes[Int(c0 >> 4) & 7]
        let maxMessageSize = Self.maxMessageSizes[Int(c2 & 0x0F) % Self.maxMessageSizes.count]
        let maxFragments = Self.maxFragmentCounts[Int(c2 >> 4) % Self.maxFragmentCounts.count]
        let lend = c1 & 0x80 != 0
        let sizes = reader.chunkSizes(scale: c1 & 0x40 != 0 ? 257 : 1)
        var stream = reader.rest()
        if c0 & 0x80 != 0 {
            let missing = Self.referenceDecode(stream, role: role, allowed: allowed, maxFrameSize: maxFrameSize).missing
            stream += [UInt8](repeating: 0x40 | c1 & 0x3F, count: min(missing, Self.maxPadding))
        }

        /// A decoder with this input's configuration.
        func makeDecoder() -> FrameDecoder {
            var decoder = FrameDecoder(maxFrameSize: maxFrameSize, role: role)
            decoder.allowedReservedBits = Frame.ReservedBits(rawValue: allowed)
            return decoder
        }
        var decoder = makeDecoder()
        var assembler = MessageAssembler(maxMessageSize: maxMessageSize, maxFragments: maxFragments)
        var model = AssemblerModel(maxMessageSize: maxMessageSize, maxFragments: maxFragments)
        var assemblerFailed = false
        var frames: [ParsedFrame] = []
        var failure: ProtocolViolation?
        /// The incomplete frame at the head, as the session tracks it between chunks: its index, header, the
        /// payload seen so far, the validator primed by the assembler and whether it found invalid UTF-8.
        var partial:
            (
                index: Int, opcode: Opcode, bits: Frame.ReservedBits, prefix: [UInt8], validator: UTF8Validator?,
                invalid: Bool
            )?

        /// Checks a partial observation against the complete frame, then pushes it through the assembler.
        func received(_ frame: ParsedFrame) throws(Failure) {
            let index = frames.count
            frames.append(frame)
            var partialInvalid = false
            if let seen = partial, seen.index == index {
                try check(
                    seen.opcode == frame.opcode && seen.bits == frame.reservedBits,
                    "partial header \(seen.opcode)/\(seen.bits.rawValue) != frame "
                        + "\(frame.opcode)/\(frame.reservedBits.rawValue)"
                )
                try check(
                    seen.prefix.count < frame.payload.count && frame.payload.starts(with: seen.prefix),
                    "partial payload (\(seen.prefix.count) bytes) is not a proper prefix of the frame's "
                        + "(\(frame.payload.count))"
                )
                partialInvalid = seen.invalid
            }
            partial = nil

            // Re-encoding: the encoder's bytes decode back to the same frame, nothing left over.
            var encoded: [UInt8] = []
            let key: MaskingKey? = role == .server ? MaskingKey(0x5A, UInt8(index & 0xFF), 0xC3, 0x01) : nil
            frame.payload.withUnsafeBytes { payload in
                FrameEncoder.encode(
                    opcode: frame.opcode, fin: frame.fin, reservedBits: frame.reservedBits, payload: payload,
                    maskingKey: key, into: &encoded
                )
            }
            try check(
                encoded.count == FrameEncoder.headerSize(payloadLength: frame.payload.count, masked: key != nil)
                    + frame.payload.count,
                "re-encoded frame has \(encoded.count) bytes"
            )
            var again = makeDecoder()
            encoded.withUnsafeBytes { again.append($0) }
            let redecoded: ParsedFrame?
            do {
                redecoded = try again.nextFrame()
            } catch {
                throw Failure(description: "re-encoded frame fails: \(error)")
            }
            try check(
                redecoded == frame, "re-encoded frame decodes differently: \(String(describing: redecoded)) != \(frame)"
            )
            try check(again.bufferedByteCount == 0, "re-encoded frame leaves \(again.bufferedByteCount) bytes")

            // The assembler (control frames are the session's).
            guard !frame.isControl, !assemblerFailed else {
                try check(!partialInvalid, "partial UTF-8 check failed a frame the assembler never saw")
                return
            }
            let validate = frame.reservedBits.isEmpty
            let expected = model.violations(frame, validateUTF8: validate)
            let message: Frame?
            do {
                message = try assembler.push(frame, validateUTF8: validate)
            } catch {
                try check(
                    expected.contains(error.closeCode.rawValue),
                    "assembler threw \(error) but the model expects \(expected.sorted())"
                )
                try check(
                    !partialInvalid || expected.contains(1007),
                    "the partial UTF-8 check failed a frame whose text can still be valid"
                )
                assemblerFailed = true
                return
            }
            try check(expected.isEmpty, "assembler accepted a frame violating \(expected.sorted())")
            try check(!partialInvalid, "the partial UTF-8 check failed a frame the assembler accepts")
            let modelMessage = model.accept(frame, validateUTF8: validate)
            try check(
                message == modelMessage,
                "assembler message \(String(describing: message)) != model \(String(describing: modelMessage))"
            )
        }

        let minimumChunk = stream.count / Self.maxChunkCount + 1
        for chunk in Self.chunks(stream, sizes: sizes.map { max($0, minimumChunk) }) {
            var lent: UnsafeMutableRawBufferPointer?
            if lend {
                let bytes = UnsafeMutableRawBufferPointer.allocate(byteCount: chunk.count, alignment: 1)
                bytes.copyBytes(from: chunk)
                decoder.beginInput(UnsafeRawBufferPointer(bytes))
                lent = bytes
            } else {
                chunk.withUnsafeBytes { decoder.append($0) }
            }
            defer { lent?.deallocate() }
            while failure == nil {
                let frame: ParsedFrame?
                do {
                    frame = try decoder.nextFrame()
                } catch {
                    failure = error
                    break
                }
                guard let frame else { break }
                try received(frame)
            }
            if lend { decoder.endInput() }
            if failure != nil { break }
            // What the session does between chunks: validate the new payload bytes of the frame at the head.
            if let header = decoder.partialFrameHeader {
                if var seen = partial, seen.index == frames.count {
                    partial = nil  // The only reference to `seen.prefix` now: appending to it does not copy it.
                    try check(
                        seen.opcode == header.opcode && seen.bits == header.reservedBits,
                        "the partial frame's header changed from \(seen.opcode) to \(header.opcode)"
                    )
                    let fresh = decoder.partialPayload(from: seen.prefix.count)
                    seen.prefix += fresh
                    if !seen.invalid, seen.validator != nil {
                        seen.invalid = !fresh.withUnsafeBytes { seen.validator!.feed($0) }
                    }
                    partial = seen
                } else {
                    let prefix = decoder.partialPayload(from: 0)
                    var validator =
                        assemblerFailed
                        ? nil
                        : assembler.validatorForPartialFrame(
                            opcode: header.opcode, validateUTF8: header.reservedBits.isEmpty
                        )
                    let invalid = validator != nil && !prefix.withUnsafeBytes { validator!.feed($0) }
                    partial = (frames.count, header.opcode, header.reservedBits, prefix, validator, invalid)
                }
            }
        }

        let reference = Self.referenceDecode(stream, role: role, allowed: allowed, maxFrameSize: maxFrameSize)
        if frames != reference.frames {
            let difference = (0...).first { i in
                i >= frames.count || i >= reference.frames.count || frames[i] != reference.frames[i]
            }
            throw Failure(
                description: "decoder produced \(frames.count) frames, the reference \(reference.frames.count); "
                    + "first difference at frame \(difference ?? 0)"
            )
        }
        try check(
            failure?.closeCode.rawValue == reference.error,
            "decoder error \(String(describing: failure)) != reference \(String(describing: reference.error))"
        )
        if let failure {
            try check(isPrintable(failure.message), "error message has control characters: \(failure.message)")
            let more: [UInt8] = [0x81, 0x00]
            more.withUnsafeBytes { decoder.append($0) }
            let again = Result { () throws(ProtocolViolation) in try decoder.nextFrame() }
            try check(again == .failure(failure), "decoder failed with \(failure), then gave \(again)")
            try check(decoder.bufferedByteCount == 0, "failed decoder keeps \(decoder.bufferedByteCount) bytes")
        } else {
            try check(
                decoder.bufferedByteCount == stream.count - reference.consumed,
                "decoder buffers \(decoder.bufferedByteCount) bytes; \(stream.count - reference.consumed) are "
                    + "unconsumed"
            )
        }
    }

    // MARK: - (2) HTTP response (and request) head parser

    /// The `maxHeaderBytes` values the first configuration byte picks from (the default first).
    static let headerByteLimits = [16_384, 64, 256, 1024]
    /// The `maxHeaderCount` values (the default first).
    static let headerCountLimits = [128, 0, 1, 3]

    /// One parsed head: its start line's parts, its fields, and the stream offset just after it.
    struct ParsedHead: Equatable {
        /// Response: version, status, reason; request: method, target, version.
        var startLine: [String]
        /// The header fields in order.
        var fields: [HTTPHeaders.Field]
        /// The offset in the stream just after the head's blank line.
        var end: Int
    }

    /// One of the two head parsers, behind one `feed` (exactly one of the two is set).
    struct HeadParser {
        /// ``HTTPResponseParser``, as the client uses it.
        var response: HTTPResponseParser?
        /// ``HTTPRequestParser``, as the test server uses it.
        var request: HTTPRequestParser?

        /// Feeds bytes; returns the start line's parts, the fields and the bytes consumed once a head is complete.
        /// - Parameter bytes: The next bytes.
        mutating func feed(
            _ bytes: UnsafeRawBufferPointer
        ) throws(WebSocketError) -> (startLine: [String], headers: HTTPHeaders, consumed: Int)? {
            if self.request != nil {
                guard let (head, consumed) = try self.request!.feed(bytes) else { return nil }
                return ([head.method, head.target, head.version], head.headers, consumed)
            }
            guard let (head, consumed) = try self.response!.feed(bytes) else { return nil }
            return ([head.version, String(head.status), head.reason], head.headers, consumed)
        }

        /// Feeds bytes, returning the outcome as a `Result`.
        /// - Parameter bytes: The next bytes.
        mutating func result(
            _ bytes: some Collection<UInt8>
        ) -> Result<(startLine: [String], headers: HTTPHeaders, consumed: Int)?, WebSocketError> {
            let copy = Array(bytes)
            return copy.withUnsafeBytes { raw in Result { () throws(WebSocketError) in try self.feed(raw) } }
        }
    }

    /// Feeds `chunks` to a fresh parser, restarting after every head, and checks each head's invariants.
    /// - Parameters:
    ///   - chunks: The stream in pieces.
    ///   - request: Parse request heads instead of response heads.
    ///   - maxBytes: The parser's `maxHeaderBytes`.
    ///   - maxCount: The parser's `maxHeaderCount`.
    /// - Returns: The heads, and whether the parser failed.
    static func parseHeads(
        _ chunks: [ArraySlice<UInt8>], request: Bool, maxBytes: Int, maxCount: Int
    ) throws(Failure) -> (heads: [ParsedHead], failed: Bool) {
        var parser =
            request
            ? HeadParser(request: HTTPRequestParser(maxHeaderBytes: maxBytes, maxHeaderCount: maxCount))
            : HeadParser(response: HTTPResponseParser(maxHeaderBytes: maxBytes, maxHeaderCount: maxCount))
        var heads: [ParsedHead] = []
        var offset = 0
        for chunk in chunks {
            var rest = chunk
            while !rest.isEmpty {
                let result: (startLine: [String], headers: HTTPHeaders, consumed: Int)?
                switch parser.result(rest) {
                case .success(let head):
                    result = head
                case .failure(let error):
                    try check(error.code == .invalidHandshake, "head parser threw \(error.code): \(error)")
                    try check(isPrintable(error.message), "error message has control characters: \(error.message)")
                    guard case .failure(let again) = parser.result("\r\n\r\n".utf8), again.message == error.message
                    else { throw Failure(description: "head parser failed with \(error), then did not fail alike") }
                    return (heads, true)
                }
                guard let (startLine, headers, consumed) = result else {
                    offset += rest.count
                    break
                }
                try check(consumed >= 1 && consumed <= rest.count, "consumed \(consumed) of \(rest.count) bytes")
                let headBytes = offset + consumed - (heads.last?.end ?? 0)
                try check(headBytes <= maxBytes, "a \(headBytes)-byte head passed the \(maxBytes)-byte limit")
                try Self.checkHead(startLine, headers, request: request, maxCount: maxCount)
                offset += consumed
                heads.append(ParsedHead(startLine: startLine, fields: Array(headers), end: offset))
                rest = rest.dropFirst(consumed)
            }
        }
        return (heads, false)
    }

    /// Checks one parsed head: a well-formed start line, at most `maxCount` fields, token names, trimmed values
    /// without control characters; and that comma-separated lists of its values split into trimmed elements.
    /// - Parameters:
    ///   - startLine: The start line's parts.
    ///   - headers: The fields.
    ///   - request: Whether it is a request head.
    ///   - maxCount: The parser's `maxHeaderCount`.
    static func checkHead(
        _ startLine: [String], _ headers: HTTPHeaders, request: Bool, maxCount: Int
    ) throws(Failure) {
        /// Whether `s` is `HTTP/1.` and a digit.
        func isVersion(_ s: String) -> Bool {
            let u = Array(s.utf8)
            return u.count == 8 && u.starts(with: "HTTP/1.".utf8) && u[7] >= 0x30 && u[7] <= 0x39
        }
        /// Whether `s` has no control characters but HTAB (what a field value or reason phrase may hold).
        func isFieldText(_ s: String) -> Bool { s.utf8.allSatisfy { $0 == 0x09 || ($0 >= 0x20 && $0 != 0x7F) } }
        if request {
            try check(Self.isToken(startLine[0]), "method \(startLine[0].debugDescription) is not a token")
            try check(
                !startLine[1].isEmpty && startLine[1].utf8.allSatisfy { $0 > 0x20 && $0 != 0x7F },
                "request target \(startLine[1].debugDescription)"
            )
            try check(isVersion(startLine[2]), "version \(startLine[2].debugDescription)")
        } else {
            try check(isVersion(startLine[0]), "version \(startLine[0].debugDescription)")
            try check(Int(startLine[1]).map { (0...999).contains($0) } ?? false, "status \(startLine[1])")
            try check(isFieldText(startLine[2]), "reason \(startLine[2].debugDescription)")
        }
        try check(headers.count <= maxCount, "\(headers.count) fields passed the limit of \(maxCount)")
        for field in headers {
            try check(Self.isToken(field.name), "field name \(field.name.debugDescription)")
            try check(isFieldText(field.value), "field value \(field.value.debugDescription)")
            let u = Array(field.value.utf8)
            try check(
                u.first.map { $0 != 0x20 && $0 != 0x09 } ?? true && u.last.map { $0 != 0x20 && $0 != 0x09 } ?? true,
                "field value \(field.value.debugDescription) is not trimmed"
            )
            for element in httpTokenList([field.value]) {
                let e = Array(element.utf8)
                try check(
                    !e.isEmpty && !e.contains(0x2C) && e.first != 0x20 && e.first != 0x09 && e.last != 0x20
                        && e.last != 0x09,
                    "list element \(element.debugDescription) of \(field.value.debugDescription)"
                )
            }
        }
    }

    /// Fuzz target 2: ``HTTPResponseParser`` (or, with byte 0 bit 4, ``HTTPRequestParser``) fed in chunks.
    ///
    /// Input: byte 0 picks `maxHeaderBytes` (bits 0–1, from ``headerByteLimits``) and `maxHeaderCount` (bits 2–3,
    /// from ``headerCountLimits``); bit 5 multiplies chunk sizes by 64. Then the chunk sizes; the rest is the
    /// stream, which may hold several heads.
    ///
    /// Invariants: errors are `invalidHandshake` with printable messages and stick; every head respects the limits
    /// and the grammar (``checkHead(_:_:request:maxCount:)``); feeding the stream in chunks and in one piece gives
    /// the same heads at the same offsets, and fails or not alike.
    /// - Parameter input: The fuzz input.
    package static func httpHead(_ input: [UInt8]) throws(Failure) {
        var reader = Input(input)
        let c0 = reader.byte()
        let maxBytes = Self.headerByteLimits[Int(c0 & 3)]
        let maxCount = Self.headerCountLimits[Int(c0 >> 2) & 3]
        let request = c0 & 0x10 != 0
        let sizes = reader.chunkSizes(scale: c0 & 0x20 != 0 ? 64 : 1)
        let stream = reader.rest()
        let chunked = try Self.parseHeads(
            Self.chunks(stream, sizes: sizes), request: request, maxBytes: maxBytes, maxCount: maxCount
        )
        let whole = try Self.parseHeads(
            stream.isEmpty ? [] : [stream[...]], request: request, maxBytes: maxBytes, maxCount: maxCount
        )
        try check(
            chunked.heads == whole.heads,
            "chunked feeding gave \(chunked.heads.count) heads, one piece \(whole.heads.count)"
        )
        try check(chunked.failed == whole.failed, "chunked failed: \(chunked.failed), one piece: \(whole.failed)")
    }

    // MARK: - (3) Sec-WebSocket-Extensions parser

    /// Whether every byte of `s` is an RFC 9110 `tchar` and there is at least one.
    /// - Parameter s: A string.
    static func isToken(_ s: String) -> Bool {
        !s.isEmpty
            && s.utf8.allSatisfy { c in
                (c >= 0x30 && c <= 0x39) || (c | 0x20 >= 0x61 && c | 0x20 <= 0x7A) || "!#$%&'*+-.^_`|~".utf8.contains(c)
            }
    }

    /// Parses header values, as a `Result`.
    /// - Parameter values: One value per header line.
    static func parseExtensions(_ values: [String]) -> Result<[WebSocketExtensionHeader], WebSocketError> {
        Result { () throws(WebSocketError) in try WebSocketExtensionHeader.parse(values) }
    }

    /// Fuzz target 3: ``WebSocketExtensionHeader/parse(_:)``.
    ///
    /// Input: header values separated by LF (one per header line), decoded as UTF-8 with repair as the HTTP
    /// parser does.
    ///
    /// Invariants: errors are `invalidHandshake` with printable messages; names, parameter names and values are
    /// tokens; parsing the values joined with `,` into one line gives the same result; formatting the elements
    /// with ``WebSocketExtensionHeader/format(_:)`` and parsing that gives the same elements; every parameter is
    /// found by ``WebSocketExtensionHeader/parameter(_:)``.
    /// - Parameter input: The fuzz input.
    package static func extensionHeader(_ input: [UInt8]) throws(Failure) {
        let values = input.split(separator: 0x0A, omittingEmptySubsequences: false).map {
            String(decoding: $0, as: UTF8.self)
        }
        let result = Self.parseExtensions(values)
        let joined = Self.parseExtensions([values.joined(separator: ",")])
        switch (result, joined) {
        case (.success(let elements), .success(let again)):
            try check(elements == again, "joined values parse differently: \(elements) vs \(again)")
            for element in elements {
                try check(Self.isToken(element.name), "extension name \(element.name.debugDescription)")
                for parameter in element.parameters {
                    try check(Self.isToken(parameter.name), "parameter name \(parameter.name.debugDescription)")
                    try check(
                        parameter.value.map(Self.isToken) ?? true,
                        "parameter value \(String(describing: parameter.value).debugDescription)"
                    )
                    try check(element.parameter(parameter.name) != nil, "parameter \(parameter.name) not found")
                }
                _ = element.description
            }
            let formatted = WebSocketExtensionHeader.format(elements)
            switch Self.parseExtensions([formatted]) {
            case .success(let reparsed):
                try check(reparsed == elements, "format/parse round trip: \(elements) -> \(formatted) -> \(reparsed)")
            case .failure(let error):
                throw Failure(description: "formatted elements \(formatted.debugDescription) do not parse: \(error)")
            }
        case (.failure(let error), .failure):
            try check(error.code == .invalidHandshake, "parser threw \(error.code): \(error)")
            try check(isPrintable(error.message), "error message has control characters: \(error.message)")
        default:
            throw Failure(description: "separate lines: \(result); joined with ',': \(joined)")
        }
    }

    // MARK: - (4) Close payload

    /// What a received close payload means (RFC 6455 sections 5.5.1 and 7.4).
    enum CloseVerdict: Equatable {
        /// An empty payload: no status code (1005 locally).
        case noCode
        /// A violation with this close code: 1002 for a 1-byte payload or a code that may not be sent, 1007 for a
        /// reason that is not UTF-8.
        case reject(UInt16)
        /// A valid code and reason.
        case accept(code: UInt16, message: String)
    }

    /// Whether a peer may send `code` (RFC 6455 section 7.4 and the IANA registry): 1000–1003, 1007–1014
    /// (1012–1014 registered after the RFC), 3000–4999. Written from the RFC, not from ``CloseReason``.
    /// - Parameter code: A received close code.
    static func specAllowsOnWire(_ code: UInt16) -> Bool {
        [1000, 1001, 1002, 1003, 1007, 1008, 1009, 1010, 1011, 1012, 1013, 1014].contains(code)
            || (3000...4999).contains(code)
    }

    /// Fuzz target 4: close payloads.
    ///
    /// The session's strict check (`Connection.validateClosePayload`) is `private` to Session/Connection.swift,
    /// so this target checks the pieces it is made of and the public readers: ``CloseReason/Code/isValidOnWire``
    /// and ``UTF8Validator`` composed as the session composes them against a verdict written from the RFC with the
    /// standard library's UTF-8 check; ``CloseReason/init(decoding:)`` and ``Frame/readReason()`` (lenient: equal
    /// to the strict reading whenever that accepts); ``CloseReason/encoded()`` (at most 125 bytes, the code first,
    /// the message cut at a character boundary and as long as fits, reproducing any valid payload of up to 125
    /// bytes). Input: the payload.
    /// - Parameter payload: The fuzz input.
    package static func closePayload(_ payload: [UInt8]) throws(Failure) {
        let code = payload.count >= 2 ? UInt16(payload[0]) << 8 | UInt16(payload[1]) : 0
        let spec: CloseVerdict
        let sdk: CloseVerdict
        if payload.isEmpty {
            (spec, sdk) = (.noCode, .noCode)
        } else if payload.count == 1 {
            (spec, sdk) = (.reject(1002), .reject(1002))
        } else {
            let reason = payload[2...]
            if !Self.specAllowsOnWire(code) {
                spec = .reject(1002)
            } else if let text = String(validating: reason, as: UTF8.self) {
                spec = .accept(code: code, message: text)
            } else {
                spec = .reject(1007)
            }
            if !CloseReason.Code(code).isValidOnWire {
                sdk = .reject(1002)
            } else if reason.withUnsafeBytes({ UTF8Validator.validate($0) }) {
                sdk = .accept(code: code, message: String(decoding: reason, as: UTF8.self))
            } else {
                sdk = .reject(1007)
            }
        }
        try check(sdk == spec, "payload \(payload.prefix(8)): SDK pieces say \(sdk), the RFC says \(spec)")

        // The lenient reader.
        let lenient = CloseReason(decoding: payload)
        try check(
            Frame(kind: .close, data: payload).readReason() == lenient,
            "readReason differs from CloseReason(decoding:)"
        )
        if payload.count < 2 {
            try check(lenient == nil, "a \(payload.count)-byte payload decoded to \(String(describing: lenient))")
        } else {
            try check(lenient?.code.rawValue == code, "decoded code \(String(describing: lenient?.code)) != \(code)")
            if case .accept(_, let message) = spec {
                try check(lenient?.message == message, "lenient message differs from the strict one")
            }
            _ = lenient?.description
        }

        // Encoding: the payload's own reason, and an arbitrary message made of its bytes.
        if case .accept(let code, let message) = spec {
            let encoded = CloseReason(code: code, message: message).encoded()
            if payload.count <= 125 {
                try check(encoded == payload, "a valid payload re-encodes differently")
            }
            try Self.checkEncodedClose(encoded, code: code, message: message)
            try check(Frame.close(CloseReason(code: code, message: message)).data == encoded, "Frame.close differs")
        }
        let message = String(decoding: payload.dropFirst(2), as: UTF8.self)
        try Self.checkEncodedClose(CloseReason(code: code, message: message).encoded(), code: code, message: message)
    }

    /// Checks ``CloseReason/encoded()`` output: 2 to 125 bytes, the code in network byte order, then the longest
    /// prefix of the message's UTF-8 that ends at a character boundary and fits; and that it decodes back.
    /// - Parameters:
    ///   - encoded: The encoded payload.
    ///   - code: The reason's code.
    ///   - message: The reason's message.
    static func checkEncodedClose(_ encoded: [UInt8], code: UInt16, message: String) throws(Failure) {
        try check(encoded.count >= 2 && encoded.count <= 125, "encoded close payload has \(encoded.count) bytes")
        try check(encoded[0] == UInt8(code >> 8) && encoded[1] == UInt8(code & 0xFF), "encoded code bytes")
        let text = Array(encoded[2...])
        var expected: [UInt8] = []
        for scalar in message.unicodeScalars {
            let utf8 = Array(String(scalar).utf8)
            if expected.count + utf8.count > 123 { break }
            expected += utf8
        }
        try check(text == expected, "encoded message is \(text.count) bytes, expected the \(expected.count)-byte cut")
        try check(
            CloseReason(decoding: encoded) == CloseReason(code: code, message: String(decoding: text, as: UTF8.self)),
            "encoded close payload does not decode back"
        )
    }

    // MARK: - (5) UTF-8 validator, differential against the standard library

    /// Fuzz target 5: ``UTF8Validator`` against `String(validating:as:)`.
    ///
    /// Input: byte 0 gives the number of split points (0...7), the next bytes give them (each byte scaled to the
    /// data length); the rest is the data, fed in the pieces between the split points.
    ///
    /// Invariants: ``UTF8Validator/validate(_:)`` agrees with the standard library; fed piece by piece, `feed`
    /// returns `false` exactly from the piece that contains the byte after which the standard library can no
    /// longer complete the input (fail fast), ``UTF8Validator/isInvalid`` says the same, and
    /// ``UTF8Validator/isAtCharacterBoundary`` holds exactly when the input so far is valid; after
    /// ``UTF8Validator/reset()`` the validator judges the whole data like a new one.
    /// - Parameter input: The fuzz input.
    package static func utf8Validator(_ input: [UInt8]) throws(Failure) {
        var reader = Input(input)
        let splitCount = Int(reader.byte() & 7)
        let splitBytes = (0..<splitCount).map { _ in reader.byte() }
        let data = reader.rest()
        let splits = splitBytes.map { Int($0) * data.count / 255 }.sorted()

        let valid = Self.stdlibValid(data)
        try check(
            data.withUnsafeBytes { UTF8Validator.validate($0) } == valid,
            "validate says \(!valid), the standard library \(valid), for \(data.count) bytes"
        )
        let failLength = Self.stdlibFailLength(data)
        var validator = UTF8Validator()
        var fed = 0
        for end in splits + [data.count] where end >= fed {
            let accepted = data[fed..<end].withUnsafeBytes { validator.feed($0) }
            fed = end
            let expectedInvalid = failLength.map { $0 <= fed } ?? false
            try check(
                accepted == !expectedInvalid && validator.isInvalid == expectedInvalid,
                "after \(fed) bytes feed says \(accepted), isInvalid \(validator.isInvalid); the standard library "
                    + "fails at length \(String(describing: failLength))"
            )
            try check(
                validator.isAtCharacterBoundary == Self.stdlibValid(data[..<fed]),
                "after \(fed) bytes isAtCharacterBoundary is \(validator.isAtCharacterBoundary)"
            )
        }
        validator.reset()
        let again = data.withUnsafeBytes { validator.feed($0) }
        try check(
            again == (failLength == nil) && validator.isAtCharacterBoundary == valid,
            "after reset the validator judges the data differently"
        )
    }
}

#if !FUZZING
/// Replays the fuzz seeds and the kept crash inputs through ``FuzzHarness`` (Docs/Fuzzing.md).
@Suite("Fuzz regressions")
struct FuzzRegressionTests {
    /// The repository root, from this file's path.
    static let root = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
        .deletingLastPathComponent()

    /// The files of one target's seed corpus (Fuzz/corpus/<target>) and regression inputs
    /// (Tests/Fixtures/fuzz-regressions/<target>), sorted.
    /// - Parameter target: A fuzz target's name.
    static func inputs(for target: String) -> [URL] {
        let folders = [
            root.appendingPathComponent("Fuzz/corpus/\(target)"),
            root.appendingPathComponent("Tests/Fixtures/fuzz-regressions/\(target)"),
        ]
        return folders.flatMap { folder in
            let names = (try? FileManager.default.contentsOfDirectory(atPath: folder.path)) ?? []
            return names.filter { !$0.hasPrefix(".") }.sorted().map { folder.appendingPathComponent($0) }
        }
    }

    /// Every seed and regression input of every WSCore target passes its oracle.
    @Test("Seeds and regression inputs pass the fuzz oracles", arguments: FuzzHarness.targets.map(\.name))
    func replay(target: String) throws {
        let oracle = try #require(FuzzHarness.targets.first { $0.name == target }?.oracle)
        let files = Self.inputs(for: target)
        #expect(!files.isEmpty, "no seed corpus for \(target) under Fuzz/corpus")
        for file in files {
            let bytes = [UInt8](try Data(contentsOf: file))
            do {
                try oracle(bytes)
            } catch {
                Issue.record("\(file.lastPathComponent) (\(target)): \(error)")
            }
        }
    }
}
#endif
