import Foundation

/// A Jira site that installed the app.
public struct Tenant: Sendable, Equatable {
    public enum State: String, Sendable { case installed, uninstalled }

    public var clientKey: String
    public var baseURL: URL
    public var displayURL: URL?
    public var productType: String
    public var description: String?
    public var oauthClientID: String?
    public var installationID: String?
    public var state: State
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
}
