import Foundation
import Libpq
import Logging

/// Viewers in PostgreSQL (`Migrations/0002_viewers.sql`, `0005_viewer_away.sql`).
///
/// The only writer of `viewers`. A tenant key's form names its door (a Forge installation is
/// an installation ARI, which no Connect clientKey may be: `LifecyclePayload`), and every
/// statement checks the tenant's kind against it, so a key of one door never reaches the
/// other door's tenant. Its statements also read `tenants` (a heartbeat for a site
/// that is not installed records nothing) and `user_details` (names for the answer) in the
/// same round trip: a heartbeat is the hot path, and one statement per batch is what makes it
/// fast. Every statement that changes who is on an issue also notifies
/// `ViewerChanges.channel` in the same statement, so every instance's waiting panels hear of it.
public struct PresenceRepository: Sendable {
    let pool: PostgresPool
    public let liveness: ViewerLiveness
    private let batcher: HeartbeatBatcher

    /// A viewer unseen for longer is not listed, swept or not.
    public var ttl: TimeInterval { liveness.activeTTL }

    /// `maxConcurrentBatches`: connections heartbeats may hold at once (the rest of the pool
    /// stays free for everything else); heartbeats arriving meanwhile wait and go together.
    /// Batches use the pool's `.reserved` lane, so other work cannot take their connections.
    /// At most `maxWaiting` heartbeats wait (beyond, one is refused at once), and each is
    /// answered within `timeout`; a batch statement unanswered by then is cancelled.
    public init(
        pool: PostgresPool, ttl: TimeInterval, awayTTL: TimeInterval? = nil, awayLimit: TimeInterval = 1800, maxConcurrentBatches: Int = 2,
        maxBatchSize: Int = 256, maxWaiting: Int = 1024, timeout: Duration = .seconds(3), logger: Logger? = nil
    ) {
        self.init(
            pool: pool, liveness: ViewerLiveness(activeTTL: ttl, awayTTL: awayTTL ?? max(ttl, 150), awayLimit: awayLimit),
            maxConcurrentBatches: maxConcurrentBatches, maxBatchSize: maxBatchSize, maxWaiting: maxWaiting, timeout: timeout, logger: logger
        )
    }

    /// `maxWaitingPerAccount`: heartbeats one person may have waiting for a batch at once.
    public init(
        pool: PostgresPool, liveness: ViewerLiveness, maxConcurrentBatches: Int = 2, maxBatchSize: Int = 256, maxWaiting: Int = 1024,
        maxWaitingPerAccount: Int = 16, timeout: Duration = .seconds(3), logger: Logger? = nil
    ) {
        self.pool = pool
        self.liveness = liveness
        var onFailure: (@Sendable (any Error, Int) -> Void)?
        if let logger {
            onFailure = { error, size in
                logger.warning("heartbeat batch failed", metadata: ["error": "\(error)", "heartbeats": "\(size)"])
            }
        }
        batcher = HeartbeatBatcher(
            maxConcurrentBatches: maxConcurrentBatches, maxBatchSize: maxBatchSize, maxWaiting: maxWaiting,
            maxWaitingPerAccount: maxWaitingPerAccount, timeout: timeout, onFailure: onFailure
        ) { [pool] heartbeats in
            try await Self.record(heartbeats, pool: pool, liveness: liveness, timeout: timeout)
        }
    }

    /// The heartbeat queue's figures now.
    public func heartbeatQueueStatistics() -> HeartbeatQueueStatistics {
        batcher.statistics()
    }

    /// Records a heartbeat and answers the issue's live viewers, this one included. Answers
    /// nil, recording nothing, when the tenant is no longer installed. Heartbeats arriving
    /// together share one statement (see `HeartbeatBatcher`). Throws `HeartbeatUnavailable`
    /// when the database does not take it in time. `away`: the tab is hidden.
    /// `seq`: the tab's own count of its requests (0: not counted); an older one than the
    /// tab's last heartbeat or leave changes nothing (`0006_viewer_sequence.sql`).
    public func heartbeat(_ viewer: ViewerKey, issueKey: String, away: Bool = false, seq: Int = 0) async throws -> [Viewer]? {
        try await batcher.record(.init(viewer: viewer, issueKey: issueKey, away: away, seq: seq))
    }

    /// One statement for a batch of heartbeats: upserts them all, then lists every issue they
    /// touch. Answers each issue's viewers; an issue whose tenant is not installed is absent.
    /// An issue where a tab arrived, came back or changed state is notified.
    static func record(
        _ heartbeats: [HeartbeatBatcher.Heartbeat], pool: PostgresPool, liveness: ViewerLiveness, timeout: Duration? = nil
    ) async throws -> [IssueRef: [Viewer]] {
        // Sorted and without repeats: ON CONFLICT cannot touch one row twice in a statement,
        // and batches that lock rows in one order cannot deadlock each other. Of one tab's
        // heartbeats, the newest (highest seq) is kept.
        let ordered = heartbeats.sorted { left, right in
            (left.viewer.tenant, left.viewer.issueID, left.viewer.accountID, left.viewer.tabID, -left.seq)
                < (right.viewer.tenant, right.viewer.issueID, right.viewer.accountID, right.viewer.tabID, -right.seq)
        }
        var unique: [HeartbeatBatcher.Heartbeat] = []
        unique.reserveCapacity(ordered.count)
        for heartbeat in ordered where unique.last?.viewer != heartbeat.viewer {
            unique.append(heartbeat)
        }
        let (active, away, limit) = (liveness.activeTTL, liveness.awayTTL, liveness.awayLimit)
        let query: PostgresQuery = """
            WITH input AS (
                SELECT * FROM unnest(
                    \(PostgresTextArray(unique.map(\.viewer.tenant))), \(PostgresTextArray(unique.map(\.viewer.issueID))),
                    \(PostgresTextArray(unique.map(\.issueKey))), \(PostgresTextArray(unique.map(\.viewer.accountID))),
                    \(PostgresTextArray(unique.map(\.viewer.tabID))), \(PostgresTextArray(unique.map { $0.away ? "away" : "active" })),
                    \(PostgresTextArray(unique.map { String($0.seq) }))
                ) WITH ORDINALITY AS i(client_key, issue_id, issue_key, account_id, tab_id, state, seq, position)
            ), installed AS (
                SELECT i.client_key, i.issue_id, i.issue_key, i.account_id, i.tab_id, i.state, i.seq::bigint AS seq, i.position FROM input i
                WHERE EXISTS (SELECT 1 FROM tenants t WHERE t.client_key = i.client_key AND t.state = 'installed'
                              AND t.kind = CASE WHEN i.client_key LIKE 'ari:cloud:ecosystem::installation/%' THEN 'forge' ELSE 'connect' END)
            ), seen AS (
                -- A tab whose row outlived its heartbeats (not swept yet) starts afresh. A heartbeat
                -- older than the tab's last heartbeat or leave (seq) changes nothing.
                INSERT INTO viewers AS v (client_key, issue_id, issue_key, account_id, tab_id, first_seen, last_seen, away_since, seq)
                SELECT client_key, issue_id, issue_key, account_id, tab_id, now(), now(), CASE WHEN state = 'away' THEN now() END, seq
                FROM installed ORDER BY position
                ON CONFLICT (client_key, issue_id, account_id, tab_id)
                DO UPDATE SET last_seen = EXCLUDED.last_seen, issue_key = EXCLUDED.issue_key,
                    first_seen = CASE WHEN viewer_kept(v.last_seen, v.away_since, \(active), \(away))
                        THEN v.first_seen ELSE EXCLUDED.first_seen END,
                    away_since = CASE WHEN EXCLUDED.away_since IS NULL THEN NULL
                        WHEN viewer_kept(v.last_seen, v.away_since, \(active), \(away)) THEN coalesce(v.away_since, EXCLUDED.away_since)
                        ELSE EXCLUDED.away_since END,
                    seq = EXCLUDED.seq, gone = false
                WHERE EXCLUDED.seq = 0 OR v.seq < EXCLUDED.seq
                RETURNING v.client_key, v.issue_id, v.account_id, v.tab_id, v.first_seen, v.last_seen, v.away_since
            ), current AS (
                -- The touched issues' rows as they were before this statement (same snapshot).
                SELECT v.client_key, v.issue_id, v.account_id, v.tab_id, v.first_seen, v.last_seen, v.away_since,
                       NOT v.gone AND viewer_shown(v.last_seen, v.away_since, \(active), \(away), \(limit)) AS shown
                FROM (SELECT DISTINCT client_key, issue_id FROM installed) issue
                JOIN viewers v ON v.client_key = issue.client_key AND v.issue_id = issue.issue_id
            ), changed AS (
                -- Tabs that now show and did not, or show in another state.
                SELECT DISTINCT s.client_key, s.issue_id FROM seen s
                LEFT JOIN current c
                    ON c.client_key = s.client_key AND c.issue_id = s.issue_id AND c.account_id = s.account_id AND c.tab_id = s.tab_id
                WHERE viewer_shown(s.last_seen, s.away_since, \(active), \(away), \(limit))
                  AND (c.shown IS NOT TRUE OR (c.away_since IS NULL) <> (s.away_since IS NULL))
            ), notified AS (
                SELECT count(\(literal: ViewerChanges.notifyCall)) AS issues FROM changed
            ), listed AS (
                -- The rows just written come from RETURNING, the others from before; a tab's
                -- own row is listed even when its away time is up (it heartbeats, so it is there).
                SELECT c.client_key, c.issue_id, c.account_id, c.first_seen, c.last_seen, c.away_since FROM current c
                WHERE c.shown AND NOT EXISTS (
                    SELECT 1 FROM seen s
                    WHERE s.client_key = c.client_key AND s.issue_id = c.issue_id AND s.account_id = c.account_id AND s.tab_id = c.tab_id
                )
                UNION ALL
                SELECT client_key, issue_id, account_id, first_seen, last_seen, away_since FROM seen
            )
            -- One row per person (their tabs together), then their details: grouping first
            -- looks up each person's details once and groups on three keys, not seven
            -- (a third more batches per second under pgbench). Away: all their tabs are.
            -- Every installed issue has a row, one with nobody listed (its heartbeats were all
            -- older than their tabs' leaves) too, with account_id NULL.
            SELECT issue.client_key, issue.issue_id, l.account_id, l.since, l.last_seen, l.away,
                   u.status, u.display_name, u.avatar_url, u.expires_at <= now() AS expired, n.issues AS notified
            FROM (SELECT DISTINCT client_key, issue_id FROM installed) issue
            CROSS JOIN notified n
            LEFT JOIN (
                SELECT client_key, issue_id, account_id, min(first_seen) AS since, max(last_seen) AS last_seen,
                       bool_and(away_since IS NOT NULL) AS away
                FROM listed GROUP BY client_key, issue_id, account_id
            ) l ON l.client_key = issue.client_key AND l.issue_id = issue.issue_id
            LEFT JOIN user_details u ON u.client_key = l.client_key AND u.account_id = l.account_id
            """
        let rows: PostgresRows
        do {
            rows = try await pool.query(query, lane: .reserved, timeout: timeout)
        } catch let error as PostgresError where error.sqlState == SQLState.deadlockDetected {
            // Only a sweep deleting rows a batch rewrites can lock in another order; once more is enough.
            rows = try await pool.query(query, lane: .reserved, timeout: timeout)
        }
        return try listing(rows)
    }

    /// Each issue's viewers from rows of (client_key, issue_id, a viewer's columns or NULLs).
    static func listing(_ rows: PostgresRows) throws -> [IssueRef: [Viewer]] {
        var listed: [IssueRef: [Viewer]] = [:]
        for row in rows {
            let issue = IssueRef(tenant: try row.decode(String.self, "client_key"), issueID: try row.decode(String.self, "issue_id"))
            if try row.decode(String?.self, "account_id") == nil {
                listed[issue] = listed[issue] ?? []
            } else {
                listed[issue, default: []].append(try viewer(row))
            }
        }
        return listed
    }

    /// Each issue's live viewers, without recording anyone; an issue whose tenant is not
    /// installed is absent. For the panels waiting on those issues (`WaitRoom`).
    public func viewers(of issues: [IssueRef], timeout: Duration? = nil) async throws -> [IssueRef: [Viewer]] {
        guard !issues.isEmpty else { return [:] }
        let (active, away, limit) = (liveness.activeTTL, liveness.awayTTL, liveness.awayLimit)
        let rows = try await pool.query(
            """
            WITH issue AS (
                SELECT DISTINCT * FROM unnest(\(PostgresTextArray(issues.map(\.tenant))), \(PostgresTextArray(issues.map(\.issueID))))
                    AS i(client_key, issue_id)
                WHERE EXISTS (SELECT 1 FROM tenants t WHERE t.client_key = i.client_key AND t.state = 'installed'
                              AND t.kind = CASE WHEN i.client_key LIKE 'ari:cloud:ecosystem::installation/%' THEN 'forge' ELSE 'connect' END)
            ), live AS (
                SELECT v.client_key, v.issue_id, v.account_id, min(v.first_seen) AS since, max(v.last_seen) AS last_seen,
                       bool_and(v.away_since IS NOT NULL) AS away
                FROM issue JOIN viewers v ON v.client_key = issue.client_key AND v.issue_id = issue.issue_id
                WHERE NOT v.gone AND viewer_shown(v.last_seen, v.away_since, \(active), \(away), \(limit))
                GROUP BY v.client_key, v.issue_id, v.account_id
            )
            -- An installed issue without viewers still has its row (account_id NULL).
            SELECT issue.client_key, issue.issue_id, l.account_id, l.since, l.last_seen, l.away,
                   u.status, u.display_name, u.avatar_url, u.expires_at <= now() AS expired
            FROM issue
            LEFT JOIN live l ON l.client_key = issue.client_key AND l.issue_id = issue.issue_id
            LEFT JOIN user_details u ON u.client_key = l.client_key AND u.account_id = l.account_id
            """, timeout: timeout)
        return try Self.listing(rows)
    }

    /// Tabs heartbeating within the active TTL, and the issues they are on: for the metrics
    /// gauges (`viewers_active`, `issues_watched`).
    public func activity() async throws -> (viewers: Int, issues: Int) {
        let rows = try await pool.query(
            """
            SELECT count(*) AS viewers, count(DISTINCT (client_key, issue_id)) AS issues FROM viewers
            WHERE NOT gone AND last_seen > now() - make_interval(secs => \(liveness.activeTTL))
            """)
        guard let row = rows.first else { return (0, 0) }
        return (try row.decode(Int.self, "viewers"), try row.decode(Int.self, "issues"))
    }

    /// The issue's live viewers, without recording anyone.
    public func viewers(tenant: String, issueID: String) async throws -> [Viewer] {
        let issue = IssueRef(tenant: tenant, issueID: issueID)
        return try await viewers(of: [issue])[issue] ?? []
    }

    /// A tab left: it is no longer listed, and the issue's other panels are told. The user
    /// stays listed while another tab of theirs heartbeats. With a `seq` (the tab's count of
    /// its requests) the row stays as a tombstone until swept, so a heartbeat the tab sent
    /// before leaving cannot bring it back if it is written later; without one (0) it is deleted.
    public func leave(_ viewer: ViewerKey, issueKey: String, seq: Int = 0) async throws {
        guard seq > 0 else {
            try await pool.query(
                """
                WITH gone AS (
                    DELETE FROM viewers
                    WHERE client_key = \(viewer.tenant) AND issue_id = \(viewer.issueID)
                      AND account_id = \(viewer.accountID) AND tab_id = \(viewer.tabID)
                    RETURNING client_key, issue_id
                )
                SELECT count(\(literal: ViewerChanges.notifyCall)) AS notified FROM (SELECT DISTINCT client_key, issue_id FROM gone) g
                """)
            return
        }
        // Only for an installed tenant: a tombstone is a viewers row, which uninstall erases.
        try await pool.query(
            """
            WITH gone AS (
                INSERT INTO viewers AS v (client_key, issue_id, issue_key, account_id, tab_id, first_seen, last_seen, seq, gone)
                SELECT \(viewer.tenant), \(viewer.issueID), \(issueKey), \(viewer.accountID), \(viewer.tabID), now(), now(), \(seq), true
                WHERE EXISTS (SELECT 1 FROM tenants t WHERE t.client_key = \(viewer.tenant) AND t.state = 'installed'
                              AND t.kind = CASE WHEN t.client_key LIKE 'ari:cloud:ecosystem::installation/%' THEN 'forge' ELSE 'connect' END)
                ON CONFLICT (client_key, issue_id, account_id, tab_id)
                DO UPDATE SET gone = true, seq = EXCLUDED.seq, last_seen = EXCLUDED.last_seen
                WHERE v.seq < EXCLUDED.seq
                RETURNING v.client_key, v.issue_id
            )
            SELECT count(\(literal: ViewerChanges.notifyCall)) AS notified FROM (SELECT DISTINCT client_key, issue_id FROM gone) g
            """)
    }

    /// Deletes viewers whose heartbeats stopped and tells their issues' panels; answers how
    /// many, or nil when another instance is sweeping.
    public func sweep() async throws -> Int? {
        let (active, away) = (liveness.activeTTL, liveness.awayTTL)
        return try await pool.transaction { connection in
            // One sweeper at a time across instances; the others skip this tick.
            let lock = try await connection.query("SELECT pg_try_advisory_xact_lock(\(Self.sweepLockKey)) AS locked")
            guard try lock[0].decode(Bool.self, "locked") else { return nil }
            let swept = try await connection.query(
                """
                WITH gone AS (
                    DELETE FROM viewers WHERE NOT viewer_kept(last_seen, away_since, \(active), \(away))
                    RETURNING client_key, issue_id
                )
                SELECT (SELECT count(*) FROM gone) AS deleted,
                       (SELECT count(\(literal: ViewerChanges.notifyCall)) FROM (SELECT DISTINCT client_key, issue_id FROM gone) g) AS notified
                """)
            return try swept[0].decode(Int.self, "deleted")
        }
    }

    /// "sweeper!" in ASCII.
    static let sweepLockKey = 0x7377_6565_7065_7221

    static func viewer(_ row: PostgresRow) throws -> Viewer {
        let details: Viewer.Details =
            switch try row.decode(String?.self, "status") {
            case "found"?: .found(displayName: try row.decode(String?.self, "display_name"), avatarURL: try row.decode(String?.self, "avatar_url"))
            case "missing"?: .missing
            case "not_person"?: .notPerson
            default: .unknown
            }
        return Viewer(
            accountID: try row.decode(String.self, "account_id"),
            since: try row.decode(Date.self, "since"),
            lastSeen: try row.decode(Date.self, "last_seen"),
            isAway: try row.decode(Bool?.self, "away") ?? false,
            details: details,
            detailsExpired: try row.decode(Bool?.self, "expired") ?? false
        )
    }
}

/// How long a tab's row counts (`viewer_kept`, `viewer_shown` in `0005_viewer_away.sql`).
public struct ViewerLiveness: Sendable, Equatable {
    /// A visible tab is listed this long after its last heartbeat.
    public var activeTTL: TimeInterval
    /// An away tab (heartbeating slowly) is listed this long after its last heartbeat...
    public var awayTTL: TimeInterval
    /// ...and no longer than this after it went away.
    public var awayLimit: TimeInterval

    public init(activeTTL: TimeInterval, awayTTL: TimeInterval, awayLimit: TimeInterval) {
        self.activeTTL = activeTTL
        self.awayTTL = awayTTL
        self.awayLimit = awayLimit
    }
}

/// Uninstall erases the tenant's viewers, and tells their issues' panels.
public struct ViewerEraser: Sendable {
    public init() {}

    public func erase(clientKey: String, on connection: PooledConnection) async throws {
        try await connection.query(
            """
            WITH gone AS (DELETE FROM viewers WHERE client_key = \(clientKey) RETURNING client_key, issue_id)
            SELECT count(\(literal: ViewerChanges.notifyCall)) AS notified FROM (SELECT DISTINCT client_key, issue_id FROM gone) g
            """)
    }
}
