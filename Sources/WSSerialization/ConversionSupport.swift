// Shared by the converters: moving bytes between Foundation's `Data` and a frame's `[UInt8]` payload, and turning
// Codable errors into short, readable messages.

import WSCore

#if canImport(FoundationEssentials)
import FoundationEssentials
#else
import Foundation
#endif

/// Byte moves between `Data` (what Foundation's encoders produce and decoders read) and `[UInt8]` (a frame's payload).
enum PayloadBytes {
    /// The bytes of `data` as a new array: exactly one `memcpy`, no intermediate buffer and no reallocation.
    @inline(__always)
    static func array(from data: Data) -> [UInt8] {
        [UInt8](unsafeUninitializedCapacity: data.count) { buffer, initialized in
            initialized = data.copyBytes(to: buffer)
        }
    }

    /// `bytes` as `Data`, for a decoder's input: one copy. (A no-copy `Data(bytesNoCopy:)` view was measured to
    /// gain nothing measurable, see Docs/Serialization.md, and would let a decoder that keeps its input past the
    /// call read freed memory; the copy is the safe choice.)
    @inline(__always)
    static func data(from bytes: [UInt8]) -> Data {
        Data(bytes)
    }
}

/// Readable descriptions of `EncodingError` and `DecodingError`, with the coding path where the problem is.
enum CodableErrorText {
    /// A one-line description of a Codable error, e.g. `missing key "user" at messages[2]`.
    static func describe(_ error: any Error) -> String {
        if let error = error as? DecodingError {
            switch error {
            case .typeMismatch(let type, let context):
                return "type mismatch\(at(context.codingPath)): expected \(type); \(details(context))"
            case .valueNotFound(let type, let context):
                return "missing value\(at(context.codingPath)): expected \(type); \(details(context))"
            case .keyNotFound(let key, let context):
                return "missing key \"\(key.stringValue)\"\(at(context.codingPath))"
            case .dataCorrupted(let context):
                return "invalid data\(at(context.codingPath)): \(details(context))"
            @unknown default:
                return "\(error)"
            }
        }
        if let error = error as? EncodingError {
            switch error {
            case .invalidValue(let value, let context):
                return "invalid value \(value)\(at(context.codingPath)): \(details(context))"
            @unknown default:
                return "\(error)"
            }
        }
        return "\(error)"
    }

    /// ` at a.b[2]`, or nothing at the top level.
    private static func at(_ path: [any CodingKey]) -> String {
        guard !path.isEmpty else { return "" }
        var text = ""
        for key in path {
            if let index = key.intValue, key.stringValue == "Index \(index)" {
                text += "[\(index)]"
            } else {
                text += text.isEmpty ? key.stringValue : ".\(key.stringValue)"
            }
        }
        return " at \(text)"
    }

    /// The context's debug description, with the underlying parser error when there is one.
    private static func details(_ context: DecodingError.Context) -> String {
        var text = context.debugDescription
        if let underlying = context.underlyingError {
            let inner = "\(underlying)"
            if !text.contains(inner) { text += " (\(inner))" }
        }
        return text
    }

    private static func details(_ context: EncodingError.Context) -> String {
        var text = context.debugDescription
        if let underlying = context.underlyingError { text += " (\(underlying))" }
        return text
    }
}

extension WebSocketError {
    /// A `WebSocketError.Code.conversion` error for a value of type `T` that could not be encoded.
    static func encoding<T>(_ type: T.Type, as format: String, _ error: any Error) -> WebSocketError {
        WebSocketError(
            .conversion, "cannot encode \(T.self) as \(format): \(CodableErrorText.describe(error))",
            underlying: error
        )
    }

    /// A `WebSocketError.Code.conversion` error for a frame that could not be decoded as `T`; carries the frame.
    static func decoding<T>(_ type: T.Type, as format: String, from frame: Frame, _ error: any Error) -> WebSocketError
    {
        WebSocketError(
            .conversion,
            "cannot decode \(T.self) from the \(format) in a \(frame.kind) frame (\(frame.data.count) bytes): "
                + CodableErrorText.describe(error),
            frame: frame, underlying: error
        )
    }

    /// A `WebSocketError.Code.conversion` error for a frame of a kind the converter does not read.
    static func unreadable<T>(_ type: T.Type, converter: String, reads: String, frame: Frame) -> WebSocketError {
        WebSocketError(
            .conversion, "\(converter) reads \(reads), not a \(frame.kind) frame; cannot decode \(T.self) from it",
            frame: frame
        )
    }
}
