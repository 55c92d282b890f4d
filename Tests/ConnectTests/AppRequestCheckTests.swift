import Connect
import Foundation
import Testing

/// Our outbound signer against the product-side check both Jira stand-ins use (jwt-kit verifies).
@Suite("App request check", .timeLimit(.minutes(3)))
struct AppRequestCheckTests {
    let signer = JiraRequestSigner(appKey: "whos-looking")
    let secret = "a-shared-secret-of-at-least-32-bytes!"
    let site = URL(string: "https://example.atlassian.net/jira")!

    func check(_ authorization: String?, target: String = "/jira/rest/api/3/user?accountId=a", secret: String? = nil,
               appKey: String = "whos-looking", now: Date = Date()) async -> Result<ConnectClaims, AppRequestCheck.Failure> {
        await AppRequestCheck.verify(authorization: authorization, method: "GET", target: target, basePath: "/jira",
                                     sharedSecret: secret ?? self.secret, appKey: appKey, now: now)
    }

    @Test func aSignedRequestPassesAndEveryAlterationFails() async throws {
        let url = URL(string: "https://example.atlassian.net/jira/rest/api/3/user?accountId=a")!
        let authorization = try signer.authorization(method: "GET", url: url, tenantBaseURL: site, sharedSecret: secret)
        let claims = try await check(authorization).get()
        #expect(claims.iss == "whos-looking")

        #expect(await check(nil).failure == .noToken)
        #expect(await check("Bearer x").failure == .noToken)
        #expect(await check(authorization, secret: "another-shared-secret-of-32-bytes-or-more").failure == .badSignature)
        #expect(await check(authorization, target: "/jira/rest/api/3/user?accountId=b").failure
                == .claims(issuer: "whos-looking", qshMatches: false, fresh: true))
        #expect(await check(authorization, appKey: "another-app").failure == .claims(issuer: "whos-looking", qshMatches: true, fresh: true))
        #expect(await check(authorization, now: Date().addingTimeInterval(3600)).failure
                == .claims(issuer: "whos-looking", qshMatches: true, fresh: false))
    }
}

extension Result {
    var failure: Failure? {
        if case .failure(let failure) = self { return failure }
        return nil
    }
}
