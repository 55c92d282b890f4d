import TextCoding
import Connect
import Foundation
import Testing

@Suite("Base64url", .timeLimit(.minutes(3)))
struct Base64URLTests {
    /// Foundation's base64 with the URL alphabet and no padding: the reference to agree with.
    static func reference(_ bytes: [UInt8]) -> String {
        Data(bytes).base64EncodedString()
            .replacingOccurrences(of: "+", with: "-").replacingOccurrences(of: "/", with: "_")
            .replacingOccurrences(of: "=", with: "")
    }

    @Test func agreesWithFoundationBothWaysForEveryLength() {
        var generator = SystemRandomNumberGenerator()
        for length in 0...100 {
            let bytes = (0..<length).map { _ in UInt8.random(in: .min ... .max, using: &generator) }
            let encoded = Base64URL.encodeToString(bytes)
            #expect(encoded == Self.reference(bytes), "length \(length)")
            #expect(Base64URL.decode(encoded.utf8) == bytes, "length \(length)")
        }
        // Every byte value, so every alphabet position is exercised.
        let all = (0...255).map(UInt8.init)
        #expect(Base64URL.encodeToString(all) == Self.reference(all))
        #expect(Base64URL.decode(Self.reference(all).utf8) == all)
    }

    @Test(arguments: ["ab+c", "ab/c", "YQ==", "YQ=", "a", "abcde", "ab c", "YR", "YWJ", "é"])
    func refusesAnythingButCanonicalUnpaddedBase64url(_ text: String) {
        #expect(Base64URL.decode(text.utf8) == nil)
    }

    @Test func decodesTheCanonicalFormsOfShortInputs() {
        #expect(Base64URL.decode("YQ".utf8) == Array("a".utf8))
        #expect(Base64URL.decode("YWI".utf8) == Array("ab".utf8))
        #expect(Base64URL.decode("YWJ".utf8) == nil, "trailing bits set")
        #expect(Base64URL.decode("YWI=".utf8) == nil)
        #expect(Base64URL.decode("YWJj".utf8) == Array("abc".utf8))
        #expect(Base64URL.decode("".utf8) == [])
    }
}
