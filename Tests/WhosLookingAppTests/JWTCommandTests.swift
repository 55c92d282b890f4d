import Connect
import Foundation
import TestSupport
import Testing

/// `whoslooking jwt …`, run as the real executable.
@Suite("whoslooking jwt", .timeLimit(.minutes(3)))
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

    /// The `qsh` claim Atlassian put in the vector's own signed URL.
    static func signedQSH(_ signedURL: String) throws -> String {
        let token = try #require(URLComponents(string: signedURL)?.queryItems?.first { $0.name == "jwt" }?.value)
        let payload = try #require(token.split(separator: ".").dropFirst().first)
        var base64 = payload.replacingOccurrences(of: "-", with: "+").replacingOccurrences(of: "_", with: "/")
        base64 += String(repeating: "=", count: (4 - base64.count % 4) % 4)
        let claims = try JSONSerialization.jsonObject(with: try #require(Data(base64Encoded: base64))) as? [String: Any]
        return try #require(claims?["qsh"] as? String)
    }

    @Test func qshPrintsExactlyTwoLinesMatchingAtlassiansVectors() async throws {
        let vectors = try JSONDecoder().decode(Vectors.self, from: SharedMaterial.conformance("jwt-signed-urls.json"))
        #expect(vectors.tests.count == 79)
        for vector in vectors.tests {
            var arguments = ["jwt", "qsh", "GET", vector.signedUrl]
            if let base = vector.addonBaseUrl { arguments += ["--base-url", "https://example.com" + base] }
            let (status, output) = try await run(arguments)
            #expect(status == 0)
            let lines = output.split(separator: "\n", omittingEmptySubsequences: false).filter { !$0.isEmpty }
            #expect(lines.count == 2)
            #expect(lines.first == "canonical: \(vector.canonicalUrl)"[...])
            #expect(lines.last == "qsh: \(try Self.signedQSH(vector.signedUrl))"[...], "\(vector.canonicalUrl)")
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
