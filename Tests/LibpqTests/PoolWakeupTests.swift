import Libpq
import TestSupport
import Testing

/// A caller that decides to wait while the pool is full, and registers only after a release
/// that found no waiter yet, must still get the connection released meanwhile.
@Suite("Pool wake-ups", .timeLimit(.minutes(3)))
struct PoolWakeupTests {
    @Test func aReleaseJustBeforeAWaiterRegistersIsNotLost() async throws {
        try await TestDatabase.withScratchDatabase { conninfo in
            let pool = PostgresPool(
                configuration: .init(conninfo: conninfo, maxConnections: 1, acquireTimeout: .seconds(10)), logger: TestDatabase.logger)
            // Many short leases on one connection: the window between "nothing free, wait" and
            // registering as a waiter is small, so it takes many tries to land a release in it.
            try await withThrowingTaskGroup(of: Void.self) { group in
                for _ in 0..<8 {
                    group.addTask {
                        for _ in 0..<2000 {
                            try await pool.withConnection { _ in await Task.yield() }
                        }
                    }
                }
                try await group.waitForAll()
            }
            await pool.close()
        }
    }
}
