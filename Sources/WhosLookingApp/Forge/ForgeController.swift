import Forge
import Foundation
import HTTPTypes
import Hummingbird
import Presence
import Tenants
import UserDirectory

/// The Forge app's remote (`/forge/*`): the calls Forge proxies from our Custom UI and its
/// lifecycle events. Every call carries a Forge Invocation Token, which says who is looking
/// (`principal`), on which installation (`app.installationId`) and from which module
/// (`app.module`); each route takes only the module that may make it (`ForgeCaller`). The issue
/// comes from the token's browser-alterable `context`, so Jira is asked, with the person's own
/// token, whether they may see it (`ForgeIssueAccess`) before anything is recorded or listed.
/// The body only names the browser tab.
struct ForgeController {
    let verifier: ForgeTokenVerifier
    let tenants: TenantRepository
    let presence: PresenceRepository
    let recorder: HeartbeatRecorder
    let waits: PanelWaits
    let systemTokens: ForgeSystemTokens
    let issueAccess: ForgeIssueAccess
    let reporter: PersonalDataReporter
    let polls: PanelPolls

    func addRoutes(to router: Router<AppRequestContext>) {
        let forge = router.group("forge").add(middleware: ForgeErrorMiddleware())
        forge.post("heartbeat", use: heartbeat)
        forge.post("wait", use: wait)
        forge.post("leave", use: leave)
        forge.post("lifecycle", use: lifecycle)
        forge.post("uninstall", use: uninstall)
        forge.post("scheduled", use: scheduled)
    }

    @Sendable func heartbeat(_ request: Request, context: AppRequestContext) async throws -> HeartbeatResponse {
        let invocation = try await authenticate(request, context: context, caller: .issueView)
        let body = try await Self.object(request, context: context)
        let tabID = try Self.tabID(body)
        let away = try PresenceController.isAway(try Self.optionalString(body, "state"))
        let seq = try PresenceController.sequence(body["seq"])
        let claimed = try Self.issue(invocation)
        guard let accountID = try Self.principal(invocation) else {
            return HeartbeatResponse(viewers: [], pollSeconds: polls.pollSeconds, awayPollSeconds: polls.awayPollSeconds, anonymous: true)
        }
        let issue = try await visibleIssue(claimed, to: accountID, invocation, request: request, context: context)
        let viewer = ViewerKey(tenant: invocation.installationID, issueID: issue.id, accountID: accountID, tabID: tabID)
        var viewers = try await recorder.record(viewer, issueKey: issue.key, away: away, seq: seq)
        if viewers == nil {
            // First call of an installation whose lifecycle event has not arrived (it may lag
            // or never come): a verified token is enough to register it, unless it was uninstalled.
            try await register(invocation, context: context)
            viewers = try await recorder.record(viewer, issueKey: issue.key, away: away, seq: seq)
        }
        guard let viewers else { throw HTTPError(.forbidden, message: Self.uninstalledMessage) }
        return HeartbeatResponse(
            viewers: ViewerItem.list(viewers, for: accountID),
            version: ViewerListVersion.of(viewers),
            pollSeconds: polls.pollSeconds,
            awayPollSeconds: polls.awayPollSeconds
        )
    }

    /// Held until the issue's viewers differ from the panel's `version`, or `WAIT_SECONDS`
    /// (below `invokeRemote`'s 25 s). Records nothing.
    @Sendable func wait(_ request: Request, context: AppRequestContext) async throws -> WaitResponse {
        let invocation = try await authenticate(request, context: context, caller: .issueView)
        let body = try await Self.object(request, context: context)
        let tabID = try Self.tabID(body)
        let version = try PresenceController.version(try Self.optionalString(body, "version"))
        let claimed = try Self.issue(invocation)
        guard let accountID = try Self.principal(invocation) else {
            return WaitResponse(viewers: nil, version: version, anonymous: true)
        }
        let issue = try await visibleIssue(claimed, to: accountID, invocation, request: request, context: context)
        let ref = IssueRef(tenant: invocation.installationID, issueID: issue.id)
        if let response = try await waits.response(issue: ref, version: version, accountID: accountID, tabID: tabID, context: context) {
            return response
        }
        // A wait can be a new installation's first call (its panel waits before its first
        // heartbeat lands): register it, unless it was uninstalled, and wait once more.
        try await register(invocation, context: context)
        guard let response = try await waits.response(issue: ref, version: version, accountID: accountID, tabID: tabID, context: context) else {
            throw HTTPError(.forbidden, message: Self.uninstalledMessage)
        }
        return response
    }

    /// A tab closed: it is gone at once. The person stays listed while another tab of theirs heartbeats.
    @Sendable func leave(_ request: Request, context: AppRequestContext) async throws -> Response {
        // Not asked of Jira: a leave removes only the caller's own tab, so an issue the browser
        // made up reveals and records nothing, and a closing tab has no time to wait.
        let invocation = try await authenticate(request, context: context, caller: .issueView)
        let body = try await Self.object(request, context: context)
        let tabID = try Self.tabID(body)
        let seq = try PresenceController.sequence(body["seq"])
        let issue = try Self.issue(invocation)
        if let accountID = try Self.principal(invocation) {
            let viewer = ViewerKey(tenant: invocation.installationID, issueID: issue.id, accountID: accountID, tabID: tabID)
            try await presence.leave(viewer, issueKey: issue.key, seq: seq)
        }
        return Self.ok
    }

    /// `avi:forge:installed:app` and `avi:forge:upgraded:app`, from the lifecycle trigger only.
    /// Identity comes from the token; the body (flat, or under `payload` as retries deliver it)
    /// must name one of those events. Answers within Forge's 5 s: one statement.
    @Sendable func lifecycle(_ request: Request, context: AppRequestContext) async throws -> Response {
        let invocation = try await authenticate(request, context: context, caller: .lifecycleTrigger)
        let event = try await Self.decode(LifecycleEvent.self, request, context: context)
        guard let eventType = event.eventType, LifecycleEvent.types.contains(eventType) else {
            throw HTTPError(.badRequest, message: "eventType must be avi:forge:installed:app or avi:forge:upgraded:app")
        }
        try await register(invocation, context: context)
        context.logger.info("Forge installation event", metadata: ["event": "\(eventType)", "installation": "\(invocation.installationID)"])
        return Self.ok
    }

    /// `preUninstall`, from that trigger only, for this installation's site: the installation is
    /// marked uninstalled and its personal data erased; later calls for it are refused.
    @Sendable func uninstall(_ request: Request, context: AppRequestContext) async throws -> Response {
        let invocation = try await authenticate(request, context: context, caller: .preUninstall)
        let event = try await Self.decode(PreUninstallEvent.self, request, context: context)
        guard event.context.moduleKey == ForgeCaller.preUninstallModuleKey, !event.contextToken.isEmpty else {
            throw HTTPError(.forbidden, message: "this call is only for the preUninstall trigger")
        }
        guard let cloudID = invocation.cloudID, event.context.cloudId == cloudID else {
            throw HTTPError(.forbidden, message: "the event names another site")
        }
        systemTokens.forget(installationID: invocation.installationID)
        try await tenants.uninstallForge(Self.installation(invocation))
        context.logger.info("Forge installation uninstalled", metadata: ["installation": "\(invocation.installationID)"])
        return Self.ok
    }

    /// The hourly scheduled trigger: it brings a fresh system token even to a site nobody
    /// visits, and asks for that site's personal data report (run by the reporter service,
    /// one instance at a time per site), so idle sites are reported too. Answers at once:
    /// Forge gives events 5 s.
    @Sendable func scheduled(_ request: Request, context: AppRequestContext) async throws -> Response {
        let invocation = try await authenticate(request, context: context, caller: .scheduledTrigger)
        _ = try await Self.object(request, context: context)
        guard try await tenants.installedTenant(clientKey: invocation.installationID) != nil else {
            throw HTTPError(.forbidden, message: Self.uninstalledMessage)
        }
        reporter.requestReport(tenant: invocation.installationID)
        return Self.ok
    }

    private func authenticate(_ request: Request, context: AppRequestContext, caller: ForgeCaller) async throws -> ForgeInvocation {
        let invocation: ForgeInvocation
        do {
            invocation = try await verifier.verify(authorization: request.headers[.authorization])
        } catch {
            context.logger.info("Forge token refused", metadata: ["reason": "\(error.reason)", "path": "\(request.uri.path)"])
            // Forge reserves 401 for invocation token failures; an unreachable key server is ours.
            throw HTTPError(error == .keyServerUnavailable ? .serviceUnavailable : .unauthorized, message: error.reason)
        }
        context.notes.tenant = invocation.installationID
        guard caller.admits(invocation) else {
            context.logger.info(
                "Forge call from the wrong module refused",
                metadata: ["module": "\(invocation.module)", "path": "\(request.uri.path)", "installation": "\(invocation.installationID)"])
            throw HTTPError(.forbidden, message: "this call is only for \(caller)")
        }
        // Forge sends each token once; two are a request that was tampered with on the way.
        for name in [Self.systemTokenHeader, Self.userTokenHeader] where request.headers[values: name].count > 1 {
            throw HTTPError(.badRequest, message: "\(name) given more than once")
        }
        systemTokens.remember(request.headers[Self.systemTokenHeader], installationID: invocation.installationID)
        return invocation
    }

    /// The issue the call names, once Jira says the person may see it (answers cached briefly).
    /// Its key is Jira's, not the browser's.
    private func visibleIssue(
        _ claimed: (id: String, key: String), to accountID: String, _ invocation: ForgeInvocation, request: Request, context: AppRequestContext
    ) async throws -> (id: String, key: String) {
        do {
            let key = try await issueAccess.issueKey(
                for: .init(installationID: invocation.installationID, accountID: accountID, issueID: claimed.id),
                apiBaseURL: invocation.apiBaseURL, userToken: request.headers[Self.userTokenHeader])
            return (claimed.id, key)
        } catch .denied(let reason) {
            throw HTTPError(.forbidden, message: reason)
        } catch .unavailable(let reason) {
            throw HTTPError(.serviceUnavailable, message: reason)
        }
    }

    private func register(_ invocation: ForgeInvocation, context: AppRequestContext) async throws {
        guard try await tenants.registerForge(Self.installation(invocation)) else {
            throw HTTPError(.forbidden, message: Self.uninstalledMessage)
        }
    }

    static func installation(_ invocation: ForgeInvocation) -> ForgeInstallation {
        ForgeInstallation(
            installationID: invocation.installationID, cloudID: invocation.cloudID, apiBaseURL: invocation.apiBaseURL
        )
    }

    static let uninstalledMessage = "app uninstalled"
    static let systemTokenHeader = HTTPField.Name("x-forge-oauth-system")!
    static let userTokenHeader = HTTPField.Name("x-forge-oauth-user")!
    static var ok: Response {
        Response(
            status: .ok, headers: [.contentType: "application/json; charset=utf-8", .cacheControl: "no-store"],
            body: .init(byteBuffer: ByteBuffer(string: #"{"ok":true}"#))
        )
    }

    static func issue(_ invocation: ForgeInvocation) throws -> (id: String, key: String) {
        guard let id = invocation.issueID, let key = invocation.issueKey else {
            throw HTTPError(.badRequest, message: "no issue in the invocation context")
        }
        // Jira's issue ids are numbers; nothing else reaches a key column or Jira's URL.
        guard (1...18).contains(id.utf8.count), id.utf8.allSatisfy({ (0x30...0x39).contains($0) }), Self.isPlainText(key) else {
            throw HTTPError(.badRequest, message: "malformed issue in the invocation context")
        }
        return (id, key)
    }

    /// Who is calling; nil when nobody is logged in. Signed by Forge, yet still refused when it
    /// could not be a key column's value (a control character), as a Connect `sub` would be.
    static func principal(_ invocation: ForgeInvocation) throws -> String? {
        guard let accountID = invocation.principal, accountID != unknownAccountID else { return nil }
        guard isPlainText(accountID) else { throw HTTPError(.badRequest, message: "malformed principal in the invocation token") }
        return accountID
    }

    /// The lifecycle trigger's body: flat, or under `payload` when a retry delivers it.
    struct LifecycleEvent: Decodable {
        struct Payload: Decodable { var eventType: String? }
        static let types: Set<String> = ["avi:forge:installed:app", "avi:forge:upgraded:app"]
        var eventType: String?
        var payload: Payload?
        init(from decoder: any Decoder) throws {
            let container = try decoder.container(keyedBy: CodingKeys.self)
            payload = try container.decodeIfPresent(Payload.self, forKey: .payload)
            eventType = try payload?.eventType ?? container.decodeIfPresent(String.self, forKey: .eventType)
        }
        enum CodingKeys: String, CodingKey { case eventType, payload }
    }

    /// The preUninstall body: `{context: {cloudId, moduleKey}, contextToken}`.
    struct PreUninstallEvent: Decodable {
        struct Context: Decodable {
            var cloudId: String
            var moduleKey: String
        }
        var context: Context
        var contextToken: String
    }

    /// The body as `Body`; 400 naming nothing secret when it is not one.
    static func decode<Body: Decodable>(_ type: Body.Type, _ request: Request, context: AppRequestContext) async throws -> Body {
        let body = try await request.body.collect(upTo: context.maxUploadSize)
        do {
            return try JSONDecoder().decode(Body.self, from: Data(buffer: body))
        } catch {
            throw HTTPError(.badRequest, message: "body is not the event Forge sends here")
        }
    }

    /// The body's JSON object (Forge sends every body as one).
    static func object(_ request: Request, context: AppRequestContext) async throws -> [String: Any] {
        let body = try await request.body.collect(upTo: context.maxUploadSize)
        guard body.readableBytes > 0 else { return [:] }
        guard let object = (try? JSONSerialization.jsonObject(with: Data(buffer: body))) as? [String: Any] else {
            throw HTTPError(.badRequest, message: "body is not a JSON object")
        }
        return object
    }

    /// A string member of the body, if present; anything else there is refused.
    static func optionalString(_ body: [String: Any], _ name: String) throws -> String? {
        guard let value = body[name], !(value is NSNull) else { return nil }
        guard let text = value as? String else { throw HTTPError(.badRequest, message: "\(name) must be a string") }
        return text
    }

    /// The tab the call speaks for: with the tab's state and the panel's version, the only
    /// things a body may choose.
    static func tabID(_ body: [String: Any]) throws -> String {
        guard let tabID = body["tabId"] as? String else {
            throw HTTPError(.badRequest, message: "tabId missing")
        }
        guard (1...64).contains(tabID.utf8.count),
            tabID.utf8.allSatisfy({
                $0 == UInt8(ascii: "-") || (0x30...0x39).contains($0) || (0x41...0x5A).contains($0) || (0x61...0x7A).contains($0)
            })
        else {
            throw HTTPError(.badRequest, message: "tabId must be 1 to 64 letters, digits or dashes")
        }
        return tabID
    }

    /// Printable, no control characters, at most 255 bytes: what a key column takes.
    static func isPlainText(_ value: String) -> Bool {
        !value.isEmpty && value.utf8.count <= 255 && !value.unicodeScalars.contains { $0.properties.generalCategory == .control }
    }
}
