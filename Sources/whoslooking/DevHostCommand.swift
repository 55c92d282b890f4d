import ArgumentParser
import DevHost
import Foundation
import Logging
import WhosLookingApp

struct DevHostCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "devhost",
        abstract: "Run a local stand-in for a Jira Cloud site that installs the app and shows its panel."
    )

    @Option(help: "Port of the stand-in.") var port: Int = 2990
    @Option(help: "The app's URL (its descriptor is fetched from there).") var app: String = "http://localhost:8080"
    @Option(help: "Address to bind.") var host: String = "127.0.0.1"

    func run() async throws {
        let logger = Server.makeLogger(level: .info)
        let devHost = try DevHost(configuration: .init(port: port, appURL: app, host: host), logger: logger)
        logger.notice("local Jira stand-in", metadata: [
            "open": "http://localhost:\(port)/",
            "installKeys": "http://localhost:\(port)/install-keys",
            "allJS": "http://localhost:\(port)/all.js",
        ])
        try await devHost.run()
    }
}
