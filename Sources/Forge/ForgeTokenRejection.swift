/// Why a Forge Invocation Token was refused. `reason` names the failed check for the client
/// (never an expected value); Forge reserves 401 for exactly these.
public enum ForgeTokenRejection: Error, Equatable, Sendable, CustomStringConvertible {
    case missing
    case malformed
    /// The header's `alg` is never echoed: it is the caller's text.
    case algorithmNotAllowed
    case missingKeyID
    case unknownKeyID
    /// The JWKS could not be fetched: not the caller's fault (answered 503).
    case keyServerUnavailable
    case badSignature
    case malformedClaims
    case wrongIssuer
    case wrongAudience
    case wrongApp
    case expired
    case notYetValid
    case missingInstallation
    case badInstallation
    case missingModule
    case wrongEnvironment
    case missingAPIBaseURL
    case badICLabel

    public var reason: String {
        switch self {
        case .missing: "missing Forge invocation token"
        case .malformed: "malformed Forge invocation token"
        case .algorithmNotAllowed: "token algorithm not allowed"
        case .missingKeyID: "token has no kid"
        case .unknownKeyID: "unknown token kid"
        case .keyServerUnavailable: "cannot fetch Forge's signing keys"
        case .badSignature: "bad token signature"
        case .malformedClaims: "token claims are not a Forge invocation"
        case .wrongIssuer: "token issuer is not Forge"
        case .wrongAudience: "token audience is not this app"
        case .wrongApp: "token app is not this app"
        case .expired: "token expired"
        case .notYetValid: "token not yet valid"
        case .missingInstallation: "token names no installation"
        case .badInstallation: "token installation is not an installation ARI"
        case .missingModule: "token names no module"
        case .wrongEnvironment: "token environment is not this deployment's"
        case .missingAPIBaseURL: "token names no apiBaseUrl"
        case .badICLabel: "token icLabel is malformed"
        }
    }

    public var description: String { reason }
}
