import Foundation

/// One parameter as it travels to the server: its type OID, wire format and bytes (nil for NULL).
public struct PostgresBinding: Sendable, Equatable {
    public enum Format: Int32, Sendable { case text = 0, binary = 1 }

    public var type: PostgresType
    public var format: Format
    public var bytes: [UInt8]?

    public init(type: PostgresType, format: Format, bytes: [UInt8]?) {
        self.type = type
        self.format = format
        self.bytes = bytes
    }
}

/// A Swift value that can be sent as a bound parameter.
public protocol PostgresEncodable: Sendable {
    /// The type the parameter is prepared with; fixed per Swift type so a NULL prepares like a value.
    static var postgresType: PostgresType { get }
    static var postgresFormat: PostgresBinding.Format { get }
    /// The value's bytes in `postgresFormat`.
    var postgresBytes: [UInt8] { get }
}

extension PostgresEncodable {
    public static var postgresFormat: PostgresBinding.Format { .binary }
    var postgresBinding: PostgresBinding {
        PostgresBinding(type: Self.postgresType, format: Self.postgresFormat, bytes: postgresBytes)
    }
}

extension String: PostgresEncodable {
    // Text format with an unspecified type lets the server read it as text, uuid, jsonb… from context.
    public static var postgresType: PostgresType { .unspecified }
    public static var postgresFormat: PostgresBinding.Format { .text }
    public var postgresBytes: [UInt8] { Array(utf8) }
}

private func bigEndianBytes<T: FixedWidthInteger>(_ value: T) -> [UInt8] {
    withUnsafeBytes(of: value.bigEndian) { Array($0) }
}

extension Int: PostgresEncodable {
    public static var postgresType: PostgresType { .int8 }
    public var postgresBytes: [UInt8] { bigEndianBytes(Int64(self)) }
}

extension Int64: PostgresEncodable {
    public static var postgresType: PostgresType { .int8 }
    public var postgresBytes: [UInt8] { bigEndianBytes(self) }
}

extension Int32: PostgresEncodable {
    public static var postgresType: PostgresType { .int4 }
    public var postgresBytes: [UInt8] { bigEndianBytes(self) }
}

extension Int16: PostgresEncodable {
    public static var postgresType: PostgresType { .int2 }
    public var postgresBytes: [UInt8] { bigEndianBytes(self) }
}

extension Bool: PostgresEncodable {
    public static var postgresType: PostgresType { .bool }
    public var postgresBytes: [UInt8] { [self ? 1 : 0] }
}

extension Double: PostgresEncodable {
    public static var postgresType: PostgresType { .float8 }
    public var postgresBytes: [UInt8] { bigEndianBytes(bitPattern) }
}

/// PostgreSQL counts timestamps in microseconds from 2000-01-01 00:00:00 UTC.
let postgresEpoch = Date(timeIntervalSince1970: 946_684_800)

extension Date: PostgresEncodable {
    public static var postgresType: PostgresType { .timestamptz }
    public var postgresBytes: [UInt8] {
        let micros = (timeIntervalSince(postgresEpoch) * 1_000_000).rounded()
        return bigEndianBytes(Int64(micros))
    }
}

extension UUID: PostgresEncodable {
    public static var postgresType: PostgresType { .uuid }
    public var postgresBytes: [UInt8] { withUnsafeBytes(of: uuid) { Array($0) } }
}

/// bytea. A distinct type so that `[UInt8]` is never mistaken for an array parameter.
public struct PostgresBytes: PostgresEncodable, Hashable {
    public var bytes: [UInt8]
    public init(_ bytes: [UInt8]) { self.bytes = bytes }
    public init(_ data: Data) { self.bytes = Array(data) }
    public static var postgresType: PostgresType { .bytea }
    public var postgresBytes: [UInt8] { bytes }
}

extension Optional: PostgresEncodable where Wrapped: PostgresEncodable {
    public static var postgresType: PostgresType { Wrapped.postgresType }
    public static var postgresFormat: PostgresBinding.Format { Wrapped.postgresFormat }
    public var postgresBytes: [UInt8] { self?.postgresBytes ?? [] }
}

extension Optional where Wrapped: PostgresEncodable {
    var optionalBinding: PostgresBinding {
        PostgresBinding(type: Wrapped.postgresType, format: Wrapped.postgresFormat, bytes: self?.postgresBytes)
    }
}

/// A `text[]` parameter, for `column = ANY(\(array))` or `unnest(\(array))`: one statement
/// instead of one per value. Sent in the binary array format, so values need no quoting; nil
/// elements are NULLs.
public struct PostgresTextArray: PostgresEncodable, Hashable {
    public var values: [String?]
    public init(_ values: [String?]) { self.values = values }

    public static var postgresType: PostgresType { PostgresType(rawValue: 1009) }

    /// Dimensions, a has-NULLs flag, element type text (OID 25), the length and lower bound (1)
    /// of the one dimension, then each element's length (-1 for NULL) and UTF-8 bytes; all
    /// integers big-endian.
    public var postgresBytes: [UInt8] {
        var bytes: [UInt8] = []
        bytes.reserveCapacity(20 + values.reduce(0) { $0 + 4 + ($1?.utf8.count ?? 0) })
        func append(_ value: Int32) {
            withUnsafeBytes(of: value.bigEndian) { bytes.append(contentsOf: $0) }
        }
        // An empty array has no dimensions at all.
        append(values.isEmpty ? 0 : 1)
        append(values.contains(nil) ? 1 : 0)
        append(25)
        if !values.isEmpty {
            append(Int32(values.count))
            append(1)
        }
        for value in values {
            guard let value else {
                append(-1)
                continue
            }
            append(Int32(value.utf8.count))
            bytes.append(contentsOf: value.utf8)
        }
        return bytes
    }
}
