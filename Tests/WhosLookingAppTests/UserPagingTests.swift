import Foundation
import TestSupport
import Testing
import UserDirectory

/// Jira's `/user/bulk` answers in pages (`startAt`, `maxResults`, `isLast`), and may put fewer
/// users on a page than `maxResults` asks. Every page is read, and an account is remembered as
/// missing only once Jira has said the last page was read.
@Suite("Paged bulk user lookups")
struct UserPagingTests {
    static let people = (1...10).map { "person-\($0)" }
    static let ghosts = ["ghost-1", "ghost-2"]

    func withPagedJira(
        pageSize: Int,
        settings: UserEnricher.Settings = .init(),
        _ body: @escaping @Sendable (EnricherHarness) async throws -> Void
    ) async throws {
        try await EnricherHarness.with(settings: settings) { h in
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
    /// and the accounts not read yet are asked again after Retry-After.
    @Test func aRateLimitedLaterPageLeavesTheUnreadAccountsPendingNotMissing() async throws {
        try await withPagedJira(pageSize: 3) { h in
            await h.jira.setBehaviour(.laterPagesFail(status: 429, retryAfter: 3, times: 1), for: "site")
            h.request(Self.people + Self.ghosts)
            #expect(await eventually { try await count("found", in: h.statuses(Self.people)) == 3 })
            #expect(await h.jira.userCalls().map(\.status) == [200, 429])
            try await Task.sleep(for: .milliseconds(300))  // well within Retry-After
            let paused = try await h.statuses(Self.people + Self.ghosts)
            #expect(count("missing", in: paused) == 0, "accounts on pages not read are not missing: \(paused)")
            #expect(count("found", in: paused) == 3)

            #expect(await eventually { await h.enricher.isIdle })
            let statuses = try await h.statuses(Self.people + Self.ghosts)
            #expect(Self.people.allSatisfy { statuses[$0] == "found" }, "\(statuses)")
            #expect(Self.ghosts.allSatisfy { statuses[$0] == "missing" }, "\(statuses)")
            let calls = await h.jira.userCalls()
            #expect(calls.count >= 3)
            if calls.count >= 3 {
                #expect(calls[2].at.timeIntervalSince(calls[1].at) >= 2.95, "the rest asked after Retry-After")
                #expect(Set(calls[2].accountIDs) == Set(Array(Self.people.dropFirst(3)) + Self.ghosts), "only the accounts not read yet")
            }
        }
    }

    @Test func aFailingLaterPageLeavesTheUnreadAccountsPendingNotMissing() async throws {
        var settings = UserEnricher.Settings()
        settings.backoffBase = .seconds(4)  // the retry comes 2 to 4 s after the failure
        try await withPagedJira(pageSize: 4, settings: settings) { h in
            await h.jira.setBehaviour(.laterPagesFail(status: 503, times: 1), for: "site")
            h.request(Self.people + Self.ghosts)
            #expect(await eventually { await h.jira.userCalls().map(\.status) == [200, 503] })
            try await Task.sleep(for: .milliseconds(200))
            let failed = try await h.statuses(Self.people + Self.ghosts)
            #expect(count("missing", in: failed) == 0, "\(failed)")
            #expect(count("found", in: failed) == 4)

            #expect(await eventually { await h.enricher.isIdle })
            let statuses = try await h.statuses(Self.people + Self.ghosts)
            #expect(Self.people.allSatisfy { statuses[$0] == "found" }, "\(statuses)")
            #expect(Self.ghosts.allSatisfy { statuses[$0] == "missing" }, "\(statuses)")
        }
    }

    /// A bounded number of pages per batch: what is left is asked for in the next batch, not marked missing.
    @Test func pagesPerBatchAreBoundedAndTheRestIsAskedNext() async throws {
        var settings = UserEnricher.Settings()
        settings.maxPagesPerBatch = 4
        try await withPagedJira(pageSize: 1, settings: settings) { h in
            h.request(Self.people + Self.ghosts)
            #expect(await eventually { try await count("found", in: h.statuses(Self.people)) == 4 })
            let first = try await h.statuses(Self.people + Self.ghosts)
            #expect(count("missing", in: first) == 0, "\(first)")
            #expect(await eventually { await h.enricher.isIdle })
            let statuses = try await h.statuses(Self.people + Self.ghosts)
            #expect(Self.people.allSatisfy { statuses[$0] == "found" }, "\(statuses)")
            #expect(Self.ghosts.allSatisfy { statuses[$0] == "missing" }, "\(statuses)")
            let calls = await h.jira.userCalls()
            // Three batches: 4 pages (4 people), 4 pages (4 more), then 2 pages, the second saying it is the last.
            #expect(calls.map(\.startAt) == [0, 1, 2, 3, 0, 1, 2, 3, 0, 1], "\(calls.map(\.startAt))")
        }
    }
}
