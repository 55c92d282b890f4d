import Metrics
import Synchronization

/// Group commit for heartbeats: the heartbeats that arrive while earlier batches are in the
/// database go together in the next one (one statement, one round trip, one thread hop).
/// A heartbeat arriving when fewer than `maxConcurrentBatches` are running starts a batch
/// at once, so a quiet server adds no wait; under load, batches grow instead of queueing
/// for connections, and the database does one statement's fixed work for many heartbeats.
final class HeartbeatBatcher: Sendable {
    struct Heartbeat: Sendable {
        var viewer: ViewerKey
        var issueKey: String
    }

    /// What one batch answers: each issue's live viewers, and which tenants were installed.
    typealias Flush = @Sendable ([Heartbeat]) async throws -> [IssueRef: [Viewer]]

    private struct Waiter {
        var heartbeat: Heartbeat
        var continuation: CheckedContinuation<[Viewer]?, any Error>
    }

    private struct State {
        var waiting: [Waiter] = []
        var running = 0
    }

    private let state = Mutex(State())
    private let maxConcurrentBatches: Int
    private let maxBatchSize: Int
    private let flush: Flush

    init(maxConcurrentBatches: Int, maxBatchSize: Int, flush: @escaping Flush) {
        precondition(maxConcurrentBatches > 0 && maxBatchSize > 0)
        self.maxConcurrentBatches = maxConcurrentBatches
        self.maxBatchSize = maxBatchSize
        self.flush = flush
    }

    /// The issue's live viewers once this heartbeat is recorded; nil when its tenant is not installed.
    func record(_ heartbeat: Heartbeat) async throws -> [Viewer]? {
        try await withCheckedThrowingContinuation { continuation in
            let batch: [Waiter]? = state.withLock { state in
                state.waiting.append(Waiter(heartbeat: heartbeat, continuation: continuation))
                guard state.running < maxConcurrentBatches else { return nil }
                state.running += 1
                return Self.takeBatch(from: &state, limit: maxBatchSize)
            }
            if let batch {
                Task { await self.run(batch) }
            }
        }
    }

    /// Runs batches until no heartbeat is waiting: the next batch starts as soon as one ends.
    private func run(_ first: [Waiter]) async {
        var batch = first
        while true {
            await execute(batch)
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
        do {
            let listed = try await flush(batch.map(\.heartbeat))
            for waiter in batch {
                // Every recorded heartbeat lists at least its own viewer: no entry means no installed tenant.
                waiter.continuation.resume(returning: listed[IssueRef(waiter.heartbeat.viewer)])
            }
        } catch {
            for waiter in batch { waiter.continuation.resume(throwing: error) }
        }
    }

    /// With `heartbeats_total`, the mean batch size.
    static let batches = Counter(label: "heartbeat_batches_total")

    private static func takeBatch(from state: inout State, limit: Int) -> [Waiter] {
        guard state.waiting.count > limit else {
            defer { state.waiting.removeAll(keepingCapacity: true) }
            return state.waiting
        }
        let batch = Array(state.waiting.prefix(limit))
        state.waiting.removeFirst(limit)
        return batch
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
