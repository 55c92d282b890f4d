import Clocks
import Connect
import Forge
import Foundation
import Libpq
import Logging
import ServiceLifecycle
import Synchronization
import Tenants
import TestSupport
import Testing
import UserDirectory

/// A `UserEnricher` over a scratch database and two installed sites of a local Jira stand-in
/// (`site`, and `other` for tests that need a second one).
struct EnricherHarness: Sendable {
    static let secret = "enricher-site-shared-secret-0123456789"
    static let otherSecret = "enricher-other-shared-secret-0123456789"

    let jira: JiraStandIn
    let pool: PostgresPool
    let enricher: UserEnricher
    let site: TenantInstallation
    let other: TenantInstallation

    func request(_ accountIDs: [String], site: TenantInstallation? = nil) {
        enricher.request(tenant: (site ?? self.site).clientKey, accountIDs: accountIDs)
    }

    func status(_ account: String, site: TenantInstallation? = nil) async throws -> String? {
        try await UserDetailsRepository(pool: pool, ttl: 3600, missingTTL: 3600).details(tenant: (site ?? self.site).clientKey, accountID: account)?
            .status
    }

    func statuses(_ accounts: [String]) async throws -> [String: String] {
        var found: [String: String] = [:]
        for account in accounts { found[account] = try await status(account) }
        return found
    }

    /// `body` runs with the enricher not started: run it with `TestApp.running` or a service group of its own.
    /// Its waits run on `clock` (a `SteppedClock` in the tests of backoff and `Retry-After`).
    /// With `systemTokens`, `site` is called as a Forge installation, as the app wires one: with
    /// the token held for its client key as Bearer (waiting while none is), and a token Jira
    /// refused forgotten.
    static func with(
        settings: UserEnricher.Settings = .init(),
        clock: any Clock<Duration> = ContinuousClock(),
        logger: Logger = TestDatabase.logger,
        systemTokens: ForgeSystemTokens? = nil,
        _ body: @escaping @Sendable (EnricherHarness) async throws -> Void
    ) async throws {
        let jira = JiraStandIn()
        await jira.addSite("site", sharedSecret: secret)
        await jira.addSite("other", sharedSecret: otherSecret)
        try await jira.serve { jiraURL in
            try await TestApp.withMigratedPool { pool in
                let site = TenantInstallation(clientKey: "jira:enricher-site", baseURL: URL(string: "\(jiraURL)/site")!, sharedSecret: secret)
                let other = TenantInstallation(clientKey: "jira:enricher-other", baseURL: URL(string: "\(jiraURL)/other")!, sharedSecret: otherSecret)
                let tenants = TenantRepository(pool: pool, secrets: try SecretBox(base64Key: SecretBox.generateKey()))
                try await tenants.install(site)
                try await tenants.install(other)
                let enricher = UserEnricher(
                    client: JiraClient(appKey: JiraStandIn.appKey, timeout: .seconds(5)),
                    repository: UserDetailsRepository(pool: pool, ttl: 3600, missingTTL: 3600),
                    credentials: { clientKey in
                        let installed = clientKey == other.clientKey ? other : site
                        if let systemTokens, installed.clientKey == site.clientKey {
                            guard let token = systemTokens.token(installationID: clientKey) else { return .waiting }
                            return .available(.bearer(apiBaseURL: installed.baseURL, token: token))
                        }
                        return .available(.connect(baseURL: installed.baseURL, sharedSecret: installed.sharedSecret))
                    },
                    credentialsRefused: { clientKey, refused in
                        if case .bearer(_, let token) = refused { systemTokens?.forget(token: token, installationID: clientKey) }
                    },
                    settings: settings, clock: clock, logger: logger
                )
                try await body(EnricherHarness(jira: jira, pool: pool, enricher: enricher, site: site, other: other))
            }
        }
        let unverified = await jira.unverified
        #expect(unverified.isEmpty, "requests the stand-in could not verify: \(unverified)")
    }
}

/// A swift-clocks `TestClock` that also keeps every wait asked of it. An advance ends only the
/// waits already begun, so a test first waits (in real time) until the wait it means has begun,
/// then advances exactly to its end; and it can assert how long each wait was, to the nanosecond.
final class SteppedClock: Clock, Sendable {
    typealias Duration = Swift.Duration
    typealias Instant = TestClock<Duration>.Instant

    /// One wait: when it began and how long it is, both counted from the clock's start.
    struct Wait: Equatable, Sendable, CustomStringConvertible {
        var at: Duration
        var length: Duration
        init(_ at: Duration, _ length: Duration) {
            self.at = at
            self.length = length
        }
        var end: Duration { at + length }
        var description: String { "\(at) for \(length)" }
    }

    private let clock = TestClock<Duration>()
    private let log = Mutex<[Wait]>([])

    var now: Instant { clock.now }
    var minimumResolution: Duration { clock.minimumResolution }
    /// Every wait begun so far, in the order they began.
    var waits: [Wait] { log.withLock { $0 } }
    /// How far the clock has been advanced.
    var elapsed: Duration { Instant().duration(to: clock.now) }

    func sleep(until deadline: Instant, tolerance: Duration? = nil) async throws {
        log.withLock { $0.append(Wait(elapsed, clock.now.duration(to: deadline))) }
        try await clock.sleep(until: deadline, tolerance: tolerance)
    }

    /// Whether a wait is pending now (`checkSuspension` throws when one is).
    var isWaitedOn: Bool {
        get async {
            do {
                try await clock.checkSuspension()
                return false
            } catch {
                return true
            }
        }
    }

    /// Whether, within a few seconds of real time, `count` waits have begun and one is pending.
    func untilWaits(_ count: Int) async -> Bool {
        await eventually {
            guard waits.count >= count else { return false }
            return await isWaitedOn
        }
    }

    func advance(by duration: Duration) async { await clock.advance(by: duration) }

    /// Advances to this offset from the clock's start.
    func advance(to offset: Duration) async { await clock.advance(to: Instant(offset: offset)) }

    /// Lets the first `count` waits run out, one after the other, each as soon as it has begun;
    /// answers whether they all began.
    func runWaits(_ count: Int) async -> Bool {
        for index in 0..<count {
            guard await untilWaits(index + 1) else { return false }
            await advance(to: waits[index].end)
        }
        return true
    }
}

/// Every log line, for tests that assert what was (not) logged.
final class CapturedLogs: Sendable {
    private let lines = Mutex<[String]>([])

    var all: [String] { lines.withLock { $0 } }

    var logger: Logger {
        var logger = Logger(label: "captured") { _ in Handler(owner: self) }
        logger.logLevel = .debug
        return logger
    }

    struct Handler: LogHandler {
        let owner: CapturedLogs
        var metadata: Logger.Metadata = [:]
        var logLevel: Logger.Level = .debug

        subscript(metadataKey key: String) -> Logger.Metadata.Value? {
            get { metadata[key] }
            set { metadata[key] = newValue }
        }

        func log(event: LogEvent) {
            let merged = metadata.merging(event.metadata ?? [:]) { $1 }
            let line = "\(event.level) \(event.message) \(merged.sorted { $0.key < $1.key }.map { "\($0.key)=\($0.value)" }.joined(separator: " "))"
            owner.lines.withLock { $0.append(line) }
        }
    }
}

/// User lookups are children of the enricher's service: once its `run()` has returned (graceful
/// shutdown or cancellation), no lookup is in flight or starts, so none outlives the pool.
@Suite("User lookups stop with their service", .timeLimit(.minutes(3)))
struct EnricherLifecycleTests {
    /// Runs the enricher in a service group of its own while `body` runs, then shuts the group
    /// down gracefully; answers, once `run()` has ended, how long the shutdown took.
    @discardableResult
    func runThenShutDown(_ h: EnricherHarness, _ body: () async throws -> Void) async throws -> Duration {
        let group = ServiceGroup(configuration: .init(services: [h.enricher], gracefulShutdownSignals: [], logger: TestDatabase.logger))
        return try await withThrowingTaskGroup(of: Void.self) { tasks in
            tasks.addTask { try await group.run() }
            try await body()
            let shutdownStarted = ContinuousClock.now
            await group.triggerGracefulShutdown()
            try await tasks.waitForAll()
            return ContinuousClock.now - shutdownStarted
        }
    }

    @Test func aRequestAfterShutdownCausesNoLookup() async throws {
        try await EnricherHarness.with { h in
            await h.jira.addUser(accountId: "alice", displayName: "Alice")
            await h.jira.addUser(accountId: "bob", displayName: "Bob")
            try await runThenShutDown(h) {
                h.request(["alice"])
                #expect(await eventually { try await h.status("alice") == "found" })
            }
            let callsAtShutdown = await h.jira.userCallsArrived
            #expect(callsAtShutdown == 1)
            h.request(["bob"])
            try await Task.sleep(for: .milliseconds(600))
            #expect(await h.jira.userCallsArrived == callsAtShutdown, "a lookup started after the service had stopped")
            #expect(try await h.status("bob") == nil)
        }
    }

    /// The log of the old code: a lookup answered after its test (and pool) ended failed with "pool is shut down".
    @Test func aLookupInFlightAtShutdownIsCancelledAndNothingOutlivesThePool() async throws {
        let logs = CapturedLogs()
        try await EnricherHarness.with(logger: logs.logger) { h in
            await h.jira.addUser(accountId: "alice", displayName: "Alice")
            await h.jira.setBehaviour(.slow(seconds: 3), for: "site")
            let shutdownTook = try await runThenShutDown(h) {
                h.request(["alice"])
                #expect(await eventually { await h.jira.userCallsArrived == 1 }, "the lookup is in flight")
            }
            #expect(shutdownTook < .seconds(2), "shutdown waited \(shutdownTook) for a 3 s lookup instead of cancelling it")
            #expect(try await h.status("alice") == nil)
        }
        // The pool is closed and the scratch database dropped; the stand-in's slow answer has come and gone.
        try await Task.sleep(for: .seconds(3.5))
        let failures = logs.all.filter { $0.contains("shut down") || $0.contains("user lookup failed") }
        #expect(failures.isEmpty, "after the test ended: \(failures)")
    }

    @Test func requestsBeforeTheServiceRunsWaitInABoundedBufferAndNeverBlock() async throws {
        var settings = UserEnricher.Settings()
        settings.maxBufferedRequests = 5
        try await EnricherHarness.with(settings: settings) { h in
            let accounts = (0..<1000).map { "user-\($0)" }
            for account in accounts { await h.jira.addUser(accountId: account, displayName: "Person \(account)") }
            let clock = ContinuousClock()
            let took = clock.measure {
                for account in accounts { h.request([account]) }
            }
            #expect(took < .seconds(1), "1000 requests took \(took)")
            try await runThenShutDown(h) {
                #expect(await eventually { try await h.status("user-4") == "found" })
                #expect(await eventually { await h.enricher.isIdle })
            }
            let asked = Set(await h.jira.userCalls().flatMap(\.accountIDs))
            #expect(asked == Set(accounts.prefix(5)), "the first five were kept, the rest dropped (the next heartbeat asks again)")
        }
    }

    /// The app runs the enricher with its other services (pool last to stop): a graceful
    /// shutdown of the whole group ends lookups before the pool closes.
    @Test func theAppServiceGroupStopsLookupsBeforeThePool() async throws {
        let logs = CapturedLogs()
        try await EnricherHarness.with(logger: logs.logger) { h in
            await h.jira.addUser(accountId: "alice", displayName: "Alice")
            await h.jira.setBehaviour(.slow(seconds: 3), for: "site")
            let group = ServiceGroup(configuration: .init(services: [h.pool, h.enricher], gracefulShutdownSignals: [], logger: TestDatabase.logger))
            try await withThrowingTaskGroup(of: Void.self) { tasks in
                tasks.addTask { try await group.run() }
                h.request(["alice"])
                #expect(await eventually { await h.jira.userCallsArrived == 1 })
                await group.triggerGracefulShutdown()
                try await tasks.waitForAll()
            }
        }
        try await Task.sleep(for: .seconds(3.5))
        let failures = logs.all.filter { $0.contains("shut down") || $0.contains("user lookup failed") }
        #expect(failures.isEmpty, "after the group stopped: \(failures)")
    }
}
