import Connect
import Foundation
import TestSupport
import Testing

/// Atlassian's JWT/qsh interoperability vectors (../shared/conformance/jwt-signed-urls.json).
@Suite("Atlassian qsh and JWT conformance vectors", .timeLimit(.minutes(3)))
struct ConformanceVectorTests {
    struct Vectors: Decodable {
        struct Vector: Decodable {
            var name: String
            var canonicalUrl: String
            var signedUrl: String
            var addonBaseUrl: String?
        }
        var secret: String
        var tests: [Vector]
    }

    let vectors: Vectors

    init() throws {
        vectors = try JSONDecoder().decode(Vectors.self, from: SharedMaterial.conformance("jwt-signed-urls.json"))
    }

    @Test func thereAreSeventyNine() {
        #expect(vectors.tests.count == 79)
    }

    @Test func everyCanonicalRequestQSHAndSignatureMatches() async throws {
        // The tokens expired in 2014: the clock check is simply not made here.
        for vector in vectors.tests {
            let components = try #require(URLComponents(string: vector.signedUrl), "\(vector.name)")
            let request = CanonicalRequest(
                method: "GET",
                path: components.percentEncodedPath,
                query: components.percentEncodedQuery ?? "",
                basePath: vector.addonBaseUrl ?? ""
            )
            #expect(request.canonical == vector.canonicalUrl, "\(vector.name)")

            let token = try #require(components.queryItems?.first { $0.name == "jwt" }?.value, "\(vector.name)")
            let claims = try HS256.verify(token, secret: vectors.secret)
            #expect(claims.qsh == request.qsh, "\(vector.name)")
        }
    }

    @Test func aWrongSecretFailsEveryVector() throws {
        for vector in vectors.tests {
            let token = try #require(URLComponents(string: vector.signedUrl)?.queryItems?.first { $0.name == "jwt" }?.value)
            #expect(throws: TokenRejection.badSignature) { try HS256.verify(token, secret: vectors.secret + "x") }
        }
    }

    @Test func theRealClockRejectsTheExpiredVectors() throws {
        let verifier = ConnectTokenVerifier(basePath: "")
        let token = try #require(URLComponents(string: vectors.tests[0].signedUrl)?.queryItems?.first { $0.name == "jwt" }?.value)
        let claims = try UnverifiedToken(token).claims
        #expect(throws: TokenRejection.expired) { try verifier.checkTimes(claims) }
    }
}
