import Metrics
import Synchronization

/// The pool's bookkeeping: idle connections, how many are open, and who waits for one.
///
/// A lock rather than an actor: taking an idle connection is a few instructions, and an actor
/// would add an executor hop (a thread switch under load) to every query.
public final class ConnectionSlots: Sendable {
    public struct Statistics: Sendable {
        public var open: Int
        public var idle: Int
        public var waiting: Int
        public var maxConnections: Int
        /// Callers that had to wait for a connection, since start.
        public var totalWaits: Int
    }

    struct State {
        var idle: [PostgresConnection] = []
        /// Open connections plus those being opened.
        var open = 0
        var waiters: [Int: CheckedContinuation<PostgresConnection?, any Error>] = [:]
        var waiterOrder: [Int] = []
        var nextWaiterID = 0
        var totalWaits = 0
        var closed = false
    }

    private let maxConnections: Int
    private let acquireTimeout: Duration
    private let state = Mutex(State())

    static let waits = Counter(label: "db_pool_waits_total")
    static let timeouts = Counter(label: "db_pool_timeouts_total")

    init(maxConnections: Int, acquireTimeout: Duration) {
        self.maxConnections = maxConnections
        self.acquireTimeout = acquireTimeout
    }

    enum Immediate {
        case connection(PostgresConnection?)
        case wait(id: Int)
        case closed
    }

    /// An idle connection to reuse, or nil meaning "you hold a slot: open a new one".
    func acquire() async throws -> PostgresConnection? {
        let immediate: Immediate = state.withLock { state in
            if state.closed { return .closed }
            if let connection = state.idle.popLast() { return .connection(connection) }
            if state.open < maxConnections {
                state.open += 1
                return .connection(nil)
            }
            state.totalWaits += 1
            let id = state.nextWaiterID
            state.nextWaiterID += 1
            return .wait(id: id)
        }
        switch immediate {
        case .closed:
            throw PostgresError(.poolClosed, message: "database pool is shut down")
        case .connection(let connection):
            return connection
        case .wait(let id):
            Self.waits.increment()
            let timeout = acquireTimeout
            let timer = Task { [weak self] in
                try await Task.sleep(for: timeout)
                self?.expire(waiter: id)
            }
            defer { timer.cancel() }
            return try await withCheckedThrowingContinuation { continuation in
                let closed = state.withLock { state -> Bool in
                    if state.closed { return true }
                    state.waiters[id] = continuation
                    state.waiterOrder.append(id)
                    return false
                }
                if closed { continuation.resume(throwing: PostgresError(.poolClosed, message: "database pool is shut down")) }
            }
        }
    }

    /// Returns a connection (nil when it was dropped) and hands its slot to the longest waiter.
    /// Answers a connection the caller must close, when the pool has shut down meanwhile.
    func release(_ connection: PostgresConnection?) -> PostgresConnection? {
        let (waiter, leftOver): (CheckedContinuation<PostgresConnection?, any Error>?, PostgresConnection?) = state.withLock { state in
            while let id = state.waiterOrder.first {
                state.waiterOrder.removeFirst()
                if let waiter = state.waiters.removeValue(forKey: id) { return (waiter, nil) }
            }
            if let connection, !state.closed {
                state.idle.append(connection)
                return (nil, nil)
            }
            state.open -= 1
            return (nil, connection)
        }
        waiter?.resume(returning: connection)
        return leftOver
    }

    func close() -> [PostgresConnection] {
        let (waiters, idle) = state.withLock { state in
            state.closed = true
            let waiters = Array(state.waiters.values)
            state.waiters.removeAll()
            state.waiterOrder.removeAll()
            let idle = state.idle
            state.open -= idle.count
            state.idle.removeAll()
            return (waiters, idle)
        }
        for waiter in waiters {
            waiter.resume(throwing: PostgresError(.poolClosed, message: "database pool is shut down"))
        }
        return idle
    }

    func statistics() -> Statistics {
        state.withLock { state in
            Statistics(open: state.open, idle: state.idle.count, waiting: state.waiters.count, maxConnections: maxConnections, totalWaits: state.totalWaits)
        }
    }

    private func expire(waiter id: Int) {
        guard let waiter = state.withLock({ $0.waiters.removeValue(forKey: id) }) else { return }
        Self.timeouts.increment()
        waiter.resume(throwing: PostgresError(.poolTimeout, message: "no database connection free within \(acquireTimeout)"))
    }
}
