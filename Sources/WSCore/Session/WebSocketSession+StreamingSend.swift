import Synchronization

#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#endif

// Streaming send: a message written as fragments while its producer makes the chunks (Docs/Streaming.md).

extension WebSocketSession {
    /// Sends one message from an asynchronous sequence of chunks, each written as one fragment as soon as the
    /// sequence yields it: a message of any size costs the memory of a few chunks, not of the message.
    ///
    /// Backpressure: when more than ``WebSockets/Configuration/maxOutgoingBufferBytes`` wait to be written, the next
    /// chunk is not asked for until the network has taken them, so a slow server slows the producer. Pings are
    /// answered and keepalive pings sent between the fragments. With permessage-deflate the message is compressed
    /// as one DEFLATE stream, fragment by fragment. Empty chunks are skipped; an empty sequence sends an empty
    /// message.
    ///
    /// A message cannot be abandoned half-sent: once its first fragment is out, if the sequence throws, the task is
    /// cancelled, or a text chunk is not UTF-8, the session is closed with `1011 INTERNAL_ERROR` (the close
    /// handshake starts; this call does not wait for it) and the error is rethrown. Cancelled only while waiting
    /// for room after the last fragment was queued, it throws `CancellationError` and the message is still sent whole. Messages sent on the session by
    /// other tasks while this runs wait until its last fragment is out (fragments of two messages cannot interleave);
    /// pings and pongs go out between the fragments.
    ///
    /// ```swift
    /// try await session.sendStreamingMessage(.binary, from: producer)  // producer: AsyncSequence of [UInt8]
    /// ```
    ///
    /// - Parameters:
    ///   - kind: `.text` (the chunks, joined, must be UTF-8; a character may span chunks) or `.binary`.
    ///   - chunks: The message's bytes in order.
    /// - Throws: ``WebSocketError``: ``WebSocketError/Code/invalidArgument`` for another kind, for text that is not
    ///   UTF-8, or while another streamed send runs; ``WebSocketError/Code/sessionClosed`` once the session is
    ///   closing; the sequence's error; `CancellationError`.
    nonisolated(nonsending) public func sendStreamingMessage<Chunks: AsyncSequence>(
        _ kind: Frame.Kind = .binary, from chunks: Chunks
    ) async throws where Chunks.Element == [UInt8] {
        guard kind == .text || kind == .binary else {
            throw WebSocketError(.invalidArgument, "a streamed message is text or binary, not \(kind)")
        }
        let busy = self.streaming.withLock { state -> Bool in
            defer { state.sending = true }
            return state.sending
        }
        if busy {
            throw WebSocketError(
                .invalidArgument, "another streamed message is being sent on this session; send one at a time")
        }
        defer { self.streaming.withLock { $0.sending = false } }

        var iterator = chunks.makeAsyncIterator()
        var validator = kind == .text ? UTF8Validator() : nil
        var started = false
        do {
            var current = try await iterator.next(isolation: #isolation)
            while true {
                try Task.checkCancellation()
                let next = try await iterator.next(isolation: #isolation)
                // A sequence may end early when its task is cancelled (AsyncStream does): that is not the end.
                if next == nil { try Task.checkCancellation() }
                let chunk = current ?? []
                if chunk.isEmpty && next != nil {
                    current = next
                    continue
                }
                if validator != nil {
                    let valid = chunk.withUnsafeBytes { validator!.feed($0) }
                    if !valid || (next == nil && !validator!.isAtCharacterBoundary) {
                        throw WebSocketError(
                            .invalidArgument, "the chunks of a streamed text message are not valid UTF-8")
                    }
                }
                let frame = Frame(kind: started ? .continuation : kind, fin: next == nil, data: chunk)
                started = true
                do {
                    try await self.send(frame)
                } catch is CancellationError where next == nil {
                    // Cancelled while waiting for room after the last fragment was queued: the message is whole and
                    // will be sent, so the session is not closed.
                    started = false
                    throw CancellationError()
                }
                guard let next else { return }
                current = next
            }
        } catch {
            if started { await self.abandonStreamedSend(error) }
            throw error
        }
    }

    /// Sends a file's contents as one binary message, read and written chunk by chunk with
    /// ``sendStreamingMessage(_:from:)`` (same backpressure, cancellation and failure rules).
    ///
    /// The file is read with blocking `read(2)` calls of `chunkSize` bytes on the calling task's thread; on an
    /// event-loop executor prefer a file on a local disk (or send from a task without that preference).
    /// - Parameters:
    ///   - path: The file's path.
    ///   - chunkSize: Bytes per read and per fragment (default 256 KiB).
    /// - Throws: ``WebSocketError/Code/invalidArgument`` if the file cannot be opened or read (once sending began,
    ///   the session is closed with 1011), or what ``sendStreamingMessage(_:from:)`` throws.
    nonisolated(nonsending) public func sendFile(atPath path: String, chunkSize: Int = 256 << 10) async throws {
        let descriptor = open(path, O_RDONLY | O_CLOEXEC)
        guard descriptor >= 0 else {
            throw WebSocketError(.invalidArgument, "cannot open \(path): \(String(cString: strerror(errno)))")
        }
        defer { Glibc.close(descriptor) }
        try await self.sendFile(descriptor: descriptor, chunkSize: chunkSize)
    }

    /// Sends what is left to read from a file descriptor (a file, pipe or socket, up to its end of file) as one
    /// binary message; see ``sendFile(atPath:chunkSize:)``. The descriptor is not closed.
    /// - Parameters:
    ///   - descriptor: An open, readable descriptor (blocking reads).
    ///   - chunkSize: Bytes per read and per fragment (default 256 KiB).
    /// - Throws: What ``sendFile(atPath:chunkSize:)`` throws.
    nonisolated(nonsending) public func sendFile(descriptor: Int32, chunkSize: Int = 256 << 10) async throws {
        guard chunkSize > 0 else {
            throw WebSocketError(.invalidArgument, "chunkSize must be positive, not \(chunkSize)")
        }
        try await self.sendStreamingMessage(.binary, from: FileChunks(descriptor: descriptor, chunkSize: chunkSize))
    }

    /// How many sends wait for a streamed message being sent to end (for tests).
    package var sendersWaitingForMessageEnd: Int { self.connection.sendersWaitingForMessageEnd }

    /// Closes the session after a streamed send stopped in the middle of its message.
    private nonisolated(nonsending) func abandonStreamedSend(_ error: any Error) async {
        let why = error is CancellationError ? "the task was cancelled" : "\(error)"
        let message = String(
            decoding: Array("message abandoned mid-way: \(why)".utf8.prefix(CloseReason.maxMessageBytes)), as: UTF8.self
        )
        await self.connection.close(CloseReason(code: .internalError, message: message), waitForEnd: false)
    }
}

/// A file descriptor's contents as chunks, read with blocking `read(2)`.
struct FileChunks: AsyncSequence {
    typealias Element = [UInt8]
    let descriptor: Int32
    let chunkSize: Int

    func makeAsyncIterator() -> Iterator { Iterator(descriptor: self.descriptor, chunkSize: self.chunkSize) }

    struct Iterator: AsyncIteratorProtocol {
        let descriptor: Int32
        let chunkSize: Int

        mutating func next() async throws -> [UInt8]? {
            var failure: Int32 = 0
            let chunk = [UInt8](unsafeUninitializedCapacity: self.chunkSize) { buffer, count in
                count = 0
                while count < buffer.count {
                    let n = read(self.descriptor, buffer.baseAddress! + count, buffer.count - count)
                    if n < 0 && errno == EINTR { continue }
                    if n < 0 {
                        failure = errno
                        return
                    }
                    if n == 0 { return }
                    count += n
                }
            }
            if failure != 0 {
                throw WebSocketError(.invalidArgument, "reading the file failed: \(String(cString: strerror(failure)))")
            }
            return chunk.isEmpty ? nil : chunk
        }
    }
}
