import Tenants
import Connect
import Foundation
import Hummingbird
import HummingbirdTesting
import Libpq
import TestSupport
import Testing
@testable import WhosLookingApp

/// Signed installs over real HTTP key fetches: a real RSA key server, real RS256 tokens.
@Suite("Signed lifecycle callbacks", .timeLimit(.minutes(3)))
struct LifecycleTests {
    static let clientKey = "jira:11111111-2222-3333-4444-555555555555"

    func installBody(clientKey: String = clientKey, secret: String, extra: [String: String] = [:], drop: [String] = []) -> ByteBuffer {
        var fields: [String: String] = [
            "key": "whos-looking", "clientKey": clientKey, "sharedSecret": secret,
            "baseUrl": "https://example.atlassian.net", "displayUrl": "https://jira.example.com",
            "productType": "jira", "description": "Atlassian JIRA at https://example.atlassian.net",
            "eventType": "installed", "oauthClientId": "oauth-1", "installationId": "ari:cloud:install/1",
        ].merging(extra) { $1 }
        for field in drop { fields.removeValue(forKey: field) }
        return ByteBuffer(data: try! JSONSerialization.data(withJSONObject: fields))
    }

    /// Runs `body` with a key server, an app whose CONNECT_INSTALL_KEYS_URL points at it, and a router client.
    func withInstallableApp(_ body: @escaping @Sendable (FakeAtlassian, TestApp, any TestClientProtocol) async throws -> Void) async throws {
        let atlassian = try FakeAtlassian()
        try await atlassian.withKeyServer { keysURL in
            try await TestApp.with(environment: ["CONNECT_INSTALL_KEYS_URL": keysURL]) { testApp, app in
                try await app.test(.router) { client in
                    try await body(atlassian, testApp, client)
                }
            }
        }
    }

    func post(_ client: some TestClientProtocol, _ path: String, token: String?, body: ByteBuffer) async throws -> (HTTPResponse.Status, String) {
        var headers: HTTPFields = [.contentType: "application/json"]
        if let token { headers[.authorization] = "JWT \(token)" }
        return try await client.execute(uri: path, method: .post, headers: headers, body: body) { response in
            (response.status, String(buffer: response.body))
        }
    }

    @Test func validInstallStoresTheTenantAndItsSecret() async throws {
        try await withInstallableApp { atlassian, testApp, client in
            let token = try await atlassian.lifecycleToken(clientKey: Self.clientKey, audience: TestApp.baseURL, path: "/installed")
            let (status, _) = try await post(client, "/installed", token: token, body: installBody(secret: "secret-one"))
            #expect(status == .noContent)
            let tenant = try #require(try await testApp.tenants.tenant(clientKey: Self.clientKey))
            #expect(tenant.state == .installed)
            #expect(tenant.baseURL.absoluteString == "https://example.atlassian.net")
            #expect(tenant.displayURL?.absoluteString == "https://jira.example.com")
            #expect(tenant.oauthClientID == "oauth-1")
            #expect(try await testApp.tenants.sharedSecret(clientKey: Self.clientKey) == "secret-one")
        }
    }

    @Test func audienceWithATrailingSlashIsTheSameApp() async throws {
        try await withInstallableApp { atlassian, testApp, client in
            let token = try await atlassian.lifecycleToken(clientKey: Self.clientKey, audience: TestApp.baseURL + "/", path: "/installed")
            let (status, _) = try await post(client, "/installed", token: token, body: installBody(secret: "s"))
            #expect(status == .noContent)
        }
    }

    enum Forgery: String, CaseIterable, CustomTestStringConvertible {
        case algNone, hs256, unknownKid, wrongAudience, issuerIsNotClientKey, wrongQSH, expired, noToken, contextToken
        var testDescription: String { rawValue }
        /// The check that must refuse it, as the answer names it.
        var reason: String {
            switch self {
            case .algNone: "JWT algorithm not allowed here"
            case .hs256: "JWT algorithm not allowed here"
            case .unknownKid: "unknown JWT kid"
            case .wrongAudience: "JWT audience is not this app"
            case .issuerIsNotClientKey: "JWT issuer does not match clientKey"
            case .wrongQSH: "JWT qsh does not match the request"
            case .expired: "JWT expired"
            case .noToken: "missing JWT"
            case .contextToken: "context JWT not allowed here"
            }
        }
    }

    @Test(arguments: Forgery.allCases)
    func forgedInstallsAreRefusedAndChangeNothing(_ forgery: Forgery) async throws {
        try await withInstallableApp { atlassian, testApp, client in
            let token: String?
            switch forgery {
            case .algNone:
                token = try FakeAtlassian.unsignedToken(
                    ConnectClaims(
                        iss: Self.clientKey, aud: .init([TestApp.baseURL]), iat: Date().timeIntervalSince1970,
                        exp: Date().timeIntervalSince1970 + 180, qsh: CanonicalRequest(method: "POST", target: "/installed").qsh))
            case .hs256:
                token = try HS256.sign(
                    ConnectClaims(
                        iss: Self.clientKey, aud: .init([TestApp.baseURL]), iat: Date().timeIntervalSince1970,
                        exp: Date().timeIntervalSince1970 + 180, qsh: CanonicalRequest(method: "POST", target: "/installed").qsh), secret: "attacker")
            case .unknownKid:
                token = try await atlassian.lifecycleToken(
                    key: atlassian.unpublished, clientKey: Self.clientKey, audience: TestApp.baseURL, path: "/installed")
            case .wrongAudience:
                token = try await atlassian.lifecycleToken(clientKey: Self.clientKey, audience: "https://evil.example.com", path: "/installed")
            case .issuerIsNotClientKey:
                token = try await atlassian.lifecycleToken(clientKey: "jira:someone-else", audience: TestApp.baseURL, path: "/installed")
            case .wrongQSH:
                token = try await atlassian.lifecycleToken(clientKey: Self.clientKey, audience: TestApp.baseURL, path: "/uninstalled")
            case .expired:
                token = try await atlassian.lifecycleToken(
                    clientKey: Self.clientKey, audience: TestApp.baseURL, path: "/installed", issuedAt: Date() - 600)
            case .noToken:
                token = nil
            case .contextToken:
                token = try await atlassian.lifecycleToken(
                    clientKey: Self.clientKey, audience: TestApp.baseURL, path: "/installed", qsh: ConnectClaims.contextQSH)
            }
            let (status, body) = try await post(client, "/installed", token: token, body: installBody(secret: "attacker-secret"))
            #expect(status == .unauthorized, "\(forgery): \(body)")
            #expect(body.contains(forgery.reason), "a short reason naming the failed check: \(body)")
            #expect(try await testApp.tenants.tenant(clientKey: Self.clientKey) == nil)
        }
    }

    /// The install hijack: a reinstall with a new secret, signed by a key Atlassian does not
    /// publish, even under the published kid.
    @Test func reinstallSignedByAnUnpublishedKeyKeepsTheStoredSecret() async throws {
        try await withInstallableApp { atlassian, testApp, client in
            let genuine = try await atlassian.lifecycleToken(clientKey: Self.clientKey, audience: TestApp.baseURL, path: "/installed")
            #expect(try await post(client, "/installed", token: genuine, body: installBody(secret: "genuine")).0 == .noContent)
            let before = try #require(try await testApp.tenants.tenant(clientKey: Self.clientKey))

            for forged in [
                try await atlassian.lifecycleToken(
                    key: atlassian.unpublished, clientKey: Self.clientKey, audience: TestApp.baseURL, path: "/installed"),
                try await atlassian.lifecycleToken(
                    key: atlassian.unpublished, kid: atlassian.published.kid, clientKey: Self.clientKey, audience: TestApp.baseURL, path: "/installed"
                ),
            ] {
                let (status, _) = try await post(client, "/installed", token: forged, body: installBody(secret: "hijacked"))
                #expect(status == .unauthorized)
            }
            #expect(try await testApp.tenants.sharedSecret(clientKey: Self.clientKey) == "genuine")
            #expect(try await testApp.tenants.tenant(clientKey: Self.clientKey) == before)

            // A genuine reinstall may replace it.
            let again = try await atlassian.lifecycleToken(clientKey: Self.clientKey, audience: TestApp.baseURL, path: "/installed")
            #expect(try await post(client, "/installed", token: again, body: installBody(secret: "rotated")).0 == .noContent)
            #expect(try await testApp.tenants.sharedSecret(clientKey: Self.clientKey) == "rotated")
        }
    }

    @Test func badBodiesAre4xxAndChangeNothing() async throws {
        try await withInstallableApp { atlassian, testApp, client in
            let token = try await atlassian.lifecycleToken(clientKey: Self.clientKey, audience: TestApp.baseURL, path: "/installed")
            let cases: [(ByteBuffer, HTTPResponse.Status)] = [
                (ByteBuffer(string: "{not json"), .badRequest),
                (ByteBuffer(string: "[]"), .badRequest),
                (installBody(secret: "s", drop: ["clientKey"]), .badRequest),
                (installBody(secret: "s", drop: ["sharedSecret"]), .badRequest),
                (installBody(secret: "s", drop: ["baseUrl"]), .badRequest),
                (installBody(secret: "s", extra: ["baseUrl": "http://example.atlassian.net"]), .badRequest),
                (installBody(secret: "s", extra: ["key": "another-app"]), .badRequest),
                (ByteBuffer(repeating: UInt8(ascii: "x"), count: 1_000_000), .contentTooLarge),
            ]
            for (body, expected) in cases {
                let (status, text) = try await post(client, "/installed", token: token, body: body)
                #expect(status == expected, "\(text)")
                #expect(!text.contains("Error("), "no internals in the response: \(text)")
            }
            #expect(try await testApp.tenants.tenant(clientKey: Self.clientKey) == nil)
        }
    }

    @Test func signedUninstallMarksTheTenantAndDropsTheSecret() async throws {
        try await withInstallableApp { atlassian, testApp, client in
            let install = try await atlassian.lifecycleToken(clientKey: Self.clientKey, audience: TestApp.baseURL, path: "/installed")
            #expect(try await post(client, "/installed", token: install, body: installBody(secret: "s1")).0 == .noContent)

            let forged = try await atlassian.lifecycleToken(
                key: atlassian.unpublished, clientKey: Self.clientKey, audience: TestApp.baseURL, path: "/uninstalled")
            let uninstallBody = installBody(secret: "s1", extra: ["eventType": "uninstalled"])
            #expect(try await post(client, "/uninstalled", token: forged, body: uninstallBody).0 == .unauthorized)
            #expect(try await testApp.tenants.tenant(clientKey: Self.clientKey)?.state == .installed)

            let genuine = try await atlassian.lifecycleToken(clientKey: Self.clientKey, audience: TestApp.baseURL, path: "/uninstalled")
            #expect(try await post(client, "/uninstalled", token: genuine, body: uninstallBody).0 == .noContent)
            let tenant = try #require(try await testApp.tenants.tenant(clientKey: Self.clientKey))
            #expect(tenant.state == .uninstalled)
            #expect(tenant.uninstalledAt != nil)
            #expect(try await testApp.tenants.sharedSecret(clientKey: Self.clientKey) == nil)
        }
    }

    @Test func theSecretIsUnreadableInTheDatabaseWithoutTheKey() async throws {
        try await withInstallableApp { atlassian, testApp, client in
            let secret = "a-very-recognisable-shared-secret-value"
            let token = try await atlassian.lifecycleToken(clientKey: Self.clientKey, audience: TestApp.baseURL, path: "/installed")
            #expect(try await post(client, "/installed", token: token, body: installBody(secret: secret)).0 == .noContent)

            let rows = try await testApp.pool.query("SELECT shared_secret_sealed, secret_key_id FROM tenants")
            let sealed = try rows[0].decode(PostgresBytes.self, "shared_secret_sealed").bytes
            #expect(String(decoding: sealed, as: UTF8.self).contains(secret) == false)
            #expect(try rows[0].decode(String.self, "secret_key_id") == testApp.secrets.keyID)
            let otherKey = try SecretBox(base64Key: SecretBox.generateKey())
            #expect(throws: SecretBox.Failure.self) { try otherKey.open(sealed, context: Self.clientKey) }
            // Bound to its row: the right key with another clientKey does not open it either.
            #expect(throws: SecretBox.Failure.self) { try testApp.secrets.open(sealed, context: "jira:other") }
            #expect(try testApp.secrets.open(sealed, context: Self.clientKey) == secret)
        }
    }
}
