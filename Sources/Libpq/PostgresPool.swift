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
        let idle = await slots.close()
        _ = try? await threadPool.runIfActive { idle.forEach { $0.close() } }
        try? await threadPool.shutdownGracefully()
        logger.debug("database pool closed")
    }

    /// Lends a connection to `body`; its methods run on the pool's thread pool through `run`.
    public func withConnection<Result: Sendable>(
        _ body: (PooledConnection) async throws -> Result
    ) async throws -> Result {
        let connection = try await checkout()
        let lease = PooledConnection(connection: connection, threadPool: threadPool)
        do {
            let result = try await body(lease)
            await checkin(connection, broken: lease.sawConnectionFailure)
            return result
        } catch {
            await checkin(connection, broken: lease.sawConnectionFailure)
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
        await slots.statistics()
    }

    private func checkout() async throws -> PostgresConnection {
        let lease = try await slots.acquire()
        let conninfo = configuration.conninfo
        let timeout = configuration.connectTimeoutSeconds
        do {
            return try await threadPool.runIfActive {
                if let idle = lease, idle.isUsable { return idle }
                lease?.close()
                return try PostgresConnection(conninfo: conninfo, connectTimeoutSeconds: timeout)
            }
        } catch {
            _ = await slots.release(nil)
            if let error = error as? PostgresError {
                Counter(label: "db_errors_total", dimensions: [("kind", error.kind.rawValue)]).increment()
                logger.warning("database connection failed", metadata: ["error": "\(error)"])
                throw error
            }
            throw PostgresError(.poolClosed, message: "database pool is shut down")
        }
    }

    private func checkin(_ connection: PostgresConnection, broken: Bool) async {
        if broken {
            logger.info("dropping broken database connection")
            _ = try? await threadPool.runIfActive { connection.close() }
            _ = await slots.release(nil)
        } else if let leftOver = await slots.release(connection) {
            _ = try? await threadPool.runIfActive { leftOver.close() }
        }
    }
}

/// A connection lent by the pool; each call hops to the pool's thread pool.
public final class PooledConnection: @unchecked Sendable {
    private let connection: PostgresConnection
    private let threadPool: NIOThreadPool
    /// Only touched by the one task that holds the lease.
    private(set) var sawConnectionFailure = false

    init(connection: PostgresConnection, threadPool: NIOThreadPool) {
        self.connection = connection
        self.threadPool = threadPool
    }

    public var backendPID: Int32 { connection.backendPID }

    @discardableResult
    public func query(_ query: PostgresQuery) async throws -> PostgresRows {
        try await run { try $0.query(query) }
    }

    /// Parameterless SQL, possibly several statements (migrations, BEGIN/COMMIT).
    public func execute(script sql: String) async throws {
        try await run { try $0.execute(script: sql) }
    }

    private func run<Result: Sendable>(_ body: @escaping @Sendable (PostgresConnection) throws -> Result) async throws -> Result {
        let connection = self.connection
        do {
            return try await threadPool.runIfActive { try body(connection) }
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
