// Message-level receiving: whole text and binary messages, with pings, pongs and the close frame left out.

/// A whole WebSocket message: text or binary. What ``WebSocketSession/receiveMessage()`` and
/// ``WebSocketSession/messages`` deliver, without the control frames (pings, pongs, close) that
/// ``WebSocketSession/incoming`` also carries.
///
/// ```swift
/// switch try await session.receiveMessage() {
/// case .text(let text): print(text)
/// case .binary(let bytes): print("\(bytes.count) bytes")
/// }
/// ```
public enum WebSocketMessage: Sendable, Hashable {
    /// A text message.
    case text(String)
    /// A binary message.
    case binary([UInt8])

    /// The message as a frame, ready to send (e.g. to echo it).
    public var frame: Frame {
        switch self {
        case .text(let text): Frame.text(text)
        case .binary(let bytes): Frame(kind: .binary, data: bytes)
        }
    }
}

extension WebSocketSession {
    /// Receives the next text or binary message, skipping pings, pongs and the close frame. The equivalent of
    /// `URLSessionWebSocketTask.receive()` or Python websockets' `recv()`.
    ///
    /// - Returns: The message.
    /// - Throws: ``WebSocketError``. Once the session has ended: ``WebSocketError/Code/sessionClosed``, with
    ///   ``WebSocketError/isNormalClosure`` `true` when it ended with a normal close handshake (1000, 1001 or no
    ///   status code) and the close code in ``WebSocketError/closeCode``; the same as
    ///   ``WebSocketIncoming/receive()``. If the session failed, the failure (protocol violation, lost connection,
    ///   pong timeout).
    @inlinable
    nonisolated(nonsending) public func receiveMessage() async throws -> WebSocketMessage {
        let frame = try await self.receiveDataFrame()
        return frame.kind == .text ? .text(try frame.readText()) : .binary(frame.data)
    }

    /// Receives the next message, which must be text; pings, pongs and the close frame are skipped.
    ///
    /// - Returns: The text.
    /// - Throws: ``WebSocketError``: ``WebSocketError/Code/unexpectedMessageKind`` if a binary message arrives
    ///   instead (it is consumed, and handed back in ``WebSocketError/frame``; the session stays open);
    ///   otherwise what ``receiveMessage()`` throws.
    @inlinable
    nonisolated(nonsending) public func receiveText() async throws -> String {
        let frame = try await self.receiveDataFrame()
        guard frame.kind == .text else { throw Self.unexpected(frame, expected: .text) }
        return try frame.readText()
    }

    /// Receives the next message, which must be binary; pings, pongs and the close frame are skipped.
    ///
    /// - Returns: The bytes.
    /// - Throws: ``WebSocketError``: ``WebSocketError/Code/unexpectedMessageKind`` if a text message arrives
    ///   instead (it is consumed, and handed back in ``WebSocketError/frame``; the session stays open);
    ///   otherwise what ``receiveMessage()`` throws.
    @inlinable
    nonisolated(nonsending) public func receiveBinary() async throws -> [UInt8] {
        let frame = try await self.receiveDataFrame()
        guard frame.kind == .binary else { throw Self.unexpected(frame, expected: .binary) }
        return frame.data
    }

    /// The text and binary messages from the server, without pings, pongs and the close frame, as an
    /// `AsyncSequence`:
    ///
    /// ```swift
    /// for try await message in session.messages {
    ///     if case .text(let text) = message { print(text) }
    /// }
    /// ```
    ///
    /// The sequence ends when the session ends with a close handshake (whatever the code; see
    /// ``closeReason``), like iterating ``incoming``; iteration throws ``WebSocketError`` if the session fails.
    public var messages: WebSocketMessages { WebSocketMessages(session: self) }

    /// Sends a text or binary message.
    /// - Parameter message: The message.
    /// - Throws: ``WebSocketError`` (``WebSocketError/Code/sessionClosed``) once the session is closing.
    @inlinable
    nonisolated(nonsending) public func send(_ message: WebSocketMessage) async throws {
        switch message {
        case .text(let text): try await self.send(text)
        case .binary(let bytes): try await self.send(bytes)
        }
    }

    /// The next text or binary frame from ``incoming``; throws as ``WebSocketIncoming/receive()`` does at the end.
    // Inlinable, as `incoming.receive()` is: inlined into the caller it costs no async frame of its own.
    @inlinable
    nonisolated(nonsending) func receiveDataFrame() async throws -> Frame {
        let incoming = self.incoming
        while true {
            let frame = try await incoming.receive()
            // After the close frame `receive()` throws `sessionClosed` with the close code: skip it too.
            if frame.kind == .text || frame.kind == .binary {
                // In streaming mode a message may arrive as its first fragment: collect the rest.
                return frame.fin ? frame : try await self.collectFragments(frame)
            }
        }
    }

    /// The error for a message of the wrong kind; it carries the message.
    @usableFromInline
    static func unexpected(_ frame: Frame, expected: Frame.Kind) -> WebSocketError {
        WebSocketError(
            .unexpectedMessageKind,
            "expected a \(expected) message but received a \(frame.kind) message (\(frame.data.count) bytes); "
                + "use receiveMessage() to accept either kind, the message is in this error's frame",
            frame: frame
        )
    }
}

/// The text and binary messages received on a session, as an `AsyncSequence`; see ``WebSocketSession/messages``.
///
/// Pings, pongs and the close frame are left out. The sequence ends when the session ends with a close
/// handshake and throws ``WebSocketError`` if the session fails. Several tasks may receive; each message goes to
/// one of them.
public struct WebSocketMessages: AsyncSequence, Sendable {
    /// Each element is a whole message.
    public typealias Element = WebSocketMessage
    @usableFromInline let session: WebSocketSession

    /// Creates an iterator.
    public func makeAsyncIterator() -> AsyncIterator { AsyncIterator(session: self.session) }

    /// Iterates the messages.
    public struct AsyncIterator: AsyncIteratorProtocol {
        @usableFromInline let session: WebSocketSession

        /// The next message, or `nil` after the last.
        @inlinable
        nonisolated(nonsending) public mutating func next() async throws -> WebSocketMessage? {
            var frames = self.session.incoming.makeAsyncIterator()
            while var frame = try await frames.next() {
                if !frame.fin && (frame.kind == .text || frame.kind == .binary) {
                    frame = try await self.session.collectFragments(frame)
                }
                switch frame.kind {
                case .text: return .text(try frame.readText())
                case .binary: return .binary(frame.data)
                default: continue
                }
            }
            return nil
        }
    }
}
