import AsyncHTTPClient
import Foundation
import Libpq
import TestSupport
import Testing

/// The Forge app in real browsers: the devhost plays Atlassian's part (installed event, issue
/// pages with the Custom UI of `forge/src` in iframes, the `@forge/bridge` stand-in, FITs and
/// system tokens, the Jira user API), the app verifies the FITs against the devhost's JWKS.
/// All through the real executables, PostgreSQL and headless Chromium.
@Suite("Forge end to end in headless Chromium", .serialized, .timeLimit(.minutes(3)))
struct ForgeBrowserTests {
    static let poll = 1
    static let ttl = 6
    static let uninstalledText = "Who's Looking is no longer installed on this site"

    struct Viewer: Equatable, CustomStringConvertible {
        var accountId: String
        var name: String
        var you: Bool
        var description: String { "\(accountId)\(you ? " (you)" : ""): \(name)" }
    }

    struct Stack {
        let appURL: String
        let devhostURL: String
        let pool: PostgresPool
        let driver: WebDriver

        func issueURL(_ key: String, as person: String, collapsed: Bool = false) -> String {
            "\(devhostURL)/forge/browse/\(key)?as=\(person)" + (collapsed ? "&collapsed=1" : "")
        }

        /// What the panel lists, read inside its iframe: account ids, names as text, `you`.
        func listed(_ browser: BrowserSession) async throws -> [Viewer] {
            let value = try await browser.inFrame("#forge-panel") {
                try await browser.execute(
                    """
                    return Array.from(document.querySelectorAll('ul.viewers li.viewer')).map(function (item) {
                      var name = item.querySelector('.name');
                      return { accountId: item.getAttribute('data-account-id') || '', name: name ? name.textContent : '',
                               you: item.classList.contains('you') ? 'yes' : 'no' };
                    });
                    """)
            }
            return (value as? [[String: String]] ?? []).map {
                Viewer(accountId: $0["accountId"] ?? "", name: $0["name"] ?? "", you: $0["you"] == "yes")
            }
        }

        /// Waits for `condition`; when it never holds, records `failure` with what `observed` shows then.
        @discardableResult
        func expectEventually(
            timeout: Duration = .seconds(10), _ failure: String, observed: () async -> String,
            sourceLocation: SourceLocation = #_sourceLocation, _ condition: () async throws -> Bool
        ) async -> Bool {
            if await eventually(timeout: timeout, condition) { return true }
            let seen = await observed()
            Issue.record("\(failure): \(seen)", sourceLocation: sourceLocation)
            return false
        }

        func accounts(_ browser: BrowserSession) async -> [String] {
            (try? await listed(browser).map(\.accountId)) ?? []
        }

        /// The panel's `#status` text.
        func status(_ browser: BrowserSession) async -> String {
            let text = try? await browser.inFrame("#forge-panel") {
                try await browser.execute("var s = document.getElementById('status'); return s ? s.textContent : '';") as? String
            }
            return text.flatMap { $0 } ?? ""
        }

        func rows(_ account: String) async throws -> Int {
            try await pool.query("SELECT count(*) AS n FROM viewers WHERE NOT gone AND account_id = \(account)")[0].decode(Int.self, "n")
        }

        func allRows() async throws -> Int {
            try await pool.query("SELECT count(*) AS n FROM viewers WHERE NOT gone")[0].decode(Int.self, "n")
        }

        /// POSTs to the devhost (a form button's request); answers the status, redirects not followed.
        func post(_ path: String) async throws -> UInt {
            var request = HTTPClientRequest(url: devhostURL + path)
            request.method = .POST
            let client = HTTPClient(configuration: .init(redirectConfiguration: .disallow))
            do {
                let response = try await client.execute(request, timeout: .seconds(30))
                _ = try await response.body.collect(upTo: 1 << 20)
                try await client.shutdown()
                return response.status.code
            } catch {
                try? await client.shutdown()
                throw error
            }
        }
    }

    func withStack(_ body: (Stack) async throws -> Void) async throws {
        let environment = ["POLL_INTERVAL_SECONDS": String(Self.poll), "VIEWER_TTL_SECONDS": String(Self.ttl), "SWEEP_INTERVAL_SECONDS": "1"]
        try await BrowserStack.with(forge: true, environment: environment, name: "forge") { stack in
            try await TestDatabase.withPool(conninfo: stack.conninfo) { pool in
                try await body(Stack(appURL: stack.appURLs[0], devhostURL: stack.devhostURL, pool: pool, driver: stack.driver))
            }
        }
    }

    @Test func twoPeopleSeeEachOtherWithNames() async throws {
        try await withStack { stack in
            let alice = try await stack.driver.newSession()
            let bob = try await stack.driver.newSession()

            try await alice.navigate(stack.issueURL("DEMO-1", as: "alice"))
            try await bob.navigate(stack.issueURL("DEMO-1", as: "bob"))
            // Names come from the devhost's user API (system token), a heartbeat or two after the first render.
            let aliceExpected = [
                Viewer(accountId: "alice", name: "Alice Andersson", you: true), Viewer(accountId: "bob", name: "Bob Brown", you: false),
            ]
            let aliceSeesBoth = await eventually { try await stack.listed(alice) == aliceExpected }
            let aliceSees = (try? await stack.listed(alice)) ?? []
            #expect(aliceSeesBoth, "Alice sees \(aliceSees)")
            let bobExpected = [
                Viewer(accountId: "bob", name: "Bob Brown", you: true), Viewer(accountId: "alice", name: "Alice Andersson", you: false),
            ]
            let bobSeesBoth = await eventually { try await stack.listed(bob) == bobExpected }
            let bobSees = (try? await stack.listed(bob)) ?? []
            #expect(bobSeesBoth, "Bob sees \(bobSees)")
            #expect(await stack.status(alice) == "")

            // What users see, for a person to look at.
            try await alice.enterFrame(nil)
            let output = SharedMaterial.projectRoot.appendingPathComponent("test-output")
            try FileManager.default.createDirectory(at: output, withIntermediateDirectories: true)
            let png = try await alice.screenshot()
            #expect(png.starts(with: [0x89, 0x50, 0x4E, 0x47]))
            try png.write(to: output.appendingPathComponent("forge-two-viewers.png"))
        }
    }

    @Test func aCollapsedPanelStillCountsItsViewer() async throws {
        try await withStack { stack in
            let alice = try await stack.driver.newSession()
            let bob = try await stack.driver.newSession()

            try await alice.navigate(stack.issueURL("DEMO-1", as: "alice"))
            #expect(await eventually { await stack.accounts(alice) == ["alice"] }, "Alice does not see herself")

            try await bob.navigate(stack.issueURL("DEMO-1", as: "bob", collapsed: true))
            let opened = ContinuousClock.now
            // Collapsed: no panel frame at all, only the background script's.
            let frames =
                try await bob.execute("return [document.querySelectorAll('#forge-panel').length, document.querySelectorAll('#forge-bg').length]")
                as? [Int]
            #expect(frames == [0, 1])
            // The background script heartbeats at once; Alice's next heartbeat (one poll) lists him.
            await stack.expectEventually(
                timeout: .seconds(Double(Self.poll) + 3), "Bob (collapsed) not listed",
                observed: {
                    "after \(ContinuousClock.now - opened) Alice sees \(await stack.accounts(alice))"
                }
            ) { await stack.accounts(alice) == ["alice", "bob"] }
            #expect(try await stack.rows("bob") == 1)
            let stillNoPanel = try await bob.execute("return document.querySelectorAll('#forge-panel').length") as? Int
            #expect(stillNoPanel == 0)

            // Expanding it shows the panel with both, fed by the background script.
            try await bob.execute("document.getElementById('forge-panel-toggle').click()")
            await stack.expectEventually("Bob's expanded panel", observed: { "\(await stack.accounts(bob))" }) {
                await stack.accounts(bob) == ["bob", "alice"]
            }
            // One tab, one row: the panel did not start a heartbeat loop of its own.
            try await Task.sleep(for: .seconds(Double(Self.poll) * 2))
            #expect(try await stack.rows("bob") == 1)
        }
    }

    @Test func leavingRemovesTheViewerAtOnce() async throws {
        try await withStack { stack in
            let alice = try await stack.driver.newSession()
            let bob = try await stack.driver.newSession()

            try await alice.navigate(stack.issueURL("DEMO-1", as: "alice"))
            try await bob.navigate(stack.issueURL("DEMO-1", as: "bob"))
            await stack.expectEventually("Alice does not see both", observed: { "\(await stack.accounts(alice))" }) {
                await stack.accounts(alice) == ["alice", "bob"]
            }
            #expect(try await stack.rows("bob") >= 1)

            // Bob closes the page: the leave call (pagehide, keepalive) removes him well before the TTL.
            try await bob.navigate("about:blank")
            let gone = Double(2 * Self.poll) + 1.5
            #expect(gone < Double(Self.ttl))
            #expect(await eventually(timeout: .seconds(gone)) { try await stack.rows("bob") == 0 }, "leave not received: Bob's row is still there")
            await stack.expectEventually(timeout: .seconds(gone), "Bob still listed", observed: { "\(await stack.accounts(alice))" }) {
                await stack.accounts(alice) == ["alice"]
            }
        }
    }

    /// The panel follows Jira's theme (`view.theme.enable()`): dark text on light, light on dark.
    @Test func thePanelFollowsJirasLightAndDarkTheme() async throws {
        try await withStack { stack in
            let alice = try await stack.driver.newSession()
            func colours() async throws -> (mode: String, background: Double, text: Double) {
                let value = try await alice.inFrame("#forge-panel") {
                    try await alice.execute(
                        """
                        var name = document.querySelector('li.viewer .name');
                        return [document.documentElement.getAttribute('data-color-mode') || '',
                                getComputedStyle(document.body).backgroundColor, name ? getComputedStyle(name).color : ''];
                        """) as? [String] ?? []
                }
                // Brightness of "rgb(r, g, b)" as the sum of its channels (0 black, 765 white).
                func brightness(_ css: String) -> Double {
                    css.split(whereSeparator: { !"0123456789.".contains($0) }).prefix(3).compactMap { Double($0) }.reduce(0, +)
                }
                return (value.first ?? "", brightness(value.count > 1 ? value[1] : ""), brightness(value.count > 2 ? value[2] : ""))
            }
            for (theme, dark) in [("", false), ("&theme=dark", true)] {
                try await alice.navigate(stack.issueURL("DEMO-1", as: "alice") + theme)
                await stack.expectEventually("Alice is listed", observed: { "\(await stack.accounts(alice))" }) {
                    await stack.accounts(alice) == ["alice"]
                }
                let seen = try await colours()
                #expect(seen.mode == (dark ? "dark" : "light"), "\(seen)")
                #expect(dark ? seen.background < 200 : seen.background > 600, "background \(seen)")
                #expect(dark ? seen.text > seen.background + 200 : seen.text < seen.background - 200, "text on background \(seen)")
            }
        }
    }

    @Test func aNameMadeOfMarkupShowsAsText() async throws {
        try await withStack { stack in
            let alice = try await stack.driver.newSession()
            let mallory = try await stack.driver.newSession()
            let markup = #"<img src=x onerror=alert(1)>"#

            try await mallory.navigate(stack.issueURL("DEMO-2", as: "mallory"))
            try await alice.navigate(stack.issueURL("DEMO-2", as: "alice"))
            let expected = [Viewer(accountId: "alice", name: "Alice Andersson", you: true), Viewer(accountId: "mallory", name: markup, you: false)]
            let shown = await eventually { try await stack.listed(alice) == expected }
            let listed = (try? await stack.listed(alice)) ?? []
            #expect(shown, "Alice sees \(listed)")
            await stack.expectEventually("Mallory's own panel", observed: { "\((try? await stack.listed(mallory)) ?? [])" }) {
                try await stack.listed(mallory).first == Viewer(accountId: "mallory", name: markup, you: true)
            }

            for browser in [alice, mallory] {
                try await browser.enterFrame("#forge-panel")
                // Every image is an avatar of a list item; the name became no element.
                let images =
                    try await browser.execute(
                        """
                        var all = document.querySelectorAll('img');
                        return [all.length, document.querySelectorAll('li.viewer > img.avatar').length,
                                document.querySelectorAll('img[src="x"], [onerror]').length,
                                document.querySelectorAll('.name *').length];
                        """) as? [Int]
                try await browser.enterFrame(nil)
                #expect(images?[0] == images?[1], "images other than avatars: \(images ?? [])")
                #expect(images?[2] == 0 && images?[3] == 0, "the name became an element: \(images ?? [])")
            }
        }
    }

    @Test func uninstallErasesViewersAndThePanelSaysSo() async throws {
        try await withStack { stack in
            let alice = try await stack.driver.newSession()
            let bob = try await stack.driver.newSession()

            try await alice.navigate(stack.issueURL("DEMO-1", as: "alice"))
            try await bob.navigate(stack.issueURL("DEMO-1", as: "bob", collapsed: true))
            await stack.expectEventually("Alice does not see both", observed: { "\(await stack.accounts(alice))" }) {
                await stack.accounts(alice) == ["alice", "bob"]
            }
            #expect(try await stack.allRows() >= 2)

            // Uninstall: Forge's preUninstall event; the app erases the installation's viewers.
            let answer = try await stack.post("/forge/uninstall-app")
            #expect(answer == 303)
            #expect(await eventually(timeout: .seconds(2)) { try await stack.allRows() == 0 }, "viewer rows left after the preUninstall event")
            await stack.expectEventually("no uninstalled status", observed: { "Alice's panel says '\(await stack.status(alice))'" }) {
                await stack.status(alice) == Self.uninstalledText
            }
            #expect(await stack.accounts(alice).isEmpty)
            // The open pages keep calling until they learn it; nothing is written again.
            try await Task.sleep(for: .seconds(Double(2 * Self.poll)))
            #expect(try await stack.allRows() == 0)

            let index = try await ChildService.get(stack.devhostURL + "/")
            #expect(index.contains("Forge — <b>uninstalled</b>"))
            let page = try await ChildService.get(stack.issueURL("DEMO-1", as: "alice"))
            #expect(page.contains("not installed on this site") && !page.contains(#"id="forge-panel-toggle""#))
        }
    }

    @Test func reinstallIsANewInstallationOnTheSameSite() async throws {
        try await withStack { stack in
            let alice = try await stack.driver.newSession()
            #expect(try await stack.post("/forge/uninstall-app") == 303)
            #expect(try await stack.post("/forge/reinstall-app") == 303)
            #expect(try await ChildService.get(stack.devhostURL + "/").contains("Forge — installed"))

            try await alice.navigate(stack.issueURL("OPS-7", as: "alice"))
            await stack.expectEventually(
                "not listed after a reinstall",
                observed: {
                    "Alice sees \((try? await stack.listed(alice)) ?? []), status '\(await stack.status(alice))'"
                }
            ) { try await stack.listed(alice) == [Viewer(accountId: "alice", name: "Alice Andersson", you: true)] }
            #expect(try await stack.rows("alice") == 1)
        }
    }
}
