import Foundation

/// A user as Jira's REST API returns one (`/rest/api/3/user`, and the `values` of `/user/bulk`).
public struct JiraUser: Decodable, Sendable, Equatable {
    public var accountId: String
    public var accountType: String?
    public var displayName: String?
    public var active: Bool?
    public var avatarUrls: [String: String]?

    public init(accountId: String, accountType: String?, displayName: String?, active: Bool?, avatarUrls: [String: String]?) {
        self.accountId = accountId
        self.accountType = accountType
        self.displayName = displayName
        self.active = active
        self.avatarUrls = avatarUrls
    }

    /// People are `atlassian` (or `customer`) accounts; apps and `unknown` are never shown as people.
    public var isPerson: Bool {
        accountId != "unknown" && (accountType == nil || accountType == "atlassian" || accountType == "customer")
    }

    /// The avatar for a 24 px circle on retina screens; nil (a hidden profile) shows our default.
    public var avatarURL: String? {
        for size in ["48x48", "32x32", "24x24", "16x16"] {
            if let url = avatarUrls?[size], url.hasPrefix("https://") || url.hasPrefix("http://") { return url }
        }
        return nil
    }

    /// A page of `/rest/api/3/user/bulk` (Jira's `PageBeanUser`).
    struct Page: Decodable {
        var values: [JiraUser]
        var startAt: Int? = nil
        var maxResults: Int? = nil
        var total: Int? = nil
        var isLast: Bool? = nil

        /// Whether no page follows this one (asked from `startAt`): `isLast`, else `total`; neither
        /// says nothing, and the next page (empty at the end) tells.
        func isLast(startAt: Int) -> Bool {
            if let isLast { return isLast }
            if let total { return startAt + values.count >= total }
            return false
        }
    }
}

/// The account id Jira uses for a user it will not identify: never stored or shown as a person.
public let unknownAccountID = "unknown"
