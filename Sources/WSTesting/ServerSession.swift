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
    /// permessage-deflate, when it was negotiated.
    private let deflate: (any WebSocketExtension)?
    private let maxMessageSize: Int
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

    init(
        request: RecordedRequest, channel: Channel, maxMessageSize: Int, leftover: [UInt8],
        deflate: (any WebSocketExtension)? = nil
    ) {
        self.request = request
        self.channel = channel
        self.deflate = deflate
        self.maxMessageSize = maxMessageSize
        var decoder = FrameDecoder(maxFrameSize: maxMessageSize, role: .server)
        if deflate != nil { decoder.allowedReservedBits = .rsv1 }
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
    /// - Throws: `WebSocketError` (`WebSocketError.Code.protocolViolation`,
    ///   `WebSocketError.Code.invalidUTF8`, `WebSocketError.Code.messageTooBig`, or
    ///   `WebSocketError.Code.connectionLost` when reading fails).
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
                let compressed = self.deflate != nil && parsed.reservedBits.contains(.rsv1)
                guard var frame = try reader.assembler.push(parsed, validateUTF8: !compressed) else { continue }
                if let deflate = self.deflate, frame.rsv1 {
                    let context = WebSocketExtensionContext(maxMessageSize: self.maxMessageSize)
                    do {
                        frame = try deflate.processIncoming(frame, context: context)
                    } catch let error as WebSocketError {
                        throw ProtocolViolation(error.closeCode ?? .protocolError, error.message)
                    }
                    if frame.kind == .text && String(validating: frame.data, as: UTF8.self) == nil {
                        throw ProtocolViolation(.invalidPayload, "a compressed text message is not valid UTF-8")
                    }
                }
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
    /// - Throws: `WebSocketError` with `WebSocketError.Code.sessionClosed` after a close frame was sent, or
    ///   `WebSocketError.Code.connectionLost` when writing fails.
    public func send(_ frame: Frame) throws {
        try self.write(frame, onlyBeforeClose: true)
    }

    /// Sends a text message.
    /// - Parameter text: The message.
    /// - Throws: `WebSocketError` as ``send(_:)-(Frame)`` does.
    public func send(_ text: String) throws {
        try self.send(Frame.text(text))
    }

    /// Sends a binary message.
    /// - Parameter bytes: The message.
    /// - Throws: `WebSocketError` as ``send(_:)-(Frame)`` does.
    public func send(_ bytes: [UInt8]) throws {
        try self.send(Frame.binary(bytes))
    }

    /// Writes raw bytes to the connection, bypassing framing, for misbehaviour tests (a bad opcode, a masked
    /// server frame, a truncated header, ...). Works even after a close frame was sent.
    /// - Parameter bytes: The bytes to write.
    /// - Throws: `WebSocketError` with `WebSocketError.Code.connectionLost` when writing fails.
    public func sendRaw(_ bytes: [UInt8]) throws {
        try self.output.withLock { _ throws(WebSocketError) in
            try self.writeLocked(bytes)
        }
    }

    // MARK: Misbehaving

    /// A kind of malformed frame for ``sendMalformedFrame(_:)``; each one breaks RFC 6455 so that the client
    /// must fail the session with close code 1002 (protocol error).
    public enum MalformedFrame: Sendable, Hashable, CaseIterable {
        /// A frame with the reserved data opcode 0x3.
        case reservedOpcode
        /// A text frame with RSV1 set although no extension was negotiated.
        case reservedBits
        /// A ping frame without the FIN bit (control frames must not be fragmented).
        case fragmentedControlFrame
        /// A ping frame with a 126-byte payload (control frames carry at most 125).
        case oversizedControlFrame
        /// A continuation frame with no message started.
        case unexpectedContinuation
        /// A close frame whose payload is a single byte.
        case truncatedClosePayload
    }

    /// Sends a frame that breaks the protocol in the given way (see ``MalformedFrame``).
    /// - Parameter kind: How the frame is malformed; ``MalformedFrame/reservedOpcode`` by default.
    /// - Throws: `WebSocketError` with `WebSocketError.Code.connectionLost` when writing fails.
    public func sendMalformedFrame(_ kind: MalformedFrame = .reservedOpcode) throws {
        let bytes: [UInt8] =
            switch kind {
            case .reservedOpcode: Self.rawFrame(Opcode(rawValue: 0x3)!, [])
            case .reservedBits: Self.rawFrame(.text, reservedBits: .rsv1, Array("x".utf8))
            case .fragmentedControlFrame: Self.rawFrame(.ping, fin: false, [1])
            case .oversizedControlFrame: Self.rawFrame(.ping, [UInt8](repeating: 0, count: 126))
            case .unexpectedContinuation: Self.rawFrame(.continuation, [1])
            case .truncatedClosePayload: Self.rawFrame(.close, [0x03])
            }
        try self.sendRaw(bytes)
    }

    /// Sends `frame` masked, as only a client may (a server's frames must not be masked): the client must fail
    /// the session with 1002.
    /// - Parameter frame: The frame to send; a text frame "masked" by default.
    /// - Throws: `WebSocketError` with `WebSocketError.Code.connectionLost` when writing fails.
    public func sendMasked(_ frame: Frame = .text("masked")) throws {
        var bytes: [UInt8] = []
        FrameEncoder.encode(frame, maskingKey: MaskingKey(0x37, 0xFA, 0x21, 0x3D), into: &bytes)
        try self.sendRaw(bytes)
    }

    /// Sends a final text frame whose payload is not valid UTF-8 (`bytes`, by default a UTF-16 surrogate
    /// encoded as UTF-8): the client must fail the session with 1007.
    /// - Parameter bytes: The payload; it should not be valid UTF-8.
    /// - Throws: `WebSocketError` with `WebSocketError.Code.connectionLost` when writing fails.
    public func sendInvalidUTF8(_ bytes: [UInt8] = [0xCE, 0xBA, 0xE1, 0xBD, 0xB9, 0xCF, 0x83, 0xED, 0xA0, 0x80]) throws
    {
        try self.sendRaw(Self.rawFrame(.text, bytes))
    }

    /// Sends only the header of a binary frame that declares a `length`-byte payload, and no payload: a
    /// client whose frame limit is below `length` must fail the session with 1009 from the header alone.
    /// - Parameter length: The declared payload length (sent with the 64-bit length form when over 65,535).
    /// - Throws: `WebSocketError` with `WebSocketError.Code.connectionLost` when writing fails.
    public func sendOversizedFrameHeader(length: Int) throws {
        var bytes: [UInt8] = [0x80 | Opcode.binary.rawValue]
        if length < 126 {
            bytes.append(UInt8(length))
        } else if length < 65536 {
            bytes += [126, UInt8(length >> 8), UInt8(length & 0xFF)]
        } else {
            bytes.append(127)
            bytes += (0..<8).reversed().map { UInt8(truncatingIfNeeded: length >> ($0 * 8)) }
        }
        try self.sendRaw(bytes)
    }

    /// Sends the first `sentBytes` bytes of a binary frame of `payloadLength` bytes, then drops the TCP
    /// connection without a close frame: the client sees an abnormal closure (1006,
    /// `WebSocketError.Code.connectionLost`).
    /// - Parameters:
    ///   - payloadLength: The payload length the frame declares.
    ///   - sentBytes: How many bytes of the frame (header included) go out before the drop.
    /// - Throws: `WebSocketError` with `WebSocketError.Code.connectionLost` when writing fails.
    public func dropMidFrame(payloadLength: Int = 1000, sentBytes: Int = 300) throws {
        let frame = Self.rawFrame(.binary, [UInt8](repeating: 7, count: payloadLength))
        try self.sendRaw(Array(frame.prefix(max(1, min(sentBytes, frame.count - 1)))))
        usleep(50_000)  // let the bytes leave before the reset
        self.closeSocket()
    }

    /// Never answers the client's close frame: reads and discards whatever arrives until the client drops
    /// the connection (or `timeout` passes, or the server stops), then drops it too. Use it after
    /// ``receive()`` returned the client's close frame, to make the client's close timeout run out.
    /// - Parameter timeout: The longest wait; `nil` waits until the client or ``WebSocketTestServer/stop()``
    ///   ends the connection.
    public func waitForDisconnect(timeout: Duration? = nil) {
        let deadline = timeout.map { ContinuousClock.now + $0 }
        self.reader.withLock { reader in
            reader.buffer.withUnsafeMutableBytes { buffer in
                while let count = try? self.channel.read(into: buffer, until: deadline), count > 0 {}
            }
            reader.ended = true
        }
        self.abortSocket()
    }

    /// A frame with the given header flags and an unmasked payload, whether or not they are valid together.
    private static func rawFrame(
        _ opcode: Opcode, fin: Bool = true, reservedBits: Frame.ReservedBits = [], _ payload: [UInt8]
    ) -> [UInt8] {
        var bytes: [UInt8] = [(fin ? 0x80 : 0) | reservedBits.rawValue | opcode.rawValue]
        if payload.count < 126 {
            bytes.append(UInt8(payload.count))
        } else if payload.count < 65536 {
            bytes += [126, UInt8(payload.count >> 8), UInt8(payload.count & 0xFF)]
        } else {
            bytes.append(127)
            bytes += (0..<8).reversed().map { UInt8(truncatingIfNeeded: payload.count >> ($0 * 8)) }
        }
        return bytes + payload
    }

    private func write(_ frame: Frame, onlyBeforeClose: Bool) throws(WebSocketError) {
        try self.output.withLock { closeSent throws(WebSocketError) in
            if closeSent && onlyBeforeClose {
                throw WebSocketError(.sessionClosed, "a close frame was already sent on this connection")
            }
            if frame.kind == .close { closeSent = true }
            // Compressed under the output lock: with context takeover, wire order must equal compression order.
            let frame = try self.compressedIfNegotiated(frame)
            var bytes: [UInt8] = []
            bytes.reserveCapacity(frame.data.count + 10)
            FrameEncoder.encode(frame, maskingKey: nil, into: &bytes)
            try self.writeLocked(bytes)
        }
    }

    /// The frame compressed with permessage-deflate when it was negotiated and the frame is a whole message.
    private func compressedIfNegotiated(_ frame: Frame) throws(WebSocketError) -> Frame {
        guard let deflate = self.deflate, frame.kind == .text || frame.kind == .binary, frame.fin,
            frame.reservedBits.isEmpty
        else { return frame }
        do {
            return try deflate.processOutgoing(
                frame, context: WebSocketExtensionContext(maxMessageSize: self.maxMessageSize))
        } catch {
            throw WebSocketError(.extensionFailure, "compressing a message failed: \(error)", underlying: error)
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
    /// - Throws: `WebSocketError` with `WebSocketError.Code.connectionLost` when the close frame cannot
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
        } catch  where error.code == .sessionClosed {
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
