import Tenants
import Connect
import Foundation
import Hummingbird
import Libpq
import Metrics
import Presence
import UserDirectory

/// The issue panel (iframe entry point) and the API its script calls: heartbeats, waits for
/// the next change (docs/live-presence.md), and leave.
struct PresenceController {
    let authentication: ConnectJWTMiddleware
    let presence: PresenceRepository
    let recorder: HeartbeatRecorder
    let tickets: ViewerTicketSigner
    /// Which install of each site is current: a ticket of an earlier one is refused.
    let generations: TenantGenerations
    let waits: PanelWaits
    let page: PanelPage
    let polls: PanelPolls

    func addRoutes(to router: Router<AppRequestContext>) {
        router.group(RouterPath(AppDescriptor.Route.panel))
            .add(middleware: authentication)
            .get(use: panel)
        router.post("api/issues/:issueId/heartbeat", use: heartbeat)
        router.post("api/issues/:issueId/wait", use: wait)
        router.post("api/issues/:issueId/leave", use: leave)
    }

    /// Verifies Jira's JWT, records the user at once and answers the current viewers.
    @Sendable func panel(_ request: Request, context: AppRequestContext) async throws -> Response {
        guard let identity = context.identity else { throw HTTPError(.unauthorized) }
        // Jira signs each panel URL for about three minutes; one kept longer is a link being
        // replayed, not a page Jira is showing.
        let now = Date().timeIntervalSince1970
        let issuedAt = identity.claims.iat ?? identity.claims.exp.map { $0 - Self.maxPanelTokenAge } ?? 0
        guard now - issuedAt <= Self.maxPanelTokenAge else { throw HTTPError(.unauthorized, message: "panel link too old: reload the page") }
        guard let accountID = identity.accountID, accountID != unknownAccountID else { return html(page.loginPrompt()) }
        let issueID = try Self.parameter(request.uri.queryParameters.get("issueId"), name: "issueId")
        let issueKey = try Self.parameter(request.uri.queryParameters.get("issueKey"), name: "issueKey")
        let (ticket, signed) = tickets.issue(
            tenant: identity.tenant.clientKey, issueID: issueID, issueKey: issueKey,
            accountID: accountID, tabID: tickets.tabID(forPanelToken: identity.token), generation: identity.tenant.generation
        )
        let viewers = try await record(ticket)
        return html(page.viewers(viewers, currentUser: accountID, issueID: issueID, issueKey: issueKey, ticket: signed))
    }

    /// The oldest panel JWT (by `iat`) the panel takes: Jira's live about three minutes.
    static let maxPanelTokenAge: TimeInterval = 600

    @Sendable func heartbeat(_ request: Request, context: AppRequestContext) async throws -> HeartbeatResponse {
        let ticket = try await verifiedTicket(
            request.headers[.authorization].flatMap(Self.ticketFromAuthorization), request: request, context: context)
        let away = try Self.isAway(request.uri.queryParameters.get("state"))
        let seq = try Self.sequence(request.uri.queryParameters.get("seq"))
        let viewers = try await record(ticket, away: away, seq: seq)
        return HeartbeatResponse(
            viewers: ViewerItem.list(viewers, for: ticket.accountID),
            version: ViewerListVersion.of(viewers),
            ticket: tickets.refresh(ticket),
            pollSeconds: polls.pollSeconds,
            awayPollSeconds: polls.awayPollSeconds
        )
    }

    /// Held until the issue's viewers differ from the panel's `version`, or `WAIT_SECONDS`.
    /// Records nothing and renews no ticket.
    @Sendable func wait(_ request: Request, context: AppRequestContext) async throws -> WaitResponse {
        let ticket = try await verifiedTicket(
            request.headers[.authorization].flatMap(Self.ticketFromAuthorization), request: request, context: context)
        let version = try Self.version(request.uri.queryParameters.get("version"))
        let issue = IssueRef(tenant: ticket.tenant, issueID: ticket.issueID)
        guard
            let response = try await waits.response(
                issue: issue, version: version, accountID: ticket.accountID, tabID: ticket.tabID, context: context)
        else {
            throw HTTPError(.unauthorized, message: "site not installed")
        }
        return response
    }

    /// A tab left (`navigator.sendBeacon` sends the ticket as the body; `fetch` may use the header).
    @Sendable func leave(_ request: Request, context: AppRequestContext) async throws -> Response {
        var text = request.headers[.authorization].flatMap(Self.ticketFromAuthorization)
        if text == nil {
            let body = try await request.body.collect(upTo: 4096)
            text = String(buffer: body).trimmingCharacters(in: .whitespacesAndNewlines)
        }
        let ticket = try await verifiedTicket(text, request: request, context: context)
        try await presence.leave(ticket.viewer, issueKey: ticket.issueKey, seq: try Self.sequence(request.uri.queryParameters.get("seq")))
        return Response(status: .noContent)
    }

    private func record(_ ticket: ViewerTicket, away: Bool = false, seq: Int = 0) async throws -> [Viewer] {
        guard let viewers = try await recorder.record(ticket.viewer, issueKey: ticket.issueKey, away: away, seq: seq) else {
            throw HTTPError(.unauthorized, message: "site not installed")
        }
        return viewers
    }

    private func verifiedTicket(_ text: String?, request: Request, context: AppRequestContext) async throws -> ViewerTicket {
        guard let text, !text.isEmpty else { throw HTTPError(.unauthorized, message: "missing ticket") }
        let ticket: ViewerTicket
        do {
            ticket = try tickets.verify(text)
        } catch {
            context.logger.info("ticket refused", metadata: ["reason": "\(error)"])
            throw HTTPError(.unauthorized, message: error.description)
        }
        context.notes.tenant = ticket.tenant
        // A ticket speaks for one issue: it cannot record or list another.
        guard context.parameters.get("issueId") == ticket.issueID else {
            throw HTTPError(.forbidden, message: "ticket is for another issue")
        }
        // Signed by us, so it outlives the site's secret: it speaks only for the install it was issued in.
        guard try await generations.isCurrent(ticket.generation, clientKey: ticket.tenant) else {
            context.logger.info("ticket refused", metadata: ["reason": "issued for an earlier install of the site"])
            throw HTTPError(.unauthorized, message: "site not installed")
        }
        return ticket
    }

    static func ticketFromAuthorization(_ value: String) -> String? {
        let parts = value.split(separator: " ", maxSplits: 1)
        guard parts.count == 2, parts[0] == "Ticket" else { return nil }
        return String(parts[1])
    }

    /// A heartbeat's `state`: absent or `active` for a visible tab, `away` for a hidden one.
    static func isAway(_ state: String?) throws -> Bool {
        switch state {
        case nil, "active"?: false
        case "away"?: true
        default: throw HTTPError(.badRequest, message: "state must be active or away")
        }
    }

    /// A tab's count of its heartbeats and leave (`seq`): absent for 0 (not counted), else a
    /// whole number from 1 to 2^53 - 1 (what JavaScript counts exactly).
    static func sequence(_ text: String?) throws -> Int {
        guard let text else { return 0 }
        guard let value = Int(text), (1...maxSequence).contains(value) else {
            throw HTTPError(.badRequest, message: "seq must be a whole number from 1")
        }
        return value
    }

    static func sequence(_ value: Any?) throws -> Int {
        guard let value, !(value is NSNull) else { return 0 }
        // JSONSerialization hands numbers and booleans over as NSNumber, and 1 even casts to
        // Bool: a boolean is told apart by its type code ("c").
        guard let number = value as? NSNumber, String(cString: number.objCType) != "c",
            let integer = Int(exactly: number.doubleValue), (1...maxSequence).contains(integer)
        else { throw HTTPError(.badRequest, message: "seq must be a whole number from 1") }
        return integer
    }

    static let maxSequence = (1 << 53) - 1

    /// A wait's `version`: what the panel shows now (empty when it has nothing yet).
    static func version(_ value: String?) throws -> String {
        let version = value ?? ""
        guard ViewerListVersion.isWellFormed(version) else {
            throw HTTPError(.badRequest, message: "version must be at most 64 letters, digits, dashes or underscores")
        }
        return version
    }

    static func parameter(_ value: String?, name: String) throws -> String {
        guard let value, !value.isEmpty else { throw HTTPError(.badRequest, message: "missing \(name)") }
        guard value.count <= 255 else { throw HTTPError(.badRequest, message: "\(name) too long") }
        return value
    }

    private func html(_ text: String) -> Response {
        Response(
            status: .ok,
            headers: [.contentType: "text/html; charset=utf-8", .cacheControl: "no-store"],
            body: .init(byteBuffer: ByteBuffer(string: text))
        )
    }
}

extension ViewerEraser: TenantDataEraser {
    public func eraseTenant(clientKey: String, on connection: PooledConnection) async throws {
        try await erase(clientKey: clientKey, on: connection)
    }
}

extension UserDetailsEraser: TenantDataEraser {
    public func eraseTenant(clientKey: String, on connection: PooledConnection) async throws {
        try await erase(clientKey: clientKey, on: connection)
    }
}
