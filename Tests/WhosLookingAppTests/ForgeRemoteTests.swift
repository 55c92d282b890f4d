import Forge
import Foundation
import HTTPTypes
import Hummingbird
import HummingbirdTesting
import Libpq
import Tenants
import TestSupport
import Testing

@testable import WhosLookingApp

/// The Forge remote contract (`/forge/*`) against tokens minted by jwt-kit in the tests, never
/// by the app's code: who, which issue and which installation come from the token alone; every
/// token failure is a 401 with a JSON reason and changes nothing.
@Suite("Forge remote", .serialized, .timeLimit(.minutes(3)))
struct ForgeRemoteTests {
    static let installation = "ari:cloud:ecosystem::installation/1b4e28ba-2fa1-11d2-883f-0016d3cca427"
    static let otherInstallation = "ari:cloud:ecosystem::installation/9c0e28ba-2fa1-11d2-883f-0016d3cca999"

    struct Beat: Decodable {
        struct Item: Decodable {
            var accountId: String
            var displayName: String?
            var avatarUrl: String?
            var you: Bool
        }
        var viewers: [Item]
        var pollSeconds: Int
        var anonymous: Bool?
        var ticket: String?
    }

    struct Answer {
        var status: HTTPResponse.Status
        var body: String
        var contentType: String?
        var beat: Beat? { try? JSONDecoder().decode(Beat.self, from: Data(body.utf8)) }
        var error: String? { ((try? JSONSerialization.jsonObject(with: Data(body.utf8))) as? [String: Any])?["error"] as? String }
    }

    struct Harness {
        let forge: FakeForge
        let testApp: TestApp
        let client: any TestClientProtocol

        func call(_ path: String, token: String?, body: String = #"{"tabId":"tab-1"}"#, systemToken: String? = nil) async throws -> Answer {
            var headers: HTTPFields = [.contentType: "application/json"]
            if let token { headers[.authorization] = "Bearer \(token)" }
            if let systemToken { headers[HTTPField.Name("x-forge-oauth-system")!] = systemToken }
            return try await client.execute(uri: path, method: .post, headers: headers, body: ByteBuffer(string: body)) { response in
                Answer(status: response.status, body: String(buffer: response.body), contentType: response.headers[.contentType])
            }
        }

        func heartbeat(_ claims: [String: Any], tab: String = "tab-1", systemToken: String? = nil) async throws -> Answer {
            try await call("/forge/heartbeat", token: try await forge.token(claims), body: #"{"tabId":"\#(tab)"}"#, systemToken: systemToken)
        }

        func count(_ sql: PostgresQuery) async throws -> Int {
            try await testApp.pool.query(sql)[0].decode(Int.self, "n")
        }

        var viewerRows: Int { get async throws { try await count("SELECT count(*) AS n FROM viewers") } }
        var tenantRows: Int { get async throws { try await count("SELECT count(*) AS n FROM tenants") } }
    }

    func withForge(environment: [String: String] = [:], _ body: @escaping @Sendable (Harness) async throws -> Void) async throws {
        let forge = try FakeForge()
        try await forge.withJWKS { jwksURL in
            let environment = ["FORGE_APP_ID": FakeForge.appID, "FORGE_JWKS_URL": jwksURL, "JWT_LEEWAY_SECONDS": "5"].merging(environment) { $1 }
            try await TestApp.with(environment: environment) { testApp, app in
                try await app.test(.router) { client in
                    try await body(Harness(forge: forge, testApp: testApp, client: client))
                }
            }
        }
    }

    @Test func twoPeopleSeeEachOtherAndTheFirstCallRegistersTheInstallation() async throws {
        try await withForge { harness in
            let alice = try await harness.heartbeat(FakeForge.panelClaims(principal: "557058:alice"), tab: "tab-a")
            #expect(alice.status == .ok, "\(alice.body)")
            #expect(alice.contentType?.hasPrefix("application/json") == true)
            #expect(alice.beat?.viewers.map(\.accountId) == ["557058:alice"])
            #expect(alice.beat?.ticket == nil, "Forge vouches for every call: no ticket")
            #expect(alice.beat?.pollSeconds == 10)

            let bob = try await harness.heartbeat(FakeForge.panelClaims(principal: "557058:bob"), tab: "tab-b")
            #expect(bob.beat?.viewers.map(\.accountId) == ["557058:bob", "557058:alice"], "yourself first")
            #expect(bob.beat?.viewers.map(\.you) == [true, false])
            // A second tab of Bob's: still one Bob.
            let bobAgain = try await harness.heartbeat(FakeForge.panelClaims(principal: "557058:bob"), tab: "tab-b2")
            #expect(bobAgain.beat?.viewers.map(\.accountId) == ["557058:bob", "557058:alice"])

            let tenant = try #require(try await harness.testApp.tenants.tenant(clientKey: Self.installation))
            #expect(tenant.kind == .forge)
            #expect(tenant.state == .installed)
            #expect(tenant.cloudID == "4a3b2c1d-0000-4000-8000-00000000c10d")
            #expect(tenant.siteURL?.absoluteString == "https://acme.atlassian.net")
            #expect(tenant.baseURL.absoluteString == "https://api.atlassian.com/ex/jira/4a3b2c1d-0000-4000-8000-00000000c10d")
            #expect(try await harness.viewerRows == 3)
        }
    }

    @Test func theBodyCannotChooseTheUserTheIssueOrTheSite() async throws {
        try await withForge { harness in
            let body =
                #"{"tabId":"tab-x","accountId":"557058:mallory","issueId":"99999","issueKey":"EVIL-1","installationId":"\#(Self.otherInstallation)","principal":"557058:mallory"}"#
            let answer = try await harness.call(
                "/forge/heartbeat", token: try await harness.forge.token(FakeForge.panelClaims(principal: "557058:alice")), body: body)
            #expect(answer.status == .ok)
            let rows = try await harness.testApp.pool.query("SELECT client_key, issue_id, issue_key, account_id, tab_id FROM viewers")
            #expect(rows.count == 1)
            #expect(try rows[0].decode(String.self, "client_key") == Self.installation)
            #expect(try rows[0].decode(String.self, "issue_id") == "10001")
            #expect(try rows[0].decode(String.self, "issue_key") == "DEMO-1")
            #expect(try rows[0].decode(String.self, "account_id") == "557058:alice")
            #expect(try rows[0].decode(String.self, "tab_id") == "tab-x")
        }
    }

    @Test func anonymousIsListedNothingAndRecordsNothing() async throws {
        try await withForge { harness in
            let answer = try await harness.heartbeat(FakeForge.panelClaims(principal: nil))
            #expect(answer.status == .ok)
            #expect(answer.beat?.anonymous == true)
            #expect(answer.beat?.viewers.isEmpty == true)
            #expect(try await harness.viewerRows == 0)
        }
    }

    @Test func badBodiesAndContextsAreRefusedWithFourHundred() async throws {
        try await withForge { harness in
            let token = try await harness.forge.token(FakeForge.panelClaims())
            for body in [
                "not json", "[1,2]", "{}", #"{"tabId":""}"#, #"{"tabId":7}"#, #"{"tabId":"a b"}"#,
                #"{"tabId":"\#(String(repeating: "a", count: 65))"}"#,
            ] {
                let answer = try await harness.call("/forge/heartbeat", token: token, body: body)
                #expect(answer.status == .badRequest, "\(body)")
                #expect(answer.error?.isEmpty == false, "a JSON reason for \(body)")
            }
            let noIssue = try await harness.heartbeat(FakeForge.panelClaims(issueID: nil, issueKey: nil))
            #expect(noIssue.status == .badRequest)
            #expect(noIssue.error == "no issue in the invocation context")
            let tooBig = try await harness.call(
                "/forge/heartbeat", token: token, body: #"{"tabId":"t","pad":"\#(String(repeating: "x", count: 70_000))"}"#)
            #expect(tooBig.status == .contentTooLarge)
            #expect(try await harness.viewerRows == 0)
        }
    }

    @Test func leaveRemovesTheTabAtOnce() async throws {
        try await withForge { harness in
            _ = try await harness.heartbeat(FakeForge.panelClaims(principal: "557058:alice"), tab: "tab-a")
            _ = try await harness.heartbeat(FakeForge.panelClaims(principal: "557058:bob"), tab: "tab-b")
            let left = try await harness.call(
                "/forge/leave", token: try await harness.forge.token(FakeForge.panelClaims(principal: "557058:bob")), body: #"{"tabId":"tab-b"}"#)
            #expect(left.status == .ok)
            #expect(left.body == #"{"ok":true}"#)
            let alice = try await harness.heartbeat(FakeForge.panelClaims(principal: "557058:alice"), tab: "tab-a")
            #expect(alice.beat?.viewers.map(\.accountId) == ["557058:alice"])
            // Another person's tab id does not remove their row: the token names whose tab it is.
            _ = try await harness.call(
                "/forge/leave", token: try await harness.forge.token(FakeForge.panelClaims(principal: "557058:bob")), body: #"{"tabId":"tab-a"}"#)
            #expect(try await harness.viewerRows == 1)
        }
    }

    @Test func lifecycleEventsRegisterInBothBodyShapes() async throws {
        try await withForge { harness in
            var claims = FakeForge.panelClaims(installationID: Self.installation, principal: nil, issueID: nil, issueKey: nil)
            claims["context"] = nil
            let flat = #"{"id":"\#(Self.installation)","eventType":"avi:forge:installed:app","app":{"id":"\#(FakeForge.appID)","version":"1"}}"#
            let installed = try await harness.call("/forge/lifecycle", token: try await harness.forge.token(claims), body: flat)
            #expect(installed.status == .ok, "\(installed.body)")
            #expect(try await harness.testApp.tenants.tenant(clientKey: Self.installation)?.state == .installed)
            // A retry delivers the event under `payload` with a retryContext.
            claims["app"] = (claims["app"] as! [String: Any]).merging(["installationId": Self.otherInstallation]) { $1 }
            let retried =
                #"{"payload":{"eventType":"avi:forge:upgraded:app","id":"x"},"retryContext":{"retryCount":1,"retryReason":"TIMEOUT_ERROR","retryData":null}}"#
            let upgraded = try await harness.call("/forge/lifecycle", token: try await harness.forge.token(claims), body: retried)
            #expect(upgraded.status == .ok)
            let other = try #require(try await harness.testApp.tenants.tenant(clientKey: Self.otherInstallation))
            #expect(other.kind == .forge)
            #expect(other.cloudID == "4a3b2c1d-0000-4000-8000-00000000c10d", "from the apiBaseUrl when the token has no context")
            let malformed = try await harness.call("/forge/lifecycle", token: try await harness.forge.token(claims), body: "[]")
            #expect(malformed.status == .badRequest)
        }
    }

    @Test func uninstallErasesPersonalDataAndRefusesLaterCalls() async throws {
        try await withForge { harness in
            _ = try await harness.heartbeat(FakeForge.panelClaims(principal: "557058:alice"))
            try await harness.testApp.pool.query(
                """
                INSERT INTO user_details (client_key, account_id, status, display_name, fetched_at, expires_at)
                VALUES (\(Self.installation), '557058:alice', 'found', 'Alice', now(), now() + interval '1 day')
                """)
            var claims = FakeForge.panelClaims(principal: nil, issueID: nil, issueKey: nil)
            claims["context"] = nil
            let body = #"{"context":{"cloudId":"4a3b2c1d-0000-4000-8000-00000000c10d","moduleKey":"wl-pre-uninstall"},"contextToken":"opaque"}"#
            let answer = try await harness.call("/forge/uninstall", token: try await harness.forge.token(claims), body: body)
            #expect(answer.status == .ok)
            #expect(try await harness.testApp.tenants.tenant(clientKey: Self.installation)?.state == .uninstalled)
            #expect(try await harness.viewerRows == 0)
            #expect(try await harness.count("SELECT count(*) AS n FROM user_details") == 0)

            let later = try await harness.heartbeat(FakeForge.panelClaims(principal: "557058:alice"))
            #expect(later.status == .forbidden)
            #expect(later.error == "app uninstalled")
            #expect(try await harness.viewerRows == 0)
            let again = try await harness.call("/forge/uninstall", token: try await harness.forge.token(claims), body: body)
            #expect(again.status == .ok, "uninstall is idempotent")

            // An installation never seen before is remembered as uninstalled: a late call cannot register it.
            var unseen = claims
            unseen["app"] = (claims["app"] as! [String: Any]).merging(["installationId": Self.otherInstallation]) { $1 }
            #expect(try await harness.call("/forge/uninstall", token: try await harness.forge.token(unseen), body: body).status == .ok)
            let late = try await harness.heartbeat(FakeForge.panelClaims(installationID: Self.otherInstallation))
            #expect(late.status == .forbidden)
            #expect(try await harness.viewerRows == 0)
        }
    }

    /// Each change to a valid token that matters is refused with 401 and a JSON reason, and
    /// nothing is recorded or registered.
    @Test func invalidTokensAreRefusedAndChangeNothing() async throws {
        try await withForge { harness in
            let forge = harness.forge
            let valid = FakeForge.panelClaims()
            func changed(_ key: String, _ value: Any?) -> [String: Any] {
                var claims = valid
                claims[key] = value
                return claims
            }
            func changedApp(_ key: String, _ value: Any?) -> [String: Any] {
                var app = valid["app"] as! [String: Any]
                app[key] = value
                return changed("app", app)
            }
            let now = Date().timeIntervalSince1970.rounded(.down)
            let cases: [(String, String?, String)] = [
                ("no token", nil, "missing Forge invocation token"),
                ("garbage", "not.a.token", "malformed Forge invocation token"),
                (
                    "wrong audience", try await forge.token(changed("aud", "ari:cloud:ecosystem::app/00000000-0000-0000-0000-000000000000")),
                    "token audience is not this app"
                ),
                ("wrong issuer", try await forge.token(changed("iss", "someone-else")), "token issuer is not Forge"),
                (
                    "wrong app id", try await forge.token(changedApp("id", "ari:cloud:ecosystem::app/00000000-0000-0000-0000-000000000000")),
                    "token app is not this app"
                ),
                ("expired", try await forge.token(changed("exp", now - 60)), "token expired"),
                ("not yet valid", try await forge.token(changed("nbf", now + 120)), "token not yet valid"),
                ("alg none", try forge.unsignedToken(valid), "token algorithm none not allowed"),
                ("HS256 keyed with the public key", try await forge.confusedToken(valid), "token algorithm HS256 not allowed"),
                ("unknown kid", try await forge.token(valid, key: forge.unpublished), "unknown token kid"),
                ("known kid, another key", try await forge.token(valid, key: forge.unpublished, kid: forge.published.kid), "bad token signature"),
                ("no kid", try await forge.token(valid, kid: .some(nil)), "token has no kid"),
                ("no installation", try await forge.token(changedApp("installationId", nil)), "token names no installation"),
            ]
            for (name, token, reason) in cases {
                let answer = try await harness.call("/forge/heartbeat", token: token)
                #expect(answer.status == .unauthorized, "\(name): \(answer.status) \(answer.body)")
                #expect(answer.error == reason, "\(name)")
                #expect(answer.contentType?.hasPrefix("application/json") == true, "\(name)")
                for route in ["/forge/leave", "/forge/lifecycle", "/forge/uninstall"] {
                    #expect(try await harness.call(route, token: token).status == .unauthorized, "\(name) on \(route)")
                }
            }
            // A bearer header with another scheme is no token either.
            let basic = try await harness.client.execute(
                uri: "/forge/heartbeat", method: .post, headers: [.authorization: "Basic YTpi"], body: ByteBuffer(string: "{}")
            ) { $0.status }
            #expect(basic == .unauthorized)
            #expect(try await harness.viewerRows == 0)
            #expect(try await harness.tenantRows == 0)
            // The valid token works, so each refusal above was the change, not the setup.
            #expect(try await harness.heartbeat(valid).status == .ok)
        }
    }

    @Test func unknownKidsFetchTheKeySetAtMostOnceAMinute() async throws {
        try await withForge { harness in
            #expect(try await harness.heartbeat(FakeForge.panelClaims()).status == .ok)
            #expect(harness.forge.jwksFetches == 1)
            for index in 0..<20 {
                let token = try await harness.forge.token(
                    FakeForge.panelClaims(), key: harness.forge.unpublished, kid: "forge/invocation-token/made-up-\(index)")
                #expect(try await harness.call("/forge/heartbeat", token: token).status == .unauthorized)
            }
            #expect(harness.forge.jwksFetches == 1, "no refetch within a minute of the last")
        }
    }

    @Test func anUnknownKidRefetchesOnceTheIntervalHasPassedAndConcurrentCallersShareTheFetch() async throws {
        let forge = try FakeForge()
        try await forge.withJWKS { jwksURL in
            let keySet = ForgeKeySet(jwksURL: jwksURL, refetchInterval: .milliseconds(300), logger: TestDatabase.logger)
            _ = try await keySet.algorithm(for: forge.published.kid)
            #expect(forge.jwksFetches == 1)
            await #expect(throws: ForgeTokenRejection.unknownKeyID) { try await keySet.algorithm(for: "rotated-in-later") }
            #expect(forge.jwksFetches == 1)
            try await Task.sleep(for: .milliseconds(400))
            await withTaskGroup(of: Void.self) { group in
                for _ in 0..<20 { group.addTask { _ = try? await keySet.algorithm(for: "rotated-in-later") } }
            }
            #expect(forge.jwksFetches == 2, "one fetch for twenty concurrent callers")
            _ = try await keySet.algorithm(for: forge.published.kid)
            #expect(forge.jwksFetches == 2, "a known kid never fetches")
        }
    }

    @Test func anUnreachableKeyServerIsOursNotTheCallers() async throws {
        let keySet = ForgeKeySet(jwksURL: "http://127.0.0.1:9/jwks.json", logger: TestDatabase.logger)
        await #expect(throws: ForgeTokenRejection.keyServerUnavailable) { try await keySet.algorithm(for: "any") }
    }

    @Test func forgeRoutesAreOffWithoutAnAppID() async throws {
        try await TestApp.with { _, app in
            try await app.test(.router) { client in
                let status = try await client.execute(uri: "/forge/heartbeat", method: .post, body: ByteBuffer(string: "{}")) { $0.status }
                #expect(status == .notFound)
            }
        }
    }

    /// Names and avatars come from the installation's apiBaseUrl with the system token as
    /// Bearer; without a fresh token the lookup waits for a call that brings one.
    @Test func namesComeFromJiraWithTheSystemToken() async throws {
        let jira = JiraStandIn()
        await jira.addUser(accountId: "557058:alice", displayName: "Alice Liddell", avatar: "https://avatars.example/alice.png")
        let systemToken = FakeForge.systemToken()
        await jira.addForgeSite("forge-site", systemToken: systemToken)
        try await jira.serve { jiraURL in
            try await withForge(environment: ["PERSONAL_DATA_REPORT_URL": "\(jiraURL)/app/report-accounts/"]) { harness in
                let claims = FakeForge.panelClaims(principal: "557058:alice", apiBaseURL: "\(jiraURL)/forge-site")
                let first = try await harness.heartbeat(claims)
                #expect(first.beat?.viewers.first?.displayName == nil, "no token yet: nothing fetched, the answer does not wait")
                try await Task.sleep(for: .milliseconds(300))
                #expect(await jira.userCalls().isEmpty)

                _ = try await harness.heartbeat(claims, systemToken: systemToken)
                let named = await eventually {
                    try await harness.heartbeat(claims).beat?.viewers.first?.displayName == "Alice Liddell"
                }
                #expect(named)
                #expect(await jira.unverified.isEmpty)
                #expect(await jira.userCalls(site: "forge-site").allSatisfy { $0.status == 200 })
                let avatar = try await harness.heartbeat(claims).beat?.viewers.first?.avatarUrl
                #expect(avatar == "https://avatars.example/alice.png")

                // The stored name is reported to the personal data API with the same token.
                let summary = try await harness.testApp.parts.reporter.runOnce()
                #expect(summary.reported == 1)
                #expect(await jira.reports.compactMap { $0["accountId"] } == ["557058:alice"])
                #expect(await jira.unverified.isEmpty)
            }
        }
    }
}
