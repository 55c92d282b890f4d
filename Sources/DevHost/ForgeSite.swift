import AsyncHTTPClient
import TextCoding
import Connect
import Crypto
import _CryptoExtras
import Foundation
import JWTKit
import Logging
import NIOCore
import NIOFoundationCompat

/// The Forge platform's part toward the app, for one local site: Forge Invocation Tokens (FITs)
/// signed with its own RSA key and published as a JWKS, app system tokens, the installed and
/// preUninstall events, and the `invokeRemote` proxy. What it sends follows
/// `shared/notes/forge-remote.md`; the contract is `docs/forge.md` ("The local stand-in").
///
/// Its signing goes through jwt-kit, never the app's code.
public final class ForgeSite: Sendable {
    public struct Configuration: Sendable {
        /// `app.id` of the manifest: the FIT audience.
        public var appId: String
        /// The Custom UI source folder (`forge/src`), served under `/forge/app/`.
        public var sourceFolder: String
        /// The site's cloudId, fixed for the life of the stand-in (kept across reinstalls).
        public var cloudId: String
        public var environmentId: String
        public var appVersion: String
        /// Who installs the app (the installed event's `installerAccountId`).
        public var installerAccountId: String
        public init(
            appId: String, sourceFolder: String = "forge/src", cloudId: String = UUID().uuidString.lowercased(),
            environmentId: String = UUID().uuidString.lowercased(), appVersion: String = "1.0.0", installerAccountId: String = "alice"
        ) {
            self.appId = appId
            self.sourceFolder = sourceFolder
            self.cloudId = cloudId
            self.environmentId = environmentId
            self.appVersion = appVersion
            self.installerAccountId = installerAccountId
        }
    }

    /// A Forge module as the FIT names it.
    public struct Module: Sendable, Equatable {
        public var type: String
        public var key: String
        public init(type: String, key: String) {
            self.type = type
            self.key = key
        }
        /// The Who's Looking panel (`jira:issueContext`).
        public static let panel = Module(type: "jira:issueContext", key: "wl-panel")
        /// The Who's Looking background script.
        public static let background = Module(type: "jira:issueViewBackgroundScript", key: "wl-background")
        /// The trigger endpoint of the installed/upgraded events.
        public static let lifecycle = Module(type: "core:endpoint", key: "wl-lifecycle")
        /// The preUninstall endpoint (its module, `wl-pre-uninstall`, is named in the event body).
        public static let preUninstall = Module(type: "core:endpoint", key: "wl-uninstall")
        /// The hourly scheduled trigger's endpoint.
        public static let scheduled = Module(type: "core:endpoint", key: "wl-scheduled")
        /// UI modules by key: what a page frame may call as.
        public static func ui(key: String) -> Module? { [panel, background].first { $0.key == key } }
    }

    public enum InstallationStatus: String, Sendable {
        case notInstalled = "not installed yet"
        case installed
        case uninstalled
    }

    public let configuration: Configuration
    /// The site's URL (the devhost's), `context.siteUrl`.
    public let siteURL: String
    /// The app's base URL (the remote's `baseUrl`), without a trailing slash.
    public let appURL: String
    /// More instances of the app on the same database: a page with `via=N` (2 and up) has its
    /// `invokeRemote` calls sent to the Nth of `[appURL] + otherAppURLs`. Events go to `appURL`.
    public let otherAppURLs: [String]
    public let kid = "forge-devhost-\(UUID().uuidString.prefix(8).lowercased())"
    let privateKey: _RSA.Signing.PrivateKey
    let state = ForgeState()
    let logger: Logger
    /// Forge does not follow redirects (a 3xx rejects `invokeRemote`): a client of our own.
    let client: HTTPClient

    public var appId: String { configuration.appId }
    public var cloudId: String { configuration.cloudId }
    /// `app.apiBaseUrl`: the Jira REST double of this devhost.
    public var apiBaseURL: String { "\(siteURL)/ex/jira/\(configuration.cloudId)" }
    /// The source folder as an absolute, symlink-free path.
    public let sourceRoot: URL

    public init(configuration: Configuration, siteURL: String, appURL: String, otherAppURLs: [String] = [], logger: Logger) throws {
        self.configuration = configuration
        self.siteURL = siteURL
        self.appURL = appURL.hasSuffix("/") ? String(appURL.dropLast()) : appURL
        self.otherAppURLs = otherAppURLs.map { $0.hasSuffix("/") ? String($0.dropLast()) : $0 }
        self.logger = logger
        self.privateKey = try _RSA.Signing.PrivateKey(keySize: .bits2048)
        let folder = URL(fileURLWithPath: configuration.sourceFolder, relativeTo: URL(fileURLWithPath: FileManager.default.currentDirectoryPath))
        self.sourceRoot = folder.standardizedFileURL.resolvingSymlinksInPath()
        self.client = HTTPClient(eventLoopGroup: HTTPClient.defaultEventLoopGroup, configuration: .init(redirectConfiguration: .disallow))
    }

    deinit {
        try? client.syncShutdown()
    }

    // MARK: Keys and tokens

    func keyCollection() async throws -> JWTKeyCollection {
        let keys = JWTKeyCollection()
        await keys.add(rsa: try Insecure.RSA.PrivateKey(backing: privateKey), digestAlgorithm: .sha256, kid: JWKIdentifier(string: kid))
        return keys
    }

    /// `{"keys": [{"kty": "RSA", "kid", "alg": "RS256", "use": "sig", "n", "e"}]}`.
    public func jwks() throws -> [String: Any] {
        let primitives = try privateKey.publicKey.getKeyPrimitives()
        func unsigned(_ data: Data) -> String { Base64URL.encodeToString(data.drop { $0 == 0 }) }
        return [
            "keys": [
                ["kty": "RSA", "kid": kid, "alg": "RS256", "use": "sig", "n": unsigned(primitives.modulus), "e": unsigned(primitives.publicExponent)]
            ]
        ]
    }

    /// Signs any payload with the site's Forge key (RS256, header `kid`).
    public func sign(_ payload: some JWTPayload) async throws -> String {
        try await keyCollection().sign(payload, kid: JWKIdentifier(string: kid))
    }

    /// The current installation's id (`ari:cloud:ecosystem::installation/<uuid>`).
    public var installationId: String {
        get async { await state.installationId }
    }

    public var status: InstallationStatus {
        get async { await state.status }
    }

    /// The FIT claims for a call as `module`, at `now` (lifetime 25 s). UI calls pass the issue
    /// (`context`) and the person (`principal`; nil for an anonymous viewer); events pass neither.
    public func invocationClaims(
        module: Module, issue: InvocationClaims.Issue? = nil, project: InvocationClaims.Project? = nil,
        accountId: String? = nil, localId: String? = nil, installationId: String? = nil, now: Date = Date()
    ) async -> InvocationClaims {
        let installation: String
        if let installationId { installation = installationId } else { installation = await state.installationId }
        let seconds = Int(now.timeIntervalSince1970)
        let app = InvocationClaims.App(
            id: appId, appVersion: configuration.appVersion, installationId: installation, apiBaseUrl: apiBaseURL,
            environment: .init(type: "DEVELOPMENT", id: configuration.environmentId), module: .init(type: module.type, key: module.key),
            installation: .init(id: installation, contexts: [.init(name: "jira", apiBaseUrl: apiBaseURL, cloudId: cloudId)])
        )
        var context: InvocationClaims.Context?
        if let issue {
            let project = project ?? .init(id: "10000", key: String(issue.key.prefix { $0 != "-" }), type: "software")
            context = .init(
                cloudId: cloudId, siteUrl: siteURL, moduleKey: module.key, localId: localId ?? self.localId(module),
                extension: .init(type: module.type, issue: issue, project: project)
            )
        }
        return InvocationClaims(
            iss: "forge/invocation-token", aud: appId, iat: seconds, nbf: seconds, exp: seconds + 25, jti: UUID().uuidString.lowercased(),
            app: app, context: context, principal: issue == nil ? nil : accountId
        )
    }

    /// A signed FIT; see `invocationClaims`. For an issue of the Cast, pass its key.
    public func mintInvocationToken(module: Module, issueKey: String? = nil, accountId: String? = nil, now: Date = Date()) async throws -> String {
        let issue = issueKey.map { key in Cast.issue(key: key).map(Self.claimsIssue) ?? .init(id: "1", key: key, type: "Task", typeId: "10002") }
        let project = issueKey.flatMap { Cast.issue(key: $0) }.map(Self.claimsProject)
        return try await sign(await invocationClaims(module: module, issue: issue, project: project, accountId: accountId, now: now))
    }

    static func claimsIssue(_ issue: Cast.Issue) -> InvocationClaims.Issue {
        .init(id: issue.id, key: issue.key, type: "Task", typeId: "10002")
    }

    static func claimsProject(_ issue: Cast.Issue) -> InvocationClaims.Project {
        .init(id: issue.projectId, key: issue.projectKey, type: "software")
    }

    /// The extension's `localId`, as Forge forms it.
    public func localId(_ module: Module) -> String {
        let appUUID = appId.split(separator: "/").last.map(String.init) ?? appId
        return "ari:cloud:ecosystem::extension/\(appUUID)/\(configuration.environmentId)/static/\(module.key)"
    }

    /// The app system token for the current installation (RS256, `sub` = app id, 3 h), cached
    /// as Forge caches it: renewed once less than 2 h is left.
    public func systemToken(now: Date = Date()) async throws -> String {
        let installation = await state.installationId
        if let cached = await state.cachedSystemToken(installation: installation, validAfter: now.addingTimeInterval(2 * 3600)) { return cached }
        let seconds = Int(now.timeIntervalSince1970)
        let claims = ForgeOAuthTokenClaims(sub: appId, iat: seconds, exp: seconds + 3 * 3600, kind: .system, installationId: installation)
        let token = try await sign(claims)
        await state.cacheSystemToken(token, installation: installation, expires: Date(timeIntervalSince1970: TimeInterval(claims.exp)))
        return token
    }

    /// An app user token for `accountId` on the current installation (RS256, 1 h), as Forge
    /// sends in `x-forge-oauth-user` with calls that have a user in session; cached per person.
    public func userToken(accountId: String, now: Date = Date()) async throws -> String {
        let installation = await state.installationId
        if let cached = await state.cachedUserToken(accountId: accountId, installation: installation, validAfter: now.addingTimeInterval(600)) {
            return cached
        }
        let seconds = Int(now.timeIntervalSince1970)
        let claims = ForgeOAuthTokenClaims(sub: accountId, iat: seconds, exp: seconds + 3600, kind: .user, installationId: installation)
        let token = try await sign(claims)
        await state.cacheUserToken(
            token, accountId: accountId, installation: installation, expires: Date(timeIntervalSince1970: TimeInterval(claims.exp)))
        return token
    }

    /// The person whose unexpired user token `authorization` bears (`Bearer …`), for the
    /// installation installed now; nil for anything else.
    public func userTokenAccount(authorization: String?) async -> String? {
        await oauthToken(authorization, of: .user)?.sub
    }

    /// Whether `authorization` is `Bearer <one of our system tokens>`, unexpired, for the
    /// installation that is installed now (an uninstalled app's tokens stop working).
    public func acceptsSystemToken(authorization: String?) async -> Bool {
        await oauthToken(authorization, of: .system)?.sub == appId
    }

    /// The claims of a token of ours of `kind`, unexpired, for the installation installed now.
    private func oauthToken(_ authorization: String?, of kind: ForgeOAuthTokenClaims.Kind) async -> ForgeOAuthTokenClaims? {
        guard let authorization, authorization.lowercased().hasPrefix("bearer ") else { return nil }
        let token = authorization.dropFirst(7).trimmingCharacters(in: .whitespaces)
        guard let keys = try? await keyCollection(), let claims = try? await keys.verify(token, as: ForgeOAuthTokenClaims.self) else { return nil }
        let current = await state.installationId
        let status = await state.status
        return claims.kind == kind && claims.installationId == current && status == .installed ? claims : nil
    }

    // MARK: Calls to the app

    struct Failure: Error, CustomStringConvertible { var description: String }

    /// Random hex, for the B3 trace headers.
    static func hex(bytes: Int) -> String {
        (0..<bytes).map { _ in String(format: "%02x", UInt8.random(in: 0...255)) }.joined()
    }

    /// A request to the app with Forge's headers: FIT, B3 trace ids, system token (for the
    /// endpoints whose manifest entry enables `appSystemToken`).
    func appRequest(
        url: String, method: String, fit: String, systemToken: String?, userToken: String? = nil, body: Data?, extraHeaders: [String: String] = [:]
    ) -> HTTPClientRequest {
        var request = HTTPClientRequest(url: url)
        request.method = .init(rawValue: method)
        let reserved: Set<String> = ["authorization", "host", "content-length", "content-type", "connection", "transfer-encoding"]
        for (name, value) in extraHeaders
        where !reserved.contains(name.lowercased()) && !name.lowercased().hasPrefix("x-forge-") && !name.lowercased().hasPrefix("x-b3-") {
            request.headers.add(name: name, value: value)
        }
        request.headers.add(name: "Authorization", value: "Bearer \(fit)")
        request.headers.add(name: "x-b3-traceid", value: Self.hex(bytes: 16))
        request.headers.add(name: "x-b3-spanid", value: Self.hex(bytes: 8))
        if let systemToken { request.headers.add(name: "x-forge-oauth-system", value: systemToken) }
        if let userToken { request.headers.add(name: "x-forge-oauth-user", value: userToken) }
        if let body {
            request.headers.add(name: "Content-Type", value: "application/json")
            request.body = .bytes(ByteBuffer(data: body))
        }
        return request
    }

    /// Posts an event to `<app><path>` as a trigger does (FIT without context or principal,
    /// 5 s), with a system token if `withSystemToken`; answers the status and body.
    func postEvent(path: String, module: Module, body: [String: Any], withSystemToken: Bool) async throws -> (status: UInt, body: String) {
        let fit = try await sign(await invocationClaims(module: module))
        let request = appRequest(
            url: appURL + path, method: "POST", fit: fit, systemToken: withSystemToken ? try await systemToken() : nil,
            body: try JSONSerialization.data(withJSONObject: body, options: [.sortedKeys])
        )
        let response = try await client.execute(request, timeout: .seconds(5))
        return (response.status.code, String(buffer: try await response.body.collect(upTo: 1 << 20)))
    }

    /// The installed event of the current installation.
    func installedEvent(retry: (count: Int, reason: String)?) async -> [String: Any] {
        var event: [String: Any] = [
            "id": await state.installationId, "installerAccountId": configuration.installerAccountId,
            "app": ["id": appId, "version": configuration.appVersion], "environment": ["id": configuration.environmentId],
            "eventType": "avi:forge:installed:app", "context": "ari:cloud:jira::site/\(cloudId)",
        ]
        if let retry {
            event["retryContext"] = ["retryCount": retry.count, "retryReason": retry.reason, "retryData": NSNull()] as [String: Any]
        }
        return event
    }

    /// Sends the installed event once; on a 2xx the site counts as installed.
    public func install(retry: (count: Int, reason: String)? = nil) async throws {
        let (status, answer) = try await postEvent(
            path: "/forge/lifecycle", module: .lifecycle, body: await installedEvent(retry: retry), withSystemToken: true)
        guard (200..<300).contains(status) else { throw Failure(description: "/forge/lifecycle answered \(status) \(answer.prefix(300))") }
        await state.setStatus(.installed)
        let installation = await state.installationId
        logger.notice("Forge app installed", metadata: ["app": "\(appURL)", "installationId": "\(installation)", "cloudId": "\(cloudId)"])
    }

    /// Sends the installed event until the app takes it. An app that is not up yet is waited
    /// for; an answer that is not a 2xx, or a timeout, is retried as Forge retries it (with a
    /// `retryContext`), but without Forge's limit of four retries.
    public func installWhenReachable() async {
        var retries = 0
        var attempt = 0
        var pending: (count: Int, reason: String)?
        while !Task.isCancelled {
            attempt += 1
            do {
                try await install(retry: pending)
                return
            } catch let failure as Failure {
                retries += 1
                pending = (retries, "INVALID_REMOTE_INVOCATION_ERROR")
                logger.info("Forge install refused; retrying", metadata: ["reason": "\(failure)"])
            } catch let error as HTTPClientError where error == .deadlineExceeded || error == .readTimeout {
                retries += 1
                pending = (retries, "TIMEOUT_ERROR")
                logger.info("Forge install timed out; retrying", metadata: ["app": "\(appURL)"])
            } catch {
                if attempt == 1 || attempt % 30 == 0 {
                    logger.info("waiting for the app to install the Forge app", metadata: ["app": "\(appURL)", "reason": "\(error)"])
                }
            }
            try? await Task.sleep(for: .seconds(attempt < 60 ? 1 : 5))
        }
    }

    /// The preUninstall event (failure ignored, as in Forge; no system token, as the manifest
    /// enables none for its endpoint); then the site counts as uninstalled.
    public func uninstall() async {
        let contextToken = Self.hex(bytes: 32)
        let body: [String: Any] = ["context": ["cloudId": cloudId, "moduleKey": "wl-pre-uninstall"], "contextToken": contextToken]
        do {
            let (status, answer) = try await postEvent(path: "/forge/uninstall", module: .preUninstall, body: body, withSystemToken: false)
            if !(200..<300).contains(status) {
                logger.warning(
                    "the app refused the preUninstall event (ignored, as Forge does)",
                    metadata: ["status": "\(status)", "answer": "\(answer.prefix(300))"])
            }
        } catch {
            logger.warning("preUninstall event failed (ignored, as Forge does)", metadata: ["reason": "\(error)"])
        }
        await state.setStatus(.uninstalled)
        let installation = await state.installationId
        logger.notice("Forge app uninstalled", metadata: ["installationId": "\(installation)"])
    }

    /// The hourly scheduled trigger's call (FIT without context or principal, system token).
    public func runScheduledTrigger() async throws -> UInt {
        try await postEvent(path: "/forge/scheduled", module: .scheduled, body: [:], withSystemToken: true).status
    }

    /// A new installation (new installationId, same cloudId) and its installed event.
    public func reinstall() async throws {
        await state.newInstallation()
        try await install()
    }

    // MARK: invokeRemote

    /// What the page asks `/forge/invoke` for: one `invokeRemote` of a frame.
    struct InvokeCall: Decodable {
        var `as`: String?
        var issueKey: String
        var moduleKey: String
        var localId: String?
        var path: String
        var method: String?
        var headers: [String: String]?
        var body: JSONValue?
        /// The app instance the page talks to (`via` of the page): 1 or absent is `appURL`.
        var via: Int?
    }

    /// Proxies one `invokeRemote`: a FIT for the frame's module, issue and person, the system
    /// token, then `<app><path>` (the instance the page chose) with a 25 s timeout. Answers
    /// `{status, headers, body, bodyIsJSON}`, or `{error, message}` for a network error or the
    /// timeout; the bridge decides what rejects.
    func invoke(_ call: InvokeCall) async throws -> [String: Any] {
        guard let module = Module.ui(key: call.moduleKey) else { throw Failure(description: "unknown module \(call.moduleKey)") }
        guard let issue = Cast.issue(key: call.issueKey) else { throw Failure(description: "unknown issue \(call.issueKey)") }
        let method = (call.method ?? "GET").uppercased()
        guard ["GET", "POST", "PUT", "DELETE", "PATCH"].contains(method) else { throw Failure(description: "method \(method) is not allowed") }
        let instances = [appURL] + otherAppURLs
        let via = call.via ?? 1
        guard instances.indices.contains(via - 1) else { throw Failure(description: "no app instance \(via): there are \(instances.count)") }
        // `new URL(path, baseUrl)`, as Forge resolves it; never another host.
        guard let base = URL(string: instances[via - 1]), let resolved = URL(string: call.path, relativeTo: base)?.absoluteURL,
            resolved.scheme == base.scheme, resolved.host == base.host, resolved.port == base.port
        else { throw Failure(description: "path \(call.path) does not resolve to the remote") }
        let url = resolved.absoluteString
        let person = call.as.flatMap { Cast.person($0) }
        let claims = await invocationClaims(
            module: module, issue: Self.claimsIssue(issue), project: Self.claimsProject(issue), accountId: person?.accountId, localId: call.localId
        )
        let fit = try await sign(claims)
        var body: Data?
        if method != "GET", let value = call.body, value != .null {
            body = try JSONEncoder().encode(value)
            guard body!.count <= 500 * 1024 else { throw Failure(description: "request body over 500 KB") }
        }
        // A user token only with a user in session, as Forge sends it (the manifest enables it on wl-ui).
        var userToken: String?
        if let person { userToken = try await self.userToken(accountId: person.accountId) }
        let request = appRequest(
            url: url, method: method, fit: fit, systemToken: try await systemToken(), userToken: userToken, body: body,
            extraHeaders: call.headers ?? [:])
        do {
            let response = try await client.execute(request, timeout: .seconds(25))
            let data = Data(buffer: try await response.body.collect(upTo: 5 << 20))
            var headers: [String: String] = [:]
            for header in response.headers {
                headers[header.name.lowercased(), default: ""] += headers[header.name.lowercased()] == nil ? header.value : ", " + header.value
            }
            var answer: [String: Any] = ["status": Int(response.status.code), "headers": headers, "bodyLength": data.count]
            if !data.isEmpty, let parsed = try? JSONSerialization.jsonObject(with: data, options: [.fragmentsAllowed]) {
                answer["body"] = parsed
                answer["bodyIsJSON"] = true
            } else {
                answer["body"] = NSNull()
                answer["bodyIsJSON"] = false
                if !data.isEmpty { answer["bodyText"] = String(decoding: data.prefix(2000), as: UTF8.self) }
            }
            return answer
        } catch let error as HTTPClientError where error == .deadlineExceeded || error == .readTimeout {
            return ["error": "timeout", "message": "the remote did not answer within 25 s"]
        } catch {
            return ["error": "network", "message": "\(error)"]
        }
    }
}

/// Installation state of the Forge site.
actor ForgeState {
    private(set) var installationId = ForgeState.newInstallationId()
    private(set) var status = ForgeSite.InstallationStatus.notInstalled
    private var systemToken: (token: String, installation: String, expires: Date)?

    static func newInstallationId() -> String { "ari:cloud:ecosystem::installation/\(UUID().uuidString.lowercased())" }

    func setStatus(_ status: ForgeSite.InstallationStatus) { self.status = status }

    func newInstallation() {
        installationId = Self.newInstallationId()
        status = .notInstalled
        systemToken = nil
    }

    func cachedSystemToken(installation: String, validAfter: Date) -> String? {
        guard let systemToken, systemToken.installation == installation, systemToken.expires > validAfter else { return nil }
        return systemToken.token
    }

    func cacheSystemToken(_ token: String, installation: String, expires: Date) {
        systemToken = (token, installation, expires)
    }

    private var userTokens: [String: (token: String, installation: String, expires: Date)] = [:]

    func cachedUserToken(accountId: String, installation: String, validAfter: Date) -> String? {
        guard let entry = userTokens[accountId], entry.installation == installation, entry.expires > validAfter else { return nil }
        return entry.token
    }

    func cacheUserToken(_ token: String, accountId: String, installation: String, expires: Date) {
        userTokens[accountId] = (token, installation, expires)
    }
}

extension ForgeSite {
    /// The claims of a Forge Invocation Token (`shared/notes/forge-remote.md`, "What the remote receives").
    public struct InvocationClaims: JWTPayload, Equatable {
        public struct Environment: Codable, Sendable, Equatable {
            public var type: String
            public var id: String
            public init(type: String, id: String) {
                self.type = type
                self.id = id
            }
        }
        public struct Module: Codable, Sendable, Equatable {
            public var type: String
            public var key: String
            public init(type: String, key: String) {
                self.type = type
                self.key = key
            }
        }
        public struct InstallationContext: Codable, Sendable, Equatable {
            public var name: String
            public var apiBaseUrl: String
            public var cloudId: String
            public init(name: String, apiBaseUrl: String, cloudId: String) {
                self.name = name
                self.apiBaseUrl = apiBaseUrl
                self.cloudId = cloudId
            }
        }
        public struct Installation: Codable, Sendable, Equatable {
            public var id: String
            public var contexts: [InstallationContext]
            public init(id: String, contexts: [InstallationContext]) {
                self.id = id
                self.contexts = contexts
            }
        }
        public struct App: Codable, Sendable, Equatable {
            public var id: String
            public var appVersion: String
            public var installationId: String
            public var apiBaseUrl: String
            public var environment: Environment
            public var module: Module
            public var installation: Installation
            public init(
                id: String, appVersion: String, installationId: String, apiBaseUrl: String, environment: Environment, module: Module,
                installation: Installation
            ) {
                self.id = id
                self.appVersion = appVersion
                self.installationId = installationId
                self.apiBaseUrl = apiBaseUrl
                self.environment = environment
                self.module = module
                self.installation = installation
            }
        }
        public struct Issue: Codable, Sendable, Equatable {
            public var id: String
            public var key: String
            public var type: String
            public var typeId: String
            public init(id: String, key: String, type: String, typeId: String) {
                self.id = id
                self.key = key
                self.type = type
                self.typeId = typeId
            }
        }
        public struct Project: Codable, Sendable, Equatable {
            public var id: String
            public var key: String
            public var type: String
            public init(id: String, key: String, type: String) {
                self.id = id
                self.key = key
                self.type = type
            }
        }
        public struct Extension: Codable, Sendable, Equatable {
            public var type: String
            public var issue: Issue
            public var project: Project
            public init(type: String, issue: Issue, project: Project) {
                self.type = type
                self.issue = issue
                self.project = project
            }
        }
        public struct Context: Codable, Sendable, Equatable {
            public var cloudId: String
            public var siteUrl: String
            public var moduleKey: String
            public var localId: String
            public var `extension`: Extension
            public init(cloudId: String, siteUrl: String, moduleKey: String, localId: String, extension: Extension) {
                self.cloudId = cloudId
                self.siteUrl = siteUrl
                self.moduleKey = moduleKey
                self.localId = localId
                self.extension = `extension`
            }
        }

        public var iss: String
        public var aud: String
        public var iat: Int
        public var nbf: Int
        public var exp: Int
        public var jti: String
        public var app: App
        /// UI calls only.
        public var context: Context?
        /// The caller's accountId: UI calls by a logged-in person only.
        public var principal: String?

        public init(iss: String, aud: String, iat: Int, nbf: Int, exp: Int, jti: String, app: App, context: Context?, principal: String?) {
            self.iss = iss
            self.aud = aud
            self.iat = iat
            self.nbf = nbf
            self.exp = exp
            self.jti = jti
            self.app = app
            self.context = context
            self.principal = principal
        }

        /// Signing only: the app verifies FITs with its own code.
        public func verify(using algorithm: some JWTAlgorithm) async throws {}
    }
}

/// An OAuth token of this stand-in, as Forge hands them over: the app system token (`sub` = the
/// app id) or an app user token (`sub` = the person). Opaque to the app, which reads only `exp`
/// and passes the token back to Jira.
struct ForgeOAuthTokenClaims: JWTPayload {
    enum Kind: String, Codable { case system, user }
    var iss = "forge/devhost"
    var sub: String
    var aud = "api.atlassian.com"
    var iat: Int
    var exp: Int
    var jti = UUID().uuidString.lowercased()
    /// Stand-in bookkeeping: which kind of token, and the installation it was issued to.
    var kind: Kind
    var installationId: String

    func verify(using algorithm: some JWTAlgorithm) async throws {
        guard exp > Int(Date().timeIntervalSince1970) else { throw JWTError.claimVerificationFailure(failedClaim: nil, reason: "expired") }
    }
}

/// Any JSON value, for passing `invokeRemote` bodies through unchanged.
enum JSONValue: Codable, Equatable, Sendable {
    case null
    case bool(Bool)
    case number(Double)
    case string(String)
    case array([JSONValue])
    case object([String: JSONValue])

    init(from decoder: Decoder) throws {
        let container = try decoder.singleValueContainer()
        if container.decodeNil() {
            self = .null
        } else if let value = try? container.decode(Bool.self) {
            self = .bool(value)
        } else if let value = try? container.decode(Double.self) {
            self = .number(value)
        } else if let value = try? container.decode(String.self) {
            self = .string(value)
        } else if let value = try? container.decode([JSONValue].self) {
            self = .array(value)
        } else {
            self = .object(try container.decode([String: JSONValue].self))
        }
    }

    func encode(to encoder: Encoder) throws {
        var container = encoder.singleValueContainer()
        switch self {
        case .null: try container.encodeNil()
        case .bool(let value): try container.encode(value)
        case .number(let value):
            if value.rounded() == value, abs(value) < 1e15 { try container.encode(Int64(value)) } else { try container.encode(value) }
        case .string(let value): try container.encode(value)
        case .array(let value): try container.encode(value)
        case .object(let value): try container.encode(value)
        }
    }
}
