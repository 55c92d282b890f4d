import Tenants
import Foundation
import Hummingbird
import HummingbirdTesting
import Libpq
import TestSupport
import Testing
@testable import WhosLookingApp

@Suite("Health and readiness", .timeLimit(.minutes(3)))
struct HealthTests {
    func configuration() throws -> AppConfiguration {
        try TestApp.configuration()
    }

    func secrets() throws -> SecretBox {
        try configuration().resolveSecretBox()
    }

    @Test func healthzAndReadyzWithADatabase() async throws {
        try await TestDatabase.withScratchPool { pool in
            let app = buildApplication(
                configuration: try configuration(), pool: pool, secrets: try secrets(), metrics: TestApp.metrics, logger: TestDatabase.logger)
            try await app.test(.router) { client in
                try await client.execute(uri: "/healthz", method: .get) { response in
                    #expect(response.status == .ok)
                }
                try await client.execute(uri: "/readyz", method: .get) { response in
                    #expect(response.status == .ok)
                    #expect(String(buffer: response.body) == "ready\n")
                }
            }
        }
    }

    /// `/readyz` needs no credentials, so it must not be a database query per call: fifty
    /// probes at once share one check, and a second later the next probe checks again.
    @Test func readinessProbesShareOneCheckASecond() async throws {
        try await TestDatabase.withScratchPool { pool in
            let controller = HealthController(pool: pool)
            let router = Router(context: AppRequestContext.self)
            controller.addRoutes(to: router)
            let app = Application(router: router)
            try await app.test(.router) { client in
                try await withThrowingTaskGroup(of: HTTPResponse.Status.self) { group in
                    for _ in 0..<50 { group.addTask { try await client.execute(uri: "/readyz", method: .get) { $0.status } } }
                    for try await status in group { #expect(status == .ok) }
                }
                #expect(controller.probe.checks == 1, "\(controller.probe.checks) checks for 50 probes")
                try await Task.sleep(for: .milliseconds(1100))
                #expect(try await client.execute(uri: "/readyz", method: .get) { $0.status } == .ok)
                #expect(controller.probe.checks == 2, "a stale answer is checked again")
            }
        }
    }

    @Test func readyzIs503WhenTheDatabaseIsUnreachable() async throws {
        let pool = PostgresPool(
            configuration: .init(conninfo: "host=/nonexistent/socket-folder user=nobody dbname=none", maxConnections: 1, connectTimeoutSeconds: 1),
            logger: TestDatabase.logger
        )
        let app = buildApplication(
            configuration: try configuration(), pool: pool, secrets: try secrets(), metrics: TestApp.metrics, logger: TestDatabase.logger)
        try await app.test(.router) { client in
            try await client.execute(uri: "/readyz", method: .get) { response in
                #expect(response.status == .serviceUnavailable)
                let body = String(buffer: response.body)
                #expect(body == "database unavailable\n")
                #expect(!body.contains("nonexistent"), "the response must not leak connection details")
            }
            try await client.execute(uri: "/healthz", method: .get) { response in
                #expect(response.status == .ok)
            }
        }
        await pool.close()
    }

    /// Every pool connection busy in pg_sleep must not hold up a request that needs no database:
    /// libpq blocks only the pool's own threads.
    @Test func slowQueriesDoNotDelayOtherRequests() async throws {
        try await TestDatabase.withScratchPool(maxConnections: 4) { pool in
            let app = buildApplication(
                configuration: try configuration(), pool: pool, secrets: try secrets(), metrics: TestApp.metrics, logger: TestDatabase.logger)
            try await app.test(.live) { client in
                let finishedSleeps = Counter()
                let sleepers = (0..<4).map { _ in
                    Task {
                        try await pool.query("SELECT pg_sleep(30)")
                        await finishedSleeps.increment()
                    }
                }
                // Wait until all four sleeps run on the server.
                let admin = PostgresPool(configuration: .init(conninfo: TestDatabase.serverConninfo, maxConnections: 1), logger: TestDatabase.logger)
                let allSleeping = await eventually {
                    let rows = try await admin.query(
                        "SELECT count(*) AS n FROM pg_stat_activity WHERE query = 'SELECT pg_sleep(30)' AND state = 'active'")
                    return try rows[0].decode(Int.self, "n") == 4
                }
                try #require(allSleeping, "the four sleeps never all ran: nothing below would be shown")
                for _ in 0..<5 {
                    try await client.execute(uri: "/healthz", method: .get) { response in
                        #expect(response.status == .ok)
                    }
                }
                // Answered while every connection still sleeps: nothing waited on the database.
                // (An order, not a time limit: a loaded machine slows both sides alike; the
                // sleeps are long, then cancelled, so the test does not wait them out.)
                #expect(await finishedSleeps.value == 0, "/healthz waited for the database")
                _ = try await admin.query("SELECT pg_cancel_backend(pid) FROM pg_stat_activity WHERE query = 'SELECT pg_sleep(30)'")
                await admin.close()
                for sleeper in sleepers { _ = try? await sleeper.value }
            }
        }
    }
}

actor Counter {
    private(set) var value = 0
    func increment() { value += 1 }
}
