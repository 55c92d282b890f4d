/// An error from PostgreSQL or from talking to it.
///
/// `description` carries everything an operator needs in a log (SQLSTATE, message,
/// detail, the statement's name, never its parameters); `clientMessage` is what a
/// response may show.
public struct PostgresError: Error, CustomStringConvertible, Sendable {
    public enum Kind: String, Sendable {
        /// Could not connect, or the connection broke.
        case connection
        /// The server refused the statement (it carries a SQLSTATE).
        case server
        /// No connection became free within the pool's acquire timeout.
        case poolTimeout
        /// The pool is shut down.
        case poolClosed
        /// The server did not answer within the call's deadline, not even to a cancel request
        /// (a stopped backend, a network stall): the connection was closed.
        case timeout
        /// A column was missing, NULL where a value was required, or of another type.
        case decoding
        /// A protocol state we did not expect from libpq.
        case protocolViolation
    }

    public var kind: Kind
    public var sqlState: String?
    public var message: String
    public var detail: String?
    public var hint: String?
    /// The prepared statement's name or the first words of the SQL: never values.
    public var statement: String?

    public init(
        _ kind: Kind,
        message: String,
        sqlState: String? = nil,
        detail: String? = nil,
        hint: String? = nil,
        statement: String? = nil
    ) {
        self.kind = kind
        self.message = message
        self.sqlState = sqlState
        self.detail = detail
        self.hint = hint
        self.statement = statement
    }

    public var description: String {
        var parts = ["PostgresError.\(kind.rawValue)"]
        if let sqlState { parts.append("sqlstate=\(sqlState)") }
        parts.append("message=\"\(message)\"")
        if let detail { parts.append("detail=\"\(detail)\"") }
        if let hint { parts.append("hint=\"\(hint)\"") }
        if let statement { parts.append("statement=\"\(statement)\"") }
        return parts.joined(separator: " ")
    }

    /// Safe to show to a client: says what kind of trouble, never what the database said.
    public var clientMessage: String {
        isTransient ? "database unavailable" : "database error"
    }

    /// True when the failure was the connection's, so retrying on a fresh one may succeed.
    public var isConnectionFailure: Bool {
        if kind == .connection || kind == .timeout { return true }
        // Class 08 is connection exceptions; 57P01..57P03 are admin shutdown / crash / cannot connect now.
        guard let sqlState else { return false }
        return sqlState.hasPrefix("08") || ["57P01", "57P02", "57P03"].contains(sqlState)
    }

    /// True when the database is down, slow or busy rather than the request or the code being
    /// wrong: a client may retry later (HTTP 503 with `Retry-After`). Covers connection
    /// failures, pool and client-side timeouts, statements cancelled by `statement_timeout` or
    /// by our own cancel (57014), lock timeouts (55P03), insufficient resources (class 53, e.g.
    /// too many connections) and transaction rollbacks a retry resolves (40001, 40P01).
    public var isTransient: Bool {
        switch kind {
        case .connection, .poolTimeout, .poolClosed, .timeout: return true
        case .decoding, .protocolViolation: return false
        case .server: break
        }
        if isConnectionFailure { return true }
        guard let sqlState else { return false }
        return sqlState.hasPrefix("53")
            || [SQLState.queryCanceled, SQLState.lockNotAvailable, SQLState.serializationFailure, SQLState.deadlockDetected].contains(sqlState)
    }
}

/// Well-known SQLSTATE codes we react to.
public enum SQLState {
    public static let uniqueViolation = "23505"
    public static let invalidSQLStatementName = "26000"
    public static let serializationFailure = "40001"
    public static let deadlockDetected = "40P01"
    public static let lockNotAvailable = "55P03"
    /// `statement_timeout` fired, or a cancel request (ours after a client-side deadline).
    public static let queryCanceled = "57014"
}
