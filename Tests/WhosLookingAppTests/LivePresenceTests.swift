import EmbeddedPostgres
import Foundation
import Libpq
@testable import Presence
import ServiceLifecycle
import Synchronization
import TestSupport
import Testing

/// The change feed and held waits against a real PostgreSQL: LISTEN/NOTIFY on a dedicated
/// connection, two instances on one database, away tabs, and every way a wait ends.
@Suite("Live presence", .timeLimit(.minutes(3)))
struct LivePresenceTests {
    static let tenant = "jira:live"
    static let issue = IssueRef(tenant: tenant, issueID: "10001")
    static let liveness = ViewerLiveness(activeTTL: 30, awayTTL: 150, awayLimit: 1800)
    /// A change answers a held wait "at once": well before its hold time, with room for a
    /// loaded machine. How fast it really is, the browser tests and scripts/bench measure.
    static let promptly = Duration.seconds(4)

    /// One instance: a repository and a wait room with its own listener, on its own pool.
    struct Instance {
        let pool: PostgresPool
        let presence: PresenceRepository
        let room: WaitRoom

        init(conninfo: String, settings: WaitRoom.Settings = .init(holdFor: .seconds(10)), liveness: ViewerLiveness = LivePresenceTests.liveness) {
            pool = PostgresPool(configuration: .init(conninfo: conninfo, maxConnections: 4), logger: TestDatabase.logger)
            presence = PresenceRepository(pool: pool, liveness: liveness)
            room = WaitRoom(
                repository: presence,
                listener: PostgresListener(
                    configuration: .init(conninfo: conninfo, channels: [ViewerChanges.channel], minimumBackoff: .milliseconds(50))
                ),
                settings: settings, logger: TestDatabase.logger
            )
        }

        func beat(_ account: String, tab: String = "tab", away: Bool = false, seq: Int = 0) async throws -> [Viewer] {
            let viewer = ViewerKey(tenant: LivePresenceTests.tenant, issueID: "10001", accountID: account, tabID: tab)
            return try #require(try await presence.heartbeat(viewer, issueKey: "LIVE-1", away: away, seq: seq))
        }

        func leave(_ account: String, tab: String = "tab", seq: Int = 0) async throws {
            let viewer = ViewerKey(tenant: LivePresenceTests.tenant, issueID: "10001", accountID: account, tabID: tab)
            try await presence.leave(viewer, issueKey: "LIVE-1", seq: seq)
        }

        /// Until the room's listener is listening (a wait is refused before). The probe has no
        /// version and its site is not installed, so once held it is answered at once.
        func waitUntilListening() async throws {
            let listening = await eventually(timeout: .seconds(10)) {
                do {
                    return try await room.wait(for: IssueRef(tenant: "probe", issueID: "0"), version: "") == .uninstalled
                } catch let error as WaitUnavailable where error.reason == .feedDown {
                    return false
                }
            }
            try #require(listening, "the change feed never listened")
        }
    }

    /// A migrated scratch database with one installed tenant, and `count` running instances.
    static func withInstances(
        _ count: Int, settings: WaitRoom.Settings = .init(holdFor: .seconds(10)), liveness: ViewerLiveness = liveness,
        _ body: @Sendable ([Instance]) async throws -> Void
    ) async throws {
        try await TestDatabase.withScratchDatabase { conninfo in
            let instances = (0..<count).map { _ in Instance(conninfo: conninfo, settings: settings, liveness: liveness) }
            try await Migrator(directory: URL(fileURLWithPath: TestApp.migrations)).migrate(pool: instances[0].pool, logger: TestDatabase.logger)
            try await instances[0].pool.query(
                """
                INSERT INTO tenants (client_key, base_url, shared_secret_sealed, secret_key_id, state, installed_at, updated_at)
                VALUES (\(tenant), 'https://live.atlassian.net', '\\x00', 'k', 'installed', now(), now())
                """)
            let group = ServiceGroup(
                configuration: .init(services: instances.map(\.room), gracefulShutdownSignals: [], logger: TestDatabase.logger)
            )
            try await withThrowingTaskGroup(of: Void.self) { tasks in
                tasks.addTask { try await group.run() }
                do {
                    for instance in instances { try await instance.waitUntilListening() }
                    try await body(instances)
                } catch {
                    await group.triggerGracefulShutdown()
                    try? await tasks.waitForAll()
                    for instance in instances { await instance.pool.close() }
                    throw error
                }
                await group.triggerGracefulShutdown()
                try await tasks.waitForAll()
                for instance in instances { await instance.pool.close() }
            }
        }
    }

    /// The wait's outcome and how long it took.
    static func timedWait(_ room: WaitRoom, version: String) async throws -> (WaitRoom.Outcome, Duration) {
        let start = ContinuousClock.now
        let outcome = try await room.wait(for: issue, version: version)
        return (outcome, ContinuousClock.now - start)
    }

    static func outcome(_ body: () async throws -> WaitRoom.Outcome) async -> Result<WaitRoom.Outcome, any Error> {
        do {
            return .success(try await body())
        } catch {
            return .failure(error)
        }
    }

    static func changed(_ outcome: WaitRoom.Outcome) -> [Viewer]? {
        if case .changed(let viewers, _) = outcome { return viewers }
        return nil
    }

    @Test func anArrivalThroughOneInstanceWakesAPanelWaitingOnAnother() async throws {
        try await Self.withInstances(2) { instances in
            let (first, second) = (instances[0], instances[1])
            let alone = try await first.beat("alice")
            async let waited = Self.timedWait(second.room, version: ViewerListVersion.of(alone))
            try await Task.sleep(for: .milliseconds(300))  // the wait is held by now
            _ = try await first.beat("bob")
            let (outcome, took) = try await waited
            #expect(Self.changed(outcome)?.map(\.accountID).sorted() == ["alice", "bob"])
            #expect(took < LivePresenceTests.promptly, "answered after \(took)")
        }
    }

    @Test func aHeartbeatThatChangesNothingKeepsTheWaitUntilItsHoldTime() async throws {
        try await Self.withInstances(1, settings: .init(holdFor: .seconds(1), tick: .milliseconds(50))) { instances in
            let instance = instances[0]
            let version = ViewerListVersion.of(try await instance.beat("alice"))
            async let waited = Self.timedWait(instance.room, version: version)
            try await Task.sleep(for: .milliseconds(200))
            _ = try await instance.beat("alice")  // the same tab again: no change, no notification
            _ = try await instance.beat("alice", tab: "second")  // another tab: notified, but the list is the same
            let (outcome, took) = try await waited
            #expect(outcome == .unchanged)
            #expect(took >= .milliseconds(950) && took < .seconds(3), "answered after \(took)")
        }
    }

    /// Waits end in the order they came, each at its own hold time, with waits answered early
    /// in between (their place in the deadline queue is then skipped, not answered again).
    @Test func staggeredWaitsEachEndAtTheirOwnHoldTime() async throws {
        try await Self.withInstances(1, settings: .init(holdFor: .seconds(1), tick: .milliseconds(50))) { instances in
            let room = instances[0].room
            let version = ViewerListVersion.of(try await instances[0].beat("alice"))
            let took = try await withThrowingTaskGroup(of: Duration?.self) { group in
                for index in 0..<8 {
                    group.addTask { try await Self.timedWait(room, version: version).1 }
                    // Answered at once (not installed), between the held ones.
                    group.addTask {
                        let outcome = try await room.wait(for: IssueRef(tenant: "gone-\(index)", issueID: "1"), version: "")
                        #expect(outcome == .uninstalled)
                        return nil
                    }
                    try await Task.sleep(for: .milliseconds(100))
                }
                return try await group.reduce(into: [Duration]()) { if let took = $1 { $0.append(took) } }
            }
            #expect(took.count == 8)
            // Never early; late only by the machine's scheduling (a wait stuck behind an answered
            // one would not end at all).
            #expect(took.allSatisfy { $0 >= .milliseconds(950) && $0 < .milliseconds(2500) }, "\(took)")
            #expect(room.waiting == 0)
        }
    }

    @Test func awayBackAndLeaveEachWakeTheWaitingPanel() async throws {
        try await Self.withInstances(1) { instances in
            let instance = instances[0]
            _ = try await instance.beat("alice")
            let both = try await instance.beat("bob")
            func next(after shown: [Viewer], _ change: @Sendable () async throws -> Void) async throws -> [Viewer] {
                async let waited = Self.timedWait(instance.room, version: ViewerListVersion.of(shown))
                try await Task.sleep(for: .milliseconds(200))
                try await change()
                let (outcome, took) = try await waited
                #expect(took < LivePresenceTests.promptly, "answered after \(took)")
                return try #require(Self.changed(outcome))
            }
            let away = try await next(after: both) { _ = try await instance.beat("bob", away: true) }
            #expect(away.first { $0.accountID == "bob" }?.isAway == true)
            #expect(away.first { $0.accountID == "alice" }?.isAway == false)
            let back = try await next(after: away) { _ = try await instance.beat("bob") }
            #expect(back.first { $0.accountID == "bob" }?.isAway == false)
            let left = try await next(after: back) { try await instance.leave("bob") }
            #expect(left.map(\.accountID) == ["alice"])
        }
    }

    @Test func aHeartbeatWrittenAfterItsTabsLeaveCannotBringTheTabBack() async throws {
        try await Self.withInstances(1) { instances in
            let instance = instances[0]
            _ = try await instance.beat("alice", seq: 1)
            _ = try await instance.beat("bob", seq: 1)
            _ = try await instance.beat("bob", seq: 2)
            try await instance.leave("bob", seq: 3)
            #expect(try await instance.beat("alice", seq: 2).map(\.accountID) == ["alice"])
            // Bob's heartbeat 2, sent before his leave, written after it (another batch, another instance).
            let late = try await instance.beat("bob", seq: 2)
            #expect(late.map(\.accountID) == ["alice"], "a late heartbeat is answered, and lists nobody it brought back")
            #expect(try await instance.beat("alice", seq: 3).map(\.accountID) == ["alice"])
            // Back from the back/forward cache: a newer heartbeat lists him again.
            #expect(try await instance.beat("bob", seq: 4).map(\.accountID).sorted() == ["alice", "bob"])
            // A leave that overtakes its tab's very first heartbeat still wins.
            try await instance.leave("carol", seq: 2)
            _ = try await instance.beat("carol", seq: 1)
            #expect(try await instance.presence.viewers(tenant: Self.tenant, issueID: "10001").map(\.accountID).sorted() == ["alice", "bob"])
            // Two heartbeats of one tab out of order: the newer state stays.
            _ = try await instance.beat("bob", away: true, seq: 6)
            _ = try await instance.beat("bob", away: false, seq: 5)
            #expect(try await instance.presence.viewers(tenant: Self.tenant, issueID: "10001").first { $0.accountID == "bob" }?.isAway == true)
            // Panels that do not count (seq 0) are written as before: a leave deletes the row.
            _ = try await instance.beat("dave")
            try await instance.leave("dave")
            #expect(try await instance.pool.query("SELECT count(*) AS n FROM viewers WHERE account_id = 'dave'")[0].decode(Int.self, "n") == 0)
            // Tombstones are swept like any row whose heartbeats stopped.
            try await instance.pool.query("UPDATE viewers SET last_seen = now() - interval '1 hour' WHERE gone")
            #expect(try await instance.presence.sweep() == 1)
        }
    }

    @Test func aPersonIsAwayOnlyWhenAllTheirTabsAre() async throws {
        try await Self.withInstances(1) { instances in
            let instance = instances[0]
            _ = try await instance.beat("bob", tab: "one")
            let oneHidden = try await instance.beat("bob", tab: "two", away: true)
            #expect(oneHidden.first?.isAway == false)
            let bothHidden = try await instance.beat("bob", tab: "one", away: true)
            #expect(bothHidden.first?.isAway == true)
        }
    }

    @Test func anAwayTabStaysListedPastTheActiveTTLAndDropsOffAfterTheAwayLimit() async throws {
        let liveness = ViewerLiveness(activeTTL: 10, awayTTL: 60, awayLimit: 120)
        try await Self.withInstances(1, liveness: liveness) { instances in
            let instance = instances[0]
            _ = try await instance.beat("bob", away: true)
            // Its last slow heartbeat 30 s ago: past a visible tab's TTL, within an away tab's.
            try await instance.pool.query("UPDATE viewers SET last_seen = now() - interval '30 seconds' WHERE account_id = 'bob'")
            #expect(try await instance.beat("alice").map(\.accountID).sorted() == ["alice", "bob"])
            #expect(try await instance.presence.sweep() == 0)
            // Away for longer than the limit, though still heartbeating: no longer listed, not swept.
            try await instance.pool.query("UPDATE viewers SET away_since = now() - interval '130 seconds' WHERE account_id = 'bob'")
            _ = try await instance.beat("bob", away: true)
            #expect(try await instance.beat("alice").map(\.accountID) == ["alice"])
            #expect(try await instance.presence.sweep() == 0)
            // Visible again: listed at once, as active.
            let back = try await instance.beat("bob")
            #expect(back.first { $0.accountID == "bob" }?.isAway == false)
            #expect(try await instance.presence.viewers(tenant: Self.tenant, issueID: "10001").map(\.accountID).sorted() == ["alice", "bob"])
            // A visible tab silent past its TTL is swept; the swept issue's panels hear of it.
            try await instance.pool.query("UPDATE viewers SET last_seen = now() - interval '11 seconds' WHERE account_id = 'bob'")
            let version = ViewerListVersion.of(try await instance.presence.viewers(tenant: Self.tenant, issueID: "10001"))
            #expect(version != ViewerListVersion.of(back))
            async let waited = Self.timedWait(instance.room, version: ViewerListVersion.of(back))
            #expect(try await instance.presence.sweep() == 1)
            let (outcome, took) = try await waited
            #expect(Self.changed(outcome)?.map(\.accountID) == ["alice"])
            #expect(took < LivePresenceTests.promptly)
        }
    }

    @Test func aWaitArrivingJustAfterAChangeIsAnsweredAtOnce() async throws {
        try await Self.withInstances(1) { instances in
            let instance = instances[0]
            let before = ViewerListVersion.of(try await instance.beat("alice"))
            _ = try await instance.beat("bob")  // heard while nobody waits
            try await Task.sleep(for: .milliseconds(300))
            let (outcome, took) = try await Self.timedWait(instance.room, version: before)
            #expect(Self.changed(outcome)?.count == 2)
            #expect(took < LivePresenceTests.promptly)
            // A panel with no version yet gets the list at once too.
            let (first, _) = try await Self.timedWait(instance.room, version: "")
            #expect(Self.changed(first)?.count == 2)
        }
    }

    @Test func uninstallAnswersTheWaitingPanels() async throws {
        try await Self.withInstances(1) { instances in
            let instance = instances[0]
            let version = ViewerListVersion.of(try await instance.beat("alice"))
            async let waited = Self.timedWait(instance.room, version: version)
            try await Task.sleep(for: .milliseconds(200))
            try await instance.pool.transaction { connection in
                try await connection.query("UPDATE tenants SET state = 'uninstalled' WHERE client_key = \(Self.tenant)")
                try await ViewerEraser().erase(clientKey: Self.tenant, on: connection)
            }
            let (outcome, took) = try await waited
            #expect(outcome == .uninstalled)
            #expect(took < LivePresenceTests.promptly)
        }
    }

    @Test func aKilledFeedAnswersHeldWaitsRefusesNewOnesAndRecoversByItself() async throws {
        try await Self.withInstances(1) { instances in
            let instance = instances[0]
            let version = ViewerListVersion.of(try await instance.beat("alice"))
            async let held = Self.outcome { try await instance.room.wait(for: Self.issue, version: version) }
            try await Task.sleep(for: .milliseconds(200))
            let killed = try await instance.pool.query(
                """
                SELECT pg_terminate_backend(pid) AS killed FROM pg_stat_activity
                WHERE datname = current_database() AND application_name = 'whoslooking-listen'
                """)
            #expect(killed.count == 1)
            switch await held {
            case .failure(let error as WaitUnavailable): #expect(error.reason == .feedDown)
            case let other: Issue.record("a held wait on a lost feed answered \(other)")
            }
            // Back by itself (backoff from 50 ms), and it hears changes again.
            try await instance.waitUntilListening()
            async let waited = Self.timedWait(instance.room, version: version)
            try await Task.sleep(for: .milliseconds(200))
            _ = try await instance.beat("bob")
            let (outcome, took) = try await waited
            #expect(Self.changed(outcome)?.count == 2)
            #expect(took < LivePresenceTests.promptly)
        }
    }

    @Test func aRestartedDatabaseEndsHeldWaitsAndTheFeedComesBackByItself() async throws {
        let folder = URL(fileURLWithPath: NSTemporaryDirectory()).appendingPathComponent("wl-feed-\(UUID().uuidString.prefix(8))")
        defer { try? FileManager.default.removeItem(at: folder) }
        let cluster = EmbeddedPostgres(dataDirectory: folder.appendingPathComponent("pg"), database: "feed", logger: TestDatabase.logger)
        let conninfo = try await cluster.start()
        let instance = Instance(conninfo: conninfo)
        do {
            try await Migrator(directory: URL(fileURLWithPath: TestApp.migrations)).migrate(pool: instance.pool, logger: TestDatabase.logger)
            try await instance.pool.query(
                """
                INSERT INTO tenants (client_key, base_url, shared_secret_sealed, secret_key_id, state, installed_at, updated_at)
                VALUES (\(Self.tenant), 'https://live.atlassian.net', '\\x00', 'k', 'installed', now(), now())
                """)
            try await TestApp.running(instance.room) {
                try await instance.waitUntilListening()
                let version = ViewerListVersion.of(try await instance.beat("alice"))
                async let held = Self.outcome { try await instance.room.wait(for: Self.issue, version: version) }
                try await Task.sleep(for: .milliseconds(200))
                try await cluster.stop()
                switch await held {
                case .failure(let error as WaitUnavailable): #expect(error.reason == .feedDown)
                case let other: Issue.record("a held wait on a stopped database answered \(other)")
                }
                await #expect(throws: WaitUnavailable(reason: .feedDown)) { try await instance.room.wait(for: Self.issue, version: version) }

                _ = try await cluster.start()
                let back = ContinuousClock.now
                try await instance.waitUntilListening()
                // Within the backoff's ceiling (5 s) of the database being back: sooner than a poll interval.
                #expect(ContinuousClock.now - back < .seconds(10))
                // The unlogged viewers table survived a clean stop; a change is heard again.
                async let waited = Self.timedWait(instance.room, version: version)
                try await Task.sleep(for: .milliseconds(200))
                _ = try await instance.beat("bob")
                let (outcome, took) = try await waited
                #expect(Self.changed(outcome)?.map(\.accountID).sorted() == ["alice", "bob"])
                #expect(took < LivePresenceTests.promptly)
            }
        } catch {
            await instance.pool.close()
            try? await cluster.stop()
            throw error
        }
        await instance.pool.close()
        try await cluster.stop()
    }

    @Test func aFullRoomRefusesAndShutdownAnswersEveryHeldWait() async throws {
        try await TestDatabase.withScratchDatabase { conninfo in
            let instance = Instance(conninfo: conninfo, settings: .init(holdFor: .seconds(30), maxWaiting: 2))
            try await Migrator(directory: URL(fileURLWithPath: TestApp.migrations)).migrate(pool: instance.pool, logger: TestDatabase.logger)
            let group = ServiceGroup(configuration: .init(services: [instance.room], gracefulShutdownSignals: [], logger: TestDatabase.logger))
            try await withThrowingTaskGroup(of: WaitUnavailable.Reason?.self) { tasks in
                tasks.addTask {
                    try await group.run()
                    return nil
                }
                try await instance.waitUntilListening()
                for _ in 0..<2 {
                    tasks.addTask {
                        do {
                            _ = try await instance.room.wait(for: Self.issue, version: "held")
                            return nil
                        } catch let error as WaitUnavailable {
                            return error.reason
                        }
                    }
                }
                let bothHeld = await eventually { instance.room.waiting == 2 }
                #expect(bothHeld)
                await #expect(throws: WaitUnavailable(reason: .full)) { try await instance.room.wait(for: Self.issue, version: "third") }
                let start = ContinuousClock.now
                await group.triggerGracefulShutdown()
                var answers: [WaitUnavailable.Reason] = []
                for try await reason in tasks {
                    if let reason { answers.append(reason) }
                }
                #expect(ContinuousClock.now - start < .seconds(3))
                #expect(answers == [.closed, .closed])
                await #expect(throws: WaitUnavailable(reason: .closed)) { try await instance.room.wait(for: Self.issue, version: "late") }
            }
            await instance.pool.close()
        }
    }

    /// One tab, person or site cannot hold every wait: above its quota a wait is refused
    /// (`overQuota`, 429 at the routes) while other callers and sites are still served.
    @Test func quotasPerTabPersonAndSiteKeepOneCallerFromHoldingEveryWait() async throws {
        var settings = WaitRoom.Settings(holdFor: .seconds(30), maxWaiting: 100)
        (settings.maxPerTab, settings.maxPerAccount, settings.maxPerTenant) = (2, 3, 5)
        try await Self.withInstances(1, settings: settings) { instances in
            let room = instances[0].room
            try await withThrowingTaskGroup(of: Void.self) { held in
                func hold(_ account: String, _ tab: String) {
                    held.addTask {
                        _ = try? await room.wait(for: Self.issue, version: "held", caller: .init(tenant: Self.tenant, accountID: account, tabID: tab))
                    }
                }
                func refusal(_ account: String, _ tab: String, tenant: String = LivePresenceTests.tenant) async -> WaitUnavailable.Reason? {
                    do {
                        // No version: a wait that is held is read at once (and another site's, not installed, ends so).
                        _ = try await room.wait(
                            for: IssueRef(tenant: tenant, issueID: "10001"), version: "",
                            caller: .init(tenant: tenant, accountID: account, tabID: tab))
                        return nil
                    } catch {
                        return (error as? WaitUnavailable)?.reason
                    }
                }
                hold("a", "t1")
                hold("a", "t1")
                #expect(await eventually { room.waiting == 2 })
                #expect(await refusal("a", "t1") == .overQuota, "a third wait of one tab")
                hold("a", "t2")
                #expect(await eventually { room.waiting == 3 })
                #expect(await refusal("a", "t3") == .overQuota, "a fourth wait of one person")
                hold("b", "t1")
                hold("c", "t1")
                #expect(await eventually { room.waiting == 5 })
                #expect(await refusal("d", "t1") == .overQuota, "a sixth wait of one site")
                // Another site is still served (it is not installed, so it is answered at once).
                #expect(await refusal("d", "t1", tenant: "another-site") == nil)
                #expect(room.waiting == 5)
                room.close()
                try await held.waitForAll()
            }
        }
    }

    @Test func payloadsRoundTripAndStrangeOnesAreIgnored() {
        #expect(ViewerChanges.issue(fromPayload: "7:jira:a:10001") == IssueRef(tenant: "jira:a:", issueID: "10001"))
        #expect(ViewerChanges.issue(fromPayload: "8:jira:ä1:2") == IssueRef(tenant: "jira:ä1", issueID: ":2"))
        for strange in ["", ":", "0:x1", "5:abc", "3:abc", "x:abc1", "-1:a1", "9999999:a1"] {
            #expect(ViewerChanges.issue(fromPayload: strange) == nil, "\(strange)")
        }
    }

    @Test func theVersionFollowsWhatAPanelShowsAndNothingElse() {
        let since = Date(timeIntervalSince1970: 1_800_000_000)
        let alice = Viewer(accountID: "alice", since: since, lastSeen: since, details: .found(displayName: "Alice", avatarURL: nil))
        let bob = Viewer(accountID: "bob", since: since, lastSeen: since)
        let base = ViewerListVersion.of([alice, bob])
        #expect(ViewerListVersion.of([bob, alice]) == base)
        var later = alice
        later.lastSeen = since + 10
        #expect(ViewerListVersion.of([later, bob]) == base)
        var away = alice
        away.isAway = true
        var renamed = alice
        renamed.details = .found(displayName: "Alice B", avatarURL: nil)
        var app = bob
        app.details = .notPerson
        for different in [[away, bob], [renamed, bob], [alice], [alice, app]] {
            #expect(ViewerListVersion.of(different) != base)
        }
        #expect(ViewerListVersion.isWellFormed(base) && ViewerListVersion.isWellFormed(""))
        #expect(!ViewerListVersion.isWellFormed("a b") && !ViewerListVersion.isWellFormed(String(repeating: "a", count: 65)))
    }
}

extension WaitUnavailable: Equatable {
    public static func == (left: WaitUnavailable, right: WaitUnavailable) -> Bool { left.reason == right.reason }
}
