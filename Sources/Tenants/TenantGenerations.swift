import Foundation
import Synchronization

/// Which install of each Connect site is current (`Tenant.generation`), for checking viewer
/// tickets: a ticket is verified without a database read, so one issued before an uninstall
/// and reinstall (a new shared secret) would otherwise go on recording and listing. Each
/// site's generation is read at most once per `freshFor` per instance, so a heartbeat costs a
/// dictionary lookup; a ticket of an earlier install stops working within that time. Bounded:
/// emptied when full.
public final class TenantGenerations: Sendable {
    private struct Entry {
        var generation: Int64?
        var read: ContinuousClock.Instant
    }

    private let tenants: TenantRepository
    private let freshFor: Duration
    private let capacity: Int
    private let entries = Mutex<[String: Entry]>([:])

    public init(tenants: TenantRepository, freshFor: Duration = .seconds(5), capacity: Int = 100_000) {
        self.tenants = tenants
        self.freshFor = freshFor
        self.capacity = capacity
    }

    /// The current generation of an installed Connect site; nil when it is not installed.
    /// `atLeast`: a generation a ticket we signed names, so it exists: a cached answer older
    /// than it is read again at once (a reinstall's first tickets work at once everywhere).
    public func current(clientKey: String, atLeast newest: Int64 = 0) async throws -> Int64? {
        let now = ContinuousClock.now
        if let entry = entries.withLock({ $0[clientKey] }), now - entry.read < freshFor, (entry.generation ?? 0) >= newest {
            return entry.generation
        }
        let tenant = try await tenants.tenant(clientKey: clientKey)
        let generation = tenant.flatMap { $0.kind == .connect && $0.state == .installed ? $0.generation : nil }
        entries.withLock { entries in
            if entries.count >= capacity { entries.removeAll(keepingCapacity: true) }
            entries[clientKey] = Entry(generation: generation, read: now)
        }
        return generation
    }

    /// Whether a ticket issued in `generation` still speaks for the site.
    public func isCurrent(_ generation: Int64, clientKey: String) async throws -> Bool {
        try await current(clientKey: clientKey, atLeast: generation) == generation
    }
}
