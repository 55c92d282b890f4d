import Foundation
import Libpq

/// Viewers in PostgreSQL (`Migrations/0002_viewers.sql`).
public struct PresenceRepository: Sendable {
    let pool: PostgresPool
    /// A viewer unseen for longer is not listed, swept or not.
    public let ttl: TimeInterval

    public init(pool: PostgresPool, ttl: TimeInterval) {
        self.pool = pool
        self.ttl = ttl
    }

    /// Records a heartbeat and answers the issue's live viewers, in one statement (one round
    /// trip). Answers nil, recording nothing, when the tenant is no longer installed.
    public func heartbeat(_ viewer: ViewerKey, issueKey: String) async throws -> [Viewer]? {
        // The upserted row is not visible to the outer SELECT (same snapshot), so it is added
        // from RETURNING; the tenant check keeps an uninstalled site's tickets from writing.
        let rows = try await pool.query("""
            WITH tenant AS (
                SELECT 1 FROM tenants WHERE client_key = \(viewer.tenant) AND state = 'installed'
            ), seen AS (
                INSERT INTO viewers (client_key, issue_id, issue_key, account_id, tab_id, first_seen, last_seen)
                SELECT \(viewer.tenant), \(viewer.issueID), \(issueKey), \(viewer.accountID), \(viewer.tabID), now(), now()
                FROM tenant
                ON CONFLICT (client_key, issue_id, account_id, tab_id)
                DO UPDATE SET last_seen = EXCLUDED.last_seen, issue_key = EXCLUDED.issue_key
                RETURNING account_id, first_seen, last_seen
            ), listed AS (
                SELECT account_id, first_seen, last_seen FROM viewers
                WHERE client_key = \(viewer.tenant) AND issue_id = \(viewer.issueID)
                  AND last_seen > now() - make_interval(secs => \(ttl))
                UNION ALL
                SELECT account_id, first_seen, last_seen FROM seen
            )
            SELECT l.account_id, min(l.first_seen) AS since, max(l.last_seen) AS last_seen,
                   EXISTS (SELECT 1 FROM seen) AS recorded,
                   u.status, u.display_name, u.avatar_url, u.expires_at <= now() AS expired
            FROM listed l
            LEFT JOIN user_details u ON u.client_key = \(viewer.tenant) AND u.account_id = l.account_id
            GROUP BY l.account_id, u.status, u.display_name, u.avatar_url, u.expires_at
            """)
        guard let first = rows.first, try first.decode(Bool.self, "recorded") else { return nil }
        return try rows.map(Self.viewer)
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
