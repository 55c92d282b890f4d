import ArgumentParser
import Foundation
import NIOCore
import NIOPosix
import Synchronization

/// `notify-latency`: how long after a heartbeat that changes an issue's viewers, sent to one
/// instance, the panels waiting on that issue at another instance are answered. The change
/// travels through PostgreSQL (`NOTIFY` from the heartbeat's statement, heard by the other
/// instance's `LISTEN`), which is what a load balancer spreading one issue's panels over
/// instances depends on.
///
/// For each of `issues` issues, `waits-per-issue` panels wait at the waiting instance (with the
/// issue's tickets), re-issuing their wait as soon as it is answered. Each round, one viewer per
/// issue (the adder) leaves through the heartbeat instance; once every waiting panel has seen the
/// list without them, the adders heartbeat again there, spread over `spread-ms`, which adds them
/// back. A sample is the time from writing an adder's heartbeat to a waiting panel's answer that
/// lists the adder. Prints one JSON line.
struct NotifyLatency: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "notify-latency", abstract: "Time from a heartbeat on one instance to the waits it answers on another.")

    @Option(help: "The instance the panels wait at.") var waitApp: String
    @Option(help: "The instance the heartbeats go to.") var heartbeatApp: String
    @Option(help: "The bench host's tickets file (issueId ticket per line).") var tickets: String
    @Option(help: "Issues with waiting panels.") var issues: Int = 100
    @Option(help: "Panels waiting per issue, at most one per ticket of the issue.") var waitsPerIssue: Int = 10
    @Option(help: "Rounds (each: every adder leaves, then heartbeats back).") var rounds: Int = 10
    @Option(help: "A round's heartbeats are spread over this many milliseconds.") var spreadMs: Int = 500
    @Option(help: "A round ends this many seconds after its heartbeats, answered or not.") var roundTimeoutSeconds: Int = 5

    func run() async throws {
        let waitAddress = try AppAddress(waitApp)
        let heartbeatAddress = try AppAddress(heartbeatApp)
        var byIssue: [String: [String]] = [:]
        for (issue, ticket) in try TicketFile.read(tickets) { byIssue[issue, default: []].append(ticket) }
        let chosen = byIssue.keys.sorted { ($0.count, $0) < ($1.count, $1) }.prefix(issues).map { ($0, byIssue[$0]!) }
        guard !chosen.isEmpty else { throw ValidationError("no tickets in \(tickets)") }
        let loops = MultiThreadedEventLoopGroup(numberOfThreads: 1)

        // Each adder heartbeats once, unmeasured: it is listed, and its answer names its account
        // (`you`), which the waiting panels' answers are then searched for.
        let adders = try await withThrowingTaskGroup(of: Adder.self) { group in
            for (index, (issue, tickets)) in chosen.enumerated() {
                group.addTask {
                    let answer = try await Self.post(heartbeatAddress, "/api/issues/\(issue)/heartbeat?seq=1", ticket: tickets[0], loops: loops)
                    guard answer.status == 200, let account = try PresenceAnswer(answer).viewers?.first(where: { $0.you == true })?.accountId else {
                        throw ValidationError("the adder's heartbeat on issue \(issue) answered \(answer.status)")
                    }
                    return Adder(index: index, issue: issue, ticket: tickets[0], account: account)
                }
            }
            return try await group.reduce(into: []) { $0.append($1) }.sorted { $0.index < $1.index }
        }
        // A panel is a tab, and a tab holds one wait (the server refuses a third with 429): at
        // most one waiting panel per ticket the host handed out for the issue.
        let waitsPerIssue = min(waitsPerIssue, chosen.map(\.1.count).min() ?? 1)
        let state = Locked(LatencyState(issues: adders.count, waitsPerIssue: waitsPerIssue))

        try await withThrowingDiscardingTaskGroup { group in
            for adder in adders {
                for slot in 0..<waitsPerIssue {
                    let tickets = chosen[adder.index].1
                    group.addTask {
                        await Self.waiter(
                            adder: adder, slot: slot, ticket: tickets[slot % tickets.count], address: waitAddress, loops: loops, state: state)
                    }
                }
            }
            let total = adders.count * waitsPerIssue
            try await Self.until(seconds: 60) { state.withLock { $0.seen.allSatisfy { $0 != nil } } }
            let started = ContinuousClock.now
            var staleAfterLeave = 0
            var failedHeartbeats = 0
            for round in 0..<rounds {
                // The tab's own count of its heartbeats and leaves, as a panel sends it
                // (docs/live-presence.md): the first heartbeat above was 1.
                let (leaveSeq, heartbeatSeq) = (2 * round + 2, 2 * round + 3)
                state.withLock { $0.newRound() }
                try await withThrowingDiscardingTaskGroup { leaves in
                    for adder in adders {
                        leaves.addTask {
                            let answer = try await Self.post(
                                heartbeatAddress, "/api/issues/\(adder.issue)/leave?seq=\(leaveSeq)", ticket: adder.ticket, loops: loops)
                            if answer.status != 204 { state.withLock { $0.failedLeaves += 1 } }
                        }
                    }
                }
                // Every waiting panel has the list without its adder, and has waited again.
                if !(try await Self.until(seconds: roundTimeoutSeconds, { state.withLock { $0.seen.allSatisfy { $0 == false } } })) {
                    staleAfterLeave += state.withLock { $0.seen.count(where: { $0 != false }) }
                }
                try await Task.sleep(for: .milliseconds(300))
                failedHeartbeats += try await withThrowingTaskGroup(of: Int.self) { heartbeats in
                    for adder in adders {
                        heartbeats.addTask {
                            try await Task.sleep(for: .milliseconds(spreadMs * adder.index / max(1, adders.count)))
                            let answer = try await Self.post(
                                heartbeatAddress, "/api/issues/\(adder.issue)/heartbeat?seq=\(heartbeatSeq)", ticket: adder.ticket, loops: loops
                            ) {
                                let now = ContinuousClock.now
                                state.withLock { $0.sent[adder.index] = now }
                            }
                            // The heartbeat's own answer: how much of the latency is recording it.
                            let answered = ContinuousClock.now
                            state.withLock { $0.heartbeatAnswers.append((answered - $0.sent[adder.index]!).seconds * 1000) }
                            return answer.status == 200 ? 0 : 1
                        }
                    }
                    return try await heartbeats.reduce(0, +)
                }
                _ = try await Self.until(seconds: roundTimeoutSeconds) { state.withLock { $0.sampled.allSatisfy { $0 } } }
                state.withLock { $0.missed += $0.sampled.count(where: { !$0 }) }
            }
            let elapsed = ContinuousClock.now - started
            let result = state.withLock { $0 }
            let samples = result.samples.sorted()
            let heartbeats = result.heartbeatAnswers.sorted()
            func percentile(_ p: Double, of samples: [Double] = samples) -> Double? {
                samples.isEmpty ? nil : samples[min(samples.count - 1, Int((p / 100 * Double(samples.count - 1)).rounded()))]
            }
            emit(
                jsonLine([
                    "issues": adders.count, "waits": total, "rounds": rounds, "samples": samples.count, "missed": result.missed,
                    "stale_after_leave": staleAfterLeave, "failed_leaves": result.failedLeaves, "failed_heartbeats": failedHeartbeats,
                    "refused": result.refused,
                    "failed": result.failed, "connection_failures": result.connectionFailures,
                    "p50_ms": percentile(50), "p90_ms": percentile(90), "p99_ms": percentile(99), "max_ms": samples.last,
                    "mean_ms": samples.isEmpty ? nil : samples.reduce(0, +) / Double(samples.count),
                    "heartbeat_p50_ms": percentile(50, of: heartbeats), "heartbeat_p99_ms": percentile(99, of: heartbeats),
                    "seconds": elapsed.seconds,
                ]))
            Foundation.exit(0)
        }
    }

    struct Adder: Sendable {
        var index: Int
        var issue: String
        var ticket: String
        var account: String
    }

    /// One waiting panel on the adder's issue, at the waiting instance.
    static func waiter(adder: Adder, slot: Int, ticket: String, address: AppAddress, loops: any EventLoopGroup, state: Locked<LatencyState>) async {
        let id = adder.index * state.withLock { $0.waitsPerIssue } + slot
        var events = WaitingPanel.Events()
        events.answered = { answer, arrived in
            guard answer.changed == true else { return }
            let listed = answer.viewers?.contains { $0.accountId == adder.account } ?? false
            state.withLock { $0.answered(waiter: id, issue: adder.index, listsAdder: listed, at: arrived) }
        }
        events.refused = { state.withLock { $0.refused += 1 } }
        events.failed = { state.withLock { $0.failed += 1 } }
        events.connectionFailed = { state.withLock { $0.connectionFailures += 1 } }
        await WaitingPanel(issue: adder.issue, ticket: ticket, address: address, loops: loops).run(events)
    }

    /// One request on a connection of its own; `sending` runs once it is connected.
    static func post(
        _ address: AppAddress, _ path: String, ticket: String, loops: any EventLoopGroup, sending: @escaping () -> Void = {}
    ) async throws
        -> Answer
    {
        try await PanelConnection.with(address, group: loops) { connection in try await connection.post(path, ticket: ticket, sending: sending) }
    }

    /// Polls `done` until it holds (true) or `seconds` pass (false).
    @discardableResult
    static func until(seconds: Int, _ done: () -> Bool) async throws -> Bool {
        let deadline = ContinuousClock.now + .seconds(seconds)
        while !done() {
            guard ContinuousClock.now < deadline else { return false }
            try await Task.sleep(for: .milliseconds(2))
        }
        return true
    }
}

/// The waiting panels and the round in progress.
struct LatencyState {
    let waitsPerIssue: Int
    /// Per waiting panel: whether its last list named its issue's adder (nil: no answer yet).
    var seen: [Bool?]
    /// Per waiting panel: it has given this round's sample.
    var sampled: [Bool]
    /// Per issue: when this round's heartbeat was written.
    var sent: [ContinuousClock.Instant?]
    var samples: [Double] = []
    /// Milliseconds from writing each adder's heartbeat to its own answer.
    var heartbeatAnswers: [Double] = []
    var missed = 0
    var failedLeaves = 0
    var refused = 0
    var failed = 0
    var connectionFailures = 0

    init(issues: Int, waitsPerIssue: Int) {
        self.waitsPerIssue = waitsPerIssue
        seen = Array(repeating: nil, count: issues * waitsPerIssue)
        sampled = Array(repeating: false, count: issues * waitsPerIssue)
        sent = Array(repeating: nil, count: issues)
    }

    mutating func newRound() {
        sampled = Array(repeating: false, count: sampled.count)
        sent = Array(repeating: nil, count: sent.count)
    }

    mutating func answered(waiter: Int, issue: Int, listsAdder: Bool, at arrived: ContinuousClock.Instant) {
        seen[waiter] = listsAdder
        guard listsAdder, !sampled[waiter], let sent = sent[issue] else { return }
        sampled[waiter] = true
        samples.append((arrived - sent).seconds * 1000)
    }
}
