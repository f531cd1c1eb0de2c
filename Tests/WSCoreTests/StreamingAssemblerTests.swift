import WSCore

// The streaming assembler: its fuzz oracle (whole-message assembly as the reference) and its unit tests.
//
// Like FuzzRegressionTests.swift, this file has two users: the libFuzzer target FuzzStreamingAssembler compiles it
// through a symlink (Fuzz/Sources/CoreHarness/) with FUZZING defined; the normal test run runs the unit tests and
// replays the seeds in Fuzz/corpus/FuzzStreamingAssembler/ through the oracle.
#if !FUZZING
import Foundation
import Testing
#endif

extension FuzzHarness {
    /// Streaming assembly against whole-message assembly.
    ///
    /// Input: one byte picks the message limit (0: none, else `byte * 8` bytes); then frames, each a control byte
    /// (bits 0–1: 0 continuation, 1 text, 2 binary, 3 text; bit 2: FIN), a length byte, and that many payload
    /// bytes (fewer at the end of the input). So fragment boundaries fall anywhere, and characters are split
    /// anywhere across them.
    ///
    /// Invariants, frame by frame: both assemblers accept or both fail, with the same close code; every text chunk
    /// is complete, valid UTF-8 on its own; when the whole-message assembler completes a message, the streamed
    /// chunks of that message, joined, are its bytes and its kind.
    package static func streamingAssembler(_ input: [UInt8]) throws(Failure) {
        var reader = Input(input)
        let limitByte = Int(reader.byte())
        let limit = limitByte == 0 ? Int.max : limitByte * 8
        var whole = MessageAssembler(maxMessageSize: limit, maxFragments: .max)
        var streaming = StreamingAssembler(maxMessageSize: limitByte == 0 ? nil : limit)
        var streamed: [UInt8] = []
        var streamedKind: Frame.Kind?
        let rest = reader.rest()
        var index = 0
        while index < rest.count {
            let control = rest[index]
            let length = index + 1 < rest.count ? Int(rest[index + 1]) : 0
            let start = min(rest.count, index + 2)
            let end = min(rest.count, start + length)
            index = end
            let opcode: Opcode = [.continuation, .text, .binary, .text][Int(control & 3)]
            let fin = control & 4 != 0
            let frame = ParsedFrame(fin: fin, opcode: opcode, payload: Array(rest[start..<end]))

            let expected: Result<Frame?, ProtocolViolation> = Result { () throws(ProtocolViolation) in
                try whole.push(frame, validateUTF8: true)
            }
            let actual: Result<[UInt8], ProtocolViolation> = Result { () throws(ProtocolViolation) in
                let (kind, isFirst) = try streaming.begin(frame.opcode)
                if isFirst {
                    streamed = []
                    streamedKind = kind
                }
                return try streaming.chunk(frame.payload, fin: frame.fin)
            }
            switch (expected, actual) {
            case (.failure(let e), .failure(let a)):
                try check(e.closeCode == a.closeCode, "close codes differ: whole \(e) streaming \(a)")
                streamed = []
                streamedKind = nil
            case (.failure(let e), .success):
                throw Failure(description: "whole-message assembly failed (\(e)) but streaming accepted the frame")
            case (.success, .failure(let a)):
                throw Failure(description: "streaming failed (\(a)) but whole-message assembly accepted the frame")
            case (.success(let message), .success(let chunk)):
                if streamedKind == .text {
                    try check(stdlibValid(chunk), "a text chunk is not complete UTF-8: \(chunk)")
                }
                streamed += chunk
                try check(
                    streaming.isStreaming == whole.isAssembling || message != nil,
                    "one assembler has a message in progress, the other not")
                if let message {
                    try check(
                        message.kind == streamedKind,
                        "kinds differ: \(message.kind) vs \(String(describing: streamedKind))")
                    try check(message.data == streamed, "streamed bytes differ from the whole message")
                    try check(!streaming.isStreaming, "the streaming assembler did not finish the message")
                    streamed = []
                    streamedKind = nil
                }
            }
        }
    }
}

#if !FUZZING
@Suite("Streaming assembler")
struct StreamingAssemblerTests {
    /// Feeds `frames`; returns the chunks handed over and the first error.
    func run(_ frames: [ParsedFrame], limit: Int? = nil) -> (chunks: [[UInt8]], error: ProtocolViolation?) {
        var assembler = StreamingAssembler(maxMessageSize: limit)
        var chunks: [[UInt8]] = []
        for frame in frames {
            do {
                _ = try assembler.begin(frame.opcode)
                chunks.append(try assembler.chunk(frame.payload, fin: frame.fin))
            } catch {
                return (chunks, error)
            }
        }
        return (chunks, nil)
    }

    @Test("a text message split at every byte pair comes out as complete characters, joined unchanged")
    func utf8SplitEverywhere() throws {
        let text = Array("aé€😀z€é😀".utf8)
        for first in 0...text.count {
            for second in first...text.count {
                let frames = [
                    ParsedFrame(fin: false, opcode: .text, payload: Array(text[..<first])),
                    ParsedFrame(fin: false, opcode: .continuation, payload: Array(text[first..<second])),
                    ParsedFrame(fin: true, opcode: .continuation, payload: Array(text[second...])),
                ]
                let (chunks, error) = self.run(frames)
                #expect(error == nil)
                #expect(chunks.joined().elementsEqual(text), "split at \(first), \(second)")
                for chunk in chunks {
                    #expect(String(validating: chunk, as: UTF8.self) != nil, "split at \(first), \(second): \(chunk)")
                }
            }
        }
    }

    @Test("binary fragments pass through as they are")
    func binaryPassesThrough() {
        let (chunks, error) = self.run([
            ParsedFrame(fin: false, opcode: .binary, payload: [0xFF, 0xC3]),
            ParsedFrame(fin: true, opcode: .continuation, payload: [0xA9]),
        ])
        #expect(error == nil)
        #expect(chunks == [[0xFF, 0xC3], [0xA9]])
    }

    @Test("the close codes of whole-message receive: 1002, 1007, 1009")
    func violations() {
        #expect(
            self.run([ParsedFrame(fin: true, opcode: .continuation, payload: [])]).error?.closeCode == .protocolError)
        #expect(
            self.run([
                ParsedFrame(fin: false, opcode: .text, payload: Array("a".utf8)),
                ParsedFrame(fin: true, opcode: .binary, payload: []),
            ]).error?.closeCode == .protocolError)
        #expect(
            self.run([ParsedFrame(fin: false, opcode: .text, payload: [0xC3, 0x28])]).error?.closeCode
                == .invalidPayload)
        // A message that ends in the middle of a character.
        #expect(
            self.run([
                ParsedFrame(fin: false, opcode: .text, payload: [0x61]),
                ParsedFrame(fin: true, opcode: .continuation, payload: [0xE2, 0x82]),
            ]).error?.closeCode == .invalidPayload)
        let tooBig = self.run(
            [
                ParsedFrame(fin: false, opcode: .binary, payload: [UInt8](repeating: 0, count: 6)),
                ParsedFrame(fin: true, opcode: .continuation, payload: [UInt8](repeating: 0, count: 5)),
            ], limit: 10)
        #expect(tooBig.error?.closeCode == .messageTooBig)
        #expect(tooBig.chunks.count == 1)
    }

    @Test("no limit by default: a message of any length is counted, not refused")
    func noLimit() {
        let frame = ParsedFrame(fin: false, opcode: .binary, payload: [UInt8](repeating: 1, count: 1 << 16))
        let frames =
            [frame]
            + Array(repeating: ParsedFrame(fin: false, opcode: .continuation, payload: frame.payload), count: 100)
        #expect(self.run(frames).error == nil)
    }

    @Test("random messages: the oracle against whole-message assembly holds")
    func randomAgainstWholeAssembly() throws {
        var rng = SplitMix64(seed: 20)
        for _ in 0..<2_000 {
            let count = Int(rng.next() % 200)
            var input: [UInt8] = [UInt8(truncatingIfNeeded: rng.next() % 4)]
            for _ in 0..<count {
                // Mostly valid multi-byte text and small frames, so messages complete; sometimes any byte.
                let r = rng.next() % 10
                if r < 2 {
                    input.append(UInt8(truncatingIfNeeded: rng.next()))
                } else if r < 4 {
                    input.append(contentsOf: Array("é€😀".utf8)[Int(rng.next() % 9)...].prefix(3))
                } else {
                    input.append(UInt8(truncatingIfNeeded: rng.next() % 8))
                }
            }
            try FuzzHarness.streamingAssembler(input)
        }
    }

    @Test("the fuzz seeds pass the oracle")
    func seeds() throws {
        let files = FuzzRegressionTests.inputs(for: "FuzzStreamingAssembler")
        #expect(!files.isEmpty, "no seed corpus under Fuzz/corpus/FuzzStreamingAssembler")
        for file in files {
            try FuzzHarness.streamingAssembler([UInt8](try Data(contentsOf: file)))
        }
    }
}
#endif
