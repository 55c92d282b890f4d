import AsyncHTTPClient
import Connect
import EmbeddedPostgres
import Foundation
import HTTPTypes
import Hummingbird
import HummingbirdTesting
import Libpq
import NIOCore
import Presence
import Synchronization
import Tenants
import TestSupport
import Testing

@testable import WhosLookingApp

/// A database that stalls (a lock held, backends stopped with SIGSTOP), stops or is flooded:
/// heartbeats answer within their deadline (503 with Retry-After when they cannot be
/// recorded), the queue stays bounded, `/healthz` stays 200, `/readyz` answers within its
/// budget, heartbeats keep their share of the pool, and service resumes with no restart.
@Suite("Database faults: stalls, stops and floods", .timeLimit(.minutes(3)))
struct DatabaseFaultTests {
    static let tenant = TenantInstallation(
        clientKey: "jira:faults", baseURL: URL(string: "https://faults.atlassian.net")!, productType: "jira",
        sharedSecret: "faults-tenant-secret-0123456789ab"
    )

    static func panelURI(_ account: String, issueID: String = "10001") throws -> String {
        let target = "/panel?issueId=\(issueID)&issueKey=FLT-1&projectId=1&projectKey=FLT"
        let now = Date().timeIntervalSince1970
        let claims = ConnectClaims(
            iss: tenant.clientKey, sub: account, iat: now, exp: now + 180, qsh: CanonicalRequest(method: "GET", target: target).qsh
        )
        return target + "&jwt=" + (try HS256.sign(claims, secret: tenant.sharedSecret))
    }

    /// What a heartbeat answered, and how long it took.
    struct Answer: Sendable {
        var status: Int
        var retryAfter: String?
        var body: String
        var elapsed: Duration
    }

    // MARK: - A lock held on viewers

    /// Heartbeats sent at once while `viewers` is locked: ten times the queue's bound (more
    /// slows the tests running beside this one on a two-core machine, and proves nothing more).
    static let concurrentHeartbeats = 1000

    /// Every heartbeat while `viewers` is locked answers 503 with Retry-After within its
    /// deadline, however many arrive (those beyond the queue's bound at once); the queue never
    /// holds more than its bound; once the lock goes, heartbeats are recorded again, with no
    /// restart.
    @Test func aLockOnViewersAnswers503InTimeWithABoundedQueueAndRecovers() async throws {
        let environment = ["HEARTBEAT_TIMEOUT_MS": "1000", "HEARTBEAT_QUEUE_LIMIT": "100", "HEARTBEAT_BATCH_CONNECTIONS": "1"]
        try await TestApp.with(environment: environment) { testApp, app in
            try await testApp.tenants.install(Self.tenant)
            try await app.test(.router) { client in
                var tickets: [String] = []
                for index in 0..<20 {
                    let html = try await client.execute(uri: try Self.panelURI("account-\(index)"), method: .get) { String(buffer: $0.body) }
                    tickets.append(try #require(TestApp.ticket(in: html)))
                }
                let allTickets = tickets
                #expect(try await Self.heartbeat(client, ticket: allTickets[0]).status == 200)

                let lock = try await LockHolder.hold(
                    "LOCK TABLE viewers IN ACCESS EXCLUSIVE MODE", conninfo: testApp.pool.configuration.conninfo
                )
                // Without deadlines the heartbeats would wait for the lock: let it go after a while,
                // so that such a failure is reported rather than hanging the suite.
                let watchdog = Task {
                    try await Task.sleep(for: .seconds(30))
                    lock.release(byWatchdog: true)
                }
                let answers = try await withThrowingTaskGroup(of: Answer.self) { group in
                    for index in 0..<Self.concurrentHeartbeats {
                        group.addTask { try await Self.heartbeat(client, ticket: allTickets[index % allTickets.count]) }
                    }
                    return try await group.reduce(into: [Answer]()) { $0.append($1) }
                }
                let heldThroughout = !lock.releasedByWatchdog
                let queue = testApp.parts.presence.heartbeatQueueStatistics()
                watchdog.cancel()
                try await lock.release()

                #expect(heldThroughout, "the heartbeats were answered only once the lock was released")
                #expect(answers.count == Self.concurrentHeartbeats, "every heartbeat answered")
                let statuses = Dictionary(grouping: answers, by: \.status).mapValues(\.count)
                #expect(statuses == [503: Self.concurrentHeartbeats], "\(statuses)")
                #expect(answers.allSatisfy { $0.retryAfter.flatMap(Int.init).map { (1...30).contains($0) } == true }, "503 carries Retry-After")
                #expect(answers.allSatisfy { $0.body.contains("database unavailable") && !$0.body.contains("57014") })
                let slowest = answers.map(\.elapsed).max() ?? .zero
                #expect(slowest < .seconds(8), "deadline 1 s (a generous bound on a shared machine), slowest took \(slowest)")
                #expect(queue.peakWaiting <= 100, "the queue held \(queue.peakWaiting) heartbeats, bound 100")
                #expect(queue.maxWaiting == 100)
                // Beyond the bound heartbeats were refused at once, not queued.
                let quick = answers.filter { $0.elapsed < .milliseconds(900) }.count
                #expect(quick >= Self.concurrentHeartbeats - 300, "only \(quick) answered before any deadline could pass")

                // The lock is gone: heartbeats are recorded again, same process, same pool.
                let recovered = await eventually(timeout: .seconds(15)) {
                    try await Self.heartbeat(client, ticket: allTickets[1]).status == 200
                }
                #expect(recovered, "heartbeats never succeeded again after the lock was released")
                let afterwards = testApp.parts.presence.heartbeatQueueStatistics()
                #expect(afterwards.waiting == 0 && afterwards.unanswered == 0)
            }
        }
    }

    /// The Forge door answers the same way, as the JSON Forge requires.
    @Test func aForgeHeartbeatWhileViewersIsLockedAnswers503AsJSONInTime() async throws {
        let forge = try FakeForge()
        let jira = JiraStandIn()
        try await jira.serve { jiraURL in
            try await forge.withJWKS { jwksURL in
                let environment = [
                    "FORGE_APP_ID": FakeForge.appID, "FORGE_JWKS_URL": jwksURL, "JWT_LEEWAY_SECONDS": "5", "HEARTBEAT_TIMEOUT_MS": "1000",
                ]
                try await TestApp.with(environment: environment) { testApp, app in
                    try await app.test(.router) { client in
                        func beat() async throws -> Answer {
                            let token = try await forge.token(FakeForge.panelClaims(principal: "557058:alice", apiBaseURL: "\(jiraURL)/forge-site"))
                            let started = ContinuousClock.now
                            return try await client.execute(
                                uri: "/forge/heartbeat", method: .post,
                                headers: [
                                    .authorization: "Bearer \(token)", .contentType: "application/json",
                                    HTTPField.Name("x-forge-oauth-user")!: JiraStandIn.userToken("557058:alice"),
                                ],
                                body: ByteBuffer(string: #"{"tabId":"tab-1"}"#)
                            ) {
                                Answer(
                                    status: Int($0.status.code), retryAfter: $0.headers[.retryAfter], body: String(buffer: $0.body),
                                    elapsed: ContinuousClock.now - started
                                )
                            }
                        }
                        #expect(try await beat().status == 200)
                        let lock = try await LockHolder.hold(
                            "LOCK TABLE viewers IN ACCESS EXCLUSIVE MODE", conninfo: testApp.pool.configuration.conninfo
                        )
                        let watchdog = Task {
                            try await Task.sleep(for: .seconds(30))
                            lock.release(byWatchdog: true)
                        }
                        let stalled = try await beat()
                        let heldThroughout = !lock.releasedByWatchdog
                        watchdog.cancel()
                        try await lock.release()
                        #expect(heldThroughout)
                        #expect(stalled.status == 503)
                        #expect(stalled.body == #"{"error":"database unavailable"}"#)
                        #expect(stalled.retryAfter.flatMap(Int.init) != nil)
                        #expect(stalled.elapsed < .seconds(6), "deadline 1 s, took \(stalled.elapsed)")
                        #expect(await eventually(timeout: .seconds(15)) { try await beat().status == 200 })
                    }
                }
            }
        }
    }

    /// The pool the app builds: every deadline set, and the heartbeats' reserved share never
    /// leaving other work fewer than two connections.
    @Test func thePoolGetsTheConfiguredDeadlinesAndReservedShare() throws {
        let configuration = try TestApp.configuration([
            "DATABASE_POOL_SIZE": "8", "HEARTBEAT_BATCH_CONNECTIONS": "3", "DATABASE_STATEMENT_TIMEOUT_MS": "2500",
            "DATABASE_ACQUIRE_TIMEOUT_MS": "700",
        ]).databasePoolConfiguration(conninfo: "dbname=x")
        #expect(configuration.maxConnections == 8)
        #expect(configuration.reservedConnections == 3)
        #expect(configuration.statementTimeout == .milliseconds(2500))
        #expect(configuration.queryTimeout == .milliseconds(3500), "the client cancels after the server would have")
        #expect(configuration.acquireTimeout == .milliseconds(700))

        let defaults = try TestApp.configuration()
        #expect(defaults.heartbeatTimeoutMilliseconds == 3000)
        #expect(defaults.heartbeatQueueLimit == 1024)
        #expect(defaults.readinessTimeoutMilliseconds == 1000)
        #expect(defaults.databasePoolConfiguration(conninfo: "dbname=x").statementTimeout == .seconds(5))
        #expect(defaults.databasePoolConfiguration(conninfo: "dbname=x").reservedConnections == 2)
        for size in 1...3 {
            let small = try TestApp.configuration(["DATABASE_POOL_SIZE": "\(size)", "HEARTBEAT_BATCH_CONNECTIONS": "\(size)"])
            #expect(small.databasePoolConfiguration(conninfo: "dbname=x").reservedConnections == max(0, size - 2))
        }
        let off = try TestApp.configuration(["DATABASE_STATEMENT_TIMEOUT_MS": "0"]).databasePoolConfiguration(conninfo: "dbname=x")
        #expect(off.statementTimeout == nil && off.queryTimeout == nil)
        for (variable, value) in [
            ("DATABASE_STATEMENT_TIMEOUT_MS", "-1"), ("HEARTBEAT_TIMEOUT_MS", "0"), ("HEARTBEAT_QUEUE_LIMIT", "0"),
            ("READINESS_TIMEOUT_MS", "soon"), ("DATABASE_ACQUIRE_TIMEOUT_MS", "0"),
        ] {
            #expect(throws: AppConfiguration.Invalid.self, "\(variable)=\(value)") { try TestApp.configuration([variable: value]) }
        }
    }

    static func heartbeat(_ client: some TestClientProtocol, ticket: String) async throws -> Answer {
        let started = ContinuousClock.now
        return try await client.execute(uri: "/api/issues/10001/heartbeat", method: .post, headers: [.authorization: "Ticket \(ticket)"]) {
            Answer(
                status: Int($0.status.code), retryAfter: $0.headers[.retryAfter], body: String(buffer: $0.body),
                elapsed: ContinuousClock.now - started
            )
        }
    }

    // MARK: - Backends stopped with SIGSTOP (the real executable)

    /// A stopped backend answers nothing, and its server-side timeout cannot fire: the
    /// heartbeat answers 503 with Retry-After at its deadline, the client gives the stopped
    /// connection up (cancel, then close) and opens a fresh one, so heartbeats succeed again
    /// while the old backend is still stopped; the cause is in the log, not in answers.
    @Test func stoppedBackendsFailFastAndAreReplaced() async throws {
        // One connection: once it is stopped, no request can get another until it is given up
        // (background work of the app cannot open a fresh one behind the test's back).
        try await RunningApp.with(environment: [
            "DATABASE_STATEMENT_TIMEOUT_MS": "1000", "HEARTBEAT_TIMEOUT_MS": "1500", "DATABASE_POOL_SIZE": "1",
        ]) { app in
            let alice = try await app.panelTicket("alice")
            #expect(try await app.heartbeat(alice).status == 200)
            #expect(try await app.get("/readyz").status == 200)

            let stopped = try await app.stopAllBackendsWhenIdle()
            defer { stopped.forEach { kill($0, SIGCONT) } }
            try #require(stopped.count == 1, "the app's one backend, stopped: \(stopped)")

            let stalled = try await app.heartbeat(alice)
            #expect(stalled.status == 503)
            #expect(stalled.retryAfter.flatMap(Int.init) != nil, "503 without Retry-After")
            #expect(stalled.elapsed < .seconds(7), "heartbeat deadline 1.5 s, took \(stalled.elapsed)")
            #expect(!stalled.body.contains("PostgresError") && !stalled.body.contains("sqlstate"))
            #expect(try await app.get("/healthz").status == 200)

            // Still stopped, yet served again: the stalled connections were given up and replaced.
            let served = await eventually(timeout: .seconds(40)) { try await app.heartbeat(alice).status == 200 }
            #expect(served, "heartbeats never recovered while the old backend stayed stopped:\n\(app.service.output.suffix(3000))")
            #expect(stopped.allSatisfy(DatabaseFaultTests.isStopped), "the old backend was stopped throughout")
            #expect(app.service.output.contains("PostgresError.timeout"), "the cause reaches the log:\n\(app.service.output.suffix(3000))")

            stopped.forEach { kill($0, SIGCONT) }
            #expect(try await app.heartbeat(alice).status == 200)
            #expect(await eventually(timeout: .seconds(10)) { try await app.get("/readyz").status == 200 })
        }
    }

    /// `/readyz` answers 503 within its budget (1 s) while the database is stalled, `/healthz`
    /// stays 200, and readiness comes back by itself.
    @Test func readinessAnswersWithinItsBudgetWhileTheDatabaseIsStalled() async throws {
        // One connection: once it is stopped, every probe either waits on it or for it.
        try await RunningApp.with(environment: ["READINESS_TIMEOUT_MS": "1000", "DATABASE_POOL_SIZE": "1"]) { app in
            #expect(try await app.get("/readyz").status == 200)
            let stopped = try await app.stopAllBackendsWhenIdle()
            defer { stopped.forEach { kill($0, SIGCONT) } }
            try #require(stopped.count == 1)
            // The 200 above is shared with probes for a second (`HealthController`); past it, they check.
            try await Task.sleep(for: .milliseconds(1100))

            let probes = try await withThrowingTaskGroup(of: DatabaseFaultTests.Answer.self) { group in
                for _ in 0..<3 { group.addTask { try await app.get("/readyz") } }
                return try await group.reduce(into: [DatabaseFaultTests.Answer]()) { $0.append($1) }
            }
            for ready in probes {
                #expect(ready.status == 503)
                #expect(ready.elapsed < .seconds(3), "budget 1 s, took \(ready.elapsed)")
                #expect(ready.body == "database unavailable\n")
                #expect(ready.retryAfter != nil)
            }
            let health = try await app.get("/healthz")
            #expect(health.status == 200)
            #expect(health.elapsed < .seconds(2))

            stopped.forEach { kill($0, SIGCONT) }
            #expect(await eventually(timeout: .seconds(20)) { try await app.get("/readyz").status == 200 })
        }
    }

    // MARK: - A flood on other routes

    /// Requests that hold every connection they may have (leave calls stuck on a row lock,
    /// readiness probes) cannot stop heartbeats: those have their own share of the pool.
    @Test func aFloodOnOtherRoutesCannotStarveHeartbeats() async throws {
        try await RunningApp.with(environment: [
            "DATABASE_POOL_SIZE": "4", "HEARTBEAT_BATCH_CONNECTIONS": "1", "DATABASE_STATEMENT_TIMEOUT_MS": "15000",
            "DATABASE_ACQUIRE_TIMEOUT_MS": "2000",
        ]) { app in
            let alice = try await app.panelTicket("alice")
            let flooder = try await app.panelTicket("flooder")
            #expect(try await app.heartbeat(alice).status == 200)

            // Every leave of the flooder's tab waits for this row lock while holding a connection.
            let lock = try await LockHolder.hold(
                "SELECT 1 FROM viewers WHERE account_id = 'flooder' FOR UPDATE", conninfo: app.conninfo
            )
            let flood = Task {
                try await withThrowingTaskGroup(of: Int.self) { group in
                    for index in 0..<60 {
                        group.addTask {
                            index % 2 == 0 ? try await app.leave(flooder) : try await app.get("/readyz").status
                        }
                    }
                    return try await group.reduce(into: [Int]()) { $0.append($1) }
                }
            }
            // Wait until the flood holds every connection it can get.
            let saturated = await eventually(timeout: .seconds(20)) {
                try await app.admin.query(
                    """
                    SELECT count(*) AS n FROM pg_stat_activity
                    WHERE datname = current_database() AND wait_event_type = 'Lock' AND query LIKE '%DELETE FROM viewers%'
                    """)[0].decode(Int.self, "n") >= 3
            }
            #expect(saturated, "the flood never held the connections it may have")

            for _ in 0..<5 {
                let answer = try await app.heartbeat(alice)
                #expect(answer.status == 200, "a heartbeat was starved by the flood")
                #expect(answer.elapsed < .seconds(3), "a heartbeat waited \(answer.elapsed) behind the flood")
            }
            let stuck = try await app.admin.query(
                """
                SELECT count(*) AS n FROM pg_stat_activity
                WHERE datname = current_database() AND wait_event_type = 'Lock' AND query LIKE '%DELETE FROM viewers%'
                """)[0].decode(Int.self, "n")
            #expect(stuck == 3, "the flood holds the general share (pool 4 - 1 reserved), never more: \(stuck)")

            try await lock.release()
            let statuses = try await flood.value
            #expect(statuses.allSatisfy { [200, 204, 503].contains($0) }, "\(statuses)")
            #expect(try await app.heartbeat(alice).status == 200)
        }
    }

    // MARK: - The database stopped

    /// PostgreSQL stopped under the app: heartbeats 503 with Retry-After at once, `/readyz`
    /// 503, `/healthz` 200; started again, heartbeats succeed within a poll interval.
    @Test func aStoppedDatabaseAnswers503AndServiceResumesWhenItIsBack() async throws {
        let folder = URL(fileURLWithPath: NSTemporaryDirectory()).appendingPathComponent("wl-faults-\(UUID().uuidString.prefix(8))")
        defer { try? FileManager.default.removeItem(at: folder) }
        let cluster = EmbeddedPostgres(dataDirectory: folder.appendingPathComponent("pg"), database: "faults", logger: TestDatabase.logger)
        let conninfo = try await cluster.start()
        do {
            try await RunningApp.with(conninfo: conninfo, environment: ["POLL_INTERVAL_SECONDS": "10"]) { app in
                let alice = try await app.panelTicket("alice")
                #expect(try await app.heartbeat(alice).status == 200)
                await app.closeAdmin()
                try await cluster.stop()

                let down = try await app.heartbeat(alice)
                #expect(down.status == 503)
                #expect(down.retryAfter.flatMap(Int.init) != nil, "503 without Retry-After")
                #expect(down.elapsed < .seconds(7), "took \(down.elapsed)")
                // A readiness answer is shared for a second (`HealthController`): the start-up probe's 200 may stand that long.
                try await Task.sleep(for: .milliseconds(1100))
                let ready = try await app.get("/readyz")
                #expect(ready.status == 503)
                #expect(ready.elapsed < .seconds(3))
                #expect(try await app.get("/healthz").status == 200)

                _ = try await cluster.start()
                let started = ContinuousClock.now
                #expect(await eventually(timeout: .seconds(10)) { try await app.heartbeat(alice).status == 200 })
                #expect(ContinuousClock.now - started < .seconds(10), "within one poll interval")
                // Readiness answers are shared for a second (`HealthController`): the 503 above may stand that long.
                #expect(await eventually(timeout: .seconds(3)) { try await app.get("/readyz").status == 200 })
            }
        } catch {
            try? await cluster.stop()
            throw error
        }
        try await cluster.stop()
    }

    /// State `T` in /proc: stopped by a signal.
    static func isStopped(_ pid: Int32) -> Bool {
        guard let stat = try? String(contentsOfFile: "/proc/\(pid)/stat", encoding: .utf8),
            let close = stat.lastIndex(of: ")")
        else { return false }
        return stat[stat.index(after: close)...].trimmingCharacters(in: .whitespaces).hasPrefix("T")
    }
}

/// The real executable on a scratch database (or a given one), with an installed tenant, an
/// HTTP client that does not queue requests, and an admin pool for SQL.
struct RunningApp: Sendable {
    let service: ChildService
    let port: Int
    let conninfo: String
    let admin: PostgresPool
    let http: HTTPClient

    static func with(
        conninfo given: String? = nil, environment: [String: String], _ body: @Sendable (RunningApp) async throws -> Void
    ) async throws {
        if let given {
            try await run(conninfo: given, environment: environment, body)
        } else {
            try await TestDatabase.withScratchDatabase { conninfo in try await run(conninfo: conninfo, environment: environment, body) }
        }
    }

    private static func run(conninfo: String, environment: [String: String], _ body: @Sendable (RunningApp) async throws -> Void) async throws {
        let key = SecretBox.generateKey()
        let port = try FreePort.next()
        let service = try ChildService(
            arguments: ["serve"],
            environment: [
                "DATABASE_URL": conninfo, "PORT": String(port), "SECRET_ENCRYPTION_KEY": key, "BASE_URL": "https://faults.example.com",
                "MIGRATIONS_DIR": SharedMaterial.projectRoot.appendingPathComponent("Migrations").path,
            ].merging(environment) { $1 },
            name: "faults"
        )
        let admin = PostgresPool(configuration: .init(conninfo: conninfo, maxConnections: 1), logger: TestDatabase.logger)
        let http = HTTPClient(
            eventLoopGroupProvider: .singleton,
            configuration: .init(connectionPool: .init(idleTimeout: .seconds(60), concurrentHTTP1ConnectionsPerHostSoftLimit: 256))
        )
        let app = RunningApp(service: service, port: port, conninfo: conninfo, admin: admin, http: http)
        do {
            let ready = await ChildService.waitFor("http://127.0.0.1:\(port)/readyz")
            try #require(ready, "the app never became ready:\n\(service.output)")
            try await TenantRepository(pool: admin, secrets: try SecretBox(base64Key: key)).install(DatabaseFaultTests.tenant)
            try await body(app)
        } catch {
            await app.shutDown()
            throw error
        }
        await app.shutDown()
    }

    private func shutDown() async {
        await service.stopAndWait()
        await admin.close()
        try? await http.shutdown()
    }

    func closeAdmin() async {
        await admin.close()
    }

    var base: String { "http://127.0.0.1:\(port)" }

    func get(_ path: String) async throws -> DatabaseFaultTests.Answer {
        try await send(HTTPClientRequest(url: base + path))
    }

    func send(_ request: HTTPClientRequest) async throws -> DatabaseFaultTests.Answer {
        let started = ContinuousClock.now
        let response = try await http.execute(request, timeout: .seconds(25))
        let body = try await response.body.collect(upTo: 1 << 20)
        return DatabaseFaultTests.Answer(
            status: Int(response.status.code), retryAfter: response.headers.first(name: "Retry-After"), body: String(buffer: body),
            elapsed: ContinuousClock.now - started
        )
    }

    func panelTicket(_ account: String) async throws -> String {
        let html = try await get(try DatabaseFaultTests.panelURI(account)).body
        return try #require(TestApp.ticket(in: html), "no ticket in the panel:\n\(html.prefix(500))")
    }

    func heartbeat(_ ticket: String) async throws -> DatabaseFaultTests.Answer {
        var request = HTTPClientRequest(url: base + "/api/issues/10001/heartbeat")
        request.method = .POST
        request.headers.add(name: "Authorization", value: "Ticket \(ticket)")
        return try await send(request)
    }

    func leave(_ ticket: String) async throws -> Int {
        var request = HTTPClientRequest(url: base + "/api/issues/10001/leave")
        request.method = .POST
        request.headers.add(name: "Authorization", value: "Ticket \(ticket)")
        return try await send(request).status
    }

    /// Stops (SIGSTOP) every backend of the app, once all are idle (stopping one in the middle
    /// of a statement could leave it holding a lock of the shared test server): the server runs
    /// them, but they answer nothing. The caller sends SIGCONT (in a `defer`).
    func stopAllBackendsWhenIdle() async throws -> [Int32] {
        func backends() async throws -> [(pid: Int32, idle: Bool)] {
            try await admin.query(
                """
                SELECT pid, state = 'idle' AS idle FROM pg_stat_activity
                WHERE datname = current_database() AND backend_type = 'client backend' AND pid <> pg_backend_pid()
                  AND application_name = 'whoslooking'
                ORDER BY pid
                """
            ).map { (try $0.decode(Int32.self, "pid"), try $0.decode(Bool?.self, "idle") ?? false) }
        }
        for _ in 0..<200 {
            let before = try await backends()
            if !before.isEmpty && before.allSatisfy(\.idle) {
                for backend in before { kill(backend.pid, SIGSTOP) }
                // None started work or appeared meanwhile: every connection the app has is stopped.
                let after = try await backends()
                if after.map(\.pid) == before.map(\.pid) && after.allSatisfy(\.idle) { return before.map(\.pid) }
                for backend in before { kill(backend.pid, SIGCONT) }
            }
            try await Task.sleep(for: .milliseconds(50))
        }
        return []
    }
}

/// A lock held by a transaction of its own until released.
final class LockHolder: Sendable {
    private let pool: PostgresPool
    private let releaseSignal: AsyncStream<Void>.Continuation
    private let holder: Task<Void, any Error>
    private let watchdogFired = Mutex(false)

    var releasedByWatchdog: Bool { watchdogFired.withLock { $0 } }

    private init(pool: PostgresPool, releaseSignal: AsyncStream<Void>.Continuation, holder: Task<Void, any Error>) {
        self.pool = pool
        self.releaseSignal = releaseSignal
        self.holder = holder
    }

    /// Runs `statement` in a transaction and keeps it open; answers once the lock is granted.
    static func hold(_ statement: String, conninfo: String) async throws -> LockHolder {
        let pool = PostgresPool(configuration: .init(conninfo: conninfo, maxConnections: 1), logger: TestDatabase.logger)
        let (released, releaseSignal) = AsyncStream<Void>.makeStream()
        let (granted, grantedSignal) = AsyncStream<Void>.makeStream()
        let holder = Task {
            defer { grantedSignal.finish() }
            try await pool.withConnection { connection in
                try await connection.execute(script: "BEGIN")
                try await connection.execute(script: statement)
                grantedSignal.yield()
                for await _ in released { break }
                try await connection.execute(script: "ROLLBACK")
            }
        }
        var wasGranted = false
        for await _ in granted {
            wasGranted = true
            break
        }
        guard wasGranted else {
            try await holder.value
            throw PostgresError(.protocolViolation, message: "the lock was never granted")
        }
        return LockHolder(pool: pool, releaseSignal: releaseSignal, holder: holder)
    }

    /// Lets the transaction end (from any task, any number of times).
    func release(byWatchdog: Bool) {
        if byWatchdog { watchdogFired.withLock { $0 = true } }
        releaseSignal.finish()
    }

    /// Ends the transaction and waits until it has.
    func release() async throws {
        releaseSignal.finish()
        try await holder.value
        await pool.close()
    }
}

// MARK: - The database crashed

extension DatabaseFaultTests {
    /// PostgreSQL killed (`pg_ctl stop -m immediate`: no shutdown checkpoint, crash recovery at
    /// the next start) while two panels heartbeat every poll interval: the heartbeats answer 503
    /// while it is down, the unlogged `viewers` table comes back empty, and the first heartbeat
    /// each panel sends once the database is back is recorded again, with no restart of the app.
    @Test func aCrashedDatabaseComesBackWithNoViewersAndPanelsRefillItWithinOnePollInterval() async throws {
        let pollSeconds = 4
        let poll = Duration.seconds(pollSeconds)
        let folder = URL(fileURLWithPath: NSTemporaryDirectory()).appendingPathComponent("wl-crash-\(UUID().uuidString.prefix(8))")
        defer { try? FileManager.default.removeItem(at: folder) }
        let cluster = EmbeddedPostgres(dataDirectory: folder.appendingPathComponent("pg"), database: "crash", logger: TestDatabase.logger)
        let conninfo = try await cluster.start()
        do {
            try await RunningApp.with(conninfo: conninfo, environment: ["POLL_INTERVAL_SECONDS": "\(pollSeconds)"]) { app in
                let appProcess = app.service.process.processIdentifier
                let log = PanelHeartbeats()
                let panels = [("alice", try await app.panelTicket("alice")), ("bob", try await app.panelTicket("bob"))]
                let loops = panels.enumerated().map { index, panel in
                    Task { await log.beat(as: panel.0, ticket: panel.1, every: poll, after: poll / 2 * index, app: app) }
                }
                defer { loops.forEach { $0.cancel() } }
                #expect(await eventually(timeout: poll * 3) { log.panelsRecorded(since: .now - poll * 3) == ["alice", "bob"] })

                // Every row written before the crash has a first_seen at or before this instant (a
                // heartbeat on a live row keeps it): a row with a later one was written afresh.
                let beforeCrash = try await app.admin.query("SELECT now() AS t")[0].decode(Date.self, "t")
                let preCrashRows = try await app.admin.query("SELECT count(*) AS n FROM viewers WHERE first_seen <= \(beforeCrash)")
                #expect(try preCrashRows[0].decode(Int.self, "n") == 2, "both panels recorded before the crash")
                await app.closeAdmin()

                let stop = try await Self.pgCtl(["stop", "-D", await cluster.dataDirectory.path, "-m", "immediate", "-w", "-t", "60", "-s"])
                try #require(stop.status == 0, "pg_ctl stop -m immediate failed: \(stop.output)")
                let crashed = ContinuousClock.now

                // Down: each panel's heartbeat answers 503 (the panel shows "Reconnecting…" and keeps polling).
                #expect(await eventually(timeout: poll * 3) { log.panelsRefused(since: crashed) == ["alice", "bob"] })
                #expect(log.statuses(since: crashed).allSatisfy { $0 == 503 }, "while down: \(log.statuses(since: crashed))")
                #expect(try await app.get("/healthz").status == 200)

                _ = try await cluster.start()
                let back = ContinuousClock.now
                let serverLog = (try? String(contentsOf: await cluster.dataDirectory.appendingPathComponent("server.log"), encoding: .utf8)) ?? ""
                #expect(serverLog.contains("automatic recovery in progress"), "the restart was not a crash recovery:\n\(serverLog.suffix(2000))")

                let pool = PostgresPool(configuration: .init(conninfo: conninfo, maxConnections: 1), logger: TestDatabase.logger)
                do {
                    // Counted at once, a panel's heartbeat may already have put its row back: what
                    // shows the table came back empty is that no row from before the crash is left.
                    let survivors = try await pool.query("SELECT count(*) AS n FROM viewers WHERE first_seen <= \(beforeCrash)")
                    #expect(try survivors[0].decode(Int.self, "n") == 0, "rows from before the crash survived it")

                    let refilled = await eventually(timeout: poll + .seconds(3)) {
                        let rows = try await pool.query(
                            "SELECT count(DISTINCT account_id) AS n FROM viewers WHERE first_seen > \(beforeCrash) AND issue_id = '10001'")
                        return try rows[0].decode(Int.self, "n") == 2
                    }
                    #expect(refilled, "no fresh row for both panels after the crash; heartbeats since: \(log.statuses(since: back))")
                    // A panel sends its next heartbeat at most one poll interval after the database is
                    // back; that one, not a later retry, is recorded. The second is slack for the
                    // heartbeat's own round trip on a loaded machine.
                    for name in ["alice", "bob"] {
                        let first = log.first(of: name, sentAfter: back)
                        #expect(first?.status == 200, "\(name)'s first heartbeat after the database was back: \(String(describing: first))")
                        #expect(first.map { $0.answeredAt - back < poll + .seconds(1) } == true, "\(name): \(String(describing: first))")
                    }
                    let rows = try await pool.query("SELECT count(*) AS n, count(*) FILTER (WHERE first_seen <= \(beforeCrash)) AS old FROM viewers")
                    #expect(try rows[0].decode(Int.self, "n") == 2)
                    #expect(try rows[0].decode(Int.self, "old") == 0)
                    await pool.close()
                } catch {
                    await pool.close()
                    throw error
                }
                #expect(app.service.process.isRunning && app.service.process.processIdentifier == appProcess, "the app was restarted or died")
                loops.forEach { $0.cancel() }
                for loop in loops { await loop.value }
            }
        } catch {
            try? await cluster.stop()
            throw error
        }
        try await cluster.stop()
    }

    /// `pg_ctl` from the server binaries, as `postgres` when we are root (PostgreSQL refuses root).
    static func pgCtl(_ arguments: [String]) async throws -> Subprocess.Outcome {
        let pgCtl = try await EmbeddedPostgres.findServerBinaries().appendingPathComponent("pg_ctl").path
        guard geteuid() == 0 else { return try await Subprocess.run(URL(fileURLWithPath: pgCtl), arguments) }
        let runuser = ["/usr/sbin/runuser", "/sbin/runuser"].first { FileManager.default.isExecutableFile(atPath: $0) } ?? "/usr/sbin/runuser"
        return try await Subprocess.run(URL(fileURLWithPath: runuser), ["-u", "postgres", "--", pgCtl] + arguments)
    }
}

/// Heartbeats sent the way `Public/panel.js` sends them: one every poll interval after the
/// last one was answered, the renewed ticket kept, stopping for good on 401 or 403.
final class PanelHeartbeats: Sendable {
    struct Beat: Sendable, CustomStringConvertible {
        var panel: String
        var sentAt: ContinuousClock.Instant
        var answeredAt: ContinuousClock.Instant
        /// 0 when no answer came at all.
        var status: Int
        var description: String { "\(panel) \(status) after \(answeredAt - sentAt)" }
    }

    private let beats = Mutex<[Beat]>([])

    func beat(as panel: String, ticket first: String, every poll: Duration, after delay: Duration, app: RunningApp) async {
        var ticket = first
        try? await Task.sleep(for: delay)
        while !Task.isCancelled {
            let sentAt = ContinuousClock.now
            let answer = try? await app.heartbeat(ticket)
            beats.withLock { $0.append(Beat(panel: panel, sentAt: sentAt, answeredAt: .now, status: answer?.status ?? 0)) }
            if let answer, answer.status == 401 || answer.status == 403 { return }
            if let answer, answer.status == 200,
                let renewed = (try? JSONSerialization.jsonObject(with: Data(answer.body.utf8)) as? [String: Any])?["ticket"] as? String
            {
                ticket = renewed
            }
            try? await Task.sleep(for: poll)
        }
    }

    func statuses(since instant: ContinuousClock.Instant) -> [Int] {
        beats.withLock { $0.filter { $0.sentAt >= instant }.map(\.status) }
    }

    /// Panels with a heartbeat recorded (200) sent since `instant`.
    func panelsRecorded(since instant: ContinuousClock.Instant) -> Set<String> {
        beats.withLock { Set($0.filter { $0.sentAt >= instant && $0.status == 200 }.map(\.panel)) }
    }

    /// Panels with a heartbeat sent since `instant` and not recorded.
    func panelsRefused(since instant: ContinuousClock.Instant) -> Set<String> {
        beats.withLock { Set($0.filter { $0.sentAt >= instant && $0.status != 200 }.map(\.panel)) }
    }

    func first(of panel: String, sentAfter instant: ContinuousClock.Instant) -> Beat? {
        beats.withLock { $0.first { $0.panel == panel && $0.sentAt >= instant } }
    }
}
