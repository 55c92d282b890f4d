import Clocks
import Connect
import Foundation
import Logging
import NIOCore
import NIOFoundationCompat
import NIOHTTP1
import ServiceLifecycle
import Synchronization

/// Fetches names and avatars of viewers the cache does not know yet, in the background.
///
/// Heartbeats only call `request`, which never waits for Jira: it puts the request in a
/// bounded buffer (beyond `maxBufferedRequests` a request is dropped; the next heartbeat asks
/// again) and returns. The enricher is a service-lifecycle `Service`: its `run()` reads the
/// buffer and owns every worker as a child task, so no lookup outlives it. Graceful shutdown
/// or cancellation ends `run()` after cancelling the workers (a lookup in flight is cancelled,
/// and writes nothing after `run()` returns); requests made before `run()` starts wait in the
/// buffer, requests made after it ended are ignored.
///
/// Per tenant, one worker takes up to 50 pending accounts at a time to
/// `/rest/api/3/user/bulk` (falling back to `/rest/api/3/user` one by one when bulk is
/// refused). An account pending or in flight is not queued again, so any number of concurrent
/// heartbeats cause one fetch. A 429 pauses that tenant until `Retry-After`; 5xx and timeouts
/// back off exponentially with jitter. Tenants have separate workers: one slow or failing site
/// never delays another.
///
/// Only a 404, or a complete answer without the account, means an account is missing (and not
/// asked for again for the repository's `missingTTL`). A 401 or 403 is Jira refusing the app's
/// credentials, which says nothing about the accounts: they stay pending, the site backs off (at
/// most `refusedBackoffMax`), and `credentialsRefused` is told which credentials were refused.
///
/// Every wait (the gather delay, a 429's pause, backoff) runs on the injected clock
/// (`ContinuousClock` unless told otherwise), so tests can step through them with a `TestClock`.
public actor UserEnricher: Service {
    /// How a tenant's Jira can be called now.
    public enum SiteAccess: Sendable {
        case available(SiteCredentials)
        /// Installed, but not callable now: a Forge installation whose last system token has
        /// expired waits for the next heartbeat that brings one.
        case waiting
        case uninstalled
    }

    public typealias Credentials = @Sendable (_ tenant: String) async throws -> SiteAccess
    /// Told when Jira refused a site's credentials (401 or 403) with the credentials it refused,
    /// so that the app forgets a Forge system token Jira no longer takes.
    public typealias CredentialsRefused = @Sendable (_ tenant: String, _ refused: SiteCredentials) -> Void

    public struct Settings: Sendable {
        public var batchSize = 50
        /// Wait this long before taking a batch, so concurrent requests share one call.
        public var gatherDelay: Duration = .milliseconds(20)
        public var backoffBase: Duration = .seconds(1)
        public var backoffMax: Duration = .seconds(300)
        /// The longest backoff after Jira refused the app's credentials (401, 403). Shorter than
        /// `backoffMax`: a refusal is mostly passing (a token about to be replaced, Jira's own
        /// hiccup), and names must come back within a minute of Jira answering again.
        public var refusedBackoffMax: Duration = .seconds(30)
        public var defaultRetryAfter: Duration = .seconds(60)
        public var maxPendingPerTenant = 5000
        /// Requests waiting for `run()` to take them; more are dropped, never waited for.
        public var maxBufferedRequests = 10_000
        /// Most `/user/bulk` pages read for one batch (Jira may answer fewer users a page than asked).
        public var maxPagesPerBatch = 50
        /// Draws backoff's jitter factor from the range it is given (0.5...1.0); tests answer a
        /// bound of that range so that backoff can be asserted exactly.
        public var jitter: @Sendable (ClosedRange<Double>) -> Double = { Double.random(in: $0) }
        public init() {}
    }

    struct TenantState {
        var pending: [String] = []
        var queued: Set<String> = []  // pending or in flight
        var hasWorker = false
        var notBefore: AnyClock<Duration>.Instant?
        var consecutiveFailures = 0
    }

    enum Outcome: Sendable {
        case done
        case rateLimited(retryAfter: Duration, retry: [String])
        case failed(retry: [String], reason: String)
        /// Jira refused the app's credentials (`status` 401 or 403): a failure of the site, not of the accounts.
        case refused(retry: [String], status: Int)
        /// The worker was cancelled (shutdown): nothing to settle.
        case cancelled
    }

    struct Request: Sendable {
        var tenant: String
        var accountIDs: [String]
    }

    private let client: JiraClient
    private let repository: UserDetailsRepository
    private let credentials: Credentials
    private let credentialsRefused: CredentialsRefused
    private let settings: Settings
    private let clock: AnyClock<Duration>
    private let logger: Logger
    private var tenants: [String: TenantState] = [:]
    private var hasStopped = false
    private nonisolated let requests: AsyncStream<Request>
    private nonisolated let requestSink: AsyncStream<Request>.Continuation
    /// Requests in the buffer, not yet taken by `run()`.
    private nonisolated let buffered = Atomic<Int>(0)

    public init(
        client: JiraClient, repository: UserDetailsRepository, credentials: @escaping Credentials,
        credentialsRefused: @escaping CredentialsRefused = { _, _ in }, settings: Settings = Settings(),
        clock: any Clock<Duration> = ContinuousClock(), logger: Logger
    ) {
        self.client = client
        self.repository = repository
        self.credentials = credentials
        self.credentialsRefused = credentialsRefused
        self.settings = settings
        self.clock = AnyClock(clock)
        self.logger = logger
        (requests, requestSink) = AsyncStream.makeStream(of: Request.self, bufferingPolicy: .bufferingOldest(max(1, settings.maxBufferedRequests)))
    }

    /// Asks for these accounts' details to be fetched; returns at once, never waits. Dropped
    /// when the buffer is full (the next heartbeat asks again) or the service has stopped.
    public nonisolated func request(tenant: String, accountIDs: [String]) {
        let wanted = accountIDs.lazy.filter { !$0.isEmpty && $0 != unknownAccountID }.prefix(settings.maxPendingPerTenant)
        guard !wanted.isEmpty else { return }
        buffered.add(1, ordering: .relaxed)
        if case .enqueued = requestSink.yield(Request(tenant: tenant, accountIDs: Array(wanted))) { return }
        buffered.subtract(1, ordering: .relaxed)
    }

    /// Nothing buffered, pending or in flight for any tenant, or the service has stopped (for tests).
    public var isIdle: Bool {
        hasStopped || (buffered.load(ordering: .relaxed) == 0 && tenants.values.allSatisfy { $0.queued.isEmpty })
    }

    /// Takes requests and runs each tenant's worker as a child task, until graceful shutdown
    /// or cancellation; then cancels the workers, waits for them, and ignores later requests.
    public nonisolated func run() async throws {
        await withDiscardingTaskGroup { group in
            for await request in requests.cancelOnGracefulShutdown() {
                let startWorker = await enqueue(tenant: request.tenant, accountIDs: request.accountIDs)
                buffered.subtract(1, ordering: .relaxed)
                if startWorker {
                    group.addTask { await self.work(tenant: request.tenant) }
                }
            }
            group.cancelAll()
        }
        requestSink.finish()
        await stopped()
        logger.debug("user lookups stopped")
    }

    private func stopped() {
        hasStopped = true
        tenants = [:]
    }

    /// Queues the accounts; answers whether the tenant needs a worker started.
    func enqueue(tenant: String, accountIDs: [String]) -> Bool {
        let limit = settings.maxPendingPerTenant
        return Self.change(&tenants[tenant, default: TenantState()]) { state in
            for accountID in accountIDs where !state.queued.contains(accountID) && state.pending.count < limit {
                state.queued.insert(accountID)
                state.pending.append(accountID)
            }
            let startWorker = !state.hasWorker && !state.pending.isEmpty
            if startWorker { state.hasWorker = true }
            return startWorker
        }
    }

    /// Changes a tenant's state where it lies in `tenants`. A copy taken out and written back
    /// shares its set and array with the dictionary's, so its first change copied them whole:
    /// each request for a new account cost O(pending). (Probe, debug build: 20,000 requests of
    /// one new account each, up to the 5,000 pending: 164 ms before, 10 ms after.)
    private static func change<Result>(_ state: inout TenantState, _ body: (inout TenantState) -> Result) -> Result {
        body(&state)
    }

    /// One tenant's worker, a child task of `run()`: batches until nothing is pending, or cancellation.
    private func work(tenant: String) async {
        while !Task.isCancelled {
            do {
                if let notBefore = tenants[tenant]?.notBefore, notBefore > clock.now {
                    try await clock.sleep(until: notBefore)
                    continue
                }
                try await clock.sleep(for: settings.gatherDelay)
            } catch {
                break  // cancelled
            }
            let batch = takeBatch(tenant: tenant)
            guard !batch.isEmpty else {
                tenants[tenant]?.hasWorker = false
                if tenants[tenant]?.queued.isEmpty == true, tenants[tenant]?.notBefore == nil { tenants[tenant] = nil }
                return
            }
            let outcome = await fetch(tenant: tenant, accountIDs: batch)
            settle(tenant: tenant, batch: batch, outcome: outcome)
        }
        tenants[tenant]?.hasWorker = false
    }

    private func takeBatch(tenant: String) -> [String] {
        guard tenants[tenant] != nil else { return [] }
        let batchSize = settings.batchSize
        return Self.change(&tenants[tenant]!) { state in
            let batch = Array(state.pending.prefix(batchSize))
            state.pending.removeFirst(batch.count)
            return batch
        }
    }

    private func settle(tenant: String, batch: [String], outcome: Outcome) {
        guard tenants[tenant] != nil else { return }
        let now = clock.now
        Self.change(&tenants[tenant]!) { state in
            switch outcome {
            case .cancelled:
                return
            case .done:
                state.consecutiveFailures = 0
                state.notBefore = nil
                state.queued.subtract(batch)
            case .rateLimited(let retryAfter, let retry):
                state.notBefore = now.advanced(by: retryAfter)
                state.queued.subtract(Set(batch).subtracting(retry))
                state.pending.insert(contentsOf: retry, at: 0)
                logger.warning("Jira rate-limited user lookups; pausing this site", metadata: ["tenant": "\(tenant)", "retryAfter": "\(retryAfter)"])
            case .failed(let retry, let reason):
                let delay = backOff(&state, now: now, batch: batch, retry: retry, max: settings.backoffMax)
                logger.warning("user lookup failed; backing off", metadata: ["tenant": "\(tenant)", "reason": "\(reason)", "delay": "\(delay)"])
            case .refused(let retry, let status):
                // Counted with other failures, so a site that keeps refusing is asked less and
                // less often, but at least every `refusedBackoffMax`: Jira answering again must
                // bring the names back within a minute, not after `backoffMax`.
                let delay = backOff(&state, now: now, batch: batch, retry: retry, max: settings.refusedBackoffMax)
                logger.warning(
                    "Jira refused the app's credentials for user lookups; backing off",
                    metadata: ["tenant": "\(tenant)", "status": "\(status)", "delay": "\(delay)"])
            }
        }
    }

    /// Puts `retry` back in front of the pending accounts and pauses the tenant, exponentially
    /// longer with each consecutive failure up to `max`; answers the pause.
    private func backOff(
        _ state: inout TenantState, now: AnyClock<Duration>.Instant, batch: [String], retry: [String], max ceilingMax: Duration
    ) -> Duration {
        state.consecutiveFailures += 1
        let exponent = min(state.consecutiveFailures - 1, 20)
        let ceiling = min(settings.backoffBase * (1 << exponent), ceilingMax)
        // Full jitter over the upper half, so failing sites do not retry in step.
        let delay = ceiling * settings.jitter(0.5...1.0)
        state.notBefore = now.advanced(by: delay)
        state.queued.subtract(Set(batch).subtracting(retry))
        state.pending.insert(contentsOf: retry, at: 0)
        return delay
    }

    /// One batch against Jira, then the cache. Runs off the actor.
    nonisolated func fetch(tenant: String, accountIDs: [String]) async -> Outcome {
        do {
            // Uninstalled meanwhile, or no token yet: the next heartbeat asks again.
            guard case .available(let site) = try await credentials(tenant) else { return .done }
            let fresh = try await repository.freshAccounts(tenant: tenant, accountIDs: accountIDs)
            let wanted = accountIDs.filter { !fresh.contains($0) }
            guard !wanted.isEmpty else { return .done }

            let outcome = try await fetchBulk(tenant: tenant, site: site, accountIDs: wanted)
            if case .refused = outcome { credentialsRefused(tenant, site) }
            return outcome
        } catch let error as DecodingError {
            return .failed(retry: [], reason: "unreadable answer from Jira: \(error)")
        } catch {
            if Task.isCancelled { return .cancelled }
            return .failed(retry: accountIDs, reason: "\(error)")
        }
    }

    /// `/user/bulk` is paged (`startAt`, `isLast`): reads page after page until Jira says the
    /// last was read (`isLast`, or an empty page). Only then are the accounts it did not
    /// return remembered as missing; when the pages stop early (429, 5xx, an error, a page
    /// that brings nothing new, or more than `maxPagesPerBatch` pages) what was read is stored
    /// and the accounts not read yet stay pending. A refusal (401, 403) is the app's credentials,
    /// on any page: never a reason to ask one by one, which would be refused too.
    private nonisolated func fetchBulk(tenant: String, site: SiteCredentials, accountIDs wanted: [String]) async throws -> Outcome {
        var query = wanted.map { URLQueryItem(name: "accountId", value: $0) }
        query.append(URLQueryItem(name: "maxResults", value: String(settings.batchSize)))
        let wantedSet = Set(wanted)
        var found: [String: JiraUser] = [:]
        var startAt = 0
        var unread: [String] { wanted.filter { found[$0] == nil } }

        var end = PagesEnd.stopped(reason: "bulk answer not complete after \(settings.maxPagesPerBatch) pages")
        pages: for pageNumber in 0..<max(1, settings.maxPagesPerBatch) {
            let bulk: JiraClient.Response
            let page: JiraUser.Page
            do {
                let pageQuery = query + [URLQueryItem(name: "startAt", value: String(startAt))]
                bulk = try await client.get(site, path: "/rest/api/3/user/bulk", query: pageQuery)
                page = bulk.status == 200 ? try JSONDecoder().decode(JiraUser.Page.self, from: Data(buffer: bulk.body)) : JiraUser.Page(values: [])
            } catch {
                if pageNumber == 0 || Task.isCancelled { throw error }
                end = .stopped(reason: "\(error)")
                break pages
            }
            switch bulk.status {
            case 200:
                let before = found.count
                for user in page.values where wantedSet.contains(user.accountId) { found[user.accountId] = user }
                if page.values.isEmpty || page.isLast(startAt: startAt) || found.count == wantedSet.count {
                    end = .allRead
                    break pages
                }
                if found.count == before {
                    end = .stopped(reason: "a bulk page (startAt \(startAt)) brought no new account")
                    break pages
                }
                startAt += page.values.count
            case 401, 403:
                end = .refused(status: bulk.status)
                break pages
            case 429:
                end = .rateLimited(retryAfter(bulk.headers))
                break pages
            case 500...:
                end = .stopped(reason: "bulk answered \(bulk.status)")
                break pages
            default:
                // Bulk not available on this site (404, 400, ...): asked one by one instead.
                if pageNumber == 0 { return try await fetchOneByOne(tenant: tenant, site: site, accountIDs: wanted, bulkStatus: bulk.status) }
                end = .stopped(reason: "bulk page answered \(bulk.status)")
                break pages
            }
        }

        try await repository.store(tenant: tenant, users: Array(found.values))
        switch end {
        case .allRead:
            try await repository.storeMissing(tenant: tenant, accountIDs: unread)
            return .done
        case .rateLimited(let retryAfter):
            return .rateLimited(retryAfter: retryAfter, retry: unread)
        case .refused(let status):
            return .refused(retry: unread, status: status)
        case .stopped(let reason):
            return .failed(retry: unread, reason: reason)
        }
    }

    /// How reading `/user/bulk` pages ended.
    private enum PagesEnd {
        /// Jira said the last page was read: accounts it did not return are missing.
        case allRead
        /// The pages stopped early: accounts not read stay pending.
        case rateLimited(Duration)
        /// Jira refused the app's credentials: accounts not read stay pending.
        case refused(status: Int)
        case stopped(reason: String)
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
            case 404:
                missing.append(accountID)  // remembered, not asked at every heartbeat
            case 401, 403:
                // The app's credentials, not this account: the rest would be refused too.
                try await save(tenant: tenant, found: found, missing: missing)
                return .refused(retry: Array(accountIDs[index...]), status: response.status)
            case 429:
                try await save(tenant: tenant, found: found, missing: missing)
                return .rateLimited(retryAfter: retryAfter(response.headers), retry: Array(accountIDs[index...]))
            default:
                // 5xx, and any other answer: it says nothing about the account.
                try await save(tenant: tenant, found: found, missing: missing)
                return .failed(retry: Array(accountIDs[index...]), reason: "user answered \(response.status)")
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
