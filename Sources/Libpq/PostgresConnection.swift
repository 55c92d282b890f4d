import Foundation
import CLibpq

/// One libpq connection. Its methods block: the pool calls them on its own thread pool only,
/// and hands a connection to one caller at a time, hence `@unchecked Sendable`.
public final class PostgresConnection: @unchecked Sendable {
    private let handle: OpaquePointer
    /// Prepared statements of this session, by SQL text and parameter types.
    private var preparedStatements: [StatementKey: String] = [:]
    private var isClosed = false

    struct StatementKey: Hashable {
        var sql: String
        var types: [UInt32]
    }

    /// Connects with a `postgresql://` URL or a keyword/value conninfo string.
    ///
    /// `connectTimeout` applies unless the conninfo sets `connect_timeout` itself; it bounds
    /// how long a call waits while the server is unreachable.
    public init(conninfo: String, connectTimeoutSeconds: Int = 5) throws(PostgresError) {
        // Later keywords win, so the conninfo's own connect_timeout overrides our default.
        let keywords = ["connect_timeout", "application_name", "dbname"]
        let values = [String(connectTimeoutSeconds), "whoslooking", conninfo]
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
        handle = connection
        // Server notices (NOTICE, the FATAL before a termination) would go to stderr; errors
        // that matter reach us as results, so notices are dropped.
        PQsetNoticeProcessor(connection, { _, _ in }, nil)
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

    /// The server process serving this session (for `pg_terminate_backend` in tests and logs).
    public var backendPID: Int32 { PQbackendPID(handle) }

    /// False once the server has gone away. An idle session hears nothing from the server
    /// unless something happened (a termination notice, then end of file), so a readable
    /// socket is read until it is quiet again or found closed. Never blocks.
    public var isUsable: Bool {
        guard !isClosed, PQstatus(handle) == CONNECTION_OK else { return false }
        var descriptor = pollfd(fd: PQsocket(handle), events: Int16(POLLIN), revents: 0)
        for _ in 0..<4 {
            guard poll(&descriptor, 1, 0) > 0 else { break }
            guard PQconsumeInput(handle) == 1, PQstatus(handle) == CONNECTION_OK else { return false }
        }
        return PQstatus(handle) == CONNECTION_OK && PQtransactionStatus(handle) == PQTRANS_IDLE
    }

    /// Runs one statement with bound parameters, preparing it once per connection.
    public func query(_ query: PostgresQuery) throws(PostgresError) -> PostgresRows {
        let key = StatementKey(sql: query.sql, types: query.bindings.map(\.type.rawValue))
        let name: String
        if let known = preparedStatements[key] {
            name = known
        } else {
            name = "s\(preparedStatements.count + 1)"
            try prepare(name: name, key: key, query: query)
            preparedStatements[key] = name
        }
        do {
            return try executePrepared(name: name, query: query)
        } catch where error.sqlState == SQLState.invalidSQLStatementName {
            // Someone ran DISCARD ALL / DEALLOCATE on this session: prepare again once.
            preparedStatements.removeAll()
            try prepare(name: name, key: key, query: query)
            preparedStatements[key] = name
            return try executePrepared(name: name, query: query)
        }
    }

    /// Runs SQL without parameters through the simple query protocol, which allows several
    /// statements in one string (migration files). Never pass values in here.
    public func execute(script sql: String) throws(PostgresError) {
        try checkOpen()
        let result = PQexec(handle, sql)
        _ = try consume(result, statement: PostgresQuery(unsafeSQL: sql).logName)
    }

    private func prepare(name: String, key: StatementKey, query: PostgresQuery) throws(PostgresError) {
        try checkOpen()
        let result = key.types.withUnsafeBufferPointer { types in
            PQprepare(handle, name, key.sql, Int32(key.types.count), types.baseAddress)
        }
        _ = try consume(result, statement: query.logName)
    }

    private func executePrepared(name: String, query: PostgresQuery) throws(PostgresError) -> PostgresRows {
        try checkOpen()
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
        let result: OpaquePointer? = storage.withUnsafeBufferPointer { buffer in
            let base = UnsafeRawPointer(buffer.baseAddress!).assumingMemoryBound(to: CChar.self)
            let values: [UnsafePointer<CChar>?] = offsets.map { offset in offset.map { base + $0 } }
            return PQexecPrepared(handle, name, Int32(bindings.count), values, lengths, formats, 1)  // binary results
        }
        return try consume(result, statement: query.logName)
    }

    /// Turns a result into rows or an error, and frees it: the only place a PGresult is cleared.
    /// The statement's name is only worked out for an error (it showed in the heartbeat profile).
    private func consume(_ result: OpaquePointer?, statement: @autoclosure () -> String) throws(PostgresError) -> PostgresRows {
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
            throw Self.serverError(result, connection: handle, statement: statement())
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
            columns.append(.init(
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
