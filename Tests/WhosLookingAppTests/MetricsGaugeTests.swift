import Foundation
import Hummingbird
import HummingbirdTesting
import Libpq
import Prometheus
import Synchronization
import TestSupport
import Testing
import Tenants
@testable import WhosLookingApp

/// `/metrics` reads figures a periodic job keeps: a scrape never waits for the database.
/// Each test has a registry of its own, so that other tests' apps cannot change its figures.
@Suite("Metrics: database figures kept by a periodic job", .timeLimit(.minutes(3)))
struct MetricsGaugeTests {
    static let tenant = TenantInstallation(
        clientKey: "jira:gauges", baseURL: URL(string: "http://127.0.0.1:9")!, productType: "jira",
        sharedSecret: "gauges-tenant-secret-0123456789ab"
    )

    /// Scrapes until `condition` holds (at most 5 s): whether it did, and the last scrape.
    static func scrape(
        _ client: some TestClientProtocol, until condition: (String) -> Bool
    ) async throws -> (met: Bool, text: String) {
        let deadline = ContinuousClock.now + .seconds(5)
        while true {
            let text = try await client.execute(uri: "/metrics", method: .get) { String(buffer: $0.body) }
            if condition(text) { return (true, text) }
            if ContinuousClock.now >= deadline { return (false, text) }
            try await Task.sleep(for: .milliseconds(100))
        }
    }

    static func value(_ name: String, in text: String) -> Double? {
        text.split(separator: "\n").first { $0.hasPrefix(name + " ") }.flatMap { Double($0.split(separator: " ").last ?? "") }
    }

    /// Every pool connection busy in `pg_sleep`: 200 scrapes answer at once, none waits for a
    /// connection (the pool counts every caller that had to wait), and all before any sleep ends.
    @Test func twoHundredScrapesNeverTouchTheDatabase() async throws {
        try await TestApp.withMigratedPool { pool in
            let configuration = try TestApp.configuration([
                "METRICS_REFRESH_SECONDS": "3600", "SWEEP_INTERVAL_SECONDS": "3600", "PERSONAL_DATA_REPORT_INTERVAL_SECONDS": "86400",
            ])
            let registry = PrometheusCollectorRegistry()
            let app = buildApplication(
                configuration: configuration, pool: pool, secrets: try configuration.resolveSecretBox(),
                metrics: registry, logger: TestDatabase.logger
            )
            try await app.test(.router) { client in
                // The job's first refresh, at start, is done before the connections are taken.
                _ = await eventually(timeout: .seconds(5)) {
                    String(decoding: registry.emitToBuffer(), as: UTF8.self).contains("tenants_installed")
                }
                let finishedSleeps = FinishedCount()
                let sleepers = (0..<pool.configuration.maxConnections).map { _ in
                    Task {
                        try await pool.query("SELECT pg_sleep(30)")
                        finishedSleeps.count.add(1, ordering: .relaxed)
                    }
                }
                let admin = PostgresPool(configuration: .init(conninfo: TestDatabase.serverConninfo, maxConnections: 1), logger: TestDatabase.logger)
                let allBusy = await eventually(timeout: .seconds(5)) {
                    let rows = try await admin.query(
                        "SELECT count(*) AS n FROM pg_stat_activity WHERE query = 'SELECT pg_sleep(30)' AND state = 'active'")
                    return try rows[0].decode(Int.self, "n") == pool.configuration.maxConnections
                }
                #expect(allBusy, "the sleeps never took every connection")
                let waitsBefore = await pool.statistics().totalWaits
                for _ in 0..<200 {
                    try await client.execute(uri: "/metrics", method: .get) { response in
                        #expect(response.status == .ok)
                    }
                }
                let waitsAfter = await pool.statistics().totalWaits
                #expect(waitsAfter == waitsBefore, "\(waitsAfter - waitsBefore) scrapes waited for a database connection")
                // An order, not only a time: every scrape was answered while every connection slept.
                #expect(finishedSleeps.count.load(ordering: .relaxed) == 0, "scrapes waited for the database")
                // The sleeps are long so that a loaded machine cannot outlast them; end them now.
                _ = try await admin.query("SELECT pg_cancel_backend(pid) FROM pg_stat_activity WHERE query = 'SELECT pg_sleep(30)'")
                await admin.close()
                for sleeper in sleepers { _ = try? await sleeper.value }
            }
        }
    }

    /// The job brings `viewers_active`, `issues_watched` and `tenants_installed` up to date on
    /// its own, counting only viewers within the TTL.
    @Test func theFiguresFollowTheDatabaseOnceTheJobRuns() async throws {
        try await TestApp.withMigratedPool { pool in
            let configuration = try TestApp.configuration(["METRICS_REFRESH_SECONDS": "1", "VIEWER_TTL_SECONDS": "60"])
            let secrets = try configuration.resolveSecretBox()
            let app = buildApplication(
                configuration: configuration, pool: pool, secrets: secrets, metrics: PrometheusCollectorRegistry(), logger: TestDatabase.logger
            )
            try await app.test(.router) { client in
                let initial = try await Self.scrape(
                    client,
                    until: { text in
                        Self.value("tenants_installed", in: text) == 0 && Self.value("viewers_active", in: text) == 0
                    })
                #expect(initial.met, "figures at start:\n\(initial.text)")
                try await TenantRepository(pool: pool, secrets: secrets).install(Self.tenant)
                try await pool.query(
                    """
                    INSERT INTO viewers (client_key, issue_id, issue_key, account_id, tab_id, first_seen, last_seen)
                    VALUES ('jira:gauges', '1', 'G-1', 'alice', 't1', now(), now()),
                           ('jira:gauges', '1', 'G-1', 'bob', 't2', now(), now()),
                           ('jira:gauges', '2', 'G-2', 'alice', 't3', now(), now()),
                           ('jira:gauges', '3', 'G-3', 'carol', 't4', now() - interval '1 hour', now() - interval '1 hour')
                    """
                )
                let before = Date().timeIntervalSince1970
                let updated = try await Self.scrape(
                    client,
                    until: { text in
                        Self.value("viewers_active", in: text) == 3 && Self.value("issues_watched", in: text) == 2
                            && Self.value("tenants_installed", in: text) == 1
                            && (Self.value("metrics_db_refreshed_timestamp_seconds", in: text) ?? 0) >= before - 1
                    })
                #expect(updated.met, "figures after the job ran:\n\(updated.text)")
            }
        }
    }
}

final class FinishedCount: Sendable {
    let count = Atomic<Int>(0)
}
