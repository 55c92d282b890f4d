import Connect
import Foundation
import TestSupport
import Testing

/// `whoslooking jwt …`, run as the real executable.
@Suite("whoslooking jwt")
struct JWTCommandTests {
    func run(_ arguments: [String]) async throws -> (status: Int32, output: String) {
        let outcome = try await Subprocess.run(ChildService.whoslooking, arguments)
        return (outcome.status, outcome.output)
    }

    struct Vector: Decodable {
        var canonicalUrl: String
        var signedUrl: String
        var addonBaseUrl: String?
    }

    struct Vectors: Decodable {
        var secret: String
        var tests: [Vector]
    }

    @Test func qshPrintsExactlyTwoLinesMatchingAtlassiansVectors() async throws {
        let vectors = try JSONDecoder().decode(Vectors.self, from: SharedMaterial.conformance("jwt-signed-urls.json"))
        for vector in vectors.tests.prefix(12) + vectors.tests.filter({ $0.addonBaseUrl != nil }) {
            var arguments = ["jwt", "qsh", "GET", vector.signedUrl]
            if let base = vector.addonBaseUrl { arguments += ["--base-url", "https://example.com" + base] }
            let (status, output) = try await run(arguments)
            #expect(status == 0)
            let lines = output.split(separator: "\n", omittingEmptySubsequences: false).filter { !$0.isEmpty }
            #expect(lines.count == 2)
            #expect(lines.first == "canonical: \(vector.canonicalUrl)"[...])
            let qsh = CanonicalRequest(method: "GET", target: "/").qsh.count
            #expect(lines.last?.hasPrefix("qsh: ") == true && lines.last?.count == 5 + qsh)
        }
    }

    @Test func decodeAndVerify() async throws {
        let claims = ConnectClaims(
            iss: "jira:abc", sub: "account-1", iat: Date().timeIntervalSince1970, exp: Date().timeIntervalSince1970 + 60,
            qsh: CanonicalRequest(method: "GET", target: "/panel?issueKey=A-1").qsh
        )
        let token = try HS256.sign(claims, secret: "shhh")
        let decoded = try await run(["jwt", "decode", token])
        #expect(decoded.status == 0)
        let json = try #require(try JSONSerialization.jsonObject(with: Data(decoded.output.utf8)) as? [String: [String: Any]])
        #expect(json["header"]?["alg"] as? String == "HS256")
        #expect(json["claims"]?["iss"] as? String == "jira:abc")

        let good = try await run(["jwt", "verify", token, "--secret", "shhh", "--url", "https://app.example.com/panel?issueKey=A-1"])
        #expect(good.status == 0, "\(good.output)")
        #expect(!good.output.contains("FAIL"))

        let wrongQuery = try await run(["jwt", "verify", token, "--secret", "shhh", "--url", "https://app.example.com/panel?issueKey=A-2"])
        #expect(wrongQuery.status != 0)
        #expect(wrongQuery.output.contains("FAIL  qsh"))
        #expect(wrongQuery.output.contains("pass  signature"))

        let wrongSecret = try await run(["jwt", "verify", token, "--secret", "nope", "--url", "https://app.example.com/panel?issueKey=A-1"])
        #expect(wrongSecret.output.contains("FAIL  signature"))
    }
}
