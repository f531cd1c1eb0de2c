import Synchronization

// Streaming receive: a message handed over chunk by chunk as its fragments arrive (Docs/Streaming.md).

/// A message received as a stream: its kind, known from its first frame, and its bytes as an `AsyncSequence` of
/// chunks, each handed over as soon as its fragment arrived. What ``WebSocketSession/receiveStreamingMessage()``
/// returns.
///
/// ```swift
/// let message = try await session.receiveStreamingMessage()
/// for try await chunk in message.chunks { try file.write(contentsOf: chunk) }
/// ```
///
/// Text chunks are valid UTF-8 each, never cut inside a character. Read ``chunks`` once, to its end (or call
/// ``discard()``): the next message is handed over only after this one, and
/// ``WebSocketSession/receiveStreamingMessage()`` skips what is left of it. If the server breaks the protocol in
/// the middle of the message, or the connection drops, iterating ``chunks`` throws the session's
/// ``WebSocketError`` (with the same close code as whole-message receive).
public struct WebSocketStreamingMessage: Sendable {
    /// `.text` or `.binary`.
    public let kind: Frame.Kind
    let cursor: StreamCursor

    /// The message's bytes, chunk by chunk (no empty chunks); ends after the last fragment. Iterate it once.
    public var chunks: Chunks { Chunks(cursor: self.cursor) }

    /// The text chunks of a text message as strings (each a complete run of characters).
    public var textChunks: some AsyncSequence<String, any Error> & Sendable {
        self.chunks.map { String(decoding: $0, as: UTF8.self) }
    }

    /// Reads and drops the rest of the message, so the next one can be received.
    /// - Throws: The session's ``WebSocketError`` if it fails before the message ends.
    nonisolated(nonsending) public func discard() async throws {
        var iterator = self.chunks.makeAsyncIterator()
        while try await iterator.next() != nil {}
    }

    /// Reads the rest of the message into one array (for messages known to be small).
    /// - Parameter maxBytes: The most bytes to accept.
    /// - Returns: The bytes.
    /// - Throws: ``WebSocketError/Code/messageTooBig`` (the rest of the message is then left unread) or the
    ///   session's ``WebSocketError``.
    nonisolated(nonsending) public func collect(upTo maxBytes: Int) async throws -> [UInt8] {
        var bytes: [UInt8] = []
        for try await chunk in self.chunks {
            guard chunk.count <= maxBytes - bytes.count else {
                throw WebSocketError(.messageTooBig, "the streamed message is longer than \(maxBytes) bytes")
            }
            bytes += chunk
        }
        return bytes
    }

    /// The chunks of a streamed message.
    public struct Chunks: AsyncSequence, Sendable {
        /// Each element is the next bytes of the message.
        public typealias Element = [UInt8]
        let cursor: StreamCursor

        /// Creates an iterator.
        public func makeAsyncIterator() -> AsyncIterator { AsyncIterator(cursor: self.cursor) }

        /// Iterates the chunks.
        public struct AsyncIterator: AsyncIteratorProtocol {
            let cursor: StreamCursor
            /// The next chunk, or `nil` after the last.
            nonisolated(nonsending) public mutating func next() async throws -> [UInt8]? {
                try await self.cursor.next()
            }
        }
    }
}

/// Where one streamed message stands; shared by the message's copies and the session (which skips its rest when the
/// next message is asked for).
final class StreamCursor: Sendable {
    private enum State {
        /// The first chunk, not yet handed over (empty: none), and whether it was the whole message.
        case first([UInt8], isLast: Bool)
        /// Between chunks.
        case reading
        /// The last chunk was handed over.
        case finished
        /// The next message was asked for before this one was read.
        case superseded
    }

    let session: WebSocketSession
    private let state: Mutex<State>

    init(session: WebSocketSession, first: Frame) {
        self.session = session
        self.state = Mutex(.first(first.data, isLast: first.fin))
    }

    /// Whether the message's last chunk has been handed over (or it was given up).
    var isDone: Bool {
        self.state.withLock {
            switch $0 {
            case .finished, .superseded: true
            case .first, .reading: false
            }
        }
    }

    /// Marks the message as given up after its rest was skipped.
    func supersede() {
        self.state.withLock { $0 = .superseded }
    }

    /// The next non-empty chunk, or `nil` after the last.
    nonisolated(nonsending) func next() async throws -> [UInt8]? {
        let start = self.state.withLock { state -> Result<[UInt8]?, WebSocketError>? in
            switch state {
            case .first(let bytes, let isLast):
                state = isLast ? .finished : .reading
                if !bytes.isEmpty { return .success(bytes) }
                return isLast ? .success(nil) : nil
            case .reading:
                return nil
            case .finished:
                return .success(nil)
            case .superseded:
                return .failure(
                    WebSocketError(
                        .invalidArgument,
                        "this streamed message was skipped: receiveStreamingMessage() was called again before it was read to its end"
                    ))
            }
        }
        if let start { return try start.get() }
        let incoming = self.session.incoming
        while true {
            let frame = try await incoming.receive()
            switch frame.kind {
            case .ping, .pong:
                continue
            case .continuation:
                if frame.fin { self.state.withLock { $0 = .finished } }
                if !frame.data.isEmpty { return frame.data }
                if frame.fin { return nil }
            case .close:
                self.state.withLock { $0 = .finished }
                let reason = frame.readReason()
                throw WebSocketError(
                    .sessionClosed,
                    "the server closed the session (\(reason.map { "\($0)" } ?? "no status")) in the middle of a streamed message",
                    closeCode: reason?.code ?? .noStatus, frame: frame)
            case .text, .binary:
                // The session does not deliver these within a message; someone took frames from `incoming`.
                self.state.withLock { $0 = .finished }
                throw WebSocketError(
                    .invalidArgument,
                    "a new message began before the streamed one ended: read a streamed message only through its chunks"
                )
            }
        }
    }
}

/// The session's streaming bookkeeping: the message being streamed in, and whether a streamed send runs.
struct StreamingState {
    /// The last message ``WebSocketSession/receiveStreamingMessage()`` handed over, while its user holds it. Weak:
    /// the cursor refers to the session, so a strong reference here would keep both alive forever once the session
    /// ended. A message nobody holds needs no skipping: `receiveStreamingMessage` passes over continuation frames.
    weak var current: StreamCursor?
    /// Whether a streamed send is in progress (one at a time).
    var sending = false
    /// ``WebSockets/Configuration/maxMessageSize``: the most ``WebSocketSession/receiveMessage()`` collects from the
    /// fragments of a streamed message.
    var maxMessageSize = 1 << 20
}

extension WebSocketSession {
    /// Receives the next text or binary message as a stream of chunks, skipping pings, pongs and the close frame.
    ///
    /// With ``WebSockets/Configuration/streamsIncomingMessages`` set, each chunk is handed over as its fragment
    /// arrives and the message is never held whole: memory stays bounded by ``WebSockets/Configuration/maxFrameSize``
    /// and the incoming buffer limits whatever the message's size, and while the chunks are not read the session
    /// stops reading from the network (backpressure). Without it the message is received whole (up to
    /// ``WebSockets/Configuration/maxMessageSize``) and handed over as one chunk.
    ///
    /// If the last streamed message was not read to its end, its rest is skipped first.
    ///
    /// - Returns: The message: its kind and its chunks.
    /// - Throws: What ``receiveMessage()`` throws.
    nonisolated(nonsending) public func receiveStreamingMessage() async throws -> WebSocketStreamingMessage {
        if let previous = self.streaming.withLock({ $0.current.take() }), !previous.isDone {
            var rest = WebSocketStreamingMessage(kind: .binary, cursor: previous).chunks.makeAsyncIterator()
            while try await rest.next() != nil {}
            previous.supersede()
        }
        let incoming = self.incoming
        while true {
            let frame = try await incoming.receive()
            // Continuations here are the rest of a message someone began through `incoming`.
            guard frame.kind == .text || frame.kind == .binary else { continue }
            let cursor = StreamCursor(session: self, first: frame)
            self.streaming.withLock { $0.current = cursor }
            return WebSocketStreamingMessage(kind: frame.kind, cursor: cursor)
        }
    }

    /// The rest of a message whose first fragment `first` was received through ``incoming`` in streaming mode,
    /// collected into one frame of at most ``WebSockets/Configuration/maxMessageSize`` bytes.
    @usableFromInline
    nonisolated(nonsending) func collectFragments(_ first: Frame) async throws -> Frame {
        let limit = self.streaming.withLock { $0.maxMessageSize }
        var message = Frame(kind: first.kind, fin: true, data: first.data)
        let cursor = StreamCursor(session: self, first: Frame(kind: first.kind, fin: false, data: []))
        while let chunk = try await cursor.next() {
            guard chunk.count <= limit - message.data.count else {
                await self.connection.close(
                    CloseReason(code: .messageTooBig, message: "message of more than \(limit) bytes"), waitForEnd: false
                )
                throw WebSocketError(
                    .messageTooBig,
                    "message of more than \(limit) bytes (raise WebSockets.Configuration.maxMessageSize, or receive it with receiveStreamingMessage())",
                    closeCode: .messageTooBig)
            }
            message.data += chunk
        }
        message.dataIsValidUTF8 = first.kind == .text
        return message
    }
}
