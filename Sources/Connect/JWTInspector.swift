import TextCoding
import Foundation

/// What `whoslooking jwt …` prints: the tools for the first pain of every Connect developer,
/// a qsh that does not match.
public enum JWTInspector {
    public struct Failure: Error, CustomStringConvertible {
        public var description: String
    }

    /// `canonical: …` and `qsh: …` for a request to `url`, relative to `baseURL`'s path.
    public static func qsh(method: String, url: String, baseURL: String?) throws -> String {
        let request = try canonicalRequest(method: method, url: url, baseURL: baseURL)
        return "canonical: \(request.canonical)\nqsh: \(request.qsh)"
    }

    /// Header and claims as indented JSON, without checking anything.
    public static func decode(_ token: String) throws -> String {
        let parts = token.split(separator: ".", omittingEmptySubsequences: false)
        guard parts.count == 3 else { throw Failure(description: "a JWT has three dot-separated parts, this has \(parts.count)") }
        func object(_ part: Substring, _ name: String) throws -> Any {
            guard let data = Data(base64URL: part), let object = try? JSONSerialization.jsonObject(with: data) else {
                throw Failure(description: "the \(name) is not base64url JSON")
            }
            return object
        }
        let both: [String: Any] = ["header": try object(parts[0], "header"), "claims": try object(parts[1], "claims")]
        let formatted = try JSONSerialization.data(withJSONObject: both, options: [.prettyPrinted, .sortedKeys, .withoutEscapingSlashes])
        return String(decoding: formatted, as: UTF8.self)
    }

    /// One line per check, `pass` or `FAIL`, for an HS256 token from a Connect host.
    public static func verify(
        _ token: String, secret: String, method: String, url: String, baseURL: String?,
        leeway: TimeInterval = 30, now: Date = Date()
    ) throws -> (allPassed: Bool, report: String) {
        var lines: [String] = []
        var allPassed = true
        func check(_ name: String, _ passed: Bool, _ detail: String = "") {
            allPassed = allPassed && passed
            lines.append("\(passed ? "pass" : "FAIL")  \(name)\(detail.isEmpty ? "" : ": " + detail)")
        }
        let unverified: UnverifiedToken
        do {
            unverified = try UnverifiedToken(token)
        } catch {
            check("structure", false, "not a JWT with JSON header and claims")
            return (false, lines.joined(separator: "\n"))
        }
        check("structure", true)
        check("algorithm HS256", unverified.header.alg == "HS256", "header says \(unverified.header.alg ?? "nothing")")
        check("signature", (try? HS256.verify(token, secret: secret)) != nil)
        let verifier = ConnectTokenVerifier(basePath: try basePath(baseURL), leeway: leeway, now: { now })
        let claims = unverified.claims
        do {
            try verifier.checkTimes(claims)
            check("exp/iat", true, "expires \(Date(timeIntervalSince1970: claims.exp ?? 0))")
        } catch {
            check("exp/iat", false, "\(error)")
        }
        let request = try canonicalRequest(method: method, url: url, baseURL: baseURL)
        switch claims.qsh {
        case nil:
            check("qsh", false, "no qsh claim")
        case ConnectClaims.contextQSH?:
            check("qsh", true, "context token: valid only on routes that accept context tokens")
        case let qsh?:
            check("qsh", qsh == request.qsh, qsh == request.qsh ? "" : "token has \(qsh), request \(request.canonical) hashes to \(request.qsh)")
        }
        lines.append("issuer: \(claims.iss)" + (claims.sub.map { ", subject: \($0)" } ?? ""))
        return (allPassed, lines.joined(separator: "\n"))
    }

    static func canonicalRequest(method: String, url: String, baseURL: String?) throws -> CanonicalRequest {
        guard let components = URLComponents(string: url) else { throw Failure(description: "not a URL: \(url)") }
        return CanonicalRequest(
            method: method,
            path: components.percentEncodedPath,
            query: components.percentEncodedQuery ?? "",
            basePath: try basePath(baseURL)
        )
    }

    static func basePath(_ baseURL: String?) throws -> String {
        guard let baseURL else { return "" }
        guard let components = URLComponents(string: baseURL) else { throw Failure(description: "not a URL: \(baseURL)") }
        return components.percentEncodedPath
    }
}
