import EmbeddedPostgres
import Foundation
import Libpq
import TestSupport
import Testing

@Suite("The connection pool", .timeLimit(.minutes(3)))
struct PoolTests {
    @Test func twoHundredConcurrentQueriesOnFourConnections() async throws {
        try await TestDatabase.withScratchDatabase { conninfo in
            // A generous acquire timeout: this test is about completing, not about waiting.
            let pool = PostgresPool(
                configuration: .init(conninfo: conninfo, maxConnections: 4, acquireTimeout: .seconds(120)), logger: TestDatabase.logger)
            let total = try await withThrowingTaskGroup(of: Int.self) { group in
                for n in 1...200 {
                    group.addTask {
                        let rows = try await pool.query("SELECT \(n)::bigint AS n, pg_backend_pid() AS pid")
                        return try rows[0].decode(Int.self, "n")
                    }
                }
                return try await group.reduce(0, +)
            }
            #expect(total == 200 * 201 / 2)
            let statistics = await pool.statistics()
            #expect(statistics.open <= 4)
            #expect(statistics.open >= 1)
            let backends = try await pool.query("SELECT count(*) AS n FROM pg_stat_activity WHERE datname = current_database()")
            #expect(try backends[0].decode(Int.self, "n") <= 4)
            await pool.close()
        }
    }

    @Test func oneConnectionIsNeverSharedByTwoCallers() async throws {
        try await TestDatabase.withScratchPool(maxConnections: 3) { pool in
            // A session variable set and read back inside one lease must stay ours under contention.
            try await withThrowingTaskGroup(of: Void.self) { group in
                // 30 callers on 3 connections: contention enough, without meeting the pool's
                // acquire timeout when the suite runs beside the browser and fault tests.
                for n in 0..<30 {
                    group.addTask {
                        try await pool.withConnection { connection in
                            try await connection.query("SELECT set_config('app.owner', \(String(n)), false)")
                            try await connection.query("SELECT pg_sleep(0.005)")
                            let rows = try await connection.query("SELECT current_setting('app.owner') AS owner")
                            #expect(try rows[0].decode(String.self, "owner") == String(n))
                        }
                    }
                }
                try await group.waitForAll()
            }
        }
    }

    @Test func waitingCallerTimesOutWhenNoConnectionFrees() async throws {
        try await TestDatabase.withScratchDatabase { conninfo in
            let pool = PostgresPool(
                configuration: .init(conninfo: conninfo, maxConnections: 1, acquireTimeout: .milliseconds(200)),
                logger: TestDatabase.logger
            )
            let holder = Task { try await pool.query("SELECT pg_sleep(3)") }
            // Wait until the holder really has the only connection.
            for _ in 0..<200 {
                let statistics = await pool.statistics()
                if statistics.open == 1 && statistics.idle == 0 { break }
                try await Task.sleep(for: .milliseconds(10))
            }
            let error = await #expect(throws: PostgresError.self) { try await pool.query("SELECT 1") }
            #expect(error?.kind == .poolTimeout)
            _ = try await holder.value
            #expect((await pool.statistics()).totalWaits >= 1)
            await pool.close()
        }
    }

    /// A session whose backend is gone is never lent again: the pool's check reads the closed
    /// socket and opens a new session. Ten rounds, each a new backend.
    ///
    /// "Gone" is the backend process, not its `pg_stat_activity` row: a terminated backend
    /// leaves that view (a shared-memory exit callback) before it writes its FATAL and closes
    /// its socket (a later process exit callback), so a query sent in between was written to a
    /// session already ending and failed with that FATAL. That was the fresh clone's failure
    /// here; a loop of ten rounds hit it every time. libpq hands that FATAL over without its
    /// SQLSTATE, so the pool cannot tell it from a crash mid-statement, and does not retry.
    @Test func terminatedBackendIsReplaced() async throws {
        try await TestDatabase.withScratchDatabase { conninfo in
            let pool = PostgresPool(configuration: .init(conninfo: conninfo, maxConnections: 1), logger: TestDatabase.logger)
            let admin = PostgresPool(configuration: .init(conninfo: conninfo, maxConnections: 1), logger: TestDatabase.logger)
            for round in 0..<10 {
                let firstPID = try await pool.withConnection { try await $0.backendPID() }
                let killed = try await admin.query("SELECT pg_terminate_backend(\(Int32(firstPID))) AS ok")
                #expect(try killed[0].decode(Bool.self, "ok"))
                // pg_terminate_backend only signals: wait until the process has exited and been
                // reaped (its /proc entry goes then), by which time its socket is closed.
                let ended = await eventually { !FileManager.default.fileExists(atPath: "/proc/\(firstPID)") }
                try #require(ended, "backend \(firstPID) did not end")
                let rows = try await pool.query("SELECT pg_backend_pid() AS pid")
                #expect(try rows[0].decode(Int32.self, "pid") != firstPID, "round \(round)")
            }
            await pool.close()
            await admin.close()
        }
    }

    @Test func closedPoolRefusesWork() async throws {
        try await TestDatabase.withScratchDatabase { conninfo in
            let pool = PostgresPool(configuration: .init(conninfo: conninfo, maxConnections: 2), logger: TestDatabase.logger)
            try await pool.query("SELECT 1")
            await pool.close()
            let error = await #expect(throws: PostgresError.self) { try await pool.query("SELECT 1") }
            #expect(error?.kind == .poolClosed)
        }
    }

    @Test func serverStopFailsFastAndRestartRecovers() async throws {
        let folder = URL(fileURLWithPath: NSTemporaryDirectory()).appendingPathComponent("wl-restart-\(UUID().uuidString.prefix(8))")
        defer { try? FileManager.default.removeItem(at: folder) }
        let cluster = EmbeddedPostgres(dataDirectory: folder.appendingPathComponent("pg"), database: "restart", logger: TestDatabase.logger)
        let conninfo = try await cluster.start()
        let pool = PostgresPool(configuration: .init(conninfo: conninfo, maxConnections: 2, connectTimeoutSeconds: 2), logger: TestDatabase.logger)
        do {
            try await pool.query("SELECT 1")
            try await cluster.stop()

            let started = ContinuousClock.now
            await #expect(throws: PostgresError.self) { try await pool.query("SELECT 1") }
            let second = await #expect(throws: PostgresError.self) { try await pool.query("SELECT 1") }
            #expect(second?.isConnectionFailure == true)
            #expect(ContinuousClock.now - started < .seconds(8), "a stopped server must fail calls within the connect timeout, not hang")

            try await cluster.start()
            let rows = try await pool.query("SELECT 7 AS seven")
            #expect(try rows[0].decode(Int.self, "seven") == 7)
        } catch {
            await pool.close()
            try? await cluster.stop()
            throw error
        }
        await pool.close()
        try await cluster.stop()
        #expect(cluster.postmasterPID() == nil)
        #expect(!FileManager.default.fileExists(atPath: cluster.socketDirectory), "the socket folder is left in /tmp")
    }
}
