import Metrics
import Synchronization

/// Group commit for heartbeats: the heartbeats that arrive while earlier batches are in the
/// database go together in the next one (one statement, one round trip, one thread hop).
/// A heartbeat arriving when fewer than `maxConcurrentBatches` are running starts a batch
/// at once, so a quiet server adds no wait; under load, batches grow instead of queueing
/// for connections, and the database does one statement's fixed work for many heartbeats.
///
/// Bounded: at most `maxWaiting` heartbeats wait for a batch (beyond that one is refused at
/// once), and each is answered within `timeout`, recorded or not (`HeartbeatUnavailable`),
/// so a stalled database never holds a request or lets the queue grow.
final class HeartbeatBatcher: Sendable {
    struct Heartbeat: Sendable {
        var viewer: ViewerKey
        var issueKey: String
        /// The tab is hidden.
        var away = false
        /// The tab's count of its requests; 0 when it does not count them.
        var seq = 0
    }

    /// What one batch answers: each issue's live viewers, and which tenants were installed.
    typealias Flush = @Sendable ([Heartbeat]) async throws -> [IssueRef: [Viewer]]

    private struct Waiter {
        var id: Int
        var heartbeat: Heartbeat
    }

    private struct Pending {
        var continuation: CheckedContinuation<[Viewer]?, any Error>
        var deadline: ContinuousClock.Instant
    }

    private struct State {
        /// Heartbeats not in a batch yet, oldest first.
        var waiting: [Waiter] = []
        /// Every heartbeat not answered yet, by id: whoever takes it out answers it (a batch
        /// ending, or the reaper at its deadline), so each is answered exactly once.
        var pending: [Int: Pending] = [:]
        var running = 0
        var nextID = 0
        var reaperRunning = false
        var peakWaiting = 0
        /// Heartbeats in `waiting` per person: one person's flood cannot fill the whole queue.
        var waitingPerAccount: [AccountKey: Int] = [:]
    }

    struct AccountKey: Hashable {
        var tenant: String
        var accountID: String
        init(_ viewer: ViewerKey) {
            tenant = viewer.tenant
            accountID = viewer.accountID
        }
    }

    private enum Admission {
        case refused
        case overQuota
        case queued(startReaper: Bool)
        case start([Waiter], startReaper: Bool)
    }

    private let state = Mutex(State())
    private let maxConcurrentBatches: Int
    private let maxBatchSize: Int
    private let maxWaiting: Int
    /// Heartbeats one person may have waiting at once: a tab sends one at a time, so a few
    /// tabs stay far below it (`HeartbeatUnavailable.overQuota`, answered 429).
    let maxWaitingPerAccount: Int
    private let timeout: Duration
    private let flush: Flush
    /// Told once per failed batch (with its size), so a cause is logged even when every
    /// heartbeat of the batch was already answered at its deadline.
    private let onFailure: (@Sendable (any Error, Int) -> Void)?

    init(
        maxConcurrentBatches: Int, maxBatchSize: Int, maxWaiting: Int = 1024, maxWaitingPerAccount: Int = 16, timeout: Duration = .seconds(3),
        onFailure: (@Sendable (any Error, Int) -> Void)? = nil, flush: @escaping Flush
    ) {
        precondition(maxConcurrentBatches > 0 && maxBatchSize > 0 && maxWaiting > 0 && maxWaitingPerAccount > 0 && timeout > .zero)
        self.maxConcurrentBatches = maxConcurrentBatches
        self.maxBatchSize = maxBatchSize
        self.maxWaiting = maxWaiting
        self.maxWaitingPerAccount = maxWaitingPerAccount
        self.timeout = timeout
        self.onFailure = onFailure
        self.flush = flush
    }

    /// The issue's live viewers once this heartbeat is recorded; nil when its tenant is not
    /// installed. Throws `HeartbeatUnavailable` when the queue is full or `timeout` passes.
    func record(_ heartbeat: Heartbeat) async throws -> [Viewer]? {
        try await withCheckedThrowingContinuation { continuation in
            let deadline = ContinuousClock.now + timeout
            let admission: Admission = state.withLock { state in
                guard state.waiting.count < maxWaiting else { return .refused }
                let account = AccountKey(heartbeat.viewer)
                let queued = state.waitingPerAccount[account, default: 0]
                guard queued < maxWaitingPerAccount else { return .overQuota }
                state.waitingPerAccount[account] = queued + 1
                let id = state.nextID
                state.nextID &+= 1
                state.pending[id] = Pending(continuation: continuation, deadline: deadline)
                state.waiting.append(Waiter(id: id, heartbeat: heartbeat))
                state.peakWaiting = max(state.peakWaiting, state.waiting.count)
                let startReaper = !state.reaperRunning
                state.reaperRunning = true
                guard state.running < maxConcurrentBatches else { return .queued(startReaper: startReaper) }
                state.running += 1
                return .start(Self.takeBatch(from: &state, limit: maxBatchSize), startReaper: startReaper)
            }
            // Unstructured on purpose (the outside review agrees): a batch runs for the heartbeats
            // of many requests, so it cannot be a child of the one that started it, and handing it
            // to a service's task group would add a task switch to every batch start on the hot
            // path. Each task is bounded: a batch ends when the queue is empty (its flush has the
            // pool's deadlines), the reaper when nothing is pending, and both only answer
            // continuations, so none outlives the last heartbeat it serves.
            switch admission {
            case .refused:
                Self.refused.increment()
                continuation.resume(throwing: HeartbeatUnavailable(reason: .queueFull))
            case .overQuota:
                Self.overQuota.increment()
                continuation.resume(throwing: HeartbeatUnavailable(reason: .overQuota))
            case .queued(let startReaper):
                if startReaper { Task { await self.reap() } }
            case .start(let batch, let startReaper):
                if startReaper { Task { await self.reap() } }
                Task { await self.run(batch) }
            }
        }
    }

    func statistics() -> HeartbeatQueueStatistics {
        state.withLock { state in
            HeartbeatQueueStatistics(
                waiting: state.waiting.count, peakWaiting: state.peakWaiting, maxWaiting: maxWaiting,
                running: state.running, unanswered: state.pending.count
            )
        }
    }

    /// Runs batches until no heartbeat is waiting: the next batch starts as soon as one ends.
    private func run(_ first: [Waiter]) async {
        var batch = first
        while true {
            if !batch.isEmpty { await execute(batch) }
            let next: [Waiter]? = state.withLock { state in
                guard !state.waiting.isEmpty else {
                    state.running -= 1
                    return nil
                }
                return Self.takeBatch(from: &state, limit: maxBatchSize)
            }
            guard let next else { return }
            batch = next
        }
    }

    private func execute(_ batch: [Waiter]) async {
        Self.batches.increment()
        let outcome: Result<[IssueRef: [Viewer]], any Error>
        do {
            outcome = .success(try await flush(batch.map(\.heartbeat)))
        } catch {
            outcome = .failure(error)
        }
        // Heartbeats the reaper already answered (their deadline passed) are skipped.
        let answerable: [(Waiter, CheckedContinuation<[Viewer]?, any Error>)] = state.withLock { state in
            batch.compactMap { waiter in state.pending.removeValue(forKey: waiter.id).map { (waiter, $0.continuation) } }
        }
        switch outcome {
        case .success(let listed):
            for (waiter, continuation) in answerable {
                // Every recorded heartbeat lists at least its own viewer: no entry means no installed tenant.
                continuation.resume(returning: listed[IssueRef(waiter.heartbeat.viewer)])
            }
        case .failure(let error):
            onFailure?(error, batch.count)
            for (_, continuation) in answerable { continuation.resume(throwing: error) }
        }
    }

    /// While heartbeats are unanswered: answers those past their deadline, and drops them from
    /// the queue. Sleeps until the earliest deadline (later arrivals have later ones); ends when
    /// nothing is pending, and the next heartbeat starts it again.
    private func reap() async {
        while true {
            let now = ContinuousClock.now
            let (expired, next): ([CheckedContinuation<[Viewer]?, any Error>], ContinuousClock.Instant?) = state.withLock { state in
                var expired: [CheckedContinuation<[Viewer]?, any Error>] = []
                var earliest: ContinuousClock.Instant?
                for (id, pending) in state.pending {
                    if pending.deadline <= now {
                        expired.append(pending.continuation)
                        state.pending[id] = nil
                    } else if earliest.map({ pending.deadline < $0 }) ?? true {
                        earliest = pending.deadline
                    }
                }
                if !expired.isEmpty {
                    let pending = state.pending
                    state.waiting.removeAll { pending[$0.id] == nil }
                }
                if earliest == nil { state.reaperRunning = false }
                return (expired, earliest)
            }
            if !expired.isEmpty {
                Self.timedOut.increment(by: expired.count)
                let error = HeartbeatUnavailable(reason: .timedOut)
                for continuation in expired { continuation.resume(throwing: error) }
            }
            guard let next else { return }
            // At least 10 ms apart: deadlines close together are answered in one pass.
            try? await Task.sleep(until: max(next, ContinuousClock.now + .milliseconds(10)), tolerance: .milliseconds(10))
        }
    }

    /// With `heartbeats_total`, the mean batch size.
    static let batches = Counter(label: "heartbeat_batches_total")
    static let refused = Counter(label: "heartbeats_unavailable_total", dimensions: [("reason", HeartbeatUnavailable.Reason.queueFull.rawValue)])
    static let timedOut = Counter(label: "heartbeats_unavailable_total", dimensions: [("reason", HeartbeatUnavailable.Reason.timedOut.rawValue)])
    static let overQuota = Counter(label: "heartbeats_unavailable_total", dimensions: [("reason", HeartbeatUnavailable.Reason.overQuota.rawValue)])

    private static func takeBatch(from state: inout State, limit: Int) -> [Waiter] {
        let batch: [Waiter]
        if state.waiting.count > limit {
            batch = Array(state.waiting.prefix(limit))
            state.waiting.removeFirst(limit)
        } else {
            batch = state.waiting
            state.waiting.removeAll(keepingCapacity: true)
        }
        for waiter in batch {
            let account = AccountKey(waiter.heartbeat.viewer)
            let left = state.waitingPerAccount[account, default: 1] - 1
            state.waitingPerAccount[account] = left > 0 ? left : nil
        }
        return batch
    }
}

/// The heartbeat queue's figures (tests and diagnostics).
public struct HeartbeatQueueStatistics: Sendable {
    /// Heartbeats waiting for a batch now.
    public var waiting: Int
    /// The most that ever waited at once.
    public var peakWaiting: Int
    /// The bound on `waiting`.
    public var maxWaiting: Int
    /// Batches in the database now.
    public var running: Int
    /// Heartbeats not answered yet (waiting or in a batch).
    public var unanswered: Int
}

/// A heartbeat the database could not take in time: the queue was full, or no batch recorded
/// it before its deadline. The client should retry later (HTTP 503 with `Retry-After`).
public struct HeartbeatUnavailable: Error, CustomStringConvertible, Sendable, Equatable {
    public enum Reason: String, Sendable {
        case queueFull = "queue_full"
        case timedOut = "timeout"
        /// This person has too many heartbeats waiting (the caller's doing: 429).
        case overQuota = "over_quota"
    }

    public var reason: Reason

    public var description: String {
        switch reason {
        case .queueFull: "heartbeat refused: too many heartbeats waiting for the database"
        case .timedOut: "heartbeat not recorded in time: the database is slow or unavailable"
        case .overQuota: "too many heartbeats from this person at once"
        }
    }
}

/// One issue of one tenant.
public struct IssueRef: Hashable, Sendable {
    public var tenant: String
    public var issueID: String

    public init(tenant: String, issueID: String) {
        self.tenant = tenant
        self.issueID = issueID
    }

    init(_ viewer: ViewerKey) {
        self.init(tenant: viewer.tenant, issueID: viewer.issueID)
    }
}
