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

/// A person currently looking at an issue (all their tabs together), with what the user
/// cache knows of them.
public struct Viewer: Sendable, Equatable {
    /// What the cache holds for the account (`user_details.status`).
    public enum Details: Sendable, Equatable {
        case unknown
        case found(displayName: String?, avatarURL: String?)
        case missing
        /// An app or other non-human account: never listed as a person.
        case notPerson
    }

    public var accountID: String
    /// When they first opened the issue in a tab still open.
    public var since: Date
    public var lastSeen: Date
    /// Every tab of theirs on the issue is hidden.
    public var isAway: Bool
    public var details: Details
    /// The cached details are past their time: still shown, but to be fetched again.
    public var detailsExpired: Bool

    public init(
        accountID: String, since: Date, lastSeen: Date, isAway: Bool = false, details: Details = .unknown, detailsExpired: Bool = false
    ) {
        self.accountID = accountID
        self.since = since
        self.lastSeen = lastSeen
        self.isAway = isAway
        self.details = details
        self.detailsExpired = detailsExpired
    }

    /// Unknown or expired: ask Jira (in the background).
    public var needsDetails: Bool { details == .unknown || detailsExpired }

    public var isPerson: Bool { details != .notPerson }
}

extension Array where Element == Viewer {
    /// What a person's panel lists: people only, them first.
    public func shown(to accountID: String) -> [Viewer] {
        filter(\.isPerson).orderedFor(currentUser: accountID)
    }

    /// The current user first, then everyone else by when they arrived.
    public func orderedFor(currentUser accountID: String) -> [Viewer] {
        sorted { left, right in
            if left.accountID == accountID { return right.accountID != accountID }
            if right.accountID == accountID { return false }
            return (left.since, left.accountID) < (right.since, right.accountID)
        }
    }
}
