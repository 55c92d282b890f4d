import Foundation
import Libpq
import Tenants
import TestSupport
import Testing
import UserDirectory

@testable import WhosLookingApp

/// A user lookup that finishes after an uninstall must not write names back: nothing would
/// ever erase them (issue 12, defect 6).
@Suite("Personal data after an uninstall", .serialized, .timeLimit(.minutes(3)))
struct PersonalDataAfterUninstallTests {
    static let site = TenantInstallation(
        clientKey: "jira:erased", baseURL: URL(string: "https://erased.atlassian.net")!, sharedSecret: "erased-site-secret-0123456789abcdef"
    )
    static let alice = JiraUser(accountId: "alice", accountType: "atlassian", displayName: "Alice", active: true, avatarUrls: nil)

    func detailRows(_ testApp: TestApp) async throws -> Int {
        try await testApp.pool.query("SELECT count(*) AS n FROM user_details")[0].decode(Int.self, "n")
    }

    @Test func aLookupFinishingAfterTheUninstallWritesNothing() async throws {
        try await TestApp.with { testApp, _ in
            try await testApp.tenants.install(Self.site)
            try await testApp.tenants.uninstall(clientKey: Self.site.clientKey)
            try await testApp.parts.userDetails.store(tenant: Self.site.clientKey, users: [Self.alice])
            try await testApp.parts.userDetails.storeMissing(tenant: Self.site.clientKey, accountIDs: ["bob"])
            #expect(try await detailRows(testApp) == 0)
            // A site we never knew is no different.
            try await testApp.parts.userDetails.store(tenant: "jira:never-installed", users: [Self.alice])
            #expect(try await detailRows(testApp) == 0)
            // While installed, the same calls do write.
            try await testApp.tenants.install(Self.site)
            try await testApp.parts.userDetails.store(tenant: Self.site.clientKey, users: [Self.alice])
            try await testApp.parts.userDetails.storeMissing(tenant: Self.site.clientKey, accountIDs: ["bob"])
            #expect(try await detailRows(testApp) == 2)
        }
    }

    /// A lookup that writes while the uninstall transaction is open waits for it, then writes
    /// nothing; the erase that ran inside the uninstall is not undone. The transaction stays open
    /// until PostgreSQL shows the write waiting for a lock, so every run races, none by luck of timing.
    @Test func aLookupRacingTheUninstallIsOrderedByTheTenantRowLock() async throws {
        try await TestApp.with { testApp, _ in
            try await testApp.tenants.install(Self.site)
            let pool = testApp.pool
            let (erased, erasing) = AsyncStream.makeStream(of: Void.self)
            let uninstalling = Task {
                defer { erasing.finish() }  // also when the transaction fails, so the test never hangs
                try await pool.transaction { connection in
                    try await connection.query(
                        "UPDATE tenants SET state = 'uninstalled', shared_secret_sealed = NULL, secret_key_id = NULL WHERE client_key = \(Self.site.clientKey)"
                    )
                    try await connection.query("DELETE FROM user_details WHERE client_key = \(Self.site.clientKey)")
                    erasing.finish()
                    let waited = await eventually { try await Self.statementsWaitingForALock(pool) > 0 }
                    #expect(waited, "the lookup's write waits for the uninstall to commit")
                }
            }
            for await _ in erased {}
            try await testApp.parts.userDetails.store(tenant: Self.site.clientKey, users: [Self.alice])
            try await uninstalling.value
            #expect(try await detailRows(testApp) == 0)
        }
    }

    /// Statements of this database's sessions that wait for a lock now.
    static func statementsWaitingForALock(_ pool: PostgresPool) async throws -> Int {
        try await pool.query("SELECT count(*) AS n FROM pg_stat_activity WHERE datname = current_database() AND wait_event_type = 'Lock'")[0]
            .decode(Int.self, "n")
    }

    @Test func uninstallIsIdempotent() async throws {
        try await TestApp.with { testApp, _ in
            try await testApp.tenants.install(Self.site)
            #expect(try await testApp.tenants.uninstall(clientKey: Self.site.clientKey))
            #expect(try await testApp.tenants.uninstall(clientKey: Self.site.clientKey), "a second uninstall of a known site still succeeds")
            #expect(try await testApp.tenants.tenant(clientKey: Self.site.clientKey)?.state == .uninstalled)
        }
    }
}
