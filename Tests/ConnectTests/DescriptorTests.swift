import Connect
import Foundation
import TestSupport
import Testing

@Suite("The app descriptor", .timeLimit(.minutes(3)))
struct DescriptorTests {
    let descriptor = AppDescriptor(appKey: "whos-looking", baseURL: "https://presence.example.com")

    func json() throws -> [String: Any] {
        try #require(try JSONSerialization.jsonObject(with: JSONEncoder().encode(descriptor)) as? [String: Any])
    }

    /// Against Atlassian's published schema (draft-04), as ../shared/conformance/README.md says:
    /// the known-newer apiMigrations keys are removed first and checked by hand.
    @Test func validAgainstTheJiraSchema() async throws {
        var object = try json()
        var migrations = try #require(object["apiMigrations"] as? [String: Any])
        #expect(migrations.removeValue(forKey: "context-qsh") as? Bool == true)
        #expect(migrations.removeValue(forKey: "signed-install") as? Bool == true)
        #expect(migrations["gdpr"] as? Bool == true)
        object["apiMigrations"] = migrations

        let folder = FileManager.default.temporaryDirectory.appendingPathComponent("descriptor-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: folder, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(at: folder) }
        let descriptorFile = folder.appendingPathComponent("descriptor.json")
        try JSONSerialization.data(withJSONObject: object).write(to: descriptorFile)
        let schemaFile = folder.appendingPathComponent("schema.json")
        try SharedMaterial.conformance("jira-global-schema.json").write(to: schemaFile)

        let result = try await SchemaValidator.validate(instance: descriptorFile, schema: schemaFile)
        #expect(result.valid, "descriptor errors: \(result.errors)")

        // And the validator is really validating: a descriptor without authentication fails.
        object.removeValue(forKey: "authentication")
        try JSONSerialization.data(withJSONObject: object).write(to: descriptorFile)
        let invalid = try await SchemaValidator.validate(instance: descriptorFile, schema: schemaFile)
        #expect(invalid.valid == false)
    }

    @Test func panelCarriesTheIssueContextAndTheRightLocation() throws {
        let panel = try #require(descriptor.modules.webPanels.first)
        #expect(panel.location == "atl.jira.view.issue.right.context")
        for variable in ["{issue.id}", "{issue.key}", "{project.id}", "{project.key}"] {
            #expect(panel.url.contains(variable))
        }
        #expect(panel.url.hasPrefix(AppDescriptor.Route.panel + "?"))
        #expect(descriptor.baseUrl == "https://presence.example.com")
        #expect(descriptor.scopes == ["READ"])
        #expect(descriptor.authentication.type == "jwt")
        #expect(descriptor.lifecycle.installed == "/installed")
        #expect(descriptor.lifecycle.uninstalled == "/uninstalled")
    }
}
