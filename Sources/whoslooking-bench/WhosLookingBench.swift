import ArgumentParser

/// scripts/bench's helpers. Without a subcommand it is the Jira side (`prepare`), as it was
/// before the live run, so older invocations keep working.
@main
struct WhosLookingBench: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "whoslooking-bench",
        abstract: "scripts/bench's helpers: the Jira side, and the clients of the live run.",
        subcommands: [BenchHost.self, HoldWaits.self, NotifyLatency.self],
        defaultSubcommand: BenchHost.self
    )
}
