import Foundation
import TestSupport
import Testing

@testable import WhosLookingApp

/// The Forge app as files (docs/forge.md): forge/manifest.yml resolves and stays a pure Forge
/// app, scripts/forge-configure edits exactly its two lines, and the Custom UI under forge/src
/// loads only what Forge's CSP serves and never parses a name as markup. There is no Forge CLI
/// here, so these are the checks `forge lint` would make that matter to us, and a few more.
@Suite("Forge app files", .timeLimit(.minutes(3)))
struct ForgeManifestTests {
    static let root = SharedMaterial.projectRoot
    static let forge = root.appendingPathComponent("forge")
    static let manifest = forge.appendingPathComponent("manifest.yml")
    static let source = forge.appendingPathComponent("src")
    static let configure = root.appendingPathComponent("scripts/forge-configure")

    static let uiModuleTypes = ["jira:issueContext", "jira:issueViewBackgroundScript"]
    static let moduleTypes: Set<String> = [
        "jira:issueContext", "jira:issueViewBackgroundScript", "trigger", "preUninstall", "scheduledTrigger", "endpoint",
    ]
    static let appIdPattern = "^ari:cloud:ecosystem::app/[0-9a-f-]{36}$"
    static let keyPattern = "^[a-zA-Z0-9_-]+$"

    // MARK: - YAML through PyYAML, read back as typed JSON

    /// A parsed YAML/JSON value; decoding tries Bool before Double so `true` stays a Bool.
    enum Node: Decodable, Equatable, Sendable {
        case null
        case bool(Bool)
        case number(Double)
        case string(String)
        case array([Node])
        case object([String: Node])

        init(from decoder: any Decoder) throws {
            let container = try decoder.singleValueContainer()
            if container.decodeNil() {
                self = .null
            } else if let value = try? container.decode(Bool.self) {
                self = .bool(value)
            } else if let value = try? container.decode(Double.self) {
                self = .number(value)
            } else if let value = try? container.decode(String.self) {
                self = .string(value)
            } else if let value = try? container.decode([Node].self) {
                self = .array(value)
            } else {
                self = .object(try container.decode([String: Node].self))
            }
        }

        subscript(key: String) -> Node? {
            if case .object(let fields) = self { return fields[key] }
            return nil
        }

        var string: String? {
            if case .string(let value) = self { return value }
            return nil
        }

        var bool: Bool? {
            if case .bool(let value) = self { return value }
            return nil
        }

        var array: [Node]? {
            if case .array(let value) = self { return value }
            return nil
        }

        var object: [String: Node]? {
            if case .object(let value) = self { return value }
            return nil
        }

        /// Every mapping key at any depth.
        var allKeys: [String] {
            switch self {
            case .object(let fields): return Array(fields.keys) + fields.values.flatMap(\.allKeys)
            case .array(let items): return items.flatMap(\.allKeys)
            default: return []
            }
        }
    }

    static func yaml(_ file: URL) async throws -> Node {
        let outcome = try await Subprocess.run(
            URL(fileURLWithPath: "/usr/bin/env"),
            [
                "python3", "-c", "import json, sys, yaml; print(json.dumps(yaml.safe_load(open(sys.argv[1]))))", file.path,
            ])
        try #require(outcome.status == 0, "\(file.lastPathComponent) does not parse as YAML: \(outcome.output)")
        return try JSONDecoder().decode(Node.self, from: Data(outcome.output.utf8))
    }

    static func matches(_ text: String, _ pattern: String) -> Bool {
        text.range(of: pattern, options: .regularExpression) != nil
    }

    /// Each match of `pattern` in `text`, as its capture groups (index 0: the whole match).
    static func captures(_ pattern: String, in text: String) throws -> [[String?]] {
        let regex = try NSRegularExpression(pattern: pattern, options: [.caseInsensitive, .dotMatchesLineSeparators])
        return regex.matches(in: text, range: NSRange(text.startIndex..., in: text)).map { match in
            (0..<match.numberOfRanges).map { index in
                Range(match.range(at: index), in: text).map { String(text[$0]) }
            }
        }
    }

    // MARK: - (a) the manifest

    @Test func theManifestIsAPureForgeAppWhoseReferencesResolve() async throws {
        let manifest = try await Self.yaml(Self.manifest)
        let modules = try #require(manifest["modules"]?.object, "no modules")

        // Pure Forge: no Connect modules, no Connect keys anywhere, only the module types we use.
        #expect(manifest["connectModules"] == nil)
        let connectKeys = manifest.allKeys.filter { $0.lowercased().contains("connect") }
        #expect(connectKeys.isEmpty, "Connect keys in the manifest: \(connectKeys)")
        #expect(Set(modules.keys) == Self.moduleTypes, "module types: \(modules.keys.sorted())")

        let app = try #require(manifest["app"])
        let appId = try #require(app["id"]?.string)
        #expect(Self.matches(appId, Self.appIdPattern), "app.id \(appId)")
        #expect(app["runtime"]?["name"]?.string == "nodejs24.x")

        let endpoints = try #require(modules["endpoint"]?.array, "no endpoint modules")
        let remotes = try #require(manifest["remotes"]?.array, "no remotes")
        let resources = try #require(manifest["resources"]?.array, "no resources")
        let endpointsByKey = Dictionary(endpoints.compactMap { e in e["key"]?.string.map { ($0, e) } }, uniquingKeysWith: { first, _ in first })
        let remoteKeys = Set(remotes.compactMap { $0["key"]?.string })
        let resourcesByKey = Dictionary(resources.compactMap { r in r["key"]?.string.map { ($0, r) } }, uniquingKeysWith: { first, _ in first })
        #expect(
            endpointsByKey.count == endpoints.count && remoteKeys.count == remotes.count && resourcesByKey.count == resources.count,
            "an endpoint, remote or resource without a key, or a key used twice")

        // Both UI modules: a resource that exists and a resolver endpoint that exists.
        for type in Self.uiModuleTypes {
            let entries = try #require(modules[type]?.array, "no \(type) module")
            #expect(entries.count == 1, "\(type): \(entries.count) entries")
            for entry in entries {
                let resource = try #require(entry["resource"]?.string, "\(type) has no resource")
                #expect(resourcesByKey[resource] != nil, "\(type) resource \(resource) is not declared")
                let endpoint = try #require(entry["resolver"]?["endpoint"]?.string, "\(type) has no resolver.endpoint")
                let target = try #require(endpointsByKey[endpoint], "\(type) resolver endpoint \(endpoint) is not declared")
                // invokeRemote from the UI: the path comes from the call, the system token lets the server read users.
                #expect(target["route"] == nil, "a UI endpoint needs no route: \(endpoint)")
                #expect(target["auth"]?["appSystemToken"]?["enabled"]?.bool == true, "\(endpoint) sends no system token")
            }
        }
        let panel = try #require(modules["jira:issueContext"]?.array?.first)
        #expect(panel["title"]?.string?.isEmpty == false && panel["label"]?.string?.isEmpty == false, "the panel needs a title and a label")

        // Lifecycle: installed + upgraded reach /forge/lifecycle with a system token.
        let triggers = try #require(modules["trigger"]?.array, "no trigger")
        #expect(triggers.count == 1)
        for trigger in triggers {
            #expect(trigger["function"] == nil, "a trigger for a remote names an endpoint, not a function")
            let endpoint = try #require(trigger["endpoint"]?.string, "the trigger has no endpoint")
            let target = try #require(endpointsByKey[endpoint], "trigger endpoint \(endpoint) is not declared")
            #expect(target["route"]?["path"]?.string == "/forge/lifecycle")
            #expect(target["auth"]?["appSystemToken"]?["enabled"]?.bool == true, "the lifecycle endpoint sends no system token")
            let events = Set((trigger["events"]?.array ?? []).compactMap(\.string))
            #expect(events == ["avi:forge:installed:app", "avi:forge:upgraded:app"], "trigger events: \(events.sorted())")
        }
        let preUninstall = try #require(modules["preUninstall"]?.array, "no preUninstall")
        #expect(preUninstall.count == 1)
        for entry in preUninstall {
            let endpoint = try #require(entry["endpoint"]?.string, "preUninstall has no endpoint")
            let target = try #require(endpointsByKey[endpoint], "preUninstall endpoint \(endpoint) is not declared")
            #expect(target["route"]?["path"]?.string == "/forge/uninstall")
        }
        // Hourly, with a system token: idle sites are reported to the personal data API too.
        let scheduled = try #require(modules["scheduledTrigger"]?.array, "no scheduledTrigger")
        #expect(scheduled.count == 1)
        for entry in scheduled {
            #expect(entry["interval"]?.string == "hour")
            let endpoint = try #require(entry["endpoint"]?.string, "scheduledTrigger has no endpoint")
            let target = try #require(endpointsByKey[endpoint], "scheduledTrigger endpoint \(endpoint) is not declared")
            #expect(target["route"]?["path"]?.string == "/forge/scheduled")
            #expect(target["auth"]?["appSystemToken"]?["enabled"]?.bool == true, "the scheduled endpoint sends no system token")
            #expect(ForgeCaller.scheduledKeys.contains(endpoint) && ForgeCaller.scheduledKeys.contains(entry["key"]?.string ?? ""))
        }
        // The server binds each route to these modules (ForgeCaller): the keys must be the manifest's.
        let contextPanels = (modules["jira:issueContext"]?.array ?? []).compactMap { $0["key"]?.string }
        let backgrounds = (modules["jira:issueViewBackgroundScript"]?.array ?? []).compactMap { $0["key"]?.string }
        #expect(contextPanels == [ForgeCaller.panel.key] && backgrounds == [ForgeCaller.background.key])
        for trigger in triggers {
            #expect(
                ForgeCaller.lifecycleKeys.contains(trigger["key"]?.string ?? "")
                    && ForgeCaller.lifecycleKeys.contains(trigger["endpoint"]?.string ?? ""))
        }
        for entry in preUninstall {
            #expect(
                entry["key"]?.string == ForgeCaller.preUninstallModuleKey && ForgeCaller.preUninstallKeys.contains(entry["endpoint"]?.string ?? ""))
        }
        // The UI endpoint sends the viewer's own token: the server asks Jira with it whether
        // they may see the issue their browser names.
        let ui = try #require(endpointsByKey["wl-ui"], "no wl-ui endpoint")
        #expect(ui["auth"]?["appUserToken"]?["enabled"]?.bool == true, "wl-ui sends no user token")

        // Every endpoint is hosted by a declared remote.
        for (key, endpoint) in endpointsByKey {
            let remote = endpoint["remote"]?.string
            #expect(remote.map { remoteKeys.contains($0) } == true, "endpoint \(key) names remote \(remote ?? "nil"), which is not declared")
        }

        // Every resource is a static/ folder built from a forge/src folder with an index.html.
        for (key, resource) in resourcesByKey {
            let path = try #require(resource["path"]?.string, "resource \(key) has no path")
            #expect(path.hasPrefix("static/") && !path.contains(".."), "resource \(key) path \(path) is not under static/")
            let folder = String(path.dropFirst("static/".count))
            let index = Self.source.appendingPathComponent(folder).appendingPathComponent("index.html")
            #expect(!folder.isEmpty && FileManager.default.fileExists(atPath: index.path), "resource \(key): forge/src/\(folder)/index.html missing")
        }

        // The remote: invokeRemote needs compute; it stores who is looking (end-user data).
        #expect(remotes.count == 1)
        let remote = try #require(remotes.first)
        let operations = (remote["operations"]?.array ?? []).compactMap(\.string)
        #expect(Set(operations) == ["compute", "storage"] && operations.count == 2, "operations: \(operations)")
        #expect(remote["storage"]?["inScopeEUD"]?.bool == true)
        let baseUrl = try #require(remote["baseUrl"]?.string, "the remote's baseUrl is not one string")
        let base = try #require(URL(string: baseUrl))
        #expect(base.scheme == "https" && base.host != nil && (base.path.isEmpty || base.path == "/"), "baseUrl \(baseUrl)")

        // Exactly the two token scopes, users (names) and work (the issue check): no Connect
        // scopes, no extras.
        let scopes = (manifest["permissions"]?["scopes"]?.array ?? []).compactMap(\.string)
        #expect(scopes.sorted() == ["read:app-system-token", "read:app-user-token", "read:jira-user", "read:jira-work"], "scopes: \(scopes)")
        // A stylesheet file, so no unsafe-* content permissions.
        #expect(manifest["permissions"]?["content"] == nil, "content permissions (unsafe-*) are not needed")

        // Keys: Forge's pattern; endpoint, remote and resource keys at most 23; module keys unique.
        let moduleKeys = modules.values.flatMap { entries in (entries.array ?? []).map { entry in entry["key"]?.string ?? "" } }
        let limited = Array(endpointsByKey.keys) + Array(remoteKeys) + Array(resourcesByKey.keys)
        for key in moduleKeys + limited {
            #expect(Self.matches(key, Self.keyPattern), "key \(key.debugDescription) does not match \(Self.keyPattern)")
        }
        for key in limited {
            #expect(key.count <= 23, "key \(key) is longer than 23 characters")
        }
        #expect(Set(moduleKeys).count == moduleKeys.count, "module keys used twice: \(moduleKeys.sorted())")
    }

    // MARK: - (b) scripts/forge-configure

    static func scratchManifest() throws -> (folder: URL, file: URL, original: Data) {
        let folder = FileManager.default.temporaryDirectory.appendingPathComponent("wl-forge-\(UUID().uuidString.prefix(8))")
        try FileManager.default.createDirectory(at: folder, withIntermediateDirectories: true)
        let file = folder.appendingPathComponent("manifest.yml")
        let original = try Data(contentsOf: Self.manifest)
        try original.write(to: file)
        return (folder, file, original)
    }

    static func runConfigure(_ arguments: [String], unsetBaseURL: Bool = true) async throws -> Subprocess.Outcome {
        // Through env so that the caller's BASE_URL never leaks in unless a test sets it.
        let prefix = unsetBaseURL ? ["-u", "BASE_URL"] : []
        return try await Subprocess.run(URL(fileURLWithPath: "/usr/bin/env"), prefix + [Self.configure.path] + arguments)
    }

    static func newAppId() -> String { "ari:cloud:ecosystem::app/\(UUID().uuidString.lowercased())" }

    @Test func forgeConfigureRewritesExactlyTheTwoLines() async throws {
        #expect(FileManager.default.isExecutableFile(atPath: Self.configure.path), "scripts/forge-configure is not executable")
        let (folder, file, original) = try Self.scratchManifest()
        defer { try? FileManager.default.removeItem(at: folder) }
        let host = "wl-\(UUID().uuidString.prefix(8).lowercased()).example.com"
        let appId = Self.newAppId()

        let outcome = try await Self.runConfigure(["--base-url", "https://\(host)/", "--app-id", appId, "--manifest", file.path])
        #expect(outcome.status == 0, "\(outcome.output)")
        #expect(outcome.output.contains(appId) && outcome.output.contains("https://\(host)"), "it says what it changed: \(outcome.output)")

        // Parsed: the new values, the trailing slash stripped.
        let configured = try await Self.yaml(file)
        #expect(configured["app"]?["id"]?.string == appId)
        #expect(configured["remotes"]?.array?.first?["baseUrl"]?.string == "https://\(host)")

        // Byte for byte: two lines differ, nothing else.
        let before = String(decoding: original, as: UTF8.self).components(separatedBy: "\n")
        let after = try String(contentsOf: file, encoding: .utf8).components(separatedBy: "\n")
        #expect(before.count == after.count)
        let changed = zip(before, after).filter { $0.0 != $0.1 }.map { $0.1.trimmingCharacters(in: .whitespaces) }
        #expect(changed.sorted() == ["baseUrl: https://\(host)", "id: \(appId)"], "changed lines: \(changed)")

        // Again with the same values: nothing to change.
        let configuredBytes = try Data(contentsOf: file)
        let again = try await Self.runConfigure(["--base-url", "https://\(host)", "--app-id", appId, "--manifest", file.path])
        #expect(again.status == 0, "\(again.output)")
        #expect(try Data(contentsOf: file) == configuredBytes)
    }

    @Test func forgeConfigureTakesBASE_URLWhenTheFlagIsAbsent() async throws {
        let (folder, file, _) = try Self.scratchManifest()
        defer { try? FileManager.default.removeItem(at: folder) }
        let appId = Self.newAppId()
        let outcome = try await Subprocess.run(
            URL(fileURLWithPath: "/usr/bin/env"),
            [
                "BASE_URL=https://from-env.example.com", Self.configure.path, "--app-id", appId, "--manifest", file.path,
            ])
        #expect(outcome.status == 0, "\(outcome.output)")
        let configured = try await Self.yaml(file)
        #expect(configured["remotes"]?.array?.first?["baseUrl"]?.string == "https://from-env.example.com")
        #expect(configured["app"]?["id"]?.string == appId)

        // Local development may use plain http, on this machine only.
        let local = try await Self.runConfigure(["--base-url", "http://127.0.0.1:8080", "--app-id", appId, "--manifest", file.path])
        #expect(local.status == 0, "\(local.output)")
        let localBase = try await Self.yaml(file)["remotes"]?.array?.first?["baseUrl"]?.string
        #expect(localBase == "http://127.0.0.1:8080")
    }

    @Test func forgeConfigureRefusesBadInputAndLeavesTheFileAlone() async throws {
        let (folder, file, original) = try Self.scratchManifest()
        defer { try? FileManager.default.removeItem(at: folder) }
        let goodURL = "https://presence.example.com"
        let goodId = Self.newAppId()
        let refused: [(String, [String])] = [
            ("upper-case app id", ["--base-url", goodURL, "--app-id", "ari:cloud:ecosystem::app/0B6F6C1E-8A45-4E57-9A4C-3D7C8E2F1A90"]),
            ("short app id", ["--base-url", goodURL, "--app-id", "ari:cloud:ecosystem::app/1234"]),
            ("foreign ARI", ["--base-url", goodURL, "--app-id", goodId.replacingOccurrences(of: "ecosystem::app", with: "jira::site")]),
            ("no app id", ["--base-url", goodURL]),
            ("http on a public host", ["--base-url", "http://presence.example.com", "--app-id", goodId]),
            ("another scheme", ["--base-url", "ftp://presence.example.com", "--app-id", goodId]),
            ("a path", ["--base-url", "https://presence.example.com/whoslooking", "--app-id", goodId]),
            ("a query", ["--base-url", "https://presence.example.com/?a=b", "--app-id", goodId]),
            ("not a URL", ["--base-url", "presence.example.com", "--app-id", goodId]),
            ("no base URL at all", ["--app-id", goodId]),
        ]
        for (reason, arguments) in refused {
            let outcome = try await Self.runConfigure(arguments + ["--manifest", file.path])
            #expect(outcome.status != 0, "accepted \(reason): \(outcome.output)")
            let lines = outcome.output.split(separator: "\n")
            #expect(lines.count == 1, "\(reason): not one line: \(outcome.output)")
            #expect(try Data(contentsOf: file) == original, "\(reason): the manifest changed")
        }

        let help = try await Self.runConfigure(["--help"])
        #expect(help.status == 0)
        #expect(help.output.contains("--base-url") && help.output.contains("--app-id") && help.output.contains("--manifest"))
    }

    // MARK: - (c) the Custom UI sources

    static func sourceFiles(endingWith suffix: String) throws -> [URL] {
        try FileManager.default.subpathsOfDirectory(atPath: Self.source.path)
            .filter { $0.hasSuffix(suffix) }
            .sorted()
            .map { Self.source.appendingPathComponent($0) }
    }

    static func attribute(_ name: String, in tag: String) throws -> String? {
        let found = try captures(#"\b\#(name)\s*=\s*(?:"([^"]*)"|'([^']*)'|([^\s>"']+))"#, in: tag).first
        return found.flatMap { groups in groups.dropFirst().compactMap { $0 }.first }
    }

    /// Forge serves only the resource's own folder, by relative URL (`/abs` answers 403).
    static func isRelative(_ url: String) -> Bool {
        !url.isEmpty && !url.hasPrefix("/") && !matches(url, "^[a-zA-Z][a-zA-Z0-9+.-]*:")
    }

    @Test func theCustomUIPagesLoadOnlyRelativeFilesAndNoInlineCode() throws {
        let pages = try Self.sourceFiles(endingWith: "index.html")
        let names = pages.map { $0.deletingLastPathComponent().lastPathComponent }
        #expect(Set(names).isSuperset(of: ["panel", "background"]), "pages: \(names)")
        for page in pages {
            let name = page.path.replacingOccurrences(of: Self.source.path + "/", with: "")
            let html = try String(contentsOf: page, encoding: .utf8)
            let folder = page.deletingLastPathComponent()

            let scripts = try Self.captures(#"<script\b([^>]*)>(.*?)</script\s*>"#, in: html)
            #expect(!scripts.isEmpty, "\(name) loads no script")
            for script in scripts {
                let attributes = script[1] ?? ""
                let body = (script[2] ?? "").trimmingCharacters(in: .whitespacesAndNewlines)
                #expect(body.isEmpty, "\(name) has an inline script: Forge's CSP refuses it")
                let src = try #require(try Self.attribute("src", in: attributes), "\(name) has a script without src")
                #expect(Self.isRelative(src), "\(name) loads \(src): only relative URLs work in a Forge resource")
                #expect(Self.matches(attributes, #"type\s*=\s*["']?module"#), "\(name): \(src) is not an ES module script")
                let file = folder.appendingPathComponent(src).standardizedFileURL
                #expect(FileManager.default.fileExists(atPath: file.path), "\(name) loads \(src), which is missing")
            }
            // Stylesheets and any other linked file: relative and present.
            for link in try Self.captures(#"<link\b[^>]*>"#, in: html) {
                let tag = link[0] ?? ""
                let href = try #require(try Self.attribute("href", in: tag), "\(name): a link without href")
                #expect(Self.isRelative(href), "\(name) links \(href): only relative URLs work in a Forge resource")
                #expect(
                    FileManager.default.fileExists(atPath: folder.appendingPathComponent(href).standardizedFileURL.path),
                    "\(name) links \(href), which is missing")
            }
            // No inline CSS either: the manifest grants no unsafe-inline.
            #expect(!Self.matches(html, #"(?i)<style\b"#), "\(name) has a <style> element")
            #expect(!Self.matches(html, #"(?i)\sstyle\s*="#), "\(name) has a style attribute")
            #expect(!Self.matches(html, #"(?i)\son[a-z]+\s*="#), "\(name) has an inline event handler")
            // The panel's fixed elements (docs/forge.md): the list and the status line.
            if name == "panel/index.html" {
                #expect(Self.matches(html, #"<ul\b[^>]*\bclass="viewers""#), "panel/index.html has no ul.viewers")
                #expect(Self.matches(html, #"\bid="status""#), "panel/index.html has no #status")
            }
        }
    }

    @Test func theCustomUIScriptsNeverWriteMarkup() throws {
        let scripts = try Self.sourceFiles(endingWith: ".js")
        let names = Set(scripts.map { $0.lastPathComponent })
        #expect(names.isSuperset(of: ["panel.js", "background.js", "presence.js"]), "scripts: \(names.sorted())")
        let bridgeNames: Set<String> = ["view", "invokeRemote", "events"]
        for script in scripts {
            let name = script.path.replacingOccurrences(of: Self.source.path + "/", with: "")
            let code = try String(contentsOf: script, encoding: .utf8)
            for sink in ["innerHTML", "outerHTML", "insertAdjacentHTML", "document.write"] {
                #expect(!code.contains(sink), "\(name) uses \(sink): names are text, never markup")
            }
            #expect(!code.contains("eval(") && !code.contains("new Function"), "\(name) evaluates code: Forge's CSP refuses it")
            // Imports: the bridge (only what the local stand-in provides too) or a file in forge/src.
            for found in try Self.captures(#"\bimport\s+(?:([^"';]*?)\s+from\s+)?["']([^"']+)["']"#, in: code) {
                let specifier = try #require(found[2])
                if specifier == "@forge/bridge" {
                    // Named imports only: `{ view, events }`, not a default or namespace import.
                    let clause = (found[1] ?? "").trimmingCharacters(in: .whitespacesAndNewlines)
                    let named = clause.hasPrefix("{") && clause.hasSuffix("}") ? String(clause.dropFirst().dropLast()) : "*"
                    let imported = Set(named.split(separator: ",").map { $0.trimmingCharacters(in: .whitespacesAndNewlines) }.filter { !$0.isEmpty })
                    #expect(!imported.isEmpty && imported.isSubset(of: bridgeNames), "\(name) imports \(imported.sorted()) from @forge/bridge")
                } else {
                    #expect(
                        specifier.hasPrefix("./") || specifier.hasPrefix("../"), "\(name) imports \(specifier): only the bridge or relative files")
                    let target = script.deletingLastPathComponent().appendingPathComponent(specifier).standardizedFileURL
                    #expect(
                        target.path.hasPrefix(Self.source.path + "/") && FileManager.default.fileExists(atPath: target.path),
                        "\(name) imports \(specifier), which is not in forge/src")
                }
            }
        }
    }

    @Test func theBuildIsDeclaredAndItsOutputIgnored() throws {
        let data = try Data(contentsOf: Self.forge.appendingPathComponent("package.json"))
        let package = try JSONDecoder().decode(Node.self, from: data)
        #expect(package["name"]?.string == "whoslooking-forge")
        #expect(package["private"]?.bool == true)
        #expect(package["type"]?.string == "module")
        #expect(package["scripts"]?["build"]?.string == "node build.mjs")
        #expect(package["dependencies"]?["@forge/bridge"]?.string != nil)
        #expect(package["devDependencies"]?["esbuild"]?.string != nil)
        #expect(FileManager.default.fileExists(atPath: Self.forge.appendingPathComponent("build.mjs").path))
        let ignored = try String(contentsOf: Self.forge.appendingPathComponent(".gitignore"), encoding: .utf8)
            .split(separator: "\n").map { $0.trimmingCharacters(in: .whitespaces) }
        #expect(ignored.contains("node_modules/") && ignored.contains("static/"), "forge/.gitignore: \(ignored)")
    }
}
