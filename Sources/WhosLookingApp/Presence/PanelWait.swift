import Presence
import ServiceLifecycle

extension WaitRoom {
    /// A panel's wait, from either front door: held until the issue's viewers differ from
    /// `version` or the hold time passes; nil when the tenant is no longer installed (each door
    /// answers that in its own way).
    ///
    /// Shutdown answers every held wait at once (503) instead of holding the server's drain. A
    /// handler, not `cancelWhenGracefulShutdown`: that runs two child tasks per wait, and held
    /// waits are many (scripts/bench: tens of KB each).
    func response(issue: IssueRef, version: String, accountID: String) async throws -> WaitResponse? {
        let outcome = try await withGracefulShutdownHandler {
            try await self.wait(for: issue, version: version)
        } onGracefulShutdown: {
            self.close()
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
