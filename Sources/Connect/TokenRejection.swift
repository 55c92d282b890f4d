/// Why a token was refused. `reason` names the failed check for the client (never the expected
/// value); `description` may say more, for logs.
public enum TokenRejection: Error, Equatable, Sendable, CustomStringConvertible {
    case missing
    case twoDifferentTokens
    case malformed
    case algorithmNotAllowed(String)
    case missingKeyID
    case unknownKeyID
    case keyServerUnavailable
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
        case .algorithmNotAllowed(let alg): "JWT algorithm \(alg) not allowed here"
        case .missingKeyID: "JWT has no kid"
        case .unknownKeyID: "unknown JWT kid"
        case .keyServerUnavailable: "cannot fetch the install key"
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
}
