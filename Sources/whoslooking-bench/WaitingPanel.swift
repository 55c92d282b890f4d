import NIOCore

/// One open panel's wait loop, as the panel runs it (docs/live-presence.md), on an HTTP/1.1
/// connection of its own: a first wait with no version (answered at once with the issue's
/// list), then a wait with the version it got, re-issued as soon as it is answered. After a 503
/// it waits `Retry-After`, after any other answer 5 s, and a dropped connection is opened again
/// a second later. Runs until its task is cancelled.
struct WaitingPanel {
    /// What the panel tells its command; each runs on the panel's task.
    struct Events {
        /// A wait with a version is being held (`true`), or has ended, answered or not (`false`).
        var holding: (Bool) -> Void = { _ in }
        /// A 200 answer, and when it arrived.
        var answered: (PresenceAnswer, ContinuousClock.Instant) -> Void = { _, _ in }
        /// A 503: too many waits, change feed down, or shutting down.
        var refused: () -> Void = {}
        /// Any other answer.
        var failed: () -> Void = {}
        var connectionFailed: () -> Void = {}
    }

    let issue: String
    let ticket: String
    let address: AppAddress
    let loops: any EventLoopGroup

    func run(_ events: Events) async {
        while !Task.isCancelled {
            do {
                try await PanelConnection.with(address, group: loops) { connection in
                    var version = ""
                    while !Task.isCancelled {
                        // A wait with a version is held until the issue changes; the first one is not.
                        let held = !version.isEmpty
                        if held { events.holding(true) }
                        let answer: Answer
                        do {
                            answer = try await connection.post("/api/issues/\(issue)/wait?version=\(version)", ticket: ticket)
                            if held { events.holding(false) }
                        } catch {
                            if held { events.holding(false) }
                            throw error
                        }
                        let arrived = ContinuousClock.now
                        switch answer.status {
                        case 200:
                            let parsed = try PresenceAnswer(answer)
                            version = parsed.version ?? version
                            events.answered(parsed, arrived)
                        case 503:
                            events.refused()
                            try await Task.sleep(for: .seconds(answer.retryAfterSeconds))
                        default:
                            events.failed()
                            try await Task.sleep(for: .seconds(5))
                        }
                    }
                }
            } catch {
                if Task.isCancelled { return }
                events.connectionFailed()
                try? await Task.sleep(for: .seconds(1))
            }
        }
    }
}
