import Testing
import TextCoding

/// The shared ASCII helpers behind percent escapes, JSON escapes and header values.
@Suite("ASCII on bytes", .timeLimit(.minutes(3)))
struct ASCIITests {
    @Test func hexDigitsAreExactlyThoseOfBothCases() {
        let lower = Array("0123456789abcdef".utf8)
        let upper = Array("0123456789ABCDEF".utf8)
        for byte in UInt8.min...UInt8.max {
            let expected = (lower.firstIndex(of: byte) ?? upper.firstIndex(of: byte)).map(UInt8.init)
            #expect(ASCII.hexValue(byte) == expected, "byte \(byte)")
        }
    }

    @Test func blanksAreSpaceAndTabOnly() {
        #expect(ASCII.trimmingBlanks(Array(" \t a b\t ".utf8)).elementsEqual("a b".utf8))
        #expect(ASCII.trimmingBlanks(Array(" \t ".utf8)).isEmpty)
        #expect(ASCII.trimmingBlanks(Array("\na\r".utf8)).elementsEqual("\na\r".utf8), "newlines are not blanks")
    }

    @Test func caseIsFoldedForLettersOnly() {
        #expect(ASCII.equalsIgnoringCase(Array("TEXT/Html".utf8), "text/html"))
        #expect(ASCII.equalsIgnoringCase(Array("BeArEr".utf8), "bearer"))
        #expect(!ASCII.equalsIgnoringCase(Array("text/htm".utf8), "text/html"), "shorter")
        #expect(!ASCII.equalsIgnoringCase(Array("text\u{0F}html".utf8), "text/html"), "0x0F | 0x20 is '/', not a letter's case")
        #expect(!ASCII.equalsIgnoringCase(Array("bearer".utf8).map { $0 ^ 0x80 }, "bearer"))
    }
}
