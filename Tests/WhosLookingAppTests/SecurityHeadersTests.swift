import Connect
import Crypto
import Foundation
import HTTPTypes
import Hummingbird
import HummingbirdTesting
import Tenants
import TestSupport
import Testing

@testable import WhosLookingApp

/// Security headers on every answer: the panel's Content-Security-Policy, nosniff, no Referer,
/// never X-Frame-Options (the panel must stay embeddable in Jira), and a cache policy on files.
@Suite("Security headers", .timeLimit(.minutes(3)))
struct SecurityHeadersTests {
    static let tenant = TenantInstallation(
        clientKey: "jira:headers", baseURL: URL(string: "https://headers.atlassian.net")!, productType: "jira",
        sharedSecret: "headers-tenant-secret-0123456789abc"
    )
    static let panelTarget = "/panel?issueId=10001&issueKey=DEMO-1&projectId=100&projectKey=DEMO"

    static func panelURI(account: String?) throws -> String {
        let now = Date().timeIntervalSince1970
        let token = try HS256.sign(
            ConnectClaims(
                iss: tenant.clientKey, sub: account, iat: now, exp: now + 180, qsh: CanonicalRequest(method: "GET", target: panelTarget).qsh
            ), secret: tenant.sharedSecret)
        return panelTarget + "&jwt=" + token
    }

    struct Answer {
        var status: HTTPResponse.Status
        var headers: HTTPFields
        var body: String

        var policy: [String: [String]] {
            var directives: [String: [String]] = [:]
            for directive in (headers[.contentSecurityPolicy] ?? "").split(separator: ";") {
                let words = directive.split(separator: " ").map(String.init)
                guard let name = words.first else { continue }
                directives[name] = Array(words.dropFirst())
            }
            return directives
        }
    }

    func withApp(environment: [String: String] = [:], _ body: @escaping @Sendable (any TestClientProtocol) async throws -> Void) async throws {
        try await TestApp.with(environment: environment) { testApp, app in
            try await testApp.tenants.install(Self.tenant)
            try await app.test(.router) { client in try await body(client) }
        }
    }

    func fetch(_ client: some TestClientProtocol, _ uri: String, method: HTTPRequest.Method = .get, headers: HTTPFields = [:]) async throws -> Answer
    {
        try await client.execute(uri: uri, method: method, headers: headers) { response in
            Answer(status: response.status, headers: response.headers, body: String(buffer: response.body))
        }
    }

    /// What every answer carries, whatever it is.
    func expectCommonHeaders(_ answer: Answer, _ what: String, sourceLocation: SourceLocation = #_sourceLocation) {
        #expect(answer.headers[.xContentTypeOptions] == "nosniff", "\(what)", sourceLocation: sourceLocation)
        #expect(answer.headers[HTTPField.Name("Referrer-Policy")!] == "no-referrer", "\(what)", sourceLocation: sourceLocation)
        #expect(answer.headers[HTTPField.Name("X-Frame-Options")!] == nil, "\(what): the panel must stay embeddable", sourceLocation: sourceLocation)
        let ancestors = answer.policy["frame-ancestors"] ?? []
        #expect(
            ancestors.contains("https://*.atlassian.net"), "\(what): \(answer.headers[.contentSecurityPolicy] ?? "no CSP")",
            sourceLocation: sourceLocation)
        #expect(ancestors.contains("https://*.jira.com"), "\(what)", sourceLocation: sourceLocation)
        #expect(!ancestors.contains("*") && !ancestors.contains("'none'"), "\(what)", sourceLocation: sourceLocation)
    }

    @Test func thePanelHasAStrictPolicyThatLetsJiraFrameIt() async throws {
        try await withApp { client in
            let panel = try await fetch(client, try Self.panelURI(account: "account-alice"))
            #expect(panel.status == .ok)
            #expect(panel.headers[.contentType]?.hasPrefix("text/html") == true)
            expectCommonHeaders(panel, "panel")
            let policy = panel.policy
            #expect(policy["script-src"]?.contains("'self'") == true)
            #expect(policy["script-src"]?.contains("https://connect-cdn.atl-paas.net") == true, "all.js's origin")
            #expect(policy["script-src"]?.contains("'unsafe-inline'") == false)
            #expect(policy["script-src"]?.contains("'unsafe-eval'") == false)
            #expect(policy["script-src"]?.contains("https:") == false)
            #expect(policy["img-src"] == ["'self'", "data:", "https:"])
            #expect(policy["style-src"]?.first == "'self'")
            #expect(policy["connect-src"] == ["'self'"])
            #expect(policy["object-src"] == ["'none'"])
            #expect(policy["base-uri"] == ["'none'"])
            #expect(policy["frame-ancestors"] == ["https://*.atlassian.net", "https://*.jira.com"], "no local stand-in in production")
            // What the panel loads is allowed by it.
            #expect(panel.body.contains(#"<script src="https://connect-cdn.atl-paas.net/all.js""#))
            #expect(panel.body.contains(#"<script src="public/panel.js""#))
            #expect(!panel.body.contains(" onload=") && !panel.body.contains(" onclick=") && !panel.body.contains(" style="))
        }
    }

    /// The login prompt's inline script is allowed by its hash, and nothing else inline is.
    @Test func everyInlineScriptOfThePanelIsAllowedByItsHash() async throws {
        try await withApp { client in
            for account in [nil, "account-alice"] as [String?] {
                let page = try await fetch(client, try Self.panelURI(account: account))
                #expect(page.status == .ok)
                let allowed = page.policy["script-src"] ?? []
                var inline: [String] = []
                var rest = Substring(page.body)
                while let open = rest.range(of: "<script>"), let close = rest.range(of: "</script>", range: open.upperBound..<rest.endIndex) {
                    inline.append(String(rest[open.upperBound..<close.lowerBound]))
                    rest = rest[close.upperBound...]
                }
                #expect(inline.count == (account == nil ? 1 : 0), "\(page.body)")
                for script in inline {
                    let hash = "'sha256-\(Data(SHA256.hash(data: Data(script.utf8))).base64EncodedString())'"
                    #expect(allowed.contains(hash), "inline script \(script) is not allowed by \(allowed)")
                }
            }
        }
    }

    @Test func jsonAnswersErrorsAndNotFoundCarryTheHeaders() async throws {
        try await withApp { client in
            // A heartbeat of a real ticket: JSON.
            let panel = try await fetch(client, try Self.panelURI(account: "account-alice"))
            let ticket = try #require(
                panel.body.range(of: #"data-ticket="([^"]+)""#, options: .regularExpression).map {
                    String(panel.body[$0].dropFirst(#"data-ticket=""#.count).dropLast())
                })
            let beat = try await fetch(client, "/api/issues/10001/heartbeat", method: .post, headers: [.authorization: "Ticket \(ticket)"])
            #expect(beat.status == .ok)
            #expect(beat.headers[.contentType]?.contains("json") == true)
            expectCommonHeaders(beat, "heartbeat")
            #expect(beat.policy["default-src"] == ["'none'"], "not HTML: nothing may load")

            let answers: [(String, Answer)] = [
                ("healthz", try await fetch(client, "/healthz")),
                ("descriptor", try await fetch(client, "/atlassian-connect.json")),
                ("unknown path", try await fetch(client, "/no/such/thing")),
                ("missing file", try await fetch(client, "/public/nothing.js")),
                ("refused JWT", try await fetch(client, Self.panelTarget + "&jwt=abc.def.ghi")),
                ("missing ticket", try await fetch(client, "/api/issues/10001/heartbeat", method: .post)),
                ("wrong method", try await fetch(client, "/panel", method: .delete)),
            ]
            #expect(answers.map(\.1.status) == [.ok, .ok, .notFound, .notFound, .unauthorized, .unauthorized, .notFound])
            for (what, answer) in answers {
                expectCommonHeaders(answer, what)
                #expect(answer.policy["default-src"] == ["'none'"], "\(what)")
            }
        }
    }

    /// Which answers get the HTML policy: the media type alone, in any case, blanks trimmed.
    @Test func htmlIsKnownByItsMediaTypeAlone() {
        for html in ["text/html", "TEXT/HTML; charset=utf-8", " text/html ;q", "\ttext/Html", "application/xhtml+xml", "Application/XHTML+XML;x"] {
            #expect(SecurityHeaders.isHTML(html), "\(html.debugDescription)")
        }
        for other in [nil, "", ";text/html", "text/htmlx", "text/plain", "application/json; text/html", "text /html", "text/html\u{0}", "téxt/html"] {
            #expect(!SecurityHeaders.isHTML(other), "\(String(describing: other).debugDescription)")
        }
    }

    @Test func staticFilesAreCachedAndNotSniffed() async throws {
        try await withApp { client in
            for (file, type) in [("panel.js", "javascript"), ("panel.css", "text/css"), ("avatar-default.svg", "image/svg+xml")] {
                let answer = try await fetch(client, "/public/\(file)")
                #expect(answer.status == .ok, "\(file)")
                #expect(answer.headers[.contentType]?.contains(type) == true, "\(file): \(answer.headers[.contentType] ?? "")")
                expectCommonHeaders(answer, file)
                #expect(answer.headers[.cacheControl] == "public, max-age=3600", "\(file)")
                // An SVG opened on its own may not run script.
                #expect(answer.policy["default-src"] == ["'none'"], "\(file)")
                // A revalidation keeps the headers.
                let etag = try #require(answer.headers[.eTag])
                let again = try await fetch(client, "/public/\(file)", headers: [.ifNoneMatch: etag])
                #expect(again.status == .notModified)
                #expect(again.headers[.xContentTypeOptions] == "nosniff")
            }
        }
    }

    /// The local Jira stand-in (its install keys on http://localhost) may frame the panel and
    /// serve avatars over http; all.js's origin follows ALLJS_URL.
    @Test func theLocalStandInMayFrameThePanel() async throws {
        let environment = ["CONNECT_INSTALL_KEYS_URL": "http://localhost:2990/install-keys", "ALLJS_URL": "http://localhost:2990/all.js"]
        try await withApp(environment: environment) { client in
            let panel = try await fetch(client, try Self.panelURI(account: "account-alice"))
            #expect(panel.status == .ok)
            expectCommonHeaders(panel, "panel")
            #expect(panel.policy["frame-ancestors"] == ["https://*.atlassian.net", "https://*.jira.com", "http://localhost:2990"])
            #expect(panel.policy["img-src"]?.contains("http://localhost:2990") == true)
            #expect(panel.policy["script-src"]?.contains("http://localhost:2990") == true)
            #expect(panel.policy["script-src"]?.contains("https://connect-cdn.atl-paas.net") == false)
        }
        // An http key server elsewhere is no stand-in of ours: nothing is added.
        let middleware = SecurityHeaders(allJSURL: "https://connect-cdn.atl-paas.net/all.js", installKeysURL: "http://keys.example.com")
        #expect(!middleware.htmlPolicy.contains("http://keys.example.com"))
        #expect(!middleware.htmlPolicy.contains("http:"))
    }
}
