import Testing
import WSCore

@Suite("Opcode")
struct OpcodeTests {
    /// The opcodes RFC 6455 section 5.2 defines, with their values and names.
    static let defined: [(opcode: Opcode, value: UInt8, name: String)] = [
        (.continuation, 0x0, "continuation"), (.text, 0x1, "text"), (.binary, 0x2, "binary"),
        (.close, 0x8, "close"), (.ping, 0x9, "ping"), (.pong, 0xA, "pong"),
    ]

    @Test("the defined opcodes have the values and names of RFC 6455 section 5.2")
    func definedOpcodes() {
        for (opcode, value, name) in Self.defined {
            #expect(opcode.rawValue == value)
            #expect(Opcode(rawValue: value) == opcode)
            #expect(opcode.description == name)
            #expect(!opcode.isReserved)
            #expect(opcode.isControl == (value >= 0x8))
        }
    }

    @Test("all 16 values are representable; reserved ones are 0x3-0x7 and 0xB-0xF and print as unknown")
    func everyValue() throws {
        let reserved: Set<UInt8> = [0x3, 0x4, 0x5, 0x6, 0x7, 0xB, 0xC, 0xD, 0xE, 0xF]
        for value in UInt8(0)...0xF {
            let opcode = try #require(Opcode(rawValue: value))
            #expect(opcode.rawValue == value)
            #expect(opcode.isReserved == reserved.contains(value), "opcode \(value)")
            #expect(opcode.isControl == (value >= 0x8), "opcode \(value)")
        }
        #expect(Opcode(rawValue: 0x3)!.description == "unknownNonControl(0x3)")
        #expect(Opcode(rawValue: 0xB)!.description == "unknownControl(0xB)")
        #expect(Opcode(rawValue: 0xF)!.description == "unknownControl(0xF)")
    }

    @Test("an opcode is one byte, like the UInt8 it replaces in parsed frames")
    func layout() {
        #expect(MemoryLayout<Opcode>.size == 1)
    }

    @Test("a value above 0xF is not an opcode")
    func outOfRange() {
        #expect(Opcode(rawValue: 0x10) == nil)
        #expect(Opcode(rawValue: 0x81) == nil)
        #expect(Opcode(rawValue: 0xFF) == nil)
    }

    @Test("the opcode of a first header byte ignores FIN and RSV1-3")
    func fromFirstByte() {
        #expect(Opcode(firstByte: 0x81) == .text)
        #expect(Opcode(firstByte: 0xF9) == .ping)
        #expect(Opcode(firstByte: 0x70) == .continuation)
        #expect(Opcode(firstByte: 0x8B).rawValue == 0xB)
    }

    @Test("frame kinds and opcodes convert both ways; the public Frame.Kind API keeps its wire values")
    func frameKinds() {
        let kinds: [(kind: Frame.Kind, value: UInt8)] = [
            (.continuation, 0x0), (.text, 0x1), (.binary, 0x2), (.close, 0x8), (.ping, 0x9), (.pong, 0xA),
        ]
        for (kind, value) in kinds {
            #expect(Opcode(kind).rawValue == value)
            #expect(kind.opcode == value)
            #expect(Frame.Kind(opcode: value) == kind)
            #expect(Frame.Kind(Opcode(rawValue: value)!) == kind)
            #expect(kind.isControl == (value >= 0x8))
        }
        for value: UInt8 in [0x3, 0x4, 0x5, 0x6, 0x7, 0xB, 0xC, 0xD, 0xE, 0xF] {
            #expect(Frame.Kind(Opcode(rawValue: value)!) == nil, "opcode \(value)")
            #expect(Frame.Kind(opcode: value) == nil, "opcode \(value)")
        }
        #expect(Frame.Kind(opcode: 0x11) == nil)
        #expect(Frame.Kind(opcode: 0x81) == nil)
    }
}
