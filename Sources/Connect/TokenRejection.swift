/// Why a token was refused. `reason` names the failed check for the client (never the expected
/// value); `description` may say more, for logs.
///
/// A reason may quote a value from the token (the `alg` of its header), which nobody has verified:
/// it goes to the client and into logs, so it is quoted only as `printable(_:)` makes it, with
/// control characters escaped and cut short.
public enum TokenRejection: Error, Equatable, Sendable, CustomStringConvertible {
    case missing
    case twoDifferentTokens
    case malformed
    /// The header's `alg` is never echoed, not even escaped: it is the attacker's text.
    case algorithmNotAllowed
    case missingKeyID
    case unknownKeyID
    case keyServerUnavailable
    /// `iss` is empty, longer than a client key can be, or holds control characters: refused
    /// before it is looked up (PostgreSQL text cannot even hold a NUL).
    case invalidIssuer
    /// `sub` (of a verified token) cannot be an account id: control characters or too long.
    case invalidSubject
    case unknownIssuer
    case badSignature
    case missingExpiry
    case expired
    case issuedInTheFuture
    case missingQSH
    case contextTokenNotAllowed
    case qshMismatch
    case audienceMismatch
    case issuerIsNotClientKey

    public var reason: String {
        switch self {
        case .missing: "missing JWT"
        case .twoDifferentTokens: "two different JWTs in one request"
        case .malformed: "malformed JWT"
        case .algorithmNotAllowed: "JWT algorithm not allowed here"
        case .missingKeyID: "JWT has no kid"
        case .unknownKeyID: "unknown JWT kid"
        case .keyServerUnavailable: "cannot fetch the install key"
        case .invalidIssuer: "JWT iss is not a client key"
        case .invalidSubject: "JWT sub is not an account id"
        case .unknownIssuer: "unknown JWT issuer"
        case .badSignature: "bad JWT signature"
        case .missingExpiry: "JWT has no exp"
        case .expired: "JWT expired"
        case .issuedInTheFuture: "JWT issued in the future"
        case .missingQSH: "JWT has no qsh"
        case .contextTokenNotAllowed: "context JWT not allowed here"
        case .qshMismatch: "JWT qsh does not match the request"
        case .audienceMismatch: "JWT audience is not this app"
        case .issuerIsNotClientKey: "JWT issuer does not match clientKey"
        }
    }

    public var description: String { reason }

    /// Most characters of an unverified value a reason quotes.
    public static let quotedValueLimit = 32

    /// An unverified value as a reason may quote it: printable ASCII kept, everything else
    /// (control characters such as a newline that would start a forged log line, and any
    /// non-ASCII scalar) written as `\u{…}`, backslash doubled, and cut after
    /// `quotedValueLimit` characters with `…`.
    public static func printable(_ value: String, limit: Int = quotedValueLimit) -> String {
        var result = ""
        var count = 0
        for scalar in value.unicodeScalars {
            guard count < limit else {
                result += "…"
                break
            }
            switch scalar.value {
            case 0x5C: result += "\\\\"
            case 0x20...0x7E: result.unicodeScalars.append(scalar)
            default: result += "\\u{\(String(scalar.value, radix: 16))}"
            }
            count += 1
        }
        return result
    }

    /// Whether `value` is free of control characters (C0, DEL, C1, and the Unicode line and
    /// paragraph separators), the test every unverified identifier passes before it is used.
    public static func hasNoControlCharacters(_ value: String) -> Bool {
        value.unicodeScalars.allSatisfy { scalar in
            !(scalar.value < 0x20 || (0x7F...0x9F).contains(scalar.value) || scalar.value == 0x2028 || scalar.value == 0x2029)
        }
    }
}
