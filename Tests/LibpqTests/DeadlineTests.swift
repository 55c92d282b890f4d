import Foundation
import Libpq
import TestSupport
import Testing

/// Every database call has a deadline: the server's `statement_timeout`, a client-side cancel
/// for a server that does not answer, and a bounded wait for a connection; heartbeats keep
/// their own share of the pool.
@Suite("Deadlines and the reserved share", .timeLimit(.minutes(3)))
struct DeadlineTests {
    /// A pool on `conninfo`; closed after `body`.
    static func withPool<Result>(
        _ configuration: PostgresPool.Configuration, _ body: (PostgresPool) async throws -> Result
    ) async throws -> Result {
        let pool = PostgresPool(configuration: configuration, logger: TestDatabase.logger)
        do {
            let result = try await body(pool)
            await pool.close()
            return result
        } catch {
            await pool.close()
            throw error
        }
    }

    @Test func theServersStatementTimeoutEndsAStatementAndKeepsTheSession() async throws {
        try await TestDatabase.withScratchDatabase { conninfo in
            let configuration = PostgresPool.Configuration(conninfo: conninfo, maxConnections: 1, statementTimeout: .milliseconds(300))
            try await Self.withPool(configuration) { pool in
                let before = try await pool.withConnection { try await $0.backendPID() }
                let started = ContinuousClock.now
                let error = await #expect(throws: PostgresError.self) { try await pool.query("SELECT pg_sleep(10)") }
                #expect(ContinuousClock.now - started < .seconds(5))
                #expect(error?.sqlState == SQLState.queryCanceled, "the cause reaches the log: \(String(describing: error))")
                #expect(error?.isTransient == true)
                #expect(error?.clientMessage == "database unavailable")
                #expect(error.map { "\($0)".contains("sqlstate=57014") } == true)
                // The session stays: the server ended the statement itself.
                let after = try await pool.withConnection { try await $0.backendPID() }
                #expect(after == before)
                // It is the session's default, so RESET and DISCARD ALL keep it.
                let shown = try await pool.withConnection { connection in
                    try await connection.execute(script: "RESET statement_timeout")
                    return try await connection.query("SELECT current_setting('statement_timeout') AS value")[0].decode(String.self, "value")
                }
                #expect(shown == "300ms")
            }
        }
    }

    @Test func theStatementTimeoutKeepsTheConninfosOwnOptions() async throws {
        try await TestDatabase.withScratchDatabase { conninfo in
            let withOptions = conninfo.contains("://") ? conninfo : conninfo + " options='-c work_mem=7MB'"
            let configuration = PostgresPool.Configuration(conninfo: withOptions, maxConnections: 1, statementTimeout: .seconds(2))
            try await Self.withPool(configuration) { pool in
                let rows = try await pool.query(
                    "SELECT current_setting('statement_timeout') AS timeout, current_setting('work_mem') AS work_mem"
                )
                #expect(try rows[0].decode(String.self, "timeout") == "2s")
                if !conninfo.contains("://") { #expect(try rows[0].decode(String.self, "work_mem") == "7MB") }
            }
        }
    }

    @Test func aClientDeadlineCancelsAStatementTheServerWouldLetRun() async throws {
        try await TestDatabase.withScratchDatabase { conninfo in
            // No server-side timeout: only the client's deadline can end this.
            let configuration = PostgresPool.Configuration(conninfo: conninfo, maxConnections: 1, queryTimeout: .milliseconds(300))
            try await Self.withPool(configuration) { pool in
                let before = try await pool.withConnection { try await $0.backendPID() }
                let started = ContinuousClock.now
                let error = await #expect(throws: PostgresError.self) { try await pool.query("SELECT pg_sleep(30)") }
                #expect(ContinuousClock.now - started < .seconds(5), "cancelled at the deadline, not after the sleep")
                #expect(error?.sqlState == SQLState.queryCanceled)
                #expect(error?.detail?.contains("cancelled by the client") == true, "\(String(describing: error))")
                // The server really stopped it: nothing of ours is still running.
                let admin = PostgresPool(configuration: .init(conninfo: conninfo, maxConnections: 1), logger: TestDatabase.logger)
                let running = try await admin.query(
                    "SELECT count(*) AS n FROM pg_stat_activity WHERE query = 'SELECT pg_sleep(30)' AND state = 'active'")
                await admin.close()
                #expect(try running[0].decode(Int.self, "n") == 0)
                // A session we sent a cancel for is replaced, and the pool works on.
                let rows = try await pool.query("SELECT pg_backend_pid() AS pid")
                #expect(try rows[0].decode(Int32.self, "pid") != before)
                // A call may lift the deadline for itself (longer work on purpose).
                let slow = try await pool.query("SELECT pg_sleep(0.6), 1 AS one", timeout: .seconds(5))
                #expect(try slow[0].decode(Int.self, "one") == 1)
            }
        }
    }

    /// A backend stopped with SIGSTOP answers neither the statement nor the cancel request (the
    /// server-side timeout cannot fire either): the client gives the connection up at its
    /// deadline, and the next call gets a fresh backend while the stopped one is still stopped.
    @Test func aStoppedBackendIsGivenUpAtTheDeadline() async throws {
        try await TestDatabase.withScratchDatabase { conninfo in
            let configuration = PostgresPool.Configuration(
                conninfo: conninfo, maxConnections: 1, statementTimeout: .milliseconds(500),
                queryTimeout: .milliseconds(800), cancelGrace: .milliseconds(500)
            )
            try await Self.withPool(configuration) { pool in
                let stopped = try await pool.withConnection { try await $0.backendPID() }
                try #require(stopped > 0)
                #expect(kill(stopped, SIGSTOP) == 0)
                defer { kill(stopped, SIGCONT) }
                let started = ContinuousClock.now
                let error = await #expect(throws: PostgresError.self) { try await pool.query("SELECT 1") }
                let elapsed = ContinuousClock.now - started
                #expect(error?.kind == .timeout, "\(String(describing: error))")
                #expect(error?.isTransient == true)
                #expect(elapsed >= .milliseconds(700), "not before the deadline: \(elapsed)")
                #expect(elapsed < .seconds(5), "deadline 0.8 s + grace 0.5 s, took \(elapsed)")

                let rows = try await pool.query("SELECT pg_backend_pid() AS pid")
                #expect(try rows[0].decode(Int32.self, "pid") != stopped, "a fresh backend while the old one is still stopped")
                #expect(Self.isStopped(stopped), "the backend was stopped throughout")
            }
        }
    }

    @Test func otherCallersNeverTakeTheReservedConnections() async throws {
        try await TestDatabase.withScratchDatabase { conninfo in
            let configuration = PostgresPool.Configuration(
                conninfo: conninfo, maxConnections: 3, acquireTimeout: .milliseconds(300), reservedConnections: 1
            )
            try await Self.withPool(configuration) { pool in
                // Two general callers hold their connections (as slow scrapes or stuck requests would).
                let holders = (0..<2).map { _ in Self.holdLease(pool, lane: .general) }
                #expect(await eventually(timeout: .seconds(10)) { await pool.statistics().lentGeneral == 2 })
                // The general share (3 - 1) is taken: another general caller waits and fails...
                let refused = await #expect(throws: PostgresError.self) { try await pool.query("SELECT 1") }
                #expect(refused?.kind == .poolTimeout)
                #expect(refused?.isTransient == true)
                // ...while the reserved lane is served at once.
                let started = ContinuousClock.now
                let rows = try await pool.query("SELECT 2 AS two", lane: .reserved)
                #expect(try rows[0].decode(Int.self, "two") == 2)
                #expect(ContinuousClock.now - started < .seconds(5))
                #expect(await pool.statistics().lentGeneral == 2)
                for (release, holder) in holders {
                    release.finish()
                    try await holder.value
                }
                #expect(await pool.statistics().lentGeneral == 0)
                #expect(await pool.statistics().open <= 3)
            }
        }
    }

    @Test func aFreedConnectionGoesToAReservedWaiterFirst() async throws {
        // Pool bookkeeping only: the leases below never open a connection.
        let configuration = PostgresPool.Configuration(
            conninfo: TestDatabase.serverConninfo, maxConnections: 2, acquireTimeout: .seconds(30), reservedConnections: 1
        )
        try await Self.withPool(configuration) { pool in
            // Both connections lent to the reserved lane (which may use any): a general caller
            // may have one (its share is 1) but none is free, so it waits.
            let (releaseFirst, firstHolder) = Self.holdLease(pool, lane: .reserved)
            let (releaseSecond, secondHolder) = Self.holdLease(pool, lane: .reserved)
            #expect(await eventually { await Self.busy(pool) == 2 })
            let order = OrderLog()
            let generalWaiter = Task { try await pool.withConnection { _ in await order.append("general") } }
            #expect(await eventually { await pool.statistics().waiting == 1 })
            let reservedWaiter = Task { try await pool.withConnection(lane: .reserved) { _ in await order.append("reserved") } }
            #expect(await eventually { await pool.statistics().waiting == 2 })

            releaseFirst.finish()
            // (Once the reserved waiter is done, its connection goes on to the general one.)
            #expect(await eventually { await !order.entries.isEmpty })
            #expect(await order.entries.first == "reserved", "the reserved waiter came later but was served first")
            releaseSecond.finish()
            _ = try await (firstHolder.value, secondHolder.value, generalWaiter.value, reservedWaiter.value)
            #expect(await order.entries == ["reserved", "general"])
        }
    }

    /// A lease of `lane` held until the continuation finishes.
    static func holdLease(_ pool: PostgresPool, lane: PostgresPool.Lane) -> (AsyncStream<Void>.Continuation, Task<Void, any Error>) {
        let (released, release) = AsyncStream<Void>.makeStream()
        let holder = Task {
            try await pool.withConnection(lane: lane) { _ in
                for await _ in released {}
            }
        }
        return (release, holder)
    }

    @Test func waitersNeverOutliveTheirTimeoutOrTheirTask() async throws {
        // Pool bookkeeping only: the leases below never open a connection.
        let configuration = PostgresPool.Configuration(conninfo: TestDatabase.serverConninfo, maxConnections: 1, acquireTimeout: .seconds(30))
        try await Self.withPool(configuration) { pool in
            let (release, holder) = Self.holdLease(pool, lane: .general)
            #expect(await eventually { await Self.busy(pool) == 1 })
            // Timeouts from nothing to a few milliseconds: each fails, none is left waiting.
            let started = ContinuousClock.now
            try await withThrowingTaskGroup(of: Void.self) { group in
                for index in 0..<200 {
                    group.addTask {
                        let error = await #expect(throws: PostgresError.self) {
                            try await pool.withConnection(acquireTimeout: .microseconds(index * 20)) { _ in }
                        }
                        #expect(error?.kind == .poolTimeout)
                    }
                }
                try await group.waitForAll()
            }
            #expect(ContinuousClock.now - started < .seconds(10), "acquisitions with tiny timeouts hung")
            #expect(await pool.statistics().waiting == 0)
            // A cancelled caller stops waiting at once.
            let cancelled = Task { try await pool.withConnection { _ in } }
            #expect(await eventually { await pool.statistics().waiting == 1 })
            cancelled.cancel()
            await #expect(throws: CancellationError.self) { try await cancelled.value }
            #expect(await pool.statistics().waiting == 0)
            release.finish()
            try await holder.value
        }
    }

    /// Migrations may run long: they get no deadline, and the session they changed is not lent again.
    @Test func migrationsRunWithoutTheStatementTimeout() async throws {
        try await TestDatabase.withScratchDatabase { conninfo in
            let configuration = PostgresPool.Configuration(
                conninfo: conninfo, maxConnections: 1, statementTimeout: .milliseconds(200), queryTimeout: .milliseconds(400)
            )
            try await Self.withPool(configuration) { pool in
                let migrator = Migrator(migrations: [
                    .init(version: 1, fileName: "0001_slow.sql", sql: "SELECT pg_sleep(0.8); CREATE TABLE slow (id int)")
                ])
                #expect(try await migrator.migrate(pool: pool, logger: TestDatabase.logger) == ["0001_slow.sql"])
                let rows = try await pool.query("SELECT current_setting('statement_timeout') AS value")
                #expect(try rows[0].decode(String.self, "value") == "200ms", "the next caller has the timeout again")
            }
        }
    }

    /// Connections lent out now.
    static func busy(_ pool: PostgresPool) async -> Int {
        let statistics = await pool.statistics()
        return statistics.open - statistics.idle
    }

    /// State `T` in /proc: stopped by a signal.
    static func isStopped(_ pid: Int32) -> Bool {
        guard let stat = try? String(contentsOfFile: "/proc/\(pid)/stat", encoding: .utf8),
            let close = stat.lastIndex(of: ")")
        else { return false }
        return stat[stat.index(after: close)...].trimmingCharacters(in: .whitespaces).hasPrefix("T")
    }
}

actor OrderLog {
    private(set) var entries: [String] = []
    func append(_ entry: String) { entries.append(entry) }
}
