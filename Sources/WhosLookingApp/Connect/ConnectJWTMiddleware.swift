import Tenants
import Foundation
import Connect
import Hummingbird
import Logging

/// Authenticates a request by its tenant-signed Connect JWT (HS256) and puts the
/// `ConnectIdentity` in the context. Refusals are 401 with the failed check's name.
struct ConnectJWTMiddleware: RouterMiddleware {
    typealias Context = AppRequestContext

    let verifier: ConnectTokenVerifier
    let tenants: TenantRepository
    let policy: ConnectTokenVerifier.QSHPolicy

    func handle(_ request: Request, context: Context, next: (Request, Context) async throws -> Response) async throws -> Response {
        var context = context
        do {
            let token = try Self.token(in: request)
            var tenant: Tenant?
            let claims = try await verifier.verifyHS256(
                token, method: request.method.rawValue, target: request.uri.description, policy: policy
            ) { issuer in
                guard let found = try await tenants.installedTenantWithSecret(clientKey: issuer) else { return nil }
                tenant = found.tenant
                return found.sharedSecret
            }
            guard let tenant else { throw TokenRejection.unknownIssuer }
            let accountID = claims.sub.flatMap { $0.isEmpty ? nil : $0 }
            // Signed by the tenant, but still a value from outside on its way to the database: an
            // account id with a NUL would be a 500 there, not a refusal.
            if let accountID, !UnverifiedToken.isPlausibleIdentifier(accountID) { throw TokenRejection.invalidSubject }
            context.notes.tenant = tenant.clientKey
            context.identity = ConnectIdentity(tenant: tenant, accountID: accountID, claims: claims, token: token)
        } catch let rejection as TokenRejection {
            // The reason quotes nothing unverified unescaped (`TokenRejection.printable`); the path
            // is as sent, and the log handlers escape control characters in every value.
            context.logger.info("JWT refused", metadata: ["reason": "\(rejection.reason)", "path": "\(request.uri.path)"])
            throw HTTPError(.unauthorized, message: rejection.reason)
        }
        return try await next(request, context)
    }

    /// From the `jwt` query parameter or `Authorization: JWT …`; two different ones are refused.
    static func token(in request: Request) throws(TokenRejection) -> String {
        let fromQuery = request.uri.queryParameters.get("jwt")
        var fromHeader: String?
        if let authorization = request.headers[.authorization] {
            let parts = authorization.split(separator: " ", maxSplits: 1)
            if parts.count == 2, parts[0].caseInsensitiveCompare("JWT") == .orderedSame {
                fromHeader = String(parts[1]).trimmingCharacters(in: .whitespaces)
            }
        }
        switch (fromQuery, fromHeader) {
        case let (query?, header?) where query != header: throw .twoDifferentTokens
        case let (query?, _): return query
        case let (nil, header?): return header
        case (nil, nil): throw .missing
        }
    }
}
