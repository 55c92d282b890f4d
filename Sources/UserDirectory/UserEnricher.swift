import Connect
import Foundation
import Logging
import NIOCore
import NIOFoundationCompat
import NIOHTTP1

/// Fetches names and avatars of viewers the cache does not know yet, in the background.
///
/// Heartbeats only call `request`, which never waits for Jira. Per tenant, one worker takes
/// up to 50 pending accounts at a time to `/rest/api/3/user/bulk` (falling back to
/// `/rest/api/3/user` one by one when bulk is refused). An account pending or in flight is not
/// queued again, so any number of concurrent heartbeats cause one fetch. A 429 pauses that
/// tenant until `Retry-After`; 5xx and timeouts back off exponentially with jitter. Tenants
/// have separate workers: one slow or failing site never delays another.
public actor UserEnricher {
    /// How a tenant's Jira can be called now.
    public enum SiteAccess: Sendable {
        case available(SiteCredentials)
        /// Installed, but not callable now: a Forge installation whose last system token has
        /// expired waits for the next heartbeat that brings one.
        case waiting
        case uninstalled
    }

    public typealias Credentials = @Sendable (_ tenant: String) async throws -> SiteAccess

    public struct Settings: Sendable {
        public var batchSize = 50
        /// Wait this long before taking a batch, so concurrent requests share one call.
        public var gatherDelay: Duration = .milliseconds(20)
        public var backoffBase: Duration = .seconds(1)
        public var backoffMax: Duration = .seconds(300)
        public var defaultRetryAfter: Duration = .seconds(60)
        public var maxPendingPerTenant = 5000
        public init() {}
    }

    struct TenantState {
        var pending: [String] = []
        var queued: Set<String> = []  // pending or in flight
        var worker: Task<Void, Never>?
        var notBefore: ContinuousClock.Instant?
        var consecutiveFailures = 0
    }

    enum Outcome: Sendable {
        case done
        case rateLimited(retryAfter: Duration, retry: [String])
        case failed(retry: [String], reason: String)
    }

    private let client: JiraClient
    private let repository: UserDetailsRepository
    private let credentials: Credentials
    private let settings: Settings
    private let logger: Logger
    private var tenants: [String: TenantState] = [:]

    public init(client: JiraClient, repository: UserDetailsRepository, credentials: @escaping Credentials, settings: Settings = Settings(), logger: Logger) {
        self.client = client
        self.repository = repository
        self.credentials = credentials
        self.settings = settings
        self.logger = logger
    }

    /// Asks for these accounts' details to be fetched; returns at once.
    public nonisolated func request(tenant: String, accountIDs: [String]) {
        let wanted = accountIDs.filter { !$0.isEmpty && $0 != unknownAccountID }
        guard !wanted.isEmpty else { return }
        Task { await self.enqueue(tenant: tenant, accountIDs: wanted) }
    }

    /// Nothing pending or in flight for any tenant (for tests and shutdown).
    public var isIdle: Bool { tenants.values.allSatisfy { $0.queued.isEmpty } }

    func enqueue(tenant: String, accountIDs: [String]) {
        var state = tenants[tenant, default: TenantState()]
        for accountID in accountIDs where !state.queued.contains(accountID) && state.pending.count < settings.maxPendingPerTenant {
            state.queued.insert(accountID)
            state.pending.append(accountID)
        }
        if state.worker == nil, !state.pending.isEmpty {
            state.worker = Task { await self.work(tenant: tenant) }
        }
        tenants[tenant] = state
    }

    private func work(tenant: String) async {
        while true {
            if let notBefore = tenants[tenant]?.notBefore, notBefore > .now {
                try? await Task.sleep(until: notBefore)
                continue
            }
            try? await Task.sleep(for: settings.gatherDelay)
            let batch = takeBatch(tenant: tenant)
            guard !batch.isEmpty else {
                tenants[tenant]?.worker = nil
                if tenants[tenant]?.queued.isEmpty == true, tenants[tenant]?.notBefore == nil { tenants[tenant] = nil }
                return
            }
            let outcome = await fetch(tenant: tenant, accountIDs: batch)
            settle(tenant: tenant, batch: batch, outcome: outcome)
        }
    }

    private func takeBatch(tenant: String) -> [String] {
        guard var state = tenants[tenant] else { return [] }
        let batch = Array(state.pending.prefix(settings.batchSize))
        state.pending.removeFirst(batch.count)
        tenants[tenant] = state
        return batch
    }

    private func settle(tenant: String, batch: [String], outcome: Outcome) {
        guard var state = tenants[tenant] else { return }
        switch outcome {
        case .done:
            state.consecutiveFailures = 0
            state.notBefore = nil
            state.queued.subtract(batch)
        case .rateLimited(let retryAfter, let retry):
            state.notBefore = .now + retryAfter
            state.queued.subtract(Set(batch).subtracting(retry))
            state.pending.insert(contentsOf: retry, at: 0)
            logger.warning("Jira rate-limited user lookups; pausing this site", metadata: ["tenant": "\(tenant)", "retryAfter": "\(retryAfter)"])
        case .failed(let retry, let reason):
            state.consecutiveFailures += 1
            let exponent = min(state.consecutiveFailures - 1, 20)
            let ceiling = min(settings.backoffBase * (1 << exponent), settings.backoffMax)
            // Full jitter over the upper half, so failing sites do not retry in step.
            let delay = ceiling * Double.random(in: 0.5...1.0)
            state.notBefore = .now + delay
            state.queued.subtract(Set(batch).subtracting(retry))
            state.pending.insert(contentsOf: retry, at: 0)
            logger.warning("user lookup failed; backing off", metadata: ["tenant": "\(tenant)", "reason": "\(reason)", "delay": "\(delay)"])
        }
        tenants[tenant] = state
    }

    /// One batch against Jira, then the cache. Runs off the actor.
    nonisolated func fetch(tenant: String, accountIDs: [String]) async -> Outcome {
        do {
            // Uninstalled meanwhile, or no token yet: the next heartbeat asks again.
            guard case .available(let site) = try await credentials(tenant) else { return .done }
            let fresh = try await repository.freshAccounts(tenant: tenant, accountIDs: accountIDs)
            let wanted = accountIDs.filter { !fresh.contains($0) }
            guard !wanted.isEmpty else { return .done }

            var query = wanted.map { URLQueryItem(name: "accountId", value: $0) }
            query.append(URLQueryItem(name: "maxResults", value: String(settings.batchSize)))
            let bulk = try await client.get(site, path: "/rest/api/3/user/bulk", query: query)
            switch bulk.status {
            case 200:
                let users = try JSONDecoder().decode(JiraUser.Page.self, from: Data(buffer: bulk.body)).values
                let returned = Set(users.map(\.accountId))
                try await repository.store(tenant: tenant, users: users.filter { wanted.contains($0.accountId) })
                try await repository.storeMissing(tenant: tenant, accountIDs: wanted.filter { !returned.contains($0) })
                return .done
            case 429:
                return .rateLimited(retryAfter: retryAfter(bulk.headers), retry: wanted)
            case 500...:
                return .failed(retry: wanted, reason: "bulk answered \(bulk.status)")
            default:
                return try await fetchOneByOne(tenant: tenant, site: site, accountIDs: wanted, bulkStatus: bulk.status)
            }
        } catch let error as DecodingError {
            return .failed(retry: [], reason: "unreadable answer from Jira: \(error)")
        } catch {
            return .failed(retry: accountIDs, reason: "\(error)")
        }
    }

    private nonisolated func fetchOneByOne(tenant: String, site: SiteCredentials, accountIDs: [String], bulkStatus: Int) async throws -> Outcome {
        logger.info("bulk user lookup refused; asking one by one", metadata: ["tenant": "\(tenant)", "status": "\(bulkStatus)"])
        var found: [JiraUser] = []
        var missing: [String] = []
        for (index, accountID) in accountIDs.enumerated() {
            let response = try await client.get(site, path: "/rest/api/3/user", query: [URLQueryItem(name: "accountId", value: accountID)])
            switch response.status {
            case 200:
                found.append(try JSONDecoder().decode(JiraUser.self, from: Data(buffer: response.body)))
            case 429:
                try await save(tenant: tenant, found: found, missing: missing)
                return .rateLimited(retryAfter: retryAfter(response.headers), retry: Array(accountIDs[index...]))
            case 500...:
                try await save(tenant: tenant, found: found, missing: missing)
                return .failed(retry: Array(accountIDs[index...]), reason: "user answered \(response.status)")
            default:
                missing.append(accountID)  // 404 and refusals: remembered, not asked at every heartbeat
            }
        }
        try await save(tenant: tenant, found: found, missing: missing)
        return .done
    }

    private nonisolated func save(tenant: String, found: [JiraUser], missing: [String]) async throws {
        try await repository.store(tenant: tenant, users: found)
        try await repository.storeMissing(tenant: tenant, accountIDs: missing)
    }

    nonisolated func retryAfter(_ headers: HTTPHeaders) -> Duration {
        guard let value = headers.first(name: "Retry-After"), let seconds = Double(value.trimmingCharacters(in: .whitespaces)), seconds >= 0 else {
            return settings.defaultRetryAfter
        }
        return .milliseconds(Int64(min(seconds, 3600) * 1000))
    }
}
