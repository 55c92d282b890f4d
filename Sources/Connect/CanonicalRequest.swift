import Foundation
import Crypto
import TextCoding

/// The canonical form of a request that a Connect JWT's `qsh` claim hashes:
/// `METHOD&PATH&QUERY`, exactly as Atlassian's libraries build it.
public struct CanonicalRequest: Sendable, Equatable {
    public let method: String
    public let path: String
    public let query: String

    /// - Parameters:
    ///   - method: the HTTP method, any case.
    ///   - path: the path as on the wire (still percent-encoded).
    ///   - query: the raw query string without `?` (the `jwt` parameter is ignored).
    ///   - basePath: the path of the app's (or, outbound, the tenant's) baseUrl; the
    ///     canonical path is relative to it.
    public init(method: String, path: String, query: String, basePath: String = "") {
        self.method = method.uppercased()
        self.path = Self.canonicalPath(path, basePath: basePath)
        self.query = Self.canonicalQuery(query)
    }

    /// Splits a request target such as `/panel?issueKey=A-1&jwt=…` into path and query.
    public init(method: String, target: String, basePath: String = "") {
        let withoutFragment = target.split(separator: "#", maxSplits: 1, omittingEmptySubsequences: false).first.map(String.init) ?? target
        let parts = withoutFragment.split(separator: "?", maxSplits: 1, omittingEmptySubsequences: false)
        self.init(method: method, path: String(parts[0]), query: parts.count > 1 ? String(parts[1]) : "", basePath: basePath)
    }

    public var canonical: String { "\(method)&\(path)&\(query)" }

    /// Lower-case hex SHA-256 of the canonical request.
    public var qsh: String {
        SHA256.hash(data: Array(canonical.utf8)).map { byte in
            let hex = String(byte, radix: 16)
            return byte < 16 ? "0" + hex : hex
        }.joined()
    }

    static func canonicalPath(_ rawPath: String, basePath: String) -> String {
        var path = rawPath.isEmpty ? "/" : rawPath
        var base = basePath
        while base.hasSuffix("/") { base.removeLast() }
        if !base.isEmpty, path == base || path.hasPrefix(base + "/") {
            path.removeFirst(base.count)
        }
        if path.isEmpty { path = "/" }
        if path.count > 1, path.hasSuffix("/") { path.removeLast() }
        if !path.hasPrefix("/") { path = "/" + path }
        return path.replacingOccurrences(of: "&", with: "%26")
    }

    static func canonicalQuery(_ rawQuery: String) -> String {
        // Encoded name -> decoded values, in order of appearance.
        var parameters: [String: [String]] = [:]
        for pair in rawQuery.split(separator: "&", omittingEmptySubsequences: true) {
            let nameAndValue = pair.split(separator: "=", maxSplits: 1, omittingEmptySubsequences: false)
            let name = formDecode(nameAndValue[0])
            guard name != "jwt" else { continue }
            let value = nameAndValue.count > 1 ? formDecode(nameAndValue[1]) : ""
            parameters[rfc3986Encode(name), default: []].append(value)
        }
        return parameters.keys
            .sorted { $0.utf8.lexicographicallyPrecedes($1.utf8) }
            .map { name in
                let values = parameters[name]!
                    .sorted { $0.utf8.lexicographicallyPrecedes($1.utf8) }
                    .map(rfc3986Encode)
                return name + "=" + values.joined(separator: ",")
            }
            .joined(separator: "&")
    }

    /// application/x-www-form-urlencoded decoding: `+` is a space, `%XX` a byte; a stray `%` stays.
    static func formDecode(_ text: Substring) -> String {
        var bytes: [UInt8] = []
        bytes.reserveCapacity(text.utf8.count)
        var iterator = Array(text.utf8)[...]
        while let byte = iterator.popFirst() {
            switch byte {
            case UInt8(ascii: "+"):
                bytes.append(UInt8(ascii: " "))
            case UInt8(ascii: "%"):
                if iterator.count >= 2, let high = ASCII.hexValue(iterator[iterator.startIndex]),
                    let low = ASCII.hexValue(iterator[iterator.startIndex + 1])
                {
                    bytes.append(high << 4 | low)
                    iterator.removeFirst(2)
                } else {
                    bytes.append(byte)
                }
            default:
                bytes.append(byte)
            }
        }
        return String(decoding: bytes, as: UTF8.self)
    }

    /// RFC 3986 percent-encoding: unreserved characters stay, every other UTF-8 byte is `%XX`.
    public static func rfc3986Encode(_ text: String) -> String {
        var encoded = ""
        encoded.reserveCapacity(text.utf8.count)
        for byte in text.utf8 {
            switch byte {
            case UInt8(ascii: "A")...UInt8(ascii: "Z"), UInt8(ascii: "a")...UInt8(ascii: "z"),
                UInt8(ascii: "0")...UInt8(ascii: "9"), UInt8(ascii: "-"), UInt8(ascii: "."),
                UInt8(ascii: "_"), UInt8(ascii: "~"):
                encoded.unicodeScalars.append(Unicode.Scalar(byte))
            default:
                encoded += "%" + String(byte >> 4, radix: 16).uppercased() + String(byte & 0xF, radix: 16).uppercased()
            }
        }
        return encoded
    }
}
