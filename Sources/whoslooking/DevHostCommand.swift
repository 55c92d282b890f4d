import ArgumentParser
import DevHost
import Foundation
import Logging
import WhosLookingApp

struct DevHostCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "devhost",
        abstract: "Run a local stand-in for a Jira Cloud site that installs the app and shows its panel.",
        discussion: """
            With --forge-app-id it also plays Forge's part for the same site: it installs the Forge \
            app (POST <app>/forge/lifecycle), serves issue pages with the Custom UI of --forge-source \
            under /forge/browse/{issueKey}?as={person}, signs Forge Invocation Tokens (JWKS at \
            /forge/jwks.json) and system tokens, and proxies invokeRemote to the app.
            """
    )

    @Option(help: "Port of the stand-in.") var port: Int = 2990
    @Option(
        help: """
            The app's URL (its descriptor is fetched from there; default http://localhost:8080). Repeat it for more \
            instances on the same database: only the first is installed, and an issue page with via=N talks to the Nth.
            """
    ) var app: [String] = []
    @Option(help: "Address to bind.") var host: String = "127.0.0.1"
    @Option(help: "Also stand in for Forge, for the Forge app with this id (ari:cloud:ecosystem::app/…).") var forgeAppId: String?
    @Option(help: "The Forge app's Custom UI source folder, served to the issue pages.") var forgeSource: String = "forge/src"

    func run() async throws {
        let logger = Server.makeLogger(level: .info)
        let forge = forgeAppId.map { ForgeSite.Configuration(appId: $0, sourceFolder: forgeSource) }
        let apps = app.isEmpty ? ["http://localhost:8080"] : app
        let devHost = try DevHost(
            configuration: .init(port: port, appURL: apps[0], host: host, forge: forge, otherAppURLs: Array(apps.dropFirst())), logger: logger)
        logger.notice(
            "local Jira stand-in",
            metadata: [
                "open": "http://localhost:\(port)/",
                "installKeys": "http://localhost:\(port)/install-keys",
                "allJS": "http://localhost:\(port)/all.js",
            ])
        if let site = devHost.forge {
            if !FileManager.default.fileExists(atPath: site.sourceRoot.path) {
                logger.warning("the Forge source folder does not exist", metadata: ["forgeSource": "\(site.sourceRoot.path)"])
            }
            logger.notice(
                "local Forge stand-in",
                metadata: [
                    "appId": "\(site.appId)", "cloudId": "\(site.cloudId)", "source": "\(site.sourceRoot.path)",
                    "jwks": "http://localhost:\(port)/forge/jwks.json", "issue": "http://localhost:\(port)/forge/browse/DEMO-1?as=alice",
                ])
        }
        try await devHost.run()
    }
}
