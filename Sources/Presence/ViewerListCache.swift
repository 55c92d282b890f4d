import Foundation
import Synchronization

/// Issue viewer lists this instance read from the database in the last `maxAge` (a second by
/// default): a heartbeat on an issue listed that recently still writes its own row, but takes
/// the others from here instead of the database. Another instance's new viewer therefore shows
/// up to `maxAge` later, far inside one poll interval; a tab that left through this instance
/// is forgotten at once (`invalidate`).
final class ViewerListCache: Sendable {
    private struct Entry {
        var viewers: [Viewer]
        var read: ContinuousClock.Instant
    }

    let maxAge: Duration
    /// Past this many issues, entries older than `maxAge` are dropped on the next store.
    private let pruneAbove: Int
    private let entries = Mutex<[IssueRef: Entry]>([:])

    init(maxAge: Duration, pruneAbove: Int = 10_000) {
        self.maxAge = maxAge
        self.pruneAbove = pruneAbove
    }

    func viewers(of issue: IssueRef, now: ContinuousClock.Instant = .now) -> [Viewer]? {
        entries.withLock { entries in
            guard let entry = entries[issue], now - entry.read < maxAge else { return nil }
            return entry.viewers
        }
    }

    func store(_ lists: [IssueRef: [Viewer]], read: ContinuousClock.Instant = .now) {
        guard !lists.isEmpty else { return }
        entries.withLock { entries in
            for (issue, viewers) in lists { entries[issue] = Entry(viewers: viewers, read: read) }
            if entries.count > pruneAbove {
                entries = entries.filter { read - $0.value.read < maxAge }
            }
        }
    }

    func invalidate(_ issue: IssueRef) {
        _ = entries.withLock { $0.removeValue(forKey: issue) }
    }

    var count: Int { entries.withLock { $0.count } }
}
