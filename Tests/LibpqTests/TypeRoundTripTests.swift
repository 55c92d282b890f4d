import Foundation
import Libpq
import TestSupport
import Testing

@Suite("Values travel to PostgreSQL and back unchanged", .timeLimit(.minutes(3)))
struct TypeRoundTripTests {
    @Test func everySupportedTypeRoundTrips() async throws {
        try await TestDatabase.withScratchPool { pool in
            try await pool.query("""
                CREATE TABLE sample (
                    t text, i8 bigint, i4 integer, i2 smallint, b boolean, f float8,
                    ts timestamptz, u uuid, bytes bytea
                )
                """)
            let date = Date(timeIntervalSince1970: 1_795_000_000.123456)
            let uuid = UUID()
            let bytes = PostgresBytes((0..<256).map { UInt8($0) })
            try await pool.query("""
                INSERT INTO sample VALUES (
                    \("héllo wörld ✓ 👀"), \(Int.max), \(Int32.min), \(Int16(-7)), \(true), \(-1.5e-300),
                    \(date), \(uuid), \(bytes)
                )
                """)
            let rows = try await pool.query("SELECT * FROM sample")
            #expect(rows.count == 1)
            let row = rows[0]
            #expect(try row.decode(String.self, "t") == "héllo wörld ✓ 👀")
            #expect(try row.decode(Int.self, "i8") == Int.max)
            #expect(try row.decode(Int32.self, "i4") == Int32.min)
            #expect(try row.decode(Int.self, "i2") == -7)
            #expect(try row.decode(Bool.self, "b") == true)
            #expect(try row.decode(Double.self, "f") == -1.5e-300)
            let readDate = try row.decode(Date.self, "ts")
            #expect(abs(readDate.timeIntervalSince(date)) < 0.000_001)
            #expect(try row.decode(UUID.self, "u") == uuid)
            #expect(try row.decode(String.self, "u") == uuid.uuidString.lowercased())
            #expect(try row.decode(PostgresBytes.self, "bytes") == bytes)
        }
    }

    @Test func nullsReadAsNilForEveryType() async throws {
        try await TestDatabase.withScratchPool { pool in
            let none: String? = nil
            let noInt: Int? = nil
            let noDate: Date? = nil
            let rows = try await pool.query("""
                SELECT \(none)::text AS t, \(noInt) AS i, \(noDate) AS d, NULL::bool AS b,
                       NULL::float8 AS f, NULL::uuid AS u, NULL::bytea AS y
                """)
            let row = rows[0]
            #expect(try row.decode(String?.self, "t") == nil)
            #expect(try row.decode(Int?.self, "i") == nil)
            #expect(try row.decode(Date?.self, "d") == nil)
            #expect(try row.decode(Bool?.self, "b") == nil)
            #expect(try row.decode(Double?.self, "f") == nil)
            #expect(try row.decode(UUID?.self, "u") == nil)
            #expect(try row.decode(PostgresBytes?.self, "y") == nil)
            #expect(try row.isNull("t"))
            // A required value that is NULL is an error naming the column.
            let error = #expect(throws: PostgresError.self) { try row.decode(String.self, "t") }
            #expect(error?.kind == .decoding)
            #expect(error?.message.contains("\"t\"") == true)
        }
    }

    @Test func emptyStringsAndEmptyByteaAreNotNull() async throws {
        try await TestDatabase.withScratchPool { pool in
            let rows = try await pool.query("SELECT \("")::text AS t, \(PostgresBytes([]))::bytea AS y")
            #expect(try rows[0].decode(String?.self, "t") == "")
            #expect(try rows[0].decode(PostgresBytes?.self, "y") == PostgresBytes([]))
        }
    }

    @Test func largeByteaRoundTrips() async throws {
        try await TestDatabase.withScratchPool { pool in
            var generator = SystemRandomNumberGenerator()
            let payload = PostgresBytes((0..<(8 * 1024 * 1024)).map { _ in UInt8.random(in: 0...255, using: &generator) })
            let rows = try await pool.query("SELECT \(payload)::bytea AS y, length(\(payload)::bytea) AS n")
            #expect(try rows[0].decode(Int.self, "n") == payload.bytes.count)
            #expect(try rows[0].decode(PostgresBytes.self, "y") == payload)
        }
    }

    @Test func manyRows() async throws {
        try await TestDatabase.withScratchPool { pool in
            let rows = try await pool.query("SELECT g AS n, 'row ' || g AS label FROM generate_series(1, \(100_000)) AS g")
            #expect(rows.count == 100_000)
            var sum = 0
            for row in rows { sum += try row.decode(Int.self, "n") }
            #expect(sum == 100_000 * 100_001 / 2)
            #expect(try rows[99_999].decode(String.self, "label") == "row 100000")
        }
    }

    @Test func valuesAreBoundNotInterpolated() async throws {
        try await TestDatabase.withScratchPool { pool in
            try await pool.query("CREATE TABLE names (name text)")
            let hostile = "x'); DROP TABLE names; --"
            try await pool.query("INSERT INTO names VALUES (\(hostile))")
            let rows = try await pool.query("SELECT name FROM names")
            #expect(try rows[0].decode(String.self, "name") == hostile)
        }
    }

    @Test func textWithNulIsRefusedRatherThanCut() async throws {
        try await TestDatabase.withScratchPool { pool in
            let error = await #expect(throws: PostgresError.self) {
                try await pool.query("SELECT \("before\u{0}after")::text")
            }
            #expect(error?.sqlState == "22021")
        }
    }

    @Test func typeAndColumnMismatchesAreClearErrors() async throws {
        try await TestDatabase.withScratchPool { pool in
            let rows = try await pool.query("SELECT 'abc'::text AS word, 5000000000::bigint AS big")
            let mismatch = #expect(throws: PostgresError.self) { try rows[0].decode(Int.self, "word") }
            #expect(mismatch?.message == "column \"word\": cannot read a text column as Int")
            let overflow = #expect(throws: PostgresError.self) { try rows[0].decode(Int32.self, "big") }
            #expect(overflow?.message.contains("does not fit") == true)
            let missing = #expect(throws: PostgresError.self) { try rows[0].decode(String.self, "nope") }
            #expect(missing?.message == "no column \"nope\" in the result")
            #expect(throws: PostgresError.self) { try rows[0].decode(String.self, at: 7) }
        }
    }
}

@Suite("Array parameters", .timeLimit(.minutes(3)))
struct ArrayParameterTests {
    @Test func textArraysMatchWithAny() async throws {
        try await TestDatabase.withScratchPool { pool in
            let awkward = ["plain", "with \"quotes\"", "back\\slash", "comma,brace}{", "", "ünï"]
            let rows = try await pool.query("SELECT unnest(\(PostgresTextArray(awkward))) AS v")
            #expect(try rows.map { try $0.decode(String.self, "v") } == awkward)
            let matched = try await pool.query("SELECT 'ünï' = ANY(\(PostgresTextArray(awkward))) AS hit, 'nope' = ANY(\(PostgresTextArray(awkward))) AS miss")
            #expect(try matched[0].decode(Bool.self, "hit"))
            #expect(try !matched[0].decode(Bool.self, "miss"))
            let empty = try await pool.query("SELECT cardinality(\(PostgresTextArray([]))) AS n, 'x' = ANY(\(PostgresTextArray([]))) AS hit")
            #expect(try empty[0].decode(Int32.self, "n") == 0)
            #expect(try !empty[0].decode(Bool.self, "hit"))
            let withNulls = try await pool.query("SELECT v FROM unnest(\(PostgresTextArray(["a", nil, "", nil]))) WITH ORDINALITY AS u(v, n) ORDER BY n")
            #expect(try withNulls.map { try $0.decode(String?.self, "v") } == ["a", nil, "", nil])
        }
    }
}
