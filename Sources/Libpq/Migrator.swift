import Crypto
import Foundation
import Logging

/// Applies `NNNN_description.sql` files in order, each in its own transaction, recording
/// each with its checksum in `schema_migrations`.
///
/// A session advisory lock makes instances that start together apply each file once.
/// A recorded file whose content changed stops everything: history must not be rewritten.
public struct Migrator: Sendable {
    public struct Migration: Sendable, Equatable {
        public var version: Int
        public var fileName: String
        public var sql: String

        public init(version: Int, fileName: String, sql: String) {
            self.version = version
            self.fileName = fileName
            self.sql = sql
        }
    }

    public enum MigrationError: Error, CustomStringConvertible {
        case unreadableDirectory(String)
        case badFileName(String)
        case duplicateVersion(Int, String, String)
        case changedAfterApplying(String)
        case failed(String, PostgresError)

        public var description: String {
            switch self {
            case .unreadableDirectory(let path):
                "cannot read the migrations folder \(path)"
            case .badFileName(let name):
                "migration file \(name) is not named NNNN_description.sql"
            case .duplicateVersion(let version, let first, let second):
                "migrations \(first) and \(second) share version \(version)"
            case .changedAfterApplying(let name):
                "migration \(name) was changed after it was applied; restore it and put the change in a new migration"
            case .failed(let name, let error):
                "migration \(name) failed: \(error)"
            }
        }
    }

    /// An arbitrary constant naming our advisory lock ("whoslook" in ASCII).
    static let advisoryLockKey = 0x77686f736c6f6f6b

    public let migrations: [Migration]

    public init(migrations: [Migration]) {
        self.migrations = migrations.sorted { $0.version < $1.version }
    }

    /// Reads every `.sql` file of `directory`.
    public init(directory: URL) throws {
        let names: [String]
        do {
            names = try FileManager.default.contentsOfDirectory(atPath: directory.path)
        } catch {
            throw MigrationError.unreadableDirectory(directory.path)
        }
        var byVersion: [Int: Migration] = [:]
        for name in names where name.hasSuffix(".sql") {
            let digits = name.prefix { $0.isASCII && $0.isNumber }
            guard !digits.isEmpty, name.dropFirst(digits.count).first == "_", let version = Int(digits) else {
                throw MigrationError.badFileName(name)
            }
            if let existing = byVersion[version] {
                throw MigrationError.duplicateVersion(version, existing.fileName, name)
            }
            let sql = try String(contentsOf: directory.appendingPathComponent(name), encoding: .utf8)
            byVersion[version] = Migration(version: version, fileName: name, sql: sql)
        }
        self.init(migrations: Array(byVersion.values))
    }

    /// Applies what is missing; answers the file names applied by this call.
    @discardableResult
    public func migrate(pool: PostgresPool, logger: Logger) async throws -> [String] {
        try await pool.withConnection { connection in
            // Waiting for another instance's migrations and running DDL may take long: no
            // statement deadline on this session, which is closed afterwards rather than lent
            // again with its settings.
            connection.discardAfterUse()
            connection.queryTimeout = nil
            try await connection.execute(script: "SET statement_timeout = 0")
            try await connection.query("SELECT pg_advisory_lock(\(Self.advisoryLockKey))")
            do {
                let applied = try await apply(on: connection, logger: logger)
                try await connection.query("SELECT pg_advisory_unlock(\(Self.advisoryLockKey))")
                return applied
            } catch {
                _ = try? await connection.query("SELECT pg_advisory_unlock(\(Self.advisoryLockKey))")
                throw error
            }
        }
    }

    private func apply(on connection: PooledConnection, logger: Logger) async throws -> [String] {
        try await connection.execute(script: """
            CREATE TABLE IF NOT EXISTS schema_migrations (
                version integer PRIMARY KEY,
                file_name text NOT NULL,
                checksum text NOT NULL,
                applied_at timestamptz NOT NULL DEFAULT now()
            )
            """)
        var recorded: [Int: (fileName: String, checksum: String)] = [:]
        for row in try await connection.query("SELECT version, file_name, checksum FROM schema_migrations") {
            recorded[try row.decode(Int.self, "version")] = (try row.decode(String.self, "file_name"), try row.decode(String.self, "checksum"))
        }
        var applied: [String] = []
        for migration in migrations {
            let checksum = Self.checksum(of: migration.sql)
            if let existing = recorded[migration.version] {
                guard existing.checksum == checksum else { throw MigrationError.changedAfterApplying(migration.fileName) }
                continue
            }
            do {
                try await connection.execute(script: "BEGIN")
                try await connection.execute(script: migration.sql)
                try await connection.query("""
                    INSERT INTO schema_migrations (version, file_name, checksum)
                    VALUES (\(migration.version), \(migration.fileName), \(checksum))
                    """)
                try await connection.execute(script: "COMMIT")
            } catch let error as PostgresError {
                _ = try? await connection.execute(script: "ROLLBACK")
                throw MigrationError.failed(migration.fileName, error)
            }
            logger.info("applied migration", metadata: ["file": "\(migration.fileName)"])
            applied.append(migration.fileName)
        }
        let known = Set(migrations.map(\.version))
        for (version, entry) in recorded where !known.contains(version) {
            logger.warning("database has a migration this build does not know; is a newer version running?", metadata: ["version": "\(version)", "file": "\(entry.fileName)"])
        }
        return applied
    }

    /// SHA-256, so an operator can compare with `sha256sum Migrations/…`.
    static func checksum(of sql: String) -> String {
        SHA256.hash(data: Array(sql.utf8)).map { String(format: "%02x", $0) }.joined()
    }
}
