import Crypto
import Foundation
import JWTKit

/// Verifies Connect JWTs: HS256 from a tenant (iframes, webhooks, our own browser code) and
/// RS256 from Atlassian (signed lifecycle callbacks).
public struct ConnectTokenVerifier: Sendable {
    /// What a route accepts as `qsh`.
    public enum QSHPolicy: Sendable {
        /// Iframe entry points and lifecycle callbacks: the request's own qsh.
        case exactRequest
        /// Routes for our own browser code: the request's qsh or a context token.
        case requestOrContextToken
    }

    /// The app's baseUrl path, which canonical paths are relative to.
    public let basePath: String
    /// Clock leeway for `exp` and `iat`.
    public let leeway: TimeInterval
    private let now: @Sendable () -> Date

    public init(basePath: String, leeway: TimeInterval = 30, now: @escaping @Sendable () -> Date = Date.init) {
        self.basePath = basePath
        self.leeway = leeway
        self.now = now
    }

    /// Verifies a tenant-signed HS256 token; `secretForIssuer` answers the tenant's shared secret.
    public func verifyHS256(
        _ token: String,
        method: String,
        target: String,
        policy: QSHPolicy,
        secretForIssuer: (String) async throws -> String?
    ) async throws -> ConnectClaims {
        let unverified = try UnverifiedToken(token)
        guard unverified.header.alg == "HS256" else { throw TokenRejection.algorithmNotAllowed }
        guard let secret = try await secretForIssuer(unverified.claims.iss) else { throw TokenRejection.unknownIssuer }
        let claims = try HS256.verify(token, secret: secret)
        try checkTimes(claims)
        try checkQSH(claims, method: method, target: target, policy: policy)
        return claims
    }

    /// Verifies an Atlassian-signed RS256 lifecycle token.
    public func verifyRS256(
        _ token: String,
        method: String,
        target: String,
        appBaseURL: String,
        clientKey: String,
        keys provider: InstallKeyProvider
    ) async throws -> ConnectClaims {
        let unverified = try UnverifiedToken(token)
        guard unverified.header.alg == "RS256" else { throw TokenRejection.algorithmNotAllowed }
        guard let kid = unverified.header.kid, !kid.isEmpty else { throw TokenRejection.missingKeyID }
        let publicKey = try await provider.publicKey(kid: kid)
        let keys = JWTKeyCollection()
        await keys.add(rsa: publicKey, digestAlgorithm: .sha256, kid: JWKIdentifier(string: kid))
        let claims = try await verifySignature(token, keys: keys)
        try checkTimes(claims)
        guard let audience = claims.aud?.values.first, Self.sameURL(audience, appBaseURL) else {
            throw TokenRejection.audienceMismatch
        }
        guard claims.iss == clientKey else { throw TokenRejection.issuerIsNotClientKey }
        try checkQSH(claims, method: method, target: target, policy: .exactRequest)
        return claims
    }

    /// RS256 signature only.
    func verifySignature(_ token: String, keys: JWTKeyCollection) async throws -> ConnectClaims {
        do {
            return try await keys.verify(token, as: ConnectClaims.self)
        } catch {
            throw TokenRejection.badSignature
        }
    }

    public func checkTimes(_ claims: ConnectClaims) throws(TokenRejection) {
        let current = now().timeIntervalSince1970
        guard let exp = claims.exp else { throw .missingExpiry }
        guard current <= exp + leeway else { throw .expired }
        if let iat = claims.iat, iat > current + leeway { throw .issuedInTheFuture }
    }

    public func checkQSH(_ claims: ConnectClaims, method: String, target: String, policy: QSHPolicy) throws(TokenRejection) {
        guard let qsh = claims.qsh else { throw .missingQSH }
        if qsh == ConnectClaims.contextQSH {
            guard case .requestOrContextToken = policy else { throw .contextTokenNotAllowed }
            return
        }
        let expected = CanonicalRequest(method: method, target: target, basePath: basePath).qsh
        // Constant time: the qsh is no secret, but comparing that way costs nothing.
        guard qsh.utf8.count == expected.utf8.count,
            zip(qsh.utf8, expected.utf8).reduce(0, { $0 | ($1.0 ^ $1.1) }) == 0
        else { throw .qshMismatch }
    }

    /// Equal, ignoring one trailing slash on either side.
    static func sameURL(_ left: String, _ right: String) -> Bool {
        func trimmed(_ url: String) -> Substring { url.hasSuffix("/") ? url.dropLast() : Substring(url) }
        return trimmed(left) == trimmed(right)
    }
}
