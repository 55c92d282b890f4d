/// The rows of one result, copied out of libpq's `PGresult` (which is freed at once).
public struct PostgresRows: Sendable, RandomAccessCollection {
    public struct Column: Sendable {
        public var name: String
        public var type: PostgresType
    }

    /// Where one cell's bytes sit in `storage`; a negative length is NULL.
    @usableFromInline struct Cell: Sendable {
        @usableFromInline var offset: Int
        @usableFromInline var length: Int
    }

    public let columns: [Column]
    /// Rows touched by INSERT/UPDATE/DELETE (from the command tag), or rows returned.
    public let affectedRows: Int
    @usableFromInline let cells: [Cell]
    @usableFromInline let storage: [UInt8]
    @usableFromInline let columnIndex: [String: Int]

    init(columns: [Column], affectedRows: Int, cells: [Cell], storage: [UInt8]) {
        self.columns = columns
        self.affectedRows = affectedRows
        self.cells = cells
        self.storage = storage
        var index: [String: Int] = [:]
        for (position, column) in columns.enumerated() where index[column.name] == nil {
            index[column.name] = position
        }
        self.columnIndex = index
    }

    public var startIndex: Int { 0 }
    public var endIndex: Int { columns.isEmpty ? 0 : cells.count / columns.count }
    public subscript(position: Int) -> PostgresRow { PostgresRow(rows: self, index: position) }
}

/// One row; read its columns by name or position into Swift types. The decoding methods are
/// inlinable so callers get them specialized for the types they read: generic ones, across the
/// module boundary, showed up in the heartbeat's profile.
public struct PostgresRow: Sendable {
    @usableFromInline let rows: PostgresRows
    @usableFromInline let index: Int

    public var columnCount: Int { rows.columns.count }

    public func isNull(_ column: String) throws -> Bool {
        rows.cells[try cellIndex(position(of: column))].length < 0
    }

    /// Reads a column that may be NULL.
    @inlinable
    public func decode<Value: PostgresDecodable>(_ type: Value?.Type, _ column: String) throws -> Value? {
        try decodeOptional(Value.self, at: position(of: column))
    }

    /// Reads a column that must not be NULL.
    @inlinable
    public func decode<Value: PostgresDecodable>(_ type: Value.Type, _ column: String) throws -> Value {
        let position = try position(of: column)
        guard let value = try decodeOptional(Value.self, at: position) else {
            throw PostgresError(.decoding, message: "column \"\(column)\" is NULL, expected \(Value.self)")
        }
        return value
    }

    @inlinable
    public func decode<Value: PostgresDecodable>(_ type: Value?.Type, at position: Int) throws -> Value? {
        try decodeOptional(Value.self, at: position)
    }

    @inlinable
    public func decode<Value: PostgresDecodable>(_ type: Value.Type, at position: Int) throws -> Value {
        guard let value = try decodeOptional(Value.self, at: position) else {
            throw PostgresError(.decoding, message: "column \(position) is NULL, expected \(Value.self)")
        }
        return value
    }

    @usableFromInline
    func position(of column: String) throws -> Int {
        guard let position = rows.columnIndex[column] else {
            throw PostgresError(.decoding, message: "no column \"\(column)\" in the result")
        }
        return position
    }

    @usableFromInline
    func cellIndex(_ position: Int) throws -> Int {
        guard position >= 0, position < rows.columns.count else {
            throw PostgresError(.decoding, message: "no column \(position) in a result of \(rows.columns.count)")
        }
        return index * rows.columns.count + position
    }

    @inlinable
    func decodeOptional<Value: PostgresDecodable>(_: Value.Type, at position: Int) throws -> Value? {
        let cell = rows.cells[try cellIndex(position)]
        guard cell.length >= 0 else { return nil }
        let column = rows.columns[position]
        let decoded: Result<Value, PostgresDecodingFailure> = rows.storage.withUnsafeBytes { buffer in
            Result { () throws(PostgresDecodingFailure) in
                try Value.decode(UnsafeRawBufferPointer(rebasing: buffer[cell.offset..<(cell.offset + cell.length)]), type: column.type)
            }
        }
        switch decoded {
        case .success(let value): return value
        case .failure(let failure): throw PostgresError(.decoding, message: "column \"\(column.name)\": \(failure.reason)")
        }
    }
}
