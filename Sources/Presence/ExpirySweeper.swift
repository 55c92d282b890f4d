import Logging
import Metrics
import ServiceLifecycle

/// Deletes expired viewers every interval. A database outage is logged and retried on the next
/// tick; graceful shutdown ends the loop.
public struct ExpirySweeper: Service {
    let repository: PresenceRepository
    let interval: Duration
    let logger: Logger

    public init(repository: PresenceRepository, interval: Duration, logger: Logger) {
        self.repository = repository
        self.interval = interval
        self.logger = logger
    }

    public func run() async throws {
        await cancelWhenGracefulShutdown {
            while !Task.isCancelled {
                do {
                    try await Task.sleep(for: interval)
                } catch {
                    return
                }
                await sweepOnce()
            }
        }
    }

    func sweepOnce() async {
        do {
            switch try await repository.sweep() {
            case let count?:
                Counter(label: "sweeps_total").increment()
                Counter(label: "viewers_swept_total").increment(by: count)
                logger.log(level: count > 0 ? .info : .debug, "swept expired viewers", metadata: ["rows": "\(count)"])
            case nil:
                logger.debug("another instance is sweeping")
            }
        } catch {
            Counter(label: "sweep_failures_total").increment()
            logger.warning("sweep failed; retrying next tick", metadata: ["error": "\(error)"])
        }
    }
}
