import AsyncHTTPClient
import Foundation

/// A program of ours run as a separate process (the real `whoslooking` executable), its output
/// kept in a log file for failure messages.
public final class ChildService: @unchecked Sendable {
    public let process = Process()
    public let log: URL

    /// The executable built beside the test bundle.
    public static var whoslooking: URL {
        URL(fileURLWithPath: CommandLine.arguments[0]).deletingLastPathComponent().appendingPathComponent("whoslooking")
    }

    /// `openFilesLimit` runs the executable under `ulimit -n` (soft and hard), as a host with a
    /// low descriptor limit would.
    public init(arguments: [String], environment: [String: String], name: String, openFilesLimit: Int? = nil) throws {
        log = FileManager.default.temporaryDirectory.appendingPathComponent("\(name)-\(UUID().uuidString.prefix(8)).log")
        _ = FileManager.default.createFile(atPath: log.path, contents: nil)
        let handle = try FileHandle(forWritingTo: log)
        if let openFilesLimit {
            // `exec` keeps the process id: SIGTERM still reaches the app itself.
            process.executableURL = URL(fileURLWithPath: "/bin/sh")
            process.arguments = ["-c", "ulimit -n \(openFilesLimit) && exec \"$0\" \"$@\"", Self.whoslooking.path] + arguments
        } else {
            process.executableURL = Self.whoslooking
            process.arguments = arguments
        }
        var merged = ProcessInfo.processInfo.environment
        merged.merge(environment) { $1 }
        process.environment = merged
        process.standardOutput = handle
        process.standardError = handle
        try process.run()
    }

    public var output: String { (try? String(contentsOf: log, encoding: .utf8)) ?? "" }

    /// SIGTERM, without waiting (usable from `defer`); `stopAndWait` waits for the exit.
    public func stop() {
        if process.isRunning { process.terminate() }
    }

    /// SIGTERM and wait for the exit, off the cooperative pool.
    public func stopAndWait() async {
        stop()
        await Subprocess.waitForExit(process)
    }

    /// Polls `url` until it answers `status`.
    public static func waitFor(_ url: String, status: UInt = 200, timeout: Duration = .seconds(60)) async -> Bool {
        await eventually(timeout: timeout) {
            let response = try await HTTPClient.shared.execute(HTTPClientRequest(url: url), timeout: .seconds(2))
            _ = try await response.body.collect(upTo: 1 << 20)
            return response.status.code == status
        }
    }

    public static func get(_ url: String) async throws -> String {
        let response = try await HTTPClient.shared.execute(HTTPClientRequest(url: url), timeout: .seconds(5))
        return String(buffer: try await response.body.collect(upTo: 1 << 20))
    }
}
