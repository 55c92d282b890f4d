import Forge
import Foundation
import HTTPTypes
import Hummingbird
import HummingbirdTesting
import Libpq
import Tenants
import TestSupport
import UserDirectory
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
        /// Jira for the issue checks: the installations' apiBaseUrl unless a test names another.
        let jira: JiraStandIn
        let jiraURL: String

        /// A token over `claims`, with the default apiBaseUrl pointed at this harness's Jira.
        func token(_ claims: [String: Any], key: FakeForge.KeyPair? = nil) async throws -> String {
            var claims = claims
            if var app = claims["app"] as? [String: Any], (app["apiBaseUrl"] as? String)?.hasPrefix("https://api.atlassian.com/") == true {
                app["apiBaseUrl"] = "\(jiraURL)/forge-site"
                claims["app"] = app
            }
            return try await forge.token(claims, key: key)
        }

        func call(
            _ path: String, token: String?, body: String = #"{"tabId":"tab-1"}"#, systemToken: String? = nil, userToken: String? = nil,
            extraHeaders: HTTPFields = [:]
        ) async throws -> Answer {
            var headers: HTTPFields = [.contentType: "application/json"]
            if let token { headers[.authorization] = "Bearer \(token)" }
            if let systemToken { headers[HTTPField.Name("x-forge-oauth-system")!] = systemToken }
            if let userToken { headers[HTTPField.Name("x-forge-oauth-user")!] = userToken }
            headers.append(contentsOf: extraHeaders)
            return try await client.execute(uri: path, method: .post, headers: headers, body: ByteBuffer(string: body)) { response in
                Answer(status: response.status, body: String(buffer: response.body), contentType: response.headers[.contentType])
            }
        }

        /// A panel call as Forge makes it: the FIT, and the caller's user token when there is a caller.
        func ui(_ path: String, _ claims: [String: Any], body: String = #"{"tabId":"tab-1"}"#, systemToken: String? = nil) async throws -> Answer {
            try await call(
                path, token: try await token(claims), body: body, systemToken: systemToken,
                userToken: (claims["principal"] as? String).map(JiraStandIn.userToken))
        }

        func heartbeat(_ claims: [String: Any], tab: String = "tab-1", systemToken: String? = nil) async throws -> Answer {
            try await ui("/forge/heartbeat", claims, body: #"{"tabId":"\#(tab)"}"#, systemToken: systemToken)
        }

        func count(_ sql: PostgresQuery) async throws -> Int {
            try await testApp.pool.query(sql)[0].decode(Int.self, "n")
        }

        var viewerRows: Int { get async throws { try await count("SELECT count(*) AS n FROM viewers") } }
        var tenantRows: Int { get async throws { try await count("SELECT count(*) AS n FROM tenants") } }
    }

    func withForge(environment: [String: String] = [:], _ body: @escaping @Sendable (Harness) async throws -> Void) async throws {
        let forge = try FakeForge()
        let jira = JiraStandIn()
        try await jira.serve { jiraURL in
            try await forge.withJWKS { jwksURL in
                let environment = [
                    "FORGE_APP_ID": FakeForge.appID, "FORGE_JWKS_URL": jwksURL, "JWT_LEEWAY_SECONDS": "5",
                    "PERSONAL_DATA_REPORT_URL": "\(jiraURL)/app/report-accounts/",
                ].merging(environment) { $1 }
                try await TestApp.with(environment: environment) { testApp, app in
                    try await app.test(.router) { client in
                        try await body(Harness(forge: forge, testApp: testApp, client: client, jira: jira, jiraURL: jiraURL))
                    }
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
            #expect(tenant.siteURL == nil, "the site URL of the browser-alterable context is not kept")
            #expect(tenant.baseURL.absoluteString == "\(harness.jiraURL)/forge-site")
            #expect(try await harness.viewerRows == 3)
        }
    }

    @Test func theBodyCannotChooseTheUserTheIssueOrTheSite() async throws {
        try await withForge { harness in
            let body =
                #"{"tabId":"tab-x","accountId":"557058:mallory","issueId":"99999","issueKey":"EVIL-1","installationId":"\#(Self.otherInstallation)","principal":"557058:mallory"}"#
            let answer = try await harness.ui("/forge/heartbeat", FakeForge.panelClaims(principal: "557058:alice"), body: body)
            #expect(answer.status == .ok)
            let rows = try await harness.testApp.pool.query("SELECT client_key, issue_id, issue_key, account_id, tab_id FROM viewers")
            #expect(rows.count == 1)
            #expect(try rows[0].decode(String.self, "client_key") == Self.installation)
            #expect(try rows[0].decode(String.self, "issue_id") == "10001")
            #expect(try rows[0].decode(String.self, "issue_key") == "JIRA-10001", "the issue's key is Jira's, not the browser's")
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
            let token = try await harness.token(FakeForge.panelClaims())
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
            #expect(tooBig.error?.isEmpty == false && tooBig.contentType?.hasPrefix("application/json") == true, "Forge wants JSON: \(tooBig.body)")
            #expect(try await harness.viewerRows == 0)
        }
    }

    @Test func leaveRemovesTheTabAtOnce() async throws {
        try await withForge { harness in
            _ = try await harness.heartbeat(FakeForge.panelClaims(principal: "557058:alice"), tab: "tab-a")
            _ = try await harness.heartbeat(FakeForge.panelClaims(principal: "557058:bob"), tab: "tab-b")
            let left = try await harness.call(
                "/forge/leave", token: try await harness.token(FakeForge.panelClaims(principal: "557058:bob")), body: #"{"tabId":"tab-b"}"#)
            #expect(left.status == .ok)
            #expect(left.body == #"{"ok":true}"#)
            let alice = try await harness.heartbeat(FakeForge.panelClaims(principal: "557058:alice"), tab: "tab-a")
            #expect(alice.beat?.viewers.map(\.accountId) == ["557058:alice"])
            // Another person's tab id does not remove their row: the token names whose tab it is.
            _ = try await harness.call(
                "/forge/leave", token: try await harness.token(FakeForge.panelClaims(principal: "557058:bob")), body: #"{"tabId":"tab-a"}"#)
            #expect(try await harness.viewerRows == 1)
        }
    }

    @Test func lifecycleEventsRegisterInBothBodyShapes() async throws {
        try await withForge { harness in
            var claims = FakeForge.triggerClaims(endpoint: "wl-lifecycle", installationID: Self.installation)
            let flat = #"{"id":"\#(Self.installation)","eventType":"avi:forge:installed:app","app":{"id":"\#(FakeForge.appID)","version":"1"}}"#
            let installed = try await harness.call("/forge/lifecycle", token: try await harness.token(claims), body: flat)
            #expect(installed.status == .ok, "\(installed.body)")
            #expect(try await harness.testApp.tenants.tenant(clientKey: Self.installation)?.state == .installed)
            // A retry delivers the event under `payload` with a retryContext.
            claims = FakeForge.triggerClaims(endpoint: "wl-lifecycle", installationID: Self.otherInstallation)
            let retried =
                #"{"payload":{"eventType":"avi:forge:upgraded:app","id":"x"},"retryContext":{"retryCount":1,"retryReason":"TIMEOUT_ERROR","retryData":null}}"#
            let upgraded = try await harness.call("/forge/lifecycle", token: try await harness.token(claims), body: retried)
            #expect(upgraded.status == .ok)
            let other = try #require(try await harness.testApp.tenants.tenant(clientKey: Self.otherInstallation))
            #expect(other.kind == .forge)
            #expect(other.cloudID == "4a3b2c1d-0000-4000-8000-00000000c10d", "from the installation's contexts")
            for malformed in ["[]", "{}", #"{"eventType":"avi:forge:uninstalled:app"}"#, #"{"eventType":7}"#] {
                let answer = try await harness.call("/forge/lifecycle", token: try await harness.token(claims), body: malformed)
                #expect(answer.status == .badRequest, "\(malformed)")
            }
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
            let claims = FakeForge.triggerClaims(endpoint: "wl-uninstall")
            let body = #"{"context":{"cloudId":"4a3b2c1d-0000-4000-8000-00000000c10d","moduleKey":"wl-pre-uninstall"},"contextToken":"opaque"}"#
            let answer = try await harness.call("/forge/uninstall", token: try await harness.token(claims), body: body)
            #expect(answer.status == .ok)
            #expect(try await harness.testApp.tenants.tenant(clientKey: Self.installation)?.state == .uninstalled)
            #expect(try await harness.viewerRows == 0)
            #expect(try await harness.count("SELECT count(*) AS n FROM user_details") == 0)

            let later = try await harness.heartbeat(FakeForge.panelClaims(principal: "557058:alice"))
            #expect(later.status == .forbidden)
            #expect(later.error == "app uninstalled")
            #expect(try await harness.viewerRows == 0)
            let again = try await harness.call("/forge/uninstall", token: try await harness.token(claims), body: body)
            #expect(again.status == .ok, "uninstall is idempotent")

            // An installation never seen before is remembered as uninstalled: a late call cannot register it.
            let unseen = FakeForge.triggerClaims(endpoint: "wl-uninstall", installationID: Self.otherInstallation)
            #expect(try await harness.call("/forge/uninstall", token: try await harness.token(unseen), body: body).status == .ok)
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
                ("alg none", try forge.unsignedToken(valid), "token algorithm not allowed"),
                ("HS256 keyed with the public key", try await forge.confusedToken(valid), "token algorithm not allowed"),
                ("unknown kid", try await forge.token(valid, key: forge.unpublished), "unknown token kid"),
                ("known kid, another key", try await forge.token(valid, key: forge.unpublished, kid: forge.published.kid), "bad token signature"),
                ("no kid", try await forge.token(valid, kid: .some(nil)), "token has no kid"),
                (
                    "no installation",
                    try await forge.token(
                        changed(
                            "app", (changedApp("installationId", nil)["app"] as! [String: Any]).merging(["installation": ["contexts": []]]) { $1 })),
                    "token names no installation"
                ),
                (
                    "two installations",
                    try await forge.token(changedApp("installationId", "ari:cloud:ecosystem::installation/9c0e28ba-2fa1-11d2-883f-0016d3cca999")),
                    "token installation is not an installation ARI"
                ),
                (
                    "a Connect clientKey as installation",
                    try await forge.token(
                        changed(
                            "app",
                            [
                                "id": FakeForge.appID, "installationId": "d0d52620-3203-4cfa-8db5-f2587155f0dd",
                                "apiBaseUrl": "https://api.atlassian.com/ex/jira/c", "module": ["type": "jira:issueContext", "key": "wl-panel"],
                            ] as [String: Any])), "token installation is not an installation ARI"
                ),
                ("no module", try await forge.token(changedApp("module", nil)), "token names no module"),
            ]
            for (name, token, reason) in cases {
                let answer = try await harness.call("/forge/heartbeat", token: token, userToken: JiraStandIn.userToken("557058:alice"))
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

    @Test func junkKidsCannotMakeTheAppHammerTheKeyServer() async throws {
        try await withForge { harness in
            #expect(try await harness.heartbeat(FakeForge.panelClaims()).status == .ok)
            #expect(harness.forge.jwksFetches == 1)
            for index in 0..<20 {
                let token = try await harness.forge.token(
                    FakeForge.panelClaims(), key: harness.forge.unpublished, kid: "forge/invocation-token/made-up-\(index)")
                #expect(try await harness.call("/forge/heartbeat", token: token).status == .unauthorized)
            }
            #expect(harness.forge.jwksFetches <= 2, "twenty junk kids in a moment: at most one more fetch, not \(harness.forge.jwksFetches)")
        }
    }

    /// A junk kid just before a key rotation must not lock the new key out for a minute: the
    /// new key verifies within the refetch interval, while the junk kid is not fetched again.
    @Test func aKeyPublishedJustAfterAJunkKidVerifiesWithinSeconds() async throws {
        let forge = try FakeForge()
        try await forge.withJWKS { jwksURL in
            let keySet = ForgeKeySet(jwksURL: jwksURL, refetchInterval: .milliseconds(300), missingKidTTL: .seconds(30), logger: TestDatabase.logger)
            _ = try await keySet.algorithm(for: forge.published.kid)
            try await Task.sleep(for: .milliseconds(350))
            await #expect(throws: ForgeTokenRejection.unknownKeyID) { try await keySet.algorithm(for: "junk") }
            #expect(forge.jwksFetches == 2, "the junk kid spent a fetch")
            forge.publish(forge.unpublished)
            let started = ContinuousClock.now
            let verified = await eventually(timeout: .seconds(5)) { (try? await keySet.algorithm(for: forge.unpublished.kid)) != nil }
            #expect(verified, "the rotated-in key never verified")
            #expect(ContinuousClock.now - started < .seconds(3), "it took \(ContinuousClock.now - started)")
            let fetches = forge.jwksFetches
            for _ in 0..<10 {
                await #expect(throws: ForgeTokenRejection.unknownKeyID) { try await keySet.algorithm(for: "junk") }
                try await Task.sleep(for: .milliseconds(100))
            }
            #expect(forge.jwksFetches == fetches, "a junk kid the key server did not list is not fetched again")
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

    // MARK: - Every call bound to its caller (security audit, Dec 2026)

    /// A panel's token (anyone's, from the browser console) cannot uninstall the site, replay its
    /// lifecycle or run its scheduled trigger; a trigger's token cannot heartbeat, wait or
    /// leave; each trigger takes only its own module. Every refusal is 403 and changes nothing.
    @Test func everyRouteTakesOnlyTheModuleThatMayCallIt() async throws {
        try await withForge { harness in
            let alice = FakeForge.panelClaims(principal: "557058:alice")
            #expect(try await harness.heartbeat(alice).status == .ok)
            let preUninstallBody =
                #"{"context":{"cloudId":"4a3b2c1d-0000-4000-8000-00000000c10d","moduleKey":"wl-pre-uninstall"},"contextToken":"opaque"}"#
            let lifecycleBody = #"{"eventType":"avi:forge:installed:app"}"#
            var background = alice
            background["app"] = (alice["app"] as! [String: Any]).merging([
                "module": ["type": "jira:issueViewBackgroundScript", "key": "wl-background"]
            ]) { $1 }
            var otherModule = alice
            otherModule["app"] = (alice["app"] as! [String: Any]).merging(["module": ["type": "jira:issueContext", "key": "someone-elses"]]) { $1 }
            var triggerWithPrincipal = FakeForge.triggerClaims(endpoint: "wl-uninstall")
            triggerWithPrincipal["principal"] = "557058:alice"
            var triggerWithContext = FakeForge.triggerClaims(endpoint: "wl-uninstall")
            triggerWithContext["context"] = alice["context"]
            let refused: [(String, [String: Any], String, String)] = [
                ("a panel on preUninstall", alice, "/forge/uninstall", preUninstallBody),
                ("an anonymous panel on preUninstall", FakeForge.panelClaims(principal: nil), "/forge/uninstall", preUninstallBody),
                ("the background script on preUninstall", background, "/forge/uninstall", preUninstallBody),
                ("a panel on lifecycle", alice, "/forge/lifecycle", lifecycleBody),
                ("a panel on the scheduled trigger", alice, "/forge/scheduled", "{}"),
                ("the lifecycle trigger on preUninstall", FakeForge.triggerClaims(endpoint: "wl-lifecycle"), "/forge/uninstall", preUninstallBody),
                ("preUninstall on lifecycle", FakeForge.triggerClaims(endpoint: "wl-uninstall"), "/forge/lifecycle", lifecycleBody),
                ("a trigger with a principal", triggerWithPrincipal, "/forge/uninstall", preUninstallBody),
                ("a trigger with a UI context", triggerWithContext, "/forge/uninstall", preUninstallBody),
                ("a trigger on heartbeat", FakeForge.triggerClaims(endpoint: "wl-lifecycle"), "/forge/heartbeat", #"{"tabId":"t"}"#),
                ("a trigger on wait", FakeForge.triggerClaims(endpoint: "wl-scheduled"), "/forge/wait", #"{"tabId":"t"}"#),
                ("a trigger on leave", FakeForge.triggerClaims(endpoint: "wl-uninstall"), "/forge/leave", #"{"tabId":"tab-1"}"#),
                ("another module on heartbeat", otherModule, "/forge/heartbeat", #"{"tabId":"t"}"#),
                ("another module on leave", otherModule, "/forge/leave", #"{"tabId":"tab-1"}"#),
                (
                    "preUninstall naming another site", FakeForge.triggerClaims(endpoint: "wl-uninstall"), "/forge/uninstall",
                    #"{"context":{"cloudId":"99999999-0000-4000-8000-000000000000","moduleKey":"wl-pre-uninstall"},"contextToken":"t"}"#
                ),
                (
                    "preUninstall naming another module", FakeForge.triggerClaims(endpoint: "wl-uninstall"), "/forge/uninstall",
                    #"{"context":{"cloudId":"4a3b2c1d-0000-4000-8000-00000000c10d","moduleKey":"wl-panel"},"contextToken":"t"}"#
                ),
            ]
            for (name, claims, route, body) in refused {
                let answer = try await harness.ui(route, claims, body: body)
                #expect(answer.status == .forbidden, "\(name): \(answer.status) \(answer.body)")
                #expect(answer.contentType?.hasPrefix("application/json") == true && answer.error?.isEmpty == false, "\(name)")
            }
            #expect(try await harness.testApp.tenants.tenant(clientKey: Self.installation)?.state == .installed, "still installed")
            #expect(try await harness.viewerRows == 1, "alice's tab is still there")
            // The right callers still work, so each refusal above was the caller.
            #expect(try await harness.heartbeat(background).status == .ok)
            #expect(try await harness.ui("/forge/lifecycle", FakeForge.triggerClaims(endpoint: "wl-lifecycle"), body: lifecycleBody).status == .ok)
            #expect(try await harness.ui("/forge/scheduled", FakeForge.triggerClaims(endpoint: "wl-scheduled"), body: "{}").status == .ok)
            #expect(try await harness.ui("/forge/uninstall", FakeForge.triggerClaims(endpoint: "wl-uninstall"), body: preUninstallBody).status == .ok)
            #expect(try await harness.testApp.tenants.tenant(clientKey: Self.installation)?.state == .uninstalled)
        }
    }

    /// The issue comes from the token's context, which the browser can alter: Jira is asked with
    /// the viewer's own token whether they may see it. A restricted issue is neither recorded nor
    /// listed for someone who cannot see it; no token, a refused token and a Jira that cannot
    /// answer fail closed; answers are kept, so a second heartbeat asks nothing.
    @Test func aRestrictedIssueIsNeitherRecordedNorListedForThoseWhoCannotSeeIt() async throws {
        try await withForge { harness in
            await harness.jira.restrictIssue("30001", to: ["557058:alice"])
            let hrAlice = FakeForge.panelClaims(principal: "557058:alice", issueID: "30001", issueKey: "HR-1")
            let hrBob = FakeForge.panelClaims(principal: "557058:bob", issueID: "30001", issueKey: "HR-1")
            #expect(try await harness.heartbeat(hrAlice).beat?.viewers.map(\.accountId) == ["557058:alice"])
            let bob = try await harness.heartbeat(hrBob, tab: "tab-b")
            #expect(bob.status == .forbidden && bob.error == "you cannot see this issue", "\(bob.status) \(bob.body)")
            let bobWaits = try await harness.ui("/forge/wait", hrBob, body: #"{"tabId":"tab-b"}"#)
            #expect(bobWaits.status == .forbidden, "a wait would tell bob who reads it")
            #expect(try await harness.count("SELECT count(*) AS n FROM viewers WHERE account_id = '557058:bob'") == 0)

            let checks = await harness.jira.issueChecks.count
            #expect(try await harness.heartbeat(hrAlice).status == .ok)
            #expect(try await harness.heartbeat(hrBob, tab: "tab-b").status == .forbidden)
            #expect(await harness.jira.issueChecks.count == checks, "both answers were kept")

            // No user token, and a token Jira refuses: 403, nothing recorded.
            let carol = FakeForge.panelClaims(principal: "557058:carol")
            let noToken = try await harness.call("/forge/heartbeat", token: try await harness.token(carol))
            #expect(noToken.status == .forbidden, "\(noToken.body)")
            let refusedToken = try await harness.call("/forge/heartbeat", token: try await harness.token(carol), userToken: "not-a-user-token")
            #expect(refusedToken.status == .forbidden, "\(refusedToken.body)")
            // Jira cannot answer: 503, never a yes.
            await harness.jira.setIssueCheckStatus(503)
            let down = try await harness.heartbeat(FakeForge.panelClaims(principal: "557058:dave"))
            #expect(down.status == .serviceUnavailable, "\(down.status) \(down.body)")
            await harness.jira.setIssueCheckStatus(nil)
            #expect(try await harness.count("SELECT count(*) AS n FROM viewers WHERE account_id IN ('557058:carol', '557058:dave')") == 0)
            #expect(try await harness.heartbeat(FakeForge.panelClaims(principal: "557058:dave")).status == .ok, "and once Jira answers, it works")

            // Issue ids are numbers; anything else is refused before Jira or the database sees it.
            for id in ["HR-1", "1 OR 1=1", "10001/../10002", "", String(repeating: "9", count: 19)] {
                let odd = try await harness.heartbeat(FakeForge.panelClaims(principal: "557058:alice", issueID: id, issueKey: "X-1"))
                #expect(odd.status == .badRequest, "issue id \(id.debugDescription): \(odd.status)")
            }
        }
    }

    @Test func aTokenHeaderGivenTwiceIsRefused() async throws {
        try await withForge { harness in
            let claims = FakeForge.panelClaims(principal: "557058:alice")
            for name in ["x-forge-oauth-system", "x-forge-oauth-user"] {
                var twice = HTTPFields()
                twice.append(HTTPField(name: HTTPField.Name(name)!, value: "first"))
                twice.append(HTTPField(name: HTTPField.Name(name)!, value: "second"))
                let answer = try await harness.call("/forge/heartbeat", token: try await harness.token(claims), extraHeaders: twice)
                #expect(answer.status == .badRequest, "\(name): \(answer.status)")
            }
            #expect(try await harness.viewerRows == 0)
        }
    }

    @Test func theEnvironmentIsPinnedWhenConfigured() async throws {
        try await withForge(environment: ["FORGE_ENVIRONMENT_ID": "e1"]) { harness in
            #expect(try await harness.heartbeat(FakeForge.panelClaims()).status == .ok)
            var other = FakeForge.panelClaims()
            other["app"] = (other["app"] as! [String: Any]).merging(["environment": ["type": "STAGING", "id": "e2"]]) { $1 }
            let answer = try await harness.heartbeat(other)
            #expect(answer.status == .unauthorized && answer.error == "token environment is not this deployment's")
        }
    }

    /// A panel may wait before its first heartbeat is recorded: the wait registers the new
    /// installation instead of telling the panel the app is uninstalled (which stops it for good).
    @Test func aWaitBeforeTheFirstHeartbeatRegistersTheInstallation() async throws {
        try await withForge(environment: ["WAIT_SECONDS": "1"]) { harness in
            let room = harness.testApp.parts.waitRoom
            try await TestApp.running(room) {
                try #require(await eventually { room.isListening })
                let answer = try await harness.ui(
                    "/forge/wait", FakeForge.panelClaims(principal: "557058:alice"), body: #"{"tabId":"tab-1","version":""}"#)
                #expect(answer.status == .ok, "\(answer.status) \(answer.body)")
                #expect(try await harness.testApp.tenants.tenant(clientKey: Self.installation)?.state == .installed)
            }
        }
    }

    /// A Forge uninstall never reaches a Connect site, even one whose clientKey a token names.
    @Test func aForgeUninstallNeverTouchesAConnectSite() async throws {
        try await withForge { harness in
            let connect = TenantInstallation(
                clientKey: "ari:cloud:ecosystem::installation/1b4e28ba-2fa1-11d2-883f-0016d3cca427",
                baseURL: URL(string: "https://acme.atlassian.net")!, sharedSecret: "s3cret-s3cret-s3cret-s3cret-s3cret")
            try await harness.testApp.tenants.install(connect)
            let body = #"{"context":{"cloudId":"4a3b2c1d-0000-4000-8000-00000000c10d","moduleKey":"wl-pre-uninstall"},"contextToken":"opaque"}"#
            _ = try await harness.ui("/forge/uninstall", FakeForge.triggerClaims(endpoint: "wl-uninstall"), body: body)
            let tenant = try #require(try await harness.testApp.tenants.tenant(clientKey: Self.installation))
            #expect(tenant.kind == .connect && tenant.state == .installed, "the Connect site is untouched")
            // And a heartbeat through the Forge door does not land on it either.
            let beat = try await harness.heartbeat(FakeForge.panelClaims())
            #expect(beat.status == .forbidden)
            #expect(try await harness.viewerRows == 0)
        }
    }

    /// The hourly trigger brings a system token to a site nobody visits, and that site's stored
    /// accounts are reported with it; while another instance reports the site, this one skips it.
    @Test func theScheduledTriggerReportsAnIdleSite() async throws {
        try await withForge { harness in
            _ = try await harness.ui(
                "/forge/lifecycle", FakeForge.triggerClaims(endpoint: "wl-lifecycle"), body: #"{"eventType":"avi:forge:installed:app"}"#)
            try await harness.testApp.pool.query(
                """
                INSERT INTO user_details (client_key, account_id, status, display_name, fetched_at, expires_at)
                VALUES (\(Self.installation), '557058:alice', 'found', 'Alice', now(), now() + interval '1 day')
                """)
            let reporter = harness.testApp.parts.reporter
            #expect(try await reporter.reportSite(Self.installation).reported == 0, "no token yet: skipped")
            let systemToken = FakeForge.systemToken()
            await harness.jira.addForgeSite("forge-site", systemToken: systemToken)
            let answer = try await harness.ui(
                "/forge/scheduled", FakeForge.triggerClaims(endpoint: "wl-scheduled"), body: "{}", systemToken: systemToken)
            #expect(answer.status == .ok, "\(answer.body)")
            // Another instance reporting this site holds its lock: this one skips it.
            try await harness.testApp.pool.withConnection { other in
                _ = try await other.query("SELECT pg_advisory_lock(\(PersonalDataReporter.siteLockClass), hashtext(\(Self.installation)))")
                #expect(try await reporter.reportSite(Self.installation).anotherInstanceReporting)
                _ = try await other.query("SELECT pg_advisory_unlock(\(PersonalDataReporter.siteLockClass), hashtext(\(Self.installation)))")
            }
            #expect(try await reporter.reportSite(Self.installation).reported == 1)
            #expect(await harness.jira.reports.compactMap { $0["accountId"] } == ["557058:alice"])
        }
    }
}
