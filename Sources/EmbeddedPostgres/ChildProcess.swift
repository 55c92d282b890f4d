import Foundation

#if canImport(Glibc)
import Glibc
#endif

/// Runs a command to completion and captures what it printed.
///
/// Not Foundation's `Process`: on Linux it hands the child a descriptor it watches to notice
/// the exit, and `pg_ctl start` passes that on to the server it leaves running, so the
/// command would never seem to end. Here the child gets only stdin, stdout and stderr.
enum ChildProcess {
    struct Failure: Error, CustomStringConvertible {
        var command: String
        var status: Int32
        var output: String
        var description: String {
            "\(command) exited with status \(status): \(output.trimmingCharacters(in: .whitespacesAndNewlines))"
        }
    }

    /// Runs `executable` with `arguments`; as another user through `runuser` when `user` is set.
    static func run(_ executable: String, _ arguments: [String], as user: String? = nil) async throws -> String {
        var argv = [executable] + arguments
        if let user {
            guard let runuser = findExecutable("runuser", extraDirectories: ["/usr/sbin", "/sbin"]) else {
                throw Failure(command: "runuser", status: -1, output: "runuser not found (Debian: apt-get install util-linux)")
            }
            argv = [runuser, "-u", user, "--"] + argv
        }
        let name = URL(fileURLWithPath: executable).lastPathComponent
        // Output goes to an unlinked temporary file: no pipe for a daemon to hold open.
        var template = Array("/tmp/whoslooking-cmd-XXXXXX".utf8CString)
        let outputFD = template.withUnsafeMutableBufferPointer { mkstemp($0.baseAddress!) }
        guard outputFD >= 0 else { throw Failure(command: name, status: -1, output: "cannot create a temporary file") }
        unlink(String(cString: template))
        defer { close(outputFD) }

        // waitpid blocks: on a thread of its own, never on Swift's cooperative pool.
        let command = argv
        let status: Int32 = try await withCheckedThrowingContinuation { continuation in
            Thread.detachNewThread {
                continuation.resume(with: Result { try spawnAndWait(command, outputFD: outputFD, name: name) })
            }
        }
        lseek(outputFD, 0, SEEK_SET)
        let output = String(decoding: FileHandle(fileDescriptor: outputFD, closeOnDealloc: false).readDataToEndOfFile(), as: UTF8.self)
        guard status == 0 else { throw Failure(command: name, status: status, output: output) }
        return output
    }

    /// Blocks its thread until the child exits.
    private static func spawnAndWait(_ argv: [String], outputFD: Int32, name: String) throws -> Int32 {
        var actions = posix_spawn_file_actions_t()
        posix_spawn_file_actions_init(&actions)
        defer { posix_spawn_file_actions_destroy(&actions) }
        posix_spawn_file_actions_addopen(&actions, 0, "/dev/null", O_RDONLY, 0)
        posix_spawn_file_actions_adddup2(&actions, outputFD, 1)
        posix_spawn_file_actions_adddup2(&actions, outputFD, 2)
        guard let closeFrom = closeFromAction else {
            throw Failure(command: name, status: -1, output: "this C library lacks posix_spawn_file_actions_addclosefrom_np (glibc 2.34+ needed)")
        }
        _ = closeFrom(&actions, 3)

        let cArguments = argv.map { strdup($0) } + [nil]
        defer { cArguments.forEach { free($0) } }
        var pid: pid_t = 0
        let spawned = posix_spawn(&pid, argv[0], &actions, nil, cArguments, environ)
        guard spawned == 0 else {
            throw Failure(command: name, status: -1, output: "cannot start: \(String(cString: strerror(spawned)))")
        }
        var status: Int32 = 0
        while waitpid(pid, &status, 0) < 0 {
            guard errno == EINTR else { throw Failure(command: name, status: -1, output: "waitpid failed") }
        }
        // WIFEXITED / WEXITSTATUS, which Swift does not import as macros.
        if status & 0x7f == 0 { return (status >> 8) & 0xff }
        return 128 + (status & 0x7f)
    }

    /// glibc declares it only for _GNU_SOURCE, which Swift's Glibc module does not set: look it up.
    private typealias CloseFromAction = @convention(c) (UnsafeMutablePointer<posix_spawn_file_actions_t>, Int32) -> Int32
    nonisolated(unsafe) private static let closeFromAction: CloseFromAction? = {
        guard let symbol = dlsym(nil, "posix_spawn_file_actions_addclosefrom_np") else { return nil }
        return unsafeBitCast(symbol, to: CloseFromAction.self)
    }()

    static func findExecutable(_ name: String, extraDirectories: [String] = []) -> String? {
        let path = ProcessInfo.processInfo.environment["PATH"] ?? "/usr/local/bin:/usr/bin:/bin"
        for directory in path.split(separator: ":").map(String.init) + extraDirectories {
            let candidate = directory + "/" + name
            if FileManager.default.isExecutableFile(atPath: candidate) { return candidate }
        }
        return nil
    }
}
