import Tenants
import AsyncHTTPClient
import Connect
import Foundation
import Hummingbird
import HummingbirdTesting
import Libpq
import NIOCore
@testable import Presence
import TestSupport
import UserDirectory
import Synchronization
import Testing
@testable import WhosLookingApp

@Suite("Running it for real: metrics, logs, several instances", .timeLimit(.minutes(3)))
struct OperationsTests {
    static let tenant = TenantInstallation(
        clientKey: "jira:ops", baseURL: URL(string: "https://ops.atlassian.net")!, productType: "jira",
        sharedSecret: "ops-tenant-secret-0123456789abcdef"
    )

    static func panelURI(_ account: String, issueID: String = "10001") throws -> String {
        let target = "/panel?issueId=\(issueID)&issueKey=OPS-1&projectId=1&projectKey=OPS"
        let now = Date().timeIntervalSince1970
        return target + "&jwt="
            + (try HS256.sign(
                ConnectClaims(
                    iss: tenant.clientKey, sub: account, iat: now, exp: now + 180,
                    qsh: CanonicalRequest(method: "GET", target: target).qsh), secret: tenant.sharedSecret))
    }

    @Test func metricsShowLiveFiguresBehindTheirToken() async throws {
        try await TestApp.with(environment: ["METRICS_TOKEN": "metrics-token-123"]) { testApp, app in
            try await testApp.tenants.install(Self.tenant)
            try await app.test(.router) { client in
                let panelURI = try Self.panelURI("alice")
                let jwt = try #require(panelURI.components(separatedBy: "jwt=").last)
                let html = try await client.execute(uri: panelURI, method: .get) { String(buffer: $0.body) }
                let ticket = try #require(TestApp.ticket(in: html))
                for _ in 0..<3 {
                    try await client.execute(uri: "/api/issues/10001/heartbeat", method: .post, headers: [.authorization: "Ticket \(ticket)"]) {
                        #expect($0.status == .ok)
                    }
                }
                try await client.execute(uri: "/api/issues/10001/heartbeat", method: .post, headers: [.authorization: "Ticket forged"]) {
                    #expect($0.status == .unauthorized)
                }
                try await client.execute(uri: "/metrics", method: .get) { #expect($0.status == .unauthorized) }
                try await client.execute(uri: "/metrics", method: .get, headers: [.authorization: "Bearer wrong-token-xyz"]) {
                    #expect($0.status == .unauthorized)
                }
                let text = try await client.execute(uri: "/metrics", method: .get, headers: [.authorization: "Bearer metrics-token-123"]) {
                    response in
                    #expect(response.status == .ok)
                    return String(buffer: response.body)
                }
                func value(_ line: String) -> Double? {
                    text.split(separator: "\n").first { $0.hasPrefix(line + " ") }.flatMap { Double($0.split(separator: " ").last ?? "") }
                }
                #expect((value("heartbeats_total") ?? 0) >= 3)
                // viewers_active and tenants_installed come from the periodic refresher, which
                // this routes-only app does not run: MetricsGaugeTests checks them.
                #expect(value("db_pool_connections_max") == 4)
                #expect((value("user_cache_misses_total") ?? 0) >= 1)
                #expect(text.contains(#"http_route="/api/issues/{issueId}/heartbeat""#), "requests by route")
                #expect(text.contains(#"http_response_status_code="200""#), "requests by status")
                #expect(text.contains("http_server_request_duration_bucket"), "latency histograms")
                // Refusals are answered by the edge, yet still counted as the route's errors (at
                // least once: the metrics are process-wide and other suites may refuse too).
                let errors = text.split(separator: "\n").filter { $0.hasPrefix("hb_request_errors{") }
                #expect(
                    errors.contains {
                        $0.contains(#"error_type="401""#) && $0.contains(#"http_route="/api/issues/{issueId}/heartbeat""#)
                            && (Double($0.split(separator: " ").last ?? "") ?? 0) >= 1
                    },
                    "\(errors)")
                // Jira's JWT comes in the panel's query: routes are labelled by their pattern, never
                // by the URL that came in.
                #expect(!text.contains(jwt) && !text.contains("jwt="), "no Jira token in metrics")
                #expect(!text.contains(ticket), "no viewer ticket in metrics")
            }
        }
    }

    @Test func jsonLogsOneLinePerRequestWithoutTokens() async throws {
        try await TestDatabase.withScratchDatabase { conninfo in
            let port = try FreePort.next()
            let app = try ChildService(
                arguments: ["serve"],
                environment: [
                    "DATABASE_URL": conninfo, "PORT": String(port), "LOG_FORMAT": "json",
                    "SECRET_ENCRYPTION_KEY": SecretBox.generateKey(),
                    "MIGRATIONS_DIR": SharedMaterial.projectRoot.appendingPathComponent("Migrations").path,
                ], name: "json-logs")
            defer { app.stop() }
            #expect(await ChildService.waitFor("http://127.0.0.1:\(port)/healthz"))
            _ = try? await ChildService.get("http://127.0.0.1:\(port)/panel?issueId=1&jwt=secret-looking.token.value")
            #expect(
                await eventually(timeout: .seconds(5)) { app.output.contains(#""route":"\/panel""#) || app.output.contains(#""route":"/panel""#) })
            let lines = app.output.split(separator: "\n")
            #expect(!lines.isEmpty)
            var requestLines: [[String: Any]] = []
            for line in lines {
                let object = try? JSONSerialization.jsonObject(with: Data(line.utf8)) as? [String: Any]
                #expect(object != nil, "not a JSON line: \(line)")
                if let object, object["message"] as? String == "request" { requestLines.append(object) }
            }
            let health = requestLines.first { $0["route"] as? String == "/healthz" }
            #expect(health?["status"] as? String == "200")
            #expect(health?["method"] as? String == "GET")
            #expect(health?["duration_ms"] != nil)
            let panel = requestLines.first { ($0["route"] as? String)?.hasPrefix("/panel") == true }
            #expect(panel?["status"] as? String == "401")
            #expect(!app.output.contains("secret-looking.token.value"), "a token reached the logs")
        }
    }

    struct NotReady: Error, CustomStringConvertible {
        var description: String
    }

    /// Two `whoslooking serve` processes on one database with one key, both ready.
    static func startInstances(conninfo: String, key: String, name: String, environment: [String: String]) async throws -> ([Int], [ChildService]) {
        let ports = try FreePort.next(2)
        let instances = try ports.map { port in
            try ChildService(
                arguments: ["serve"],
                environment: [
                    "DATABASE_URL": conninfo, "PORT": String(port), "SECRET_ENCRYPTION_KEY": key, "BASE_URL": "https://ops.example.com",
                    "MIGRATIONS_DIR": SharedMaterial.projectRoot.appendingPathComponent("Migrations").path,
                ].merging(environment) { $1 }, name: "\(name)-\(port)")
        }
        for (index, port) in ports.enumerated() {
            let ready = await ChildService.waitFor("http://127.0.0.1:\(port)/readyz")
            guard ready else {
                instances.forEach { $0.stop() }
                throw NotReady(description: "instance \(index) never ready:\n\(instances[index].output)")
            }
        }
        return (ports, instances)
    }

    /// Two instances on one database: migrations once, and either answers any heartbeat.
    @Test func twoInstancesShareOneDatabase() async throws {
        try await TestDatabase.withScratchDatabase { conninfo in
            let key = SecretBox.generateKey()
            let (ports, instances) = try await Self.startInstances(
                conninfo: conninfo, key: key, name: "instance", environment: ["SWEEP_INTERVAL_SECONDS": "1"])
            defer { instances.forEach { $0.stop() } }
            try await TestDatabase.withPool(conninfo: conninfo, maxConnections: 1) { pool in
                let migrations = try await pool.query("SELECT count(*) AS n FROM schema_migrations")[0].decode(Int.self, "n")
                let files = try FileManager.default.contentsOfDirectory(atPath: SharedMaterial.projectRoot.appendingPathComponent("Migrations").path)
                    .filter { $0.hasSuffix(".sql") }.count
                #expect(files >= 4)
                #expect(migrations == files)
                let applied = instances.map { $0.output.components(separatedBy: "applied migration").count - 1 }
                #expect(applied.reduce(0, +) == files, "each migration applied once in all: \(applied)")

                try await TenantRepository(pool: pool, secrets: try SecretBox(base64Key: key)).install(Self.tenant)

                func panel(_ account: String, on port: Int) async throws -> String {
                    try #require(TestApp.ticket(in: try await ChildService.get("http://127.0.0.1:\(port)\(try Self.panelURI(account))")))
                }
                func heartbeat(_ ticket: String, on port: Int) async throws -> [String] {
                    var request = HTTPClientRequest(url: "http://127.0.0.1:\(port)/api/issues/10001/heartbeat")
                    request.method = .POST
                    request.headers.add(name: "Authorization", value: "Ticket \(ticket)")
                    let response = try await HTTPClient.shared.execute(request, timeout: .seconds(5))
                    let body = try await response.body.collect(upTo: 1 << 20)
                    let json = try JSONSerialization.jsonObject(with: Data(buffer: body)) as? [String: Any]
                    return (json?["viewers"] as? [[String: Any]])?.compactMap { $0["accountId"] as? String } ?? []
                }
                let alice = try await panel("alice", on: ports[0])
                #expect(try await heartbeat(alice, on: ports[1]) == ["alice"], "a viewer recorded through one instance is listed by the other")
                let bob = try await panel("bob", on: ports[1])
                #expect(try await heartbeat(alice, on: ports[0]) == ["alice", "bob"])
                #expect(try await heartbeat(bob, on: ports[0]) == ["bob", "alice"])
            }
        }
    }

    /// Two executables on one database take turns: each sweeps and reports only under the
    /// advisory lock the other honours. While the test holds a lock, neither does that job;
    /// once it lets go, one does it, and every account is reported exactly once.
    @Test func twoInstancesSweepAndReportOnlyOneAtATime() async throws {
        let jira = JiraStandIn()
        await jira.addSite(Self.tenant.clientKey, sharedSecret: Self.tenant.sharedSecret)
        try await jira.serve { jiraURL in
            try await TestDatabase.withScratchDatabase { conninfo in
                let key = SecretBox.generateKey()
                let (_, instances) = try await Self.startInstances(
                    conninfo: conninfo, key: key, name: "turns",
                    environment: [
                        "SWEEP_INTERVAL_SECONDS": "1", "VIEWER_TTL_SECONDS": "30", "PERSONAL_DATA_REPORT_INTERVAL_SECONDS": "1",
                        "PERSONAL_DATA_REPORT_URL": "\(jiraURL)/app/report-accounts/",
                    ])
                defer { instances.forEach { $0.stop() } }
                try await TestDatabase.withPool(conninfo: conninfo) { pool in
                    try await TenantRepository(pool: pool, secrets: try SecretBox(base64Key: key)).install(Self.tenant)
                    let reported = Mutex<[String]>([])
                    await jira.setReportAnswer { accounts in
                        reported.withLock { $0.append(contentsOf: accounts) }
                        return (204, [:], "")
                    }

                    // The test holds both locks on a session of its own, as a third instance would.
                    try await pool.withConnection { holder in
                        try await holder.query(
                            "SELECT pg_advisory_lock(\(PresenceRepository.sweepLockKey)), pg_advisory_lock(\(PersonalDataReporter.reportLockKey))")
                        try await pool.query(
                            """
                            INSERT INTO viewers (client_key, issue_id, issue_key, account_id, tab_id, first_seen, last_seen)
                            VALUES (\(Self.tenant.clientKey), '10001', 'OPS-1', 'gone', 't', now() - interval '1 hour', now() - interval '1 hour')
                            """)
                        try await pool.query(
                            """
                            INSERT INTO user_details (client_key, account_id, status, display_name, fetched_at, expires_at)
                            SELECT \(Self.tenant.clientKey), 'account-' || n, 'found', 'Person ' || n, now(), now() + interval '1 day'
                            FROM generate_series(1, 150) AS n
                            """)
                        try await Task.sleep(for: .seconds(3))  // three sweep ticks and two or more report runs of each instance
                        let stale = try await pool.query("SELECT count(*) AS n FROM viewers")[0].decode(Int.self, "n")
                        #expect(stale == 1, "an instance swept while another held the sweep lock")
                        #expect(reported.withLock { $0 }.isEmpty, "an instance reported while another held the report lock")
                        try await holder.query("SELECT pg_advisory_unlock_all()")
                    }
                    let swept = await eventually(timeout: .seconds(10)) {
                        try await pool.query("SELECT count(*) AS n FROM viewers")[0].decode(Int.self, "n") == 0
                    }
                    #expect(swept, "nobody swept after the lock was released")
                    let all = await eventually(timeout: .seconds(15)) { Set(reported.withLock { $0 }).count == 150 }
                    #expect(all, "reported \(Set(reported.withLock { $0 }).count) of 150")
                    try await Task.sleep(for: .seconds(2))  // more runs of both: nothing reported twice
                    let counts = Dictionary(grouping: reported.withLock { $0 }, by: { $0 }).mapValues(\.count)
                    #expect(counts.values.allSatisfy { $0 == 1 }, "reported twice: \(counts.filter { $0.value > 1 }.keys.sorted().prefix(5))")
                }
            }
        }
    }
}
