import AsyncHTTPClient
import TextCoding
import Connect
import Crypto
import Forge
import Foundation
import Hummingbird
import HummingbirdTesting
import Libpq
import Logging
import Presence
import Synchronization
import Tenants
import TestSupport
import Testing

@testable import WhosLookingApp

/// Bad bytes from outside (issue 12, defect 11): whatever nobody has verified yet is refused
/// with a 4xx before it reaches the database, the file system or a log line, and no answer
/// gives anything away.
@Suite("Hostile input", .timeLimit(.minutes(3)))
struct HostileInputTests {
    static let tenant = TenantInstallation(
        clientKey: "jira:hostile", baseURL: URL(string: "https://hostile.atlassian.net")!, productType: "jira",
        sharedSecret: "hostile-tenant-secret-0123456789abc"
    )
    static let panelTarget = "/panel?issueId=10001&issueKey=DEMO-1&projectId=100&projectKey=DEMO"
    /// A line an attacker would like to see in the log, as if the app had written it.
    static let forgedLine = "2030-01-01T00:00:00+0000 critical whoslooking: FORGED-LOG-LINE"

    // MARK: Tokens of any shape

    /// A JWT with any header and claims (JSON objects), HS256-signed with `secret` (or with a
    /// junk signature when nil).
    static func jwt(header: [String: Any], claims: [String: Any], secret: String?) -> String {
        func part(_ object: [String: Any]) -> String {
            (try! JSONSerialization.data(withJSONObject: object, options: [.sortedKeys])).base64URLEncodedString()
        }
        let input = part(header) + "." + part(claims)
        guard let secret else { return input + ".c2lnbmF0dXJl" }
        let mac = HMAC<SHA256>.authenticationCode(for: Data(input.utf8), using: SymmetricKey(data: Data(secret.utf8)))
        return input + "." + Data(mac).base64URLEncodedString()
    }

    /// Claims the panel at `target` would accept from the tenant, changed by `change`.
    static func claims(target: String = panelTarget, _ change: (inout [String: Any]) -> Void = { _ in }) -> [String: Any] {
        let now = Date().timeIntervalSince1970
        var claims: [String: Any] = [
            "iss": tenant.clientKey, "sub": "account-mallory", "iat": now, "exp": now + 180,
            "qsh": CanonicalRequest(method: "GET", target: target).qsh,
        ]
        change(&claims)
        return claims
    }

    static func panelToken(
        target: String = panelTarget, header: [String: Any] = ["alg": "HS256", "typ": "JWT"], _ change: (inout [String: Any]) -> Void = { _ in }
    ) -> String {
        jwt(header: header, claims: claims(target: target, change), secret: tenant.sharedSecret)
    }

    struct Answer {
        var status: HTTPResponse.Status
        var headers: HTTPFields
        var body: String
        /// The message of a Hummingbird error answer (`{"error":{"message":…}}`), decoded.
        var message: String? {
            struct Envelope: Decodable {
                struct Inner: Decodable { var message: String }
                var error: Inner
            }
            return try? JSONDecoder().decode(Envelope.self, from: Data(body.utf8)).error.message
        }
    }

    func get(_ client: some TestClientProtocol, _ uri: String, headers: HTTPFields = [:]) async throws -> Answer {
        try await client.execute(uri: uri, method: .get, headers: headers) {
            Answer(status: $0.status, headers: $0.headers, body: String(buffer: $0.body))
        }
    }

    func withTenant(_ body: @escaping @Sendable (TestApp, any TestClientProtocol) async throws -> Void) async throws {
        try await TestApp.with { testApp, app in
            try await testApp.tenants.install(Self.tenant)
            try await app.test(.router) { client in try await body(testApp, client) }
        }
    }

    static func hasControlCharacter(_ text: String) -> Bool {
        text.unicodeScalars.contains { $0.value < 0x20 || (0x7F...0x9F).contains($0.value) || $0.value == 0x2028 || $0.value == 0x2029 }
    }

    // MARK: (a) an unverified iss never reaches the database

    static let badIssuers: [(String, String)] = [
        ("NUL", "jira:hostile\u{0}"),
        ("only NUL", "\u{0}"),
        ("newline", "jira:hostile\n" + forgedLine),
        ("carriage return", "jira:\rhostile"),
        ("DEL", "jira:hostile\u{7F}"),
        ("C1 control", "jira:hostile\u{85}"),
        ("256 bytes", String(repeating: "k", count: 256)),
        ("4 KB", String(repeating: "é", count: 2048)),
        ("empty", ""),
    ]

    /// A NUL in `iss` was looked up in PostgreSQL, which cannot hold it in text: a 500 and an
    /// error log for anyone who sends one.
    @Test func anIssuerThatCannotBeAClientKeyIsRefusedWith401() async throws {
        try await withTenant { _, client in
            for (name, issuer) in Self.badIssuers {
                let token = Self.panelToken { $0["iss"] = issuer }
                let answer = try await get(client, Self.panelTarget + "&jwt=" + token)
                #expect(answer.status == .unauthorized, "\(name): \(answer.body)")
                #expect(answer.message == "JWT iss is not a client key", "\(name): \(answer.body)")
            }
            // The same check lets a real client key through.
            let good = try await get(client, Self.panelTarget + "&jwt=" + Self.panelToken())
            #expect(good.status == .ok)
        }
    }

    /// The refusal comes before any database call: with no database at all it is still a 401
    /// (a lookup would have been a 503).
    @Test func anIssuerIsRefusedBeforeAnyDatabaseCall() async throws {
        let pool = PostgresPool(
            configuration: .init(conninfo: "host=/nonexistent/socket-folder user=nobody dbname=none", maxConnections: 1, connectTimeoutSeconds: 1),
            logger: TestDatabase.logger
        )
        let configuration = try TestApp.configuration()
        let app = buildApplication(
            configuration: configuration, pool: pool, secrets: try configuration.resolveSecretBox(), metrics: TestApp.metrics,
            logger: TestDatabase.logger
        )
        try await app.test(.router) { client in
            for (name, issuer) in Self.badIssuers {
                let answer = try await get(client, Self.panelTarget + "&jwt=" + Self.panelToken { $0["iss"] = issuer })
                #expect(answer.status == .unauthorized, "\(name): \(answer.status) \(answer.body)")
            }
            // A plausible issuer does need the database, which is down.
            let plausible = try await get(client, Self.panelTarget + "&jwt=" + Self.panelToken())
            #expect(plausible.status == .serviceUnavailable)
        }
        await pool.close()
    }

    // MARK: (b) rejection reasons and log lines

    /// The header's `alg` is the caller's text: a refusal names the check, never the value.
    @Test func rejectionReasonsNeverEchoTheAlgorithm() {
        #expect(TokenRejection.algorithmNotAllowed.reason == "JWT algorithm not allowed here")
        #expect(ForgeTokenRejection.algorithmNotAllowed.reason == "token algorithm not allowed")
        for reason in [TokenRejection.algorithmNotAllowed.reason, ForgeTokenRejection.algorithmNotAllowed.reason] {
            #expect(!Self.hasControlCharacter(reason) && !reason.contains("HS256") && !reason.contains("none"), "\(reason)")
        }
    }

    /// A newline in `alg` came back in the 401's reason (and went into the log line as it was).
    @Test func aControlCharacterInTheHeaderIsNotReflected() async throws {
        try await withTenant { _, client in
            for alg in ["HS256\n" + Self.forgedLine, "HS256\r\n" + Self.forgedLine, "none\u{0}", String(repeating: "X", count: 5000)] {
                let token = Self.panelToken(header: ["alg": alg, "typ": "JWT"])
                let answer = try await get(client, Self.panelTarget + "&jwt=" + token)
                #expect(answer.status == .unauthorized)
                let message = try #require(answer.message, "\(answer.body)")
                #expect(!Self.hasControlCharacter(message), "\(message)")
                #expect(message.count < 80, "\(message)")
            }
        }
    }

    /// Collects what a log handler writes.
    final class Lines: Sendable {
        let storage = Mutex<[String]>([])
        var all: [String] { storage.withLock { $0 } }
        var text: String { all.joined() }
        func append(_ line: String) { storage.withLock { $0.append(line) } }
    }

    static let hostileValues = [
        "a\nb", "a\r\nb", "tab\there", "nul\u{0}", "esc\u{1B}[2J", "del\u{7F}", "c1\u{9B}31m", "ls\u{2028}ps\u{2029}", "bidi\u{202E}txt",
        "back\\slash", "quote\"", "ünïcødé and 🙂",
    ]

    /// A value with blanks and `=` (a Forge `eventType`, a path) cannot pose as more keys.
    @Test func aTextLogValueCannotPoseAsMoreKeys() {
        let lines = Lines()
        let logger = Logger(label: "test") { label in TextLogHandler(label: label, output: lines.append) }
        logger.info("event", metadata: ["event": "x level=error user=admin", "empty": "", "quoted": #"say "hi""#])
        let line = lines.text
        #expect(line.contains(#" event="x level=error user=admin" "#), "\(line)")
        #expect(line.contains(#" empty="" "#) && line.contains(#" quoted="say \"hi\"" "#), "\(line)")
        #expect(!line.contains(" level=error user=admin "), "\(line)")
    }

    @Test func theTextLogWritesOneLinePerEventWithControlCharactersEscaped() {
        let lines = Lines()
        var logger = Logger(label: "test\nlabel") { label in TextLogHandler(label: label, output: lines.append) }
        logger.logLevel = .debug
        for value in Self.hostileValues {
            logger.info("message \(value)", metadata: ["reason": "\(value)", "nested": ["list": .array([.string(value)])]])
        }
        #expect(lines.all.count == Self.hostileValues.count)
        for (line, value) in zip(lines.all, Self.hostileValues) {
            #expect(line.hasSuffix("\n"))
            let body = line.dropLast()
            #expect(!Self.hasControlCharacter(String(body)), "\(line.debugDescription)")
            #expect(!body.unicodeScalars.contains("\u{202E}"), "\(line.debugDescription)")
            #expect(body.contains(" info test\\nlabel: "), "\(line)")
            #expect(body.contains("[WhosLookingAppTests] message \(TextLogHandler.escape(value))"), "\(line)")
            #expect(body.contains(" reason=\(TextLogHandler.value(value)) "), "\(line)")
        }
        #expect(TextLogHandler.escape("a\nb\r\tc\\d\u{0}\u{202E}") == #"a\nb\r\tc\\d\u{0}\u{202e}"#)
        #expect(TextLogHandler.escape("plain text: ünïcødé 🙂") == "plain text: ünïcødé 🙂")
    }

    @Test func theJSONLogWritesOneObjectPerLineThatReadsBackExactly() throws {
        let lines = Lines()
        let logger = Logger(label: "json") { label in JSONLogHandler(label: label, output: lines.append) }
        for value in Self.hostileValues {
            logger.info("message \(value)", metadata: ["reason": "\(value)", "list": .array([.string(value)]), "map": ["k": .string(value)]])
        }
        #expect(lines.all.count == Self.hostileValues.count)
        for (line, value) in zip(lines.all, Self.hostileValues) {
            #expect(line.hasSuffix("\n"))
            #expect(!Self.hasControlCharacter(String(line.dropLast())), "\(line.debugDescription)")
            #expect(!line.unicodeScalars.contains("\u{202E}"), "\(line.debugDescription)")
            let object = try #require(try JSONSerialization.jsonObject(with: Data(line.utf8)) as? [String: Any], "\(line)")
            #expect(object["message"] as? String == "message \(value)")
            #expect(object["reason"] as? String == value)
            #expect(object["list"] as? [String] == [value])
            #expect(object["map"] as? [String: String] == ["k": value])
            #expect(object["level"] as? String == "info")
            #expect(object["label"] as? String == "json")
        }
    }

    /// Through the real executable and its default text log: a JWT whose `alg` holds a newline
    /// and a whole log line used to print that line as if the app had written it.
    @Test(arguments: ["text", "json"])
    func aForgedLogLineNeverReachesTheLog(format: String) async throws {
        try await TestDatabase.withScratchDatabase { conninfo in
            let port = try FreePort.next()
            let service = try ChildService(
                arguments: ["serve"],
                environment: [
                    "DATABASE_URL": conninfo, "PORT": String(port), "BASE_URL": "http://localhost:\(port)", "LOG_FORMAT": format,
                    "SECRET_ENCRYPTION_KEY": SecretBox.generateKey(),
                    "MIGRATIONS_DIR": SharedMaterial.projectRoot.appendingPathComponent("Migrations").path,
                    "PUBLIC_DIR": SharedMaterial.projectRoot.appendingPathComponent("Public").path,
                ], name: "hostile-log-\(format)")
            defer { service.stop() }
            #expect(await ChildService.waitFor("http://127.0.0.1:\(port)/readyz"), "never ready:\n\(service.output)")
            for alg in ["HS256\n" + Self.forgedLine, "HS256\r\n" + Self.forgedLine, "HS256\u{2028}" + Self.forgedLine] {
                let token = Self.jwt(header: ["alg": alg], claims: Self.claims(), secret: "whatever")
                let response = try await HTTPClient.shared.execute(
                    HTTPClientRequest(url: "http://127.0.0.1:\(port)\(Self.panelTarget)&jwt=\(token)"), timeout: .seconds(10))
                _ = try await response.body.collect(upTo: 1 << 16)
                #expect(response.status == .unauthorized)
            }
            #expect(await eventually(timeout: .seconds(10)) { service.output.components(separatedBy: "JWT refused").count == 4 }, "\(service.output)")
            await service.stopAndWait()
            let output = service.output
            let lines = output.split(omittingEmptySubsequences: true) { $0 == "\n" || $0 == "\r" || $0 == "\u{2028}" }
            let forged = lines.filter { $0.hasPrefix(Self.forgedLine.prefix(20)) || $0.hasPrefix("\u{2028}") }
            #expect(forged.isEmpty, "a forged line in the log:\n\(output)")
            #expect(!output.contains("\u{2028}"), "a line separator in the log:\n\(output)")
            let refused = lines.filter { $0.contains("JWT refused") }
            #expect(refused.count == 3, "\(output)")
            for line in refused {
                #expect(line.contains("FORGED-LOG-LINE") == false || line.contains("JWT algorithm HS256\\"), "\(line)")
                if format == "json" {
                    #expect((try? JSONSerialization.jsonObject(with: Data(line.utf8))) != nil, "not one JSON object: \(line)")
                }
            }
        }
    }

    // MARK: (c) control characters in a path or query

    /// FileMiddleware decoded `%00` and the file system stopped there: `/public/panel.js%00.html`
    /// was panel.js served as `text/html`.
    @Test func aControlCharacterInAPathIsRefusedBeforeTheFileMiddleware() async throws {
        try await withTenant { _, client in
            for path in [
                "/public/panel.js%00.html", "/public/panel.js%00", "/public/avatar-default.svg%00.html", "/public/panel.js%0a.html",
                "/public/panel.js%0D%0A.html", "/public/panel.js%1f.html", "/public/panel.js%7F.html", "/public/%00", "/public/panel.js%c0%80.html",
                "/public/panel.js%C2%85.html", "/public/panel.js%E2%80%A8.html",
            ] {
                let answer = try await get(client, path)
                #expect(answer.status == .badRequest, "\(path): \(answer.status)")
                #expect(answer.headers[.contentType]?.contains("html") != true, "\(path)")
                #expect(!answer.body.contains("use strict"), "\(path) served panel.js")
            }
            // Files are still served, and percent-encoding that decodes to ordinary characters works.
            #expect(try await get(client, "/public/panel.js").status == .ok)
            #expect(try await get(client, "/public/panel%2Ejs").status == .ok)
        }
    }

    /// Signed by the tenant, so not forged, but a value PostgreSQL cannot hold: refused, not a 500.
    @Test func controlCharactersInSignedValuesAreRefusedNot500() async throws {
        try await withTenant { testApp, client in
            let target = "/panel?issueId=10001&issueKey=DEMO-1%00&projectId=100&projectKey=DEMO"
            let nulKey = try await get(client, target + "&jwt=" + Self.panelToken(target: target))
            #expect(nulKey.status == .badRequest, "\(nulKey.body)")
            let nulAccount = try await get(client, Self.panelTarget + "&jwt=" + Self.panelToken { $0["sub"] = "account\u{0}mallory" })
            #expect(nulAccount.status == .unauthorized, "\(nulAccount.body)")
            #expect(nulAccount.message == "JWT sub is not an account id")
            let longAccount = try await get(client, Self.panelTarget + "&jwt=" + Self.panelToken { $0["sub"] = String(repeating: "a", count: 300) })
            #expect(longAccount.status == .unauthorized)
            #expect(try await testApp.pool.query("SELECT count(*) AS n FROM viewers")[0].decode(Int.self, "n") == 0)
        }
    }

    // MARK: The catalogue

    struct Hostile: Sendable {
        var name: String
        var method: HTTPRequest.Method = .get
        var uri: String
        var headers: HTTPFields = [:]
        var body: ByteBuffer? = nil
        /// The status expected, when one is; any 4xx otherwise.
        var status: HTTPResponse.Status? = nil
        /// Tokens or tickets this request carries, which its answer must not repeat.
        var secrets: [String] = []
    }

    static func installBody(clientKey: String = "jira:new-site", extra: [String: String] = [:]) -> ByteBuffer {
        let fields: [String: String] = [
            "key": "whos-looking", "clientKey": clientKey, "sharedSecret": "an-attackers-secret-0123456789",
            "baseUrl": "https://evil.atlassian.net", "productType": "jira", "eventType": "installed",
        ].merging(extra) { $1 }
        return ByteBuffer(data: try! JSONSerialization.data(withJSONObject: fields))
    }

    static func catalogue(ticket: String, ticketForIssue2: String, foreignTicket: String) -> [Hostile] {
        let panel = panelTarget
        func withJWT(_ name: String, _ token: String, status: HTTPResponse.Status = .unauthorized) -> Hostile {
            Hostile(name: name, uri: panel + "&jwt=" + token, status: status, secrets: [token])
        }
        let hs256 = ["alg": "HS256", "typ": "JWT"]
        let valid = panelToken()
        var tamperedTicket = Array(ticket)
        tamperedTicket[tamperedTicket.count / 2] = tamperedTicket[tamperedTicket.count / 2] == "A" ? "B" : "A"
        let json: HTTPFields = [.contentType: "application/json"]
        func lifecycle(
            _ name: String, _ path: String = "/installed", token: String?, body: ByteBuffer = installBody(),
            status: HTTPResponse.Status? = .unauthorized
        ) -> Hostile {
            var headers = json
            if let token { headers[.authorization] = "JWT \(token)" }
            return Hostile(name: name, method: .post, uri: path, headers: headers, body: body, status: status, secrets: token.map { [$0] } ?? [])
        }
        func rs256(kid: String?) -> String {
            var header: [String: Any] = ["alg": "RS256", "typ": "JWT"]
            if let kid { header["kid"] = kid }
            return jwt(
                header: header, claims: ["iss": "jira:new-site", "aud": TestApp.baseURL, "exp": Date().timeIntervalSince1970 + 60, "qsh": "x"],
                secret: nil)
        }
        let beat = "/api/issues/10001/heartbeat"
        return [
            // Forged and malformed Connect JWTs on the panel.
            Hostile(name: "no JWT", uri: panel, status: .unauthorized),
            withJWT("empty JWT", ""),
            withJWT("one part", "abc"),
            withJWT("two parts", "abc.def"),
            withJWT("four parts", valid + ".extra"),
            withJWT("not base64", "!!!.@@@.###"),
            withJWT("header is an array", Data("[1,2]".utf8).base64URLEncodedString() + ".e30.c2ln"),
            withJWT("claims are not JSON", Data(#"{"alg":"HS256"}"#.utf8).base64URLEncodedString() + ".bm90IGpzb24.c2ln"),
            withJWT("alg none, no signature", String(jwt(header: ["alg": "none"], claims: claims(), secret: nil).dropLast(12))),
            withJWT("alg HS512", jwt(header: ["alg": "HS512"], claims: claims(), secret: tenant.sharedSecret)),
            withJWT("alg RS256 on the panel", jwt(header: ["alg": "RS256", "kid": "k1"], claims: claims(), secret: nil)),
            withJWT("alg with a forged log line", jwt(header: ["alg": "HS256\n" + forgedLine], claims: claims(), secret: tenant.sharedSecret)),
            withJWT("alg with CR LF", jwt(header: ["alg": "HS256\r\n" + forgedLine], claims: claims(), secret: tenant.sharedSecret)),
            withJWT("alg with NUL", jwt(header: ["alg": "HS256\u{0}"], claims: claims(), secret: tenant.sharedSecret)),
            withJWT("alg 4000 characters", jwt(header: ["alg": String(repeating: "H", count: 4000)], claims: claims(), secret: tenant.sharedSecret)),
            withJWT("kid with NUL, wrong secret", jwt(header: ["alg": "HS256", "kid": "k\u{0}\n" + forgedLine], claims: claims(), secret: "nope")),
            withJWT("iss with NUL", panelToken { $0["iss"] = "jira:hostile\u{0}" }),
            withJWT("iss with a newline", panelToken { $0["iss"] = "jira:hostile\n" + forgedLine }),
            withJWT("iss of 300 bytes", panelToken { $0["iss"] = String(repeating: "i", count: 300) }),
            withJWT("iss is a number", panelToken { $0["iss"] = 42 }),
            withJWT("no iss", panelToken { $0["iss"] = nil }),
            withJWT("unknown iss", panelToken { $0["iss"] = "jira:nobody" }),
            withJWT("another tenant's key as iss", jwt(header: hs256, claims: claims { $0["iss"] = "jira:other" }, secret: tenant.sharedSecret)),
            withJWT("wrong secret", jwt(header: hs256, claims: claims(), secret: "not-the-secret")),
            withJWT("signature stripped", panelToken().split(separator: ".").prefix(2).joined(separator: ".") + "."),
            withJWT("expired", panelToken { $0["exp"] = Date().timeIntervalSince1970 - 3600 }),
            withJWT("no exp", panelToken { $0["exp"] = nil }),
            withJWT("exp is a string", panelToken { $0["exp"] = "tomorrow" }),
            withJWT("issued in the future", panelToken { $0["iat"] = Date().timeIntervalSince1970 + 3600 }),
            withJWT("qsh of another request", panelToken { $0["qsh"] = CanonicalRequest(method: "GET", target: "/panel?issueId=1").qsh }),
            withJWT("context qsh on the panel", panelToken { $0["qsh"] = ConnectClaims.contextQSH }),
            withJWT("no qsh", panelToken { $0["qsh"] = nil }),
            withJWT("sub with NUL", panelToken { $0["sub"] = "account\u{0}" }),
            withJWT("sub with a newline", panelToken { $0["sub"] = "account\n" + forgedLine }),
            withJWT("sub of 1000 bytes", panelToken { $0["sub"] = String(repeating: "s", count: 1000) }),
            Hostile(name: "JWT in the header, forged", uri: panel, headers: [.authorization: "JWT abc.def.ghi"], status: .unauthorized),
            Hostile(
                name: "two different JWTs", uri: panel + "&jwt=" + valid, headers: [.authorization: "JWT " + panelToken { $0["sub"] = "x" }],
                status: .unauthorized, secrets: [valid]),
            Hostile(name: "Bearer instead of JWT", uri: panel, headers: [.authorization: "Bearer " + valid], status: .unauthorized, secrets: [valid]),
            Hostile(name: "empty JWT scheme", uri: panel, headers: [.authorization: "JWT "], status: .unauthorized),
            Hostile(
                name: "signed, NUL in issueKey",
                uri: "/panel?issueId=1&issueKey=A%00" + "&jwt=" + panelToken(target: "/panel?issueId=1&issueKey=A%00"), status: .badRequest),
            Hostile(
                name: "signed, newline in issueId",
                uri: "/panel?issueId=1%0A2&issueKey=A-1" + "&jwt=" + panelToken(target: "/panel?issueId=1%0A2&issueKey=A-1"), status: .badRequest),
            Hostile(
                name: "signed, issueKey of 300",
                uri: "/panel?issueId=1&issueKey=\(String(repeating: "K", count: 300))&jwt="
                    + panelToken(target: "/panel?issueId=1&issueKey=\(String(repeating: "K", count: 300))"), status: .badRequest),
            Hostile(name: "signed, no issueId", uri: "/panel?issueKey=A-1&jwt=" + panelToken(target: "/panel?issueKey=A-1"), status: .badRequest),
            Hostile(name: "panel, wrong method", method: .post, uri: panel + "&jwt=" + valid, status: .notFound, secrets: [valid]),

            // Tickets: missing, forged, tampered, for another issue, in the wrong place.
            Hostile(name: "heartbeat without a ticket", method: .post, uri: beat, status: .unauthorized),
            Hostile(name: "heartbeat, garbage ticket", method: .post, uri: beat, headers: [.authorization: "Ticket garbage"], status: .unauthorized),
            Hostile(
                name: "heartbeat, tampered ticket", method: .post, uri: beat, headers: [.authorization: "Ticket " + String(tamperedTicket)],
                status: .unauthorized, secrets: [String(tamperedTicket)]),
            Hostile(
                name: "heartbeat, ticket of another key", method: .post, uri: beat, headers: [.authorization: "Ticket " + foreignTicket],
                status: .unauthorized, secrets: [foreignTicket]),
            Hostile(
                name: "heartbeat, ticket for another issue", method: .post, uri: "/api/issues/10002/heartbeat",
                headers: [.authorization: "Ticket " + ticket], status: .forbidden, secrets: [ticket]),
            Hostile(
                name: "heartbeat, issue 2's ticket on issue 1", method: .post, uri: beat, headers: [.authorization: "Ticket " + ticketForIssue2],
                status: .forbidden, secrets: [ticketForIssue2]),
            Hostile(
                name: "heartbeat, a JWT instead", method: .post, uri: beat, headers: [.authorization: "JWT " + valid], status: .unauthorized,
                secrets: [valid]),
            Hostile(
                name: "heartbeat, NUL in the issue id", method: .post, uri: "/api/issues/100%0001/heartbeat",
                headers: [.authorization: "Ticket " + ticket], status: .badRequest, secrets: [ticket]),
            Hostile(
                name: "heartbeat, traversal in the issue id", method: .post, uri: "/api/issues/..%2F..%2Fpanel/heartbeat",
                headers: [.authorization: "Ticket " + ticket], secrets: [ticket]),
            Hostile(name: "heartbeat, wrong method", uri: beat, headers: [.authorization: "Ticket " + ticket], status: .notFound, secrets: [ticket]),
            Hostile(
                name: "leave, garbage body", method: .post, uri: "/api/issues/10001/leave", headers: [.contentType: "text/plain"],
                body: ByteBuffer(string: "not a ticket\n\u{0}"), status: .unauthorized),
            Hostile(
                name: "leave, oversized body", method: .post, uri: "/api/issues/10001/leave", headers: [.contentType: "text/plain"],
                body: ByteBuffer(repeating: UInt8(ascii: "A"), count: 100_000), status: .contentTooLarge),
            Hostile(
                name: "leave, ticket for another issue", method: .post, uri: "/api/issues/10002/leave", headers: [.contentType: "text/plain"],
                body: ByteBuffer(string: ticket), status: .forbidden, secrets: [ticket]),

            // Lifecycle callbacks nobody signed.
            lifecycle("install without a JWT", token: nil),
            lifecycle("install, body not JSON", token: nil, body: ByteBuffer(string: "clientKey=evil"), status: .badRequest),
            lifecycle(
                "install, oversized body", token: nil, body: ByteBuffer(repeating: UInt8(ascii: " "), count: 200_000), status: .contentTooLarge),
            lifecycle("install, JSON array", token: nil, body: ByteBuffer(string: "[]"), status: .badRequest),
            lifecycle("install, HS256 with the tenant's secret", token: jwt(header: hs256, claims: claims(), secret: tenant.sharedSecret)),
            lifecycle("install, alg none", token: jwt(header: ["alg": "none"], claims: claims(), secret: nil)),
            lifecycle("install, RS256 without kid", token: rs256(kid: nil)),
            lifecycle("install, RS256 kid with NUL", token: rs256(kid: "key\u{0}1")),
            lifecycle("install, RS256 kid with a newline", token: rs256(kid: "key\n" + forgedLine)),
            lifecycle("install, RS256 kid traversal", token: rs256(kid: "../../../etc/passwd")),
            lifecycle("install, RS256 kid of 4000", token: rs256(kid: String(repeating: "k", count: 4000))),
            lifecycle("install, NUL in clientKey", token: rs256(kid: "x\u{0}"), body: installBody(clientKey: "jira:evil\u{0}")),
            lifecycle("install, http baseUrl", token: nil, body: installBody(extra: ["baseUrl": "http://evil.example.com"]), status: .badRequest),
            lifecycle(
                "uninstall the tenant, alg none", "/uninstalled", token: jwt(header: ["alg": "none"], claims: ["iss": tenant.clientKey], secret: nil),
                body: installBody(clientKey: tenant.clientKey, extra: ["eventType": "uninstalled"])),
            lifecycle(
                "uninstall the tenant, forged HS256", "/uninstalled",
                token: jwt(header: hs256, claims: ["iss": tenant.clientKey], secret: tenant.sharedSecret),
                body: installBody(clientKey: tenant.clientKey, extra: ["eventType": "uninstalled"])),
            Hostile(name: "install, wrong method", uri: "/installed", status: .notFound),

            // Static files: traversal, NUL, control characters, bad encoding.
            Hostile(name: "NUL then .html", uri: "/public/panel.js%00.html", status: .badRequest),
            Hostile(name: "newline in a file name", uri: "/public/panel.js%0a", status: .badRequest),
            Hostile(name: "traversal", uri: "/public/../Package.swift", status: .badRequest),
            Hostile(name: "encoded traversal", uri: "/public/%2e%2e/Package.swift", status: .badRequest),
            Hostile(name: "encoded slashes", uri: "/public/..%2f..%2fetc%2fpasswd", status: .badRequest),
            Hostile(name: "traversal to a migration", uri: "/public/%2E%2E%2FMigrations%2F0001_tenants.sql", status: .badRequest),
            Hostile(name: "double-encoded traversal", uri: "/public/%252e%252e/Package.swift", status: .notFound),
            Hostile(name: "absolute path", uri: "/public//etc/passwd", status: .notFound),
            Hostile(name: "invalid percent-encoding", uri: "/public/%ff%fe", status: .badRequest),
            Hostile(name: "truncated percent-encoding", uri: "/public/panel.js%", status: .badRequest),
            Hostile(name: "the folder", uri: "/public/", status: .notFound),
            Hostile(name: "a file, POST", method: .post, uri: "/public/panel.js", status: .notFound),

            // Other routes, wrong methods, the Forge door (off here).
            Hostile(
                name: "Forge heartbeat while Forge is off", method: .post, uri: "/forge/heartbeat", headers: json,
                body: ByteBuffer(string: #"{"tabId":"x"}"#), status: .notFound),
            Hostile(name: "descriptor, DELETE", method: .delete, uri: "/atlassian-connect.json", status: .notFound),
            Hostile(name: "metrics, POST", method: .post, uri: "/metrics", status: .notFound),
            Hostile(name: "NUL in the query of healthz", uri: "/healthz?x=%00", status: .badRequest),
        ]
    }

    /// Every request of the catalogue answers a 4xx, repeats no secret, token or database text,
    /// and stores nothing.
    @Test func aCatalogueOfHostileRequestsIsRefusedAndChangesNothing() async throws {
        try await withTenant { testApp, client in
            // Mallory has a real panel open on issue 10001 (and a ticket for it), and one on 10002.
            let opened = try await get(client, Self.panelTarget + "&jwt=" + Self.panelToken())
            #expect(opened.status == .ok)
            func ticket(in html: String) throws -> String { try #require(TestApp.ticket(in: html)) }
            let target2 = "/panel?issueId=10002&issueKey=DEMO-2"
            let opened2 = try await get(client, target2 + "&jwt=" + Self.panelToken(target: target2))
            let foreign = ViewerTicketSigner(secret: SymmetricKey(size: .bits256))
                .issue(tenant: Self.tenant.clientKey, issueID: "10001", issueKey: "DEMO-1", accountID: "account-mallory", tabID: "tab").signed
            let cases = Self.catalogue(ticket: try ticket(in: opened.body), ticketForIssue2: try ticket(in: opened2.body), foreignTicket: foreign)
            #expect(cases.count >= 40)
            #expect(Set(cases.map(\.name)).count == cases.count, "names are unique")

            func counts() async throws -> [Int] {
                [
                    try await testApp.pool.query("SELECT count(*) AS n FROM viewers")[0].decode(Int.self, "n"),
                    try await testApp.pool.query("SELECT count(*) AS n FROM tenants")[0].decode(Int.self, "n"),
                ]
            }
            let before = try await counts()
            #expect(before == [2, 1])
            let neverInAnAnswer = [
                Self.tenant.sharedSecret, try #require(testApp.configuration.secretEncryptionKey), "an-attackers-secret", "SQLSTATE", "PostgreSQL",
                "postgres", "libpq", "Fatal error", "Stack dump", "backtrace", ".swift:", "FORGED-LOG-LINE",
            ]
            for hostile in cases {
                let answer = try await client.execute(uri: hostile.uri, method: hostile.method, headers: hostile.headers, body: hostile.body) {
                    Answer(status: $0.status, headers: $0.headers, body: String(buffer: $0.body))
                }
                #expect((400..<500).contains(answer.status.code), "\(hostile.name): \(answer.status) \(answer.body)")
                if let expected = hostile.status {
                    #expect(answer.status == expected, "\(hostile.name): \(answer.status) \(answer.body)")
                }
                for secret in neverInAnAnswer + hostile.secrets.filter({ $0.count >= 16 }) {
                    #expect(!answer.body.contains(secret), "\(hostile.name) answered \(secret.prefix(20))…: \(answer.body)")
                }
                #expect(!Self.hasControlCharacter(answer.message ?? ""), "\(hostile.name): \(answer.body)")
                #expect(answer.body.utf8.count < 200, "\(hostile.name): a short reason, got \(answer.body.utf8.count) bytes")
                #expect(answer.headers[.xContentTypeOptions] == "nosniff", "\(hostile.name)")
                #expect(answer.headers[.contentType]?.contains("html") != true, "\(hostile.name): \(answer.headers[.contentType] ?? "")")
                #expect(try await counts() == before, "\(hostile.name) stored something")
            }
            let tenant = try await testApp.tenants.tenant(clientKey: Self.tenant.clientKey)
            #expect(tenant?.state == .installed, "forged uninstalls changed nothing")
            #expect(try await testApp.tenants.tenant(clientKey: "jira:new-site") == nil)
        }
    }
}
