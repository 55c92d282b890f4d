import Foundation
import Logging
import Synchronization

/// What the two log formats (`TextLogHandler`, `JSONLogHandler`) share: where their lines go,
/// and which metadata an event carries.
public enum LogLines {
    private static let lock = Mutex(())

    /// Writes to stderr, one whole line per write: lines from several threads never interleave.
    public static let standardError: @Sendable (String) -> Void = { line in
        lock.withLock { _ in FileHandle.standardError.write(Data(line.utf8)) }
    }
}

extension LogHandler {
    /// The handler's metadata, then its provider's, then the event's (later ones win), and the
    /// event's error as `error.message` and `error.type`.
    func metadata(of event: LogEvent) -> Logger.Metadata {
        var merged = metadata
        if let provided = metadataProvider?.get() { merged.merge(provided) { $1 } }
        if let extra = event.metadata { merged.merge(extra) { $1 } }
        if let error = event.error {
            merged["error.message"] = "\(error)"
            merged["error.type"] = "\(String(reflecting: type(of: error)))"
        }
        return merged
    }
}
