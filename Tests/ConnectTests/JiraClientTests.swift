import Connect
import Foundation
import Hummingbird
import JWTKit
import TestSupport
import Testing

/// The signed outbound client against a local Jira stand-in that checks each request's JWT
/// with jwt-kit (not our HS256 code) and recomputes the qsh from what arrived on the wire.
@Suite("Outbound calls to Jira", .timeLimit(.minutes(3)))
struct JiraClientTests {
    static let secret = "a-shared-secret-of-at-least-32-bytes!!"

    struct Seen: Sendable {
        var issuer: String
        var qshMatched: Bool
        var lifetime: Double
        var path: String
    }

    @Test func requestsAreSignedForThePathRelativeToTheTenantBase() async throws {
        let seen = SeenRequests()
        let router = Router()
        router.get("jira/rest/api/3/user") { request, _ -> Response in
            guard let authorization = request.headers[.authorization], authorization.hasPrefix("JWT ") else {
                return Response(status: .unauthorized)
            }
            let keys = JWTKeyCollection()
            await keys.add(hmac: HMACKey(from: Self.secret), digestAlgorithm: .sha256)
            guard let claims = try? await keys.verify(String(authorization.dropFirst(4)), as: ConnectClaims.self) else {
                return Response(status: .unauthorized)
            }
            // The tenant's baseUrl is http://127.0.0.1:port/jira: the qsh path leaves /jira out.
            let expected = CanonicalRequest(method: "GET", target: request.uri.description, basePath: "/jira").qsh
            await seen.add(Seen(issuer: claims.iss, qshMatched: claims.qsh == expected, lifetime: (claims.exp ?? 0) - (claims.iat ?? 0), path: request.uri.description))
            return Response(status: .ok, body: .init(byteBuffer: ByteBuffer(string: #"{"accountId":"a1"}"#)))
        }
        try await LiveServer.run(router: router) { port in
            let client = JiraClient(appKey: "whos-looking")
            let response = try await client.get(
                tenantBaseURL: URL(string: "http://127.0.0.1:\(port)/jira")!, sharedSecret: Self.secret,
                path: "/rest/api/3/user", query: [URLQueryItem(name: "accountId", value: "5b10a2844c20165700ede21g:a b+c")]
            )
            #expect(response.status == 200)
            #expect(String(buffer: response.body) == #"{"accountId":"a1"}"#)
        }
        let requests = await seen.all
        #expect(requests.count == 1)
        #expect(requests.first?.issuer == "whos-looking")
        #expect(requests.first?.qshMatched == true)
        #expect(requests.first?.lifetime == 180)
        #expect(requests.first?.path.contains("%3Aa%20b%2Bc") == true)
    }

    actor SeenRequests {
        var all: [Seen] = []
        func add(_ request: Seen) { all.append(request) }
    }
}
