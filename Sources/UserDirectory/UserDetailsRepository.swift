import Foundation
import Libpq

/// Cached user details (`Migrations/0003_user_details.sql`) and the personal-data bookkeeping.
///
/// Every write of a name or avatar reads the `tenants` row (owned by the Tenants module) in
/// the same statement, `FOR SHARE`: a lookup that finishes after an uninstall must not write
/// personal data back. The share lock orders the write against uninstall's `UPDATE tenants`:
/// either the write commits first and uninstall's erase (a later statement of its
/// transaction) sees and deletes the rows, or the write waits, sees the tenant uninstalled
/// and writes nothing.
public struct UserDetailsRepository: Sendable {
    let pool: PostgresPool
    /// How long found details are fresh; each row gets up to 10% more so rows do not expire together.
    public let ttl: TimeInterval
    /// How long an account Jira did not return is not asked for again.
    public let missingTTL: TimeInterval

    public init(pool: PostgresPool, ttl: TimeInterval, missingTTL: TimeInterval) {
        self.pool = pool
        self.ttl = ttl
        self.missingTTL = missingTTL
    }

    /// Of `accountIDs`, those whose row has not expired: no need to ask Jira.
    public func freshAccounts(tenant: String, accountIDs: [String]) async throws -> Set<String> {
        let rows = try await pool.query("""
            SELECT account_id FROM user_details
            WHERE client_key = \(tenant) AND account_id = ANY(\(PostgresTextArray(accountIDs))) AND expires_at > now()
            """)
        return Set(try rows.map { try $0.decode(String.self, "account_id") })
    }

    /// Stores what Jira returned, in one statement: people with their details, other accounts
    /// as `not_person` without any. Each row's expiry gets its own jitter.
    public func store(tenant: String, users: [JiraUser], fetchedAt: Date = Date()) async throws {
        // One row per account (ON CONFLICT cannot touch a row twice in one statement), the last
        // word winning, in account order so concurrent writers lock rows in the same order.
        var latest: [String: JiraUser] = [:]
        for user in users where user.accountId != unknownAccountID { latest[user.accountId] = user }
        let rows = latest.values.sorted { $0.accountId < $1.accountId }
        guard !rows.isEmpty else { return }
        try await pool.query("""
            WITH installed AS (SELECT client_key FROM tenants WHERE client_key = \(tenant) AND state = 'installed' FOR SHARE)
            INSERT INTO user_details (client_key, account_id, status, display_name, avatar_url, account_type, active, fetched_at, expires_at)
            SELECT installed.client_key, u.account_id, u.status, u.display_name, u.avatar_url, u.account_type, u.active::boolean, \(fetchedAt),
                   \(fetchedAt) + make_interval(secs => \(ttl) * (1 + random() * 0.1))
            FROM unnest(
                \(PostgresTextArray(rows.map(\.accountId))), \(PostgresTextArray(rows.map { $0.isPerson ? "found" : "not_person" })),
                \(PostgresTextArray(rows.map { $0.isPerson ? $0.displayName : nil })), \(PostgresTextArray(rows.map { $0.isPerson ? $0.avatarURL : nil })),
                \(PostgresTextArray(rows.map(\.accountType))), \(PostgresTextArray(rows.map { user in user.isPerson ? user.active.map { "\($0)" } : nil }))
            ) AS u(account_id, status, display_name, avatar_url, account_type, active), installed
            ON CONFLICT (client_key, account_id) DO UPDATE SET
                status = EXCLUDED.status, display_name = EXCLUDED.display_name, avatar_url = EXCLUDED.avatar_url,
                account_type = EXCLUDED.account_type, active = EXCLUDED.active,
                fetched_at = EXCLUDED.fetched_at, expires_at = EXCLUDED.expires_at
            """)
    }

    /// Remembers accounts Jira did not return, so they are not asked for at every heartbeat.
    /// Details already known stay (a hiccup must not blank a name) but wait as long before a retry.
    public func storeMissing(tenant: String, accountIDs: [String], at now: Date = Date()) async throws {
        let accounts = Set(accountIDs.filter { $0 != unknownAccountID }).sorted()
        guard !accounts.isEmpty else { return }
        try await pool.query("""
            WITH installed AS (SELECT client_key FROM tenants WHERE client_key = \(tenant) AND state = 'installed' FOR SHARE)
            INSERT INTO user_details (client_key, account_id, status, fetched_at, expires_at)
            SELECT installed.client_key, account_id, 'missing', \(now), \(now) + make_interval(secs => \(missingTTL) * (1 + random() * 0.1))
            FROM unnest(\(PostgresTextArray(accounts))) AS account_id, installed
            ON CONFLICT (client_key, account_id) DO UPDATE SET expires_at = EXCLUDED.expires_at
            """)
    }

    public func details(tenant: String, accountID: String) async throws -> (status: String, displayName: String?, avatarURL: String?)? {
        let rows = try await pool.query("""
            SELECT status, display_name, avatar_url FROM user_details WHERE client_key = \(tenant) AND account_id = \(accountID)
            """)
        guard let row = rows.first else { return nil }
        return (try row.decode(String.self, "status"), try row.decode(String?.self, "display_name"), try row.decode(String?.self, "avatar_url"))
    }

    /// An account was closed: erase everything we hold about it in this tenant.
    public func eraseAccount(tenant: String, accountID: String) async throws {
        try await pool.transaction { connection in
            try await connection.query("DELETE FROM user_details WHERE client_key = \(tenant) AND account_id = \(accountID)")
            try await connection.query("DELETE FROM viewers WHERE client_key = \(tenant) AND account_id = \(accountID)")
        }
    }

    /// Jira says the data changed: expire it so it is fetched again.
    public func markStale(tenant: String, accountIDs: [String]) async throws {
        try await pool.query("""
            UPDATE user_details SET expires_at = now()
            WHERE client_key = \(tenant) AND account_id = ANY(\(PostgresTextArray(accountIDs)))
            """)
    }
}

/// Uninstall erases the tenant's cached user details.
public struct UserDetailsEraser: Sendable {
    public init() {}

    public func erase(clientKey: String, on connection: PooledConnection) async throws {
        try await connection.query("DELETE FROM user_details WHERE client_key = \(clientKey)")
    }
}
