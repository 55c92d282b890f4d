import Foundation
import Libpq
import Logging

/// Viewers in PostgreSQL (`Migrations/0002_viewers.sql`).
public struct PresenceRepository: Sendable {
    let pool: PostgresPool
    /// A viewer unseen for longer is not listed, swept or not.
    public let ttl: TimeInterval
    private let batcher: HeartbeatBatcher

    /// `maxConcurrentBatches`: connections heartbeats may hold at once (the rest of the pool
    /// stays free for everything else); heartbeats arriving meanwhile wait and go together.
    /// Batches use the pool's `.reserved` lane, so other work cannot take their connections.
    /// At most `maxWaiting` heartbeats wait (beyond, one is refused at once), and each is
    /// answered within `timeout`; a batch statement unanswered by then is cancelled.
    public init(
        pool: PostgresPool, ttl: TimeInterval, maxConcurrentBatches: Int = 2, maxBatchSize: Int = 256,
        maxWaiting: Int = 1024, timeout: Duration = .seconds(3), logger: Logger? = nil
    ) {
        self.pool = pool
        self.ttl = ttl
        var onFailure: (@Sendable (any Error, Int) -> Void)?
        if let logger {
            onFailure = { error, size in
                logger.warning("heartbeat batch failed", metadata: ["error": "\(error)", "heartbeats": "\(size)"])
            }
        }
        batcher = HeartbeatBatcher(
            maxConcurrentBatches: maxConcurrentBatches, maxBatchSize: maxBatchSize, maxWaiting: maxWaiting, timeout: timeout,
            onFailure: onFailure
        ) { [pool] heartbeats in
            try await Self.record(heartbeats, pool: pool, ttl: ttl, timeout: timeout)
        }
    }

    /// The heartbeat queue's figures now.
    public func heartbeatQueueStatistics() -> HeartbeatQueueStatistics {
        batcher.statistics()
    }

    /// Records a heartbeat and answers the issue's live viewers, this one included. Answers
    /// nil, recording nothing, when the tenant is no longer installed. Heartbeats arriving
    /// together share one statement (see `HeartbeatBatcher`). Throws `HeartbeatUnavailable`
    /// when the database does not take it in time.
    public func heartbeat(_ viewer: ViewerKey, issueKey: String) async throws -> [Viewer]? {
        try await batcher.record(.init(viewer: viewer, issueKey: issueKey))
    }

    /// One statement for a batch of heartbeats: upserts them all, then lists every issue they
    /// touch. Answers each issue's viewers; an issue whose tenant is not installed is absent.
    static func record(
        _ heartbeats: [HeartbeatBatcher.Heartbeat], pool: PostgresPool, ttl: TimeInterval, timeout: Duration? = nil
    ) async throws -> [IssueRef: [Viewer]] {
        // Sorted and without repeats: ON CONFLICT cannot touch one row twice in a statement,
        // and batches that lock rows in one order cannot deadlock each other.
        let ordered = heartbeats.sorted { left, right in
            (left.viewer.tenant, left.viewer.issueID, left.viewer.accountID, left.viewer.tabID)
                < (right.viewer.tenant, right.viewer.issueID, right.viewer.accountID, right.viewer.tabID)
        }
        var unique: [HeartbeatBatcher.Heartbeat] = []
        unique.reserveCapacity(ordered.count)
        for heartbeat in ordered where unique.last?.viewer != heartbeat.viewer {
            unique.append(heartbeat)
        }
        let query: PostgresQuery = """
            WITH input AS (
                SELECT * FROM unnest(
                    \(PostgresTextArray(unique.map(\.viewer.tenant))), \(PostgresTextArray(unique.map(\.viewer.issueID))),
                    \(PostgresTextArray(unique.map(\.issueKey))), \(PostgresTextArray(unique.map(\.viewer.accountID))),
                    \(PostgresTextArray(unique.map(\.viewer.tabID)))
                ) WITH ORDINALITY AS i(client_key, issue_id, issue_key, account_id, tab_id, position)
            ), installed AS (
                SELECT * FROM input i
                WHERE EXISTS (SELECT 1 FROM tenants t WHERE t.client_key = i.client_key AND t.state = 'installed')
            ), seen AS (
                INSERT INTO viewers (client_key, issue_id, issue_key, account_id, tab_id, first_seen, last_seen)
                SELECT client_key, issue_id, issue_key, account_id, tab_id, now(), now() FROM installed ORDER BY position
                ON CONFLICT (client_key, issue_id, account_id, tab_id)
                DO UPDATE SET last_seen = EXCLUDED.last_seen, issue_key = EXCLUDED.issue_key
                RETURNING client_key, issue_id, account_id, first_seen, last_seen
            ), listed AS (
                -- The rows just written are not visible here (same snapshot): they come from RETURNING.
                SELECT v.client_key, v.issue_id, v.account_id, v.first_seen, v.last_seen
                FROM (SELECT DISTINCT client_key, issue_id FROM installed) issue
                JOIN viewers v ON v.client_key = issue.client_key AND v.issue_id = issue.issue_id
                WHERE v.last_seen > now() - make_interval(secs => \(ttl))
                UNION ALL
                SELECT client_key, issue_id, account_id, first_seen, last_seen FROM seen
            )
            -- One row per person (their tabs together), then their details: grouping first
            -- looks up each person's details once and groups on three keys, not seven
            -- (a third more batches per second under pgbench).
            SELECT l.client_key, l.issue_id, l.account_id, l.since, l.last_seen,
                   u.status, u.display_name, u.avatar_url, u.expires_at <= now() AS expired
            FROM (
                SELECT client_key, issue_id, account_id, min(first_seen) AS since, max(last_seen) AS last_seen
                FROM listed GROUP BY client_key, issue_id, account_id
            ) l
            LEFT JOIN user_details u ON u.client_key = l.client_key AND u.account_id = l.account_id
            """
        let rows: PostgresRows
        do {
            rows = try await pool.query(query, lane: .reserved, timeout: timeout)
        } catch let error as PostgresError where error.sqlState == SQLState.deadlockDetected {
            // Only a sweep deleting rows a batch rewrites can lock in another order; once more is enough.
            rows = try await pool.query(query, lane: .reserved, timeout: timeout)
        }
        var listed: [IssueRef: [Viewer]] = [:]
        for row in rows {
            let issue = IssueRef(tenant: try row.decode(String.self, "client_key"), issueID: try row.decode(String.self, "issue_id"))
            listed[issue, default: []].append(try viewer(row))
        }
        return listed
    }

    /// The issue's live viewers, without recording anyone.
    public func viewers(tenant: String, issueID: String) async throws -> [Viewer] {
        let rows = try await pool.query("""
            SELECT v.account_id, min(v.first_seen) AS since, max(v.last_seen) AS last_seen,
                   u.status, u.display_name, u.avatar_url, u.expires_at <= now() AS expired
            FROM viewers v
            LEFT JOIN user_details u ON u.client_key = v.client_key AND u.account_id = v.account_id
            WHERE v.client_key = \(tenant) AND v.issue_id = \(issueID)
              AND v.last_seen > now() - make_interval(secs => \(ttl))
            GROUP BY v.account_id, u.status, u.display_name, u.avatar_url, u.expires_at
            """)
        return try rows.map(Self.viewer)
    }

    /// A tab left: forget it. The user stays listed while another tab of theirs heartbeats.
    public func leave(_ viewer: ViewerKey) async throws {
        try await pool.query("""
            DELETE FROM viewers
            WHERE client_key = \(viewer.tenant) AND issue_id = \(viewer.issueID)
              AND account_id = \(viewer.accountID) AND tab_id = \(viewer.tabID)
            """)
    }

    /// Deletes expired viewers; answers how many, or nil when another instance is sweeping.
    public func sweep() async throws -> Int? {
        try await pool.transaction { connection in
            // One sweeper at a time across instances; the others skip this tick.
            let lock = try await connection.query("SELECT pg_try_advisory_xact_lock(\(Self.sweepLockKey)) AS locked")
            guard try lock[0].decode(Bool.self, "locked") else { return nil }
            let deleted = try await connection.query("""
                DELETE FROM viewers WHERE last_seen <= now() - make_interval(secs => \(ttl))
                """)
            return deleted.affectedRows
        }
    }

    /// "sweeper!" in ASCII.
    static let sweepLockKey = 0x7377_6565_7065_7221

    static func viewer(_ row: PostgresRow) throws -> Viewer {
        let details: Viewer.Details = switch try row.decode(String?.self, "status") {
        case "found"?: .found(displayName: try row.decode(String?.self, "display_name"), avatarURL: try row.decode(String?.self, "avatar_url"))
        case "missing"?: .missing
        case "not_person"?: .notPerson
        default: .unknown
        }
        return Viewer(
            accountID: try row.decode(String.self, "account_id"),
            since: try row.decode(Date.self, "since"),
            lastSeen: try row.decode(Date.self, "last_seen"),
            details: details,
            detailsExpired: try row.decode(Bool?.self, "expired") ?? false
        )
    }
}

/// Uninstall erases the tenant's viewers.
public struct ViewerEraser: Sendable {
    public init() {}

    public func erase(clientKey: String, on connection: PooledConnection) async throws {
        try await connection.query("DELETE FROM viewers WHERE client_key = \(clientKey)")
    }
}
