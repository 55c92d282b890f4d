import Foundation
import Hummingbird
import TestSupport
import Testing
@testable import WhosLookingApp

/// This machine has no Docker engine, so the deployment files are checked as files: they parse,
/// they are complete, and they set only variables the app reads.
@Suite("Dockerfile and docker-compose.yml", .timeLimit(.minutes(3)))
struct DeploymentFilesTests {
    static let root = SharedMaterial.projectRoot

    /// docker-compose.yml as JSON, through Python's YAML parser (scripts/test installs PyYAML).
    func compose() async throws -> [String: Any] {
        let outcome = try await Subprocess.run(URL(fileURLWithPath: "/usr/bin/env"), [
            "python3", "-c", "import json, sys, yaml; print(json.dumps(yaml.safe_load(open(sys.argv[1]))))",
            Self.root.appendingPathComponent("docker-compose.yml").path,
        ])
        #expect(outcome.status == 0, "docker-compose.yml does not parse: \(outcome.output)")
        return try #require(try JSONSerialization.jsonObject(with: Data(outcome.output.utf8)) as? [String: Any])
    }

    @Test func composeParsesAndIsComplete() async throws {
        let file = try await compose()
        let services = try #require(file["services"] as? [String: [String: Any]])
        let postgres = try #require(services["postgres"])
        #expect((postgres["healthcheck"] as? [String: Any])?["test"] != nil)
        #expect((postgres["volumes"] as? [String])?.contains { $0.hasPrefix("postgres-data:") } == true)
        #expect((file["volumes"] as? [String: Any])?.keys.contains("postgres-data") == true)

        let app = try #require(services["app"])
        let dependsOn = try #require(app["depends_on"] as? [String: [String: String]])
        #expect(dependsOn["postgres"]?["condition"] == "service_healthy")
        let environment = try #require(app["environment"] as? [String: Any])
        for required in ["DATABASE_URL", "BASE_URL", "SECRET_ENCRYPTION_KEY"] {
            #expect(environment[required] != nil, "\(required) missing")
        }
        #expect((app["ports"] as? [String])?.isEmpty == false)
        // The second instance is documented, commented out.
        let text = try String(contentsOf: Self.root.appendingPathComponent("docker-compose.yml"), encoding: .utf8)
        #expect(text.contains("# app2:"))
    }

    @Test func composeSetsOnlyVariablesTheAppReads() async throws {
        let known = try AppConfiguration(environment: ["MIGRATIONS_DIR": NSTemporaryDirectory(), "PUBLIC_DIR": NSTemporaryDirectory()]).variablesRead
        #expect(known.contains("DATABASE_URL") && known.contains("PORT"), "the reader records what it reads")
        let services = try #require(try await compose()["services"] as? [String: [String: Any]])
        for name in ["app"] {
            let environment = try #require(services[name]?["environment"] as? [String: Any])
            for variable in environment.keys {
                #expect(known.contains(variable), "docker-compose.yml sets \(variable), which the app never reads")
            }
        }
        // The Dockerfile's ENV too.
        let dockerfile = try String(contentsOf: Self.root.appendingPathComponent("Dockerfile"), encoding: .utf8)
        let envBlock = dockerfile.components(separatedBy: "ENV ").dropFirst().first?.components(separatedBy: "\nEXPOSE").first ?? ""
        let variables = envBlock.split(whereSeparator: { $0 == " " || $0 == "\n" || $0 == "\\" }).compactMap { $0.split(separator: "=").first.map(String.init) }
        #expect(!variables.isEmpty)
        for variable in variables { #expect(known.contains(variable), "Dockerfile sets \(variable), which the app never reads") }
    }

    @Test func dockerfileBuildsInSwiftAndRunsSlimAsNonRoot() throws {
        let dockerfile = try String(contentsOf: Self.root.appendingPathComponent("Dockerfile"), encoding: .utf8)
        let lines = dockerfile.split(separator: "\n").map(String.init)
        let stages = lines.filter { $0.hasPrefix("FROM ") }
        #expect(stages.count == 2)
        #expect(stages.first?.hasPrefix("FROM swift:") == true && stages.first?.hasSuffix(" AS build") == true)
        #expect(stages.last?.contains("-slim") == true)
        #expect(dockerfile.contains("libpq5") && dockerfile.contains("ca-certificates"))
        #expect(dockerfile.contains("swift build -c release"))
        #expect(lines.contains("COPY Public ./Public") && lines.contains("COPY Migrations ./Migrations"))
        let user = lines.last { $0.hasPrefix("USER ") }
        #expect(user != nil && user != "USER root")
        #expect(dockerfile.contains("HEALTHCHECK") && dockerfile.contains("/healthz"))
        // Everything the image copies exists.
        for line in lines where line.hasPrefix("COPY ") && !line.contains("--from") {
            let source = line.split(separator: " ")[1]
            #expect(FileManager.default.fileExists(atPath: Self.root.appendingPathComponent(String(source)).path), "\(source) missing")
        }
    }

    @Test func theHealthcheckCommandWorks() async throws {
        // `whoslooking probe` is what HEALTHCHECK runs: 0 for a 200, non-zero otherwise.
        let router = HummingbirdRouterForProbe.make()
        let (healthy, missing) = try await LiveServer.run(router: router) { port in
            (try await Self.probe("http://127.0.0.1:\(port)/healthz"), try await Self.probe("http://127.0.0.1:\(port)/missing"))
        }
        #expect(healthy.status == 0, "\(healthy.output)")
        #expect(missing.status != 0)
        #expect(missing.output.contains("answered 404"))
        let unreachable = try await Self.probe("http://127.0.0.1:1/healthz")
        #expect(unreachable.status != 0)
    }

    static func probe(_ url: String) async throws -> Subprocess.Outcome {
        try await Subprocess.run(ChildService.whoslooking, ["probe", url, "--timeout", "20"])
    }
}

enum HummingbirdRouterForProbe {
    static func make() -> Router<BasicRequestContext> {
        let router = Router()
        router.get("healthz") { _, _ in "ok" }
        return router
    }
}
