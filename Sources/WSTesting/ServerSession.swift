import Glibc
import Synchronization
public import WSCore

/// One accepted and upgraded WebSocket connection of a ``WebSocketTestServer``, handed to the server's
/// ``WebSocketTestServer/Handler``.
///
/// Receive on the connection's own thread (the handler's); sending is safe from any thread. Frames the server
/// sends are unmasked; frames from the client must be masked.
///
/// ```swift
/// let server = try WebSocketTestServer.start(handler: .custom { session in
///     while let frame = try session.receive() {
///         if frame.kind == .text { try session.send("got \(try frame.readText())") }
///         if frame.kind == .close { try session.close(frame.readReason() ?? CloseReason()) }
///     }
/// })
/// ```
public final class ServerSession: Sendable {
    /// How long ``close(_:)`` waits for the client's close frame and then for the client to close TCP.
    public static let closeTimeout: Duration = .seconds(2)

    /// The upgrade request of this connection.
    public let request: RecordedRequest

    let channel: Channel
    private let reader: Mutex<Reader>
    /// Whether a close frame was sent; writes happen while it is held, so nothing follows a close frame.
    private let output = Mutex<Bool>(false)
    /// Whether the socket was closed (gracefully or not).
    private let socketClosed = Atomic<Bool>(false)

    /// The receiving side: the decoder, the message assembler and the read buffer.
    private struct Reader {
        var decoder: FrameDecoder
        var assembler: MessageAssembler
        var buffer: [UInt8]
        var closeReceived = false
        var ended = false
    }

    init(request: RecordedRequest, channel: Channel, maxMessageSize: Int, leftover: [UInt8]) {
        self.request = request
        self.channel = channel
        var decoder = FrameDecoder(maxFrameSize: maxMessageSize, role: .server)
        leftover.withUnsafeBytes { decoder.append($0) }
        self.reader = Mutex(
            Reader(
                decoder: decoder,
                assembler: MessageAssembler(maxMessageSize: maxMessageSize, maxFragments: 1 << 20),
                buffer: [UInt8](repeating: 0, count: 64 * 1024)))
    }

    /// Whether the TCP connection has been closed by this side (after ``close(_:)``, ``closeSocket()``, a
    /// protocol violation, or the end of the stream).
    public var isClosed: Bool { self.socketClosed.load(ordering: .acquiring) }

    // MARK: Receiving

    /// Waits for the next whole message or control frame from the client.
    ///
    /// Fragmented messages are reassembled; text is checked to be UTF-8. Pings are answered with a pong
    /// automatically and returned too, as are pongs and the client's close frame. After a close frame or the end
    /// of the stream, returns `nil`.
    ///
    /// When the client breaks the protocol (an unmasked frame, bad opcode, an oversized message, invalid
    /// UTF-8, ...), the session sends a close frame with the matching code (1002, 1007, 1009), closes the
    /// connection and throws.
    /// - Returns: The next frame, or `nil` when the connection has closed.
    /// - Throws: ``WebSocketError`` (``WebSocketError/Code/protocolViolation``,
    ///   ``WebSocketError/Code/invalidUTF8``, ``WebSocketError/Code/messageTooBig``, or
    ///   ``WebSocketError/Code/connectionLost`` when reading fails).
    public func receive() throws -> Frame? {
        try self.reader.withLock { reader throws(WebSocketError) -> Frame? in
            if reader.closeReceived || reader.ended || self.isClosed { return nil }
            do {
                guard let frame = try self.nextFrame(&reader, until: nil) else {
                    reader.ended = true
                    self.abortSocket()
                    return nil
                }
                switch frame.kind {
                case .ping:
                    try? self.write(.pong(frame.data), onlyBeforeClose: true)
                case .close:
                    reader.closeReceived = true
                default:
                    break
                }
                return frame
            } catch let violation as ProtocolViolation {
                throw self.fail(&reader, code: violation.closeCode, message: violation.message)
            } catch {
                reader.ended = true
                self.abortSocket()
                throw WebSocketError(.connectionLost, "reading from the client failed: \(error)")
            }
        }
    }

    /// The next whole message or control frame, reading as needed; `nil` at the end of the stream.
    /// Throws ``ProtocolViolation`` or ``ChannelError``.
    private func nextFrame(_ reader: inout Reader, until deadline: ContinuousClock.Instant?) throws -> Frame? {
        while true {
            if let parsed = try reader.decoder.nextFrame() {
                if parsed.isControl, let kind = parsed.kind {
                    // Control frames arrive between fragments and never go through the assembler.
                    if kind == .close { try Self.validateClosePayload(parsed.payload) }
                    return Frame(kind: kind, fin: true, data: parsed.payload, reservedBits: parsed.reservedBits)
                }
                guard let frame = try reader.assembler.push(parsed, validateUTF8: true) else { continue }
                return frame
            }
            let count = try reader.buffer.withUnsafeMutableBytes { buffer in
                try self.channel.read(into: buffer, until: deadline)
            }
            if count == 0 { return nil }
            reader.buffer.withUnsafeBytes { buffer in
                reader.decoder.append(UnsafeRawBufferPointer(rebasing: buffer[..<count]))
            }
        }
    }

    /// Checks a close frame's payload (RFC 6455 section 5.5.1 and 7.4).
    private static func validateClosePayload(_ payload: [UInt8]) throws(ProtocolViolation) {
        if payload.isEmpty { return }
        guard payload.count >= 2 else {
            throw ProtocolViolation(.protocolError, "a close frame payload of 1 byte")
        }
        let code = CloseReason.Code(UInt16(payload[0]) << 8 | UInt16(payload[1]))
        guard code.isValidOnWire else {
            throw ProtocolViolation(.protocolError, "close code \(code.rawValue) is not allowed")
        }
        guard String(validating: payload[2...], as: UTF8.self) != nil else {
            throw ProtocolViolation(.invalidPayload, "the close reason is not valid UTF-8")
        }
    }

    /// Fails the connection: sends a close frame with `code` (if none was sent yet), closes the connection and
    /// returns the error to throw.
    private func fail(_ reader: inout Reader, code: CloseReason.Code, message: String) -> WebSocketError {
        try? self.write(.close(CloseReason(code: code, message: message)), onlyBeforeClose: true)
        reader.ended = true
        self.finish(&reader, until: .now + Self.closeTimeout)
        let errorCode: WebSocketError.Code =
            switch code {
            case .invalidPayload: .invalidUTF8
            case .messageTooBig: .messageTooBig
            default: .protocolViolation
            }
        return WebSocketError(errorCode, "the client broke the protocol: \(message)", closeCode: code)
    }

    // MARK: Sending

    /// Sends a frame as it is, unmasked: any kind, FIN flag and reserved bits (so tests can send fragments or
    /// invalid frames). Sending a close frame ends sending.
    /// - Parameter frame: The frame to send.
    /// - Throws: ``WebSocketError`` with ``WebSocketError/Code/sessionClosed`` after a close frame was sent, or
    ///   ``WebSocketError/Code/connectionLost`` when writing fails.
    public func send(_ frame: Frame) throws {
        try self.write(frame, onlyBeforeClose: true)
    }

    /// Sends a text message.
    /// - Parameter text: The message.
    /// - Throws: ``WebSocketError`` as ``send(_:)-(Frame)`` does.
    public func send(_ text: String) throws {
        try self.send(Frame.text(text))
    }

    /// Sends a binary message.
    /// - Parameter bytes: The message.
    /// - Throws: ``WebSocketError`` as ``send(_:)-(Frame)`` does.
    public func send(_ bytes: [UInt8]) throws {
        try self.send(Frame.binary(bytes))
    }

    /// Writes raw bytes to the connection, bypassing framing, for misbehaviour tests (a bad opcode, a masked
    /// server frame, a truncated header, ...). Works even after a close frame was sent.
    /// - Parameter bytes: The bytes to write.
    /// - Throws: ``WebSocketError`` with ``WebSocketError/Code/connectionLost`` when writing fails.
    public func sendRaw(_ bytes: [UInt8]) throws {
        try self.output.withLock { _ throws(WebSocketError) in
            try self.writeLocked(bytes)
        }
    }

    private func write(_ frame: Frame, onlyBeforeClose: Bool) throws(WebSocketError) {
        var bytes: [UInt8] = []
        bytes.reserveCapacity(frame.data.count + 10)
        FrameEncoder.encode(frame, maskingKey: nil, into: &bytes)
        try self.output.withLock { closeSent throws(WebSocketError) in
            if closeSent && onlyBeforeClose {
                throw WebSocketError(.sessionClosed, "a close frame was already sent on this connection")
            }
            if frame.kind == .close { closeSent = true }
            try self.writeLocked(bytes)
        }
    }

    private func writeLocked(_ bytes: [UInt8]) throws(WebSocketError) {
        if self.isClosed { throw WebSocketError(.connectionLost, "the connection is closed") }
        do {
            try bytes.withUnsafeBytes { buffer in try self.channel.write(buffer, until: nil) }
        } catch {
            throw WebSocketError(.connectionLost, "writing to the client failed: \(error)")
        }
    }

    // MARK: Closing

    /// Closes the session: sends a close frame with `reason` (unless one was sent already), waits up to
    /// ``closeTimeout`` for the client's close frame (discarding messages that arrive meanwhile), then closes
    /// the TCP connection. Does nothing when the connection is already closed.
    /// - Parameter reason: The close code and message; 1000 NORMAL by default.
    /// - Throws: ``WebSocketError`` with ``WebSocketError/Code/connectionLost`` when the close frame cannot
    ///   be written (the connection is closed all the same).
    public func close(_ reason: CloseReason = CloseReason(code: .normal)) throws {
        try self.closeHandshake(.close(reason))
    }

    /// Answers the client's close frame with the same code and message (an empty close frame when it had no
    /// code), then closes the connection; used by the built-in handlers.
    func answerClose(_ clientClose: Frame) throws {
        try self.closeHandshake(.close(clientClose.readReason()))
    }

    private func closeHandshake(_ closeFrame: Frame) throws {
        if self.isClosed { return }
        let deadline = ContinuousClock.now + Self.closeTimeout
        var writeError: WebSocketError?
        do {
            try self.write(closeFrame, onlyBeforeClose: true)
        } catch where error.code == .sessionClosed {
            // A close frame was sent already: just finish the handshake.
        } catch {
            writeError = error
        }
        self.reader.withLock { reader in
            if writeError == nil && !reader.closeReceived && !reader.ended {
                while let frame = try? self.nextFrame(&reader, until: deadline) {
                    if frame.kind == .close {
                        reader.closeReceived = true
                        break
                    }
                }
            }
            self.finish(&reader, until: deadline)
        }
        if let writeError { throw writeError }
    }

    /// Closes the TCP connection gracefully (TLS close_notify and FIN), then waits until `deadline` for the client
    /// to close its side, discarding what arrives, so that the client reads everything sent before.
    private func finish(_ reader: inout Reader, until deadline: ContinuousClock.Instant) {
        if self.socketClosed.exchange(true, ordering: .acquiringAndReleasing) { return }
        self.channel.shutdownWrite()
        reader.buffer.withUnsafeMutableBytes { buffer in
            while let count = try? self.channel.read(into: buffer, until: deadline), count > 0 {}
        }
        reader.ended = true
        self.channel.abort()
    }

    /// Drops the TCP connection at once, without a close frame (the client sees an abnormal closure, 1006).
    public func closeSocket() {
        self.abortSocket()
    }

    private func abortSocket() {
        self.socketClosed.store(true, ordering: .releasing)
        self.channel.abort()
    }

    /// For ``WebSocketTestServer/stop()``: sends a 1001 close frame unless a close frame was sent (giving up
    /// after 200 ms when another thread's write does not finish), then drops the connection.
    func shutDownForServerStop() {
        let deadline = ContinuousClock.now + .milliseconds(200)
        var bytes: [UInt8] = []
        FrameEncoder.encode(
            .close(CloseReason(code: .goingAway, message: "server stopping")), maskingKey: nil, into: &bytes)
        while !self.isClosed {
            let done: Bool? = self.output.withLockIfAvailable { closeSent in
                if !closeSent {
                    closeSent = true
                    _ = bytes.withUnsafeBytes { self.channel.tryWrite($0, until: deadline) }
                }
                return true
            }
            if done != nil || ContinuousClock.now >= deadline { break }
            usleep(1000)
        }
        self.abortSocket()
    }

    /// After the handler returned: closes the session if the handler left it open (1000, or 1011 when it
    /// threw).
    func finishAfterHandler(error: (any Error)?) {
        guard !self.isClosed else { return }
        if let error {
            try? self.close(CloseReason(code: .internalError, message: "handler failed: \(error)"))
        } else {
            try? self.close(CloseReason(code: .normal))
        }
    }
}
