import Forge
import Foundation
import HTTPTypes
import Hummingbird
import Presence
import Tenants
import UserDirectory

/// The Forge app's remote (`/forge/*`): the calls Forge proxies from our Custom UI and its
/// lifecycle events. Every call carries a Forge Invocation Token, and the token alone says who
/// is looking (`principal`), at which issue (`context.extension.issue`) and on which
/// installation (`app.installationId`); the body only names the browser tab.
struct ForgeController {
    let verifier: ForgeTokenVerifier
    let tenants: TenantRepository
    let presence: PresenceRepository
    let recorder: HeartbeatRecorder
    let waits: PanelWaits
    let systemTokens: ForgeSystemTokens
    let polls: PanelPolls

    func addRoutes(to router: Router<AppRequestContext>) {
        let forge = router.group("forge").add(middleware: ForgeErrorMiddleware())
        forge.post("heartbeat", use: heartbeat)
        forge.post("wait", use: wait)
        forge.post("leave", use: leave)
        forge.post("lifecycle", use: lifecycle)
        forge.post("uninstall", use: uninstall)
    }

    @Sendable func heartbeat(_ request: Request, context: AppRequestContext) async throws -> HeartbeatResponse {
        let invocation = try await authenticate(request, context: context)
        let body = try await Self.object(request, context: context)
        let tabID = try Self.tabID(body)
        let away = try PresenceController.isAway(try Self.optionalString(body, "state"))
        let seq = try PresenceController.sequence(body["seq"])
        let issue = try Self.issue(invocation)
        guard let accountID = try Self.principal(invocation) else {
            return HeartbeatResponse(viewers: [], pollSeconds: polls.pollSeconds, awayPollSeconds: polls.awayPollSeconds, anonymous: true)
        }
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
        let invocation = try await authenticate(request, context: context)
        let body = try await Self.object(request, context: context)
        _ = try Self.tabID(body)
        let version = try PresenceController.version(try Self.optionalString(body, "version"))
        let issue = try Self.issue(invocation)
        guard let accountID = try Self.principal(invocation) else {
            return WaitResponse(viewers: nil, version: version, anonymous: true)
        }
        let ref = IssueRef(tenant: invocation.installationID, issueID: issue.id)
        guard let response = try await waits.response(issue: ref, version: version, accountID: accountID, context: context) else {
            throw HTTPError(.forbidden, message: Self.uninstalledMessage)
        }
        return response
    }

    /// A tab closed: it is gone at once. The person stays listed while another tab of theirs heartbeats.
    @Sendable func leave(_ request: Request, context: AppRequestContext) async throws -> Response {
        let invocation = try await authenticate(request, context: context)
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

    /// `avi:forge:installed:app` and `avi:forge:upgraded:app`. Identity comes from the token;
    /// the body (flat, or under `payload` as retries deliver it) only names the event, for logs.
    /// Answers within Forge's 5 s: one statement.
    @Sendable func lifecycle(_ request: Request, context: AppRequestContext) async throws -> Response {
        let invocation = try await authenticate(request, context: context)
        let event = try await Self.object(request, context: context)
        let payload = event["payload"] as? [String: Any] ?? event
        let eventType = (payload["eventType"] as? String ?? event["eventType"] as? String).map(Self.loggable) ?? "unknown"
        try await register(invocation, context: context)
        context.logger.info("Forge installation event", metadata: ["event": "\(eventType)", "installation": "\(invocation.installationID)"])
        return Self.ok
    }

    /// `preUninstall`: the installation is marked uninstalled and its personal data erased;
    /// later calls for it are refused.
    @Sendable func uninstall(_ request: Request, context: AppRequestContext) async throws -> Response {
        let invocation = try await authenticate(request, context: context)
        _ = try await Self.object(request, context: context)
        systemTokens.forget(installationID: invocation.installationID)
        try await tenants.uninstallForge(Self.installation(invocation))
        context.logger.info("Forge installation uninstalled", metadata: ["installation": "\(invocation.installationID)"])
        return Self.ok
    }

    private func authenticate(_ request: Request, context: AppRequestContext) async throws -> ForgeInvocation {
        let invocation: ForgeInvocation
        do {
            invocation = try await verifier.verify(authorization: request.headers[.authorization])
        } catch {
            context.logger.info("Forge token refused", metadata: ["reason": "\(error.reason)", "path": "\(request.uri.path)"])
            // Forge reserves 401 for invocation token failures; an unreachable key server is ours.
            throw HTTPError(error == .keyServerUnavailable ? .serviceUnavailable : .unauthorized, message: error.reason)
        }
        context.notes.tenant = invocation.installationID
        systemTokens.remember(request.headers[Self.systemTokenHeader], installationID: invocation.installationID)
        return invocation
    }

    private func register(_ invocation: ForgeInvocation, context: AppRequestContext) async throws {
        guard try await tenants.registerForge(Self.installation(invocation)) else {
            throw HTTPError(.forbidden, message: Self.uninstalledMessage)
        }
    }

    static func installation(_ invocation: ForgeInvocation) -> ForgeInstallation {
        ForgeInstallation(
            installationID: invocation.installationID, cloudID: invocation.cloudID,
            apiBaseURL: invocation.apiBaseURL, siteURL: invocation.siteURL
        )
    }

    static let uninstalledMessage = "app uninstalled"
    static let systemTokenHeader = HTTPField.Name("x-forge-oauth-system")!
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
        guard Self.isPlainText(id), Self.isPlainText(key) else { throw HTTPError(.badRequest, message: "malformed issue in the invocation context") }
        return (id, key)
    }

    /// Who is calling; nil when nobody is logged in. Signed by Forge, yet still refused when it
    /// could not be a key column's value (a control character), as a Connect `sub` would be.
    static func principal(_ invocation: ForgeInvocation) throws -> String? {
        guard let accountID = invocation.principal, accountID != unknownAccountID else { return nil }
        guard isPlainText(accountID) else { throw HTTPError(.badRequest, message: "malformed principal in the invocation token") }
        return accountID
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

    static func loggable(_ value: String) -> String {
        String(String.UnicodeScalarView(value.unicodeScalars.prefix(64).filter { $0.properties.generalCategory != .control }))
    }
}
