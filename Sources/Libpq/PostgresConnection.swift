import CLibpq
import Foundation
import Synchronization

/// One libpq connection. Its methods block: the pool calls them on its own thread pool only,
/// and hands a connection to one caller at a time, hence `@unchecked Sendable`.
public final class PostgresConnection: @unchecked Sendable {
    let handle: OpaquePointer
    /// Prepared statements of this session, by SQL text and parameter types.
    private var preparedStatements: [StatementKey: String] = [:]
    private var isClosed = false
    /// Set once a cancel request was sent for one of this session's statements.
    private var cancelRequested = false

    struct StatementKey: Hashable {
        var sql: String
        var types: [UInt32]
    }

    /// Connects with a `postgresql://` URL or a keyword/value conninfo string.
    ///
    /// `connectTimeout` applies unless the conninfo sets `connect_timeout` itself; it bounds
    /// how long a call waits while the server is unreachable. `statementTimeout` becomes the
    /// session's `statement_timeout` (sent with the connection's `options`, after any options
    /// of the conninfo or `PGOPTIONS`, so `RESET` and `DISCARD ALL` keep it); nil or zero
    /// leaves the server's default.
    public init(
        conninfo: String, connectTimeoutSeconds: Int = 5, statementTimeout: Duration? = nil, applicationName: String = "whoslooking"
    ) throws(PostgresError) {
        // Later keywords win, so the conninfo's own connect_timeout overrides our default, and
        // our options (which repeat the conninfo's own) override the conninfo's.
        var keywords = ["connect_timeout", "application_name", "dbname"]
        var values = [String(connectTimeoutSeconds), applicationName, conninfo]
        if let milliseconds = statementTimeout.map(Self.milliseconds), milliseconds > 0 {
            let inherited = Self.options(in: conninfo) ?? ProcessInfo.processInfo.environment["PGOPTIONS"] ?? ""
            keywords.append("options")
            values.append((inherited.isEmpty ? "" : inherited + " ") + "-c statement_timeout=\(milliseconds)")
        }
        let connection = withCStringArray(keywords) { keywordPointers in
            withCStringArray(values) { valuePointers in
                PQconnectdbParams(keywordPointers, valuePointers, 1)
            }
        }
        guard let connection else {
            throw PostgresError(.connection, message: "libpq could not allocate a connection")
        }
        guard PQstatus(connection) == CONNECTION_OK else {
            let message = Self.errorMessage(of: connection)
            PQfinish(connection)
            throw PostgresError(.connection, message: message)
        }
        // Non-blocking: every wait for the server is a poll() with the call's deadline, so a
        // stalled server can never hold a pool thread beyond it.
        guard PQsetnonblocking(connection, 1) == 0 else {
            let message = Self.errorMessage(of: connection)
            PQfinish(connection)
            throw PostgresError(.connection, message: message)
        }
        handle = connection
        // Server notices (NOTICE, the FATAL before a termination) would go to stderr; errors
        // that matter reach us as results, so notices are dropped.
        PQsetNoticeProcessor(connection, { _, _ in }, nil)
    }

    /// The `options` keyword of a conninfo string or URL, if it sets one.
    static func options(in conninfo: String) -> String? {
        var parseError: UnsafeMutablePointer<CChar>?
        guard let parsed = PQconninfoParse(conninfo, &parseError) else {
            if let parseError { PQfreemem(parseError) }
            return nil
        }
        defer { PQconninfoFree(parsed) }
        var option = parsed
        while let keyword = option.pointee.keyword {
            if strcmp(keyword, "options") == 0 { return option.pointee.val.map { String(cString: $0) } }
            option += 1
        }
        return nil
    }

    /// Whole milliseconds, rounded up; within PostgreSQL's range for timeouts.
    static func milliseconds(_ duration: Duration) -> Int {
        let (seconds, attoseconds) = duration.components
        guard seconds >= 0, attoseconds >= 0 else { return 0 }
        if seconds >= Int64(Int32.max) / 1000 { return Int(Int32.max) }
        return Int(seconds) * 1000 + Int((attoseconds + 999_999_999_999_999) / 1_000_000_000_000_000)
    }

    deinit {
        close()
    }

    /// Closes the connection; further calls fail.
    public func close() {
        guard !isClosed else { return }
        isClosed = true
        PQfinish(handle)
    }

    /// Closed, or a cancel request was sent for it: not to be lent again. A flag, no system call.
    var isRetired: Bool { isClosed || cancelRequested }

    /// The server process serving this session (for `pg_terminate_backend` in tests and logs).
    public var backendPID: Int32 { PQbackendPID(handle) }

    /// False once the server has gone away. An idle session hears nothing from the server
    /// unless something happened (a termination notice, then end of file), so a readable
    /// socket is read until it is quiet again or found closed. Never blocks.
    /// A session we sent a cancel request for is never reused: the request travels on its own
    /// connection and could still reach the server during a later statement.
    public var isUsable: Bool {
        guard !isClosed, !cancelRequested, PQstatus(handle) == CONNECTION_OK else { return false }
        var descriptor = pollfd(fd: PQsocket(handle), events: Int16(POLLIN), revents: 0)
        for _ in 0..<4 {
            guard poll(&descriptor, 1, 0) > 0 else { break }
            guard PQconsumeInput(handle) == 1, PQstatus(handle) == CONNECTION_OK else { return false }
        }
        return PQstatus(handle) == CONNECTION_OK && PQtransactionStatus(handle) == PQTRANS_IDLE
    }

    /// Runs one statement with bound parameters, preparing it once per connection.
    ///
    /// With a `timeout`, a statement the server has not answered by then is cancelled (a cancel
    /// request, as `pg_cancel_backend` does: it fails with SQLSTATE 57014, and the session is
    /// replaced before reuse); a server that does not answer the cancel within `cancelGrace`
    /// either (a stopped backend, a network stall) gets the connection closed at once, and the
    /// call fails with `.timeout`. Either way the call returns within `timeout + cancelGrace`.
    public func query(_ query: PostgresQuery, timeout: Duration? = nil, cancelGrace: Duration = .seconds(1)) throws(PostgresError) -> PostgresRows {
        let deadline = Deadline(timeout: timeout, cancelGrace: cancelGrace)
        let key = StatementKey(sql: query.sql, types: query.bindings.map(\.type.rawValue))
        let name: String
        if let known = preparedStatements[key] {
            name = known
        } else {
            name = "s\(preparedStatements.count + 1)"
            try prepare(name: name, key: key, query: query, deadline: deadline)
            preparedStatements[key] = name
        }
        do {
            return try executePrepared(name: name, query: query, deadline: deadline)
        } catch  where error.sqlState == SQLState.invalidSQLStatementName {
            // Someone ran DISCARD ALL / DEALLOCATE on this session: prepare again once.
            preparedStatements.removeAll()
            try prepare(name: name, key: key, query: query, deadline: deadline)
            preparedStatements[key] = name
            return try executePrepared(name: name, query: query, deadline: deadline)
        }
    }

    /// Runs SQL without parameters through the simple query protocol, which allows several
    /// statements in one string (migration files). Never pass values in here. The timeout
    /// works as in `query`.
    public func execute(script sql: String, timeout: Duration? = nil, cancelGrace: Duration = .seconds(1)) throws(PostgresError) {
        let deadline = Deadline(timeout: timeout, cancelGrace: cancelGrace)
        let statement = PostgresQuery(unsafeSQL: sql).logName
        let reply = try roundTrip(deadline: deadline, statement: statement) { PQsendQuery(handle, sql) }
        _ = try consume(reply.result, statement: statement, cancelledAfter: reply.cancelledAfter)
    }

    private func prepare(name: String, key: StatementKey, query: PostgresQuery, deadline: Deadline) throws(PostgresError) {
        let reply = try roundTrip(deadline: deadline, statement: query.logName) {
            key.types.withUnsafeBufferPointer { types in
                PQsendPrepare(handle, name, key.sql, Int32(key.types.count), types.baseAddress)
            }
        }
        _ = try consume(reply.result, statement: query.logName, cancelledAfter: reply.cancelledAfter)
    }

    private func executePrepared(name: String, query: PostgresQuery, deadline: Deadline) throws(PostgresError) -> PostgresRows {
        let bindings = query.bindings
        for binding in bindings where binding.format == .text && binding.bytes?.contains(0) == true {
            // libpq reads text parameters as C strings: a NUL would silently cut the value.
            throw PostgresError(.server, message: "a text parameter contains a NUL byte", sqlState: "22021", statement: query.logName)
        }
        // All parameter bytes in one buffer; text ones NUL-terminated since libpq reads them as C strings.
        var storage: [UInt8] = []
        var offsets: [Int?] = []
        offsets.reserveCapacity(bindings.count)
        for binding in bindings {
            guard let bytes = binding.bytes else {
                offsets.append(nil)
                continue
            }
            offsets.append(storage.count)
            storage.append(contentsOf: bytes)
            if binding.format == .text { storage.append(0) }
        }
        storage.append(0)  // never empty, so even a zero-length value gets a non-NULL pointer
        let lengths = bindings.map { Int32($0.bytes?.count ?? 0) }
        let formats = bindings.map(\.format.rawValue)
        let reply = try roundTrip(deadline: deadline, statement: query.logName) {
            // libpq copies the parameters into its output buffer before PQsendQueryPrepared returns.
            storage.withUnsafeBufferPointer { buffer in
                let base = UnsafeRawPointer(buffer.baseAddress!).assumingMemoryBound(to: CChar.self)
                let values: [UnsafePointer<CChar>?] = offsets.map { offset in offset.map { base + $0 } }
                return PQsendQueryPrepared(handle, name, Int32(bindings.count), values, lengths, formats, 1)  // binary results
            }
        }
        return try consume(reply.result, statement: query.logName, cancelledAfter: reply.cancelledAfter)
    }

    /// When a call gives up on the server: first a cancel request, then the connection.
    struct Deadline {
        var timeout: Duration?
        var cancelAt: ContinuousClock.Instant?
        var cancelGrace: Duration

        init(timeout: Duration?, cancelGrace: Duration) {
            self.timeout = timeout
            cancelAt = timeout.map { ContinuousClock.now + $0 }
            self.cancelGrace = cancelGrace
        }
    }

    /// A command's result, and whether we had to cancel it.
    struct Reply {
        var result: OpaquePointer?
        var cancelledAfter: Duration?
    }

    /// Sends a command with `send` and collects its results, never waiting past the deadline.
    /// Answers the first error result if any, else the last result (as `PQexec` does).
    private func roundTrip(deadline: Deadline, statement: @autoclosure () -> String, send: () -> Int32) throws(PostgresError) -> Reply {
        try checkOpen()
        guard send() == 1 else { throw lost(statement: statement()) }
        var waitUntil = deadline.cancelAt
        var cancelled: ContinuousClock.Instant?
        // The command may not fit the socket's buffer at once: flush, reading meanwhile.
        while true {
            let flushed = PQflush(handle)
            if flushed == 0 { break }
            guard flushed > 0 else { throw lost(statement: statement()) }
            guard try waitForSocket(Int16(POLLIN | POLLOUT), until: waitUntil) else {
                // Not even the command went out: nothing to cancel.
                throw abandon(after: deadline, statement: statement())
            }
            guard PQconsumeInput(handle) == 1 else { throw lost(statement: statement()) }
        }
        var chosen: OpaquePointer?
        while true {
            while PQisBusy(handle) == 1 {
                let readable: Bool
                do {
                    readable = try waitForSocket(Int16(POLLIN), until: waitUntil)
                } catch {
                    if let chosen { PQclear(chosen) }
                    throw error
                }
                if readable {
                    guard PQconsumeInput(handle) == 1 else {
                        if let chosen { PQclear(chosen) }
                        throw lost(statement: statement())
                    }
                } else if cancelled == nil {
                    let now = ContinuousClock.now
                    cancelled = now
                    requestCancel()
                    waitUntil = now + deadline.cancelGrace
                } else {
                    if let chosen { PQclear(chosen) }
                    throw abandon(after: deadline, statement: statement())
                }
            }
            guard let result = PQgetResult(handle) else { break }
            if let previous = chosen {
                if Self.isError(previous) {
                    PQclear(result)
                    continue
                }
                PQclear(previous)
            }
            chosen = result
        }
        return Reply(result: chosen, cancelledAfter: cancelled == nil ? nil : deadline.timeout)
    }

    private static func isError(_ result: OpaquePointer) -> Bool {
        let status = PQresultStatus(result)
        return status == PGRES_FATAL_ERROR || status == PGRES_BAD_RESPONSE
    }

    /// Waits until the socket is ready for `events`; false when `deadline` passed first.
    private func waitForSocket(_ events: Int16, until deadline: ContinuousClock.Instant?) throws(PostgresError) -> Bool {
        let socket = PQsocket(handle)
        guard socket >= 0 else { throw PostgresError(.connection, message: Self.errorMessage(of: handle)) }
        var descriptor = pollfd(fd: socket, events: events, revents: 0)
        while true {
            var milliseconds: Int32 = -1
            if let deadline {
                let remaining = deadline - ContinuousClock.now
                guard remaining > .zero else { return false }
                milliseconds = Int32(clamping: Self.milliseconds(remaining))
            }
            let ready = poll(&descriptor, 1, milliseconds)
            if ready > 0 { return true }
            if ready < 0 && errno != EINTR {
                throw PostgresError(.connection, message: "poll failed: \(String(cString: strerror(errno)))")
            }
        }
    }

    /// Asks the server to cancel the running statement, from a thread of its own: the request
    /// opens a new connection to the server, which may itself stall.
    private func requestCancel() {
        cancelRequested = true
        guard let cancel = PQgetCancel(handle) else { return }
        CancelRequests.send(cancel)
    }

    /// The server answered neither the statement nor the cancel request: the connection is
    /// closed (the pool replaces it) and the caller gets `.timeout`.
    private func abandon(after deadline: Deadline, statement: String) -> PostgresError {
        close()
        return PostgresError(
            .timeout,
            message: "the server did not answer in time, nor a cancel request within \(deadline.cancelGrace); connection closed",
            statement: statement
        )
    }

    private func lost(statement: String) -> PostgresError {
        PostgresError(.connection, message: Self.errorMessage(of: handle), statement: statement)
    }

    /// Turns a result into rows or an error, and frees it: the only place a PGresult is cleared.
    /// The statement's name is only worked out for an error (it showed in the heartbeat profile).
    private func consume(
        _ result: OpaquePointer?, statement: @autoclosure () -> String, cancelledAfter: Duration? = nil
    ) throws(PostgresError) -> PostgresRows {
        guard let result else {
            throw PostgresError(.connection, message: Self.errorMessage(of: handle), statement: statement())
        }
        defer { PQclear(result) }
        switch PQresultStatus(result) {
        case PGRES_COMMAND_OK, PGRES_EMPTY_QUERY:
            return PostgresRows(columns: [], affectedRows: Self.affectedRows(result), cells: [], storage: [])
        case PGRES_TUPLES_OK, PGRES_SINGLE_TUPLE:
            return Self.copyRows(result)
        case PGRES_FATAL_ERROR, PGRES_NONFATAL_ERROR, PGRES_BAD_RESPONSE:
            var error = Self.serverError(result, connection: handle, statement: statement())
            if let cancelledAfter, error.sqlState == SQLState.queryCanceled {
                error.detail = error.detail ?? "cancelled by the client: no answer within \(cancelledAfter)"
            }
            throw error
        default:
            throw PostgresError(.protocolViolation, message: "unexpected result status \(PQresultStatus(result).rawValue)", statement: statement())
        }
    }

    private func checkOpen() throws(PostgresError) {
        if isClosed { throw PostgresError(.connection, message: "connection is closed") }
    }

    private static func copyRows(_ result: OpaquePointer) -> PostgresRows {
        let rowCount = Int(PQntuples(result))
        let columnCount = Int(PQnfields(result))
        var columns: [PostgresRows.Column] = []
        columns.reserveCapacity(columnCount)
        for column in 0..<columnCount {
            columns.append(
                .init(
                    name: String(cString: PQfname(result, Int32(column))),
                    type: PostgresType(rawValue: PQftype(result, Int32(column)))
                ))
        }
        var cells: [PostgresRows.Cell] = []
        cells.reserveCapacity(rowCount * columnCount)
        var storage: [UInt8] = []
        for row in 0..<rowCount {
            for column in 0..<columnCount {
                if PQgetisnull(result, Int32(row), Int32(column)) == 1 {
                    cells.append(.init(offset: storage.count, length: -1))
                    continue
                }
                let length = Int(PQgetlength(result, Int32(row), Int32(column)))
                cells.append(.init(offset: storage.count, length: length))
                if length > 0, let value = PQgetvalue(result, Int32(row), Int32(column)) {
                    value.withMemoryRebound(to: UInt8.self, capacity: length) { bytes in
                        storage.append(contentsOf: UnsafeBufferPointer(start: bytes, count: length))
                    }
                }
            }
        }
        return PostgresRows(columns: columns, affectedRows: Self.affectedRows(result, default: rowCount), cells: cells, storage: storage)
    }

    private static func affectedRows(_ result: OpaquePointer, default fallback: Int = 0) -> Int {
        guard let tuples = PQcmdTuples(result) else { return fallback }
        return Int(String(cString: tuples)) ?? fallback
    }

    private static func serverError(_ result: OpaquePointer, connection: OpaquePointer, statement: String) -> PostgresError {
        func field(_ code: Character) -> String? {
            guard let value = PQresultErrorField(result, Int32(code.asciiValue!)) else { return nil }
            return String(cString: value)
        }
        let sqlState = field("C")
        let message = field("M") ?? errorMessage(of: connection)
        let lostConnection = PQstatus(connection) != CONNECTION_OK
        return PostgresError(
            lostConnection ? .connection : .server,
            message: message,
            sqlState: sqlState,
            detail: field("D"),
            hint: field("H"),
            statement: statement
        )
    }

    static func errorMessage(of connection: OpaquePointer) -> String {
        guard let message = PQerrorMessage(connection) else { return "unknown libpq error" }
        let text = String(cString: message).trimmingCharacters(in: .whitespacesAndNewlines)
        return text.isEmpty ? "unknown libpq error" : text
    }
}

private func withCStringArray<Result>(_ strings: [String], _ body: (UnsafePointer<UnsafePointer<CChar>?>) -> Result) -> Result {
    let duplicates = strings.map { strdup($0) }
    defer { duplicates.forEach { free($0) } }
    var pointers: [UnsafePointer<CChar>?] = duplicates.map { UnsafePointer($0) }
    pointers.append(nil)
    return pointers.withUnsafeBufferPointer { body($0.baseAddress!) }
}

/// Cancel requests in flight, each on a thread of its own (a request opens a new connection to
/// the server, and a stalled network would hold it). Bounded: beyond the limit a timed-out
/// connection is closed without asking the server to cancel first.
enum CancelRequests {
    static let limit = 16
    private static let inFlight = Atomic<Int>(0)

    static func send(_ cancel: OpaquePointer) {
        guard inFlight.wrappingAdd(1, ordering: .relaxed).newValue <= limit else {
            inFlight.wrappingSubtract(1, ordering: .relaxed)
            PQfreeCancel(cancel)
            return
        }
        let request = CancelHandle(pointer: cancel)
        let thread = Thread {
            var message = [CChar](repeating: 0, count: 256)
            _ = PQcancel(request.pointer, &message, Int32(message.count))
            PQfreeCancel(request.pointer)
            inFlight.wrappingSubtract(1, ordering: .relaxed)
        }
        thread.name = "libpq-cancel"
        thread.start()
    }

    /// A PGcancel is independent of its connection and may be used from any thread.
    private struct CancelHandle: @unchecked Sendable {
        var pointer: OpaquePointer
    }
}
