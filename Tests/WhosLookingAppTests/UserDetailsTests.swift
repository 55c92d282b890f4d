import Clocks
import Connect
import Foundation
import Hummingbird
import HummingbirdTesting
import Libpq
import Presence
import Synchronization
import Tenants
import TestSupport
import Testing
import UserDirectory
@testable import WhosLookingApp

/// Names and avatars from a local Jira stand-in over real HTTP, and personal data reporting.
@Suite("Viewer details and personal data", .timeLimit(.minutes(3)))
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
            let token = try HS256.sign(
                ConnectClaims(
                    iss: site.clientKey, sub: account, iat: now, exp: now + 180,
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
            try await client.execute(uri: "/api/issues/\(issueID)/heartbeat", method: .post, headers: [.authorization: "Ticket \(ticket)"]) {
                response in
                guard response.status == .ok else { throw HTTPError(response.status) }
                return try JSONDecoder().decode(Beat.self, from: response.body).viewers
            }
        }

        func addViewerRows(_ accounts: [String], site: TenantInstallation? = nil, issueID: String = "10001") async throws {
            for account in accounts {
                try await testApp.pool.query(
                    """
                    INSERT INTO viewers VALUES (\((site ?? siteA).clientKey), \(issueID), 'DEMO-1', \(account), 'tab-1', now(), now())
                    """)
            }
        }

        func status(_ account: String, site: TenantInstallation? = nil) async throws -> String? {
            try await testApp.parts.userDetails.details(tenant: (site ?? siteA).clientKey, accountID: account)?.status
        }

        var enricher: UserEnricher { testApp.parts.enricher }

        /// A reporter as the app makes it (both sites, the stand-in's report URL), whose waits run on `clock`.
        func reporter(clock: any Clock<Duration>, settings: PersonalDataReporter.Settings? = nil) -> PersonalDataReporter {
            let settings = settings ?? .init(reportURL: testApp.configuration.personalDataReportURL, interval: .seconds(3600))
            let sites = [siteA.clientKey: siteA, siteB.clientKey: siteB]
            return PersonalDataReporter(
                pool: testApp.pool, client: JiraClient(appKey: JiraStandIn.appKey, timeout: .seconds(2)), repository: testApp.parts.userDetails,
                enricher: enricher,
                credentials: { clientKey in
                    guard let site = sites[clientKey] else { return .uninstalled }
                    return .available(.connect(baseURL: site.baseURL, sharedSecret: site.sharedSecret))
                },
                settings: settings, clock: clock, logger: TestDatabase.logger
            )
        }

        /// Calls to the personal data reporting API so far.
        var reportCalls: Int {
            get async { await jira.calls.filter { $0.path == "/app/report-accounts/" }.count }
        }
    }

    func withHarness(environment: [String: String] = [:], _ body: @escaping @Sendable (Harness) async throws -> Void) async throws {
        let jira = JiraStandIn()
        await jira.addSite("siteA", sharedSecret: Self.secretA)
        await jira.addSite("siteB", sharedSecret: Self.secretB)
        try await jira.serve { jiraURL in
            let siteA = TenantInstallation(
                clientKey: "jira:site-a", baseURL: URL(string: "\(jiraURL)/siteA")!, productType: "jira", sharedSecret: Self.secretA)
            let siteB = TenantInstallation(
                clientKey: "jira:site-b", baseURL: URL(string: "\(jiraURL)/siteB")!, productType: "jira", sharedSecret: Self.secretB)
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
        // A hundred at once from one person: above the per-person queue quota a real person never reaches.
        try await withHarness(environment: ["HEARTBEAT_QUEUE_LIMIT_PER_ACCOUNT": "200"]) { h in
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

    /// A 429 pauses that site's lookups exactly `Retry-After` (on a test clock), while another site is served.
    @Test func rateLimitPausesOnlyThatSite() async throws {
        let clock = SteppedClock()
        try await EnricherHarness.with(clock: clock) { h in
            await h.jira.addUser(accountId: "alice", displayName: "Alice")
            await h.jira.addUser(accountId: "bob", displayName: "Bob")
            await h.jira.setBehaviour(.rateLimited(retryAfter: 7, times: 1), for: "site")
            try await TestApp.running(h.enricher) {
                let g = Duration.milliseconds(20)
                h.request(["alice"])
                #expect(await clock.runWaits(1))
                #expect(await eventually { await h.jira.userCalls(site: "site").map(\.status) == [429] })
                #expect(await clock.untilWaits(2))
                #expect(clock.waits == [.init(.zero, g), .init(g, .seconds(7))], "site A pauses exactly Retry-After")

                // Site B is served while site A waits: its gather delay, its call, then its worker's last gather.
                h.request(["bob"], site: h.other)
                #expect(await clock.untilWaits(3))
                #expect(clock.waits.last == .init(g, g))
                await clock.advance(by: g)
                #expect(await eventually { try await h.status("bob", site: h.other) == "found" })
                #expect(await clock.untilWaits(4))

                await clock.advance(to: g + .seconds(7) - .milliseconds(1))
                #expect(await h.jira.userCalls(site: "site").count == 1, "no call to site A before Retry-After")
                #expect(clock.waits.count == 4, "site A still waits")
                #expect(await clock.isWaitedOn)
                await clock.advance(by: .milliseconds(1))
                #expect(await clock.untilWaits(5))
                #expect(clock.waits.last == .init(g + .seconds(7), g), "the pause is over at exactly Retry-After; then the gather delay")
                await clock.advance(by: g)
                #expect(await eventually { try await h.status("alice") == "found" })
                #expect(await h.jira.userCalls(site: "site").map(\.status) == [429, 200])
                #expect(await h.jira.userCalls(site: "other").map(\.status) == [200])
            }
        }
    }

    /// Heartbeats answer at once while the site's Jira hangs (longer than the app's 2 s Jira
    /// timeout). Backoff after failures: `serverErrorsBackOffExponentiallyWithJitter`.
    @Test func failingOrHangingJiraNeverHoldsUpHeartbeats() async throws {
        try await withHarness { h in
            await h.jira.addUser(accountId: "alice", displayName: "Alice")
            await h.jira.setBehaviour(.hang(seconds: 3), for: "siteA")
            let ticket = try #require(try await h.panel("alice").ticket)
            // The lookup has reached Jira, which holds it: the heartbeats below race a hanging lookup.
            #expect(await eventually { await h.jira.userCallsArrived == 1 })
            for _ in 0..<5 {
                let viewers = try await h.heartbeat(ticket)
                #expect(viewers.map(\.accountId) == ["alice"])
                #expect(viewers.first?.displayName == nil)
            }
            // All answered while the lookup was still hanging: it has not completed once.
            #expect(await h.jira.userCalls().isEmpty)
        }
    }

    /// 5xx answers back off exponentially from 1 s, doubling up to `backoffMax`, scaled by a
    /// jitter factor drawn from 0.5...1.0 (here each bound in turn), on a test clock. Requests
    /// made meanwhile cause no call; they join the retry.
    @Test(arguments: [0.5, 1.0])
    func serverErrorsBackOffExponentiallyWithJitter(_ factor: Double) async throws {
        let clock = SteppedClock()
        let asked = Recorded<ClosedRange<Double>>()
        var settings = UserEnricher.Settings()
        settings.backoffMax = .seconds(5)
        settings.jitter = { range in
            asked.append(range)
            return factor == 1 ? range.upperBound : range.lowerBound
        }
        try await EnricherHarness.with(settings: settings, clock: clock) { h in
            await h.jira.addUser(accountId: "alice", displayName: "Alice")
            await h.jira.addUser(accountId: "bob", displayName: "Bob")
            await h.jira.setBehaviour(.serverError, for: "site")
            try await TestApp.running(h.enricher) {
                let g = Duration.milliseconds(20)
                h.request(["alice"])
                var expected: [SteppedClock.Wait] = [.init(.zero, g)]
                // Five failures: backoff 1, 2, 4, then 5 and 5 s (the cap), times the factor.
                for (failure, ceiling) in [1, 2, 4, 5, 5].enumerated() {
                    #expect(await clock.runWaits(expected.count))
                    #expect(await eventually { await h.jira.userCalls(site: "site").count == failure + 1 })
                    #expect(await clock.untilWaits(expected.count + 1))
                    let backoff = Duration.seconds(ceiling) * factor
                    expected.append(.init(expected.last!.end, backoff))
                    #expect(clock.waits == expected, "failure \(failure + 1)")
                    for _ in 0..<5 { h.request(["alice", "bob"]) }
                    await clock.advance(to: expected.last!.end - .milliseconds(1))
                    #expect(await h.jira.userCalls(site: "site").count == failure + 1, "no call during the backoff")
                    expected.append(.init(expected.last!.end, g))
                }
                #expect(asked.all == Array(repeating: 0.5...1.0, count: 5))

                await h.jira.setBehaviour(.normal, for: "site")
                #expect(await clock.runWaits(expected.count))
                #expect(await eventually { try await h.statuses(["alice", "bob"]) == ["alice": "found", "bob": "found"] })
                let calls = await h.jira.userCalls(site: "site")
                #expect(calls.map(\.status) == [500, 500, 500, 500, 500, 200])
                #expect(Set(calls.last?.accountIDs ?? []) == ["alice", "bob"])
            }
        }
    }

    /// `Retry-After` from the user API is read as seconds up to an hour; anything else (`nan`,
    /// negative, not a number) pauses the default minute. Either way it is one pause that a
    /// clock reaches, with no call (no spin) before it ends.
    @Test(arguments: [("inf", 3600.0), ("1e300", 3600), ("86400", 3600), ("nan", 60), ("-5", 60), ("-inf", 60), ("abc", 60), ("7.5", 7.5)])
    func hostileRetryAfterFromTheUserAPI(_ value: String, pauseSeconds: Double) async throws {
        let clock = SteppedClock()
        let calls = CallCount()
        let router = Router()
        router.get(":site/rest/api/3/user/bulk") { _, _ -> Response in
            if calls.next() == 1 { return Response(status: .tooManyRequests, headers: [.retryAfter: value]) }
            return Response(
                status: .ok, headers: [.contentType: "application/json"], body: .init(byteBuffer: ByteBuffer(string: #"{"values":[],"isLast":true}"#))
            )
        }
        try await LiveServer.run(router: router) { port in
            try await TestApp.withMigratedPool { pool in
                let site = TenantInstallation(
                    clientKey: "jira:hostile", baseURL: URL(string: "http://127.0.0.1:\(port)/site")!,
                    sharedSecret: "hostile-site-secret-0123456789abcdef"
                )
                try await TenantRepository(pool: pool, secrets: try SecretBox(base64Key: SecretBox.generateKey())).install(site)
                let enricher = UserEnricher(
                    client: JiraClient(appKey: JiraStandIn.appKey, timeout: .seconds(5)),
                    repository: UserDetailsRepository(pool: pool, ttl: 3600, missingTTL: 3600),
                    credentials: { _ in .available(.connect(baseURL: site.baseURL, sharedSecret: site.sharedSecret)) }, clock: clock,
                    logger: TestDatabase.logger
                )
                try await TestApp.running(enricher) {
                    let g = Duration.milliseconds(20)
                    let pause = Duration.milliseconds(Int64(pauseSeconds * 1000))
                    enricher.request(tenant: site.clientKey, accountIDs: ["alice"])
                    #expect(await clock.runWaits(1))
                    #expect(await clock.untilWaits(2))
                    #expect(clock.waits == [.init(.zero, g), .init(g, pause)], "a Retry-After of \(value)")
                    await clock.advance(by: pause - .milliseconds(1))
                    #expect(calls.count == 1, "no call before the pause ends")
                    #expect(clock.waits.count == 2, "no wait begins before the pause ends: no spin")
                    #expect(await clock.runWaits(3))
                    #expect(await eventually { await enricher.isIdle })
                    #expect(calls.count == 2)
                }
            }
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
            var fetchedAt: [String: Date] = [:]
            for row in try await h.testApp.pool.query("SELECT account_id, fetched_at FROM user_details") {
                fetchedAt[try row.decode(String.self, "account_id")] = try row.decode(Date.self, "fetched_at")
            }
            let summary = try await h.testApp.parts.reporter.runOnce()
            #expect(summary.reported == 2)
            #expect(summary.closed == 1)
            #expect(summary.updated == 1)
            let reports = await h.jira.reports
            #expect(Set(reports.compactMap { $0["accountId"] }) == ["alice", "bob"])
            // updatedAt is when we fetched the account's details (to the millisecond the format keeps).
            for report in reports {
                let updatedAt = ISO8601DateFormatter.withFractions.date(from: report["updatedAt"] ?? "")
                let fetched = fetchedAt[report["accountId"] ?? ""]
                #expect(
                    updatedAt.flatMap { date in fetched.map { abs(date.timeIntervalSince($0)) < 0.001 } } == true,
                    "\(report) against fetched_at \(String(describing: fetched))")
            }

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
            let other = PostgresPool(
                configuration: .init(conninfo: h.testApp.pool.configuration.conninfo, maxConnections: 1), logger: TestDatabase.logger)
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

            // On an immediate clock a wait returns at once but moves the clock: none may be taken.
            try await h.testApp.pool.query("UPDATE user_details SET reported_at = NULL")
            await h.jira.setReportAnswer { _ in (429, ["Retry-After": value], "") }
            let clock = ImmediateClock()
            let summary = try await h.reporter(clock: clock).runOnce()
            #expect(summary.reported == 0)
            #expect(summary.requests == 1, "a Retry-After of \(value) is not retried")
            #expect(clock.now == .init(), "a Retry-After of \(value) is not waited for")
        }
    }

    /// A 429 with `Retry-After: 7` is waited out exactly (on a test clock), then the batch is reported.
    @Test func reportingWaitsForRetryAfter() async throws {
        try await withHarness { h in
            await h.jira.addUser(accountId: "alice", displayName: "Alice")
            _ = try await h.panel("alice")
            #expect(await eventually { try await h.status("alice") == "found" })
            let answers = CallCount()
            await h.jira.setReportAnswer { _ in answers.next() == 1 ? (429, ["Retry-After": "7"], "") : (204, [:], "") }
            let clock = SteppedClock()
            let reporter = h.reporter(clock: clock)
            let run = Task { try await reporter.runOnce() }
            #expect(await clock.untilWaits(1))
            #expect(clock.waits == [.init(.zero, .seconds(7))])
            await clock.advance(by: .seconds(7) - .milliseconds(10))
            #expect(await clock.isWaitedOn, "still waiting at 6.99 s")
            #expect(await h.reportCalls == 1)
            await clock.advance(by: .milliseconds(10))
            // Cancelled (and so failed) if it is still waiting: the test never hangs.
            if !(await eventually { await h.reportCalls == 2 }) { run.cancel() }
            let summary = try await run.value
            #expect(summary.requests == 2)
            #expect(summary.reported == 1)
        }
    }

    /// At most three waits inside one run (here 3 × 7 s on an immediate clock); a `Retry-After`
    /// over a minute is not waited for at all. Either way the site is left for the next run.
    @Test(arguments: [("7", 3, Duration.seconds(21)), ("60", 3, .seconds(180)), ("61", 0, .zero)])
    func reportingWaitsAtMostThreeTimesAndAtMostAMinute(_ retryAfter: String, waits: Int, waited: Duration) async throws {
        try await withHarness { h in
            await h.jira.addUser(accountId: "alice", displayName: "Alice")
            _ = try await h.panel("alice")
            #expect(await eventually { try await h.status("alice") == "found" })
            await h.jira.setReportAnswer { _ in (429, ["Retry-After": retryAfter], "") }
            let clock = ImmediateClock()
            let summary = try await h.reporter(clock: clock).runOnce()
            #expect(summary.requests == waits + 1)
            #expect(summary.reported == 0)
            #expect(ImmediateClock.Instant().duration(to: clock.now) == waited)
        }
    }

    /// Runs start at the report interval times a jitter factor drawn from 0.5...1.5: here 100 s
    /// times each bound in turn, so the first run comes at exactly 50 s and the next 150 s later.
    @Test func reportRunsComeAtTheJitteredInterval() async throws {
        try await withHarness { h in
            await h.jira.addUser(accountId: "alice", displayName: "Alice")
            _ = try await h.panel("alice")
            #expect(await eventually { try await h.status("alice") == "found" })
            let clock = SteppedClock()
            let asked = Recorded<ClosedRange<Double>>()
            var settings = PersonalDataReporter.Settings(reportURL: h.testApp.configuration.personalDataReportURL, interval: .seconds(100))
            settings.jitter = { range in asked.append(range) == 1 ? range.lowerBound : range.upperBound }
            let reporter = h.reporter(clock: clock, settings: settings)
            try await TestApp.running(reporter) {
                #expect(await clock.untilWaits(1))
                #expect(clock.waits == [.init(.zero, .seconds(50))])
                await clock.advance(by: .seconds(50) - .milliseconds(10))
                #expect(await h.reportCalls == 0, "no run before the jittered interval")
                await clock.advance(by: .milliseconds(10))
                #expect(await eventually { await h.reportCalls == 1 })
                #expect(await clock.untilWaits(2))
                #expect(clock.waits == [.init(.zero, .seconds(50)), .init(.seconds(50), .seconds(150))])
                #expect(asked.all == [0.5...1.5, 0.5...1.5])
            }
        }
    }
}

/// Counts calls made from any thread (a stand-in's handler, a report answer).
final class CallCount: Sendable {
    private let value = Mutex(0)

    /// Counts one more call; answers its number, from 1.
    func next() -> Int {
        value.withLock {
            $0 += 1
            return $0
        }
    }

    var count: Int { value.withLock { $0 } }
}

/// Values recorded from any thread (the ranges a jitter source was asked for).
final class Recorded<Value: Sendable>: Sendable {
    private let values = Mutex<[Value]>([])

    /// Records one more value; answers how many there are now.
    @discardableResult
    func append(_ value: Value) -> Int {
        values.withLock {
            $0.append(value)
            return $0.count
        }
    }

    var all: [Value] { values.withLock { $0 } }
}

extension ISO8601DateFormatter {
    nonisolated(unsafe) static let withFractions: ISO8601DateFormatter = {
        let formatter = ISO8601DateFormatter()
        formatter.formatOptions = [.withInternetDateTime, .withFractionalSeconds]
        return formatter
    }()
}
