import Hummingbird
import Libpq
import Logging
import Synchronization

/// Liveness and readiness, for load balancers and orchestrators.
struct HealthController {
    typealias Context = AppRequestContext
    let pool: PostgresPool
    /// `/readyz` answers within this, ready or not: a stalled database must not hold the
    /// orchestrator's probe (nor pile probes up on the pool).
    var budget: Duration = .seconds(1)
    /// Anyone may call `/readyz`: its answer is shared for a second, and callers arriving
    /// while a check runs await that one, so probes cannot become a query per request.
    let probe = ReadinessProbe(freshFor: .seconds(1))

    init(pool: PostgresPool, budget: Duration = .seconds(1)) {
        self.pool = pool
        self.budget = budget
    }

    func addRoutes(to router: Router<Context>) {
        router.get("healthz") { _, _ in "ok\n" }
        router.get("readyz", use: ready)
    }

    /// 200 only when the database answers within the budget.
    @Sendable func ready(_ request: Request, context: Context) async -> Response {
        let pool = pool
        let budget = budget
        // The check's own deadlines (waiting for a connection, the statement) are the budget
        // too, but opening a connection to a stalled server can take longer: the answer does
        // not wait for it.
        let outcome = await probe.outcome {
            await Self.within(budget) {
                try await pool.query("SELECT 1", timeout: budget)
            }.map { _ in () }
        }
        switch outcome {
        case .success:
            return Response(status: .ok, body: .init(byteBuffer: ByteBuffer(string: "ready\n")))
        case .failure(let error):
            context.logger.warning("readiness check failed", metadata: ["error": "\(error)"])
            return Response(
                status: .serviceUnavailable, headers: [.retryAfter: "\(ClientErrors.retryAfterSeconds)"],
                body: .init(byteBuffer: ByteBuffer(string: "database unavailable\n"))
            )
        }
    }

    struct BudgetExceeded: Error, CustomStringConvertible {
        var budget: Duration
        var description: String { "the database did not answer within \(budget)" }
    }

    /// `operation`'s outcome, or `BudgetExceeded` once `budget` has passed; the operation then
    /// finishes (or fails at its own deadline) unobserved.
    static func within<Value: Sendable>(
        _ budget: Duration, _ operation: @escaping @Sendable () async throws -> Value
    ) async -> Result<Value, any Error> {
        await withCheckedContinuation { (continuation: CheckedContinuation<Result<Value, any Error>, Never>) in
            let once = Once()
            let answer: @Sendable (Result<Value, any Error>) -> Bool = { result in
                let first = once.claim()
                if first { continuation.resume(returning: result) }
                return first
            }
            let timer = Task {
                try await Task.sleep(for: budget)
                _ = answer(.failure(BudgetExceeded(budget: budget)))
            }
            Task {
                let result: Result<Value, any Error>
                do {
                    result = .success(try await operation())
                } catch {
                    result = .failure(error)
                }
                if answer(result) { timer.cancel() }
            }
        }
    }

    /// The readiness answer, computed at most once per `freshFor`, one check at a time.
    final class ReadinessProbe: Sendable {
        private struct State {
            var last: (outcome: Result<Void, any Error>, at: ContinuousClock.Instant)?
            var running: Task<Result<Void, any Error>, Never>?
        }
        private let state = Mutex(State())
        private let freshFor: Duration
        private let performed = Mutex(0)

        init(freshFor: Duration) {
            self.freshFor = freshFor
        }

        /// Checks run so far (for tests).
        var checks: Int { performed.withLock { $0 } }

        func outcome(_ check: @escaping @Sendable () async -> Result<Void, any Error>) async -> Result<Void, any Error> {
            let now = ContinuousClock.now
            enum Step {
                case known(Result<Void, any Error>)
                case wait(Task<Result<Void, any Error>, Never>)
            }
            let step: Step = state.withLock { state in
                if let last = state.last, now - last.at < freshFor { return .known(last.outcome) }
                if let running = state.running { return .wait(running) }
                performed.withLock { $0 += 1 }
                // Awaited by this caller and any arriving meanwhile; gone once it answers.
                let task = Task {
                    let outcome = await check()
                    self.state.withLock { state in
                        state.last = (outcome, ContinuousClock.now)
                        state.running = nil
                    }
                    return outcome
                }
                state.running = task
                return .wait(task)
            }
            switch step {
            case .known(let outcome): return outcome
            case .wait(let running): return await running.value
            }
        }
    }

    /// True for the first caller only.
    final class Once: Sendable {
        private let claimed = Mutex(false)

        func claim() -> Bool {
            claimed.withLock { claimed in
                defer { claimed = true }
                return !claimed
            }
        }
    }
}
