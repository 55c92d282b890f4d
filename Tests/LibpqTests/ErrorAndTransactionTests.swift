import Libpq
import TestSupport
import Testing

@Suite("Server errors and transactions", .timeLimit(.minutes(3)))
struct ErrorAndTransactionTests {
    @Test func uniqueViolationCarriesItsSQLState() async throws {
        try await TestDatabase.withScratchPool { pool in
            try await pool.query("CREATE TABLE keys (k text PRIMARY KEY)")
            try await pool.query("INSERT INTO keys VALUES (\("a"))")
            let error = await #expect(throws: PostgresError.self) {
                try await pool.query("INSERT INTO keys VALUES (\("a"))")
            }
            #expect(error?.kind == .server)
            #expect(error?.sqlState == SQLState.uniqueViolation)
            #expect(error?.detail?.contains("already exists") == true)
            #expect(error?.statement == "INSERT INTO keys VALUES ($1)")
            // Logs get the cause; clients get a generic phrase.
            #expect(error?.description.contains("sqlstate=23505") == true)
            #expect(error?.clientMessage == "database error")
        }
    }

    @Test func syntaxErrorLeavesTheConnectionUsable() async throws {
        try await TestDatabase.withScratchPool(maxConnections: 1) { pool in
            let error = await #expect(throws: PostgresError.self) { try await pool.query("SELEKT 1") }
            #expect(error?.sqlState == "42601")
            let rows = try await pool.query("SELECT 2 AS two")
            #expect(try rows[0].decode(Int.self, "two") == 2)
        }
    }

    @Test func transactionCommitsOrRollsBack() async throws {
        struct Abort: Error {}
        try await TestDatabase.withScratchPool { pool in
            try await pool.query("CREATE TABLE ledger (n integer)")
            try await pool.transaction { connection in
                try await connection.query("INSERT INTO ledger VALUES (\(1))")
                try await connection.query("INSERT INTO ledger VALUES (\(2))")
            }
            await #expect(throws: Abort.self) {
                try await pool.transaction { connection in
                    try await connection.query("INSERT INTO ledger VALUES (\(3))")
                    throw Abort()
                }
            }
            let rows = try await pool.query("SELECT coalesce(sum(n), 0)::bigint AS total, count(*) AS n FROM ledger")
            #expect(try rows[0].decode(Int.self, "total") == 3)
            #expect(try rows[0].decode(Int.self, "n") == 2)
            // The rolled-back connection went back to the pool clean.
            let status = try await pool.query("SELECT count(*) AS open FROM pg_stat_activity WHERE datname = current_database() AND state LIKE 'idle in transaction%'")
            #expect(try status[0].decode(Int.self, "open") == 0)
        }
    }

    @Test func affectedRowsComeFromTheCommandTag() async throws {
        try await TestDatabase.withScratchPool { pool in
            try await pool.query("CREATE TABLE t (n integer)")
            let inserted = try await pool.query("INSERT INTO t SELECT generate_series(1, \(25))")
            #expect(inserted.affectedRows == 25)
            let deleted = try await pool.query("DELETE FROM t WHERE n > \(20)")
            #expect(deleted.affectedRows == 5)
        }
    }

    @Test func preparedStatementsSurviveDiscardAll() async throws {
        try await TestDatabase.withScratchPool(maxConnections: 1) { pool in
            let first = try await pool.query("SELECT \(41) + 1 AS answer")
            #expect(try first[0].decode(Int.self, "answer") == 42)
            try await pool.withConnection { try await $0.execute(script: "DISCARD ALL") }
            let again = try await pool.query("SELECT \(41) + 1 AS answer")
            #expect(try again[0].decode(Int.self, "answer") == 42)
        }
    }
}
