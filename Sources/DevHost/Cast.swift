/// The people and issues of the local Jira stand-in.
struct Cast {
    struct Person {
        var accountId: String
        var displayName: String
        var accountType = "atlassian"
        /// nil: a hidden profile (Jira gives no avatar).
        var color: String?
    }

    struct Issue {
        var id: String
        var key: String
        var summary: String
        var projectId: String
        var projectKey: String
        /// Who may see it, when the issue is restricted (a security level); nil: everyone.
        var visibleTo: Set<String>? = nil

        func isVisible(to accountId: String) -> Bool { visibleTo?.contains(accountId) ?? true }
    }

    static let people: [Person] = [
        Person(accountId: "alice", displayName: "Alice Andersson", color: "#0052cc"),
        Person(accountId: "bob", displayName: "Bob Brown", color: "#00875a"),
        Person(accountId: "carol", displayName: "Carol Chen", color: "#6554c0"),
        // Privacy settings hide this profile: Jira shows a chosen name and no avatar.
        Person(accountId: "hidden", displayName: "A private person", color: nil),
        // Someone whose name is markup: it must show as text.
        Person(accountId: "mallory", displayName: #"<img src=x onerror=alert(1)>"#, color: "#de350b"),
        // A quote fused with a zero-width joiner into one grapheme cluster: escaping by
        // Characters let it end the avatar's alt attribute and add attributes of its own.
        Person(accountId: "zed", displayName: "Zed\"\u{200D} data-injected=yes x=\"", color: "#36b37e"),
        // An app account: never shown as a person.
        Person(accountId: "automation", displayName: "Automation for Jira", accountType: "app", color: "#ff991f"),
    ]

    static let issues: [Issue] = [
        Issue(id: "10001", key: "DEMO-1", summary: "Checkout fails on Safari", projectId: "10000", projectKey: "DEMO"),
        Issue(id: "10002", key: "DEMO-2", summary: "Add dark mode", projectId: "10000", projectKey: "DEMO"),
        Issue(id: "20007", key: "OPS-7", summary: "Rotate database credentials", projectId: "20000", projectKey: "OPS"),
        // Restricted by a security level: only Alice may see it, so only she may learn who reads it.
        Issue(id: "30001", key: "HR-1", summary: "Salary review", projectId: "30000", projectKey: "HR", visibleTo: ["alice"]),
    ]

    /// The cast, plus `bench-N` people for load tests.
    static func person(_ accountId: String) -> Person? {
        if let known = people.first(where: { $0.accountId == accountId }) { return known }
        guard accountId.hasPrefix("bench-"), let number = Int(accountId.dropFirst(6)) else { return nil }
        return Person(accountId: accountId, displayName: "Bench Person \(number)", color: ["#0052cc", "#00875a", "#6554c0", "#ff5630"][number % 4])
    }
    static func issue(key: String) -> Issue? { issues.first { $0.key == key } }

    /// An issue by its id: the cast's, or `BENCH-<id>` (ids from 100000) for load tests.
    static func issue(id: String) -> Issue? {
        if let known = issues.first(where: { $0.id == id }) { return known }
        guard let number = Int(id), number >= 100_000, String(number) == id else { return nil }
        return Issue(id: id, key: "BENCH-\(id)", summary: "Bench issue \(id)", projectId: "90000", projectKey: "BENCH")
    }
}
