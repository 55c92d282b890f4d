import Metrics

/// The pool's bookkeeping: idle connections, how many are open, and who waits for one.
public actor ConnectionSlots {
    public struct Statistics: Sendable {
        public var open: Int
        public var idle: Int
        public var waiting: Int
        public var maxConnections: Int
        /// Callers that had to wait for a connection, since start.
        public var totalWaits: Int
    }

    private let maxConnections: Int
    private let acquireTimeout: Duration
    private var idle: [PostgresConnection] = []
    /// Open connections plus those being opened.
    private var open = 0
    private var waiters: [Int: CheckedContinuation<PostgresConnection?, any Error>] = [:]
    private var waiterOrder: [Int] = []
    private var nextWaiterID = 0
    private var totalWaits = 0
    private var closed = false

    init(maxConnections: Int, acquireTimeout: Duration) {
        self.maxConnections = maxConnections
        self.acquireTimeout = acquireTimeout
    }

    /// An idle connection to reuse, or nil meaning "you hold a slot: open a new one".
    func acquire() async throws -> PostgresConnection? {
        if closed { throw PostgresError(.poolClosed, message: "database pool is shut down") }
        if let connection = idle.popLast() { return connection }
        if open < maxConnections {
            open += 1
            return nil
        }
        totalWaits += 1
        Self.waits.increment()
        let id = nextWaiterID
        nextWaiterID += 1
        let timeout = acquireTimeout
        let timer = Task { [weak self] in
            try await Task.sleep(for: timeout)
            await self?.expire(waiter: id)
        }
        defer { timer.cancel() }
        return try await withCheckedThrowingContinuation { continuation in
            waiters[id] = continuation
            waiterOrder.append(id)
        }
    }

    /// Returns a connection (nil when it was dropped) and hands its slot to the longest waiter.
    /// Answers a connection the caller must close, when the pool has shut down meanwhile.
    func release(_ connection: PostgresConnection?) -> PostgresConnection? {
        while let id = waiterOrder.first {
            waiterOrder.removeFirst()
            guard let waiter = waiters.removeValue(forKey: id) else { continue }
            waiter.resume(returning: connection)
            return nil
        }
        if let connection, !closed {
            idle.append(connection)
            return nil
        }
        open -= 1
        return connection
    }

    func close() -> [PostgresConnection] {
        closed = true
        for (_, waiter) in waiters {
            waiter.resume(throwing: PostgresError(.poolClosed, message: "database pool is shut down"))
        }
        waiters.removeAll()
        waiterOrder.removeAll()
        let wasIdle = idle
        open -= idle.count
        idle.removeAll()
        return wasIdle
    }

    func statistics() -> Statistics {
        Statistics(open: open, idle: idle.count, waiting: waiters.count, maxConnections: maxConnections, totalWaits: totalWaits)
    }

    static let waits = Counter(label: "db_pool_waits_total")
    static let timeouts = Counter(label: "db_pool_timeouts_total")

    private func expire(waiter id: Int) {
        guard let waiter = waiters.removeValue(forKey: id) else { return }
        Self.timeouts.increment()
        waiter.resume(throwing: PostgresError(.poolTimeout, message: "no database connection free within \(acquireTimeout)"))
    }
}
