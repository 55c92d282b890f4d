import Foundation

/// Base64url without padding (RFC 4648 §5, as RFC 7515 uses it): JWTs and our viewer tickets.
/// Table-driven over bytes: heartbeats encode and decode on every request, and Foundation's
/// string-based route showed up in their CPU profile.
public enum Base64URL {
    @usableFromInline static let alphabet: [UInt8] = Array("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_".utf8)
    @usableFromInline static let invalid: UInt8 = 0xFF
    @usableFromInline static let values: [UInt8] = {
        var table = [UInt8](repeating: invalid, count: 256)
        for (value, character) in alphabet.enumerated() { table[Int(character)] = UInt8(value) }
        return table
    }()

    // Inlinable so each caller gets a version specialized for its byte collection: the generic
    // one, iterating through protocol witnesses, cost more than the HMAC next to it.
    @inlinable
    public static func encode<Bytes: Collection<UInt8>>(_ bytes: Bytes) -> [UInt8] {
        var output: [UInt8] = []
        output.reserveCapacity((bytes.count * 4 + 2) / 3)
        var iterator = bytes.makeIterator()
        while let first = iterator.next() {
            let second = iterator.next()
            let third = iterator.next()
            let group = UInt32(first) << 16 | UInt32(second ?? 0) << 8 | UInt32(third ?? 0)
            output.append(alphabet[Int(group >> 18 & 63)])
            output.append(alphabet[Int(group >> 12 & 63)])
            if second != nil { output.append(alphabet[Int(group >> 6 & 63)]) }
            if third != nil { output.append(alphabet[Int(group & 63)]) }
        }
        return output
    }

    @inlinable
    public static func encodeToString<Bytes: Collection<UInt8>>(_ bytes: Bytes) -> String {
        String(decoding: encode(bytes), as: UTF8.self)
    }

    /// Nil for anything but canonical unpadded base64url (`+`, `/`, `=`, whitespace, a length
    /// or trailing bits no encoding produces).
    @inlinable
    public static func decode<Text: Collection<UInt8>>(_ text: Text) -> [UInt8]? {
        guard text.count % 4 != 1 else { return nil }
        var output: [UInt8] = []
        output.reserveCapacity(text.count * 3 / 4)
        var group: UInt32 = 0
        var count = 0
        // The table once, not per character: each read of a static goes through its lazy
        // initialiser's check (1.3% of a Forge heartbeat's profile).
        let decoded: Bool = values.withUnsafeBufferPointer { table in
            for character in text {
                let value = table[Int(character)]
                guard value != invalid else { return false }
                group = group << 6 | UInt32(value)
                count += 1
                if count == 4 {
                    output.append(UInt8(group >> 16 & 0xFF))
                    output.append(UInt8(group >> 8 & 0xFF))
                    output.append(UInt8(group & 0xFF))
                    group = 0
                    count = 0
                }
            }
            return true
        }
        guard decoded else { return nil }
        // Leftover bits must be zero, so each byte string has exactly one encoding.
        switch count {
        case 2:
            guard group & 0xF == 0 else { return nil }
            output.append(UInt8(group >> 4 & 0xFF))
        case 3:
            guard group & 0x3 == 0 else { return nil }
            output.append(UInt8(group >> 10 & 0xFF))
            output.append(UInt8(group >> 2 & 0xFF))
        default:
            break
        }
        return output
    }
}

extension Data {
    public init?(base64URL text: Substring) {
        guard let bytes = Base64URL.decode(text.utf8) else { return nil }
        self.init(bytes)
    }

    public func base64URLEncodedString() -> String {
        Base64URL.encodeToString(self)
    }
}
