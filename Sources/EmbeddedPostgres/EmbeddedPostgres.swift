import Foundation
import Libpq
import Logging

/// A private PostgreSQL cluster run from the system's server binaries: initialised once into a
/// data folder, listening only on a private Unix socket, stopped again by `stop()`.
///
/// PostgreSQL refuses to run as root; when we are root, the cluster runs as `postgres`.
public actor EmbeddedPostgres {
    public struct Failure: Error, CustomStringConvertible {
        public var description: String
    }

    public let dataDirectory: URL
    public let database: String
    private let logger: Logger
    private var startedByUs = false
    private var binaries: URL?

    static let superuser = "whoslooking"
    static let unprivilegedUser = "postgres"

    public init(dataDirectory: URL, database: String = "whoslooking", logger: Logger) {
        self.dataDirectory = dataDirectory.standardizedFileURL
        self.database = database
        self.logger = logger
    }

    /// The folder of the server's Unix socket: short, since socket paths are limited to 107 bytes.
    public nonisolated var socketDirectory: String {
        var hash: UInt64 = 0xcbf2_9ce4_8422_2325
        for byte in dataDirectory.path.utf8 {
            hash = (hash ^ UInt64(byte)) &* 0x100_0000_01b3
        }
        return "/tmp/whoslooking-pg-\(String(hash, radix: 16))"
    }

    /// Conninfo for the cluster's application database.
    public nonisolated var conninfo: String {
        "host=\(socketDirectory) user=\(Self.superuser) dbname=\(database)"
    }

    /// Starts the cluster (initialising it first if needed) and creates the database; answers the conninfo.
    @discardableResult
    public func start() async throws -> String {
        let bin = try await Self.findServerBinaries()
        binaries = bin
        let runAs = geteuid() == 0 ? Self.unprivilegedUser : nil
        if let runAs, getpwnam(runAs) == nil {
            throw Failure(description: "running as root, but PostgreSQL refuses root and there is no '\(runAs)' user to run it as: create one (useradd --system \(runAs)) or run as another user")
        }
        try prepareDirectory(socketDirectory, owner: runAs)
        if !FileManager.default.fileExists(atPath: dataDirectory.appendingPathComponent("PG_VERSION").path) {
            try prepareDirectory(dataDirectory.path, owner: runAs)
            logger.info("initialising PostgreSQL cluster", metadata: ["data": "\(dataDirectory.path)"])
            try await runStep("initdb", [
                "-D", dataDirectory.path, "-U", Self.superuser, "--auth=trust",
                "--encoding=UTF8", "--no-locale",
            ], bin: bin, as: runAs)
        }
        if await isRunning(bin: bin, as: runAs) {
            logger.notice("PostgreSQL already running on this data folder; using it and leaving it running", metadata: ["data": "\(dataDirectory.path)"])
        } else {
            // No TCP listener at all: the socket folder (mode 0700) is the only way in.
            let options = "-c listen_addresses='' -k \(socketDirectory) -c unix_socket_permissions=0700"
            try await runStep("pg_ctl", [
                "start", "-D", dataDirectory.path, "-w", "-t", "60", "-s",
                "-l", dataDirectory.appendingPathComponent("server.log").path, "-o", options,
            ], bin: bin, as: runAs)
            startedByUs = true
        }
        logger.notice("PostgreSQL ready", metadata: ["data": "\(dataDirectory.path)", "socket": "\(socketDirectory)"])
        try await createDatabaseIfMissing()
        return conninfo
    }

    /// Stops the cluster if this instance started it.
    public func stop() async throws {
        guard startedByUs, let bin = binaries else { return }
        let runAs = geteuid() == 0 ? Self.unprivilegedUser : nil
        try await runStep("pg_ctl", ["stop", "-D", dataDirectory.path, "-m", "fast", "-w", "-t", "60", "-s"], bin: bin, as: runAs)
        startedByUs = false
        // The socket folder is ours and empty once the server is gone: leave nothing behind in /tmp.
        try? FileManager.default.removeItem(atPath: socketDirectory)
        logger.info("PostgreSQL stopped", metadata: ["data": "\(dataDirectory.path)"])
    }

    /// The postmaster's process id while the cluster runs (first line of postmaster.pid).
    public nonisolated func postmasterPID() -> Int32? {
        let pidFile = dataDirectory.appendingPathComponent("postmaster.pid").path
        guard let text = try? String(contentsOfFile: pidFile, encoding: .utf8) else { return nil }
        return text.split(separator: "\n").first.flatMap { Int32($0) }
    }

    /// Looks in PATH, then `pg_config --bindir`, then the newest `/usr/lib/postgresql/*/bin`.
    public static func findServerBinaries() async throws -> URL {
        if let initdb = ChildProcess.findExecutable("initdb"), ChildProcess.findExecutable("pg_ctl") != nil {
            return URL(fileURLWithPath: initdb).deletingLastPathComponent()
        }
        if let pgConfig = ChildProcess.findExecutable("pg_config"),
           let output = try? await ChildProcess.run(pgConfig, ["--bindir"]) {
            let bindir = output.trimmingCharacters(in: .whitespacesAndNewlines)
            if FileManager.default.isExecutableFile(atPath: bindir + "/initdb") {
                return URL(fileURLWithPath: bindir)
            }
        }
        let root = "/usr/lib/postgresql"
        let versions = ((try? FileManager.default.contentsOfDirectory(atPath: root)) ?? [])
            .compactMap(Int.init).sorted(by: >)
        for version in versions where FileManager.default.isExecutableFile(atPath: "\(root)/\(version)/bin/initdb") {
            return URL(fileURLWithPath: "\(root)/\(version)/bin")
        }
        throw Failure(description: "no PostgreSQL server binaries (initdb, pg_ctl) found in PATH, pg_config --bindir or /usr/lib/postgresql/*/bin: install them (Debian/Ubuntu: apt-get install postgresql) or set DATABASE_URL to an existing server")
    }

    private func isRunning(bin: URL, as user: String?) async -> Bool {
        (try? await ChildProcess.run(bin.appendingPathComponent("pg_ctl").path, ["status", "-D", dataDirectory.path], as: user)) != nil
    }

    private func runStep(_ tool: String, _ arguments: [String], bin: URL, as user: String?) async throws {
        do {
            _ = try await ChildProcess.run(bin.appendingPathComponent(tool).path, arguments, as: user)
        } catch let failure as ChildProcess.Failure {
            var message = failure.description
            if tool == "pg_ctl", let log = try? String(contentsOf: dataDirectory.appendingPathComponent("server.log"), encoding: .utf8) {
                message += "\nlast server log lines:\n" + log.split(separator: "\n").suffix(10).joined(separator: "\n")
            }
            throw Failure(description: message)
        }
    }

    /// Creates `path` (mode 0700) and hands it to `owner`, so the server may write there.
    private func prepareDirectory(_ path: String, owner: String?) throws {
        let manager = FileManager.default
        // Parents stay enterable (0755) so the server's user can reach the folder itself (0700).
        try manager.createDirectory(atPath: URL(fileURLWithPath: path).deletingLastPathComponent().path, withIntermediateDirectories: true)
        try manager.createDirectory(atPath: path, withIntermediateDirectories: true, attributes: [.posixPermissions: 0o700])
        try manager.setAttributes([.posixPermissions: 0o700], ofItemAtPath: path)
        if let owner, let entry = getpwnam(owner) {
            guard chown(path, entry.pointee.pw_uid, entry.pointee.pw_gid) == 0 else {
                throw Failure(description: "cannot hand \(path) to user \(owner): \(String(cString: strerror(errno)))")
            }
            // The server's user must be able to reach the folder through its parents.
            var parent = URL(fileURLWithPath: path).deletingLastPathComponent()
            while parent.path != "/" {
                if let attributes = try? manager.attributesOfItem(atPath: parent.path),
                   let mode = attributes[.posixPermissions] as? Int, mode & 0o001 == 0 {
                    throw Failure(description: "user \(owner) cannot enter \(parent.path) (mode \(String(mode, radix: 8))): choose a data folder it can reach, e.g. under /var/lib or /tmp")
                }
                parent = parent.deletingLastPathComponent()
            }
        }
    }

    private func createDatabaseIfMissing() async throws {
        let pool = PostgresPool(
            configuration: .init(conninfo: "host=\(socketDirectory) user=\(Self.superuser) dbname=postgres", maxConnections: 1),
            logger: logger
        )
        do {
            let exists = try await pool.query("SELECT 1 FROM pg_database WHERE datname = \(database)")
            if exists.isEmpty {
                // CREATE DATABASE takes no parameters; the name is ours, quoted as an identifier.
                let quoted = "\"" + database.replacingOccurrences(of: "\"", with: "\"\"") + "\""
                try await pool.withConnection { try await $0.execute(script: "CREATE DATABASE \(quoted)") }
                logger.info("created database", metadata: ["database": "\(database)"])
            }
            await pool.close()
        } catch {
            await pool.close()
            throw error
        }
    }
}
