import Metrics
import Synchronization

/// The pool's bookkeeping: idle connections, how many are open, and who waits for one.
///
/// Two lanes share the connections. `.reserved` callers (heartbeat batches) may use every
/// connection; `.general` callers (everything else) at most `maxConnections - reserved` at
/// once, so a flood of other work can never take the connections the reserved lane needs.
/// A connection freed goes to the longest-waiting reserved caller first.
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
        /// Connections only the reserved lane may use.
        public var reserved: Int = 0
        /// Connections lent to the general lane now.
        public var lentGeneral: Int = 0
    }

    /// Who asks for a connection.
    public enum Lane: Sendable {
        /// Everything but heartbeats: limited to `maxConnections - reserved` at once.
        case general
        /// Heartbeat batches: may use any connection, and are served first.
        case reserved
    }

    struct Waiter {
        var continuation: CheckedContinuation<PostgresConnection?, any Error>
        var lane: Lane
    }

    struct State {
        var idle: [PostgresConnection] = []
        /// Open connections plus those being opened.
        var open = 0
        /// Connections (or slots being opened) lent to general callers.
        var lentGeneral = 0
        var waiters: [Int: Waiter] = [:]
        /// Waiter ids in arrival order, per lane; ids of waiters gone (timed out) are skipped.
        var reservedOrder: [Int] = []
        var generalOrder: [Int] = []
        var nextWaiterID = 0
        var totalWaits = 0
        var closed = false
    }

    private let maxConnections: Int
    private let reserved: Int
    private let acquireTimeout: Duration
    private let state = Mutex(State())

    static let waits = Counter(label: "db_pool_waits_total")
    static let timeouts = Counter(label: "db_pool_timeouts_total")

    /// `reserved` is kept below `maxConnections`, so the general lane always has one.
    init(maxConnections: Int, reserved: Int = 0, acquireTimeout: Duration) {
        self.maxConnections = max(1, maxConnections)
        self.reserved = min(max(0, reserved), self.maxConnections - 1)
        self.acquireTimeout = acquireTimeout
    }

    enum Immediate {
        case connection(PostgresConnection?)
        case wait(id: Int)
        case closed
    }

    /// An idle connection to reuse, or nil meaning "you hold a slot: open a new one". Waits at
    /// most `timeout` (the pool's acquire timeout by default) for one to be free.
    func acquire(lane: Lane = .general, timeout: Duration? = nil) async throws -> PostgresConnection? {
        let immediate: Immediate = state.withLock { state in
            if state.closed { return .closed }
            if let taken = Self.take(lane: lane, from: &state, maxConnections: maxConnections, reserved: reserved) {
                return .connection(taken)
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
            let timeout = timeout ?? acquireTimeout
            let deadline = ContinuousClock.now + timeout
            // The timer fires only after the deadline; a waiter registering after that fails at
            // once, so a timer firing before registration cannot leave a waiter behind.
            let timer = Task { [weak self] in
                try await Task.sleep(until: deadline)
                self?.expire(waiter: id, timeout: timeout)
            }
            defer { timer.cancel() }
            return try await withTaskCancellationHandler {
                try await withCheckedThrowingContinuation { continuation in
                    enum Registration { case registered, closed, late, cancelled, available(PostgresConnection?) }
                    let maxConnections = self.maxConnections
                    let reserved = self.reserved
                    let registration = state.withLock { state -> Registration in
                        if state.closed { return .closed }
                        if Task.isCancelled { return .cancelled }
                        // A release between deciding to wait and registering found no waiter
                        // and left its connection idle: take it now, or this waiter would sleep
                        // until its timeout beside a free connection.
                        if let taken = Self.take(lane: lane, from: &state, maxConnections: maxConnections, reserved: reserved) {
                            return .available(taken)
                        }
                        if ContinuousClock.now >= deadline { return .late }
                        state.waiters[id] = Waiter(continuation: continuation, lane: lane)
                        switch lane {
                        case .reserved: state.reservedOrder.append(id)
                        case .general: state.generalOrder.append(id)
                        }
                        return .registered
                    }
                    switch registration {
                    case .registered: break
                    case .closed: continuation.resume(throwing: PostgresError(.poolClosed, message: "database pool is shut down"))
                    case .late: continuation.resume(throwing: Self.timeoutError(timeout))
                    case .cancelled: continuation.resume(throwing: CancellationError())
                    case .available(let connection): continuation.resume(returning: connection)
                    }
                }
            } onCancel: {
                self.cancel(waiter: id)
            }
        }
    }

    /// Returns a connection lent to `lane` (nil when it was dropped) and hands it, or its slot,
    /// to the longest waiter that may have it. Answers a connection the caller must close, when
    /// the pool has shut down meanwhile.
    func release(_ connection: PostgresConnection?, lane: Lane = .general) -> PostgresConnection? {
        let (waiter, leftOver): (Waiter?, PostgresConnection?) = state.withLock { state in
            if lane == .general { state.lentGeneral -= 1 }
            if let waiter = Self.nextWaiter(lane: .reserved, in: &state) {
                return (waiter, nil)
            }
            if state.lentGeneral < maxConnections - reserved, let waiter = Self.nextWaiter(lane: .general, in: &state) {
                state.lentGeneral += 1
                return (waiter, nil)
            }
            if let connection, !state.closed {
                state.idle.append(connection)
                return (nil, nil)
            }
            state.open -= 1
            return (nil, connection)
        }
        waiter?.continuation.resume(returning: connection)
        return leftOver
    }

    func close() -> [PostgresConnection] {
        let (waiters, idle) = state.withLock { state in
            state.closed = true
            let waiters = Array(state.waiters.values)
            state.waiters.removeAll()
            state.reservedOrder.removeAll()
            state.generalOrder.removeAll()
            let idle = state.idle
            state.open -= idle.count
            state.idle.removeAll()
            return (waiters, idle)
        }
        for waiter in waiters {
            waiter.continuation.resume(throwing: PostgresError(.poolClosed, message: "database pool is shut down"))
        }
        return idle
    }

    func statistics() -> Statistics {
        state.withLock { state in
            Statistics(
                open: state.open, idle: state.idle.count, waiting: state.waiters.count, maxConnections: maxConnections,
                totalWaits: state.totalWaits, reserved: reserved, lentGeneral: state.lentGeneral
            )
        }
    }

    /// A connection (or a slot to open one) for `lane` if one is free to it now.
    private static func take(lane: Lane, from state: inout State, maxConnections: Int, reserved: Int) -> PostgresConnection?? {
        // Waiters of a lane exist only while nothing is free to that lane, and a freed
        // connection goes straight to them: a newcomer cannot overtake a waiter.
        if lane == .general && state.lentGeneral >= maxConnections - reserved { return nil }
        let taken: PostgresConnection?
        if let connection = state.idle.popLast() {
            taken = connection
        } else if state.open < maxConnections {
            state.open += 1
            taken = nil
        } else {
            return nil
        }
        if lane == .general { state.lentGeneral += 1 }
        return .some(taken)
    }

    private static func nextWaiter(lane: Lane, in state: inout State) -> Waiter? {
        while true {
            let id: Int
            switch lane {
            case .reserved:
                guard !state.reservedOrder.isEmpty else { return nil }
                id = state.reservedOrder.removeFirst()
            case .general:
                guard !state.generalOrder.isEmpty else { return nil }
                id = state.generalOrder.removeFirst()
            }
            if let waiter = state.waiters.removeValue(forKey: id) { return waiter }
        }
    }

    private static func timeoutError(_ timeout: Duration) -> PostgresError {
        PostgresError(.poolTimeout, message: "no database connection free within \(timeout)")
    }

    private func expire(waiter id: Int, timeout: Duration) {
        guard let waiter = remove(waiter: id) else { return }
        Self.timeouts.increment()
        waiter.continuation.resume(throwing: Self.timeoutError(timeout))
    }

    private func cancel(waiter id: Int) {
        guard let waiter = remove(waiter: id) else { return }
        waiter.continuation.resume(throwing: CancellationError())
    }

    /// Takes a waiter out; its id stays in the lane's order until skipped, unless those
    /// leftovers pile up (a long outage with every caller timing out).
    private func remove(waiter id: Int) -> Waiter? {
        state.withLock { state in
            guard let waiter = state.waiters.removeValue(forKey: id) else { return nil }
            if state.reservedOrder.count + state.generalOrder.count > 2 * state.waiters.count + 64 {
                let live = state.waiters
                state.reservedOrder.removeAll { live[$0] == nil }
                state.generalOrder.removeAll { live[$0] == nil }
            }
            return waiter
        }
    }
}
