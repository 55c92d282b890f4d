import Foundation
import Presence

/// The panel's HTML. Every value from outside is escaped; names are text, never markup.
struct PanelPage {
    let allJSURL: String
    let pollIntervalSeconds: Int

    func viewers(_ viewers: [Viewer], currentUser: String, issueID: String, issueKey: String, ticket: String) -> String {
        let items = viewers.map { viewer in
            ViewerItem(viewer: viewer, isCurrentUser: viewer.accountID == currentUser).html
        }.joined(separator: "\n")
        return page(body: """
            <div class="ac-content" id="whoslooking" data-ticket="\(HTML.escape(ticket))" data-issue-id="\(HTML.escape(issueID))" \
            data-issue-key="\(HTML.escape(issueKey))" data-poll-seconds="\(pollIntervalSeconds)">
            <ul class="viewers" aria-label="People viewing \(HTML.escape(issueKey))">
            \(items)
            </ul>
            <p class="status" role="status" hidden></p>
            </div>
            """, scripts: true)
    }

    func loginPrompt() -> String {
        page(body: """
            <div class="ac-content"><p class="prompt">Log in to see who else is looking at this issue.</p></div>
            """, scripts: false)
    }

    private func page(body: String, scripts: Bool) -> String {
        let scriptTags = scripts ? """
            <script src="\(HTML.escape(allJSURL))" data-options="sizeToParent:false"></script>
            <script src="public/panel.js" defer></script>
            """ : """
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

    init(viewer: Viewer, isCurrentUser: Bool) {
        accountId = viewer.accountID
        if case .found(let name, let avatar) = viewer.details {
            displayName = name
            avatarUrl = avatar
        } else {
            displayName = nil
            avatarUrl = nil
        }
        you = isCurrentUser
    }

    static let placeholderName = "Jira user"
    static let defaultAvatar = "public/avatar-default.svg"

    var html: String {
        let name = displayName ?? Self.placeholderName
        return """
            <li class="viewer\(you ? " you" : "")"><a href="#" class="profile" data-account-id="\(HTML.escape(accountId))">\
            <img class="avatar" src="\(HTML.escape(avatarUrl ?? Self.defaultAvatar))" alt="\(HTML.escape(name))" width="24" height="24">\
            <span class="name">\(HTML.escape(name))</span>\(you ? #"<span class="you-label"> (you)</span>"# : "")</a></li>
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
