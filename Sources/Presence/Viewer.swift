import Foundation

/// One tab of one user on one issue: the row a heartbeat keeps alive.
public struct ViewerKey: Sendable, Hashable {
    public var tenant: String
    public var issueID: String
    public var accountID: String
    public var tabID: String

    public init(tenant: String, issueID: String, accountID: String, tabID: String) {
        self.tenant = tenant
        self.issueID = issueID
        self.accountID = accountID
        self.tabID = tabID
    }
}

/// A person currently looking at an issue (all their tabs together).
public struct Viewer: Sendable, Equatable, Codable {
    public var accountID: String
    /// When they first opened the issue in a tab still open.
    public var since: Date
    public var lastSeen: Date

    public init(accountID: String, since: Date, lastSeen: Date) {
        self.accountID = accountID
        self.since = since
        self.lastSeen = lastSeen
    }
}

extension Array where Element == Viewer {
    /// The current user first, then everyone else by when they arrived.
    public func orderedFor(currentUser accountID: String) -> [Viewer] {
        sorted { left, right in
            if left.accountID == accountID { return right.accountID != accountID }
            if right.accountID == accountID { return false }
            return (left.since, left.accountID) < (right.since, right.accountID)
        }
    }
}
