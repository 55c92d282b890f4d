import Tenants
import Connect
import EmbeddedPostgres
import Foundation
import Hummingbird
import HummingbirdTesting
import Libpq
import Presence
import TestSupport
import Testing
@testable import WhosLookingApp

/// The product: who is looking at an issue, over real HTTP routes, real JWTs and PostgreSQL.
@Suite("Presence", .timeLimit(.minutes(3)))
struct PresenceTests {
    static let tenant = TenantInstallation(
        clientKey: "jira:presence", baseURL: URL(string: "https://presence.atlassian.net")!, productType: "jira",
        sharedSecret: "presence-tenant-secret-0123456789"
    )
    static let otherTenant = TenantInstallation(
        clientKey: "jira:other", baseURL: URL(string: "https://other.atlassian.net")!, productType: "jira",
        sharedSecret: "other-tenant-secret-0123456789ab"
    )

    static func panelTarget(issueID: String = "10001", issueKey: String = "DEMO-1") -> String {
        "/panel?issueId=\(CanonicalRequest.rfc3986Encode(issueID))&issueKey=\(CanonicalRequest.rfc3986Encode(issueKey))&projectId=100&projectKey=DEMO"
    }

    /// The iframe URL Jira would load for `account` (nil: anonymous), signed at `issuedAt` for `lifetime` seconds.
    static func panelURL(
        _ account: String?, tenant: TenantInstallation = tenant, issueID: String = "10001", issueKey: String = "DEMO-1",
        issuedAt: Date = Date(), lifetime: TimeInterval = 180
    ) throws -> String {
        let target = panelTarget(issueID: issueID, issueKey: issueKey)
        let iat = issuedAt.timeIntervalSince1970
        let token = try HS256.sign(
            ConnectClaims(
                iss: tenant.clientKey, sub: account, iat: iat, exp: iat + lifetime, qsh: CanonicalRequest(method: "GET", target: target).qsh
            ), secret: tenant.sharedSecret)
        return target + "&jwt=" + token
    }

    struct Panel {
        var status: HTTPResponse.Status
        var html: String
        var ticket: String? {
            guard let range = html.range(of: #"data-ticket="([^"]+)""#, options: .regularExpression) else { return nil }
            return String(html[range].dropFirst(#"data-ticket=""#.count).dropLast())
        }
        var listedAccounts: [String] {
            html.components(separatedBy: #"data-account-id=""#).dropFirst().map { String($0.prefix { $0 != "\"" }) }
        }
    }

    struct Beat: Decodable {
        struct Item: Decodable { var accountId: String; var you: Bool; var displayName: String? }
        var viewers: [Item]
        var ticket: String
        var pollSeconds: Int
    }

    func openPanel(
        _ client: some TestClientProtocol, _ account: String?, issueID: String = "10001", issueKey: String = "DEMO-1"
    ) async throws -> Panel {
        try await client.execute(uri: try Self.panelURL(account, issueID: issueID, issueKey: issueKey), method: .get) { response in
            Panel(status: response.status, html: String(buffer: response.body))
        }
    }

    func heartbeat(_ client: some TestClientProtocol, ticket: String, issueID: String = "10001") async throws -> (HTTPResponse.Status, Beat?) {
        try await client.execute(uri: "/api/issues/\(issueID)/heartbeat", method: .post, headers: [.authorization: "Ticket \(ticket)"]) { response in
            (response.status, response.status == .ok ? try JSONDecoder().decode(Beat.self, from: response.body) : nil)
        }
    }

    func leave(_ client: some TestClientProtocol, ticket: String, issueID: String = "10001") async throws -> HTTPResponse.Status {
        // As navigator.sendBeacon sends it: the ticket as a text/plain body.
        try await client.execute(
            uri: "/api/issues/\(issueID)/leave", method: .post, headers: [.contentType: "text/plain"], body: ByteBuffer(string: ticket)
        ) { $0.status }
    }

    func withPresence(
        environment: [String: String] = [:],
        _ body: @escaping @Sendable (TestApp, any TestClientProtocol) async throws -> Void
    ) async throws {
        try await TestApp.with(environment: environment) { testApp, app in
            try await testApp.tenants.install(Self.tenant)
            try await testApp.tenants.install(Self.otherTenant)
            try await app.test(.router) { client in try await body(testApp, client) }
        }
    }

    func rowCount(_ testApp: TestApp) async throws -> Int {
        try await testApp.pool.query("SELECT count(*) AS n FROM viewers")[0].decode(Int.self, "n")
    }

    @Test func twoUsersSeeEachOther() async throws {
        try await withPresence { testApp, client in
            let alice = try await openPanel(client, "account-alice")
            #expect(alice.status == .ok)
            #expect(alice.listedAccounts == ["account-alice"], "Alice is listed at once, no empty first render")
            #expect(alice.html.contains("(you)"))

            let bob = try await openPanel(client, "account-bob")
            #expect(bob.listedAccounts == ["account-bob", "account-alice"], "Bob first, marked as you, then Alice")

            let (status, beat) = try await heartbeat(client, ticket: try #require(alice.ticket))
            #expect(status == .ok)
            #expect(beat?.viewers.map(\.accountId) == ["account-alice", "account-bob"])
            #expect(beat?.viewers.map(\.you) == [true, false])
            #expect(beat?.pollSeconds == 10)
            // Each heartbeat answers a renewed ticket for the same tab (same second: same expiry).
            let signer = ViewerTicketSigner(secret: testApp.secrets.keyMaterial)
            let renewed = try signer.verify(try #require(beat?.ticket))
            let original = try signer.verify(try #require(alice.ticket))
            #expect(renewed.viewer == original.viewer)
            #expect(renewed.expires >= original.expires)
            // Someone on another issue is not listed.
            let carol = try await openPanel(client, "account-carol", issueID: "10002", issueKey: "DEMO-2")
            #expect(carol.listedAccounts == ["account-carol"])
        }
    }

    @Test func aSilentViewerDisappearsAfterTheTTLAndIsSwept() async throws {
        try await withPresence(environment: ["POLL_INTERVAL_SECONDS": "1", "VIEWER_TTL_SECONDS": "2"]) { testApp, client in
            _ = try await openPanel(client, "account-alice")
            let bob = try await openPanel(client, "account-bob")
            #expect(bob.listedAccounts.contains("account-alice"))
            // Alice falls silent: her last heartbeat moved past the TTL (rather than sleeping
            // it out, which a loaded machine turned into a race with Bob's panel load).
            try await testApp.pool.query("UPDATE viewers SET last_seen = now() - interval '3 seconds' WHERE account_id = 'account-alice'")
            let (_, beat) = try await heartbeat(client, ticket: try #require(bob.ticket))
            #expect(beat?.viewers.map(\.accountId) == ["account-bob"], "a stale viewer is never shown, swept or not")
            #expect(try await rowCount(testApp) == 2, "not swept yet")

            let presence = PresenceRepository(pool: testApp.pool, ttl: 2)
            #expect(try await presence.sweep() == 1)
            let remaining = try await testApp.pool.query("SELECT account_id FROM viewers")
            #expect(try remaining.map { try $0.decode(String.self, "account_id") } == ["account-bob"])
        }
    }

    @Test func oneOfTwoTabsClosingKeepsTheUserListed() async throws {
        try await withPresence { testApp, client in
            let firstTab = try await openPanel(client, "account-alice")
            let secondTab = try await openPanel(client, "account-alice")
            #expect(secondTab.listedAccounts == ["account-alice"], "several tabs are one viewer")
            let bob = try await openPanel(client, "account-bob")

            #expect(try await leave(client, ticket: try #require(firstTab.ticket)) == .noContent)
            #expect(try await heartbeat(client, ticket: try #require(bob.ticket)).1?.viewers.map(\.accountId) == ["account-bob", "account-alice"])

            #expect(try await leave(client, ticket: try #require(secondTab.ticket)) == .noContent)
            #expect(try await heartbeat(client, ticket: try #require(bob.ticket)).1?.viewers.map(\.accountId) == ["account-bob"])
            #expect(try await rowCount(testApp) == 1)
        }
    }

    @Test func forgedOrMisusedTicketsAreRefusedAndChangeNothing() async throws {
        try await withPresence { testApp, client in
            let alice = try await openPanel(client, "account-alice")
            let ticket = try #require(alice.ticket)
            let rowsBefore = try await rowCount(testApp)

            let secrets = testApp.secrets
            let signer = ViewerTicketSigner(secret: secrets.keyMaterial)
            let genuine = try signer.verify(ticket)
            func tampered(_ change: (inout ViewerTicket) -> Void) -> String {
                // Re-encode the payload without re-signing: what an attacker without our key can do.
                var forged = genuine
                change(&forged)
                let payload = signer.sign(forged).split(separator: ".")[0]
                return payload + "." + ticket.split(separator: ".")[1]
            }
            let attackerSigner = ViewerTicketSigner(secret: .init(size: .bits256))
            var expired = genuine
            expired.expires = Date().timeIntervalSince1970 - 1

            let cases: [(String, String, String, HTTPResponse.Status)] = [
                ("another user's id", tampered { $0.accountID = "account-mallory" }, "10001", .unauthorized),
                ("another tenant", tampered { $0.tenant = Self.otherTenant.clientKey }, "10001", .unauthorized),
                ("another issue in the ticket", tampered { $0.issueID = "10002" }, "10002", .unauthorized),
                ("signed with another key", attackerSigner.sign(genuine), "10001", .unauthorized),
                ("expired", signer.sign(expired), "10001", .unauthorized),
                ("garbage", "not-a-ticket", "10001", .unauthorized),
                ("issue A's ticket used on issue B", ticket, "10002", .forbidden),
            ]
            for (name, forged, issueID, expected) in cases {
                let (status, beat) = try await heartbeat(client, ticket: forged, issueID: issueID)
                #expect(status == expected, "\(name)")
                #expect(beat == nil, "\(name): no viewer list leaks")
                #expect(try await leave(client, ticket: forged, issueID: issueID) == expected, "\(name)")
            }
            let (missingStatus, _) = try await client.execute(uri: "/api/issues/10001/heartbeat", method: .post) { ($0.status, 0) }
            #expect(missingStatus == .unauthorized)
            #expect(try await rowCount(testApp) == rowsBefore)
            #expect(
                try await PresenceRepository(pool: testApp.pool, ttl: 30).viewers(tenant: Self.tenant.clientKey, issueID: "10001").map(\.accountID)
                    == ["account-alice"])
        }
    }

    /// A ticket is signed with our key, not the site's secret, so it outlived an uninstall and
    /// a reinstall with a new secret. Now it speaks only for the install it was issued in,
    /// while the new install's own tickets work at once.
    @Test func aTicketOfAnEarlierInstallRecordsNothing() async throws {
        try await withPresence { testApp, client in
            let old = try #require(try await openPanel(client, "account-alice").ticket)
            #expect(try await heartbeat(client, ticket: old).0 == .ok)
            #expect(try await testApp.parts.tenants.uninstall(clientKey: Self.tenant.clientKey))
            #expect(try await rowCount(testApp) == 0, "uninstall erases the site's viewers")
            var reinstalled = Self.tenant
            reinstalled.sharedSecret = "a-new-secret-after-the-reinstall-0123"
            try await testApp.tenants.install(reinstalled)
            // The new install's ticket works at once, the old one is refused (within the cache's 5 s).
            let fresh = try await client.execute(uri: try Self.panelURL("account-bob", tenant: reinstalled), method: .get) {
                Panel(status: $0.status, html: String(buffer: $0.body))
            }
            #expect(try await heartbeat(client, ticket: try #require(fresh.ticket)).0 == .ok)
            let refused = await eventually(timeout: .seconds(8)) { try await heartbeat(client, ticket: old).0 == .unauthorized }
            #expect(refused, "a ticket of the earlier install still records")
            let rows = try await testApp.pool.query("SELECT account_id FROM viewers ORDER BY account_id")
            let accounts = try rows.map { try $0.decode(String.self, "account_id") }
            #expect(accounts == ["account-bob"], "\(accounts)")
        }
    }

    /// One signed panel URL loaded five times is one tab, not five; and a panel URL kept for
    /// longer than Jira's tokens live is refused.
    @Test func aReplayedPanelURLIsOneTabAndAnOldOneIsRefused() async throws {
        try await withPresence { testApp, client in
            let url = try Self.panelURL("account-alice")
            for _ in 0..<5 {
                #expect(try await client.execute(uri: url, method: .get) { $0.status } == .ok)
            }
            #expect(try await rowCount(testApp) == 1, "five loads of one URL made more than one tab")
            _ = try await openPanel(client, "account-alice")
            #expect(try await rowCount(testApp) == 2, "a page Jira renders anew is a tab of its own")

            // Signed 20 minutes ago, still unexpired: kept for longer than Jira's panel tokens live.
            let stale = try Self.panelURL("account-carol", issuedAt: Date(timeIntervalSinceNow: -1200), lifetime: 7200)
            let status = try await client.execute(uri: stale, method: .get) { $0.status }
            #expect(status == .unauthorized)
            #expect(try await rowCount(testApp) == 2)
        }
    }

    @Test func anonymousVisitorsArePromptedAndNotRecorded() async throws {
        try await withPresence { testApp, client in
            let panel = try await openPanel(client, nil)
            #expect(panel.status == .ok)
            #expect(panel.html.contains("Log in to see who else is looking"))
            #expect(panel.ticket == nil)
            #expect(try await rowCount(testApp) == 0)
        }
    }

    @Test func markupInIdentifiersRendersAsText() async throws {
        let hostile = #"<img src=x onerror=alert(1)>"#
        try await withPresence { _, client in
            let panel = try await openPanel(client, hostile, issueKey: "DEMO-1\"><script>alert(2)</script>")
            #expect(panel.status == .ok)
            #expect(!panel.html.contains("<img src=x"))
            #expect(!panel.html.contains("<script>alert"))
            #expect(panel.html.contains("&lt;img src=x onerror=alert(1)&gt;"))
            #expect(panel.html.contains(#"alt="Jira user""#), "images have alt text")
        }
    }

    @Test func panelNeedsItsIssueContext() async throws {
        try await withPresence { _, client in
            let target = "/panel?projectKey=DEMO"
            let now = Date().timeIntervalSince1970
            let token = try HS256.sign(
                ConnectClaims(
                    iss: Self.tenant.clientKey, sub: "account-alice", iat: now, exp: now + 60,
                    qsh: CanonicalRequest(method: "GET", target: target).qsh), secret: Self.tenant.sharedSecret)
            let status = try await client.execute(uri: target + "&jwt=" + token, method: .get) { $0.status }
            #expect(status == .badRequest)
        }
    }

    @Test func uninstallErasesTheTenantsViewers() async throws {
        try await withPresence { testApp, client in
            let alice = try await openPanel(client, "account-alice")
            _ = try await openPanel(client, "account-bob")
            #expect(try await rowCount(testApp) == 2)
            try await TenantRepository(pool: testApp.pool, secrets: testApp.secrets, erasers: [ViewerEraser()]).uninstall(
                clientKey: Self.tenant.clientKey)
            #expect(try await rowCount(testApp) == 0)
            let (status, _) = try await heartbeat(client, ticket: try #require(alice.ticket))
            #expect(status == .unauthorized, "an uninstalled site's tickets record nothing")
            #expect(try await rowCount(testApp) == 0)
        }
    }

    @Test func theSweeperKeepsRunningAcrossADatabaseRestart() async throws {
        let folder = URL(fileURLWithPath: "/tmp/wl-sweep-\(UUID().uuidString.prefix(8))")
        defer { try? FileManager.default.removeItem(at: folder) }
        let cluster = EmbeddedPostgres(dataDirectory: folder.appendingPathComponent("pg"), database: "sweep", logger: TestDatabase.logger)
        let conninfo = try await cluster.start()
        let pool = PostgresPool(configuration: .init(conninfo: conninfo, maxConnections: 2, connectTimeoutSeconds: 2), logger: TestDatabase.logger)
        try await Migrator(directory: URL(fileURLWithPath: TestApp.migrations)).migrate(pool: pool, logger: TestDatabase.logger)
        let repository = PresenceRepository(pool: pool, ttl: 1)
        let sweeper = ExpirySweeper(repository: repository, interval: .milliseconds(100), logger: TestDatabase.logger)
        let running = Task { try await sweeper.run() }

        func insertExpired() async throws {
            try await pool.query(
                """
                INSERT INTO viewers VALUES ('t', 'i', 'K-1', \(UUID().uuidString), 'tab', now() - interval '1 hour', now() - interval '1 hour')
                """)
        }
        func waitUntilEmpty() async throws -> Bool {
            for _ in 0..<100 {
                if try await pool.query("SELECT count(*) AS n FROM viewers")[0].decode(Int.self, "n") == 0 { return true }
                try await Task.sleep(for: .milliseconds(100))
            }
            return false
        }
        do {
            try await insertExpired()
            #expect(try await waitUntilEmpty())
            try await cluster.stop()
            try await Task.sleep(for: .milliseconds(500))  // several failing ticks
            try await cluster.start()
            // Unlogged tables are emptied by a crash, not by a clean stop; insert again anyway.
            try await insertExpired()
            #expect(try await waitUntilEmpty(), "the sweeper must survive the outage and sweep again")
        } catch {
            running.cancel()
            await pool.close()
            try? await cluster.stop()
            throw error
        }
        running.cancel()
        _ = try? await running.value
        await pool.close()
        try await cluster.stop()
    }
}
