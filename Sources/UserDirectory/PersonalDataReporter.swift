import Clocks
import Connect
import Foundation
import Libpq
import Logging
import Metrics
import NIOCore
import NIOFoundationCompat
import ServiceLifecycle

/// Reports the accounts whose details we store to Atlassian's personal data reporting API,
/// as apps that store personal data must: at most 90 accounts a request, each account once per
/// cycle (7 days, or what the API's `Cycle-Period` header says), `updatedAt` = when we fetched
/// its data. `closed` erases the account everywhere; `updated` refetches it.
///
/// Progress lives in `user_details.reported_at`, so a restart resumes without reporting an
/// account twice in a cycle. Runs wake at jittered intervals, never at round times. The waits
/// (between runs, and a 429's `Retry-After`) run on the injected clock, `ContinuousClock` unless
/// told otherwise; the cycle is the database's time (`reported_at`).
///
/// A Forge site can only be reported with a fresh system token, which lives in one instance's
/// memory. Forge's hourly scheduled trigger brings one even to a site nobody visits; the
/// instance it reaches asks for that site's report at once (`requestReport`), and runs it in
/// this service. Each site's report holds a session advisory lock for that site, so one
/// instance reports it at a time; every site skipped (no token, locked, failed) is logged and
/// counted (`personal_data_sites_skipped_total`).
public struct PersonalDataReporter: Service {
    public struct Settings: Sendable {
        public var reportURL: URL
        public var interval: Duration
        public var defaultCycle: TimeInterval = 7 * 24 * 3600
        public var batchSize = 90
        /// The longest `Retry-After` waited out inside a run; a longer one skips the site until the next run.
        public var maxRetryAfter: TimeInterval = 60
        /// A `Cycle-Period` outside these bounds is ignored.
        public var cycleBounds: ClosedRange<TimeInterval> = 3600...(366 * 24 * 3600)
        /// Draws the run interval's jitter factor from the range it is given (0.5...1.5); tests
        /// answer a bound of that range so that the wait between runs can be asserted exactly.
        public var jitter: @Sendable (ClosedRange<Double>) -> Double = { Double.random(in: $0) }

        public init(reportURL: URL, interval: Duration) {
            self.reportURL = reportURL
            self.interval = interval
        }
    }

    public struct Summary: Sendable, Equatable {
        public var reported = 0
        public var closed = 0
        public var updated = 0
        public var requests = 0
        /// The run was skipped: another instance holds the report lock.
        public var anotherInstanceReporting = false
    }

    struct Answer: Decodable {
        struct Account: Decodable {
            var accountId: String
            var status: String
        }
        var accounts: [Account]
    }

    let pool: PostgresPool
    let client: JiraClient
    let repository: UserDetailsRepository
    let enricher: UserEnricher
    let credentials: UserEnricher.Credentials
    let settings: Settings
    let clock: AnyClock<Duration>
    let logger: Logger
    /// Sites whose report was asked for (scheduled trigger); bounded, the newest dropped when full.
    private let requested: AsyncStream<String>
    private let requests: AsyncStream<String>.Continuation

    static func skipped(_ reason: String) -> Counter { Counter(label: "personal_data_sites_skipped_total", dimensions: [("reason", reason)]) }

    public init(
        pool: PostgresPool, client: JiraClient, repository: UserDetailsRepository, enricher: UserEnricher,
        credentials: @escaping UserEnricher.Credentials, settings: Settings, clock: any Clock<Duration> = ContinuousClock(), logger: Logger
    ) {
        self.pool = pool
        self.client = client
        self.repository = repository
        self.enricher = enricher
        self.credentials = credentials
        self.settings = settings
        self.clock = AnyClock(clock)
        self.logger = logger
        (requested, requests) = AsyncStream.makeStream(of: String.self, bufferingPolicy: .bufferingOldest(10_000))
    }

    /// Asks for one site's report soon, on this instance (which holds its fresh token). Never waits.
    public func requestReport(tenant: String) {
        if case .dropped = requests.yield(tenant) {
            Self.skipped("queue_full").increment()
            logger.warning("personal data report request dropped: queue full", metadata: ["tenant": "\(tenant)"])
        }
    }

    /// Reports the accounts of one site that are due, unless another instance is reporting it.
    public func reportSite(_ tenant: String) async throws -> Summary {
        try await pool.withConnection { lockHolder in
            guard try await Self.tryLock(site: tenant, on: lockHolder) else {
                skip(tenant, reason: "locked", level: .debug)
                return Summary(anotherInstanceReporting: true)
            }
            do {
                let summary = try await reportDue(only: tenant)
                try? await Self.unlock(site: tenant, on: lockHolder)
                return summary
            } catch {
                try? await Self.unlock(site: tenant, on: lockHolder)
                throw error
            }
        }
    }

    /// The session advisory lock of one site's report: (class, hash of the key).
    static func tryLock(site tenant: String, on connection: PooledConnection) async throws -> Bool {
        let rows = try await connection.query("SELECT pg_try_advisory_lock(\(siteLockClass), hashtext(\(tenant))) AS locked")
        return try rows[0].decode(Bool.self, "locked")
    }

    static func unlock(site tenant: String, on connection: PooledConnection) async throws {
        _ = try await connection.query("SELECT pg_advisory_unlock(\(siteLockClass), hashtext(\(tenant)))")
    }

    /// "rpst" in ASCII: the class of the per-site report locks.
    public static let siteLockClass: Int32 = 0x7270_7374

    func skip(_ tenant: String, reason: String, level: Logger.Level = .info) {
        Self.skipped(reason).increment()
        logger.log(level: level, "personal data report skipped a site", metadata: ["tenant": "\(tenant)", "reason": "\(reason)"])
    }

    public func run() async throws {
        await cancelWhenGracefulShutdown {
            await withDiscardingTaskGroup { group in
                // Sites asked for by the scheduled trigger, one at a time.
                group.addTask {
                    for await tenant in requested {
                        do {
                            let summary = try await reportSite(tenant)
                            log(summary)
                        } catch {
                            logger.warning("personal data report failed for a site", metadata: ["tenant": "\(tenant)", "error": "\(error)"])
                        }
                    }
                }
                while !Task.isCancelled {
                    do {
                        try await clock.sleep(for: settings.interval * settings.jitter(0.5...1.5))
                    } catch {
                        break
                    }
                    do {
                        log(try await runOnce())
                    } catch {
                        logger.warning("personal data report failed; retrying next run", metadata: ["error": "\(error)"])
                    }
                }
                requests.finish()
            }
        }
    }

    private func log(_ summary: Summary) {
        guard summary.requests > 0 else { return }
        logger.info(
            "reported personal data", metadata: ["accounts": "\(summary.reported)", "closed": "\(summary.closed)", "updated": "\(summary.updated)"])
    }

    /// One report run across instances: the run holds a session advisory lock on a connection
    /// of its own (released when the run ends, or by the server if that connection dies), and
    /// an instance that finds it held skips its run.
    public func runOnce() async throws -> Summary {
        try await pool.withConnection { lockHolder in
            let locked = try await lockHolder.query("SELECT pg_try_advisory_lock(\(Self.reportLockKey)) AS locked")
            guard try locked[0].decode(Bool.self, "locked") else {
                logger.debug("another instance is reporting personal data")
                return Summary(anotherInstanceReporting: true)
            }
            do {
                let summary = try await reportDue(lockingSitesOn: lockHolder)
                _ = try? await lockHolder.query("SELECT pg_advisory_unlock(\(Self.reportLockKey))")
                return summary
            } catch {
                _ = try? await lockHolder.query("SELECT pg_advisory_unlock(\(Self.reportLockKey))")
                throw error
            }
        }
    }

    /// "reporter" in ASCII.
    public static let reportLockKey = 0x7265_706F_7274_6572

    /// Reports every account that is due (of `only` that site, when given), tenant by tenant.
    /// A tenant that cannot be reported now (no token yet, another instance reporting it, or its
    /// report failed) is skipped for this run; the others go on.
    func reportDue(only site: String? = nil, lockingSitesOn lockHolder: PooledConnection? = nil) async throws -> Summary {
        var summary = Summary()
        let cycle = try await currentCycle()
        var skipped: [String] = []
        while true {
            let due = try await dueBatch(cycle: cycle, skipping: skipped, only: site)
            guard let tenant = due.first?.tenant else { return summary }
            let accounts = due.map { (accountID: $0.accountID, fetchedAt: $0.fetchedAt) }
            // The scheduled trigger's run for this site may be going on at another instance.
            if let lockHolder, !(try await Self.tryLock(site: tenant, on: lockHolder)) {
                skip(tenant, reason: "locked", level: .debug)
                skipped.append(tenant)
                continue
            }
            do {
                try await reportTenant(tenant, accounts: accounts, summary: &summary, skipped: &skipped)
            } catch {
                if let lockHolder { try? await Self.unlock(site: tenant, on: lockHolder) }
                throw error
            }
            if let lockHolder { try await Self.unlock(site: tenant, on: lockHolder) }
        }
    }

    private func reportTenant(
        _ tenant: String, accounts: [(accountID: String, fetchedAt: Date)], summary: inout Summary, skipped: inout [String]
    ) async throws {
        switch try await credentials(tenant) {
        case .uninstalled:
            // Its details are being erased; do not report them.
            try await markReported(tenant: tenant, accountIDs: accounts.map(\.accountID))
        case .waiting:
            skip(tenant, reason: "no_token")
            skipped.append(tenant)
        case .available(let site):
            do {
                try await report(tenant: tenant, site: site, accounts: accounts, summary: &summary)
            } catch is CancellationError {
                throw CancellationError()
            } catch {
                logger.warning(
                    "personal data report failed for a site; retrying next run", metadata: ["tenant": "\(tenant)", "error": "\(error)"])
                skip(tenant, reason: "failed")
                skipped.append(tenant)
            }
        }
    }

    private func report(tenant: String, site: SiteCredentials, accounts: [(accountID: String, fetchedAt: Date)], summary: inout Summary) async throws
    {
        let formatter = ISO8601DateFormatter()
        formatter.formatOptions = [.withInternetDateTime, .withFractionalSeconds]
        let payload = ["accounts": accounts.map { ["accountId": $0.accountID, "updatedAt": formatter.string(from: $0.fetchedAt)] }]
        let body = ByteBuffer(data: try JSONSerialization.data(withJSONObject: payload))
        var waits = 0
        while true {
            summary.requests += 1
            let response = try await client.postJSON(url: settings.reportURL, credentials: site, body: body)
            // Header values come from outside: `inf`, `nan`, huge or negative ones are ignored.
            if let period = Self.seconds(response.headers.first(name: "Cycle-Period")), settings.cycleBounds.contains(period) {
                try await storeCycle(period)
            }
            switch response.status {
            case 204:
                break
            case 200:
                let answer = try JSONDecoder().decode(Answer.self, from: Data(buffer: response.body))
                let requested = Set(accounts.map(\.accountID))
                var toRefetch: [String] = []
                for account in answer.accounts where requested.contains(account.accountId) {
                    switch account.status {
                    case "closed":
                        try await repository.eraseAccount(tenant: tenant, accountID: account.accountId)
                        summary.closed += 1
                    case "updated":
                        toRefetch.append(account.accountId)
                    default:
                        logger.notice("unknown personal data status", metadata: ["status": "\(account.status)"])
                    }
                }
                if !toRefetch.isEmpty {
                    try await repository.markStale(tenant: tenant, accountIDs: toRefetch)
                    enricher.request(tenant: tenant, accountIDs: toRefetch)
                    summary.updated += toRefetch.count
                }
            case 429:
                // A short, readable Retry-After is waited out, a few times; anything else skips
                // the site until the next run, so no answer can make a run wait or loop for ever.
                waits += 1
                guard let seconds = Self.seconds(response.headers.first(name: "Retry-After")), seconds <= settings.maxRetryAfter, waits <= 3 else {
                    throw JiraClient.Failure(description: "report-accounts rate-limited the site; retrying next run")
                }
                try await clock.sleep(for: .milliseconds(Int64(seconds * 1000)))
                continue
            default:
                throw JiraClient.Failure(description: "report-accounts answered \(response.status)")
            }
            try await markReported(tenant: tenant, accountIDs: accounts.map(\.accountID))
            summary.reported += accounts.count
            return
        }
    }

    /// Up to one request's worth of due accounts, all of one tenant, not one of `skipping`.
    func dueBatch(
        cycle: TimeInterval, skipping: [String] = [], only site: String? = nil
    ) async throws -> [(tenant: String, accountID: String, fetchedAt: Date)] {
        let rows = try await pool.query(
            """
            WITH first_tenant AS (
                SELECT client_key FROM user_details
                WHERE status = 'found' AND (reported_at IS NULL OR reported_at <= now() - make_interval(secs => \(cycle)))
                  AND client_key <> ALL(\(PostgresTextArray(skipping))) AND (\(site)::text IS NULL OR client_key = \(site))
                ORDER BY client_key LIMIT 1
            )
            SELECT u.client_key, u.account_id, u.fetched_at FROM user_details u JOIN first_tenant f USING (client_key)
            WHERE u.status = 'found' AND (u.reported_at IS NULL OR u.reported_at <= now() - make_interval(secs => \(cycle)))
            ORDER BY u.account_id LIMIT \(settings.batchSize)
            """)
        return try rows.map {
            (try $0.decode(String.self, "client_key"), try $0.decode(String.self, "account_id"), try $0.decode(Date.self, "fetched_at"))
        }
    }

    private func markReported(tenant: String, accountIDs: [String]) async throws {
        try await pool.query(
            """
            UPDATE user_details SET reported_at = now()
            WHERE client_key = \(tenant) AND account_id = ANY(\(PostgresTextArray(accountIDs)))
            """)
    }

    /// A header's whole or decimal seconds: finite, not negative, at most a year; else nil.
    static func seconds(_ value: String?) -> TimeInterval? {
        guard let value, let seconds = Double(value.trimmingCharacters(in: .whitespaces)), seconds.isFinite,
            (0...(366 * 24 * 3600)).contains(seconds)
        else { return nil }
        return seconds
    }

    static let cycleSetting = "personal_data_cycle_seconds"

    func currentCycle() async throws -> TimeInterval {
        let rows = try await pool.query("SELECT value FROM app_settings WHERE name = \(Self.cycleSetting)")
        return try rows.first.flatMap { Double(try $0.decode(String.self, "value")) } ?? settings.defaultCycle
    }

    private func storeCycle(_ seconds: Double) async throws {
        try await pool.query(
            """
            INSERT INTO app_settings (name, value) VALUES (\(Self.cycleSetting), \(String(Int(seconds))))
            ON CONFLICT (name) DO UPDATE SET value = EXCLUDED.value, updated_at = now()
            """)
    }
}
