import Presence
import ServiceLifecycle

/// Panels' waits, from either front door, held in the wait room and ended early when their
/// connection closes.
struct PanelWaits: Sendable {
    let room: WaitRoom
    let connections: OpenConnections

    /// Held until the issue's viewers differ from `version` or the hold time passes; nil when the
    /// tenant is no longer installed (each door answers that in its own way).
    ///
    /// A client that goes away (a closed tab) ends its wait at once: Hummingbird does not cancel
    /// a handler whose connection closed, so the wait would otherwise stay held, in memory and
    /// in `panels_waiting`, until its hold time.
    ///
    /// Shutdown answers every held wait at once (503) instead of holding the server's drain. A
    /// handler, not `cancelWhenGracefulShutdown`: that runs two child tasks per wait, and held
    /// waits are many (scripts/bench: tens of KB each).
    func response(issue: IssueRef, version: String, accountID: String, tabID: String, context: AppRequestContext) async throws -> WaitResponse? {
        let connection = connections.watch(context.connectionID)
        defer { connection?.forget() }
        let outcome = try await withGracefulShutdownHandler {
            try await room.wait(
                for: issue, version: version, caller: .init(tenant: issue.tenant, accountID: accountID, tabID: tabID)
            ) { abandon in connection?.whenClientLeaves(abandon) }
        } onGracefulShutdown: {
            room.close()
        }
        switch outcome {
        case .changed(let viewers, let newVersion):
            return WaitResponse(viewers: ViewerItem.list(viewers.shown(to: accountID), for: accountID), version: newVersion)
        case .unchanged:
            return WaitResponse(viewers: nil, version: version)
        case .uninstalled:
            return nil
        }
    }
}
