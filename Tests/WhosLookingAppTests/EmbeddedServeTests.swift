import Foundation
import TestSupport
import Testing

/// Runs the real `whoslooking` executable with no DATABASE_URL.
@Suite("serve with the embedded PostgreSQL", .timeLimit(.minutes(3)))
struct EmbeddedServeTests {
    @Test func startsAnswersReadyAndLeavesNoPostgresAfterSIGTERM() async throws {
        let folder = URL(fileURLWithPath: "/tmp/wl-serve-\(UUID().uuidString.prefix(8))")
        defer { try? FileManager.default.removeItem(at: folder) }
        let port = try FreePort.next()
        let service = try ChildService(
            arguments: [],
            environment: [
                "DATABASE_URL": "",
                "DATA_DIR": folder.path,
                "PORT": String(port),
                "MIGRATIONS_DIR": SharedMaterial.projectRoot.appendingPathComponent("Migrations").path,
            ], name: "embedded-serve")
        defer { service.stop() }

        let ready = await ChildService.waitFor("http://127.0.0.1:\(port)/readyz")
        #expect(ready, "never ready; log:\n\(service.output)")

        let postmasterPID = try String(contentsOf: folder.appendingPathComponent("postgres/postmaster.pid"), encoding: .utf8)
            .split(separator: "\n").first.flatMap { Int32($0) }
        #expect(postmasterPID != nil)

        await service.stopAndWait()  // SIGTERM
        #expect(service.process.terminationReason == .exit)
        #expect(service.process.terminationStatus == 0, "log:\n\(service.output)")
        if let postmasterPID {
            #expect(!isRunning(postmasterPID), "PostgreSQL (pid \(postmasterPID)) still runs after the service stopped")
        }
        #expect(!FileManager.default.fileExists(atPath: folder.appendingPathComponent("postgres/postmaster.pid").path))
        #expect(service.output.contains("PostgreSQL stopped"))
        let key = try FileManager.default.attributesOfItem(atPath: folder.appendingPathComponent("secret.key").path)
        #expect((key[.posixPermissions] as? Int) == 0o600, "the embedded default's secret key is private")
    }

    /// Alive and not a zombie waiting for its (re)parent to reap it.
    func isRunning(_ pid: Int32) -> Bool {
        guard let stat = try? String(contentsOfFile: "/proc/\(pid)/stat", encoding: .utf8),
            let afterName = stat.range(of: ") ")
        else { return false }
        return stat[afterName.upperBound...].first != "Z"
    }
}
