import Tenants
import Connect
import Foundation
import Hummingbird
import Libpq
import Metrics
import Presence
import UserDirectory

/// The issue panel (iframe entry point) and the heartbeat API its script calls.
struct PresenceController {
    let authentication: ConnectJWTMiddleware
    let presence: PresenceRepository
    let recorder: HeartbeatRecorder
    let tickets: ViewerTicketSigner
    let page: PanelPage
    let pollIntervalSeconds: Int

    func addRoutes(to router: Router<AppRequestContext>) {
        router.group(RouterPath(AppDescriptor.Route.panel))
            .add(middleware: authentication)
            .get(use: panel)
        router.post("api/issues/:issueId/heartbeat", use: heartbeat)
        router.post("api/issues/:issueId/leave", use: leave)
    }

    /// Verifies Jira's JWT, records the user at once and answers the current viewers.
    @Sendable func panel(_ request: Request, context: AppRequestContext) async throws -> Response {
        guard let identity = context.identity else { throw HTTPError(.unauthorized) }
        guard let accountID = identity.accountID, accountID != unknownAccountID else { return html(page.loginPrompt()) }
        let issueID = try Self.parameter(request.uri.queryParameters.get("issueId"), name: "issueId")
        let issueKey = try Self.parameter(request.uri.queryParameters.get("issueKey"), name: "issueKey")
        let (ticket, signed) = tickets.issue(
            tenant: identity.tenant.clientKey, issueID: issueID, issueKey: issueKey,
            accountID: accountID, tabID: UUID().uuidString.lowercased()
        )
        let viewers = try await record(ticket)
        return html(page.viewers(viewers, currentUser: accountID, issueID: issueID, issueKey: issueKey, ticket: signed))
    }

    @Sendable func heartbeat(_ request: Request, context: AppRequestContext) async throws -> HeartbeatResponse {
        let ticket = try verifiedTicket(request.headers[.authorization].flatMap(Self.ticketFromAuthorization), request: request, context: context)
        let viewers = try await record(ticket)
        return HeartbeatResponse(
            viewers: viewers.map { ViewerItem(viewer: $0, isCurrentUser: $0.accountID == ticket.accountID) },
            ticket: tickets.refresh(ticket),
            pollSeconds: pollIntervalSeconds
        )
    }

    /// A tab left (`navigator.sendBeacon` sends the ticket as the body; `fetch` may use the header).
    @Sendable func leave(_ request: Request, context: AppRequestContext) async throws -> Response {
        var text = request.headers[.authorization].flatMap(Self.ticketFromAuthorization)
        if text == nil {
            let body = try await request.body.collect(upTo: 4096)
            text = String(buffer: body).trimmingCharacters(in: .whitespacesAndNewlines)
        }
        let ticket = try verifiedTicket(text, request: request, context: context)
        try await presence.leave(ticket.viewer)
        return Response(status: .noContent)
    }

    private func record(_ ticket: ViewerTicket) async throws -> [Viewer] {
        guard let viewers = try await recorder.record(ticket.viewer, issueKey: ticket.issueKey) else {
            throw HTTPError(.unauthorized, message: "site not installed")
        }
        return viewers
    }

    private func verifiedTicket(_ text: String?, request: Request, context: AppRequestContext) throws -> ViewerTicket {
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
        return ticket
    }

    static func ticketFromAuthorization(_ value: String) -> String? {
        let parts = value.split(separator: " ", maxSplits: 1)
        guard parts.count == 2, parts[0] == "Ticket" else { return nil }
        return String(parts[1])
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
