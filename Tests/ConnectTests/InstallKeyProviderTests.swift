import Connect
import Foundation
import Logging
import TestSupport
import Testing

/// Install keys are fetched for a kid from an unverified token header, so anyone who can post
/// to `/installed` chooses it: fetches are bounded by the kid's form, a bounded memory of
/// unknown kids, a limit per window for all kids, and one fetch at a time per kid. Each test
/// counts what a real local key server was asked.
@Suite("Install key fetching", .timeLimit(.minutes(3)))
struct InstallKeyProviderTests {
    static let logger: Logger = {
        var logger = Logger(label: "install-keys-test")
        logger.logLevel = .error
        return logger
    }()

    func withProvider(
        limits: InstallKeyProvider.Limits = .init(),
        delay: Duration = .zero,
        _ body: @escaping @Sendable (InstallKeyProvider, FakeAtlassian, FakeAtlassian.KeyFetches) async throws -> Void
    ) async throws {
        let atlassian = try FakeAtlassian()
        let fetches = FakeAtlassian.KeyFetches()
        try await atlassian.withKeyServer(delay: delay, fetches: fetches) { keysURL in
            try await body(InstallKeyProvider(baseURL: keysURL, limits: limits, logger: Self.logger), atlassian, fetches)
        }
    }

    @Test func thePublishedKeyIsFetchedOnceAndKept() async throws {
        try await withProvider { provider, atlassian, fetches in
            for _ in 0..<3 { _ = try await provider.publicKey(kid: atlassian.published.kid) }
            #expect(await fetches.kids == [atlassian.published.kid])
        }
    }

    @Test func kidsThatAreNotPlainIdentifiersAreRefusedWithoutAFetch() async throws {
        let hostile = [
            "", ".", "..", "../admin", "a/../b", "a/b", "/etc/passwd", ".hidden", "-leading-dash", "a b", "a%2fb", "a?b=c", "a#b",
            "é", "kid\u{0}", "kid\n", "k\u{200D}id", String(repeating: "a", count: 129),
        ]
        try await withProvider { provider, _, fetches in
            for kid in hostile {
                await #expect(throws: TokenRejection.unknownKeyID, "kid \(kid.debugDescription)") { try await provider.publicKey(kid: kid) }
            }
            let asked = await fetches.kids
            #expect(asked == [], "the key server was asked for \(asked)")
        }
        #expect(InstallKeyProvider.isPlausibleKeyID("0e50fccb-239d-4991-a5db-dc850ba3f236"))
        #expect(InstallKeyProvider.isPlausibleKeyID("jira.connect_key-2"))
        #expect(InstallKeyProvider.isPlausibleKeyID(String(repeating: "a", count: 128)))
    }

    /// A flood of made-up kids costs at most the window's allowance of fetches; keys already
    /// held keep working meanwhile, and a new kid beyond the allowance is "unavailable" (503), not "unknown".
    @Test func fetchesPerMinuteAreLimitedForAllKidsTogether() async throws {
        try await withProvider { provider, atlassian, fetches in
            _ = try await provider.publicKey(kid: atlassian.published.kid)
            var unavailable = 0
            for index in 0..<100 {
                do {
                    _ = try await provider.publicKey(kid: "made-up-\(index)")
                } catch let rejection as TokenRejection {
                    if rejection == .keyServerUnavailable { unavailable += 1 }
                }
            }
            let limit = InstallKeyProvider.Limits().maxFetchesPerWindow
            let fetched = await fetches.count
            #expect(fetched == limit, "\(fetched) fetches for 101 kids in a minute")
            #expect(unavailable == 100 - (limit - 1))
            _ = try await provider.publicKey(kid: atlassian.published.kid)
            #expect(await fetches.count == limit)
        }
    }

    @Test func concurrentRequestsForOneKidShareOneFetch() async throws {
        try await withProvider(delay: .milliseconds(300)) { provider, atlassian, fetches in
            try await withThrowingTaskGroup(of: Void.self) { group in
                for _ in 0..<20 {
                    group.addTask { _ = try await provider.publicKey(kid: atlassian.published.kid) }
                    group.addTask { await #expect(throws: TokenRejection.unknownKeyID) { try await provider.publicKey(kid: "never-published") } }
                }
                try await group.waitForAll()
            }
            #expect(await fetches.kids.sorted() == ["never-published", atlassian.published.kid].sorted())
        }
    }

    @Test func anUnknownKidIsAskedAgainOnlyAfterTheMissTTL() async throws {
        var limits = InstallKeyProvider.Limits()
        limits.missTTL = .milliseconds(400)
        try await withProvider(limits: limits) { provider, _, fetches in
            for _ in 0..<5 { await #expect(throws: TokenRejection.unknownKeyID) { try await provider.publicKey(kid: "rotated-out") } }
            #expect(await fetches.count == 1)
            try await Task.sleep(for: .milliseconds(500))
            await #expect(throws: TokenRejection.unknownKeyID) { try await provider.publicKey(kid: "rotated-out") }
            #expect(await fetches.count == 2)
        }
    }

    @Test func theMemoryOfUnknownKidsIsBoundedAndForgetsTheOldestFirst() async throws {
        var limits = InstallKeyProvider.Limits()
        limits.maxMisses = 10
        limits.maxFetchesPerWindow = 1000
        try await withProvider(limits: limits) { provider, _, fetches in
            for index in 0..<25 { await #expect(throws: TokenRejection.unknownKeyID) { try await provider.publicKey(kid: "unknown-\(index)") } }
            #expect(await provider.rememberedMisses == 10)
            #expect(await fetches.count == 25)
            // The newest ten are remembered: not asked again.
            for index in 15..<25 { await #expect(throws: TokenRejection.unknownKeyID) { try await provider.publicKey(kid: "unknown-\(index)") } }
            #expect(await fetches.count == 25)
            // The oldest was forgotten: asked again.
            await #expect(throws: TokenRejection.unknownKeyID) { try await provider.publicKey(kid: "unknown-0") }
            #expect(await fetches.count == 26)
            #expect(await provider.rememberedMisses == 10)
        }
    }
}
