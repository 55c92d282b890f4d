import Tenants
import Foundation
import Hummingbird
import Libpq
import Metrics
import Prometheus
import ServiceLifecycle
import TestSupport
@testable import WhosLookingApp

/// The app as the tests run it: a scratch database with the real migrations, a fresh
/// encryption key, and a public https BASE_URL.
struct TestApp {
    static let baseURL = "https://whoslooking.test"
    static let migrations = SharedMaterial.projectRoot.appendingPathComponent("Migrations").path

    let configuration: AppConfiguration
    let pool: PostgresPool
    let secrets: SecretBox
    let parts: AppParts

    var tenants: TenantRepository { TenantRepository(pool: pool, secrets: secrets) }

    static func configuration(_ overrides: [String: String] = [:]) throws -> AppConfiguration {
        let environment = [
            "PORT": "0",
            "BASE_URL": baseURL,
            "MIGRATIONS_DIR": migrations,
            "SECRET_ENCRYPTION_KEY": SecretBox.generateKey(),
        ].merging(overrides) { $1 }
        return try AppConfiguration(environment: environment)
    }

    /// swift-metrics allows one backend per process: every test app reports into this registry.
    static let metrics: PrometheusCollectorRegistry = {
        let registry = PrometheusCollectorRegistry()
        MetricsSystem.bootstrap(PrometheusMetricsFactory(registry: registry))
        return registry
    }()

    /// The viewer ticket a server-rendered panel hands its script (`data-ticket`).
    static func ticket(in html: String) -> String? {
        html.range(of: #"data-ticket="([^"]+)""#, options: .regularExpression).map { String(html[$0].dropFirst(13).dropLast()) }
    }

    /// A scratch database with the real migrations applied.
    static func withMigratedPool<Result>(_ body: (PostgresPool) async throws -> Result) async throws -> Result {
        try await TestDatabase.withScratchPool { pool in
            try await Migrator(directory: URL(fileURLWithPath: migrations)).migrate(pool: pool, logger: TestDatabase.logger)
            return try await body(pool)
        }
    }

    /// A migrated scratch database and the app over it.
    static func with<Result: Sendable>(
        environment overrides: [String: String] = [:],
        _ body: (TestApp, any ApplicationProtocol) async throws -> Result
    ) async throws -> Result {
        let configuration = try configuration(overrides)
        return try await withMigratedPool { pool in
            let secrets = try configuration.resolveSecretBox()
            let parts = AppParts(configuration: configuration, pool: pool, secrets: secrets, metrics: metrics, logger: TestDatabase.logger)
            // The routes only: background services are started by the tests that want them, except
            // user lookups, which run (and are stopped) around the test, before the pool closes.
            let app = Application(router: parts.router(), configuration: .init(address: .hostname("127.0.0.1", port: 0)), logger: TestDatabase.logger)
            return try await running(parts.enricher) {
                try await body(TestApp(configuration: configuration, pool: pool, secrets: secrets, parts: parts), app)
            }
        }
    }

    /// Runs `service` in a service group while `body` runs, then shuts it down gracefully and waits for it.
    static func running<Result: Sendable>(_ service: some Service, _ body: () async throws -> Result) async throws -> Result {
        let group = ServiceGroup(configuration: .init(services: [service], gracefulShutdownSignals: [], logger: TestDatabase.logger))
        return try await withThrowingTaskGroup(of: Void.self) { tasks in
            tasks.addTask { try await group.run() }
            let result: Result
            do {
                result = try await body()
            } catch {
                await group.triggerGracefulShutdown()
                try? await tasks.waitForAll()
                throw error
            }
            await group.triggerGracefulShutdown()
            try await tasks.waitForAll()
            return result
        }
    }
}
