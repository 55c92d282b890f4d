import Foundation

/// A Jira site that installed the app, through either front door.
public struct Tenant: Sendable, Equatable {
    public enum State: String, Sendable { case installed, uninstalled }
    /// Which front door: a Connect site (shared secret) or a Forge installation (invocation tokens).
    public enum Kind: String, Sendable { case connect, forge }

    /// Connect's clientKey, or the Forge installationId.
    public var clientKey: String
    public var kind: Kind
    /// Where Jira's REST API is called: the Connect baseUrl, or the Forge apiBaseUrl.
    public var baseURL: URL
    /// Forge: the site's cloudId, the same across reinstalls.
    public var cloudID: String?
    /// Forge: the site people browse, once a UI call has said.
    public var siteURL: URL?
    public var displayURL: URL?
    public var productType: String
    public var description: String?
    public var oauthClientID: String?
    public var installationID: String?
    public var state: State
    /// Connect: which install of the site this is (1, 2, …; `0007_tenant_generation.sql`).
    public var generation: Int64 = 1
    public var installedAt: Date
    public var updatedAt: Date
    public var uninstalledAt: Date?
}

/// What a verified install says about the tenant, with its new shared secret.
public struct TenantInstallation: Sendable {
    public var clientKey: String
    public var baseURL: URL
    public var displayURL: URL?
    public var productType: String
    public var description: String?
    public var oauthClientID: String?
    public var installationID: String?
    public var sharedSecret: String

    public init(
        clientKey: String, baseURL: URL, displayURL: URL? = nil, productType: String = "jira", description: String? = nil,
        oauthClientID: String? = nil, installationID: String? = nil, sharedSecret: String
    ) {
        self.clientKey = clientKey
        self.baseURL = baseURL
        self.displayURL = displayURL
        self.productType = productType
        self.description = description
        self.oauthClientID = oauthClientID
        self.installationID = installationID
        self.sharedSecret = sharedSecret
    }
}

/// What a verified Forge Invocation Token says about the installation it comes from.
public struct ForgeInstallation: Sendable, Equatable {
    /// `app.installationId`.
    public var installationID: String
    public var cloudID: String?
    /// `app.apiBaseUrl`: where Jira's REST API is called for this installation.
    public var apiBaseURL: URL
    /// `context.siteUrl`, present on calls from the UI only.
    public var siteURL: URL?

    public init(installationID: String, cloudID: String?, apiBaseURL: URL, siteURL: URL? = nil) {
        self.installationID = installationID
        self.cloudID = cloudID
        self.apiBaseURL = apiBaseURL
        self.siteURL = siteURL
    }
}
