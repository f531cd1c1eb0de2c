// A text message the session validated is marked, so that readText() does not validate it again; the mark never
// outlives a change of the payload and never changes equality.
import Testing
import WSCore

@Suite("Validated text frames")
struct ValidatedTextTests {
    @Test("the assembler marks the text messages it validated, whole or fragmented, and nothing else")
    func assemblerMarks() throws {
        var assembler = MessageAssembler(maxMessageSize: 1 << 20, maxFragments: 10)
        let whole = try #require(
            try assembler.push(ParsedFrame(fin: true, opcode: .text, payload: Array("héllo".utf8)), validateUTF8: true))
        #expect(whole.dataIsValidUTF8)
        #expect(try whole.readText() == "héllo")

        #expect(
            try assembler.push(ParsedFrame(fin: false, opcode: .text, payload: [0x68, 0xC3]), validateUTF8: true) == nil
        )
        let fragmented = try #require(
            try assembler.push(ParsedFrame(fin: true, opcode: .continuation, payload: [0xA9]), validateUTF8: true))
        #expect(fragmented.dataIsValidUTF8)
        #expect(try fragmented.readText() == "hé")

        let unchecked = try #require(
            try assembler.push(ParsedFrame(fin: true, opcode: .text, payload: Array("x".utf8)), validateUTF8: false))
        #expect(!unchecked.dataIsValidUTF8)
        let bytes = try #require(
            try assembler.push(ParsedFrame(fin: true, opcode: .binary, payload: Array("x".utf8)), validateUTF8: true))
        #expect(!bytes.dataIsValidUTF8)
    }

    @Test("changing the payload clears the mark, so readText validates again")
    func mutationClearsMark() throws {
        var assembler = MessageAssembler(maxMessageSize: 1 << 20, maxFragments: 10)
        var frame = try #require(
            try assembler.push(ParsedFrame(fin: true, opcode: .text, payload: Array("ok".utf8)), validateUTF8: true))
        #expect(frame.dataIsValidUTF8)
        frame.data.append(0xFF)
        #expect(!frame.dataIsValidUTF8)
        let error = try #require(throws: WebSocketError.self) { try frame.readText() }
        #expect(error.code == .invalidUTF8)
        frame.data = Array("again".utf8)
        #expect(try frame.readText() == "again")
    }

    @Test("readText trusts the mark: a marked payload is not validated again")
    func markIsTrusted() throws {
        // Only the session sets the mark, on payloads it validated; forged here on invalid bytes to show that
        // readText does not look at them again (the string is not used).
        var frame = Frame(kind: .text, data: [0x61, 0xFF])
        #expect(throws: WebSocketError.self) { try frame.readText() }
        frame.dataIsValidUTF8 = true
        #expect(throws: Never.self) { _ = try frame.readText() }
    }

    @Test("the mark is not part of equality or hashing")
    func equality() throws {
        var assembler = MessageAssembler(maxMessageSize: 1 << 20, maxFragments: 10)
        let marked = try #require(
            try assembler.push(ParsedFrame(fin: true, opcode: .text, payload: Array("same".utf8)), validateUTF8: true))
        let plain = Frame.text("same")
        #expect(marked.dataIsValidUTF8 && !plain.dataIsValidUTF8)
        #expect(marked == plain)
        #expect(Set([marked, plain]).count == 1)
        #expect(marked != Frame.binary(Array("same".utf8)))
    }

    @Test("a frame is still 16 bytes")
    func size() {
        #expect(MemoryLayout<Frame>.size <= 16)
    }
}
