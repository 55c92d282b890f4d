import Tenants
import EmbeddedPostgres
import Foundation
import Hummingbird
import Libpq
import Logging
import Metrics
import Prometheus

/// Start-up and shut-down around the HTTP application: database (embedded or given),
/// migrations, serving until SIGTERM/SIGINT, then closing the pool and the embedded cluster.
public enum Server {
    public static func makeLogger(level: Logger.Level) -> Logger {
        var logger = Logger(label: "whoslooking")
        logger.logLevel = level
        return logger
    }

    /// Process-wide logging (text or JSON lines) and the Prometheus registry behind swift-metrics.
    static func bootstrapObservability(_ configuration: AppConfiguration) -> PrometheusCollectorRegistry {
        // Both formats escape control characters: values from outside cannot start a log line.
        if configuration.logFormat == "json" {
            LoggingSystem.bootstrap { label in JSONLogHandler(label: label) }
        } else {
            LoggingSystem.bootstrap { label in TextLogHandler(label: label) }
        }
        let registry = PrometheusCollectorRegistry()
        MetricsSystem.bootstrap(PrometheusMetricsFactory(registry: registry))
        return registry
    }

    /// Runs the service until a shutdown signal.
    public static func serve(configuration: AppConfiguration) async throws {
        let registry = bootstrapObservability(configuration)
        let logger = makeLogger(level: configuration.logLevel)
        let secrets = try configuration.resolveSecretBox()
        try await withDatabase(configuration: configuration, logger: logger) { pool in
            let migrator = try Migrator(directory: configuration.migrationsDirectory)
            try await migrator.migrate(pool: pool, logger: logger)
            try await resealSecrets(pool: pool, secrets: secrets, logger: logger)
            let app = buildApplication(configuration: configuration, pool: pool, secrets: secrets, metrics: registry, logger: logger)
            if !configuration.plainHTTPTrustAnchors.isEmpty {
                // Each one lets this machine's loopback speak for Atlassian (the local stand-ins):
                // said once, at start, so that no deployment runs so without knowing it.
                logger.warning(
                    "trust relaxed: plain http on loopback for \(configuration.plainHTTPTrustAnchors.joined(separator: ", "))",
                    metadata: ["settings": "\(configuration.plainHTTPTrustAnchors.joined(separator: ","))"])
            }
            logger.info("serving", metadata: ["baseURL": "\(configuration.baseURL.absoluteString)"])
            try await app.runService()
        }
    }

    /// After a key rotation, secrets sealed under a previous key are re-sealed under the current one.
    static func resealSecrets(pool: PostgresPool, secrets: SecretBox, logger: Logger) async throws {
        let (resealed, unreadable) = try await TenantRepository(pool: pool, secrets: secrets).resealUnderCurrentKey()
        if resealed > 0 { logger.notice("re-sealed shared secrets under the current key", metadata: ["tenants": "\(resealed)"]) }
        if unreadable > 0 {
            logger.error(
                "shared secrets sealed under an unknown key: those sites must reinstall, or add the old key to SECRET_ENCRYPTION_KEY_PREVIOUS",
                metadata: ["tenants": "\(unreadable)"])
        }
    }

    /// Applies pending migrations and exits.
    public static func migrate(configuration: AppConfiguration) async throws {
        let logger = makeLogger(level: configuration.logLevel)
        try await withDatabase(configuration: configuration, logger: logger) { pool in
            let applied = try await Migrator(directory: configuration.migrationsDirectory).migrate(pool: pool, logger: logger)
            logger.info("migrations done", metadata: ["applied": "\(applied.count)"])
            await pool.close()
        }
    }

    /// Opens the pool on DATABASE_URL, or on an embedded cluster it starts and later stops.
    static func withDatabase(
        configuration: AppConfiguration,
        logger: Logger,
        _ body: (PostgresPool) async throws -> Void
    ) async throws {
        var embedded: EmbeddedPostgres?
        let conninfo: String
        if let databaseURL = configuration.databaseURL {
            conninfo = databaseURL
        } else {
            let cluster = EmbeddedPostgres(dataDirectory: configuration.embeddedPostgresDirectory, logger: logger)
            logger.info("no DATABASE_URL: using the embedded PostgreSQL", metadata: ["data": "\(configuration.embeddedPostgresDirectory.path)"])
            conninfo = try await cluster.start()
            embedded = cluster
        }
        let pool = PostgresPool(configuration: configuration.databasePoolConfiguration(conninfo: conninfo), logger: logger)
        do {
            try await body(pool)
        } catch {
            await pool.close()
            try? await embedded?.stop()
            throw error
        }
        await pool.close()
        try await embedded?.stop()
    }
}
