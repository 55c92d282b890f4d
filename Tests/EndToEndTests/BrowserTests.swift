import Foundation
import Libpq
import TestSupport
import Testing

/// Two people in two real browsers on a local Jira issue page: descriptor, signed install,
/// iframe JWT, heartbeats, PostgreSQL, expiry and names, all through the real executables.
@Suite("End to end in headless Chromium", .serialized, .timeLimit(.minutes(3)))
struct BrowserTests {
    static let poll = 1
    static let ttl = 6

    struct Stack {
        let appURL: String
        let devhostURL: String
        let pool: PostgresPool
        let driver: WebDriver

        func issueURL(_ key: String, as person: String) -> String { "\(devhostURL)/browse/\(key)?as=\(person)" }

        /// What the panel lists, read inside its iframe: names as text, and avatar sources.
        func listed(_ browser: BrowserSession) async throws -> [[String: String]] {
            try await browser.inFrame("#app-panel") {
                try await browser.execute(
                    """
                    return Array.from(document.querySelectorAll('.viewers .viewer')).map(function (item) {
                      return { name: item.querySelector('.name').textContent, avatar: item.querySelector('img').getAttribute('src'),
                               you: item.classList.contains('you') ? 'yes' : 'no' };
                    });
                    """) as? [[String: String]] ?? []
            }
        }

        func names(_ browser: BrowserSession) async -> [String] {
            (try? await listed(browser).compactMap { $0["name"] }) ?? []
        }

        func lastSeen(_ account: String) async throws -> Date? {
            try await pool.query("SELECT max(last_seen) AS seen FROM viewers WHERE NOT gone AND account_id = \(account)")[0].decode(
                Date?.self, "seen")
        }

        /// Whether all of the account's tabs are recorded as away (false without any).
        func away(_ account: String) async throws -> Bool {
            try await pool.query(
                "SELECT coalesce(bool_and(away_since IS NOT NULL), false) AS away FROM viewers WHERE NOT gone AND account_id = \(account)")[0]
                .decode(Bool.self, "away")
        }

        func rows(_ account: String) async throws -> Int {
            try await pool.query("SELECT count(*) AS n FROM viewers WHERE NOT gone AND account_id = \(account)")[0].decode(Int.self, "n")
        }
    }

    func withStack(_ body: (Stack) async throws -> Void) async throws {
        let environment = ["POLL_INTERVAL_SECONDS": String(Self.poll), "VIEWER_TTL_SECONDS": String(Self.ttl), "SWEEP_INTERVAL_SECONDS": "1"]
        try await BrowserStack.with(forge: false, environment: environment, name: "connect") { stack in
            try await TestDatabase.withPool(conninfo: stack.conninfo) { pool in
                try await body(Stack(appURL: stack.appURLs[0], devhostURL: stack.devhostURL, pool: pool, driver: stack.driver))
            }
        }
    }

    @Test func twoPeopleSeeEachOtherAndLeaving() async throws {
        try await withStack { stack in
            let alice = try await stack.driver.newSession()
            let bob = try await stack.driver.newSession()

            try await alice.navigate(stack.issueURL("DEMO-1", as: "alice"))
            try await bob.navigate(stack.issueURL("DEMO-1", as: "bob"))
            // Names come from the stand-in's user API, a heartbeat or two after the first render.
            let aliceSeesBoth = await eventually { await stack.names(alice) == ["Alice Andersson", "Bob Brown"] }
            let aliceSees = await stack.names(alice)
            #expect(aliceSeesBoth, "Alice sees \(aliceSees)")
            let bobSeesBoth = await eventually { await stack.names(bob) == ["Bob Brown", "Alice Andersson"] }
            let bobSees = await stack.names(bob)
            #expect(bobSeesBoth, "Bob sees \(bobSees)")
            let aliceList = try await stack.listed(alice)
            #expect(aliceList.first?["you"] == "yes")
            #expect(aliceList.allSatisfy { $0["avatar"]?.contains("/avatars/") == true }, "avatars from Jira: \(aliceList)")

            // The panel resized its iframe to its content (it starts 40 px high).
            try await alice.enterFrame(nil)
            let frameHeight = try await alice.execute("return document.getElementById('app-panel').getBoundingClientRect().height") as? Double ?? 0
            try await alice.enterFrame("#app-panel")
            let contentHeight =
                try await alice.execute("var r = document.querySelector('.ac-content').getBoundingClientRect(); return r.top + r.height;") as? Double
                ?? 0
            try await alice.enterFrame(nil)
            #expect(frameHeight > 40)
            #expect(abs(frameHeight - contentHeight) <= 8, "iframe \(frameHeight) px for content \(contentHeight) px")

            // What users see, for a person to look at.
            let output = SharedMaterial.projectRoot.appendingPathComponent("test-output")
            try FileManager.default.createDirectory(at: output, withIntermediateDirectories: true)
            let png = try await alice.screenshot()
            try png.write(to: output.appendingPathComponent("two-viewers.png"))

            // Bob's tab hidden: one heartbeat saying he is away (half a second after hiding, see
            // docs/live-presence.md), then none until the away poll interval (60 s, the default)
            // is up; one at once when visible again.
            let bobTab = try await bob.currentWindow()
            let otherTab = try await bob.openNewTab()
            _ = otherTab
            #expect(await eventually(timeout: .seconds(5)) { try await stack.away("bob") }, "no away heartbeat when the page was hidden")
            let hiddenSince = try #require(try await stack.lastSeen("bob"))
            try await Task.sleep(for: .seconds(Double(3 * Self.poll)))
            let afterHidden = try await stack.lastSeen("bob")
            #expect(
                afterHidden == hiddenSince,
                "heartbeats after the away one while the page was hidden: \(hiddenSince.timeIntervalSince1970) -> \(afterHidden?.timeIntervalSince1970 ?? 0)"
            )
            try await bob.switchTo(window: bobTab)
            #expect(
                await eventually(timeout: .seconds(3)) { (try await stack.lastSeen("bob") ?? .distantPast) > hiddenSince },
                "no heartbeat on becoming visible")
            #expect(await eventually { await stack.names(alice) == ["Alice Andersson", "Bob Brown"] })

            // Bob closes the page: the leave signal removes him at once, before any TTL.
            try await bob.navigate("about:blank")
            // 2 s, well inside TTL − poll (5 s): the sweeper cannot be what removed him.
            #expect(await eventually(timeout: .seconds(2)) { try await stack.rows("bob") == 0 }, "leave signal not received")
            #expect(await eventually(timeout: .seconds(Double(Self.ttl))) { await stack.names(alice) == ["Alice Andersson"] })

            // With the leave signal blocked, he goes within the TTL instead.
            try await bob.navigate(stack.issueURL("DEMO-1", as: "bob"))
            #expect(await eventually { await stack.names(alice) == ["Alice Andersson", "Bob Brown"] })
            // As when the browser dies or the network drops: the goodbye never leaves the page.
            try await bob.enterFrame("#app-panel")
            try await bob.execute(
                "navigator.sendBeacon = function () { return true; }; window.fetch = function () { return new Promise(function () {}); };")
            try await bob.enterFrame(nil)
            try await bob.navigate("about:blank")
            try await Task.sleep(for: .milliseconds(300))
            #expect(try await stack.rows("bob") == 1, "the leave request should have been blocked")
            #expect(
                await eventually(timeout: .seconds(Double(Self.ttl + 3))) { await stack.names(alice) == ["Alice Andersson"] },
                "Bob still listed after the TTL")
            #expect(await eventually(timeout: .seconds(5)) { try await stack.rows("bob") == 0 }, "the sweeper removed Bob's row")
        }
    }

    /// The database goes away under two open panels (its backends ended, new connections
    /// refused): heartbeats answer 503, both panels say "Reconnecting…", and once the database
    /// is back both people are listed again within a poll interval or two, without a restart.
    @Test func theDatabaseGoingAwayShowsReconnectingThenBothReturn() async throws {
        try await withStack { stack in
            let alice = try await stack.driver.newSession()
            let bob = try await stack.driver.newSession()
            func status(_ browser: BrowserSession) async -> String {
                let text = try? await browser.inFrame("#app-panel") {
                    try await browser.execute("var s = document.querySelector('.status'); return s && !s.hidden ? s.textContent : '';") as? String
                }
                return text.flatMap { $0 } ?? ""
            }
            try await alice.navigate(stack.issueURL("DEMO-1", as: "alice"))
            try await bob.navigate(stack.issueURL("DEMO-1", as: "bob"))
            #expect(await eventually { await stack.names(alice) == ["Alice Andersson", "Bob Brown"] })

            let database = try await stack.pool.query("SELECT current_database() AS name")[0].decode(String.self, "name")
            let admin = PostgresPool(configuration: .init(conninfo: TestDatabase.serverConninfo, maxConnections: 1), logger: TestDatabase.logger)
            // Our own scratch database's name, quoted as an identifier (ALTER DATABASE takes no parameters).
            let identifier = "\"" + database.replacingOccurrences(of: "\"", with: "\"\"") + "\""
            do {
                try await admin.query(PostgresQuery(unsafeSQL: "ALTER DATABASE \(identifier) ALLOW_CONNECTIONS false"))
                try await admin.query(
                    "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = \(database) AND pid <> pg_backend_pid()")
                let aliceReconnecting = await eventually(timeout: .seconds(15)) { await status(alice) == "Reconnecting…" }
                let bobReconnecting = await eventually(timeout: .seconds(15)) { await status(bob) == "Reconnecting…" }
                let said = "\(await status(alice)) / \(await status(bob))"
                #expect(aliceReconnecting && bobReconnecting, "panels say: \(said)")
                let readiness = try await ChildService.get(stack.appURL + "/readyz")
                #expect(readiness == "database unavailable\n", "/readyz while the database is away: \(readiness)")
            } catch {
                Issue.record("could not take the database away: \(error)")
            }
            try await admin.query(PostgresQuery(unsafeSQL: "ALTER DATABASE \(identifier) ALLOW_CONNECTIONS true"))
            await admin.close()
            let back = await eventually(timeout: .seconds(Double(4 * Self.poll) + 10)) {
                let names = await stack.names(alice)
                let statuses = [await status(alice), await status(bob)]
                return names == ["Alice Andersson", "Bob Brown"] && statuses == ["", ""]
            }
            let seen = "\(await stack.names(alice)), \(await status(alice)) / \(await status(bob))"
            #expect(back, "after the database returned: \(seen)")
        }
    }

    /// The server-rendered panel (the first render, before any script runs) with a name whose
    /// quote is fused with a zero-width joiner: it stays inside the alt attribute.
    @Test func aFusedQuoteInANameCannotAddAttributes() async throws {
        try await withStack { stack in
            let zed = try await stack.driver.newSession()
            let alice = try await stack.driver.newSession()
            let name = "Zed\"\u{200D} data-injected=yes x=\""
            try await zed.navigate(stack.issueURL("DEMO-2", as: "zed"))
            let named = await eventually { await stack.names(zed) == [name] }
            let zedSees = await stack.names(zed)
            #expect(named, "listed: \(zedSees)")
            // Alice's panel is rendered by the server with Zed's name already known.
            try await alice.navigate(stack.issueURL("DEMO-2", as: "alice"))
            let listed = await eventually { await stack.names(alice).contains(name) }
            let aliceSees = await stack.names(alice)
            #expect(listed, "listed: \(aliceSees)")
            try await alice.enterFrame("#app-panel")
            let injected = try await alice.execute("return document.querySelectorAll('[data-injected]').length") as? Int
            #expect(injected == 0, "the name added an attribute")
            let alts =
                try await alice.execute("return Array.from(document.querySelectorAll('img.avatar')).map(function (i) { return i.alt; })") as? [String]
            #expect(alts?.contains(name) == true, "alt texts: \(alts ?? [])")
            try await alice.enterFrame(nil)
        }
    }

    @Test func aNameMadeOfMarkupShowsAsText() async throws {
        try await withStack { stack in
            let mallory = try await stack.driver.newSession()
            try await mallory.navigate(stack.issueURL("DEMO-2", as: "mallory"))
            let markup = #"<img src=x onerror=alert(1)>"#
            let shown = await eventually { await stack.names(mallory) == [markup] }
            let listed = await stack.names(mallory)
            #expect(shown, "listed: \(listed)")
            try await mallory.enterFrame("#app-panel")
            let injected = try await mallory.execute("return document.querySelectorAll('img[src=\"x\"]').length") as? Int
            #expect(injected == 0, "the name became an element")

            // A name links to the profile through AP.navigator.go: the host page navigates.
            try await mallory.execute("document.querySelector('.viewer a.profile').click()")
            try await mallory.enterFrame(nil)
            let navigated = await eventually(timeout: .seconds(5)) {
                (try await mallory.execute("return location.pathname") as? String) == "/people/mallory"
            }
            #expect(navigated)
            let heading = try await mallory.execute("return document.querySelector('.profile-name').textContent") as? String
            #expect(heading == markup)
        }
    }
}
