import Connect
import Crypto
import Foundation
import HTTPTypes
import Hummingbird
import Logging
import TextCoding

/// Headers every answer carries, error answers included (the router's own 404s and every
/// refusal): `X-Content-Type-Options: nosniff`, `Referrer-Policy: no-referrer` and a
/// Content-Security-Policy (the panel's for HTML, a deny-all one for everything else).
///
/// Never `X-Frame-Options`: the panel lives in an iframe on Jira's pages, and `DENY` or
/// `SAMEORIGIN` would blank it. `frame-ancestors` says who may frame us instead.
///
/// `EdgeMiddleware` adds them, after turning a thrown `HTTPResponseError` into the response the
/// router would have written anyway (same status, headers and JSON body).
struct SecurityHeaders: Sendable {
    /// The policy of HTML answers (the panel).
    let htmlPolicy: String
    /// The policy of everything else: nothing may load or run. It matters for a document a
    /// browser could be sent to directly, such as `/public/avatar-default.svg` (SVG can hold
    /// script), and keeps a JSON or text answer from being framed anywhere but in Jira.
    let otherPolicy: String

    static let contentSecurityPolicy = HTTPField.Name.contentSecurityPolicy
    static let contentTypeOptions = HTTPField.Name.xContentTypeOptions
    static let referrerPolicy = HTTPField.Name("Referrer-Policy")!

    /// Jira Cloud's sites. Sites on a custom domain are not covered (their domain is known only
    /// from the tenant's `displayUrl`, after the JWT is verified).
    static let jiraFrameAncestors = ["https://*.atlassian.net", "https://*.jira.com"]

    /// The inline scripts of `PanelPage`, allowed by hash. Only the login prompt has one (the
    /// viewers page loads `public/panel.js`); `SecurityHeadersTests` hashes what the page really
    /// renders, so a change there without a change here fails a test instead of the panel.
    static let inlineScripts = ["if (window.AP) { AP.resize(); }"]

    init(allJSURL: String, installKeysURL: String) {
        var frameAncestors = Self.jiraFrameAncestors
        var imageSources = ["'self'", "data:", "https:"]
        // The local Jira stand-in (`whoslooking devhost`, scripts/try, the browser tests) serves
        // its issue pages and avatars over plain http on localhost. It also serves the install
        // keys, so CONNECT_INSTALL_KEYS_URL on http://localhost or 127.0.0.1 says it is in use:
        // only then is its origin allowed to frame the panel and to serve images. In production
        // that URL is Atlassian's https key server, and nothing is added.
        if let local = Self.localStandInOrigin(installKeysURL) {
            frameAncestors.append(local)
            imageSources.append(local)
        }
        var scriptSources = ["'self'"]
        if let allJS = Self.origin(allJSURL) { scriptSources.append(allJS) }
        scriptSources += Self.inlineScripts.map(Self.hashSource)
        htmlPolicy = [
            "default-src 'self'",
            // Our own scripts (/public/panel.js) and Atlassian's all.js; no 'unsafe-inline', no eval.
            "script-src \(scriptSources.joined(separator: " "))",
            // Our stylesheet. 'unsafe-inline' for styles only: the page has no inline style, but
            // Atlassian's all.js (not ours, not testable here: the stand-in only imitates it) adds
            // style elements and attributes for its margin and sizing options. A style cannot run
            // script; blocking it would only misplace the panel in real Jira.
            "style-src 'self' 'unsafe-inline'",
            // Avatars come from wherever Jira's user API says: avatar-management.services.atlassian.com,
            // secure.gravatar.com, api.media.atlassian.com, sites' own hosts and more, a list nobody
            // publishes. Any https image is allowed (an image cannot run script); data: for inline icons.
            "img-src \(imageSources.joined(separator: " "))",
            // Heartbeats and the leave beacon go to this service only.
            "connect-src 'self'",
            "object-src 'none'",
            "base-uri 'none'",
            "form-action 'none'",
            "frame-ancestors \(frameAncestors.joined(separator: " "))",
        ].joined(separator: "; ")
        otherPolicy = [
            "default-src 'none'",
            "base-uri 'none'",
            "form-action 'none'",
            // Error answers of the panel (a refused JWT) are shown in Jira's iframe.
            "frame-ancestors \(frameAncestors.joined(separator: " "))",
        ].joined(separator: "; ")
    }

    /// The answer for an error: its own response when it is an HTTP error, else what
    /// Hummingbird itself answers for any other error (500, nothing said).
    func response(for error: any Error, request: Request, context: some RequestContext) -> Response {
        if let error = error as? any HTTPResponseError, let response = try? error.response(from: request, context: context) {
            return response
        }
        context.logger.debug("unrecognised error", metadata: ["error.type": "\(String(reflecting: type(of: error)))"])
        return Response(status: .internalServerError)
    }

    func addHeaders(to headers: inout HTTPFields) {
        headers[Self.contentTypeOptions] = "nosniff"
        // The panel's URL carries Jira's JWT in its query: with a Referer, every request the page
        // makes (panel.js, panel.css, heartbeats, avatars on other hosts) would repeat it, into
        // proxy and access logs. Nothing here needs a Referer.
        headers[Self.referrerPolicy] = "no-referrer"
        if headers[Self.contentSecurityPolicy] == nil {
            headers[Self.contentSecurityPolicy] = Self.isHTML(headers[.contentType]) ? htmlPolicy : otherPolicy
        }
    }

    /// Whether the media type (before any `;`, blanks trimmed, in any case) is HTML. On bytes:
    /// every answer asks, and Foundation's trimming showed in the heartbeat profile.
    static func isHTML(_ contentType: String?) -> Bool {
        guard let contentType else { return false }
        let utf8 = contentType.utf8
        let mediaType = ASCII.trimmingBlanks(utf8[..<(utf8.firstIndex(of: UInt8(ascii: ";")) ?? utf8.endIndex)])
        return ASCII.equalsIgnoringCase(mediaType, "text/html") || ASCII.equalsIgnoringCase(mediaType, "application/xhtml+xml")
    }

    /// `scheme://host[:port]` of an absolute http(s) URL.
    static func origin(_ url: String) -> String? {
        guard let components = URLComponents(string: url), let scheme = components.scheme?.lowercased(),
            scheme == "https" || scheme == "http", let host = components.host, !host.isEmpty
        else { return nil }
        let port = components.port.map { ":\($0)" } ?? ""
        return "\(scheme)://\(host.lowercased())\(port)"
    }

    /// The origin of `url` when it is plain http on localhost or 127.0.0.1 (the local stand-in).
    static func localStandInOrigin(_ url: String) -> String? {
        guard let components = URLComponents(string: url), components.scheme?.lowercased() == "http",
            let host = components.host?.lowercased(), host == "localhost" || host == "127.0.0.1"
        else { return nil }
        return origin(url)
    }

    /// A CSP hash source for an inline script's exact text.
    static func hashSource(_ script: String) -> String {
        "'sha256-\(Data(SHA256.hash(data: Data(script.utf8))).base64EncodedString())'"
    }
}

/// Refuses, with 400, a request whose path or query holds a percent-encoded control character
/// (`%00`-`%1F`, `%7F`, and C1 controls and line separators once decoded) or whose path has
/// invalid percent-encoding, before anything else reads it.
///
/// Hummingbird's FileMiddleware decodes the path and hands it to the file system, which stops
/// at a NUL: `/public/panel.js%00.html` was `Public/panel.js` served with the type of `.html`,
/// `text/html`. No route or file of ours has a control character in its name, and no value Jira
/// sends in a query has one either, so such a request is refused whole rather than filtered:
/// nothing downstream (file system, database, logs) sees those bytes. Raw control bytes never get
/// this far: the HTTP parser refuses them in a request line.
enum RequestTarget {
    /// Why the request's path or query is refused, or nil.
    static func problem(of request: Request) -> String? {
        problem(path: request.uri.path) ?? request.uri.query.flatMap(problem(query:))
    }

    static func problem(path: String) -> String? {
        guard path.removingPercentEncoding != nil else { return "invalid percent-encoding in path" }
        return hasEncodedControlCharacter(path) ? "control character in path" : nil
    }

    static func problem(query: String) -> String? {
        hasEncodedControlCharacter(query) ? "control character in query" : nil
    }

    /// A control character once percent-decoded: `%XX` with XX below 0x20 or 0x7F (either case
    /// of hex digit), a raw control byte, or a decoded C1 control or line separator (`%C2%85`).
    static func hasEncodedControlCharacter(_ text: String) -> Bool {
        if let decoded = text.removingPercentEncoding, !TokenRejection.hasNoControlCharacters(decoded) { return true }
        let bytes = Array(text.utf8)
        var index = 0
        while index < bytes.count {
            let byte = bytes[index]
            if byte < 0x20 || byte == 0x7F { return true }
            if byte == UInt8(ascii: "%"), index + 2 < bytes.count,
                let high = ASCII.hexValue(bytes[index + 1]), let low = ASCII.hexValue(bytes[index + 2])
            {
                let value = high << 4 | low
                if value < 0x20 || value == 0x7F { return true }
                index += 3
                continue
            }
            index += 1
        }
        return false
    }
}
