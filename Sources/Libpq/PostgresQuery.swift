import Foundation

/// SQL text and its parameters, kept apart all the way to libpq.
///
/// Written as a string literal with interpolations; each interpolated value becomes a
/// placeholder (`$1`, `$2`, …) and a binding, never a piece of SQL:
///
///     let query: PostgresQuery = "SELECT name FROM tenants WHERE client_key = \(clientKey)"
public struct PostgresQuery: Sendable, ExpressibleByStringInterpolation {
    public var sql: String
    public var bindings: [PostgresBinding]

    /// SQL whose placeholders `$1…$n` match `bindings` in order.
    public init(unsafeSQL sql: String, bindings: [PostgresBinding] = []) {
        self.sql = sql
        self.bindings = bindings
    }

    public init(stringLiteral value: String) {
        self.init(unsafeSQL: value)
    }

    public init(stringInterpolation: StringInterpolation) {
        self.init(unsafeSQL: stringInterpolation.sql, bindings: stringInterpolation.bindings)
    }

    public struct StringInterpolation: StringInterpolationProtocol {
        var sql: String
        var bindings: [PostgresBinding] = []

        public init(literalCapacity: Int, interpolationCount: Int) {
            sql = ""
            sql.reserveCapacity(literalCapacity + interpolationCount * 3)
            bindings.reserveCapacity(interpolationCount)
        }

        public mutating func appendLiteral(_ literal: String) {
            sql += literal
        }

        public mutating func appendInterpolation<Value: PostgresEncodable>(_ value: Value) {
            bindings.append(value.postgresBinding)
            sql += "$\(bindings.count)"
        }

        public mutating func appendInterpolation<Value: PostgresEncodable>(_ value: Value?) {
            bindings.append(value.optionalBinding)
            sql += "$\(bindings.count)"
        }

        /// A piece of SQL written once in the source (a `StaticString`, so never a value from
        /// outside), shared by several statements.
        public mutating func appendInterpolation(literal: StaticString) {
            sql += literal.description
        }
    }

    /// What logs may say about this query: its first line of SQL, never its values.
    var logName: String {
        let firstLine = sql.split(whereSeparator: \.isNewline).first.map(String.init) ?? sql
        let trimmed = firstLine.trimmingCharacters(in: .whitespaces)
        return trimmed.count > 80 ? String(trimmed.prefix(80)) + "…" : trimmed
    }
}
