import Tenants
import Connect
import Foundation
import Hummingbird
import HummingbirdTesting
import TestSupport
import Testing
@testable import WhosLookingApp

/// Tenant-signed HS256 tokens on the panel, an iframe entry point.
@Suite("Inbound Connect JWTs", .timeLimit(.minutes(3)))
struct InboundJWTTests {
    static let tenantA = TenantInstallation(
        clientKey: "jira:tenant-a", baseURL: URL(string: "https://a.atlassian.net")!, productType: "jira",
        sharedSecret: "secret-of-tenant-a-0123456789abcdef"
    )
    static let tenantB = TenantInstallation(
        clientKey: "jira:tenant-b", baseURL: URL(string: "https://b.atlassian.net")!, productType: "jira",
        sharedSecret: "secret-of-tenant-b-0123456789abcdef"
    )
    static let panelTarget = "/panel?issueId=10001&issueKey=DEMO-1&projectId=100&projectKey=DEMO"

    func token(
        issuer: String = tenantA.clientKey,
        secret: String = tenantA.sharedSecret,
        subject: String? = "account-alice",
        target: String = panelTarget,
        issuedAt: Date = Date(),
        lifetime: TimeInterval = 180,
        qsh: String? = nil
    ) throws -> String {
        try HS256.sign(ConnectClaims(
            iss: issuer, sub: subject, iat: issuedAt.timeIntervalSince1970, exp: issuedAt.timeIntervalSince1970 + lifetime,
            qsh: qsh ?? CanonicalRequest(method: "GET", target: target).qsh
        ), secret: secret)
    }

    func withTenants(_ body: @escaping @Sendable (any TestClientProtocol) async throws -> Void) async throws {
        try await TestApp.with { testApp, app in
            try await testApp.tenants.install(Self.tenantA)
            try await testApp.tenants.install(Self.tenantB)
            try await app.test(.router) { client in try await body(client) }
        }
    }

    func get(_ client: some TestClientProtocol, _ uri: String, authorization: String? = nil) async throws -> (HTTPResponse.Status, String) {
        var headers: HTTPFields = [:]
        if let authorization { headers[.authorization] = authorization }
        return try await client.execute(uri: uri, method: .get, headers: headers) { ($0.status, String(buffer: $0.body)) }
    }

    @Test func aValidTokenInTheQueryOrTheHeaderIsAccepted() async throws {
        let token = try token()
        try await withTenants { client in
            let (status, body) = try await get(client, Self.panelTarget + "&jwt=\(token)")
            #expect(status == .ok)
            #expect(body.contains("DEMO-1"))
            #expect(body.contains(#"data-account-id="account-alice""#))
            let (headerStatus, _) = try await get(client, Self.panelTarget, authorization: "JWT \(token)")
            #expect(headerStatus == .ok)
        }
    }

    @Test func anonymousVisitorsAreKnownAsSuch() async throws {
        let token = try token(subject: nil)
        try await withTenants { client in
            let (status, body) = try await get(client, Self.panelTarget + "&jwt=\(token)")
            #expect(status == .ok)
            #expect(body.contains("Log in to see who else is looking"))
        }
    }

    @Test func refusals() async throws {
        let cases: [(String, String, String)] = [
            ("wrong secret", try token(secret: "not-the-secret"), "bad JWT signature"),
            ("expired", try token(issuedAt: Date() - 400), "JWT expired"),
            ("future iat beyond leeway", try token(issuedAt: Date() + 120), "JWT issued in the future"),
            ("unknown issuer", try token(issuer: "jira:nobody"), "unknown JWT issuer"),
            ("qsh of another request", try token(target: "/panel?issueKey=DEMO-2"), "JWT qsh does not match the request"),
            ("context token on an iframe route", try token(qsh: ConnectClaims.contextQSH), "context JWT not allowed here"),
            ("tenant A's token claiming tenant B", try token(issuer: Self.tenantB.clientKey, secret: Self.tenantA.sharedSecret), "bad JWT signature"),
            ("garbage", "abc.def", "malformed JWT"),
        ]
        try await withTenants { client in
            for (name, token, reason) in cases {
                let (status, body) = try await get(client, Self.panelTarget + "&jwt=\(token)")
                #expect(status == .unauthorized, "\(name)")
                #expect(body.contains(reason), "\(name): \(body)")
                #expect(!body.contains(CanonicalRequest(method: "GET", target: Self.panelTarget).qsh), "never the expected value")
            }
            let (missing, _) = try await get(client, Self.panelTarget)
            #expect(missing == .unauthorized)
        }
    }

    @Test func twoDifferentTokensAreRefused() async throws {
        let first = try token()
        let second = try token(subject: "account-bob")
        try await withTenants { client in
            let (status, body) = try await get(client, Self.panelTarget + "&jwt=\(first)", authorization: "JWT \(second)")
            #expect(status == .unauthorized)
            #expect(body.contains("two different JWTs"))
        }
    }

    @Test func uninstalledTenantsTokensAreRefused() async throws {
        let token = try token()
        try await TestApp.with { testApp, app in
            try await testApp.tenants.install(Self.tenantA)
            try await testApp.tenants.uninstall(clientKey: Self.tenantA.clientKey)
            try await app.test(.router) { client in
                let (status, body) = try await get(client, Self.panelTarget + "&jwt=\(token)")
                #expect(status == .unauthorized)
                #expect(body.contains("unknown JWT issuer"))
            }
        }
    }
}
