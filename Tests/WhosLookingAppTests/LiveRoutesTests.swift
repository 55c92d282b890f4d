import AsyncHTTPClient
import Foundation
import HTTPTypes
import Hummingbird
import HummingbirdTesting
import Libpq
import Presence
import TestSupport
import Testing
@testable import WhosLookingApp

/// The live routes of both front doors (docs/live-presence.md): heartbeats with a state, waits
/// answered by a change or their hold time, refusals, and shutdown with waits held.
@Suite("Live routes", .timeLimit(.minutes(3)))
struct LiveRoutesTests {
    struct Viewer: Decodable {
        var accountId: String
        var you: Bool
        var state: String
        var since: String
    }

    struct Answer: Decodable {
        var viewers: [Viewer]?
        var version: String?
        var ticket: String?
        var pollSeconds: Int?
        var awayPollSeconds: Int?
        var changed: Bool?
        var anonymous: Bool?
    }

    static func decode(_ buffer: ByteBuffer) throws -> Answer { try JSONDecoder().decode(Answer.self, from: Data(buffer: buffer)) }

    /// The routes over a migrated database, with the wait room running.
    static func withLiveApp(
        environment: [String: String] = [:], _ body: @escaping @Sendable (TestApp, any TestClientProtocol) async throws -> Void
    ) async throws {
        try await TestApp.with(environment: environment) { testApp, app in
            try await testApp.tenants.install(PresenceTests.tenant)
            try await TestApp.running(testApp.parts.waitRoom) {
                let listening = await eventually { testApp.parts.waitRoom.isListening }
                try #require(listening, "the change feed never listened")
                try await app.test(.router) { client in try await body(testApp, client) }
            }
        }
    }

    static func panelTicket(_ client: some TestClientProtocol, _ account: String) async throws -> String {
        let html = try await client.execute(uri: try PresenceTests.panelURL(account), method: .get) { String(buffer: $0.body) }
        return try #require(TestApp.ticket(in: html))
    }

    static func heartbeat(_ client: some TestClientProtocol, _ ticket: String, query: String = "") async throws -> (HTTPResponse.Status, Answer?) {
        try await client.execute(uri: "/api/issues/10001/heartbeat\(query)", method: .post, headers: [.authorization: "Ticket \(ticket)"]) {
            ($0.status, $0.status == .ok ? try decode($0.body) : nil)
        }
    }

    static func wait(
        _ client: some TestClientProtocol, _ ticket: String?, issueID: String = "10001", version: String
    ) async throws -> (
        HTTPResponse.Status, Answer?, Duration
    ) {
        let started = ContinuousClock.now
        var headers: HTTPFields = [:]
        if let ticket { headers[.authorization] = "Ticket \(ticket)" }
        let query = version.addingPercentEncoding(withAllowedCharacters: .alphanumerics) ?? version
        return try await client.execute(uri: "/api/issues/\(issueID)/wait?version=\(query)", method: .post, headers: headers) {
            ($0.status, $0.status == .ok ? try decode($0.body) : nil, ContinuousClock.now - started)
        }
    }

    @Test func connectHeartbeatsCarryStateSinceAndVersionAndWaitsHearArrivals() async throws {
        try await Self.withLiveApp { testApp, client in
            let alice = try await Self.panelTicket(client, "account-alice")
            let (status, alone) = try await Self.heartbeat(client, alice)
            #expect(status == .ok)
            let answer = try #require(alone)
            #expect(answer.awayPollSeconds == 60 && answer.pollSeconds == 10)
            #expect(answer.viewers?.map(\.state) == ["active"])
            let since = try #require(answer.viewers?.first?.since)
            #expect(since.wholeMatch(of: /\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ/) != nil, "\(since)")
            let version = try #require(answer.version)

            // Bob arrives while Alice's panel waits: her wait answers with him, at once.
            async let waited = Self.wait(client, alice, version: version)
            try await Task.sleep(for: .milliseconds(300))
            _ = try await Self.panelTicket(client, "account-bob")
            let (waitStatus, change, took) = try await waited
            #expect(waitStatus == .ok)
            #expect(change?.changed == true)
            #expect(change?.viewers?.map(\.accountId) == ["account-alice", "account-bob"])
            #expect(change?.viewers?.map(\.you) == [true, false])
            #expect(change?.version != version && change?.ticket == nil)
            #expect(took < LivePresenceTests.promptly, "answered after \(took)")
            #expect(try await testApp.pool.query("SELECT count(*) AS n FROM viewers")[0].decode(Int.self, "n") == 2, "a wait records nothing")
        }
    }

    @Test func anAwayHeartbeatIsSeenAsAwayAndAnUnchangedWaitEndsAtItsHoldTime() async throws {
        try await Self.withLiveApp(environment: ["WAIT_SECONDS": "1"]) { _, client in
            let alice = try await Self.panelTicket(client, "account-alice")
            let bob = try await Self.panelTicket(client, "account-bob")
            let (_, before) = try await Self.heartbeat(client, alice)
            let (status, away) = try await Self.heartbeat(client, bob, query: "?state=away")
            #expect(status == .ok)
            #expect(away?.viewers?.first { $0.accountId == "account-bob" }?.state == "away")
            #expect(away?.version != before?.version)
            let (_, after) = try await Self.heartbeat(client, alice)
            let version = try #require(after?.version)
            #expect(after?.viewers?.first { $0.accountId == "account-bob" }?.state == "away")

            let (waitStatus, unchanged, took) = try await Self.wait(client, alice, version: version)
            #expect(waitStatus == .ok)
            #expect(unchanged?.changed == false && unchanged?.viewers == nil && unchanged?.version == version)
            #expect(took >= .milliseconds(900) && took < .seconds(4), "held \(took)")
        }
    }

    @Test func badWaitsAndStatesAreRefusedAndChangeNothing() async throws {
        try await Self.withLiveApp { testApp, client in
            let alice = try await Self.panelTicket(client, "account-alice")
            #expect(try await Self.wait(client, nil, version: "").0 == .unauthorized)
            #expect(try await Self.wait(client, "forged", version: "").0 == .unauthorized)
            #expect(try await Self.wait(client, alice, issueID: "10002", version: "").0 == .forbidden)
            for bad in [String(repeating: "a", count: 65), "a b", "<x>", "é"] {
                #expect(try await Self.wait(client, alice, version: bad).0 == .badRequest, "\(bad)")
            }
            for query in ["?state=hidden", "?state=AWAY", "?state=", "?seq=0", "?seq=-1", "?seq=1.5", "?seq=x", "?seq=9007199254740992"] {
                #expect(try await Self.heartbeat(client, alice, query: query).0 == .badRequest, "\(query)")
            }
            let rows = try await testApp.pool.query("SELECT count(*) AS n, count(away_since) AS away FROM viewers")[0]
            #expect(try rows.decode(Int.self, "n") == 1 && rows.decode(Int.self, "away") == 0)
            // A panel with no version yet is answered at once with the list.
            let (status, first, took) = try await Self.wait(client, alice, version: "")
            #expect(status == .ok && first?.changed == true && first?.viewers?.count == 1)
            #expect(took < LivePresenceTests.promptly)
        }
    }

    static func forgeCall(
        _ client: some TestClientProtocol, _ path: String, token: String, userToken: String? = nil, body: String
    ) async throws -> (
        HTTPResponse.Status, Answer?, String
    ) {
        var headers: HTTPFields = [.authorization: "Bearer \(token)", .contentType: "application/json"]
        if let userToken { headers[HTTPField.Name("x-forge-oauth-user")!] = userToken }
        return try await client.execute(uri: path, method: .post, headers: headers, body: ByteBuffer(string: body)) {
            ($0.status, $0.status == .ok ? try decode($0.body) : nil, String(buffer: $0.body))
        }
    }

    @Test func forgeWaitsHearArrivalsAndRefuseWhatHeartbeatsRefuse() async throws {
        let forge = try FakeForge()
        let jira = JiraStandIn()
        try await jira.serve { jiraURL in
            try await forge.withJWKS { jwksURL in
                let environment = ["FORGE_APP_ID": FakeForge.appID, "FORGE_JWKS_URL": jwksURL]
                try await TestApp.with(environment: environment) { testApp, app in
                    try await TestApp.running(testApp.parts.waitRoom) {
                        let listening = await eventually { testApp.parts.waitRoom.isListening }
                        try #require(listening)
                        try await app.test(.router) { client in
                            func call(_ path: String, _ claims: [String: Any], body: String) async throws -> (HTTPResponse.Status, Answer?, String) {
                                try await Self.forgeCall(
                                    client, path, token: try await forge.token(claims),
                                    userToken: (claims["principal"] as? String).map(JiraStandIn.userToken), body: body)
                            }
                            let apiBase = "\(jiraURL)/forge-site"
                            let alice = FakeForge.panelClaims(principal: "alice", apiBaseURL: apiBase)
                            let bob = FakeForge.panelClaims(principal: "bob", apiBaseURL: apiBase)
                            let (status, beat, _) = try await call("/forge/heartbeat", alice, body: #"{"tabId":"a-1","state":"active"}"#)
                            #expect(status == .ok && beat?.awayPollSeconds == 60)
                            let version = try #require(beat?.version)

                            let waitToken = try await forge.token(alice)
                            async let waited = Self.forgeCall(
                                client, "/forge/wait", token: waitToken, userToken: JiraStandIn.userToken("alice"),
                                body: #"{"tabId":"a-1","version":"\#(version)"}"#)
                            try await Task.sleep(for: .milliseconds(300))
                            _ = try await call("/forge/heartbeat", bob, body: #"{"tabId":"b-1","state":"away"}"#)
                            let (waitStatus, change, _) = try await waited
                            #expect(waitStatus == .ok && change?.changed == true)
                            #expect(change?.viewers?.map(\.accountId) == ["alice", "bob"])
                            #expect(change?.viewers?.map(\.state) == ["active", "away"])

                            for (body, expected) in [
                                (#"{"tabId":"a-1","version":"not valid"}"#, HTTPResponse.Status.badRequest),
                                (#"{"tabId":"a-1","version":7}"#, .badRequest),
                                (#"{"version":"x"}"#, .badRequest),
                            ] {
                                let (refused, _, text) = try await call("/forge/wait", alice, body: body)
                                #expect(refused == expected, "\(body)")
                                #expect(text.hasPrefix(#"{"error":"#), "Forge answers are JSON: \(text)")
                            }
                            for body in [
                                #"{"tabId":"a-1","state":"gone"}"#, #"{"tabId":"a-1","seq":true}"#, #"{"tabId":"a-1","seq":"3"}"#,
                                #"{"tabId":"a-1","seq":0}"#,
                            ] {
                                let (refused, _, _) = try await call("/forge/heartbeat", alice, body: body)
                                #expect(refused == .badRequest, "\(body)")
                            }
                            let (first, _, _) = try await call("/forge/heartbeat", alice, body: #"{"tabId":"a-1","seq":1}"#)
                            #expect(first == .ok, "seq 1 is a number, not true")
                            // A counted leave overtaken by a heartbeat the tab sent before it.
                            _ = try await call("/forge/heartbeat", bob, body: #"{"tabId":"b-1","seq":7}"#)
                            let (left, _, _) = try await call("/forge/leave", bob, body: #"{"tabId":"b-1","seq":9}"#)
                            #expect(left == .ok)
                            let (_, late, _) = try await call("/forge/heartbeat", bob, body: #"{"tabId":"b-1","seq":8}"#)
                            #expect(late?.viewers?.map(\.accountId) == ["alice"])
                            var anonymous = alice
                            anonymous["principal"] = nil
                            let (anonymousStatus, anonymousAnswer, _) = try await call(
                                "/forge/wait", anonymous, body: #"{"tabId":"x-1","version":""}"#)
                            #expect(anonymousStatus == .ok && anonymousAnswer?.anonymous == true && anonymousAnswer?.changed == false)

                            // Uninstalled while a panel waits: the wait says so, as a heartbeat would.
                            let (_, current, _) = try await call("/forge/heartbeat", alice, body: #"{"tabId":"a-1"}"#)
                            let heldBody = #"{"tabId":"a-1","version":"\#(try #require(current?.version))"}"#
                            let heldToken = try await forge.token(alice)
                            async let held = Self.forgeCall(
                                client, "/forge/wait", token: heldToken, userToken: JiraStandIn.userToken("alice"), body: heldBody)
                            try await Task.sleep(for: .milliseconds(300))
                            // A panel's token cannot uninstall the site (it once could); preUninstall's can.
                            let preUninstall =
                                #"{"context":{"cloudId":"4a3b2c1d-0000-4000-8000-00000000c10d","moduleKey":"wl-pre-uninstall"},"contextToken":"t"}"#
                            let (byPanel, _, _) = try await call("/forge/uninstall", alice, body: preUninstall)
                            #expect(byPanel == .forbidden)
                            let (uninstalled, _, _) = try await call(
                                "/forge/uninstall", FakeForge.triggerClaims(endpoint: "wl-uninstall", apiBaseURL: apiBase), body: preUninstall)
                            #expect(uninstalled == .ok)
                            let (heldStatus, _, heldText) = try await held
                            #expect(heldStatus == .forbidden && heldText.contains("app uninstalled"), "\(heldStatus) \(heldText)")
                        }
                    }
                }
            }
        }
    }

    @Test func sigtermAnswersEveryHeldWaitAtOnceAndExitsZero() async throws {
        try await RunningApp.with(environment: ["WAIT_SECONDS": "20"]) { app in
            let ticket = try await app.panelTicket("alice")
            let version = try await Self.versionOnceListening(app, ticket: ticket)
            // Five panels (a tab holds at most two waits: `WaitRoom.Settings.maxPerTab`).
            var tickets = [ticket]
            for _ in 1..<5 { tickets.append(try await app.panelTicket("alice")) }
            let started = ContinuousClock.now
            let answers = try await withThrowingTaskGroup(of: DatabaseFaultTests.Answer.self) { group in
                for ticket in tickets {
                    group.addTask {
                        var request = HTTPClientRequest(url: app.base + "/api/issues/10001/wait?version=\(version)")
                        request.method = .POST
                        request.headers.add(name: "Authorization", value: "Ticket \(ticket)")
                        return try await app.send(request)
                    }
                }
                try await Task.sleep(for: .seconds(1))  // all five are held by now
                app.service.stop()
                return try await group.reduce(into: []) { $0.append($1) }
            }
            #expect(answers.map(\.status) == [503, 503, 503, 503, 503], "\(answers.map(\.body))")
            #expect(answers.allSatisfy { $0.retryAfter == "1" })
            #expect(ContinuousClock.now - started < .seconds(5), "held waits delayed the shutdown")
            await Subprocess.waitForExit(app.service.process)
            #expect(app.service.process.terminationStatus == 0, "\(app.service.output.suffix(2000))")
            // Every trust anchor is https here: no relaxation is in force, and none is logged.
            #expect(!app.service.output.contains("trust relaxed"), "\(app.service.output.prefix(2000))")
        }
    }

    /// A tab closed mid-wait frees its wait at once: Hummingbird does not cancel the handler of a
    /// closed connection, so the wait used to stay held (and counted) until its hold time.
    @Test func aWaitWhoseClientWentAwayEndsAtOnce() async throws {
        try await RunningApp.with(environment: ["WAIT_SECONDS": "20"]) { app in
            let ticket = try await app.panelTicket("alice")
            let version = try await Self.versionOnceListening(app, ticket: ticket)
            var connections: [RawConnection] = []
            for index in 0..<3 {
                // One tab holds at most two waits (`WaitRoom.Settings.maxPerTab`): three tabs of Alice's.
                let ticket = index == 0 ? ticket : try await app.panelTicket("alice")
                let connection = try await RawConnection.open(port: app.port)
                try await connection.send(
                    "POST /api/issues/10001/wait?version=\(version) HTTP/1.1\r\nHost: localhost\r\nAuthorization: Ticket \(ticket)\r\n"
                        + "Content-Length: 0\r\n\r\n")
                connections.append(connection)
            }
            let held = await eventually { try await Self.metric("panels_waiting", app) == 3 }
            try #require(held, "the three waits were never held")
            for connection in connections { connection.close() }
            let started = ContinuousClock.now
            let released = await eventually(timeout: .seconds(5)) { try await Self.metric("panels_waiting", app) == 0 }
            #expect(released, "waits of closed connections still held after \(ContinuousClock.now - started)")
            #expect(try await Self.metric("panel_waits_abandoned_total", app) == 3)
            // A wait on a connection that stays open is not abandoned: it ends at its hold time.
            let kept = try await RawConnection.open(port: app.port)
            try await kept.send(
                "POST /api/issues/10001/wait?version=\(version) HTTP/1.1\r\nHost: localhost\r\nAuthorization: Ticket \(ticket)\r\n"
                    + "Content-Length: 0\r\n\r\n")
            let keptHeld = await eventually { try await Self.metric("panels_waiting", app) == 1 }
            #expect(keptHeld)
            try await Task.sleep(for: .seconds(1))
            #expect(try await Self.metric("panels_waiting", app) == 1)
            #expect(try await Self.metric("panel_waits_abandoned_total", app) == 3)
            kept.close()
        }
    }

    /// The issue's version from a heartbeat, once the change feed listens (a wait without a
    /// version is then answered at once, 200).
    static func versionOnceListening(_ app: RunningApp, ticket: String) async throws -> String {
        let version = try #require(
            try JSONDecoder().decode(Answer.self, from: Data(try await app.heartbeat(ticket).body.utf8)).version
        )
        let listening = await eventually {
            var probe = HTTPClientRequest(url: app.base + "/api/issues/10001/wait?version=")
            probe.method = .POST
            probe.headers.add(name: "Authorization", value: "Ticket \(ticket)")
            return try await app.send(probe).status == 200
        }
        try #require(listening)
        return version
    }

    /// A figure of the running app's `/metrics` (nil when absent).
    static func metric(_ name: String, _ app: RunningApp) async throws -> Int? {
        let text = try await app.get("/metrics").body
        let line = text.split(separator: "\n").first { $0.hasPrefix(name + " ") || $0.hasPrefix(name + "{") }
        return line.flatMap { $0.split(separator: " ").last }.flatMap { Double($0) }.map { Int($0) }
    }
}
