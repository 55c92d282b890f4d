import TextCoding
import Connect
import Crypto
import Foundation
import Libpq
import NIOCore
import Presence
import Tenants
import TestSupport
import Testing

/// Hostile requests against the real executable (`whoslooking serve`), written byte for byte
/// on raw TCP sockets, so that nothing between the test and the server normalises them (an
/// HTTP client would resolve `..`, encode a space, refuse a NUL, pick one of two
/// `Content-Length`s). Every request of the catalogue is refused with a 4xx (never a 5xx);
/// nothing reaches storage; no answer, headers included, repeats a secret or a token, or shows
/// SQL, a stack trace or a Swift type; and the process still answers `/healthz` after each.
///
/// The site, its viewers, a Forge installation and the names of both are set up first through
/// the same front doors, so that each refusal is the hostile change, not a missing fixture.
@Suite("Hostile requests against the running executable", .timeLimit(.minutes(3)))
struct HostileExecutableTests {
    static let baseURL = "https://hostile.example.com"
    static let connectSite = "jira:hostile-exe"
    static let connectSecret = "hostile-exe-tenant-secret-0123456789abcdef"
    /// A site that was installed and then uninstalled: its secret and tickets open nothing.
    static let goneSite = "jira:hostile-gone"
    static let goneSecret = "hostile-gone-tenant-secret-0123456789abcdef"
    static let forgeInstallation = "ari:cloud:ecosystem::installation/5a0e28ba-2fa1-11d2-883f-0016d3cca001"
    static let goneInstallation = "ari:cloud:ecosystem::installation/5a0e28ba-2fa1-11d2-883f-0016d3cca002"
    static let panelTarget = "/panel?issueId=10001&issueKey=HX-1&projectId=100&projectKey=HX"
    static let secondPanelTarget = "/panel?issueId=10002&issueKey=HX-2&projectId=100&projectKey=HX"
    static let mallory = "account-mallory"
    static let alice = "557058:alice"
    static let forgedLine = "2030-01-01T00:00:00+0000 critical whoslooking: FORGED-LOG-LINE"

    static let preUninstallBody = #"{"context":{"cloudId":"4a3b2c1d-0000-4000-8000-00000000c10d","moduleKey":"wl-pre-uninstall"},"contextToken":"t"}"#

    // MARK: The catalogue's shape

    struct Hostile: Sendable {
        enum Expected: Sendable, CustomStringConvertible {
            /// This status, on an answer the server completed.
            case status(Int)
            /// Any 4xx.
            case clientError
            /// Any 4xx, or the connection closed with no answer: only for a request line the
            /// HTTP parser cannot read at all, and `because` says why it cannot.
            case clientErrorOrClosed(because: String)

            var description: String {
                switch self {
                case .status(let status): "\(status)"
                case .clientError: "a 4xx"
                case .clientErrorOrClosed(let reason): "a 4xx or a clean close (\(reason))"
                }
            }
        }

        var name: String
        var request: [UInt8]
        var expected: Expected
        /// Tokens, tickets and secrets the request carries: its answer must not repeat them.
        var carries: [String] = []
    }

    /// Text that betrays internals: SQL and its errors, stack traces, Swift types, files
    /// outside `/public` (`Package.swift`, `/etc/passwd`, migrations), a forged log line, and
    /// `panel.js` served where it was not asked for by name.
    static let tellTales = [
        "SQLSTATE", "sqlstate", "PostgresError", "PostgreSQL", "postgres", "libpq", "pg_catalog", "22021", "57014", "Fatal error",
        "Stack dump", "backtrace", ".swift", "WhosLookingApp", "Hummingbird", "NIOCore", "NIOHTTP", "JWTKit", "DecodingError",
        "HTTPError", "TokenRejection", "Optional(", "Swift.", "Foundation.", "FORGED-LOG-LINE", "root:x:0:0", "swift-tools-version",
        "CREATE TABLE", "CREATE UNLOGGED", "use strict",
    ]

    // MARK: Building requests

    /// A well-formed HTTP/1.1 request (Host, `Connection: close`, and a Content-Length when
    /// there is a body); `target` is sent exactly as given.
    static func http(_ method: String, _ target: String, _ headers: [(String, String)] = [], body: [UInt8]? = nil) -> [UInt8] {
        var head = "\(method) \(target) HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n"
        for (name, value) in headers { head += "\(name): \(value)\r\n" }
        if let body { head += "Content-Length: \(body.count)\r\n" }
        return Array((head + "\r\n").utf8) + (body ?? [])
    }

    static func bytes(_ text: String) -> [UInt8] { Array(text.utf8) }

    /// JSON of any shape, as bytes.
    static func json(_ object: Any) -> [UInt8] {
        Array(try! JSONSerialization.data(withJSONObject: object, options: [.sortedKeys]))
    }

    /// Claims the panel at `target` would accept from `issuer`, changed by `change`.
    static func panelClaims(
        target: String = panelTarget, issuer: String = connectSite, _ change: (inout [String: Any]) -> Void = { _ in }
    ) -> [String: Any] {
        let now = Date().timeIntervalSince1970
        var claims: [String: Any] = [
            "iss": issuer, "sub": mallory, "iat": now, "exp": now + 180, "qsh": CanonicalRequest(method: "GET", target: target).qsh,
        ]
        change(&claims)
        return claims
    }

    static var hs256: [String: Any] { ["alg": "HS256", "typ": "JWT"] }

    /// A panel JWT signed with the site's secret (or `secret`; nil for a junk signature).
    static func panelJWT(
        target: String = panelTarget, header: [String: Any] = hs256, secret: String? = connectSecret,
        _ change: (inout [String: Any]) -> Void = { _ in }
    ) -> String {
        HostileInputTests.jwt(header: header, claims: panelClaims(target: target, change), secret: secret)
    }

    /// A lifecycle body as Jira sends it.
    static func lifecycleBody(clientKey: String = "jira:new-site", _ extra: [String: String] = [:]) -> [UInt8] {
        json(
            [
                "key": "whos-looking", "clientKey": clientKey, "sharedSecret": "an-attackers-secret-0123456789",
                "baseUrl": "https://evil.atlassian.net", "productType": "jira", "eventType": "installed",
            ].merging(extra) { $1 })
    }

    /// `count` nested JSON arrays: small on the wire, deep for a recursive parser.
    static func nestedArrays(_ count: Int) -> [UInt8] {
        Array(repeating: UInt8(ascii: "["), count: count) + Array(repeating: UInt8(ascii: "]"), count: count)
    }

    /// `count` nested JSON objects, `{"a":{"a":…1}}`.
    static func nestedObjects(_ count: Int) -> [UInt8] {
        Array(String(repeating: #"{"a":"#, count: count).utf8) + bytes("1") + Array(repeating: UInt8(ascii: "}"), count: count)
    }

    // MARK: The fixture

    /// What the setup produced, from which the hostile variants are made.
    struct Fixture: Sendable {
        var port: Int
        var secretKey: String
        var metricsToken: String
        var systemToken: String
        var jiraURL: String
        var forge: FakeForge
        var atlassian: FakeAtlassian
        /// Mallory's tickets for issues 10001 and 10002, as the panel handed them out.
        var ticket: String
        var secondTicket: String

        var tickets: ViewerTicketSigner { ViewerTicketSigner(secret: try! SecretBox(base64Key: secretKey).keyMaterial) }

        /// Claims of a Forge panel call on the set-up installation, changed by `change`.
        func forgeClaims(installation: String = forgeInstallation, _ change: (inout [String: Any]) -> Void = { _ in }) -> [String: Any] {
            var claims = FakeForge.panelClaims(installationID: installation, principal: alice, apiBaseURL: "\(jiraURL)/forge-site")
            change(&claims)
            return claims
        }

        func forgeApp(_ key: String, _ value: Any?) -> [String: Any] {
            forgeClaims { claims in
                var app = claims["app"] as! [String: Any]
                app[key] = value
                claims["app"] = app
            }
        }

        func forgeIssue(id: String, key: String) -> [String: Any] {
            forgeClaims { claims in
                var context = claims["context"] as! [String: Any]
                var extensionContext = context["extension"] as! [String: Any]
                extensionContext["issue"] = ["id": id, "key": key]
                context["extension"] = extensionContext
                claims["context"] = context
            }
        }
    }

    // MARK: The catalogue

    static func catalogue(_ fixture: Fixture) async throws -> [Hostile] {
        var cases: [Hostile] = []
        cases += connectPanelCases()
        cases += ticketCases(fixture)
        cases += try await forgeTokenCases(fixture)
        cases += try await forgeRequestCases(fixture)
        cases += try await lifecycleCases(fixture)
        cases += publicFileCases()
        cases += metricsCases(fixture)
        cases += requestLineCases()
        cases += headerCases(fixture)
        cases += framingCases()
        return cases
    }

    /// Forged and malformed Connect JWTs on the panel, and signed values it cannot take.
    static func connectPanelCases() -> [Hostile] {
        func panel(_ name: String, _ token: String, target: String = panelTarget, expected: Hostile.Expected = .status(401)) -> Hostile {
            Hostile(name: "panel: \(name)", request: http("GET", target + "&jwt=" + token), expected: expected, carries: [token])
        }
        func signed(_ name: String, target: String, expected: Hostile.Expected = .status(400)) -> Hostile {
            panel(name, panelJWT(target: target), target: target, expected: expected)
        }
        let valid = panelJWT()
        let now = Date().timeIntervalSince1970
        return [
            Hostile(name: "panel: no JWT", request: http("GET", panelTarget), expected: .status(401)),
            panel("empty JWT", ""),
            panel("one part", "abc"),
            panel("two parts", "abc.def"),
            panel("four parts", valid + ".extra"),
            panel("not base64url", "!!!.@@@.%23%23%23"),
            panel("header is a JSON array", Data("[1,2]".utf8).base64URLEncodedString() + ".e30.c2ln"),
            panel("claims are not JSON", Data(#"{"alg":"HS256"}"#.utf8).base64URLEncodedString() + ".bm90IGpzb24.c2ln"),
            panel("alg none", HostileInputTests.jwt(header: ["alg": "none"], claims: panelClaims(), secret: nil)),
            panel("alg HS512", panelJWT(header: ["alg": "HS512"])),
            panel("alg RS256 with a kid", panelJWT(header: ["alg": "RS256", "kid": "k1"], secret: nil)),
            panel("alg with a forged log line", panelJWT(header: ["alg": "HS256\n" + forgedLine])),
            panel("alg with NUL", panelJWT(header: ["alg": "HS256\u{0}"])),
            panel("alg of 4000 characters", panelJWT(header: ["alg": String(repeating: "H", count: 4000)])),
            panel("kid with NUL and a newline", panelJWT(header: ["alg": "HS256", "kid": "k\u{0}\n" + forgedLine], secret: "nope")),
            panel("iss with NUL", panelJWT { $0["iss"] = connectSite + "\u{0}" }),
            panel("iss with a forged log line", panelJWT { $0["iss"] = connectSite + "\n" + forgedLine }),
            panel("iss of 300 bytes", panelJWT { $0["iss"] = String(repeating: "i", count: 300) }),
            panel("iss is a number", panelJWT { $0["iss"] = 42 }),
            panel("no iss", panelJWT { $0["iss"] = nil }),
            panel("unknown iss", panelJWT { $0["iss"] = "jira:nobody" }),
            panel("signed by an uninstalled site", panelJWT(secret: goneSecret) { $0["iss"] = goneSite }),
            panel("the site's iss, another site's secret", panelJWT(secret: goneSecret)),
            panel("wrong secret", panelJWT(secret: "not-the-secret")),
            panel("signature stripped", valid.split(separator: ".").prefix(2).joined(separator: ".") + "."),
            panel("expired", panelJWT { $0["exp"] = now - 3600 }),
            panel("no exp", panelJWT { $0["exp"] = nil }),
            panel("exp is a string", panelJWT { $0["exp"] = "tomorrow" }),
            panel("issued in the future", panelJWT { $0["iat"] = now + 3600 }),
            panel("qsh of another request", panelJWT { $0["qsh"] = CanonicalRequest(method: "GET", target: "/panel?issueId=1").qsh }),
            panel("context qsh on the panel", panelJWT { $0["qsh"] = ConnectClaims.contextQSH }),
            panel("no qsh", panelJWT { $0["qsh"] = nil }),
            panel("issue 10001's JWT on issue 10002", valid, target: secondPanelTarget),
            panel("sub with NUL", panelJWT { $0["sub"] = mallory + "\u{0}" }),
            panel("sub with a forged log line", panelJWT { $0["sub"] = mallory + "\n" + forgedLine }),
            panel("sub of 1000 bytes", panelJWT { $0["sub"] = String(repeating: "s", count: 1000) }),
            panel("forged JWT of 60 KB", panelJWT(secret: "not-the-secret") { $0["pad"] = String(repeating: "p", count: 45_000) }),
            Hostile(
                name: "panel: a forged JWT before the valid one", request: http("GET", panelTarget + "&jwt=a.b.c&jwt=" + valid),
                expected: .status(401), carries: [valid]),
            Hostile(
                name: "panel: forged JWT in the header", request: http("GET", panelTarget, [("Authorization", "JWT abc.def.ghi")]),
                expected: .status(401)),
            Hostile(
                name: "panel: two different JWTs",
                request: http("GET", panelTarget + "&jwt=" + valid, [("Authorization", "JWT " + panelJWT { $0["sub"] = "x" })]),
                expected: .status(401), carries: [valid]),
            Hostile(
                name: "panel: Bearer instead of JWT", request: http("GET", panelTarget, [("Authorization", "Bearer " + valid)]),
                expected: .status(401), carries: [valid]),
            Hostile(name: "panel: empty JWT scheme", request: http("GET", panelTarget, [("Authorization", "JWT ")]), expected: .status(401)),
            signed("signed, NUL in issueKey", target: "/panel?issueId=10001&issueKey=HX%00"),
            signed("signed, newline in issueId", target: "/panel?issueId=1%0A2&issueKey=HX-1"),
            signed("signed, issueKey of 300", target: "/panel?issueId=10001&issueKey=\(String(repeating: "K", count: 300))"),
            signed("signed, no issueId", target: "/panel?issueKey=HX-1"),
            Hostile(name: "panel: POST", request: http("POST", panelTarget + "&jwt=" + valid, body: []), expected: .status(404), carries: [valid]),
        ]
    }

    /// Viewer tickets that are missing, forged, tampered, expired, for another issue or site.
    static func ticketCases(_ fixture: Fixture) -> [Hostile] {
        let ticket = fixture.ticket
        func heartbeat(_ name: String, _ authorization: String?, issue: String = "10001", expected: Hostile.Expected = .status(401)) -> Hostile {
            Hostile(
                name: "heartbeat: \(name)",
                request: http("POST", "/api/issues/\(issue)/heartbeat", authorization.map { [("Authorization", $0)] } ?? [], body: []),
                expected: expected, carries: authorization.map { [$0] } ?? [])
        }
        func leave(_ name: String, body: [UInt8], issue: String = "10001", expected: Hostile.Expected = .status(401)) -> Hostile {
            Hostile(
                name: "leave: \(name)", request: http("POST", "/api/issues/\(issue)/leave", [("Content-Type", "text/plain")], body: body),
                expected: expected, carries: [String(decoding: body.prefix(4096), as: UTF8.self)])
        }
        var characters = Array(ticket)
        let middle = characters.count / 4
        characters[middle] = characters[middle] == "A" ? "B" : "A"
        let tamperedPayload = String(characters)
        characters = Array(ticket)
        characters[characters.count - 2] = characters[characters.count - 2] == "A" ? "B" : "A"
        let tamperedMAC = String(characters)
        let payload = ticket.split(separator: ".")[0]
        let spliced = fixture.secondTicket.split(separator: ".")[0] + "." + ticket.split(separator: ".")[1]
        let now = Date().timeIntervalSince1970.rounded(.down)
        func signed(tenant: String = connectSite, issue: String = "10001", expires: Double = now + 600, started: Double = now - 60) -> String {
            fixture.tickets.sign(
                ViewerTicket(
                    tenant: tenant, issueID: issue, issueKey: "HX-1", accountID: mallory, tabID: "tab-x", expires: expires, chainStarted: started))
        }
        let foreign = ViewerTicketSigner(secret: SymmetricKey(size: .bits256))
            .issue(tenant: connectSite, issueID: "10001", issueKey: "HX-1", accountID: mallory, tabID: "tab-x").signed
        return [
            heartbeat("no ticket", nil),
            heartbeat("garbage ticket", "Ticket garbage"),
            heartbeat("tampered payload", "Ticket " + tamperedPayload),
            heartbeat("tampered signature", "Ticket " + tamperedMAC),
            heartbeat("signature cut off", "Ticket " + payload + "."),
            heartbeat("payload of issue 10002, signature of 10001", "Ticket " + spliced),
            heartbeat("signed with another key", "Ticket " + foreign),
            heartbeat("expired, signed with the app's key", "Ticket " + signed(expires: now - 60)),
            heartbeat("renewal chain older than its cap", "Ticket " + signed(started: now - 13 * 3600)),
            heartbeat("signed for an uninstalled site", "Ticket " + signed(tenant: goneSite)),
            heartbeat("signed for a site never installed", "Ticket " + signed(tenant: "jira:never")),
            heartbeat("ticket of 5000 bytes", "Ticket " + String(repeating: "A", count: 4000) + "." + String(repeating: "B", count: 1000)),
            heartbeat("issue 10001's ticket on issue 10002", "Ticket " + ticket, issue: "10002", expected: .status(403)),
            heartbeat("issue 10002's ticket on issue 10001", "Ticket " + fixture.secondTicket, expected: .status(403)),
            heartbeat("a panel JWT as the ticket", "Ticket " + panelJWT()),
            heartbeat("a panel JWT in the JWT scheme", "JWT " + panelJWT()),
            heartbeat("the ticket as a Bearer token", "Bearer " + ticket),
            heartbeat("NUL in the issue id", "Ticket " + ticket, issue: "100%0001", expected: .status(400)),
            heartbeat("encoded traversal in the issue id", "Ticket " + ticket, issue: "..%2F..%2Fpanel", expected: .clientError),
            heartbeat("raw traversal to issue 10002", "Ticket " + ticket, issue: "10001/../10002", expected: .clientError),
            heartbeat("issue id of 5000 characters", "Ticket " + ticket, issue: String(repeating: "9", count: 5000), expected: .clientError),
            Hostile(
                name: "heartbeat: GET", request: http("GET", "/api/issues/10001/heartbeat", [("Authorization", "Ticket " + ticket)]),
                expected: .status(404), carries: [ticket]),
            leave("garbage body", body: bytes("not a ticket\n\u{0}")),
            leave("empty body", body: []),
            leave("oversized body", body: Array(repeating: UInt8(ascii: "A"), count: 100_000), expected: .status(413)),
            leave("tampered ticket", body: bytes(tamperedPayload)),
            leave("ticket with a NUL after it", body: bytes(ticket + "\u{0}")),
            leave("issue 10001's ticket on issue 10002", body: bytes(ticket), issue: "10002", expected: .status(403)),
            leave("expired ticket", body: bytes(signed(expires: now - 60))),
            Hostile(
                name: "leave: tampered ticket in the header",
                request: http("POST", "/api/issues/10001/leave", [("Authorization", "Ticket " + tamperedMAC)], body: []), expected: .status(401),
                carries: [tamperedMAC]),
            Hostile(
                name: "leave: a panel JWT in the header",
                request: http("POST", "/api/issues/10001/leave", [("Authorization", "JWT " + panelJWT())], body: []),
                expected: .status(401)),
        ]
    }

    /// Every Forge route with every kind of forged or malformed invocation token.
    static func forgeTokenCases(_ fixture: Fixture) async throws -> [Hostile] {
        let forge = fixture.forge
        let valid = fixture.forgeClaims()
        let now = Date().timeIntervalSince1970.rounded(.down)
        let validToken = try await forge.token(valid)
        let kinds: [(String, String?)] = [
            ("no Authorization", nil),
            ("empty Bearer", "Bearer "),
            ("Bearer garbage", "Bearer not.a.token"),
            ("Basic credentials", "Basic YTpi"),
            ("alg none", "Bearer " + (try forge.unsignedToken(valid))),
            ("HS256 keyed with the public key", "Bearer " + (try await forge.confusedToken(valid))),
            ("unknown kid", "Bearer " + (try await forge.token(valid, key: forge.unpublished))),
            ("known kid, another key", "Bearer " + (try await forge.token(valid, key: forge.unpublished, kid: forge.published.kid))),
            ("no kid", "Bearer " + (try await forge.token(valid, kid: .some(nil)))),
            ("kid traversal", "Bearer " + (try await forge.token(valid, key: forge.unpublished, kid: "../../../../etc/passwd"))),
            ("wrong audience", "Bearer " + (try await forge.token(valid.merging(["aud": "ari:cloud:ecosystem::app/evil"]) { $1 }))),
            ("wrong issuer", "Bearer " + (try await forge.token(valid.merging(["iss": "someone-else"]) { $1 }))),
            ("wrong app id", "Bearer " + (try await forge.token(fixture.forgeApp("id", "ari:cloud:ecosystem::app/evil")))),
            ("expired", "Bearer " + (try await forge.token(valid.merging(["exp": now - 120]) { $1 }))),
            ("not yet valid", "Bearer " + (try await forge.token(valid.merging(["nbf": now + 300]) { $1 }))),
            (
                "no installation",
                "Bearer "
                    + (try await forge.token(
                        fixture.forgeClaims { claims in
                            var app = claims["app"] as! [String: Any]
                            app["installationId"] = nil
                            app["installation"] = nil
                            claims["app"] = app
                        }))
            ),
            ("installation not an ARI", "Bearer " + (try await forge.token(fixture.forgeApp("installationId", connectSite)))),
            ("installation with NUL", "Bearer " + (try await forge.token(fixture.forgeApp("installationId", forgeInstallation + "\u{0}")))),
            ("apiBaseUrl javascript:", "Bearer " + (try await forge.token(fixture.forgeApp("apiBaseUrl", "javascript:alert(1)")))),
            ("token over 16 KB", "Bearer " + (try await forge.token(valid.merging(["pad": String(repeating: "p", count: 17_000)]) { $1 }))),
            ("signature cut off", "Bearer " + validToken.split(separator: ".").prefix(2).joined(separator: ".") + "."),
            ("a Connect panel JWT", "Bearer " + panelJWT()),
        ]
        var cases: [Hostile] = []
        for route in ["heartbeat", "leave", "lifecycle", "uninstall"] {
            for (kind, authorization) in kinds {
                var headers = [("Content-Type", "application/json")]
                if let authorization { headers.append(("Authorization", authorization)) }
                cases.append(
                    Hostile(
                        name: "forge \(route): \(kind)", request: http("POST", "/forge/\(route)", headers, body: bytes(#"{"tabId":"tab-1"}"#)),
                        expected: .status(401), carries: authorization.map { [$0, fixture.systemToken] } ?? []))
            }
        }
        return cases
    }

    /// Valid Forge tokens with bodies or signed contexts the routes cannot take.
    static func forgeRequestCases(_ fixture: Fixture) async throws -> [Hostile] {
        let forge = fixture.forge
        func call(
            _ name: String, _ route: String = "heartbeat", claims: [String: Any]? = nil, body: [UInt8], expected: Hostile.Expected = .status(400)
        ) async throws -> Hostile {
            let token = try await forge.token(claims ?? fixture.forgeClaims())
            return Hostile(
                name: "forge \(route), valid token: \(name)",
                request: http("POST", "/forge/\(route)", [("Content-Type", "application/json"), ("Authorization", "Bearer " + token)], body: body),
                expected: expected, carries: [token])
        }
        let tab = bytes(#"{"tabId":"tab-1"}"#)
        func trigger(_ endpoint: String) -> [String: Any] {
            FakeForge.triggerClaims(endpoint: endpoint, installationID: forgeInstallation, apiBaseURL: "\(fixture.jiraURL)/forge-site")
        }
        return [
            try await call("body not JSON", body: bytes("tabId=tab-1")),
            try await call("body a JSON array", body: bytes(#"["tab-1"]"#)),
            try await call("no tabId", body: bytes("{}")),
            try await call("tabId with a space", body: bytes(#"{"tabId":"a b"}"#)),
            try await call("tabId of 65", body: json(["tabId": String(repeating: "t", count: 65)])),
            try await call("tabId with NUL", body: bytes(#"{"tabId":"tab\u0000"}"#)),
            try await call("tabId a number", body: bytes(#"{"tabId":7}"#)),
            try await call("body over 64 KB", body: json(["tabId": "t", "pad": String(repeating: "x", count: 70_000)]), expected: .status(413)),
            try await call("30,000 nested arrays", body: nestedArrays(30_000)),
            try await call("10,000 nested objects", body: nestedObjects(10_000)),
            try await call("invalid UTF-8", body: [0x7B, 0x22, 0xFF, 0xFE, 0x22, 0x3A, 0x31, 0x7D]),
            // A panel module's token without a UI context is not a frontend call: not the panel's.
            try await call("no context", claims: fixture.forgeClaims { claims in claims["context"] = nil }, body: tab, expected: .status(403)),
            try await call("signed issue key with NUL", claims: fixture.forgeIssue(id: "10001", key: "HX-1\u{0}"), body: tab),
            try await call("signed issue id of 300", claims: fixture.forgeIssue(id: String(repeating: "1", count: 300), key: "HX-1"), body: tab),
            try await call(
                "signed principal with NUL", claims: fixture.forgeClaims { $0["principal"] = alice + "\u{0}" }, body: tab, expected: .clientError),
            try await call(
                "an uninstalled installation", claims: fixture.forgeClaims(installation: goneInstallation), body: tab, expected: .status(403)),
            try await call("body a JSON array", "lifecycle", claims: trigger("wl-lifecycle"), body: bytes("[]")),
            try await call("30,000 nested arrays", "lifecycle", claims: trigger("wl-lifecycle"), body: nestedArrays(30_000)),
            try await call("another event", "lifecycle", claims: trigger("wl-lifecycle"), body: bytes(#"{"eventType":"avi:forge:uninstalled:app"}"#)),
            try await call("body not JSON", "uninstall", claims: trigger("wl-uninstall"), body: bytes("uninstall everything")),
            try await call(
                "no contextToken", "uninstall", claims: trigger("wl-uninstall"),
                body: bytes(#"{"context":{"cloudId":"c","moduleKey":"wl-pre-uninstall"}}"#)),
            // A user's own panel token on the app's triggers: the audit's "any user uninstalls the site".
            try await call("a panel's token", "uninstall", body: bytes(preUninstallBody), expected: .status(403)),
            try await call(
                "an anonymous panel's token", "uninstall", claims: fixture.forgeClaims { $0["principal"] = nil }, body: bytes(preUninstallBody),
                expected: .status(403)),
            try await call("a panel's token", "lifecycle", body: bytes(#"{"eventType":"avi:forge:installed:app"}"#), expected: .status(403)),
            try await call("a panel's token", "scheduled", body: bytes("{}"), expected: .status(403)),
            try await call(
                "the lifecycle trigger's token", "uninstall", claims: trigger("wl-lifecycle"), body: bytes(preUninstallBody), expected: .status(403)),
            try await call("the uninstall trigger's token", "heartbeat", claims: trigger("wl-uninstall"), body: tab, expected: .status(403)),
            try await call(
                "another site's cloudId", "uninstall", claims: trigger("wl-uninstall"),
                body: bytes(#"{"context":{"cloudId":"99999999-0000-4000-8000-000000000000","moduleKey":"wl-pre-uninstall"},"contextToken":"t"}"#),
                expected: .status(403)),
            try await call("no tabId", "leave", body: bytes(#"{"tab":"tab-1"}"#)),
            try await call("30,000 nested arrays", "leave", body: nestedArrays(30_000)),
        ]
    }

    /// `/installed` and `/uninstalled` with no signature, a forged one, or a body that cannot be one.
    static func lifecycleCases(_ fixture: Fixture) async throws -> [Hostile] {
        let atlassian = fixture.atlassian
        func lifecycle(
            _ name: String, _ path: String = "/installed", token: String?, body: [UInt8] = lifecycleBody(),
            expected: Hostile.Expected = .status(401)
        ) -> Hostile {
            var headers = [("Content-Type", "application/json")]
            if let token { headers.append(("Authorization", "JWT " + token)) }
            return Hostile(
                name: "\(path): \(name)", request: http("POST", path, headers, body: body), expected: expected, carries: token.map { [$0] } ?? [])
        }
        func rs256(kid: String?) -> String {
            var header: [String: Any] = ["alg": "RS256", "typ": "JWT"]
            if let kid { header["kid"] = kid }
            let claims: [String: Any] = ["iss": "jira:new-site", "aud": baseURL, "exp": Date().timeIntervalSince1970 + 60, "qsh": "x"]
            return HostileInputTests.jwt(header: header, claims: claims, secret: nil)
        }
        func signed(
            key: FakeAtlassian.KeyPair? = nil, kid: String? = nil, clientKey: String = "jira:new-site", audience: String = baseURL,
            path: String = "/installed", issuedAt: Date = Date()
        ) async throws -> String {
            try await atlassian.lifecycleToken(key: key, kid: kid, clientKey: clientKey, audience: audience, path: path, issuedAt: issuedAt)
        }
        let uninstallSite = lifecycleBody(clientKey: connectSite, ["eventType": "uninstalled"])
        return [
            lifecycle("no JWT", token: nil),
            lifecycle("body not JSON", token: nil, body: bytes("clientKey=evil"), expected: .status(400)),
            lifecycle("body a JSON array", token: nil, body: bytes("[]"), expected: .status(400)),
            lifecycle("body over 64 KB", token: nil, body: Array(repeating: UInt8(ascii: " "), count: 200_000), expected: .status(413)),
            lifecycle("30,000 nested arrays, unsigned", token: nil, body: nestedArrays(30_000), expected: .status(400)),
            lifecycle("10,000 nested objects, unsigned", token: nil, body: nestedObjects(10_000), expected: .status(400)),
            lifecycle("a number too large for a double", token: nil, body: bytes(#"{"key":1e999}"#), expected: .status(400)),
            lifecycle("invalid UTF-8", token: nil, body: [0x7B, 0x22, 0x6B, 0xFF, 0x22, 0x3A, 0x31, 0x7D], expected: .status(400)),
            lifecycle("http baseUrl", token: nil, body: lifecycleBody(["baseUrl": "http://evil.example.com"]), expected: .status(400)),
            lifecycle("HS256 with the site's secret", token: HostileInputTests.jwt(header: hs256, claims: panelClaims(), secret: connectSecret)),
            lifecycle("alg none", token: HostileInputTests.jwt(header: ["alg": "none"], claims: panelClaims(), secret: nil)),
            lifecycle("RS256 without kid", token: rs256(kid: nil)),
            lifecycle("RS256 kid with NUL", token: rs256(kid: "key\u{0}1")),
            lifecycle("RS256 kid with a forged log line", token: rs256(kid: "key\n" + forgedLine)),
            lifecycle("RS256 kid traversal", token: rs256(kid: "../../../etc/passwd")),
            lifecycle("RS256 kid of 4000", token: rs256(kid: String(repeating: "k", count: 4000))),
            lifecycle("NUL in clientKey", token: rs256(kid: "x\u{0}"), body: lifecycleBody(clientKey: "jira:evil\u{0}")),
            lifecycle("signed by an unknown key", token: try await signed(key: atlassian.unpublished)),
            lifecycle("another key under the published kid", token: try await signed(key: atlassian.unpublished, kid: atlassian.published.kid)),
            lifecycle("Atlassian-signed, another audience", token: try await signed(audience: "https://evil.example.com")),
            lifecycle("Atlassian-signed, iss is not the clientKey", token: try await signed(clientKey: "jira:someone-else")),
            lifecycle("Atlassian-signed, expired", token: try await signed(issuedAt: Date().addingTimeInterval(-3600))),
            lifecycle("Atlassian-signed for /uninstalled", token: try await signed(path: "/uninstalled")),
            lifecycle(
                "replace the site's secret, unknown key", token: try await signed(key: atlassian.unpublished, clientKey: connectSite),
                body: lifecycleBody(clientKey: connectSite)),
            lifecycle(
                "the site, alg none", "/uninstalled",
                token: HostileInputTests.jwt(header: ["alg": "none"], claims: ["iss": connectSite], secret: nil), body: uninstallSite),
            lifecycle(
                "the site, HS256 with its secret", "/uninstalled",
                token: HostileInputTests.jwt(header: hs256, claims: panelClaims(target: "/uninstalled"), secret: connectSecret), body: uninstallSite),
            lifecycle(
                "the site, unknown key", "/uninstalled",
                token: try await signed(key: atlassian.unpublished, clientKey: connectSite, path: "/uninstalled"), body: uninstallSite),
            lifecycle(
                "the site, Atlassian-signed for /installed", "/uninstalled", token: try await signed(clientKey: connectSite),
                body: uninstallSite),
            lifecycle("no JWT", "/uninstalled", token: nil, body: uninstallSite),
            Hostile(name: "/installed: GET", request: http("GET", "/installed"), expected: .status(404)),
        ]
    }

    /// Path traversal under `/public`, plain, percent-encoded, double-encoded, with NULs and
    /// control characters, overlong UTF-8 and backslashes; sent as written, nothing resolved.
    static func publicFileCases() -> [Hostile] {
        func file(_ name: String, _ target: String, _ expected: Hostile.Expected = .clientError) -> Hostile {
            Hostile(name: "public: \(name)", request: http("GET", target), expected: expected)
        }
        return [
            file("raw ../ to Package.swift", "/public/../Package.swift"),
            file("raw ../ to /etc/passwd", "/public/../../../../../../../../etc/passwd"),
            file("raw ./../", "/public/./../Package.swift"),
            file("raw ../ after a file", "/public/panel.js/../../Package.swift"),
            file("raw ../ to a migration", "/public/../Migrations/0001_tenants.sql"),
            file("raw ../ to .git", "/public/../.git/config"),
            file("%2e%2e/", "/public/%2e%2e/Package.swift", .status(400)),
            file("%2e%2e%2f", "/public/%2e%2e%2fPackage.swift", .status(400)),
            file("..%2f", "/public/..%2fPackage.swift", .status(400)),
            file("..%2F to /etc/passwd", "/public/..%2F..%2F..%2F..%2F..%2F..%2Fetc%2Fpasswd", .status(400)),
            file(".%2e/", "/public/.%2e/Package.swift", .status(400)),
            file("%2E%2E%2F to a migration", "/public/%2E%2E%2FMigrations%2F0001_tenants.sql", .status(400)),
            file("double-encoded ../", "/public/%252e%252e/Package.swift", .status(404)),
            file("double-encoded ..%2f", "/public/%252e%252e%252fPackage.swift", .status(404)),
            file("triple-encoded ../", "/public/%25252e%25252e%25252fPackage.swift", .status(404)),
            file("overlong UTF-8 ../", "/public/%c0%ae%c0%ae/Package.swift", .status(400)),
            file("three-byte overlong ../", "/public/%e0%80%ae%e0%80%ae%c0%af/Package.swift", .status(400)),
            file("encoded backslashes", "/public/..%5c..%5cPackage.swift"),
            file("raw backslashes", "/public/..\\..\\Package.swift"),
            file("NUL then .html", "/public/panel.js%00.html", .status(400)),
            file("NUL then ../", "/public/%00../Package.swift", .status(400)),
            file("double-encoded NUL", "/public/panel.js%2500.html", .status(404)),
            file("encoded newline", "/public/panel.js%0a.html", .status(400)),
            file("encoded CR LF", "/public/panel.js%0D%0A.html", .status(400)),
            file("C1 control", "/public/panel.js%C2%85.html", .status(400)),
            file("invalid percent-encoding", "/public/%ff%fe", .status(400)),
            file("truncated percent-encoding", "/public/panel.js%", .status(400)),
            file("absolute path", "/public//etc/passwd", .status(404)),
            file("a file name of 10,000", "/public/" + String(repeating: "a", count: 10_000), .status(404)),
            file("300 ../", "/public/" + String(repeating: "../", count: 300) + "etc/passwd"),
            file("the folder", "/public/", .status(404)),
            Hostile(name: "public: a file, POST", request: http("POST", "/public/panel.js", body: []), expected: .status(404)),
            file("NUL in the query of healthz", "/healthz?x=%00", .status(400)),
        ]
    }

    /// `/metrics` with `METRICS_TOKEN` set.
    static func metricsCases(_ fixture: Fixture) -> [Hostile] {
        let token = fixture.metricsToken
        var wrong = Array(token)
        wrong[0] = wrong[0] == "a" ? "b" : "a"
        func metrics(_ name: String, _ authorization: String?, expected: Hostile.Expected = .status(401)) -> Hostile {
            Hostile(
                name: "metrics: \(name)", request: http("GET", "/metrics", authorization.map { [("Authorization", $0)] } ?? []),
                expected: expected, carries: [token])
        }
        return [
            metrics("no token", nil),
            metrics("wrong token of the same length", "Bearer " + String(wrong)),
            metrics("the token's first half", "Bearer " + token.prefix(token.count / 2)),
            metrics("the token with a NUL after it", "Bearer " + token + "\u{0}", expected: .clientError),
            metrics("Basic credentials", "Basic " + Data("metrics:\(token)".utf8).base64EncodedString()),
            metrics("a token of 60 KB", "Bearer " + String(repeating: "m", count: 60_000)),
            Hostile(name: "metrics: POST", request: http("POST", "/metrics", body: []), expected: .status(404)),
            Hostile(name: "descriptor: DELETE", request: http("DELETE", "/atlassian-connect.json"), expected: .status(404)),
        ]
    }

    /// Request lines an HTTP client would never send. Those the HTTP parser cannot read at all
    /// may be answered by closing the connection; each says why it cannot be read.
    static func requestLineCases() -> [Hostile] {
        func line(_ name: String, _ text: String, _ expected: Hostile.Expected) -> Hostile {
            Hostile(name: "request line: \(name)", request: bytes(text), expected: expected)
        }
        func unreadable(_ why: String) -> Hostile.Expected { .clientErrorOrClosed(because: why) }
        let rest = " HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
        return [
            line("garbage", "GARBAGE\r\n\r\n", unreadable("one word, no target or version")),
            line("binary", "\u{0}\u{1}\u{2}\u{3}\r\n\r\n", unreadable("control bytes where the method goes")),
            Hostile(
                name: "request line: a TLS ClientHello",
                request: [0x16, 0x03, 0x01, 0x00, 0xA5, 0x01, 0x00, 0x00, 0xA1, 0x03, 0x03] + Array(repeating: 0x00, count: 64),
                expected: unreadable("TLS, not HTTP")),
            line("HTTP/2 preface", "PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n", unreadable("HTTP/2 on an HTTP/1.1 port")),
            line("version 9.9", "GET /healthz HTTP/9.9\r\nHost: x\r\nConnection: close\r\n\r\n", unreadable("no such HTTP version")),
            line("version missing a digit", "GET /healthz HTTP/1.\r\nHost: x\r\n\r\n", unreadable("the version is cut short")),
            line("a word after the version", "GET /healthz HTTP/1.1 extra\r\nHost: x\r\n\r\n", unreadable("four fields where three go")),
            line("lowercase method", "get /healthz HTTP/1.1\r\nHost: x\r\n\r\n", unreadable("methods are case-sensitive: no method get")),
            line("unknown method", "BREW /healthz" + rest, .clientError),
            line("method with NUL", "G\u{0}T /healthz HTTP/1.1\r\nHost: x\r\n\r\n", unreadable("NUL inside the method")),
            line("method of 200 letters", String(repeating: "G", count: 200) + " /healthz" + rest, .clientError),
            line("raw space in the target", "GET /public/panel .js" + rest, unreadable("the space ends the target: four fields")),
            line("raw NUL in the target", "GET /public/panel.js\u{0}.html" + rest, unreadable("NUL inside the target")),
            line("raw BEL in the target", "GET /healthz\u{7}" + rest, unreadable("a control byte inside the target")),
            line("raw DEL in the target", "GET /public/panel.js\u{7F}" + rest, unreadable("DEL inside the target")),
            Hostile(
                name: "request line: raw bytes that are not UTF-8", request: bytes("GET /public/") + [0xFF, 0xFE, 0xC0, 0xAE] + bytes(rest),
                expected: unreadable("bytes no URL may hold, unencoded")),
            line("a target without a slash", "GET healthz" + rest, unreadable("neither origin, absolute nor asterisk form")),
            line("asterisk form on GET", "GET *" + rest, .clientError),
            line("CONNECT to another port", "CONNECT 127.0.0.1:22 HTTP/1.1\r\nHost: 127.0.0.1:22\r\n\r\n", .clientError),
            line("absolute form, raw ../", "GET http://127.0.0.1/public/../Package.swift" + rest, .clientError),
            line("a target of 100 KB", "GET /public/" + String(repeating: "a", count: 100_000) + rest, .clientError),
            line("bare LF line ends", "POST /api/issues/10001/heartbeat HTTP/1.1\nHost: x\nContent-Length: 0\nConnection: close\n\n", .clientError),
        ]
    }

    /// Hostile header fields, on a route that refuses the request anyway when they are read:
    /// the point is what the server does with the bytes, not the route's answer.
    static func headerCases(_ fixture: Fixture) -> [Hostile] {
        let beat = "POST /api/issues/10001/heartbeat HTTP/1.1\r\nConnection: close\r\nContent-Length: 0\r\n"
        func header(
            _ name: String, _ fields: String, host: String? = "Host: x\r\n", expected: Hostile.Expected = .clientError, carries: [String] = []
        ) -> Hostile {
            Hostile(name: "header: \(name)", request: bytes(beat + (host ?? "") + fields + "\r\n"), expected: expected, carries: carries)
        }
        let tampered = String(fixture.ticket.reversed())
        return [
            header("a name with a space", "Bad Header: x\r\n"),
            header("no colon", "NoColonHere\r\n"),
            header("a name with @", "X@Y: z\r\n"),
            header("space before the colon", "Authorization : Ticket x\r\n"),
            header("NUL in a value", "X-Thing: a\u{0}b\r\n"),
            header("bare CR in a value", "X-Thing: a\rb\r\n"),
            header("obsolete line folding", "Authorization: Ticket\r\n garbage\r\n"),
            header("NUL in the ticket", "Authorization: Ticket " + fixture.ticket + "\u{0}\r\n", carries: [fixture.ticket]),
            header("two tampered tickets", "Authorization: Ticket \(tampered)\r\nAuthorization: Ticket garbage\r\n", expected: .status(401)),
            header("no Host", "", host: nil, expected: .status(401)),
            header("two Hosts", "Host: evil.example.com\r\n", expected: .status(401)),
            header("Host with a NUL", "", host: "Host: evil\u{0}.example.com\r\n"),
            header("1,000 fields", (0..<1000).map { "X-F\($0): v\r\n" }.joined()),
            header("one field of 100 KB", "X-Big: " + String(repeating: "b", count: 100_000) + "\r\n"),
            header("a ticket of 100 KB", "Authorization: Ticket " + String(repeating: "t", count: 100_000) + "\r\n"),
            Hostile(
                name: "header: bytes that are not UTF-8 in the ticket",
                request: bytes(beat + "Host: x\r\nAuthorization: Ticket ") + [0xFF, 0xFE, 0x80] + bytes("\r\n\r\n"), expected: .status(401)),
            Hostile(
                name: "header: the real system token with no invocation token",
                request: http(
                    "POST", "/forge/heartbeat", [("Content-Type", "application/json"), ("x-forge-oauth-system", fixture.systemToken)],
                    body: bytes(#"{"tabId":"tab-1"}"#)),
                expected: .status(401), carries: [fixture.systemToken]),
        ]
    }

    /// Conflicting or malformed message framing (`Content-Length`, `Transfer-Encoding`, chunks),
    /// each followed by a second request that would answer 200 if the server took the framing
    /// one way and kept the connection: an answer that is not a 4xx is a smuggled request served.
    static func framingCases() -> [Hostile] {
        let smuggled = "GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n"
        let leave = "POST /api/issues/10001/leave HTTP/1.1\r\nHost: x\r\nContent-Type: text/plain\r\n"
        func framing(_ name: String, _ text: String, _ expected: Hostile.Expected = .status(400)) -> Hostile {
            Hostile(name: "framing: \(name)", request: bytes(text), expected: expected)
        }
        return [
            framing(
                "Content-Length and chunked", leave + "Content-Length: 4\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n" + smuggled, .clientError),
            framing(
                "chunked and Content-Length", leave + "Transfer-Encoding: chunked\r\nContent-Length: 40\r\n\r\n0\r\n\r\n" + smuggled, .clientError),
            framing("two different Content-Lengths", leave + "Content-Length: 0\r\nContent-Length: 34\r\n\r\n" + smuggled),
            framing("a Content-Length list", leave + "Content-Length: 0, 34\r\n\r\n" + smuggled),
            framing("negative Content-Length", leave + "Content-Length: -1\r\n\r\n" + smuggled),
            framing("Content-Length not a number", leave + "Content-Length: abc\r\n\r\n" + smuggled),
            framing("Content-Length with a plus", leave + "Content-Length: +4\r\n\r\nabcd" + smuggled),
            framing("Content-Length in hex", leave + "Content-Length: 0x4\r\n\r\nabcd" + smuggled),
            framing("Content-Length past 2^64", leave + "Content-Length: 18446744073709551617\r\n\r\n" + smuggled, .clientError),
            framing("chunked twice", leave + "Transfer-Encoding: chunked, chunked\r\n\r\n0\r\n\r\n" + smuggled, .clientError),
            framing("gzip, not chunked", leave + "Transfer-Encoding: gzip\r\n\r\n0\r\n\r\n" + smuggled, .clientError),
            framing("xchunked", leave + "Transfer-Encoding: xchunked\r\nContent-Length: 5\r\n\r\n0\r\n\r\n" + smuggled, .clientError),
            framing("chunked on a folded line", leave + "Transfer-Encoding:\r\n chunked\r\n\r\n0\r\n\r\n" + smuggled, .clientError),
            framing("space before the colon", leave + "Transfer-Encoding : chunked\r\n\r\n0\r\n\r\n" + smuggled),
            framing("chunk size not hex", leave + "Transfer-Encoding: chunked\r\n\r\nzz\r\nabc\r\n0\r\n\r\n" + smuggled),
            framing("chunk size past 2^64", leave + "Transfer-Encoding: chunked\r\n\r\nfffffffffffffffffffff\r\nabc\r\n0\r\n\r\n" + smuggled),
            framing("chunk longer than its size", leave + "Transfer-Encoding: chunked\r\n\r\n3\r\nabcdef\r\n0\r\n\r\n" + smuggled),
            framing(
                "chunk size not hex, unsigned install",
                "POST /installed HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n2\r\n{}\r\nzz\r\n\r\n"),
            framing(
                "chunked on HTTP/1.0",
                "POST /api/issues/10001/leave HTTP/1.0\r\nHost: x\r\nTransfer-Encoding: chunked\r\nContent-Length: 3\r\n\r\n0\r\n\r\n" + smuggled,
                .clientError),
            // Well framed (an extension is legal, however long): no second request, the route refuses the body.
            framing(
                "chunk extension of 100 KB",
                leave + "Connection: close\r\nTransfer-Encoding: chunked\r\n\r\n1;" + String(repeating: "e", count: 100_000) + "\r\na\r\n0\r\n\r\n",
                .status(401)),
            framing(
                "chunked body over 64 KB",
                "POST /installed HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n"
                    + String(repeating: "4000\r\n" + String(repeating: " ", count: 0x4000) + "\r\n", count: 8) + "0\r\n\r\n", .status(413)),
            framing(
                "declared 10 GB, 70 KB of it sent",
                "POST /installed HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 10000000000\r\n\r\n"
                    + String(repeating: " ", count: 70_000), .status(413)),
            framing(
                "declared 10 GB, expecting 100-continue, 70 KB sent",
                "POST /installed HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nExpect: 100-continue\r\nContent-Length: 10000000000\r\n\r\n"
                    + String(repeating: " ", count: 70_000), .status(413)),
        ]
    }

    // MARK: Running it

    @Test func everyHostileRequestIsRefusedWithA4xxStoresNothingAndLeavesTheServerAnswering() async throws {
        let jira = JiraStandIn()
        let forge = try FakeForge()
        let atlassian = try FakeAtlassian()
        await jira.addSite("hostile", sharedSecret: Self.connectSecret)
        await jira.addUser(accountId: Self.mallory, displayName: "Mallory")
        await jira.addUser(accountId: Self.alice, displayName: "Alice")
        let systemToken = FakeForge.systemToken()
        await jira.addForgeSite("forge-site", systemToken: systemToken)
        let metricsToken = "metrics-" + UUID().uuidString.lowercased()
        try await jira.serve { jiraURL in
            try await forge.withJWKS { jwksURL in
                try await atlassian.withKeyServer { keysURL in
                    let environment = [
                        "BASE_URL": Self.baseURL, "FORGE_APP_ID": FakeForge.appID, "FORGE_JWKS_URL": jwksURL, "CONNECT_INSTALL_KEYS_URL": keysURL,
                        "METRICS_TOKEN": metricsToken, "JWT_LEEWAY_SECONDS": "5", "LOG_LEVEL": "info",
                        "PUBLIC_DIR": SharedMaterial.projectRoot.appendingPathComponent("Public").path,
                        // An incomplete request gives up its connection after 2 s, not 30.
                        "HTTP_REQUEST_TIMEOUT_SECONDS": "2",
                        // Nothing expires, is swept, refetched or reported while the catalogue runs:
                        // every change to the tables would be a hostile request's doing.
                        "VIEWER_TTL_SECONDS": "3600", "SWEEP_INTERVAL_SECONDS": "3600", "METRICS_REFRESH_SECONDS": "3600",
                        "PERSONAL_DATA_REPORT_INTERVAL_SECONDS": "86400", "PERSONAL_DATA_REPORT_URL": "\(jiraURL)/app/report-accounts/",
                    ]
                    try await ServedApp.with(environment: environment, name: "hostile-exe") { app in
                        let admin = PostgresPool(configuration: .init(conninfo: app.conninfo, maxConnections: 1), logger: TestDatabase.logger)
                        do {
                            let fixture = try await Self.setUp(
                                app: app, admin: admin, jiraURL: jiraURL, forge: forge, atlassian: atlassian, systemToken: systemToken,
                                metricsToken: metricsToken)
                            try await Self.run(try await Self.catalogue(fixture), against: app, admin: admin, fixture: fixture)
                        } catch {
                            await admin.close()
                            throw error
                        }
                        await admin.close()
                    }
                }
            }
        }
    }

    /// Two sites (one uninstalled), Mallory's panels on two issues, a Forge installation with
    /// Alice heartbeating, an uninstalled one, and both names fetched: then nothing moves.
    static func setUp(
        app: ServedApp, admin: PostgresPool, jiraURL: String, forge: FakeForge, atlassian: FakeAtlassian, systemToken: String, metricsToken: String
    ) async throws -> Fixture {
        let tenants = TenantRepository(pool: admin, secrets: try SecretBox(base64Key: app.key))
        try await tenants.install(
            TenantInstallation(
                clientKey: connectSite, baseURL: URL(string: "\(jiraURL)/hostile")!, productType: "jira", sharedSecret: connectSecret))
        try await tenants.install(
            TenantInstallation(clientKey: goneSite, baseURL: URL(string: "\(jiraURL)/gone")!, productType: "jira", sharedSecret: goneSecret))
        #expect(try await tenants.uninstall(clientKey: goneSite))

        func ok(_ request: [UInt8], _ what: String) async throws -> RawResponse {
            let exchange = try await exchange(request, port: app.port)
            let answer = try #require(exchange.responses.first, "\(what): no answer")
            try #require(answer.status == 200, "\(what): \(answer.status) \(String(decoding: answer.body, as: UTF8.self))")
            return answer
        }
        func ticket(_ target: String) async throws -> String {
            let page = try await ok(http("GET", target + "&jwt=" + panelJWT(target: target)), "the panel at \(target)")
            return try #require(TestApp.ticket(in: String(decoding: page.body, as: UTF8.self)), "no ticket in the panel")
        }
        var fixture = Fixture(
            port: app.port, secretKey: app.key, metricsToken: metricsToken, systemToken: systemToken, jiraURL: jiraURL, forge: forge,
            atlassian: atlassian, ticket: "", secondTicket: "")
        fixture.ticket = try await ticket(panelTarget)
        fixture.secondTicket = try await ticket(secondPanelTarget)

        let aliceToken = try await forge.token(fixture.forgeClaims())
        _ = try await ok(
            http(
                "POST", "/forge/heartbeat",
                [
                    ("Content-Type", "application/json"), ("Authorization", "Bearer " + aliceToken), ("x-forge-oauth-system", systemToken),
                    ("x-forge-oauth-user", JiraStandIn.userToken(alice)),
                ],
                body: bytes(#"{"tabId":"tab-1"}"#)), "Alice's Forge heartbeat")
        let uninstallClaims = FakeForge.triggerClaims(endpoint: "wl-uninstall", installationID: goneInstallation, apiBaseURL: "\(jiraURL)/forge-site")
        _ = try await ok(
            http(
                "POST", "/forge/uninstall",
                [("Content-Type", "application/json"), ("Authorization", "Bearer " + (try await forge.token(uninstallClaims)))],
                body: bytes(preUninstallBody)), "the Forge uninstall")

        let named = await eventually(timeout: .seconds(20)) {
            try await admin.query("SELECT count(*) AS n FROM user_details WHERE status = 'found'")[0].decode(Int.self, "n") == 2
        }
        try #require(named, "Mallory's and Alice's names were never fetched:\n\(app.service.output.suffix(3000))")
        return fixture
    }

    /// The three tables' row counts and a digest of every row.
    struct Snapshot: Equatable, CustomStringConvertible {
        var tenants: Int
        var viewers: Int
        var userDetails: Int
        var digest: String
        var description: String { "tenants \(tenants), viewers \(viewers), user_details \(userDetails), digest \(digest.prefix(8))" }
    }

    static func snapshot(_ pool: PostgresPool) async throws -> Snapshot {
        let row = try await pool.query(
            """
            SELECT (SELECT count(*) FROM tenants) AS tenants, (SELECT count(*) FROM viewers) AS viewers,
                   (SELECT count(*) FROM user_details) AS user_details,
                   md5(coalesce((SELECT string_agg(t::text, '|' ORDER BY t::text) FROM tenants t), '')
                       || coalesce((SELECT string_agg(v::text, '|' ORDER BY v::text) FROM viewers v), '')
                       || coalesce((SELECT string_agg(u::text, '|' ORDER BY u::text) FROM user_details u), '')) AS digest
            """)[0]
        return Snapshot(
            tenants: try row.decode(Int.self, "tenants"), viewers: try row.decode(Int.self, "viewers"),
            userDetails: try row.decode(Int.self, "user_details"), digest: try row.decode(String.self, "digest"))
    }

    static func run(_ cases: [Hostile], against app: ServedApp, admin: PostgresPool, fixture: Fixture) async throws {
        #expect(cases.count >= 100, "\(cases.count) cases")
        // The stand-ins are on loopback over plain http: the start-up log names each such trust anchor, once.
        let relaxed = app.service.output.components(separatedBy: "\n").filter { $0.contains("trust relaxed: plain http on loopback") }
        #expect(relaxed.count == 1 && relaxed.first?.contains("PERSONAL_DATA_REPORT_URL") == true, "\(relaxed)")
        let names = cases.map(\.name)
        #expect(Set(names).count == names.count, "names repeat: \(Dictionary(grouping: names) { $0 }.filter { $0.value.count > 1 }.keys)")
        var baseline = try await snapshot(admin)
        // Two Connect sites and two Forge installations; Mallory on two issues and Alice on one; two names.
        #expect([baseline.tenants, baseline.viewers, baseline.userDetails] as [Int] == [4, 3, 2], "\(baseline)")
        // The secret key, both sites' shared secrets, the one lifecycle bodies offer, and every credential of the set-up.
        let secrets = [
            fixture.secretKey, connectSecret, goneSecret, "an-attackers-secret-0123456789", fixture.metricsToken, fixture.systemToken,
            fixture.ticket, fixture.secondTicket,
        ]
        for hostile in cases {
            let exchange = try await exchange(hostile.request, port: app.port)
            for problem in problems(in: exchange, for: hostile, secrets: secrets) {
                Issue.record("\(hostile.name): \(problem)")
            }
            guard app.service.process.isRunning else {
                Issue.record("\(hostile.name): the server died:\n\(app.service.output.suffix(4000))")
                return
            }
            let health = await app.answers("/healthz")
            #expect(health == 200, "\(hostile.name): /healthz answered \(String(describing: health)) afterwards")
            let after = try await snapshot(admin)
            if after != baseline {
                Issue.record("\(hostile.name) changed what is stored: \(baseline) → \(after)")
                baseline = after
            }
        }
        // The set-up's own credentials still work: each refusal above was the hostile change.
        let ticketBeat = try await exchange(
            http("POST", "/api/issues/10001/heartbeat", [("Authorization", "Ticket " + fixture.ticket)], body: []), port: app.port)
        #expect(ticketBeat.responses.first?.status == 200)
        let forgeBeat = try await exchange(
            http(
                "POST", "/forge/heartbeat",
                [("Content-Type", "application/json"), ("Authorization", "Bearer " + (try await fixture.forge.token(fixture.forgeClaims())))],
                body: bytes(#"{"tabId":"tab-1"}"#)), port: app.port)
        #expect(forgeBeat.responses.first?.status == 200)
        let metrics = try await exchange(http("GET", "/metrics", [("Authorization", "Bearer " + fixture.metricsToken)]), port: app.port)
        #expect(metrics.responses.first?.status == 200)
    }

    /// What is wrong with how the server answered `hostile`; empty when nothing is.
    static func problems(in exchange: Exchange, for hostile: Hostile, secrets: [String]) -> [String] {
        var problems: [String] = []
        let statuses = exchange.responses.map(\.status)
        if exchange.responses.isEmpty {
            switch (hostile.expected, exchange.closed) {
            case (.clientErrorOrClosed, true) where exchange.leftover == 0: break
            case (_, true): problems.append("closed with no complete answer (\(exchange.leftover) bytes of one), expected \(hostile.expected)")
            case (_, false): problems.append("no answer within the time allowed, connection still open, expected \(hostile.expected)")
            }
        } else {
            // A second answer is a second request read from the same bytes (smuggled): it must be refused too.
            let allRefused = statuses.allSatisfy { (400..<500).contains($0) }
            let firstAsExpected: Bool
            if case .status(let expected) = hostile.expected { firstAsExpected = statuses.first == expected } else { firstAsExpected = true }
            if !allRefused || !firstAsExpected {
                problems.append("answered \(statuses), expected \(hostile.expected)\n\(exchange.text.prefix(600))")
            }
            if exchange.leftover > 0 { problems.append("an answer cut short after \(exchange.leftover) bytes") }
        }
        let text = exchange.text
        for tellTale in tellTales where text.contains(tellTale) {
            problems.append("the answer shows \"\(tellTale)\":\n\(text.prefix(600))")
        }
        for secret in (secrets + hostile.carries).filter({ $0.utf8.count >= 16 }) where text.contains(secret) {
            problems.append("the answer repeats a secret or token (\(secret.prefix(12))…)")
        }
        return problems
    }

    // MARK: Raw exchanges

    /// What came back on one connection: the complete final answers (interim 1xx left out), the
    /// bytes of an incomplete one, and whether the server closed the connection.
    struct Exchange: Sendable {
        var responses: [RawResponse]
        var leftover: Int
        var closed: Bool
        var raw: [UInt8]

        /// Every answer's head and body, for the leak checks and messages.
        var text: String { String(decoding: raw, as: UTF8.self) }
    }

    /// Sends `request` on a connection of its own and collects the answers until the server
    /// closes it, or an answer is complete and nothing more arrives for a moment (a second,
    /// smuggled request would be answered within it), or `timeout` passes.
    static func exchange(_ request: [UInt8], port: Int, timeout: Duration = .seconds(6)) async throws -> Exchange {
        let connection = try await RawConnection.open(port: port)
        defer { connection.close() }
        // The server may answer and close before all of a large request is written: not an error here.
        try? await connection.send(bytes: request)
        let deadline = ContinuousClock.now + timeout
        var seen = -1
        var quietSince = ContinuousClock.now
        while ContinuousClock.now < deadline, !connection.isClosed {
            let received = connection.received
            if received.count != seen {
                seen = received.count
                quietSince = .now
            } else if ContinuousClock.now - quietSince >= .milliseconds(300) {
                let parsed = RawResponse.parse(received)
                if parsed.leftover == 0, parsed.responses.contains(where: { $0.status >= 200 }) { break }
            }
            try await Task.sleep(for: .milliseconds(5))
        }
        let received = connection.received
        let parsed = RawResponse.parse(received)
        return Exchange(
            responses: parsed.responses.filter { !(100..<200).contains($0.status) }, leftover: parsed.leftover, closed: connection.isClosed,
            raw: received)
    }
}

extension RawConnection {
    /// Sends bytes that need not be UTF-8.
    func send(bytes: [UInt8]) async throws {
        try await channel.writeAndFlush(ByteBuffer(bytes: bytes)).get()
    }
}
