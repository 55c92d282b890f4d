import Foundation
import Libpq
import TestSupport
import Testing

@Suite("Migrations", .timeLimit(.minutes(3)))
struct MigratorTests {
    let first = Migrator.Migration(version: 1, fileName: "0001_counter.sql", sql: """
        CREATE TABLE counter (n integer);
        INSERT INTO counter VALUES (1);
        """)
    let second = Migrator.Migration(version: 2, fileName: "0002_more.sql", sql: "INSERT INTO counter VALUES (2);")

    private func counterRows(_ pool: PostgresPool) async throws -> [Int] {
        try await pool.query("SELECT n FROM counter ORDER BY n").map { try $0.decode(Int.self, "n") }
    }

    @Test func appliesInOrderOnceAndRerunIsANoOp() async throws {
        try await TestDatabase.withScratchPool { pool in
            let migrator = Migrator(migrations: [second, first])
            let applied = try await migrator.migrate(pool: pool, logger: TestDatabase.logger)
            #expect(applied == ["0001_counter.sql", "0002_more.sql"])
            let again = try await migrator.migrate(pool: pool, logger: TestDatabase.logger)
            #expect(again.isEmpty)
            #expect(try await counterRows(pool) == [1, 2])
            let recorded = try await pool.query("SELECT file_name, checksum FROM schema_migrations ORDER BY version")
            #expect(recorded.count == 2)
            #expect(try recorded[0].decode(String.self, "checksum").count == 64)
        }
    }

    @Test func concurrentStartsApplyEachMigrationOnce() async throws {
        try await TestDatabase.withScratchDatabase { conninfo in
            let slow = Migrator.Migration(version: 3, fileName: "0003_slow.sql", sql: "SELECT pg_sleep(0.3); INSERT INTO counter VALUES (3);")
            let migrator = Migrator(migrations: [first, second, slow])
            let pools = (0..<4).map { _ in
                PostgresPool(configuration: .init(conninfo: conninfo, maxConnections: 1), logger: TestDatabase.logger)
            }
            let applied = try await withThrowingTaskGroup(of: [String].self) { group in
                for pool in pools {
                    group.addTask { try await migrator.migrate(pool: pool, logger: TestDatabase.logger) }
                }
                return try await group.reduce([], +)
            }
            for pool in pools { await pool.close() }
            #expect(applied.sorted() == ["0001_counter.sql", "0002_more.sql", "0003_slow.sql"])
            let pool = PostgresPool(configuration: .init(conninfo: conninfo, maxConnections: 1), logger: TestDatabase.logger)
            #expect(try await counterRows(pool) == [1, 2, 3])
            await pool.close()
        }
    }

    @Test func changedFileIsRefusedByName() async throws {
        try await TestDatabase.withScratchPool { pool in
            try await Migrator(migrations: [first]).migrate(pool: pool, logger: TestDatabase.logger)
            var edited = first
            edited.sql += "\nINSERT INTO counter VALUES (99);"
            do {
                try await Migrator(migrations: [edited, second]).migrate(pool: pool, logger: TestDatabase.logger)
                Issue.record("an edited migration was accepted")
            } catch let error as Migrator.MigrationError {
                #expect(error.description.contains("0001_counter.sql"))
                #expect(error.description.contains("changed after it was applied"))
            }
            // Nothing after the refusal ran.
            #expect(try await counterRows(pool) == [1])
        }
    }

    @Test func failingMigrationLeavesNoTrace() async throws {
        try await TestDatabase.withScratchPool { pool in
            let broken = Migrator.Migration(version: 2, fileName: "0002_broken.sql", sql: "INSERT INTO counter VALUES (2); SELECT * FROM missing_table;")
            do {
                try await Migrator(migrations: [first, broken]).migrate(pool: pool, logger: TestDatabase.logger)
                Issue.record("a failing migration was reported as applied")
            } catch let error as Migrator.MigrationError {
                #expect(error.description.contains("0002_broken.sql"))
                #expect(error.description.contains("42P01"))
            }
            #expect(try await counterRows(pool) == [1])
            let recorded = try await pool.query("SELECT count(*) AS n FROM schema_migrations")
            #expect(try recorded[0].decode(Int.self, "n") == 1)
        }
    }

    @Test func readsNumberedFilesFromAFolder() throws {
        let folder = URL(fileURLWithPath: NSTemporaryDirectory()).appendingPathComponent("wl-migrations-\(UUID().uuidString.prefix(8))")
        try FileManager.default.createDirectory(at: folder, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(at: folder) }
        try "SELECT 2;".write(to: folder.appendingPathComponent("0002_b.sql"), atomically: true, encoding: .utf8)
        try "SELECT 1;".write(to: folder.appendingPathComponent("0001_a.sql"), atomically: true, encoding: .utf8)
        try "notes".write(to: folder.appendingPathComponent("README.md"), atomically: true, encoding: .utf8)
        let migrator = try Migrator(directory: folder)
        #expect(migrator.migrations.map(\.fileName) == ["0001_a.sql", "0002_b.sql"])

        try "SELECT 3;".write(to: folder.appendingPathComponent("oops.sql"), atomically: true, encoding: .utf8)
        #expect(throws: Migrator.MigrationError.self) { try Migrator(directory: folder) }
    }
}
