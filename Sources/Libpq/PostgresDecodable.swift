import Foundation

/// Why one value could not be read; the row adds the column to make it a `PostgresError`.
public struct PostgresDecodingFailure: Error, Sendable {
    public var reason: String
    public init(_ reason: String) { self.reason = reason }
}

/// A Swift value that can be read from a column in binary result format.
public protocol PostgresDecodable: Sendable {
    static func decode(_ bytes: UnsafeRawBufferPointer, type: PostgresType) throws(PostgresDecodingFailure) -> Self
}

extension PostgresDecodable {
    static func mismatch(_ type: PostgresType) -> PostgresDecodingFailure {
        PostgresDecodingFailure("cannot read a \(type) column as \(Self.self)")
    }
}

private func readBigEndian<T: FixedWidthInteger>(_ bytes: UnsafeRawBufferPointer, as: T.Type) throws(PostgresDecodingFailure) -> T {
    guard bytes.count == MemoryLayout<T>.size else {
        throw PostgresDecodingFailure("expected \(MemoryLayout<T>.size) bytes for \(T.self), got \(bytes.count)")
    }
    return T(bigEndian: bytes.loadUnaligned(as: T.self))
}

extension String: PostgresDecodable {
    public static func decode(_ bytes: UnsafeRawBufferPointer, type: PostgresType) throws(PostgresDecodingFailure) -> String {
        if type.isTextual {
            return String(decoding: bytes, as: UTF8.self)
        }
        if type == .jsonb {
            // Binary jsonb is a version byte (1) followed by the JSON text.
            guard bytes.first == 1 else { throw PostgresDecodingFailure("unknown jsonb version") }
            return String(decoding: UnsafeRawBufferPointer(rebasing: bytes.dropFirst()), as: UTF8.self)
        }
        if type == .uuid {
            return try UUID.decode(bytes, type: type).uuidString.lowercased()
        }
        throw mismatch(type)
    }
}

extension Int: PostgresDecodable {
    public static func decode(_ bytes: UnsafeRawBufferPointer, type: PostgresType) throws(PostgresDecodingFailure) -> Int {
        switch type {
        case .int8: Int(try readBigEndian(bytes, as: Int64.self))
        case .int4: Int(try readBigEndian(bytes, as: Int32.self))
        case .int2: Int(try readBigEndian(bytes, as: Int16.self))
        case .oid: Int(try readBigEndian(bytes, as: UInt32.self))
        default: throw mismatch(type)
        }
    }
}

extension Int64: PostgresDecodable {
    public static func decode(_ bytes: UnsafeRawBufferPointer, type: PostgresType) throws(PostgresDecodingFailure) -> Int64 {
        Int64(try Int.decode(bytes, type: type))
    }
}

extension Int32: PostgresDecodable {
    public static func decode(_ bytes: UnsafeRawBufferPointer, type: PostgresType) throws(PostgresDecodingFailure) -> Int32 {
        let wide = try Int.decode(bytes, type: type)
        guard let narrow = Int32(exactly: wide) else { throw PostgresDecodingFailure("\(wide) does not fit in Int32") }
        return narrow
    }
}

extension Bool: PostgresDecodable {
    public static func decode(_ bytes: UnsafeRawBufferPointer, type: PostgresType) throws(PostgresDecodingFailure) -> Bool {
        guard type == .bool else { throw mismatch(type) }
        guard bytes.count == 1 else { throw PostgresDecodingFailure("expected 1 byte for bool, got \(bytes.count)") }
        return bytes[0] != 0
    }
}

extension Double: PostgresDecodable {
    public static func decode(_ bytes: UnsafeRawBufferPointer, type: PostgresType) throws(PostgresDecodingFailure) -> Double {
        switch type {
        case .float8: Double(bitPattern: try readBigEndian(bytes, as: UInt64.self))
        case .float4: Double(Float(bitPattern: try readBigEndian(bytes, as: UInt32.self)))
        case .int8, .int4, .int2: Double(try Int.decode(bytes, type: type))
        default: throw mismatch(type)
        }
    }
}

extension Date: PostgresDecodable {
    public static func decode(_ bytes: UnsafeRawBufferPointer, type: PostgresType) throws(PostgresDecodingFailure) -> Date {
        guard type == .timestamptz || type == .timestamp else { throw mismatch(type) }
        let micros = try readBigEndian(bytes, as: Int64.self)
        guard micros != .max, micros != .min else { throw PostgresDecodingFailure("infinite timestamp") }
        return postgresEpoch.addingTimeInterval(Double(micros) / 1_000_000)
    }
}

extension UUID: PostgresDecodable {
    public static func decode(_ bytes: UnsafeRawBufferPointer, type: PostgresType) throws(PostgresDecodingFailure) -> UUID {
        guard type == .uuid else { throw mismatch(type) }
        guard bytes.count == 16 else { throw PostgresDecodingFailure("expected 16 bytes for uuid, got \(bytes.count)") }
        var raw: uuid_t = (0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0)
        withUnsafeMutableBytes(of: &raw) { $0.copyMemory(from: bytes) }
        return UUID(uuid: raw)
    }
}

extension PostgresBytes: PostgresDecodable {
    public static func decode(_ bytes: UnsafeRawBufferPointer, type: PostgresType) throws(PostgresDecodingFailure) -> PostgresBytes {
        guard type == .bytea else { throw mismatch(type) }
        return PostgresBytes(Array(bytes))
    }
}
