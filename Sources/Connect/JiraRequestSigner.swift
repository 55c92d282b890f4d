import Foundation

/// Signs requests the app makes to a tenant's Jira: HS256 with the tenant's shared secret,
/// `iss` = app key, `exp = iat + 180 s`, `qsh` over the method, the path relative to the
/// tenant's baseUrl path, and the query.
public struct JiraRequestSigner: Sendable {
    public let appKey: String
    public var lifetime: TimeInterval = 180

    public init(appKey: String) {
        self.appKey = appKey
    }

    /// The `Authorization` header value for `method` on `url` (absolute, under `tenantBaseURL`).
    public func authorization(method: String, url: URL, tenantBaseURL: URL, sharedSecret: String, now: Date = Date()) throws -> String {
        let components = URLComponents(url: url, resolvingAgainstBaseURL: false)
        let canonical = CanonicalRequest(
            method: method,
            path: components?.percentEncodedPath ?? url.path,
            query: components?.percentEncodedQuery ?? "",
            basePath: URLComponents(url: tenantBaseURL, resolvingAgainstBaseURL: false)?.percentEncodedPath ?? ""
        )
        let issuedAt = now.timeIntervalSince1970.rounded(.down)
        let claims = ConnectClaims(iss: appKey, iat: issuedAt, exp: issuedAt + lifetime, qsh: canonical.qsh)
        return "JWT " + (try HS256.sign(claims, secret: sharedSecret))
    }
}
