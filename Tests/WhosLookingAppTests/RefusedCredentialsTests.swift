import Forge
import Foundation
import TestSupport
import Testing
import UserDirectory

/// A 401 or 403 from Jira is about the app's credentials, not about the accounts asked for:
/// nobody is remembered as missing (which would blank their names for `USER_MISSING_TTL_SECONDS`),
/// the accounts stay pending, and the site is asked again with a backoff short enough that names
/// come back within a minute of Jira answering again. Only a 404, or a 200 without the account,
/// means missing. On a test clock, every wait asserted.
@Suite("Jira refusing the app's credentials", .timeLimit(.minutes(3)))
struct RefusedCredentialsTests {
    static let accounts = ["alice", "bob", "ghost"]
    static let bulk = "/rest/api/3/user/bulk"
    static let single = "/rest/api/3/user"

    /// Runs a `SteppedClock`'s waits one after the other, each to its end once it has begun.
    struct WaitRunner {
        let clock: SteppedClock
        private(set) var ran = 0

        /// Lets the next wait run out; false when none began within a few seconds (real time).
        mutating func next() async -> Bool {
            guard await clock.untilWaits(ran + 1) else { return false }
            await clock.advance(to: clock.waits[ran].end)
            ran += 1
            return true
        }

        /// Until the worker sleeps again or has nothing left: what it stored before is all there is.
        func settled(_ enricher: UserEnricher) async -> Bool {
            await eventually {
                if await enricher.isIdle { return true }
                return clock.waits.count > ran ? await clock.isWaitedOn : false
            }
        }
    }

    func withRefusingJira(
        _ behaviour: JiraStandIn.Behaviour, systemTokens: ForgeSystemTokens? = nil,
        _ body: @escaping @Sendable (EnricherHarness, SteppedClock) async throws -> Void
    ) async throws {
        let clock = SteppedClock()
        var settings = UserEnricher.Settings()
        settings.jitter = { $0.upperBound }  // every backoff as long as it can be
        try await EnricherHarness.with(settings: settings, clock: clock, systemTokens: systemTokens) { h in
            await h.jira.addUser(accountId: "alice", displayName: "Alice")
            await h.jira.addUser(accountId: "bob", displayName: "Bob")
            await h.jira.setBehaviour(behaviour, for: "site")
            try await TestApp.running(h.enricher) { try await body(h, clock) }
        }
    }

    /// Refused for a while (ten attempts, long enough for the backoff to reach its cap), then
    /// Jira answers again with `recovered`: asserts what was stored meanwhile, and how soon the
    /// names came back.
    func refuseThenAnswer(_ h: EnricherHarness, _ clock: SteppedClock, recovered: JiraStandIn.Behaviour, attemptCalls: Int) async throws {
        var waits = WaitRunner(clock: clock)
        h.request(Self.accounts)
        while await h.jira.userCalls().count < 10 * attemptCalls {
            guard await waits.next(), await waits.settled(h.enricher) else { break }
        }
        let stored = try await h.statuses(Self.accounts)
        #expect(stored.isEmpty, "a refusal says nothing about the accounts, yet stored: \(stored)")
        #expect(await h.jira.userCalls().count == 10 * attemptCalls, "the accounts stayed pending and were asked again")
        let backoffs = clock.waits.map(\.length).filter { $0 > .milliseconds(20) }
        #expect(backoffs.max() == .seconds(30), "the backoff grew to its cap for refusals, 30 s: \(backoffs)")

        await h.jira.setBehaviour(recovered, for: "site")
        let answering = clock.elapsed
        while try await h.status("alice") != "found", clock.elapsed - answering <= .seconds(60), await waits.next() {
            #expect(await waits.settled(h.enricher))
        }
        let namedAfter = clock.elapsed - answering
        #expect(namedAfter <= .seconds(31), "names came back \(namedAfter) after Jira answered again")
        let statuses = try await h.statuses(Self.accounts)
        #expect(statuses == ["alice": "found", "bob": "found", "ghost": "missing"], "only an account Jira answered without is missing")
        #expect(try await h.status("alice") == "found")
    }

    /// Bulk refused: an auth failure, not a reason to ask one by one.
    @Test(arguments: [401, 403])
    func aRefusedBulkLookupMarksNobodyMissingAndNamesReturnWithinAMinute(status: Int) async throws {
        try await withRefusingJira(.refusing(status: status)) { h, clock in
            try await refuseThenAnswer(h, clock, recovered: .normal, attemptCalls: 1)
            let calls = await h.jira.userCalls()
            #expect(calls.prefix(10).allSatisfy { $0.path == Self.bulk && $0.status == status }, "no one-by-one fallback: \(calls.map(\.path))")
            #expect(calls.dropFirst(10).map(\.status) == [200])
        }
    }

    /// Bulk not available (404), the one-by-one lookups refused: the first refusal ends the
    /// batch (the others would be refused too), nobody missing.
    @Test(arguments: [401, 403])
    func aRefusedSingleLookupMarksNobodyMissingAndNamesReturnWithinAMinute(status: Int) async throws {
        try await withRefusingJira(.refusing(status: status, noBulk: true)) { h, clock in
            try await refuseThenAnswer(h, clock, recovered: .noBulk, attemptCalls: 2)
            let calls = await h.jira.userCalls()
            let attempt = calls.prefix(2).map { "\($0.path) \($0.status)" }
            #expect(attempt == ["\(Self.bulk) 404", "\(Self.single) \(status)"], "one refusal is enough to stop asking")
            #expect(calls.dropFirst(20).map(\.status) == [404, 200, 200, 404], "then bulk refused, and one by one again")
        }
    }

    /// Forge: the system token Jira refused is forgotten, so the token the next heartbeat brings
    /// is used, even one that is not newer by `exp`; the names come in with it.
    @Test func aRefusedSystemTokenIsForgottenAndTheNextHeartbeatsTokenIsUsed() async throws {
        let tokens = ForgeSystemTokens()
        let refused = FakeForge.systemToken(expiresIn: 3 * 3600)
        let next = FakeForge.systemToken(expiresIn: 2 * 3600)
        try await withRefusingJira(.refusing(status: 401), systemTokens: tokens) { h, clock in
            await h.jira.addForgeSite("site", systemToken: refused)
            tokens.remember(refused, installationID: h.site.clientKey)
            var waits = WaitRunner(clock: clock)
            h.request(Self.accounts)
            #expect(await waits.next())
            #expect(await waits.settled(h.enricher))
            #expect(await h.jira.userCalls().map(\.status) == [401])
            #expect(tokens.token(installationID: h.site.clientKey) == nil, "the refused token is forgotten")
            #expect(try await h.statuses(Self.accounts).isEmpty)

            // Jira takes the token the next heartbeat brings.
            await h.jira.addForgeSite("site", systemToken: next)
            await h.jira.setBehaviour(.normal, for: "site")
            tokens.remember(next, installationID: h.site.clientKey)
            #expect(tokens.token(installationID: h.site.clientKey) == next)
            let answering = clock.elapsed
            while try await h.status("alice") != "found", clock.elapsed - answering <= .seconds(60), await waits.next() {
                #expect(await waits.settled(h.enricher))
            }
            #expect(clock.elapsed - answering <= .seconds(2), "after the first backoff (1 s) and the gather delay")
            #expect(try await h.statuses(Self.accounts) == ["alice": "found", "bob": "found", "ghost": "missing"])
            #expect(await h.jira.userCalls().map(\.status) == [401, 200])
        }
    }
}
