import Tenants
import Connect

/// Who a verified Connect JWT speaks for.
public struct ConnectIdentity: Sendable {
    public var tenant: Tenant
    /// The user's Atlassian account id; nil for an anonymous visitor.
    public var accountID: String?
    public var claims: ConnectClaims
    /// The JWT as Jira sent it (the panel's tab is derived from it).
    public var token: String
}
