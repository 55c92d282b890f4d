import Foundation

/// The JSON body of `/installed` and `/uninstalled`. Unknown fields are ignored.
struct LifecyclePayload: Decodable {
    var key: String?
    var clientKey: String?
    var sharedSecret: String?
    var baseUrl: String?
    var displayUrl: String?
    var productType: String?
    var description: String?
    var eventType: String?
    var oauthClientId: String?
    var installationId: String?

    /// A short reason for a 400, or nil when the payload is usable for `event`.
    func problem(for event: String, appKey: String) -> String? {
        guard let key, !key.isEmpty else { return "missing key" }
        guard key == appKey else { return "key is not this app's" }
        guard let clientKey, !clientKey.isEmpty else { return "missing clientKey" }
        guard clientKey.count <= 255 else { return "clientKey too long" }
        // Forge installation ids have this form; the tenants table tells the doors apart by it.
        guard !clientKey.hasPrefix("ari:cloud:ecosystem::installation/") else { return "clientKey is a Forge installation id" }
        guard let baseUrl, !baseUrl.isEmpty else { return "missing baseUrl" }
        guard Self.acceptableSiteURL(baseUrl) != nil else { return "baseUrl must be an https URL" }
        if let displayUrl, !displayUrl.isEmpty, Self.acceptableSiteURL(displayUrl) == nil { return "displayUrl must be an https URL" }
        if let eventType, eventType != event { return "eventType is not \(event)" }
        if event == "installed" {
            guard let sharedSecret, !sharedSecret.isEmpty else { return "missing sharedSecret" }
            guard sharedSecret.utf8.count <= 512 else { return "sharedSecret too long" }
        }
        for value in [productType, description, oauthClientId, installationId] {
            if let value, value.utf8.count > 2048 { return "field too long" }
        }
        return nil
    }

    /// https, or http on a loopback host (a local Jira stand-in).
    static func acceptableSiteURL(_ text: String) -> URL? {
        guard let components = URLComponents(string: text), let host = components.host, !host.isEmpty,
            components.query == nil, components.fragment == nil, components.user == nil
        else { return nil }
        switch components.scheme?.lowercased() {
        case "https": return components.url
        case "http" where ["localhost", "127.0.0.1", "::1", "[::1]"].contains(host.lowercased()): return components.url
        default: return nil
        }
    }
}
