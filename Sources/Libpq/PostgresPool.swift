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

        public init(conninfo: String, maxConnections: Int = 8, connectTimeoutSeconds: Int = 5, acquireTimeout: Duration = .seconds(10)) {
            self.conninfo = conninfo
            self.maxConnections = max(1, maxConnections)
            self.connectTimeoutSeconds = max(1, connectTimeoutSeconds)
            self.acquireTimeout = acquireTimeout
        }
    }

    public let configuration: Configuration
    private let threadPool: NIOThreadPool
    private let slots: ConnectionSlots
    private let logger: Logger

    public init(configuration: Configuration, logger: Logger) {
        self.configuration = configuration
        self.logger = logger
        self.threadPool = NIOThreadPool(numberOfThreads: configuration.maxConnections)
        self.threadPool.start()
        self.slots = ConnectionSlots(maxConnections: configuration.maxConnections, acquireTimeout: configuration.acquireTimeout)
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
    /// query costs one thread hop, not two.
    public func withConnection<Result: Sendable>(
        _ body: (PooledConnection) async throws -> Result
    ) async throws -> Result {
        let idle = try await slots.acquire()
        let lease = PooledConnection(
            candidate: idle, threadPool: threadPool,
            conninfo: configuration.conninfo, connectTimeoutSeconds: configuration.connectTimeoutSeconds
        )
        do {
            let result = try await body(lease)
            await checkin(lease)
            return result
        } catch {
            await checkin(lease)
            throw error
        }
    }

    /// Runs one statement on any free connection.
    @discardableResult
    public func query(_ query: PostgresQuery) async throws -> PostgresRows {
        try await withConnection { try await $0.query(query) }
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

    private func checkin(_ lease: PooledConnection) async {
        let (usable, discard) = lease.finish()
        if let discard {
            if lease.sawConnectionFailure { logger.info("dropping broken database connection") }
            _ = try? await threadPool.runIfActive { discard.close() }
        }
        if let leftOver = slots.release(usable) {
            _ = try? await threadPool.runIfActive { leftOver.close() }
        }
    }
}

/// A connection lent by the pool; each call hops to the pool's thread pool. Only the task holding
/// the lease touches it, one call at a time, hence `@unchecked Sendable`.
public final class PooledConnection: @unchecked Sendable {
    private let threadPool: NIOThreadPool
    private let conninfo: String
    private let connectTimeoutSeconds: Int
    /// An idle connection from the pool, not yet checked.
    private var candidate: PostgresConnection?
    /// The connection in use, once the first call checked or opened it.
    private var connection: PostgresConnection?
    private(set) var sawConnectionFailure = false

    init(candidate: PostgresConnection?, threadPool: NIOThreadPool, conninfo: String, connectTimeoutSeconds: Int) {
        self.candidate = candidate
        self.threadPool = threadPool
        self.conninfo = conninfo
        self.connectTimeoutSeconds = connectTimeoutSeconds
    }

    /// The server process serving this session (for `pg_terminate_backend` in tests and logs).
    public func backendPID() async throws -> Int32 {
        try await run { $0.backendPID }
    }

    @discardableResult
    public func query(_ query: PostgresQuery) async throws -> PostgresRows {
        try await run { try $0.query(query) }
    }

    /// Parameterless SQL, possibly several statements (migrations, BEGIN/COMMIT).
    public func execute(script sql: String) async throws {
        try await run { try $0.execute(script: sql) }
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
        let fresh = try PostgresConnection(conninfo: conninfo, connectTimeoutSeconds: connectTimeoutSeconds)
        connection = fresh
        return fresh
    }

    /// What goes back to the pool, and what must be closed.
    func finish() -> (usable: PostgresConnection?, discard: PostgresConnection?) {
        if sawConnectionFailure { return (nil, connection ?? candidate) }
        if let connection { return (connection, nil) }
        return (candidate, nil)  // never used: back as it came
    }

    private func run<Result: Sendable>(_ body: @escaping @Sendable (PostgresConnection) throws -> Result) async throws -> Result {
        do {
            return try await threadPool.runIfActive { [self] in try body(self.ready()) }
        } catch let error as PostgresError {
            if error.isConnectionFailure { sawConnectionFailure = true }
            Counter(label: "db_errors_total", dimensions: [("kind", error.kind.rawValue)]).increment()
            throw error
        } catch {
            sawConnectionFailure = true
            throw PostgresError(.poolClosed, message: "database pool is shut down")
        }
    }
}
