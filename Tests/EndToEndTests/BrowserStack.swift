import Foundation
import TestSupport
import Testing

/// What every browser suite drives: `instances` × `whoslooking serve` on one scratch database
/// (one secret key), the devhost (our Jira stand-in) that installs the first instance and knows
/// them all, and chromedriver. All of it is stopped afterwards, awaited, whether the test threw
/// or not; chromedriver's shutdown ends every browser the test left open.
struct BrowserStack {
    let conninfo: String
    let appURLs: [String]
    let apps: [ChildService]
    let devhostURL: String
    let driver: WebDriver

    /// `forge`: the devhost also serves the Forge door (its own app id and key set), and the
    /// stack is ready only once both doors are installed. `environment` adds to each instance's.
    static func with(
        instances: Int = 1, forge: Bool, environment: [String: String], name: String, _ body: (BrowserStack) async throws -> Void
    ) async throws {
        try await TestDatabase.withScratchDatabase { conninfo in
            let ports = try FreePort.next(instances + 1)
            let appURLs = ports.dropLast().map { "http://localhost:\($0)" }
            let devhostURL = "http://localhost:\(ports[instances])"
            let forgeAppID = "ari:cloud:ecosystem::app/\(UUID().uuidString.lowercased())"
            var shared = [
                "SECRET_ENCRYPTION_KEY": Data((0..<32).map { _ in UInt8.random(in: 0...255) }).base64EncodedString(),
                "CONNECT_INSTALL_KEYS_URL": "\(devhostURL)/install-keys", "ALLJS_URL": "\(devhostURL)/all.js",
                "PERSONAL_DATA_REPORT_URL": "\(devhostURL)/app/report-accounts/",
                "MIGRATIONS_DIR": SharedMaterial.projectRoot.appendingPathComponent("Migrations").path,
                "PUBLIC_DIR": SharedMaterial.projectRoot.appendingPathComponent("Public").path,
            ]
            var devhostArguments = ["devhost", "--port", String(ports[instances])] + appURLs.flatMap { ["--app", $0] }
            if forge {
                shared["FORGE_APP_ID"] = forgeAppID
                shared["FORGE_JWKS_URL"] = "\(devhostURL)/forge/jwks.json"
                devhostArguments += [
                    "--forge-app-id", forgeAppID, "--forge-source", SharedMaterial.projectRoot.appendingPathComponent("forge/src").path,
                ]
            }
            var apps: [ChildService] = []
            defer { apps.forEach { $0.stop() } }
            for (index, url) in appURLs.enumerated() {
                let own = ["DATABASE_URL": conninfo, "PORT": String(ports[index]), "BASE_URL": url]
                apps.append(
                    try ChildService(
                        arguments: ["serve"], environment: shared.merging(own) { $1 }.merging(environment) { $1 },
                        name: instances == 1 ? "\(name)-app" : "\(name)-app\(index + 1)"))
            }
            let devhost = try ChildService(arguments: devhostArguments, environment: [:], name: "\(name)-devhost")
            defer { devhost.stop() }
            let (driver, chromedriver) = try await WebDriver.start()
            defer { WebDriver.kill(chromedriver) }
            try await ensuring {
                for (index, app) in apps.enumerated() {
                    #expect(await ChildService.waitFor("\(appURLs[index])/readyz"), "app \(index + 1) never ready:\n\(app.output)")
                }
                let installed = await eventually(timeout: .seconds(30)) {
                    let page = try await ChildService.get(devhostURL + "/")
                    return page.contains("— installed") && (!forge || page.contains("Forge — installed"))
                }
                #expect(installed, "devhost never installed the app:\n\(devhost.output)\n\(apps[0].output)")
                try await body(BrowserStack(conninfo: conninfo, appURLs: appURLs, apps: apps, devhostURL: devhostURL, driver: driver))
            } cleanup: {
                await driver.shutdown(chromedriver)
                for app in apps { await app.stopAndWait() }
                await devhost.stopAndWait()
            }
        }
    }
}
