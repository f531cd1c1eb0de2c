import WSCore

// The fuzz oracle for permessage-deflate's bounded inflation, and the test that replays fuzz inputs through it.
//
// Like Tests/WSCoreTests/FuzzRegressionTests.swift, this file has two users: the libFuzzer target FuzzInflate in
// Fuzz/ compiles it through a symlink, with FUZZING defined and WSExtensions' Zlib.swift in the same module; the
// normal test run replays Fuzz/corpus/FuzzInflate/ and Tests/Fixtures/fuzz-regressions/FuzzInflate/ through it.
// Docs/Fuzzing.md describes the input layout.
#if !FUZZING
import Foundation
import Testing
@testable import WSExtensions
#endif

/// The fuzz oracle for ``ZlibInflater``'s limit (and ``ZlibDeflater``, in round-trip mode).
package enum InflateFuzzHarness {
    /// A violated invariant: what was expected and what happened.
    package struct Failure: Error, CustomStringConvertible {
        /// The violated invariant, with the values involved.
        package let description: String
    }

    /// The fuzz target by name (the executable in Fuzz/ and its corpus folder), with its oracle.
    package static let targets: [(name: String, oracle: @Sendable ([UInt8]) throws(Failure) -> Void)] = [
        ("FuzzInflate", inflate)
    ]

    /// The limits byte 0 picks from (small, so that the limit is what gets tested).
    static let limits = [0, 1, 16, 100, 256, 1000, 4096, 65_536]
    /// The limit of the unlimited reference inflation: no input of a fuzz run's size legitimately gets near it.
    static let referenceLimit = 1 << 20

    /// Throws a ``Failure`` with `message` unless `condition` holds.
    /// - Parameters:
    ///   - condition: The invariant.
    ///   - message: What went wrong, built only when it did.
    @inline(__always)
    static func check(_ condition: Bool, _ message: @autoclosure () -> String) throws(Failure) {
        if !condition { throw Failure(description: message()) }
    }

    /// Decompresses one message, as a `Result`, and checks that the stream's output counter moved by at most
    /// `limit + 1` bytes (what the limit allows zlib to write before inflation stops).
    /// - Parameters:
    ///   - inflater: The stream.
    ///   - payload: The compressed message.
    ///   - limit: The message size limit.
    ///   - keepWindow: Context takeover.
    static func decompress(
        _ inflater: ZlibInflater, _ payload: [UInt8], limit: Int, keepWindow: Bool
    ) throws(Failure) -> Result<[UInt8], WebSocketError> {
        let before = inflater.totalOut
        let result = Result { () throws(WebSocketError) in
            try inflater.decompress(payload, limit: limit, keepWindow: keepWindow)
        }
        // total_out restarts from 0 after a final block, so this bounds what zlib wrote in this call either way.
        try check(
            inflater.totalOut <= before + limit + 1,
            "zlib wrote \(inflater.totalOut - before) bytes for a \(limit)-byte limit"
        )
        return result
    }

    /// Fuzz target 6: ``ZlibInflater/decompress(_:limit:keepWindow:)`` with a small limit.
    ///
    /// Input: byte 0 picks the window (8 + bits 0–2), context takeover (bit 3), round-trip mode (bit 4) and the
    /// limit (bits 5–7, from ``limits``); byte 1 gives the number of messages (1 + bits 0–1) and, in round-trip
    /// mode, the compression level (bits 2–5, modulo 10); one byte per further message gives its split point;
    /// the rest is split into the messages.
    ///
    /// Raw mode (the bytes are compressed payloads): a message of up to `limit` bytes is returned, never more; the
    /// result equals a reference inflation of the same stream with a 1 MiB limit when that is within `limit`, and
    /// is `messageTooBig` (1009) when the reference is bigger; corrupt data fails with `protocolViolation` (1002)
    /// or, having hit the limit first, 1009; nothing else (no 1011). Round-trip mode (the bytes are messages): each
    /// is compressed with ``ZlibDeflater`` (same window, at least 9 bits) and inflated back: equal when within the
    /// limit, 1009 when not. In both modes zlib never writes more than `limit + 1` bytes for a message.
    /// - Parameter input: The fuzz input.
    package static func inflate(_ input: [UInt8]) throws(Failure) {
        var index = 0
        /// The next input byte, or 0 once the input is used up.
        func byte() -> UInt8 {
            guard index < input.count else { return 0 }
            defer { index += 1 }
            return input[index]
        }
        let c0 = byte()
        let c1 = byte()
        let windowBits = 8 + Int(c0 & 7)
        let keepWindow = c0 & 0x08 != 0
        let roundTrip = c0 & 0x10 != 0
        let limit = Self.limits[Int(c0 >> 5)]
        let messageCount = Int(c1 & 3) + 1
        let level = Int(c1 >> 2 & 0x0F) % 10
        let splitBytes = (1..<messageCount).map { _ in byte() }
        let data = index < input.count ? Array(input[index...]) : []
        var cuts = splitBytes.map { Int($0) * data.count / 255 }.sorted()
        cuts = [0] + cuts + [data.count]
        let messages = (0..<messageCount).map { Array(data[cuts[$0]..<cuts[$0 + 1]]) }

        let inflater: ZlibInflater
        let reference: ZlibInflater
        do {
            inflater = try ZlibInflater(windowBits: windowBits)
            reference = try ZlibInflater(windowBits: windowBits)
        } catch {
            throw Failure(description: "inflateInit2 with window \(windowBits) failed: \(error)")
        }

        if roundTrip {
            let deflater: ZlibDeflater
            do {
                deflater = try ZlibDeflater(level: level, windowBits: windowBits, memoryLevel: 8)
            } catch {
                throw Failure(description: "deflateInit2 (level \(level), window \(windowBits)) failed: \(error)")
            }
            for message in messages {
                let compressed: [UInt8]
                do {
                    compressed = try deflater.compress(message, removingTail: true)
                } catch {
                    throw Failure(description: "deflate of \(message.count) bytes failed: \(error)")
                }
                switch try Self.decompress(inflater, compressed, limit: limit, keepWindow: keepWindow) {
                case .success(let output):
                    try check(message.count <= limit, "a \(message.count)-byte message passed the \(limit)-byte limit")
                    try check(
                        output == message, "round trip of \(message.count) bytes gave \(output.count) other bytes"
                    )
                case .failure(let error):
                    try check(
                        message.count > limit && error.code == .messageTooBig && error.closeCode == .messageTooBig,
                        "round trip of \(message.count) bytes (limit \(limit)) failed: \(error)"
                    )
                    return
                }
                if !keepWindow {
                    deflater.reset()
                    inflater.reset()
                }
            }
            return
        }

        for message in messages {
            let expected = try Self.decompress(reference, message, limit: Self.referenceLimit, keepWindow: keepWindow)
            let actual = try Self.decompress(inflater, message, limit: limit, keepWindow: keepWindow)
            switch (expected, actual) {
            case (.success(let full), .success(let output)):
                try check(output.count <= limit, "\(output.count) bytes returned for a \(limit)-byte limit")
                try check(output == full, "limited inflation differs from the reference")
            case (.success(let full), .failure(let error)):
                try check(
                    full.count > limit && error.code == .messageTooBig && error.closeCode == .messageTooBig,
                    "the reference inflates \(full.count) bytes, the \(limit)-byte limit failed with \(error)"
                )
                return
            case (.failure(let referenceError), .success(let output)):
                throw Failure(
                    description: "reference failed (\(referenceError)); limited inflation gave \(output.count) bytes"
                )
            case (.failure(let referenceError), .failure(let error)):
                let corrupt = referenceError.code == .protocolViolation && referenceError.closeCode == .protocolError
                let tooBig = referenceError.code == .messageTooBig
                try check(corrupt || tooBig, "reference inflation failed with \(referenceError)")
                let allowed = error.code == .messageTooBig || (corrupt && error.code == .protocolViolation)
                try check(allowed, "limited inflation failed with \(error); the reference with \(referenceError)")
                return
            }
            if !keepWindow {
                inflater.reset()
                reference.reset()
            }
        }
    }
}

#if !FUZZING
/// Replays the FuzzInflate seeds and kept crash inputs through ``InflateFuzzHarness`` (Docs/Fuzzing.md).
@Suite("Inflate fuzz regressions")
struct InflateFuzzRegressionTests {
    /// Every seed and regression input of FuzzInflate passes the oracle.
    @Test("Seeds and regression inputs pass the inflate fuzz oracle")
    func replay() throws {
        let root = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
            .deletingLastPathComponent()
        for (target, oracle) in InflateFuzzHarness.targets {
            var files: [URL] = []
            for folder in ["Fuzz/corpus/\(target)", "Tests/Fixtures/fuzz-regressions/\(target)"] {
                let url = root.appendingPathComponent(folder)
                let names = (try? FileManager.default.contentsOfDirectory(atPath: url.path)) ?? []
                files += names.filter { !$0.hasPrefix(".") }.sorted().map { url.appendingPathComponent($0) }
            }
            #expect(!files.isEmpty, "no seed corpus for \(target) under Fuzz/corpus")
            for file in files {
                do {
                    try oracle([UInt8](try Data(contentsOf: file)))
                } catch {
                    Issue.record("\(file.lastPathComponent) (\(target)): \(error)")
                }
            }
        }
    }
}
#endif
