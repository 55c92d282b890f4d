import Foundation
import TestSupport
import Testing
import UserDirectory

/// Jira's `/user/bulk` answers in pages (`startAt`, `maxResults`, `isLast`), and may put fewer
/// users on a page than `maxResults` asks. Every page is read, and an account is remembered as
/// missing only once Jira has said the last page was read.
@Suite("Paged bulk user lookups", .timeLimit(.minutes(3)))
struct UserPagingTests {
    static let people = (1...10).map { "person-\($0)" }
    static let ghosts = ["ghost-1", "ghost-2"]

    func withPagedJira(
        pageSize: Int,
        settings: UserEnricher.Settings = .init(),
        clock: any Clock<Duration> = ContinuousClock(),
        _ body: @escaping @Sendable (EnricherHarness) async throws -> Void
    ) async throws {
        try await EnricherHarness.with(settings: settings, clock: clock) { h in
            for person in Self.people { await h.jira.addUser(accountId: person, displayName: "Name of \(person)") }
            await h.jira.setBulkPageSize(pageSize)
            try await TestApp.running(h.enricher) { try await body(h) }
        }
    }

    func count(_ status: String, in statuses: [String: String]) -> Int { statuses.values.filter { $0 == status }.count }

    @Test func everyPageIsReadAndOnlyAccountsOnNoPageAreMissing() async throws {
        try await withPagedJira(pageSize: 3) { h in
            h.request(Self.people + Self.ghosts)
            #expect(await eventually { await h.enricher.isIdle })
            let statuses = try await h.statuses(Self.people + Self.ghosts)
            #expect(Self.people.allSatisfy { statuses[$0] == "found" }, "\(statuses)")
            #expect(Self.ghosts.allSatisfy { statuses[$0] == "missing" }, "\(statuses)")
            let calls = await h.jira.userCalls()
            #expect(calls.map(\.startAt) == [0, 3, 6, 9], "one call a page, each from where the last ended")
            #expect(calls.allSatisfy { $0.status == 200 && $0.path == "/rest/api/3/user/bulk" })
        }
    }

    /// A 429 on the second page: the first page's people are stored, nobody is marked missing,
    /// and the accounts not read yet are asked again exactly Retry-After later (on a test clock).
    @Test func aRateLimitedLaterPageLeavesTheUnreadAccountsPendingNotMissing() async throws {
        let clock = SteppedClock()
        try await withPagedJira(pageSize: 3, clock: clock) { h in
            await h.jira.setBehaviour(.laterPagesFail(status: 429, retryAfter: 7, times: 1), for: "site")
            h.request(Self.people + Self.ghosts)
            #expect(await clock.untilWaits(1))
            await clock.advance(by: .milliseconds(19))
            #expect(await h.jira.userCallsArrived == 0, "no call before the gather delay has passed")
            await clock.advance(by: .milliseconds(1))
            #expect(await eventually { await h.jira.userCalls().map(\.status) == [200, 429] })
            #expect(await clock.untilWaits(2))
            #expect(clock.waits == [.init(.zero, .milliseconds(20)), .init(.milliseconds(20), .seconds(7))], "paused exactly Retry-After")
            // The worker is asleep: what it stored before pausing is all there is.
            let paused = try await h.statuses(Self.people + Self.ghosts)
            #expect(count("missing", in: paused) == 0, "accounts on pages not read are not missing: \(paused)")
            #expect(count("found", in: paused) == 3)

            await clock.advance(by: .seconds(7) - .milliseconds(1))
            #expect(await clock.isWaitedOn)
            #expect(clock.waits.count == 2, "the pause has not ended before Retry-After")
            #expect(await h.jira.userCallsArrived == 2)
            await clock.advance(by: .milliseconds(1))
            // The pause is over; the gather delay comes before the next call, as before any batch.
            #expect(await clock.untilWaits(3))
            #expect(clock.waits.last == .init(.seconds(7) + .milliseconds(20), .milliseconds(20)))
            #expect(await h.jira.userCallsArrived == 2)
            await clock.advance(by: .milliseconds(20))

            #expect(await eventually { await h.enricher.isIdle })
            let statuses = try await h.statuses(Self.people + Self.ghosts)
            #expect(Self.people.allSatisfy { statuses[$0] == "found" }, "\(statuses)")
            #expect(Self.ghosts.allSatisfy { statuses[$0] == "missing" }, "\(statuses)")
            let calls = await h.jira.userCalls()
            #expect(calls.map(\.startAt) == [0, 3, 0, 3, 6], "the rest read from its first page")
            #expect(calls.dropFirst(2).allSatisfy { $0.status == 200 })
            if calls.count >= 3 {
                #expect(Set(calls[2].accountIDs) == Set(Array(Self.people.dropFirst(3)) + Self.ghosts), "only the accounts not read yet")
            }
        }
    }

    /// A 503 on a later page: the same, after the backoff (1 s, the jitter answering its upper bound).
    @Test func aFailingLaterPageLeavesTheUnreadAccountsPendingNotMissing() async throws {
        let clock = SteppedClock()
        var settings = UserEnricher.Settings()
        settings.jitter = { $0.upperBound }
        try await withPagedJira(pageSize: 4, settings: settings, clock: clock) { h in
            await h.jira.setBehaviour(.laterPagesFail(status: 503, times: 1), for: "site")
            h.request(Self.people + Self.ghosts)
            #expect(await clock.runWaits(1))
            #expect(await eventually { await h.jira.userCalls().map(\.status) == [200, 503] })
            #expect(await clock.untilWaits(2))
            #expect(clock.waits.last == .init(.milliseconds(20), .seconds(1)), "backoff from 1 s")
            let failed = try await h.statuses(Self.people + Self.ghosts)
            #expect(count("missing", in: failed) == 0, "\(failed)")
            #expect(count("found", in: failed) == 4)

            await clock.advance(by: .seconds(1) - .milliseconds(1))
            #expect(clock.waits.count == 2, "the backoff has not ended before its time")
            #expect(await h.jira.userCallsArrived == 2)
            #expect(await clock.runWaits(3))
            #expect(await eventually { await h.enricher.isIdle })
            let statuses = try await h.statuses(Self.people + Self.ghosts)
            #expect(Self.people.allSatisfy { statuses[$0] == "found" }, "\(statuses)")
            #expect(Self.ghosts.allSatisfy { statuses[$0] == "missing" }, "\(statuses)")
            #expect(await h.jira.userCalls().map(\.startAt) == [0, 4, 0, 4])
        }
    }

    /// A bounded number of pages per batch: what is left is asked for in the next batch, not marked missing.
    /// A batch cut short counts as a failure: the next one waits out the backoff (the jitter
    /// answering its lower bound: 0.5 s, then 1 s), on a test clock.
    @Test func pagesPerBatchAreBoundedAndTheRestIsAskedNext() async throws {
        let clock = SteppedClock()
        var settings = UserEnricher.Settings()
        settings.maxPagesPerBatch = 4
        settings.jitter = { $0.lowerBound }
        try await withPagedJira(pageSize: 1, settings: settings, clock: clock) { h in
            h.request(Self.people + Self.ghosts)
            #expect(await clock.runWaits(1))
            #expect(await clock.untilWaits(2))
            let first = try await h.statuses(Self.people + Self.ghosts)
            #expect(count("found", in: first) == 4, "\(first)")
            #expect(count("missing", in: first) == 0, "\(first)")
            #expect(await clock.runWaits(6))
            #expect(await eventually { await h.enricher.isIdle })
            // Gather, backoff, gather, backoff twice as long, gather, and the worker's last gather (nothing left).
            let g = Duration.milliseconds(20)
            #expect(
                clock.waits == [
                    .init(.zero, g), .init(g, .milliseconds(500)), .init(g + .milliseconds(500), g), .init(g * 2 + .milliseconds(500), .seconds(1)),
                    .init(g * 2 + .milliseconds(1500), g), .init(g * 3 + .milliseconds(1500), g),
                ])
            let statuses = try await h.statuses(Self.people + Self.ghosts)
            #expect(Self.people.allSatisfy { statuses[$0] == "found" }, "\(statuses)")
            #expect(Self.ghosts.allSatisfy { statuses[$0] == "missing" }, "\(statuses)")
            let calls = await h.jira.userCalls()
            // Three batches: 4 pages (4 people), 4 pages (4 more), then 2 pages, the second saying it is the last.
            #expect(calls.map(\.startAt) == [0, 1, 2, 3, 0, 1, 2, 3, 0, 1], "\(calls.map(\.startAt))")
        }
    }
}
