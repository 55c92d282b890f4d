import ArgumentParser
import AsyncHTTPClient
import DevHost
import Foundation
import Logging
import NIOCore

/// The Jira side of `scripts/bench`: a devhost that installs the app through the real signed
/// install, then opens the panel for V viewers over I issues (real signed iframe requests) and
/// writes the tickets those panels answer, one `issueId ticket` line each, for the load generator.
/// With `--forge-app-id` it also plays Forge: the app is installed through the Forge installed
/// event, and it writes one `tabId invocationToken systemToken` line per viewer, RS256 tokens
/// signed with its Forge key (valid for an hour, so the run can reuse them; the app's check
/// is the same RSA verification either way). It keeps serving (user lookups, install keys,
/// the JWKS) until stopped.
struct BenchHost: AsyncParsableCommand {
    static let configuration = CommandConfiguration(commandName: "prepare", abstract: "Prepare credentials for the heartbeat benchmark.")

    @Option(help: "The app's URL.") var app: String
    @Option(help: "Port of the Jira stand-in.") var port: Int = 12990
    @Option(help: "Viewers to prepare.") var viewers: Int = 20_000
    @Option(help: "Issues they are spread over.") var issues: Int = 5_000
    @Option(help: "File to write the tickets to.") var out: String
    @Option(help: "Panel loads in flight at once.") var concurrency: Int = 32
    @Option(help: "Also prepare Forge heartbeats for this Forge app id.") var forgeAppId: String?
    @Option(help: "File to write the Forge heartbeats to.") var forgeOut: String?

    func run() async throws {
        var logger = Logger(label: "bench-host")
        logger.logLevel = .warning
        let forgeConfiguration = forgeAppId.map { ForgeSite.Configuration(appId: $0) }
        let host = try DevHost(configuration: .init(port: port, appURL: app, forge: forgeConfiguration), logger: logger)
        let serving = Task { try await host.run() }
        let deadline = ContinuousClock.now + .seconds(60)
        while !(await host.isInstalled) {
            guard ContinuousClock.now < deadline else { throw ValidationError("the app was not installed within 60 s") }
            try await Task.sleep(for: .milliseconds(200))
        }

        let started = ContinuousClock.now
        var lines: [String] = []
        lines.reserveCapacity(viewers)
        try await withThrowingTaskGroup(of: String.self) { group in
            var next = 0
            func addNext() {
                let index = next
                next += 1
                group.addTask {
                    let issue = 100_000 + index % issues
                    guard let url = try await host.signedPanelURL(issueID: String(issue), issueKey: "BENCH-\(issue)", accountId: "bench-\(index)")
                    else {
                        throw ValidationError("not installed")
                    }
                    let response = try await HTTPClient.shared.execute(HTTPClientRequest(url: url), timeout: .seconds(30))
                    let html = String(buffer: try await response.body.collect(upTo: 1 << 20))
                    guard response.status == .ok, let range = html.range(of: #"data-ticket="([^"]+)""#, options: .regularExpression) else {
                        throw ValidationError("panel answered \(response.status.code)")
                    }
                    return "\(issue) " + html[range].dropFirst(13).dropLast()
                }
            }
            for _ in 0..<min(concurrency, viewers) { addNext() }
            while let line = try await group.next() {
                lines.append(line)
                if next < viewers { addNext() }
            }
        }
        try Self.write(lines, to: out)
        let elapsed = ContinuousClock.now - started
        if let site = host.forge, let forgeOut {
            try Self.write(try await forgeHeartbeats(site), to: forgeOut)
        }
        let ready =
            "READY viewers=\(lines.count) issues=\(min(issues, viewers)) panel_loads_s=\(Int(Double(lines.count) / (Double(elapsed.components.seconds) + Double(elapsed.components.attoseconds) / 1e18)))\n"
        FileHandle.standardOutput.write(Data(ready.utf8))
        try await serving.value
    }

    /// One `tabId invocationToken systemToken userToken` line per viewer, once the Forge install went through.
    func forgeHeartbeats(_ site: ForgeSite) async throws -> [String] {
        let deadline = ContinuousClock.now + .seconds(60)
        while await site.status != .installed {
            guard ContinuousClock.now < deadline else { throw ValidationError("the Forge app was not installed within 60 s") }
            try await Task.sleep(for: .milliseconds(200))
        }
        let systemToken = try await site.systemToken()
        return try await withThrowingTaskGroup(of: String.self) { group in
            for index in 0..<viewers {
                group.addTask {
                    let issue = 100_000 + index % issues
                    var claims = await site.invocationClaims(
                        module: .background, issue: .init(id: String(issue), key: "BENCH-\(issue)", type: "Task", typeId: "10002"),
                        accountId: "forge-bench-\(index)"
                    )
                    claims.exp = claims.iat + 3600
                    let userToken = try await site.userToken(accountId: "forge-bench-\(index)")
                    return "\(UUID().uuidString.lowercased()) \(try await site.sign(claims)) \(systemToken) \(userToken)"
                }
            }
            var lines: [String] = []
            lines.reserveCapacity(viewers)
            for try await line in group { lines.append(line) }
            return lines
        }
    }

    static func write(_ lines: [String], to path: String) throws {
        let temporary = path + ".partial"
        try (lines.joined(separator: "\n") + "\n").write(toFile: temporary, atomically: true, encoding: .utf8)
        try? FileManager.default.removeItem(atPath: path)
        try FileManager.default.moveItem(atPath: temporary, toPath: path)
    }
}
