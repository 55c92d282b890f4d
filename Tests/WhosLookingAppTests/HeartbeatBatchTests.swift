import Foundation
import Libpq
@testable import Presence
import Synchronization
import TestSupport
import Testing

/// Group commit against a real PostgreSQL: heartbeats arriving together share a statement,
/// and each still gets exactly its own issue's answer.
@Suite("Heartbeat batches", .timeLimit(.minutes(3)))
struct HeartbeatBatchTests {
    static func withViewersDatabase(_ body: (PostgresPool) async throws -> Void) async throws {
        try await TestApp.withMigratedPool { pool in
            try await pool.query(
                """
                INSERT INTO tenants (client_key, base_url, shared_secret_sealed, secret_key_id, state, installed_at, updated_at)
                VALUES ('jira:a', 'https://a.atlassian.net', '\\x00', 'k', 'installed', now(), now()),
                       ('jira:b', 'https://b.atlassian.net', '\\x00', 'k', 'installed', now(), now()),
                       ('jira:gone', 'https://gone.atlassian.net', NULL, NULL, 'uninstalled', now(), now())
                """)
            try await body(pool)
        }
    }

    static func heartbeat(_ tenant: String, _ issue: String, _ account: String, tab: String = "tab") -> HeartbeatBatcher.Heartbeat {
        .init(viewer: ViewerKey(tenant: tenant, issueID: issue, accountID: account, tabID: tab), issueKey: "K-\(issue)")
    }

    @Test func concurrentHeartbeatsShareStatementsAndEachGetsItsOwnIssue() async throws {
        try await Self.withViewersDatabase { pool in
            let batchSizes = Mutex<[Int]>([])
            let batcher = HeartbeatBatcher(maxConcurrentBatches: 1, maxBatchSize: 16) { heartbeats in
                batchSizes.withLock { $0.append(heartbeats.count) }
                return try await PresenceRepository.record(heartbeats, pool: pool, liveness: .init(activeTTL: 30, awayTTL: 150, awayLimit: 1800))
            }
            // 60 viewers over 6 issues of two tenants (same issue ids in both), plus one of an
            // uninstalled tenant and a tab that beats twice at once.
            var heartbeats: [HeartbeatBatcher.Heartbeat] = []
            for index in 0..<60 {
                heartbeats.append(Self.heartbeat(index % 2 == 0 ? "jira:a" : "jira:b", "\(index % 3)", "account-\(index)"))
            }
            heartbeats.append(Self.heartbeat("jira:gone", "0", "account-ghost"))
            heartbeats.append(Self.heartbeat("jira:a", "0", "account-0"))

            let answers = try await withThrowingTaskGroup(of: (HeartbeatBatcher.Heartbeat, [Viewer]?).self) { group in
                for heartbeat in heartbeats {
                    group.addTask { (heartbeat, try await batcher.record(heartbeat)) }
                }
                return try await group.reduce(into: []) { $0.append($1) }
            }
            #expect(answers.count == heartbeats.count)
            let sizes = batchSizes.withLock { $0 }
            #expect(sizes.reduce(0, +) == heartbeats.count)
            #expect(sizes.count < heartbeats.count, "heartbeats arriving together share a statement: \(sizes)")
            #expect(sizes.allSatisfy { $0 <= 16 }, "no batch is larger than asked: \(sizes)")

            for (heartbeat, viewers) in answers {
                let viewer = heartbeat.viewer
                guard viewer.tenant != "jira:gone" else {
                    #expect(viewers == nil, "an uninstalled site's heartbeat records nothing")
                    continue
                }
                let listed = try #require(viewers).map(\.accountID)
                #expect(listed.contains(viewer.accountID), "a heartbeat's answer includes itself")
                // Everyone listed beat on this tenant's issue: nothing leaks across issues or sites.
                let expected = (0..<60).filter { ($0 % 2 == 0 ? "jira:a" : "jira:b") == viewer.tenant && "\($0 % 3)" == viewer.issueID }
                #expect(Set(listed).isSubset(of: Set(expected.map { "account-\($0)" })), "\(viewer.tenant) issue \(viewer.issueID): \(listed)")
                #expect(Set(listed).count == listed.count, "one entry per person")
            }
            let rows = try await pool.query("SELECT client_key, count(*) AS n FROM viewers GROUP BY client_key ORDER BY client_key")
            #expect(try rows.map { "\(try $0.decode(String.self, "client_key"))=\(try $0.decode(Int.self, "n"))" } == ["jira:a=30", "jira:b=30"])
        }
    }

    static let liveness = ViewerLiveness(activeTTL: 30, awayTTL: 150, awayLimit: 1800)

    /// One statement for ten heartbeats on one issue (one of them the same tab twice): the
    /// answer lists all ten, so heartbeats of one batch see each other, not only those before.
    @Test func everyHeartbeatOfOneBatchSeesTheWholeBatch() async throws {
        try await Self.withViewersDatabase { pool in
            let batch = (0..<10).map { Self.heartbeat("jira:a", "7", "account-\($0)") } + [Self.heartbeat("jira:a", "7", "account-3")]
            let listed = try await PresenceRepository.record(batch, pool: pool, liveness: Self.liveness)
            #expect(listed.keys.map(\.issueID) == ["7"])
            let viewers = try #require(listed[IssueRef(tenant: "jira:a", issueID: "7")]).map(\.accountID)
            #expect(viewers.sorted() == (0..<10).map { "account-\($0)" }.sorted(), "\(viewers)")
            #expect(try await pool.query("SELECT count(*) AS n FROM viewers")[0].decode(Int.self, "n") == 10)
        }
    }

    /// A batch is one statement: when the database refuses one of its rows, nothing of the
    /// batch is written, each of its heartbeats gets the error, and the next batch runs.
    @Test func aFailingBatchWritesNothingFailsEachHeartbeatAndTheNextBatchRuns() async throws {
        try await Self.withViewersDatabase { pool in
            try await pool.query("ALTER TABLE viewers ADD CONSTRAINT refuse_poison CHECK (account_id <> 'account-poison')")
            let poisoned = [Self.heartbeat("jira:a", "1", "account-1"), Self.heartbeat("jira:a", "1", "account-poison")]
            await #expect(throws: PostgresError.self) { try await PresenceRepository.record(poisoned, pool: pool, liveness: Self.liveness) }
            #expect(try await pool.query("SELECT count(*) AS n FROM viewers")[0].decode(Int.self, "n") == 0, "the refused statement wrote a row")

            // Through the batcher: the first batch (account-0) holds the only slot until both
            // poisoned heartbeats wait, so they go together in the second.
            let batcherBox = Mutex<HeartbeatBatcher?>(nil)
            let batches = Mutex<[[String]]>([])
            let batcher = HeartbeatBatcher(maxConcurrentBatches: 1, maxBatchSize: 64) { heartbeats in
                batches.withLock { $0.append(heartbeats.map(\.viewer.accountID)) }
                if heartbeats.map(\.viewer.accountID) == ["account-0"] {
                    while (batcherBox.withLock { $0 }?.statistics().waiting ?? 0) < 2 { try await Task.sleep(for: .milliseconds(10)) }
                }
                return try await PresenceRepository.record(heartbeats, pool: pool, liveness: Self.liveness)
            }
            batcherBox.withLock { $0 = batcher }
            let outcomes = await withTaskGroup(of: (String, Bool).self) { group in
                group.addTask { ("account-0", (try? await batcher.record(Self.heartbeat("jira:a", "1", "account-0"))) != nil) }
                while batches.withLock({ $0.isEmpty }) { try? await Task.sleep(for: .milliseconds(5)) }
                for heartbeat in poisoned {
                    group.addTask {
                        do {
                            _ = try await batcher.record(heartbeat)
                            return (heartbeat.viewer.accountID, true)
                        } catch {
                            return (heartbeat.viewer.accountID, !(error is PostgresError))
                        }
                    }
                }
                return await group.reduce(into: [String: Bool]()) { $0[$1.0] = $1.1 }
            }
            #expect(batches.withLock { $0 }.map { $0.sorted() } == [["account-0"], ["account-1", "account-poison"]])
            #expect(outcomes == ["account-0": true, "account-1": false, "account-poison": false], "recorded, or not with the database's error")
            let listed = try await batcher.record(Self.heartbeat("jira:a", "1", "account-2"))
            #expect(listed?.map(\.accountID).sorted() == ["account-0", "account-2"], "the failed batch wrote nothing; the next one works")
        }
    }

    /// One person's flood cannot fill the queue everyone shares: beyond their quota their
    /// heartbeats are refused (`overQuota`, 429 at the routes) while others' are still taken.
    @Test func onePersonCannotFillTheHeartbeatQueue() async throws {
        try await Self.withViewersDatabase { pool in
            let (gate, opener) = AsyncStream.makeStream(of: Void.self)
            let batcher = HeartbeatBatcher(maxConcurrentBatches: 1, maxBatchSize: 64, maxWaiting: 100, maxWaitingPerAccount: 4, timeout: .seconds(30))
            {
                heartbeats in
                for await _ in gate { break }
                return try await PresenceRepository.record(heartbeats, pool: pool, liveness: .init(activeTTL: 30, awayTTL: 150, awayLimit: 1800))
            }
            try await withThrowingTaskGroup(of: Void.self) { group in
                // The first starts a batch that holds at the gate; the next four of one person queue.
                for tab in 0..<5 { group.addTask { _ = try await batcher.record(Self.heartbeat("jira:a", "1", "flood", tab: "t\(tab)")) } }
                #expect(await eventually { batcher.statistics().waiting == 4 })
                await #expect(throws: HeartbeatUnavailable(reason: .overQuota)) {
                    try await batcher.record(Self.heartbeat("jira:a", "1", "flood", tab: "t9"))
                }
                group.addTask { _ = try await batcher.record(Self.heartbeat("jira:a", "1", "someone-else")) }
                #expect(await eventually { batcher.statistics().waiting == 5 }, "another person's heartbeat is still taken")
                opener.yield()
                opener.yield()
                opener.finish()
                try await group.waitForAll()
            }
            // Once the queue drained, the person may heartbeat again.
            #expect(try await batcher.record(Self.heartbeat("jira:a", "1", "flood", tab: "t9")) != nil)
        }
    }
}
