import Foundation

/// Runs a program to completion off Swift's cooperative pool. Tests run in parallel on a pool
/// with as many threads as cores (two here): one test blocking a thread in `waitUntilExit`
/// stalls every other test's async work, and timeouts elsewhere fire for no real reason.
public enum Subprocess {
    public struct Outcome: Sendable {
        public var status: Int32
        public var output: String
    }

    public static func run(_ executable: URL, _ arguments: [String], input: Data? = nil) async throws -> Outcome {
        let process = Process()
        process.executableURL = executable
        process.arguments = arguments
        let pipe = Pipe()
        process.standardOutput = pipe
        process.standardError = pipe
        process.standardInput = FileHandle.nullDevice
        try process.run()
        return await withCheckedContinuation { continuation in
            Thread.detachNewThread {
                let data = pipe.fileHandleForReading.readDataToEndOfFile()
                process.waitUntilExit()
                continuation.resume(returning: Outcome(status: process.terminationStatus, output: String(decoding: data, as: UTF8.self)))
            }
        }
    }

    /// Waits for a running process to exit, off the cooperative pool.
    public static func waitForExit(_ process: Process) async {
        await withCheckedContinuation { continuation in
            Thread.detachNewThread {
                process.waitUntilExit()
                continuation.resume()
            }
        }
    }
}
