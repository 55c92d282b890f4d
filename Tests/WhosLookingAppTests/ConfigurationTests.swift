import Tenants
import Foundation
import Logging
import Testing
@testable import WhosLookingApp

@Suite("Configuration from the environment", .timeLimit(.minutes(3)))
struct ConfigurationTests {
    let migrations = ["MIGRATIONS_DIR": NSTemporaryDirectory()]

    @Test func defaults() throws {
        let configuration = try AppConfiguration(environment: migrations)
        #expect(configuration.port == 8080)
        #expect(configuration.host == "127.0.0.1")
        #expect(configuration.baseURL.absoluteString == "http://localhost:8080")
        #expect(configuration.databaseURL == nil)
        #expect(configuration.embeddedPostgresDirectory.path.hasSuffix(".whoslooking/postgres"))
        #expect(configuration.logLevel == .info)
    }

    @Test func baseURLFollowsPortAndDropsOneTrailingSlash() throws {
        #expect(try AppConfiguration(environment: migrations.merging(["PORT": "9000"]) { $1 }).baseURL.absoluteString == "http://localhost:9000")
        let configured = try AppConfiguration(environment: migrations.merging(["BASE_URL": "https://presence.example.com/app/"]) { $1 })
        #expect(configured.baseURL.absoluteString == "https://presence.example.com/app")
    }

    @Test(arguments: [
        ("PORT", "eighty"),
        ("PORT", "70000"),
        ("BASE_URL", "ftp://example.com"),
        ("BASE_URL", "https://example.com/?x=1"),
        ("BASE_URL", "not a url"),
        ("LOG_LEVEL", "loud"),
        ("DATABASE_POOL_SIZE", "0"),
        ("MIGRATIONS_DIR", "/no/such/folder"),
    ])
    func invalidValuesNameTheVariable(variable: String, value: String) throws {
        let environment = migrations.merging([variable: value]) { $1 }
        let error = #expect(throws: AppConfiguration.Invalid.self) { try AppConfiguration(environment: environment) }
        #expect(error?.variable == variable)
        #expect(error?.description.contains(variable) == true)
    }

    @Test func secretKeyIsRequiredWithAnExternalDatabase() throws {
        let configuration = try AppConfiguration(environment: migrations.merging(["DATABASE_URL": "host=/tmp dbname=x"]) { $1 })
        let error = #expect(throws: AppConfiguration.Invalid.self) { try configuration.resolveSecretBox() }
        #expect(error?.variable == "SECRET_ENCRYPTION_KEY")
    }

    @Test func embeddedDefaultGeneratesItsKeyOnceWithMode0600() throws {
        let folder = FileManager.default.temporaryDirectory.appendingPathComponent("wl-key-\(UUID().uuidString.prefix(8))")
        defer { try? FileManager.default.removeItem(at: folder) }
        let configuration = try AppConfiguration(environment: migrations.merging(["DATA_DIR": folder.path]) { $1 })
        let first = try configuration.resolveSecretBox()
        let second = try configuration.resolveSecretBox()
        #expect(first.keyID == second.keyID)
        let attributes = try FileManager.default.attributesOfItem(atPath: folder.appendingPathComponent("secret.key").path)
        #expect((attributes[.posixPermissions] as? Int) == 0o600)
        let other = try AppConfiguration(environment: migrations.merging(["DATA_DIR": folder.path + "-other"]) { $1 })
        defer { try? FileManager.default.removeItem(atPath: folder.path + "-other") }
        #expect(try other.resolveSecretBox().keyID != first.keyID)
    }

    @Test func badSecretKeyAndAppKeyNameTheirVariables() throws {
        for (variable, value) in [("SECRET_ENCRYPTION_KEY", "c2hvcnQ="), ("APP_KEY", "has spaces"), ("CONNECT_INSTALL_KEYS_URL", "nope")] {
            let error = #expect(throws: AppConfiguration.Invalid.self) {
                try AppConfiguration(environment: migrations.merging([variable: value]) { $1 })
            }
            #expect(error?.variable == variable)
        }
    }
}
