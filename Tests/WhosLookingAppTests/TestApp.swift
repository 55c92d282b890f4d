import Foundation
import Hummingbird
import Libpq
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

    /// A migrated scratch database and the app over it.
    static func with<Result: Sendable>(
        environment overrides: [String: String] = [:],
        _ body: (TestApp, any ApplicationProtocol) async throws -> Result
    ) async throws -> Result {
        let configuration = try configuration(overrides)
        return try await TestDatabase.withScratchPool { pool in
            try await Migrator(directory: configuration.migrationsDirectory).migrate(pool: pool, logger: TestDatabase.logger)
            let secrets = try configuration.resolveSecretBox()
            let app = buildApplication(configuration: configuration, pool: pool, secrets: secrets, logger: TestDatabase.logger)
            return try await body(TestApp(configuration: configuration, pool: pool, secrets: secrets), app)
        }
    }
}
