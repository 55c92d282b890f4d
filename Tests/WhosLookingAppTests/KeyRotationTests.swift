import Tenants
import Foundation
import Libpq
import Presence
import TestSupport
import Testing
@testable import WhosLookingApp

@Suite("Rotating SECRET_ENCRYPTION_KEY", .timeLimit(.minutes(3)))
struct KeyRotationTests {
    static let site = TenantInstallation(
        clientKey: "jira:rotating", baseURL: URL(string: "https://rotating.atlassian.net")!, productType: "jira",
        sharedSecret: "the-shared-secret-of-a-rotating-site"
    )

    @Test func secretsSealedUnderThePreviousKeyAreOpenedThenResealed() async throws {
        try await TestApp.withMigratedPool { pool in
            let oldKey = SecretBox.generateKey()
            let newKey = SecretBox.generateKey()
            try await TenantRepository(pool: pool, secrets: try SecretBox(base64Key: oldKey)).install(Self.site)

            // Only the new key: the old seal cannot be opened.
            let newOnly = TenantRepository(pool: pool, secrets: try SecretBox(base64Key: newKey))
            await #expect(throws: SecretBox.Failure.self) { try await newOnly.installedTenantWithSecret(clientKey: Self.site.clientKey) }
            #expect(try await newOnly.resealUnderCurrentKey() == (0, 1))

            // New key plus the previous one, as configured during a rotation.
            let configuration = try AppConfiguration(environment: [
                "MIGRATIONS_DIR": TestApp.migrations, "SECRET_ENCRYPTION_KEY": newKey, "SECRET_ENCRYPTION_KEY_PREVIOUS": oldKey,
            ])
            let rotating = TenantRepository(pool: pool, secrets: try configuration.resolveSecretBox())
            #expect(try await rotating.installedTenantWithSecret(clientKey: Self.site.clientKey)?.sharedSecret == Self.site.sharedSecret)
            #expect(try await rotating.resealUnderCurrentKey() == (1, 0))
            #expect(try await rotating.resealUnderCurrentKey() == (0, 0), "nothing left to re-seal")

            // After the rotation the new key alone opens it.
            #expect(try await newOnly.installedTenantWithSecret(clientKey: Self.site.clientKey)?.sharedSecret == Self.site.sharedSecret)
        }
    }

    /// A rolling rotation: while some instances still run on the old key (with the new one as
    /// NEXT) and others already on the new one (with the old as PREVIOUS), each opens what the
    /// other sealed and verifies what the other signed, and neither re-seals the other's work
    /// at start-up (issue 12, defect 9: old instances answered 500 on panels sealed anew).
    @Test func instancesOnBothSidesOfARollingRotationWorkTogether() async throws {
        try await TestApp.withMigratedPool { pool in
            let oldKey = SecretBox.generateKey()
            let newKey = SecretBox.generateKey()
            func instance(_ environment: [String: String]) throws -> (tenants: TenantRepository, tickets: ViewerTicketSigner) {
                let configuration = try AppConfiguration(environment: ["MIGRATIONS_DIR": TestApp.migrations].merging(environment) { $1 })
                let box = try configuration.resolveSecretBox()
                return (TenantRepository(pool: pool, secrets: box), ViewerTicketSigner(secret: box.keyMaterial, previousSecrets: box.previousKeyMaterial))
            }
            let notYet = try instance(["SECRET_ENCRYPTION_KEY": oldKey, "SECRET_ENCRYPTION_KEY_NEXT": newKey])
            let already = try instance(["SECRET_ENCRYPTION_KEY": newKey, "SECRET_ENCRYPTION_KEY_PREVIOUS": oldKey])

            // A site (re)installed through an instance already on the new key.
            try await already.tenants.install(Self.site)
            #expect(try await notYet.tenants.installedTenantWithSecret(clientKey: Self.site.clientKey)?.sharedSecret == Self.site.sharedSecret)
            // An old instance restarting meanwhile does not re-seal it back under the old key.
            #expect(try await notYet.tenants.resealUnderCurrentKey() == (0, 0))
            #expect(try await already.tenants.installedTenantWithSecret(clientKey: Self.site.clientKey)?.sharedSecret == Self.site.sharedSecret)

            // Tickets cross in both directions.
            let (_, fromOld) = notYet.tickets.issue(tenant: "t", issueID: "1", issueKey: "K-1", accountID: "a", tabID: "b")
            let (_, fromNew) = already.tickets.issue(tenant: "t", issueID: "1", issueKey: "K-1", accountID: "a", tabID: "c")
            #expect(try already.tickets.verify(fromOld).tabID == "b")
            #expect(try notYet.tickets.verify(fromNew).tabID == "c")

            // Without the NEXT step, an instance on the old key alone cannot open it: the failure this prevents.
            let oldOnly = try instance(["SECRET_ENCRYPTION_KEY": oldKey])
            await #expect(throws: SecretBox.Failure.self) { try await oldOnly.tenants.installedTenantWithSecret(clientKey: Self.site.clientKey) }
        }
    }

    @Test func ticketsSignedBeforeTheRotationStillVerify() throws {
        let old = try SecretBox(base64Key: SecretBox.generateKey())
        let new = try SecretBox(base64Key: SecretBox.generateKey())
        let (_, signed) = ViewerTicketSigner(secret: old.keyMaterial).issue(tenant: "t", issueID: "1", issueKey: "K-1", accountID: "a", tabID: "b")
        #expect(throws: ViewerTicketSigner.Rejection.badSignature) { try ViewerTicketSigner(secret: new.keyMaterial).verify(signed) }
        #expect(try ViewerTicketSigner(secret: new.keyMaterial, previousSecrets: [old.keyMaterial]).verify(signed).accountID == "a")
    }
}
