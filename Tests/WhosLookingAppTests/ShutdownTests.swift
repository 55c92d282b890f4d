import Connect
import Foundation
import Libpq
import Synchronization
import TestSupport
import Testing
import Tenants

/// SIGTERM while heartbeats pour in: every request the server took gets a whole answer, the
/// heartbeat batches drain, the process exits 0 within a bound, and nothing is left running.
@Suite("Shutdown under heartbeat load", .timeLimit(.minutes(3)))
struct ShutdownTests {
    /// Jira's user API for this site refuses connections at once: names are not this test's subject.
    static let tenant = TenantInstallation(
        clientKey: "jira:shutdown", baseURL: URL(string: "http://127.0.0.1:9")!, productType: "jira",
        sharedSecret: "shutdown-tenant-secret-0123456789"
    )

    static func panelPath(_ account: String, issueID: String) throws -> String {
        let target = "/panel?issueId=\(issueID)&issueKey=SHUT-\(issueID)&projectId=1&projectKey=SHUT"
        let now = Date().timeIntervalSince1970
        let claims = ConnectClaims(
            iss: tenant.clientKey, sub: account, iat: now, exp: now + 180, qsh: CanonicalRequest(method: "GET", target: target).qsh
        )
        return target + "&jwt=" + (try HS256.sign(claims, secret: tenant.sharedSecret))
    }

    /// What each request of the load got.
    final class Tally: Sendable {
        struct Counts {
            var complete: [Int: Int] = [:]
            var completeAfterSignal = 0
            var closedBeforeAnswer = 0
            var failures: [String] = []
        }
        let counts = Mutex(Counts())
        let signalled = Atomic<Bool>(false)
    }

    @Test func sigtermUnderHeartbeatLoadAnswersEveryTakenRequestAndExitsZero() async throws {
        try await TestDatabase.withScratchDatabase { conninfo in
            let key = SecretBox.generateKey()
            let port = try FreePort.next()
            let app = try ChildService(
                arguments: ["serve"],
                environment: [
                    "DATABASE_URL": conninfo, "PORT": String(port), "SECRET_ENCRYPTION_KEY": key, "LOG_LEVEL": "notice",
                    "MIGRATIONS_DIR": SharedMaterial.projectRoot.appendingPathComponent("Migrations").path,
                ],
                name: "shutdown"
            )
            defer { app.stop() }
            let served = ServedApp(service: app, port: port, conninfo: conninfo, key: key)
            let ready = await eventually(timeout: .seconds(30)) { await served.answers("/readyz", timeout: .seconds(2)) == 200 }
            try #require(ready, "never ready:\n\(app.output)")

            let pool = PostgresPool(configuration: .init(conninfo: conninfo, maxConnections: 1), logger: TestDatabase.logger)
            try await TenantRepository(pool: pool, secrets: try SecretBox(base64Key: key)).install(Self.tenant)

            // Eight viewers, two per issue, each with its panel's ticket.
            var tickets: [(issueID: String, ticket: String)] = []
            for index in 0..<8 {
                let issueID = String(20_001 + index / 2)
                let connection = try await RawConnection.open(port: port)
                defer { connection.close() }
                try await connection.send(
                    "GET \(try Self.panelPath("viewer-\(index)", issueID: issueID)) HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n"
                )
                guard case .complete(let page) = await connection.nextResponse(timeout: .seconds(10)), page.status == 200,
                    let ticket = TestApp.ticket(in: String(decoding: page.body, as: UTF8.self))
                else {
                    Issue.record("panel \(index) did not load:\n\(app.output)")
                    return
                }
                tickets.append((issueID, ticket))
            }

            let tally = Tally()
            let drivers = tickets.map { viewer in
                Task { await Self.drive(port: port, issueID: viewer.issueID, ticket: viewer.ticket, tally: tally) }
            }
            // Load first, then the signal in the middle of it.
            let loaded = await eventually(timeout: .seconds(10)) { tally.counts.withLock { $0.complete[200, default: 0] } >= 200 }
            #expect(loaded, "the load never got going: \(tally.counts.withLock { $0.failures })")
            let descendants = Self.descendants(of: app.process.processIdentifier)
            // Heartbeats caught in the database when the signal comes: a lock holds every batch
            // (each driver's heartbeat is then in flight) through SIGTERM, and is let go 1 s later.
            let locker = PostgresPool(configuration: .init(conninfo: conninfo, maxConnections: 1), logger: TestDatabase.logger)
            let signalled = try await locker.withConnection { connection in
                try await connection.execute(script: "BEGIN; LOCK TABLE viewers IN SHARE ROW EXCLUSIVE MODE")
                try await Task.sleep(for: .milliseconds(300))
                let inFlight = tally.counts.withLock { $0.complete.values.reduce(0, +) }
                tally.signalled.store(true, ordering: .relaxed)
                let signalled = ContinuousClock.now
                app.stop()
                try await Task.sleep(for: .seconds(1))
                #expect(app.process.isRunning, "exited with heartbeats still in the database")
                #expect(tally.counts.withLock { $0.complete.values.reduce(0, +) } == inFlight, "answered while the batches were held")
                try await connection.execute(script: "COMMIT")
                return signalled
            }
            await locker.close()

            let exited = await eventually(timeout: .seconds(15)) { !app.process.isRunning }
            let exitTime = ContinuousClock.now - signalled
            for driver in drivers { await driver.value }
            #expect(exited, "still running \(exitTime) after SIGTERM:\n\(app.output.suffix(3000))")
            guard exited else { return }
            #expect(
                app.process.terminationReason == .exit && app.process.terminationStatus == 0,
                "ended by \(app.process.terminationReason == .exit ? "exit" : "signal") \(app.process.terminationStatus):\n\(app.output.suffix(3000))"
            )

            let counts = tally.counts.withLock { $0 }
            #expect(
                counts.failures.isEmpty, "requests the server took but did not answer whole:\n\(counts.failures.prefix(20).joined(separator: "\n"))")
            #expect(Set(counts.complete.keys).isSubset(of: [200, 503]), "answers: \(counts.complete)")
            #expect(
                counts.completeAfterSignal >= tickets.count,
                "the heartbeats held in the database at SIGTERM were not all answered: \(counts.completeAfterSignal)")
            // Not a bound the test needs, but what happened, for the record on failure.
            let summary =
                "answers \(counts.complete), \(counts.completeAfterSignal) after SIGTERM, \(counts.closedBeforeAnswer) not taken; exit after \(exitTime)"
            #expect(exitTime < .seconds(10), "\(summary)")
            print("shutdown under load: \(summary)")

            // Nothing left running: no process the app started, no database session it held.
            let survivors = descendants.filter { kill($0, 0) == 0 }
            #expect(survivors.isEmpty, "processes left behind: \(survivors)")
            let sessionsGone = await eventually(timeout: .seconds(5)) {
                let rows = try await pool.query(
                    "SELECT count(*) AS n FROM pg_stat_activity WHERE datname = current_database() AND pid <> pg_backend_pid()"
                )
                return try rows[0].decode(Int.self, "n") == 0
            }
            #expect(sessionsGone, "database sessions outlived the app")
            await pool.close()
        }
    }

    /// Heartbeats on keep-alive connections, one at a time, until the server stops accepting.
    static func drive(port: Int, issueID: String, ticket: String, tally: Tally) async {
        let request =
            "POST /api/issues/\(issueID)/heartbeat HTTP/1.1\r\nHost: localhost\r\nAuthorization: Ticket \(ticket)\r\nContent-Length: 0\r\n\r\n"
        while true {
            guard let connection = try? await RawConnection.open(port: port) else { return }  // refused: the server is gone
            defer { connection.close() }
            while true {
                do {
                    try await connection.send(request)
                } catch {
                    tally.counts.withLock { $0.closedBeforeAnswer += 1 }
                    break
                }
                let outcome = await connection.nextResponse(timeout: .seconds(10))
                let afterSignal = tally.signalled.load(ordering: .relaxed)
                var reconnect = false
                tally.counts.withLock { counts in
                    switch outcome {
                    case .complete(let answer):
                        counts.complete[answer.status, default: 0] += 1
                        if afterSignal { counts.completeAfterSignal += 1 }
                        if answer.body.isEmpty { counts.failures.append("\(answer.status) without a body") }
                        if answer.status == 200,
                            (try? JSONSerialization.jsonObject(with: Data(answer.body))) == nil
                        {
                            counts.failures.append("200 with a body that is not JSON")
                        }
                    case .closedBeforeAnswer:
                        // Sent as the server closed the idle connection: never taken, never started.
                        counts.closedBeforeAnswer += 1
                        reconnect = true
                    case .truncated(let bytes):
                        counts.failures.append("answer cut after \(bytes) bytes")
                        reconnect = true
                    case .noAnswer:
                        counts.failures.append("no answer within 10 s")
                        reconnect = true
                    }
                }
                if reconnect { break }
                if case .complete(let answer) = outcome, answer.headers["connection"]?.lowercased() == "close" { break }
            }
        }
    }

    /// Every process below `pid` (children, their children…), from /proc.
    static func descendants(of pid: Int32) -> [Int32] {
        guard let entries = try? FileManager.default.contentsOfDirectory(atPath: "/proc") else { return [] }
        var parents: [Int32: Int32] = [:]
        for entry in entries {
            guard let child = Int32(entry),
                let stat = try? String(contentsOfFile: "/proc/\(entry)/stat", encoding: .utf8),
                let close = stat.lastIndex(of: ")")
            else { continue }
            let fields = stat[stat.index(after: close)...].split(separator: " ")
            if fields.count > 1, let parent = Int32(fields[1]) { parents[child] = parent }
        }
        var found: [Int32] = []
        var frontier = [pid]
        while let next = frontier.popLast() {
            let children = parents.filter { $0.value == next }.map(\.key)
            found += children
            frontier += children
        }
        return found
    }
}
