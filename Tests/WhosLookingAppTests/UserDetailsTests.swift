import Tenants
import Connect
import Foundation
import Hummingbird
import HummingbirdTesting
import Libpq
import Presence
import TestSupport
import Testing
import UserDirectory
@testable import WhosLookingApp

/// Names and avatars from a local Jira stand-in over real HTTP, and personal data reporting.
@Suite("Viewer details and personal data")
struct UserDetailsTests {
    static let secretA = "site-a-shared-secret-0123456789abcdef"
    static let secretB = "site-b-shared-secret-0123456789abcdef"

    struct Harness: Sendable {
        let jira: JiraStandIn
        let testApp: TestApp
        let client: any TestClientProtocol
        let siteA: TenantInstallation
        let siteB: TenantInstallation

        func panel(_ account: String, site: TenantInstallation? = nil, issueID: String = "10001") async throws -> (html: String, ticket: String?) {
            let site = site ?? siteA
            let target = "/panel?issueId=\(issueID)&issueKey=DEMO-1&projectId=100&projectKey=DEMO"
            let now = Date().timeIntervalSince1970
            let token = try HS256.sign(ConnectClaims(iss: site.clientKey, sub: account, iat: now, exp: now + 180,
                                                     qsh: CanonicalRequest(method: "GET", target: target).qsh), secret: site.sharedSecret)
            return try await client.execute(uri: target + "&jwt=" + token, method: .get) { response in
                let html = String(buffer: response.body)
                let ticket = html.range(of: #"data-ticket="([^"]+)""#, options: .regularExpression).map {
                    String(html[$0].dropFirst(#"data-ticket=""#.count).dropLast())
                }
                return (html, ticket)
            }
        }

        struct Item: Decodable { var accountId: String; var displayName: String?; var avatarUrl: String?; var you: Bool }
        struct Beat: Decodable { var viewers: [Item] }

        func heartbeat(_ ticket: String, issueID: String = "10001") async throws -> [Item] {
            try await client.execute(uri: "/api/issues/\(issueID)/heartbeat", method: .post, headers: [.authorization: "Ticket \(ticket)"]) { response in
                guard response.status == .ok else { throw HTTPError(response.status) }
                return try JSONDecoder().decode(Beat.self, from: response.body).viewers
            }
        }

        func addViewerRows(_ accounts: [String], site: TenantInstallation? = nil, issueID: String = "10001") async throws {
            for account in accounts {
                try await testApp.pool.query("""
                    INSERT INTO viewers VALUES (\((site ?? siteA).clientKey), \(issueID), 'DEMO-1', \(account), 'tab-1', now(), now())
                    """)
            }
        }

        func status(_ account: String, site: TenantInstallation? = nil) async throws -> String? {
            try await testApp.parts.userDetails.details(tenant: (site ?? siteA).clientKey, accountID: account)?.status
        }

        var enricher: UserEnricher { testApp.parts.enricher }
    }

    func withHarness(environment: [String: String] = [:], _ body: @escaping @Sendable (Harness) async throws -> Void) async throws {
        let jira = JiraStandIn()
        await jira.addSite("siteA", sharedSecret: Self.secretA)
        await jira.addSite("siteB", sharedSecret: Self.secretB)
        try await jira.serve { jiraURL in
            let siteA = TenantInstallation(clientKey: "jira:site-a", baseURL: URL(string: "\(jiraURL)/siteA")!, productType: "jira", sharedSecret: Self.secretA)
            let siteB = TenantInstallation(clientKey: "jira:site-b", baseURL: URL(string: "\(jiraURL)/siteB")!, productType: "jira", sharedSecret: Self.secretB)
            var settings = ["PERSONAL_DATA_REPORT_URL": "\(jiraURL)/app/report-accounts/", "JIRA_TIMEOUT_SECONDS": "2"]
            settings.merge(environment) { $1 }
            try await TestApp.with(environment: settings) { testApp, app in
                try await testApp.tenants.install(siteA)
                try await testApp.tenants.install(siteB)
                try await app.test(.router) { client in
                    try await body(Harness(jira: jira, testApp: testApp, client: client, siteA: siteA, siteB: siteB))
                }
            }
        }
        let unverified = await jira.unverified
        #expect(unverified.isEmpty, "requests the stand-in could not verify: \(unverified)")
    }

    @Test func namesAndAvatarsAppearAfterEnrichment() async throws {
        try await withHarness { h in
            await h.jira.addUser(accountId: "alice", displayName: "Alice Example", avatar: "https://avatars.example.com/alice.png")
            let first = try await h.panel("alice")
            #expect(first.html.contains("Jira user"), "a placeholder until the name is known")
            let ticket = try #require(first.ticket)
            #expect(await eventually { try await h.heartbeat(ticket).first?.displayName == "Alice Example" })
            let item = try #require(try await h.heartbeat(ticket).first)
            #expect(item.avatarUrl == "https://avatars.example.com/alice.png")
            let again = try await h.panel("alice")
            #expect(again.html.contains("Alice Example"))
            #expect(again.html.contains(#"src="https://avatars.example.com/alice.png""#))
        }
    }

    @Test func tenUnknownViewersCauseOneBulkCall() async throws {
        try await withHarness { h in
            let accounts = (1...10).map { "user-\($0)" }
            for account in accounts { await h.jira.addUser(accountId: account, displayName: "Person \(account)") }
            try await h.addViewerRows(Array(accounts.dropFirst()))
            let panel = try await h.panel(accounts[0])  // lists all ten, none known
            #expect(await eventually { await h.enricher.isIdle })
            let calls = await h.jira.userCalls(site: "siteA")
            #expect(calls.count == 1)
            #expect(calls.first?.path == "/rest/api/3/user/bulk")
            #expect(Set(calls.first?.accountIDs ?? []) == Set(accounts))
            let names = try await h.heartbeat(try #require(panel.ticket)).compactMap(\.displayName)
            #expect(names.count == 10)
        }
    }

    @Test func concurrentHeartbeatsForOneUnknownAccountCauseOneFetch() async throws {
        try await withHarness { h in
            await h.jira.addUser(accountId: "alice", displayName: "Alice")
            await h.jira.setBehaviour(.slow(seconds: 1), for: "siteA")
            let ticket = try #require(try await h.panel("alice").ticket)
            try await withThrowingTaskGroup(of: Void.self) { group in
                for _ in 0..<100 {
                    group.addTask { _ = try await h.heartbeat(ticket) }
                }
                try await group.waitForAll()
            }
            #expect(await eventually { await h.enricher.isIdle })
            #expect(await h.jira.userCalls().count == 1)
            #expect(try await h.heartbeat(ticket).first?.displayName == "Alice")
        }
    }

    @Test func rateLimitPausesOnlyThatSite() async throws {
        try await withHarness { h in
            await h.jira.addUser(accountId: "alice", displayName: "Alice")
            await h.jira.addUser(accountId: "bob", displayName: "Bob")
            await h.jira.setBehaviour(.rateLimited(retryAfter: 2, times: 1), for: "siteA")
            let alice = try #require(try await h.panel("alice").ticket)
            #expect(await eventually { await h.jira.userCalls(site: "siteA").count == 1 })
            let limitedAt = try #require(await h.jira.userCalls(site: "siteA").first)
            #expect(limitedAt.status == 429)

            // Site B is served while site A waits.
            let bob = try #require(try await h.panel("bob", site: h.siteB).ticket)
            #expect(await eventually(timeout: .seconds(1.5)) { try await h.heartbeat(bob).first?.displayName == "Bob" })
            #expect(await h.jira.userCalls(site: "siteA").count == 1, "no call to site A before Retry-After")

            #expect(await eventually { try await h.heartbeat(alice).first?.displayName == "Alice" })
            let calls = await h.jira.userCalls(site: "siteA")
            #expect(calls.count == 2)
            #expect(calls[1].at.timeIntervalSince(limitedAt.at) >= 1.95, "retried \(calls[1].at.timeIntervalSince(limitedAt.at)) s after the 429")
        }
    }

    @Test func failingOrHangingJiraNeverHoldsUpHeartbeats() async throws {
        try await withHarness { h in
            await h.jira.addUser(accountId: "alice", displayName: "Alice")
            await h.jira.setBehaviour(.hang(seconds: 5), for: "siteA")
            let ticket = try #require(try await h.panel("alice").ticket)
            for _ in 0..<5 {
                let viewers = try await h.heartbeat(ticket)
                #expect(viewers.map(\.accountId) == ["alice"])
                #expect(viewers.first?.displayName == nil)
            }
            // All answered while the lookup was still hanging: it has not completed once.
            #expect(await h.jira.userCalls().isEmpty)

            await h.jira.setBehaviour(.serverError, for: "siteB")
            await h.jira.addUser(accountId: "bob", displayName: "Bob")
            let bob = try #require(try await h.panel("bob", site: h.siteB).ticket)
            let started = Date()
            while Date().timeIntervalSince(started) < 2.5 {
                _ = try await h.heartbeat(bob)
                try await Task.sleep(for: .milliseconds(100))
            }
            // Exponential backoff from 1 s: a handful of calls, not one per heartbeat.
            let failures = await h.jira.userCalls(site: "siteB")
            #expect(failures.count >= 1 && failures.count <= 3, "\(failures.count) calls in 2.5 s")
        }
    }

    @Test func accountsJiraDoesNotReturnAreRememberedAndNotAskedAgain() async throws {
        try await withHarness { h in
            let ticket = try #require(try await h.panel("ghost").ticket)
            #expect(await eventually { try await h.status("ghost") == "missing" })
            for _ in 0..<5 { _ = try await h.heartbeat(ticket) }
            #expect(await eventually { await h.enricher.isIdle })
            #expect(await h.jira.userCalls().count == 1)
        }
    }

    @Test func singleLookupsWhenBulkIsRefused() async throws {
        try await withHarness { h in
            await h.jira.setBehaviour(.noBulk, for: "siteA")
            await h.jira.addUser(accountId: "alice", displayName: "Alice")
            await h.jira.addUser(accountId: "bob", displayName: "Bob")
            try await h.addViewerRows(["bob", "nobody"])
            let ticket = try #require(try await h.panel("alice").ticket)
            #expect(await eventually { Set(try await h.heartbeat(ticket).compactMap(\.displayName)) == ["Alice", "Bob"] })
            #expect(await eventually { try await h.status("nobody") == "missing" })
            #expect(await eventually { await h.enricher.isIdle })
            let paths = await h.jira.userCalls().map(\.path)
            #expect(paths.first == "/rest/api/3/user/bulk")
            #expect(paths.filter { $0 == "/rest/api/3/user" }.count == 3)
        }
    }

    @Test func appAccountsAreNeverListedAndHiddenProfilesGetTheDefaultAvatar() async throws {
        try await withHarness { h in
            await h.jira.addUser(accountId: "robot", displayName: "Automation for Jira", accountType: "app")
            await h.jira.addUser(accountId: "hidden", displayName: "Former user")  // no avatar: hidden profile
            try await h.addViewerRows(["robot"])
            let ticket = try #require(try await h.panel("hidden").ticket)
            #expect(await eventually { try await h.heartbeat(ticket).map(\.accountId) == ["hidden"] })
            let listed = try await h.heartbeat(ticket)
            #expect(listed.first?.displayName == "Former user")
            #expect(listed.first?.avatarUrl == nil)
            let html = try await h.panel("hidden").html
            #expect(html.contains(#"src="public/avatar-default.svg""#))
            #expect(!html.contains("Automation for Jira"))
            let robot = try await h.testApp.parts.userDetails.details(tenant: h.siteA.clientKey, accountID: "robot")
            #expect(robot?.status == "not_person")
            #expect(robot?.displayName == nil, "no personal data kept for non-people")
        }
    }

    @Test func aDisplayNameWithMarkupRendersAsText() async throws {
        try await withHarness { h in
            let hostile = #"<img src=x onerror=alert(1)>"#
            await h.jira.addUser(accountId: "mallory", displayName: hostile)
            let ticket = try #require(try await h.panel("mallory").ticket)
            #expect(await eventually { try await h.heartbeat(ticket).first?.displayName == hostile })
            let html = try await h.panel("mallory").html
            #expect(!html.contains("<img src=x"))
            #expect(html.contains("&lt;img src=x onerror=alert(1)&gt;"))
        }
    }

    @Test func uninstallErasesCachedDetails() async throws {
        try await withHarness { h in
            await h.jira.addUser(accountId: "alice", displayName: "Alice")
            _ = try await h.panel("alice")
            #expect(await eventually { try await h.status("alice") == "found" })
            try await h.testApp.parts.tenants.uninstall(clientKey: h.siteA.clientKey)
            #expect(try await h.status("alice") == nil)
            #expect(try await h.testApp.pool.query("SELECT count(*) AS n FROM viewers")[0].decode(Int.self, "n") == 0)
        }
    }

    @Test func closedAccountsAreErasedUpdatedOnesRefetchedAndNothingIsReportedTwiceInACycle() async throws {
        try await withHarness { h in
            await h.jira.addUser(accountId: "alice", displayName: "Alice")
            await h.jira.addUser(accountId: "bob", displayName: "Bob")
            try await h.addViewerRows(["bob"])
            let ticket = try #require(try await h.panel("alice").ticket)
            #expect(await eventually { try await h.heartbeat(ticket).compactMap(\.displayName).sorted() == ["Alice", "Bob"] })

            await h.jira.renameUser("alice", to: "Alice Renamed")
            await h.jira.setReportAnswer { accounts in
                let statuses = accounts.map { id in #"{"accountId":"\#(id)","status":"\#(id == "bob" ? "closed" : "updated")"}"# }
                return (200, ["Cycle-Period": "604800"], #"{"accounts":[\#(statuses.joined(separator: ","))]}"#)
            }
            let summary = try await h.testApp.parts.reporter.runOnce()
            #expect(summary.reported == 2)
            #expect(summary.closed == 1)
            #expect(summary.updated == 1)
            let reports = await h.jira.reports
            #expect(Set(reports.compactMap { $0["accountId"] }) == ["alice", "bob"])
            #expect(reports.allSatisfy { ISO8601DateFormatter.withFractions.date(from: $0["updatedAt"] ?? "") != nil })

            // Closed: erased everywhere.
            #expect(try await h.status("bob") == nil)
            #expect(try await h.testApp.pool.query("SELECT count(*) AS n FROM viewers WHERE account_id = 'bob'")[0].decode(Int.self, "n") == 0)
            // Updated: fetched again.
            #expect(await eventually { try await h.heartbeat(ticket).first?.displayName == "Alice Renamed" })

            // A restart: a new reporter over the same database has nothing due this cycle.
            let restarted = PersonalDataReporter(
                pool: h.testApp.pool, client: JiraClient(appKey: "whos-looking"), repository: h.testApp.parts.userDetails,
                enricher: h.enricher, credentials: { _ in .available(.connect(baseURL: h.siteA.baseURL, sharedSecret: Self.secretA)) },
                settings: .init(reportURL: h.testApp.configuration.personalDataReportURL, interval: .seconds(3600)), logger: TestDatabase.logger
            )
            #expect(try await restarted.runOnce().requests == 0)
            #expect(await h.jira.reports.count == 2)
            let cycle = try await h.testApp.pool.query("SELECT value FROM app_settings WHERE name = 'personal_data_cycle_seconds'")
            #expect(try cycle.first?.decode(String.self, "value") == "604800")
        }
    }

    /// Two instances never report the same batch: a run finding the report lock held skips.
    @Test func oneReporterAtATimeAcrossInstances() async throws {
        try await withHarness { h in
            await h.jira.addUser(accountId: "alice", displayName: "Alice")
            _ = try await h.panel("alice")
            #expect(await eventually { try await h.status("alice") == "found" })
            // Another instance's run holds the lock on a connection of its own.
            let other = PostgresPool(configuration: .init(conninfo: h.testApp.pool.configuration.conninfo, maxConnections: 1), logger: TestDatabase.logger)
            try await other.withConnection { connection in
                try await connection.query("SELECT pg_advisory_lock(\(PersonalDataReporter.reportLockKey))")
                let skipped = try await h.testApp.parts.reporter.runOnce()
                #expect(skipped.anotherInstanceReporting)
                #expect(skipped.requests == 0)
                #expect(await h.jira.reports.isEmpty)
                try await connection.query("SELECT pg_advisory_unlock(\(PersonalDataReporter.reportLockKey))")
            }
            await other.close()
            let summary = try await h.testApp.parts.reporter.runOnce()
            #expect(!summary.anotherInstanceReporting)
            #expect(summary.reported == 1)
        }
    }

    /// One site whose report fails does not stop the others' (it is retried next run).
    @Test func aFailingSiteDoesNotStopReportingForTheOthers() async throws {
        try await withHarness { h in
            await h.jira.addUser(accountId: "alice", displayName: "Alice")
            await h.jira.addUser(accountId: "bob", displayName: "Bob")
            _ = try await h.panel("alice", site: h.siteA)
            _ = try await h.panel("bob", site: h.siteB)
            #expect(await eventually { try await h.status("alice", site: h.siteA) == "found" })
            #expect(await eventually { try await h.status("bob", site: h.siteB) == "found" })
            await h.jira.setReportAnswer { accounts in accounts.contains("alice") ? (500, [:], "") : (204, [:], "") }
            let summary = try await h.testApp.parts.reporter.runOnce()
            #expect(summary.reported == 1, "site B is reported although site A (first in order) fails")
            #expect(await h.jira.reports.compactMap { $0["accountId"] }.contains("bob"))
            let reported = try await h.testApp.pool.query("SELECT account_id FROM user_details WHERE reported_at IS NOT NULL")
            #expect(try reported.map { try $0.decode(String.self, "account_id") } == ["bob"], "alice's failed report is not marked done")
            await h.jira.setReportAnswer { _ in (204, [:], "") }
            #expect(try await h.testApp.parts.reporter.runOnce().reported == 1, "site A is retried on the next run")
        }
    }

    /// Header values from outside can neither crash the process (`Int(inf)`) nor make it wait for ever.
    @Test(arguments: ["inf", "nan", "-5", "1e300", "abc", "-inf"])
    func hostileHeaderValuesAreIgnored(_ value: String) async throws {
        try await withHarness { h in
            await h.jira.addUser(accountId: "alice", displayName: "Alice")
            _ = try await h.panel("alice")
            #expect(await eventually { try await h.status("alice") == "found" })
            await h.jira.setReportAnswer { _ in (204, ["Cycle-Period": value], "") }
            #expect(try await h.testApp.parts.reporter.runOnce().reported == 1)
            let cycle = try await h.testApp.pool.query("SELECT value FROM app_settings WHERE name = 'personal_data_cycle_seconds'")
            #expect(cycle.isEmpty, "a Cycle-Period of \(value) is not stored")

            try await h.testApp.pool.query("UPDATE user_details SET reported_at = NULL")
            await h.jira.setReportAnswer { _ in (429, ["Retry-After": value], "") }
            let started = ContinuousClock.now
            let summary = try await h.testApp.parts.reporter.runOnce()
            #expect(summary.reported == 0)
            #expect(ContinuousClock.now - started < .seconds(5), "a Retry-After of \(value) neither spins nor waits a year")
        }
    }

    @Test func reportingWaitsForRetryAfter() async throws {
        try await withHarness { h in
            await h.jira.addUser(accountId: "alice", displayName: "Alice")
            _ = try await h.panel("alice")
            #expect(await eventually { try await h.status("alice") == "found" })
            let limitedUntil = Date() + 1
            await h.jira.setReportAnswer { _ in Date() < limitedUntil ? (429, ["Retry-After": "1"], "") : (204, [:], "") }
            let started = Date()
            let summary = try await h.testApp.parts.reporter.runOnce()
            #expect(summary.requests == 2)
            #expect(summary.reported == 1)
            #expect(Date().timeIntervalSince(started) >= 0.95)
        }
    }
}

extension ISO8601DateFormatter {
    nonisolated(unsafe) static let withFractions: ISO8601DateFormatter = {
        let formatter = ISO8601DateFormatter()
        formatter.formatOptions = [.withInternetDateTime, .withFractionalSeconds]
        return formatter
    }()
}
