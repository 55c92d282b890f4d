import Foundation
import JWTKit

/// The product's side of `JiraRequestSigner`: what Jira checks on a request an app signs.
/// HS256 with the install's shared secret (verified by jwt-kit, independently of our signer),
/// `iss` = the app key, the qsh of this very request, not expired. Both local Jira stand-ins
/// (`whoslooking devhost` and the tests') use it.
public enum AppRequestCheck {
    public enum Failure: Error, CustomStringConvertible, Equatable {
        case noToken
        case badSignature
        case claims(issuer: String, qshMatches: Bool, fresh: Bool)

        public var description: String {
            switch self {
            case .noToken: "no JWT"
            case .badSignature: "bad signature"
            case .claims(let issuer, let qshMatches, let fresh): "claims iss=\(issuer) qsh matches=\(qshMatches) fresh=\(fresh)"
            }
        }
    }

    /// `basePath`: the part of the request path before the product's own paths (a site
    /// prefix in a stand-in serving several sites), left out of the qsh as Jira does.
    public static func verify(
        authorization: String?, method: String, target: String, basePath: String = "",
        sharedSecret: String, appKey: String, now: Date = Date()
    ) async -> Result<ConnectClaims, Failure> {
        guard let authorization, authorization.hasPrefix("JWT ") else { return .failure(.noToken) }
        let keys = JWTKeyCollection()
        await keys.add(hmac: HMACKey(from: sharedSecret), digestAlgorithm: .sha256)
        guard let claims = try? await keys.verify(String(authorization.dropFirst(4)), as: ConnectClaims.self) else {
            return .failure(.badSignature)
        }
        let qshMatches = claims.qsh == CanonicalRequest(method: method, target: target, basePath: basePath).qsh
        let fresh = (claims.exp ?? 0) >= now.timeIntervalSince1970
        guard claims.iss == appKey, qshMatches, fresh else {
            return .failure(.claims(issuer: claims.iss, qshMatches: qshMatches, fresh: fresh))
        }
        return .success(claims)
    }
}
