import Foundation
import Libpq
import Logging

/// The test PostgreSQL server started by `scripts/test`, and scratch databases on it.
public enum TestDatabase {
    /// Conninfo of the test server's maintenance database, from DATABASE_URL.
    public static var serverConninfo: String {
        guard let conninfo = ProcessInfo.processInfo.environment["DATABASE_URL"], !conninfo.isEmpty else {
            fatalError("DATABASE_URL is not set: run the tests with scripts/test, which starts a private PostgreSQL")
        }
        return conninfo
    }

    public static let logger: Logger = {
        var logger = Logger(label: "test")
        logger.logLevel = .warning
        return logger
    }()

    /// Conninfo for database `name` on the test server.
    public static func conninfo(database name: String) -> String {
        // A later dbname keyword overrides the one in DATABASE_URL (keyword form or URL).
        serverConninfo.contains("://")
            ? serverConninfo + (serverConninfo.contains("?") ? "&" : "?") + "dbname=\(name)"
            : serverConninfo + " dbname=\(name)"
    }

    /// Runs `body` with a database of its own, dropped afterwards, so tests can run in parallel.
    public static func withScratchDatabase<Result>(
        _ body: (_ conninfo: String) async throws -> Result
    ) async throws -> Result {
        let name = "test_" + UUID().uuidString.replacingOccurrences(of: "-", with: "").prefix(16).lowercased()
        let admin = PostgresPool(configuration: .init(conninfo: serverConninfo, maxConnections: 1), logger: logger)
        try await admin.withConnection { try await $0.execute(script: "CREATE DATABASE \(name)") }
        do {
            let result = try await body(conninfo(database: name))
            try await admin.withConnection { try await $0.execute(script: "DROP DATABASE \(name) WITH (FORCE)") }
            await admin.close()
            return result
        } catch {
            _ = try? await admin.withConnection { try await $0.execute(script: "DROP DATABASE \(name) WITH (FORCE)") }
            await admin.close()
            throw error
        }
    }

    /// A pool on `conninfo`, closed afterwards (thrown or not).
    public static func withPool<Result>(
        conninfo: String, maxConnections: Int = 2, _ body: (PostgresPool) async throws -> Result
    ) async throws -> Result {
        let pool = PostgresPool(configuration: .init(conninfo: conninfo, maxConnections: maxConnections), logger: logger)
        return try await ensuring {
            try await body(pool)
        } cleanup: {
            await pool.close()
        }
    }

    /// A pool on a scratch database, closed afterwards.
    public static func withScratchPool<Result>(
        maxConnections: Int = 4,
        _ body: (PostgresPool) async throws -> Result
    ) async throws -> Result {
        try await withScratchDatabase { conninfo in
            try await withPool(conninfo: conninfo, maxConnections: maxConnections, body)
        }
    }
}
