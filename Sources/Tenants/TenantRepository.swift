import Foundation
import Libpq

/// Erases what the app holds about a tenant's people when it uninstalls; the modules that own
/// those tables (viewers, user details) register here. Runs inside the uninstall transaction.
public protocol TenantDataEraser: Sendable {
    func eraseTenant(clientKey: String, on connection: PooledConnection) async throws
}

/// Tenants of both front doors in PostgreSQL (`Migrations/0001_tenants.sql`, `0004_…`): the
/// one module that writes the `tenants` table. Connect shared secrets are sealed by a
/// `SecretBox`; Forge installations have none. `uninstall` is the one erase path for both.
public struct TenantRepository: Sendable {
    let pool: PostgresPool
    let secrets: SecretBox
    let erasers: [any TenantDataEraser]

    public init(pool: PostgresPool, secrets: SecretBox, erasers: [any TenantDataEraser] = []) {
        self.pool = pool
        self.secrets = secrets
        self.erasers = erasers
    }

    /// Stores a verified install: a new tenant, or a reinstall replacing its secret and details.
    public func install(_ installation: TenantInstallation, at now: Date = Date()) async throws {
        let sealed = PostgresBytes(try secrets.seal(installation.sharedSecret, context: installation.clientKey))
        try await pool.query(
            """
            INSERT INTO tenants (client_key, base_url, display_url, product_type, description, oauth_client_id,
                                 installation_id, shared_secret_sealed, secret_key_id, state, installed_at, updated_at)
            VALUES (\(installation.clientKey), \(installation.baseURL.absoluteString), \(installation.displayURL?.absoluteString),
                    \(installation.productType), \(installation.description), \(installation.oauthClientID),
                    \(installation.installationID), \(sealed), \(secrets.keyID), 'installed', \(now), \(now))
            ON CONFLICT (client_key) DO UPDATE SET
                base_url = EXCLUDED.base_url, display_url = EXCLUDED.display_url,
                product_type = EXCLUDED.product_type, description = EXCLUDED.description,
                oauth_client_id = EXCLUDED.oauth_client_id, installation_id = EXCLUDED.installation_id,
                shared_secret_sealed = EXCLUDED.shared_secret_sealed, secret_key_id = EXCLUDED.secret_key_id,
                state = 'installed', updated_at = EXCLUDED.updated_at, uninstalled_at = NULL, generation = tenants.generation + 1,
                installed_at = CASE WHEN tenants.state = 'uninstalled' THEN EXCLUDED.installed_at ELSE tenants.installed_at END
            -- A clientKey never names a Forge installation (those are ARIs): never turn one into the other.
            WHERE tenants.kind = 'connect'
            """)
    }

    /// Registers a Forge installation on its first verified call (lifecycle events can arrive
    /// late or never) and keeps its apiBaseUrl and site URL current. Answers false, changing
    /// nothing, for an installation that was uninstalled: Forge gives a reinstall a new
    /// installationId, so an uninstalled one never comes back.
    public func registerForge(_ installation: ForgeInstallation, at now: Date = Date()) async throws -> Bool {
        let rows = try await pool.query(
            """
            INSERT INTO tenants (client_key, kind, base_url, cloud_id, site_url, display_url, product_type, state, installed_at, updated_at)
            VALUES (\(installation.installationID), 'forge', \(installation.apiBaseURL.absoluteString), \(installation.cloudID),
                    \(installation.siteURL?.absoluteString), \(installation.siteURL?.absoluteString), 'jira', 'installed', \(now), \(now))
            ON CONFLICT (client_key) DO UPDATE SET
                base_url = EXCLUDED.base_url, cloud_id = EXCLUDED.cloud_id,
                site_url = COALESCE(EXCLUDED.site_url, tenants.site_url), display_url = COALESCE(EXCLUDED.display_url, tenants.display_url),
                updated_at = EXCLUDED.updated_at
            WHERE tenants.kind = 'forge' AND tenants.state = 'installed'
            RETURNING state
            """)
        return !rows.isEmpty
    }

    /// Connect's uninstall: marks the site uninstalled, drops its secret and erases its personal
    /// data, atomically. Idempotent; answers false for a site we never knew. A Forge
    /// installation is never touched by it.
    @discardableResult
    public func uninstall(clientKey: String, at now: Date = Date()) async throws -> Bool {
        try await retryingDeadlocks {
            try await pool.transaction { connection in
                try await uninstall(clientKey: clientKey, kind: .connect, at: now, on: connection)
            }
        }
    }

    /// Forge's preUninstall: the same erase path, and an installation we never saw is
    /// remembered as uninstalled, so a late call for it cannot register it afterwards.
    public func uninstallForge(_ installation: ForgeInstallation, at now: Date = Date()) async throws {
        try await retryingDeadlocks {
            try await uninstallForge(installation, at: now, once: ())
        }
    }

    private func uninstallForge(_ installation: ForgeInstallation, at now: Date, once: Void) async throws {
        try await pool.transaction { connection in
            try await connection.query(
                """
                INSERT INTO tenants (client_key, kind, base_url, cloud_id, product_type, state, installed_at, updated_at, uninstalled_at)
                VALUES (\(installation.installationID), 'forge', \(installation.apiBaseURL.absoluteString), \(installation.cloudID),
                        'jira', 'uninstalled', \(now), \(now), \(now))
                ON CONFLICT (client_key) DO NOTHING
                """)
            _ = try await uninstall(clientKey: installation.installationID, kind: .forge, at: now, on: connection)
        }
    }

    /// Uninstall erases rows other writers may hold locks on (a heartbeat batch, a user
    /// lookup): a deadlock aborts one side, and uninstall, being idempotent, tries again.
    private func retryingDeadlocks<Result: Sendable>(_ body: () async throws -> Result) async throws -> Result {
        var attempt = 1
        while true {
            do {
                return try await body()
            } catch let error as PostgresError where error.sqlState == SQLState.deadlockDetected && attempt < 3 {
                attempt += 1
            }
        }
    }

    /// The one erase path of both front doors, for a tenant of `kind` only: a key of one door
    /// never uninstalls or erases the other's tenant.
    private func uninstall(clientKey: String, kind: Tenant.Kind, at now: Date, on connection: PooledConnection) async throws -> Bool {
        let updated = try await connection.query(
            """
            UPDATE tenants SET state = 'uninstalled', shared_secret_sealed = NULL, secret_key_id = NULL,
                               uninstalled_at = \(now), updated_at = \(now)
            WHERE client_key = \(clientKey) AND kind = \(kind.rawValue)
            """)
        guard updated.affectedRows > 0 else { return false }
        for eraser in erasers {
            try await eraser.eraseTenant(clientKey: clientKey, on: connection)
        }
        return updated.affectedRows > 0
    }

    /// Tenants installed now, of both doors: for the `tenants_installed` gauge.
    public func installedCount() async throws -> Int {
        let rows = try await pool.query("SELECT count(*) AS installed FROM tenants WHERE state = 'installed'")
        return try rows.first?.decode(Int.self, "installed") ?? 0
    }

    public func tenant(clientKey: String) async throws -> Tenant? {
        let rows = try await pool.query(
            """
            SELECT client_key, kind, base_url, cloud_id, site_url, display_url, product_type, description, oauth_client_id,
                   installation_id, state, generation, installed_at, updated_at, uninstalled_at FROM tenants WHERE client_key = \(clientKey)
            """)
        return try rows.first.map(Self.tenant)
    }

    /// An installed tenant with its shared secret, in one query: what verifying its JWTs needs.
    public func installedTenantWithSecret(clientKey: String) async throws -> (tenant: Tenant, sharedSecret: String)? {
        let rows = try await pool.query(
            """
            SELECT client_key, kind, base_url, cloud_id, site_url, display_url, product_type, description, oauth_client_id,
                   installation_id, state, generation, installed_at, updated_at, uninstalled_at, shared_secret_sealed, secret_key_id
            FROM tenants WHERE client_key = \(clientKey) AND state = 'installed' AND kind = 'connect'
            """)
        guard let row = rows.first, let sealed = try row.decode(PostgresBytes?.self, "shared_secret_sealed") else { return nil }
        let secret = try secrets.open(sealed.bytes, context: clientKey, keyID: try row.decode(String?.self, "secret_key_id"))
        return (try Self.tenant(row), secret)
    }

    /// An installed tenant of either kind, with its shared secret if it is a Connect site:
    /// what calling its Jira needs. nil when it is not installed.
    public func installedTenant(clientKey: String) async throws -> (tenant: Tenant, sharedSecret: String?)? {
        let rows = try await pool.query(
            """
            SELECT client_key, kind, base_url, cloud_id, site_url, display_url, product_type, description, oauth_client_id,
                   installation_id, state, generation, installed_at, updated_at, uninstalled_at, shared_secret_sealed, secret_key_id
            FROM tenants WHERE client_key = \(clientKey) AND state = 'installed'
            """)
        guard let row = rows.first else { return nil }
        let tenant = try Self.tenant(row)
        guard tenant.kind == .connect else { return (tenant, nil) }
        guard let sealed = try row.decode(PostgresBytes?.self, "shared_secret_sealed") else { return nil }
        return (tenant, try secrets.open(sealed.bytes, context: clientKey, keyID: try row.decode(String?.self, "secret_key_id")))
    }

    /// Key rotation: re-seals every secret sealed under a previous key with the current one.
    /// Answers how many; a secret no configured key opens is left as it is, and counted apart.
    /// Secrets sealed under a next key are left alone: instances already on that key sealed
    /// them, and re-sealing them back would undo their rotation.
    public func resealUnderCurrentKey() async throws -> (resealed: Int, unreadable: Int) {
        let rows = try await pool.query(
            """
            SELECT client_key, shared_secret_sealed, secret_key_id FROM tenants
            WHERE shared_secret_sealed IS NOT NULL AND secret_key_id <> \(secrets.keyID)
              AND secret_key_id <> ALL(\(PostgresTextArray(secrets.next.map(\.keyID))))
            """)
        var resealed = 0
        var unreadable = 0
        for row in rows {
            let clientKey = try row.decode(String.self, "client_key")
            let oldKeyID = try row.decode(String.self, "secret_key_id")
            guard
                let secret = try? secrets.open(try row.decode(PostgresBytes.self, "shared_secret_sealed").bytes, context: clientKey, keyID: oldKeyID)
            else {
                unreadable += 1
                continue
            }
            let updated = try await pool.query(
                """
                UPDATE tenants SET shared_secret_sealed = \(PostgresBytes(try secrets.seal(secret, context: clientKey))), secret_key_id = \(secrets.keyID)
                WHERE client_key = \(clientKey) AND secret_key_id = \(oldKeyID)
                """)
            resealed += updated.affectedRows
        }
        return (resealed, unreadable)
    }

    static func tenant(_ row: PostgresRow) throws -> Tenant {
        Tenant(
            clientKey: try row.decode(String.self, "client_key"),
            kind: Tenant.Kind(rawValue: try row.decode(String.self, "kind")) ?? .connect,
            baseURL: URL(string: try row.decode(String.self, "base_url"))!,
            cloudID: try row.decode(String?.self, "cloud_id"),
            siteURL: try row.decode(String?.self, "site_url").flatMap(URL.init(string:)),
            displayURL: try row.decode(String?.self, "display_url").flatMap(URL.init(string:)),
            productType: try row.decode(String.self, "product_type"),
            description: try row.decode(String?.self, "description"),
            oauthClientID: try row.decode(String?.self, "oauth_client_id"),
            installationID: try row.decode(String?.self, "installation_id"),
            state: Tenant.State(rawValue: try row.decode(String.self, "state")) ?? .uninstalled,
            generation: try row.decode(Int64.self, "generation"),
            installedAt: try row.decode(Date.self, "installed_at"),
            updatedAt: try row.decode(Date.self, "updated_at"),
            uninstalledAt: try row.decode(Date?.self, "uninstalled_at")
        )
    }

    /// The shared secret of an installed tenant, for verifying its tokens and signing calls to it.
    public func sharedSecret(clientKey: String) async throws -> String? {
        try await installedTenantWithSecret(clientKey: clientKey)?.sharedSecret
    }
}
