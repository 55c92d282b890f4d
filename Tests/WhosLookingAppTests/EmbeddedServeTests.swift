import AsyncHTTPClient
import Foundation
import Testing

/// Runs the real `whoslooking` executable with no DATABASE_URL.
@Suite("serve with the embedded PostgreSQL")
struct EmbeddedServeTests {
    var executable: URL {
        // The test bundle sits in the build folder beside the executables.
        URL(fileURLWithPath: CommandLine.arguments[0]).deletingLastPathComponent().appendingPathComponent("whoslooking")
    }

    @Test func startsAnswersReadyAndLeavesNoPostgresAfterSIGTERM() async throws {
        let folder = URL(fileURLWithPath: "/tmp/wl-serve-\(UUID().uuidString.prefix(8))")
        defer { try? FileManager.default.removeItem(at: folder) }
        let port = Int.random(in: 20_000..<40_000)
        let process = Process()
        process.executableURL = executable
        var environment = ProcessInfo.processInfo.environment
        environment.removeValue(forKey: "DATABASE_URL")
        environment["DATA_DIR"] = folder.path
        environment["PORT"] = String(port)
        environment["MIGRATIONS_DIR"] = FileManager.default.currentDirectoryPath + "/Migrations"
        process.environment = environment
        let log = folder.appendingPathExtension("log")
        _ = FileManager.default.createFile(atPath: log.path, contents: nil)
        defer { try? FileManager.default.removeItem(at: log) }
        let logHandle = try FileHandle(forWritingTo: log)
        process.standardOutput = logHandle
        process.standardError = logHandle
        try process.run()

        var readyStatus: UInt = 0
        for _ in 0..<300 where readyStatus != 200 {
            try await Task.sleep(for: .milliseconds(100))
            var request = HTTPClientRequest(url: "http://127.0.0.1:\(port)/readyz")
            request.method = .GET
            if let response = try? await HTTPClient.shared.execute(request, timeout: .seconds(2)) {
                readyStatus = response.status.code
            }
        }
        let output = { (try? String(contentsOf: log, encoding: .utf8)) ?? "" }
        #expect(readyStatus == 200, "never ready; log:\n\(output())")

        let postmasterPID = try String(contentsOf: folder.appendingPathComponent("postgres/postmaster.pid"), encoding: .utf8)
            .split(separator: "\n").first.flatMap { Int32($0) }
        #expect(postmasterPID != nil)

        process.terminate()  // SIGTERM
        process.waitUntilExit()
        #expect(process.terminationReason == .exit)
        #expect(process.terminationStatus == 0, "log:\n\(output())")
        if let postmasterPID {
            #expect(!isRunning(postmasterPID), "PostgreSQL (pid \(postmasterPID)) still runs after the service stopped")
        }
        #expect(!FileManager.default.fileExists(atPath: folder.appendingPathComponent("postgres/postmaster.pid").path))
        #expect(output().contains("PostgreSQL stopped"))
    }

    /// Alive and not a zombie waiting for its (re)parent to reap it.
    func isRunning(_ pid: Int32) -> Bool {
        guard let stat = try? String(contentsOfFile: "/proc/\(pid)/stat", encoding: .utf8),
              let afterName = stat.range(of: ") ")
        else { return false }
        return stat[afterName.upperBound...].first != "Z"
    }
}
