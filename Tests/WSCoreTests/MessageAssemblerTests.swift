import Testing
import WSCore

private func text(_ string: String, fin: Bool = true, rsv: Frame.ReservedBits = []) -> ParsedFrame {
    ParsedFrame(fin: fin, reservedBits: rsv, opcode: .text, payload: Array(string.utf8))
}

private func binary(_ bytes: [UInt8], fin: Bool = true, rsv: Frame.ReservedBits = []) -> ParsedFrame {
    ParsedFrame(fin: fin, reservedBits: rsv, opcode: .binary, payload: bytes)
}

private func continuation(_ bytes: [UInt8], fin: Bool) -> ParsedFrame {
    ParsedFrame(fin: fin, opcode: .continuation, payload: bytes)
}

/// Pushes frames in order; returns the messages produced and the first error.
private func push(
    _ frames: [ParsedFrame],
    into assembler: inout MessageAssembler,
    validateUTF8: Bool = true
) -> (messages: [Frame], error: ProtocolViolation?) {
    var messages: [Frame] = []
    for frame in frames {
        do {
            if let message = try assembler.push(frame, validateUTF8: validateUTF8) { messages.append(message) }
        } catch {
            return (messages, error)
        }
    }
    return (messages, nil)
}

private func run(
    _ frames: [ParsedFrame],
    maxMessageSize: Int = 1 << 20,
    maxFragments: Int = 100,
    validateUTF8: Bool = true
) -> (messages: [Frame], error: ProtocolViolation?) {
    var assembler = MessageAssembler(maxMessageSize: maxMessageSize, maxFragments: maxFragments)
    return push(frames, into: &assembler, validateUTF8: validateUTF8)
}

@Suite("Message assembler")
struct MessageAssemblerTests {
    @Test("an unfragmented frame becomes a message without copying its payload")
    func singleFrameIsMoved() throws {
        var assembler = MessageAssembler(maxMessageSize: 1 << 20, maxFragments: 10)
        let frame = binary([1, 2, 3, 4], rsv: .rsv1)
        let payloadAddress = frame.payload.withUnsafeBufferPointer { $0.baseAddress }
        let message = try #require(try assembler.push(frame, validateUTF8: true))
        #expect(message == Frame(kind: .binary, fin: true, data: [1, 2, 3, 4], reservedBits: .rsv1))
        #expect(message.data.withUnsafeBufferPointer { $0.baseAddress } == payloadAddress)
        #expect(!assembler.isAssembling)

        let textMessage = try #require(try assembler.push(text("héllo"), validateUTF8: true))
        #expect(textMessage.kind == .text)
        #expect(try textMessage.readText() == "héllo")
    }

    @Test("fragments are joined; the message has FIN and the first frame's reserved bits")
    func fragmentsAreJoined() throws {
        var assembler = MessageAssembler(maxMessageSize: 1 << 20, maxFragments: 10)
        #expect(try assembler.push(text("Hel", fin: false, rsv: .rsv1), validateUTF8: true) == nil)
        #expect(assembler.isAssembling)
        #expect(try assembler.push(continuation([], fin: false), validateUTF8: true) == nil)
        #expect(try assembler.push(continuation(Array("lo".utf8), fin: false), validateUTF8: true) == nil)
        let message = try #require(
            try assembler.push(continuation(Array(" wörld".utf8), fin: true), validateUTF8: true))
        #expect(message == Frame(kind: .text, fin: true, data: Array("Hello wörld".utf8), reservedBits: .rsv1))
        #expect(!assembler.isAssembling)

        // The next message starts fresh.
        let result = push([binary([9], fin: false), continuation([8], fin: true)], into: &assembler)
        #expect(result.messages == [Frame(kind: .binary, fin: true, data: [9, 8])])
    }

    @Test("a continuation frame without a message in progress is a protocol error")
    func continuationWithoutStart() {
        let result = run([continuation([1], fin: true)])
        #expect(result.error == ProtocolViolation(.protocolError, "continuation frame without a message to continue"))
        let afterMessage = run([text("done"), continuation([1], fin: false)])
        #expect(afterMessage.messages.count == 1)
        #expect(afterMessage.error?.closeCode == .protocolError)
    }

    @Test(
        "a text or binary frame while a message is in progress is a protocol error", arguments: [Opcode.text, .binary])
    func newMessageDuringFragmentation(opcode: Opcode) throws {
        let result = run([binary([1], fin: false), ParsedFrame(fin: true, opcode: opcode, payload: [0x41])])
        let error = try #require(result.error)
        #expect(error.closeCode == .protocolError)
        #expect(error.message.contains("expected a continuation frame"))
    }

    @Test("control and reserved opcodes are refused", arguments: [Opcode.close, .ping, .pong, Opcode(rawValue: 0x3)!])
    func nonDataOpcodes(opcode: Opcode) {
        #expect(run([ParsedFrame(fin: true, opcode: opcode, payload: [])]).error?.closeCode == .protocolError)
    }

    @Test("message size: exactly the limit passes, one byte more is 1009 (single frame and fragmented)")
    func messageSizeLimit() throws {
        #expect(run([binary([UInt8](repeating: 0, count: 10))], maxMessageSize: 10).messages.count == 1)
        let single = run([binary([UInt8](repeating: 0, count: 11))], maxMessageSize: 10)
        #expect(single.error?.closeCode == .messageTooBig)

        let fragments = [
            binary([1, 2, 3, 4], fin: false), continuation([5, 6, 7], fin: false), continuation([8, 9, 10], fin: true),
        ]
        #expect(run(fragments, maxMessageSize: 10).messages.first?.data == [1, 2, 3, 4, 5, 6, 7, 8, 9, 10])
        let tooBig = run(fragments + [], maxMessageSize: 9)
        let error = try #require(tooBig.error)
        #expect(error.closeCode == .messageTooBig)
        #expect(error.message.contains("more than 9 bytes"))
        // It fails on the fragment that crosses the limit, before FIN.
        let early = run(
            [binary([1, 2, 3, 4], fin: false), continuation([5, 6, 7, 8, 9, 10], fin: false)], maxMessageSize: 9)
        #expect(early.error?.closeCode == .messageTooBig)
    }

    @Test("fragment count: exactly maxFragments passes, one more is 1009")
    func fragmentLimit() throws {
        let three = [binary([1], fin: false), continuation([2], fin: false), continuation([3], fin: true)]
        #expect(run(three, maxFragments: 3).messages.count == 1)
        let error = try #require(run(three, maxFragments: 2).error)
        #expect(error == ProtocolViolation(.messageTooBig, "message has more than 2 fragments"))
        #expect(run([binary([1], fin: false)], maxFragments: 0).error?.closeCode == .messageTooBig)
        #expect(run([binary([1])], maxFragments: 0).messages.count == 1, "an unfragmented message is one frame")
    }

    @Test("invalid UTF-8 in an unfragmented text frame is 1007")
    func invalidSingleFrame() {
        let result = run([ParsedFrame(fin: true, opcode: .text, payload: [0x41, 0xED, 0xA0, 0x80])])
        #expect(result.error == ProtocolViolation(.invalidPayload, "text message is not valid UTF-8"))
        #expect(
            run([ParsedFrame(fin: true, opcode: .text, payload: [0x41, 0xE2])]).error?.closeCode == .invalidPayload)
    }

    @Test("invalid UTF-8 fails fast on the fragment that contains it, before FIN")
    func failFastAcrossFragments() {
        // Autobahn 6.4.x: the first fragment is already unfixable.
        let first = run([ParsedFrame(fin: false, opcode: .text, payload: [0xCE, 0xBA, 0xF4, 0x90])])
        #expect(first.error?.closeCode == .invalidPayload)
        // The invalid byte arrives in the second fragment, which is not the last.
        let second = run([
            ParsedFrame(fin: false, opcode: .text, payload: [0xCE, 0xBA, 0xF4]),
            continuation([0x90, 0x80], fin: false),
        ])
        #expect(second.error?.closeCode == .invalidPayload)
        #expect(second.messages.isEmpty)
    }

    @Test("a character split across fragments is valid; a message ending mid-character is 1007")
    func splitCharacters() throws {
        let euro: [UInt8] = [0xE2, 0x82, 0xAC]
        let ok = run([
            ParsedFrame(fin: false, opcode: .text, payload: [0x61, euro[0]]),
            continuation([euro[1]], fin: false),
            continuation([euro[2], 0x62], fin: true),
        ])
        #expect(try ok.messages.first?.readText() == "a€b")
        let truncated = run([
            ParsedFrame(fin: false, opcode: .text, payload: [0x61, euro[0]]), continuation([euro[1]], fin: true),
        ])
        #expect(
            truncated.error
                == ProtocolViolation(.invalidPayload, "text message ends in the middle of a UTF-8 character"))
    }

    @Test("validateUTF8 false skips validation; binary messages are never validated")
    func validationCanBeSkipped() {
        let compressed = [
            ParsedFrame(fin: false, reservedBits: .rsv1, opcode: .text, payload: [0xFF, 0xC0]),
            continuation([0xED], fin: true),
        ]
        let result = run(compressed, validateUTF8: false)
        #expect(result.error == nil)
        #expect(result.messages == [Frame(kind: .text, fin: true, data: [0xFF, 0xC0, 0xED], reservedBits: .rsv1)])
        #expect(run([binary([0xFF, 0xFE], fin: false), continuation([0xC0], fin: true)]).messages.count == 1)
    }

    @Test("after an error or reset the assembler accepts a new message")
    func recoversAfterErrorAndReset() {
        var assembler = MessageAssembler(maxMessageSize: 100, maxFragments: 10)
        #expect(push([binary([1], fin: false), text("x")], into: &assembler).error?.closeCode == .protocolError)
        #expect(!assembler.isAssembling)
        #expect(push([text("ok")], into: &assembler).messages.count == 1)
        _ = push([text("par", fin: false)], into: &assembler)
        #expect(assembler.isAssembling)
        assembler.reset()
        #expect(!assembler.isAssembling)
        #expect(push([continuation([1], fin: true)], into: &assembler).error?.closeCode == .protocolError)
    }

    @Test("empty fragments and empty messages are fine")
    func emptyMessages() {
        let result = run([text("", fin: false), continuation([], fin: false), continuation([], fin: true), binary([])])
        #expect(result.messages == [Frame(kind: .text, data: []), Frame(kind: .binary, data: [])])
    }
}
