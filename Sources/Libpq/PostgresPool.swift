import Logging
import Metrics
import NIOPosix
import ServiceLifecycle

/// A bounded pool of libpq connections.
///
/// libpq blocks, so every call into it runs on the pool's own `NIOThreadPool` (one thread per
/// connection): no cooperative-pool thread or event loop ever waits on the database. A connection
/// is lent to one caller at a time. A connection found broken (server restart,
/// `pg_terminate_backend`) is dropped and replaced on the next checkout.
///
/// Every call has deadlines: waiting for a connection (`acquireTimeout`), opening one
/// (`connectTimeoutSeconds`), the server's `statement_timeout` (`statementTimeout`) and a
/// client-side one (`queryTimeout`) that cancels a statement the server does not answer and,
/// when not even the cancel is answered (a stopped backend, a network stall), closes the
/// connection after `cancelGrace`. `reservedConnections` are kept for the `.reserved` lane
/// (heartbeats): other callers never hold more than `maxConnections - reservedConnections`.
///
/// As a `Service` it closes its connections on graceful shutdown.
public final class PostgresPool: Service, Sendable {
    public struct Configuration: Sendable {
        /// `postgresql://` URL or keyword/value conninfo.
        public var conninfo: String
        public var maxConnections: Int
        /// Bounds each connection attempt while the server is unreachable.
        public var connectTimeoutSeconds: Int
        /// How long a caller waits for a free connection before failing.
        public var acquireTimeout: Duration
        /// The sessions' `statement_timeout` (server side); nil keeps the server's setting.
        public var statementTimeout: Duration?
        /// Client side: a statement unanswered this long is cancelled, and its connection
        /// closed if the cancel is not answered within `cancelGrace` either. nil: no limit.
        public var queryTimeout: Duration?
        public var cancelGrace: Duration
        /// Connections only the `.reserved` lane may use (kept below `maxConnections`).
        public var reservedConnections: Int

        public init(
            conninfo: String, maxConnections: Int = 8, connectTimeoutSeconds: Int = 5, acquireTimeout: Duration = .seconds(10),
            statementTimeout: Duration? = nil, queryTimeout: Duration? = nil, cancelGrace: Duration = .seconds(1), reservedConnections: Int = 0
        ) {
            self.conninfo = conninfo
            self.maxConnections = max(1, maxConnections)
            self.connectTimeoutSeconds = max(1, connectTimeoutSeconds)
            self.acquireTimeout = acquireTimeout
            self.statementTimeout = statementTimeout
            self.queryTimeout = queryTimeout
            self.cancelGrace = cancelGrace
            self.reservedConnections = min(max(0, reservedConnections), self.maxConnections - 1)
        }
    }

    public typealias Lane = ConnectionSlots.Lane

    public let configuration: Configuration
    private let threadPool: NIOThreadPool
    private let slots: ConnectionSlots
    private let logger: Logger

    public init(configuration: Configuration, logger: Logger) {
        self.configuration = configuration
        self.logger = logger
        self.threadPool = NIOThreadPool(numberOfThreads: configuration.maxConnections)
        self.threadPool.start()
        self.slots = ConnectionSlots(
            maxConnections: configuration.maxConnections, reserved: configuration.reservedConnections, acquireTimeout: configuration.acquireTimeout
        )
    }

    public func run() async throws {
        try? await gracefulShutdown()
        await close()
    }

    /// Closes idle connections, fails waiting and future callers, and stops the thread pool.
    public func close() async {
        let idle = slots.close()
        _ = try? await threadPool.runIfActive { idle.forEach { $0.close() } }
        try? await threadPool.shutdownGracefully()
        logger.debug("database pool closed")
    }

    /// Lends a connection to `body`; its methods run on the pool's thread pool through `run`.
    /// The connection is checked (or opened) on the pool thread with the first statement, so a
    /// query costs one thread hop, not two. `acquireTimeout` bounds the wait for a free
    /// connection (default: the pool's).
    public func withConnection<Result: Sendable>(
        lane: Lane = .general,
        acquireTimeout: Duration? = nil,
        _ body: (PooledConnection) async throws -> Result
    ) async throws -> Result {
        let idle = try await slots.acquire(lane: lane, timeout: acquireTimeout)
        let lease = PooledConnection(candidate: idle, threadPool: threadPool, configuration: configuration)
        do {
            let result = try await body(lease)
            await checkin(lease, lane: lane)
            return result
        } catch {
            await checkin(lease, lane: lane)
            throw error
        }
    }

    /// Runs one statement on any free connection of `lane`. `timeout` bounds both the wait for
    /// a connection and the statement (default: the pool's `acquireTimeout` and `queryTimeout`).
    @discardableResult
    public func query(_ query: PostgresQuery, lane: Lane = .general, timeout: Duration? = nil) async throws -> PostgresRows {
        try await withConnection(lane: lane, acquireTimeout: timeout) { try await $0.query(query, timeout: timeout) }
    }

    /// Runs `body` inside BEGIN … COMMIT, rolling back if it throws.
    public func transaction<Result: Sendable>(_ body: (PooledConnection) async throws -> Result) async throws -> Result {
        try await withConnection { connection in
            try await connection.execute(script: "BEGIN")
            do {
                let result = try await body(connection)
                try await connection.execute(script: "COMMIT")
                return result
            } catch {
                if !connection.sawConnectionFailure {
                    try? await connection.execute(script: "ROLLBACK")
                }
                throw error
            }
        }
    }

    /// Pool figures for readiness checks and metrics.
    public func statistics() async -> ConnectionSlots.Statistics {
        slots.statistics()
    }

    private func checkin(_ lease: PooledConnection, lane: Lane) async {
        let (usable, discard) = lease.finish()
        if let discard {
            if let failure = lease.failure, lease.sawConnectionFailure {
                logger.warning("dropping database connection", metadata: ["error": "\(failure)"])
            }
            _ = try? await threadPool.runIfActive { discard.close() }
        }
        if let leftOver = slots.release(usable, lane: lane) {
            _ = try? await threadPool.runIfActive { leftOver.close() }
        }
    }
}

/// A connection lent by the pool; each call hops to the pool's thread pool. Only the task holding
/// the lease touches it, one call at a time, hence `@unchecked Sendable`.
public final class PooledConnection: @unchecked Sendable {
    private let threadPool: NIOThreadPool
    private let configuration: PostgresPool.Configuration
    /// An idle connection from the pool, not yet checked.
    private var candidate: PostgresConnection?
    /// The connection in use, once the first call checked or opened it.
    private var connection: PostgresConnection?
    private(set) var sawConnectionFailure = false
    /// The error that made this lease drop its connection, for the log.
    private(set) var failure: PostgresError?
    private var discardRequested = false
    /// The client-side deadline of each statement of this lease (the pool's `queryTimeout`
    /// unless changed); nil: none.
    public var queryTimeout: Duration?

    init(candidate: PostgresConnection?, threadPool: NIOThreadPool, configuration: PostgresPool.Configuration) {
        self.candidate = candidate
        self.threadPool = threadPool
        self.configuration = configuration
        self.queryTimeout = configuration.queryTimeout
    }

    /// Closes this connection when the lease ends instead of returning it to the pool, so
    /// session settings changed for this lease (timeouts, locks) never reach another caller.
    public func discardAfterUse() {
        discardRequested = true
    }

    /// The server process serving this session (for `pg_terminate_backend` in tests and logs).
    public func backendPID() async throws -> Int32 {
        try await run { $0.backendPID }
    }

    /// One statement; `timeout` overrides the lease's `queryTimeout` for this call.
    @discardableResult
    public func query(_ query: PostgresQuery, timeout: Duration? = nil) async throws -> PostgresRows {
        let timeout = timeout ?? queryTimeout
        let grace = configuration.cancelGrace
        return try await run { try $0.query(query, timeout: timeout, cancelGrace: grace) }
    }

    /// Parameterless SQL, possibly several statements (migrations, BEGIN/COMMIT).
    public func execute(script sql: String, timeout: Duration? = nil) async throws {
        let timeout = timeout ?? queryTimeout
        let grace = configuration.cancelGrace
        try await run { try $0.execute(script: sql, timeout: timeout, cancelGrace: grace) }
    }

    /// On a pool thread: the connection to use. A reused one is checked first, and one the
    /// server dropped while idle (restart, `pg_terminate_backend`) is replaced.
    private func ready() throws(PostgresError) -> PostgresConnection {
        if let connection { return connection }
        if let candidate, candidate.isUsable {
            connection = candidate
            self.candidate = nil
            return candidate
        }
        candidate?.close()
        candidate = nil
        let fresh = try PostgresConnection(
            conninfo: configuration.conninfo, connectTimeoutSeconds: configuration.connectTimeoutSeconds,
            statementTimeout: configuration.statementTimeout
        )
        connection = fresh
        return fresh
    }

    /// What goes back to the pool, and what must be closed.
    func finish() -> (usable: PostgresConnection?, discard: PostgresConnection?) {
        if sawConnectionFailure || discardRequested { return (nil, connection ?? candidate) }
        // A session we sent a cancel request for is not lent again (see `isUsable`).
        if let connection, connection.isRetired { return (nil, connection) }
        if let connection { return (connection, nil) }
        return (candidate, nil)  // never used: back as it came
    }

    private func run<Result: Sendable>(_ body: @escaping @Sendable (PostgresConnection) throws -> Result) async throws -> Result {
        do {
            return try await threadPool.runIfActive { [self] in try body(self.ready()) }
        } catch let error as PostgresError {
            if error.isConnectionFailure {
                sawConnectionFailure = true
                failure = error
            }
            Counter(label: "db_errors_total", dimensions: [("kind", error.kind.rawValue)]).increment()
            throw error
        } catch {
            sawConnectionFailure = true
            throw PostgresError(.poolClosed, message: "database pool is shut down")
        }
    }
}
