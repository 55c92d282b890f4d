import ArgumentParser
import Foundation
import WhosLookingApp

@main
struct WhosLooking: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "whoslooking",
        abstract: "Who's Looking: live presence for Jira Cloud issues (an Atlassian Connect app).",
        subcommands: [Serve.self, Migrate.self, JWTCommand.self, DevHostCommand.self, ProbeCommand.self],
        defaultSubcommand: Serve.self
    )
}

struct Serve: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Serve HTTP (configured by environment variables; see README)."
    )

    func run() async throws {
        try await runReportingErrors { try await Server.serve(configuration: try AppConfiguration()) }
    }
}

struct Migrate: AsyncParsableCommand {
    static let configuration = CommandConfiguration(abstract: "Apply pending database migrations and exit.")

    func run() async throws {
        try await runReportingErrors { try await Server.migrate(configuration: try AppConfiguration()) }
    }
}

/// Start-up failures end the process with one clear line, not a stack trace.
func runReportingErrors(_ body: () async throws -> Void) async throws {
    do {
        try await body()
    } catch {
        FileHandle.standardError.write(Data("whoslooking: \(error)\n".utf8))
        throw ExitCode.failure
    }
}
