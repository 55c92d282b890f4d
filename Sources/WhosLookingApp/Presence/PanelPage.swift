import Foundation
import Presence

/// The panel's HTML. Every value from outside is escaped; names are text, never markup.
struct PanelPage {
    let allJSURL: String
    let pollIntervalSeconds: Int
    let awayPollIntervalSeconds: Int

    func viewers(_ viewers: [Viewer], currentUser: String, issueID: String, issueKey: String, ticket: String) -> String {
        let items = ViewerItem.list(viewers, for: currentUser).map(\.html).joined(separator: "\n")
        return page(
            body: """
                <div class="ac-content" id="whoslooking" data-ticket="\(HTML.escape(ticket))" data-issue-id="\(HTML.escape(issueID))" \
                data-issue-key="\(HTML.escape(issueKey))" data-poll-seconds="\(pollIntervalSeconds)" \
                data-away-poll-seconds="\(awayPollIntervalSeconds)" data-version="\(ViewerListVersion.of(viewers))">
                <ul class="viewers" aria-label="People viewing \(HTML.escape(issueKey))">
                \(items)
                </ul>
                <p class="status" role="status" hidden></p>
                </div>
                """, scripts: true)
    }

    func loginPrompt() -> String {
        page(
            body: """
                <div class="ac-content"><p class="prompt">Log in to see who else is looking at this issue.</p></div>
                """, scripts: false)
    }

    private func page(body: String, scripts: Bool) -> String {
        let scriptTags =
            scripts
            ? """
            <script src="\(HTML.escape(allJSURL))" data-options="sizeToParent:false"></script>
            <script src="public/panel.js" defer></script>
            """
            : """
            <script src="\(HTML.escape(allJSURL))"></script>
            <script>if (window.AP) { AP.resize(); }</script>
            """
        return """
            <!DOCTYPE html>
            <html lang="en">
            <head>
            <meta charset="utf-8">
            <meta name="viewport" content="width=device-width, initial-scale=1">
            <title>Who's Looking</title>
            <link rel="stylesheet" href="public/panel.css">
            \(scriptTags)
            </head>
            <body>
            \(body)
            </body>
            </html>
            """
    }
}

/// One viewer as the panel lists them (the script builds the same markup with DOM text nodes).
struct ViewerItem {
    let accountId: String
    let displayName: String?
    let avatarUrl: String?
    let you: Bool
    let away: Bool
    /// When they started looking, ISO 8601 UTC to the second.
    let since: String

    init(viewer: Viewer, isCurrentUser: Bool) {
        accountId = viewer.accountID
        away = viewer.isAway
        since = ISO8601UTC.string(viewer.since)
        if case .found(let name, let avatar) = viewer.details {
            displayName = name
            avatarUrl = avatar
        } else {
            displayName = nil
            avatarUrl = nil
        }
        you = isCurrentUser
    }

    /// The items of a panel's answer, the current user's marked.
    static func list(_ viewers: [Viewer], for accountID: String) -> [ViewerItem] {
        viewers.map { ViewerItem(viewer: $0, isCurrentUser: $0.accountID == accountID) }
    }

    static let placeholderName = "Jira user"
    static let defaultAvatar = "public/avatar-default.svg"

    var html: String {
        let name = displayName ?? Self.placeholderName
        // The script replaces the title with the viewer's local time; this one is UTC.
        return """
            <li class="viewer\(you ? " you" : "")\(away ? " away" : "")" data-account-id="\(HTML.escape(accountId))" \
            data-state="\(away ? "away" : "active")" data-since="\(since)" title="Looking since \(since.dropFirst(11).prefix(5)) UTC">\
            <a href="#" class="profile">\
            <img class="avatar" src="\(HTML.escape(avatarUrl ?? Self.defaultAvatar))" alt="\(HTML.escape(name))" width="24" height="24">\
            <span class="name">\(HTML.escape(name))</span>\(you ? #"<span class="you-label"> (you)</span>"# : "")\
            \(away ? #"<span class="state-label">away</span>"# : "")</a></li>
            """
    }
}

enum HTML {
    /// Text made safe to place in HTML content or a quoted attribute. Works on Unicode scalars,
    /// not `Character`s: a quote followed by a combining mark, a zero-width joiner or a
    /// variation selector is one grapheme cluster that is not equal to `"`, and walking
    /// Characters let it through unescaped, out of the attribute.
    static func escape(_ text: String) -> String {
        var escaped = String.UnicodeScalarView()
        escaped.reserveCapacity(text.unicodeScalars.count)
        for scalar in text.unicodeScalars {
            switch scalar {
            case "&": escaped.append(contentsOf: "&amp;".unicodeScalars)
            case "<": escaped.append(contentsOf: "&lt;".unicodeScalars)
            case ">": escaped.append(contentsOf: "&gt;".unicodeScalars)
            case "\"": escaped.append(contentsOf: "&quot;".unicodeScalars)
            case "'": escaped.append(contentsOf: "&#39;".unicodeScalars)
            default: escaped.append(scalar)
            }
        }
        return String(escaped)
    }
}

/// `2026-11-30T07:42:10Z`: a date in UTC to the second, without a formatter (this runs for every
/// viewer of every heartbeat answer).
enum ISO8601UTC {
    static func string(_ date: Date) -> String {
        let seconds = Int(date.timeIntervalSince1970.rounded(.down))
        let days = seconds >= 0 ? seconds / 86400 : (seconds - 86399) / 86400
        let time = seconds - days * 86400
        // Days to civil date (Howard Hinnant's algorithm), proleptic Gregorian.
        let shifted = days + 719_468
        let era = (shifted >= 0 ? shifted : shifted - 146_096) / 146_097
        let dayOfEra = shifted - era * 146_097
        let yearOfEra = (dayOfEra - dayOfEra / 1460 + dayOfEra / 36524 - dayOfEra / 146_096) / 365
        let dayOfYear = dayOfEra - (365 * yearOfEra + yearOfEra / 4 - yearOfEra / 100)
        let monthIndex = (5 * dayOfYear + 2) / 153
        let day = dayOfYear - (153 * monthIndex + 2) / 5 + 1
        let month = monthIndex < 10 ? monthIndex + 3 : monthIndex - 9
        let year = yearOfEra + era * 400 + (month <= 2 ? 1 : 0)
        func two(_ value: Int) -> String { value < 10 ? "0\(value)" : String(value) }
        let yearText = String(year)
        return String(repeating: "0", count: max(0, 4 - yearText.count)) + yearText
            + "-\(two(month))-\(two(day))T\(two(time / 3600)):\(two(time / 60 % 60)):\(two(time % 60))Z"
    }
}
