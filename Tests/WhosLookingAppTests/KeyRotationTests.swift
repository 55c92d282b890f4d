import Tenants
import Foundation
import Libpq
import Presence
import TestSupport
import Testing
@testable import WhosLookingApp

@Suite("Rotating SECRET_ENCRYPTION_KEY")
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

    @Test func ticketsSignedBeforeTheRotationStillVerify() throws {
        let old = try SecretBox(base64Key: SecretBox.generateKey())
        let new = try SecretBox(base64Key: SecretBox.generateKey())
        let (_, signed) = ViewerTicketSigner(secret: old.keyMaterial).issue(tenant: "t", issueID: "1", issueKey: "K-1", accountID: "a", tabID: "b")
        #expect(throws: ViewerTicketSigner.Rejection.badSignature) { try ViewerTicketSigner(secret: new.keyMaterial).verify(signed) }
        #expect(try ViewerTicketSigner(secret: new.keyMaterial, previousSecrets: [old.keyMaterial]).verify(signed).accountID == "a")
    }
}
