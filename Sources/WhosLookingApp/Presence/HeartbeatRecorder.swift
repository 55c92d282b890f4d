import Metrics
import Presence
import UserDirectory

/// What every heartbeat does, from either front door: record the tab, answer the issue's
/// people (the current user first), and ask for the names and avatars the cache lacks in the
/// background, so the answer never waits for Jira.
struct HeartbeatRecorder: Sendable {
    let presence: PresenceRepository
    let enricher: UserEnricher

    /// The people to list; nil, recording nothing, when the tenant is not installed.
    func record(_ viewer: ViewerKey, issueKey: String, away: Bool = false, seq: Int = 0) async throws -> [Viewer]? {
        guard let viewers = try await presence.heartbeat(viewer, issueKey: issueKey, away: away, seq: seq) else { return nil }
        Self.heartbeats.increment()
        let unknown = viewers.filter(\.needsDetails).map(\.accountID)
        Self.cacheMisses.increment(by: unknown.count)
        Self.cacheHits.increment(by: viewers.count - unknown.count)
        if !unknown.isEmpty { enricher.request(tenant: viewer.tenant, accountIDs: unknown) }
        return viewers.shown(to: viewer.accountID)
    }

    static let heartbeats = Counter(label: "heartbeats_total")
    static let cacheHits = Counter(label: "user_cache_hits_total")
    static let cacheMisses = Counter(label: "user_cache_misses_total")
}
