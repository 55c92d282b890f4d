import TextCoding
import Foundation
import Testing
import TestSupport

@testable import Forge

/// How an invocation token is taken apart before and around its RS256 check: the bearer
/// scheme, strict base64url segments, and the bounded cache of decoded headers.
@Suite("Forge token parsing", .timeLimit(.minutes(3)))
struct ForgeTokenParsingTests {
    @Test func theBearerSchemeIsReadInAnyCaseAndBlanksAreTrimmed() {
        #expect(ForgeTokenVerifier.bearerToken("Bearer abc.def.ghi") == "abc.def.ghi")
        #expect(ForgeTokenVerifier.bearerToken("bearer\tabc  ") == "abc")
        #expect(ForgeTokenVerifier.bearerToken("BEARER   a") == "a")
        for notBearer in ["Basic abc", "Bearer", "Bearer   ", "Bearerabc", "Bearer\u{0}abc", "Béarer abc", ""] {
            #expect(ForgeTokenVerifier.bearerToken(notBearer) == nil, "\(notBearer.debugDescription)")
        }
    }

    /// Base64 with `+` and `/` (or padding) is not base64url: such a token is malformed even
    /// when it would decode to the right bytes. Foundation's decoder, used before, took it.
    @Test func standardBase64SegmentsAreMalformedEvenWhenTheBytesAreRight() async throws {
        let forge = try FakeForge()
        try await forge.withJWKS { jwksURL in
            let verifier = ForgeTokenVerifier(
                appID: FakeForge.appID, keySet: ForgeKeySet(jwksURL: jwksURL, logger: TestDatabase.logger))
            // Tokens until one's signature has a character that differs between the alphabets.
            var token = try await forge.token(FakeForge.panelClaims())
            while !token.split(separator: ".")[2].contains(where: { $0 == "-" || $0 == "_" }) {
                token = try await forge.token(FakeForge.panelClaims())
            }
            let valid = try await verifier.verify(token: token)
            #expect(valid.principal == "557058:alice", "the unchanged token verifies")

            var parts = token.split(separator: ".").map(String.init)
            parts[2] = parts[2].replacingOccurrences(of: "-", with: "+").replacingOccurrences(of: "_", with: "/")
            await #expect(throws: ForgeTokenRejection.malformed) { try await verifier.verify(token: parts.joined(separator: ".")) }
            let padded = [parts[0], token.split(separator: ".")[1] + "=", String(token.split(separator: ".")[2])]
            await #expect(throws: ForgeTokenRejection.malformed) { try await verifier.verify(token: padded.joined(separator: ".")) }
        }
    }

    @Test func theHeaderCacheStaysWithinItsCapacityAndNeverHoldsARefusal() throws {
        let headers = BoundedCache<[UInt8], ForgeTokenVerifier.Header>(capacity: 4)
        let decode = ForgeTokenVerifier.header(encoded:)
        for index in 0..<50 {
            let encoded = Base64URL.encode(Array(#"{"alg":"RS256","kid":"key-\#(index)"}"#.utf8))
            #expect(try headers.value(for: encoded, make: decode).kid == "key-\(index)")
            #expect(try headers.value(for: encoded, make: decode).kid == "key-\(index)", "read again, from the cache")
            #expect(headers.count <= 4)
        }
        let before = headers.count
        let badLabel = Base64URL.encode(Array(#"{"alg":"RS256","kid":"k","icLabel":"NOT A LABEL"}"#.utf8))
        for _ in 0..<2 {
            #expect(throws: ForgeTokenRejection.badICLabel) { try headers.value(for: badLabel, make: decode) }
        }
        #expect(throws: ForgeTokenRejection.malformed) { try headers.value(for: Array("e30=".utf8), make: decode) }
        #expect(headers.count == before, "refusals are not kept")
    }

    /// The claims reader against Foundation's parser: the same values for documents that
    /// exercise every part of the grammar, and a refusal for each kind of malformed one.
    @Test func theJSONReaderAgreesWithFoundationAndRefusesWhatIsNotJSON() throws {
        func foundation(_ text: String) throws -> JSONValue {
            func convert(_ value: Any) -> JSONValue {
                switch value {
                case let object as [String: Any]: .object(object.map { JSONValue.Member(key: $0.key, value: convert($0.value)) })
                case let array as [Any]: .array(array.map(convert))
                case let text as String: .string(text)
                case is NSNull: .null
                // Foundation's booleans are NSNumbers of a char.
                case let number as NSNumber where String(cString: number.objCType) == "c": .bool(number.boolValue)
                case let number as NSNumber: .number("\(number.doubleValue)")
                default: .null
                }
            }
            return convert(try JSONSerialization.jsonObject(with: Data(text.utf8), options: .fragmentsAllowed))
        }
        /// Numbers compared by value (the reader keeps their text), members by key (Foundation's
        /// objects have no order).
        func normalised(_ value: JSONValue) -> JSONValue {
            switch value {
            case .object(let members):
                .object(members.map { JSONValue.Member(key: $0.key, value: normalised($0.value)) }.sorted { $0.key < $1.key })
            case .array(let elements): .array(elements.map(normalised))
            case .number(let text): .number("\(Double(text)!)")
            default: value
            }
        }
        let documents = [
            #"{"iss":"forge/invocation-token","exp":1764500025,"nbf":1.5e3,"neg":-0.25,"big":12345678901234,"e":2E-2}"#,
            #" [ 1 , [ ] , { } , "" , true , false , null ] "#,
            #"{"escapes":"\" \\ \/ \b \f \n \r \t","unicode":"\u00e9\u4e2d\ud83d\ude00","raw":"é中😀"}"#,
            #"{"nested":{"a":[{"b":{"c":[[["deep"]]]}}]},"empty":"","zero":0,"minusZero":-0.0}"#,
            "\t\n\r \"just a string\" ",
        ]
        for document in documents {
            let mine = try #require(JSONValue.parse(Array(document.utf8)), "\(document)")
            #expect(normalised(mine) == normalised(try foundation(document)), "\(document)")
        }
        let refused: [(String, [UInt8])] = [
            ("empty", []), ("blank", Array("  ".utf8)), ("trailing text", Array("{} x".utf8)), ("two values", Array("1 2".utf8)),
            ("unterminated string", Array(#"{"a":"b}"#.utf8)), ("unterminated object", Array(#"{"a":1"#.utf8)),
            ("trailing comma", Array(#"{"a":1,}"#.utf8)), ("array trailing comma", Array("[1,]".utf8)),
            ("single quotes", Array("{'a':1}".utf8)), ("bare key", Array("{a:1}".utf8)), ("missing colon", Array(#"{"a" 1}"#.utf8)),
            ("duplicate key", Array(#"{"a":1,"a":2}"#.utf8)), ("leading zero", Array("012".utf8)), ("bare minus", Array("-".utf8)),
            ("dot without digits", Array("1.".utf8)), ("exponent without digits", Array("1e".utf8)), ("plus sign", Array("+1".utf8)),
            ("NaN", Array("NaN".utf8)), ("truncated literal", Array("tru".utf8)), ("capital literal", Array("True".utf8)),
            ("control character in a string", Array("\"a\u{01}b\"".utf8)), ("newline in a string", Array("\"a\nb\"".utf8)),
            ("bad escape", Array(#""\x""#.utf8)), ("short unicode escape", Array(#""\u12""#.utf8)),
            ("lone high surrogate", Array(#""\ud83d""#.utf8)), ("lone low surrogate", Array(#""\ude00""#.utf8)),
            ("high surrogate then letter", Array(#""\ud83dx""#.utf8)), ("invalid UTF-8", [0x22, 0xC3, 0x28, 0x22]),
            ("overlong UTF-8", [0x22, 0xC0, 0xAF, 0x22]), ("comment", Array("{} // no".utf8)),
            ("too deep", Array((String(repeating: "[", count: 33) + String(repeating: "]", count: 33)).utf8)),
        ]
        for (name, bytes) in refused {
            #expect(JSONValue.parse(bytes) == nil, "\(name)")
        }
        let deepest = String(repeating: "[", count: 32) + String(repeating: "]", count: 32)
        #expect(JSONValue.parse(Array(deepest.utf8)) != nil, "32 levels are allowed")
    }

    @Test func claimsOfTheWrongTypeAreMalformedAndIdentifiersMayBeNumbers() throws {
        func claims(_ object: [String: Any]) throws -> ForgeInvocationClaims {
            try ForgeInvocationClaims(json: Array(try JSONSerialization.data(withJSONObject: object)))
        }
        var valid = FakeForge.panelClaims()
        let read = try claims(valid)
        #expect(read.iss == "forge/invocation-token" && read.aud == [FakeForge.appID] && read.principal == "557058:alice")
        #expect(read.context?.extension?.issue?.id == "10001" && read.context?.extension?.issue?.key == "DEMO-1")
        #expect(read.app.installationId == "ari:cloud:ecosystem::installation/1b4e28ba-2fa1-11d2-883f-0016d3cca427")

        valid["aud"] = ["other", FakeForge.appID]
        var context = valid["context"] as! [String: Any]
        var extensionContext = context["extension"] as! [String: Any]
        extensionContext["issue"] = ["id": 10_001, "key": "DEMO-1"]
        context["extension"] = extensionContext
        valid["context"] = context
        valid["principal"] = NSNull()
        let numeric = try claims(valid)
        #expect(numeric.aud == ["other", FakeForge.appID])
        #expect(numeric.context?.extension?.issue?.id == "10001", "a numeric issue id is read as its digits")
        #expect(numeric.principal == nil, "null is absent")

        let wrongTypes: [(String, [String: Any])] = [
            ("iss a number", valid.merging(["iss": 1]) { $1 }),
            ("aud an object", valid.merging(["aud": ["a": 1]]) { $1 }),
            ("aud with a number", valid.merging(["aud": [FakeForge.appID, 2]]) { $1 }),
            ("exp a string", valid.merging(["exp": "soon"]) { $1 }),
            ("principal an object", valid.merging(["principal": ["id": "x"]]) { $1 }),
            ("app a string", valid.merging(["app": "x"]) { $1 }),
            ("no app", valid.filter { $0.key != "app" }),
            ("no exp", valid.filter { $0.key != "exp" }),
        ]
        for (name, object) in wrongTypes {
            #expect(throws: ForgeInvocationClaims.Malformed.self, "\(name)") { try claims(object) }
        }
        extensionContext["issue"] = ["id": 10001.5, "key": "DEMO-1"]
        context["extension"] = extensionContext
        #expect(throws: ForgeInvocationClaims.Malformed.self, "a fractional issue id") { try claims(valid.merging(["context": context]) { $1 }) }
    }
}
