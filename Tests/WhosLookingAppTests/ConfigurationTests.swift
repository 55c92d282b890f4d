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

    /// Where keys, scripts and our own identity come from must be https: plain http (which
    /// anyone on the path can answer) only on a loopback host, and each such relaxation is listed.
    @Test func trustAnchorsMustBeHTTPSUnlessOnLoopback() throws {
        let anchors = ["BASE_URL", "CONNECT_INSTALL_KEYS_URL", "FORGE_JWKS_URL", "ALLJS_URL", "PERSONAL_DATA_REPORT_URL"]
        for variable in anchors {
            let environment = migrations.merging([variable: "http://keys.example.com/path/"]) { $1 }
            let error = #expect(throws: AppConfiguration.Invalid.self) { try AppConfiguration(environment: environment) }
            #expect(error?.variable == variable && error?.reason.contains("https") == true, "\(variable)")
        }
        for host in ["localhost", "127.0.0.1", "127.8.9.10", "[::1]"] {
            let configuration = try AppConfiguration(
                environment: migrations.merging(["FORGE_JWKS_URL": "http://\(host):2990/forge/jwks.json"]) { $1 })
            #expect(configuration.plainHTTPTrustAnchors.contains("FORGE_JWKS_URL"), "\(host)")
        }
        for almost in ["http://127.0.0.1.evil.example/", "http://localhost.example.com/", "http://128.0.0.1/"] {
            #expect(throws: AppConfiguration.Invalid.self) { try AppConfiguration(environment: migrations.merging(["ALLJS_URL": almost]) { $1 }) }
        }
        let production = try AppConfiguration(environment: migrations.merging(["BASE_URL": "https://presence.example.com"]) { $1 })
        #expect(production.plainHTTPTrustAnchors.isEmpty, "\(production.plainHTTPTrustAnchors)")
        // The default BASE_URL (http://localhost) is a loopback relaxation, and is listed as one.
        #expect(try AppConfiguration(environment: migrations).plainHTTPTrustAnchors == ["BASE_URL"])
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
