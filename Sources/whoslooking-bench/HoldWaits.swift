import ArgumentParser
import Dispatch
import Foundation
import NIOCore
import NIOPosix
import Synchronization

/// `hold-waits`: N open panels waiting at one app instance, each on an HTTP/1.1 connection of
/// its own, as visible panels do (`WaitingPanel`).
///
/// Prints `HELD {…}` once every panel holds a wait (with the app's resident memory before and
/// after), then keeps them until SIGTERM or SIGINT and prints `DONE {…}` (answers, refusals,
/// failures, peak resident memory meanwhile) before exiting.
struct HoldWaits: AsyncParsableCommand {
    static let configuration = CommandConfiguration(commandName: "hold-waits", abstract: "Hold N panels' waits at an app instance until stopped.")

    @Option(help: "The app instance's URL.") var app: String
    @Option(help: "The bench host's tickets file (issueId ticket per line).") var tickets: String
    @Option(help: "Panels waiting at once.") var count: Int = 10_000
    @Option(help: "The app's process id, to read its resident memory.") var appPid: Int?
    @Option(help: "Panels opening (connecting, first answer) at once.") var opening: Int = 256
    @Option(help: "Seconds to let the app settle once all waits are held, before reading its memory.") var settleSeconds: Int = 3
    @Option(help: "Give up waiting for all panels to hold a wait after this many seconds.") var openTimeoutSeconds: Int = 180

    func run() async throws {
        let address = try AppAddress(app)
        let lines = try TicketFile.read(tickets)
        guard !lines.isEmpty else { throw ValidationError("no tickets in \(tickets)") }
        // Tickets are spread over every prepared issue: panel i takes line i, so N panels cover
        // min(N, lines) tickets and, with the bench's four viewers per issue, every issue.
        let stop = StopSignal()
        let stats = Locked(WaitCounts())
        // One event-loop thread: the panels are idle nearly all the time, and the app shares the cores.
        let loops = MultiThreadedEventLoopGroup(numberOfThreads: 1)
        let pid = appPid
        let rssBefore = pid.flatMap { ResidentMemory.megabytes(pid: $0) }
        let started = ContinuousClock.now

        await withDiscardingTaskGroup { group in
            group.addTask {
                while !Task.isCancelled {
                    if let pid, let rss = ResidentMemory.megabytes(pid: pid) { stats.withLock { $0.peakRSS = max($0.peakRSS, rss) } }
                    try? await Task.sleep(for: .milliseconds(500))
                }
            }
            for index in 0..<count {
                // A bounded number of panels opening at once, as the app's accept queue is.
                while stats.withLock({ $0.opening }) >= opening { try? await Task.sleep(for: .milliseconds(5)) }
                stats.withLock { $0.opening += 1 }
                let (issue, ticket) = lines[index % lines.count]
                group.addTask { await Self.panel(issue: issue, ticket: ticket, address: address, loops: loops, stats: stats) }
            }
            let deadline = ContinuousClock.now + .seconds(openTimeoutSeconds)
            while stats.withLock({ $0.holding }) < count, ContinuousClock.now < deadline { try? await Task.sleep(for: .milliseconds(100)) }
            let opened = ContinuousClock.now - started
            try? await Task.sleep(for: .seconds(settleSeconds))
            let rssHeld = pid.flatMap { ResidentMemory.megabytes(pid: $0) }
            let held = stats.withLock { $0 }
            emit(
                "HELD "
                    + jsonLine([
                        "panels": count, "holding": held.holding, "open_s": opened.seconds, "rss_before_mb": rssBefore, "rss_held_mb": rssHeld,
                        "refused": held.refused, "failed": held.failed, "connection_failures": held.connectionFailures,
                    ]))
            await stop.wait()
            let done = stats.withLock { $0 }
            emit(
                "DONE "
                    + jsonLine([
                        "panels": count, "holding": done.holding, "changed": done.changed, "unchanged": done.unchanged, "refused": done.refused,
                        "failed": done.failed, "connection_failures": done.connectionFailures, "peak_rss_mb": done.peakRSS,
                        "seconds": (ContinuousClock.now - started).seconds,
                    ]))
            // Exiting closes every connection at once, as browsers closing their tabs would.
            Foundation.exit(0)
        }
    }

    /// One panel: it is "opening" until it first holds a wait (or its connection fails).
    static func panel(issue: String, ticket: String, address: AppAddress, loops: any EventLoopGroup, stats: Locked<WaitCounts>) async {
        var opening = true
        func opened() {
            if opening { stats.withLock { $0.opening -= 1 } }
            opening = false
        }
        var events = WaitingPanel.Events()
        events.holding = { held in
            if held { opened() }
            stats.withLock { $0.holding += held ? 1 : -1 }
        }
        events.answered = { answer, _ in stats.withLock { answer.changed == true ? ($0.changed += 1) : ($0.unchanged += 1) } }
        events.refused = { stats.withLock { $0.refused += 1 } }
        events.failed = { stats.withLock { $0.failed += 1 } }
        events.connectionFailed = {
            opened()
            stats.withLock { $0.connectionFailures += 1 }
        }
        await WaitingPanel(issue: issue, ticket: ticket, address: address, loops: loops).run(events)
    }
}

/// What the panels saw, together.
struct WaitCounts {
    /// Panels not yet holding their first held wait.
    var opening = 0
    /// Waits with a version sent and not yet answered.
    var holding = 0
    var changed = 0
    var unchanged = 0
    /// 503 answers (too many waits, change feed down, shutting down).
    var refused = 0
    /// Any other answer than 200 or 503.
    var failed = 0
    var connectionFailures = 0
    var peakRSS = 0.0
}

/// Resumes its waiter on the first SIGTERM or SIGINT.
final class StopSignal: Sendable {
    /// Kept for as long as we wait: a released source stops delivering.
    private nonisolated(unsafe) let sources: [any DispatchSourceSignal]
    private let continuation = Locked<(fired: Bool, waiter: CheckedContinuation<Void, Never>?)>((false, nil))

    init() {
        sources = [SIGTERM, SIGINT].map { signalNumber in
            signal(signalNumber, SIG_IGN)
            return DispatchSource.makeSignalSource(signal: signalNumber, queue: .global())
        }
        for source in sources {
            source.setEventHandler { [continuation] in
                continuation.withLock { state in
                    state.fired = true
                    state.waiter?.resume()
                    state.waiter = nil
                }
            }
            source.resume()
        }
    }

    func wait() async {
        await withCheckedContinuation { (waiter: CheckedContinuation<Void, Never>) in
            continuation.withLock { state in
                if state.fired { waiter.resume() } else { state.waiter = waiter }
            }
        }
    }
}

/// A value shared by tasks, behind a lock (`Mutex` itself cannot be captured by a task).
final class Locked<Value>: Sendable {
    private let mutex: Mutex<Value>

    init(_ value: sending Value) { mutex = Mutex(value) }

    func withLock<Result>(_ body: (inout sending Value) throws -> sending Result) rethrows -> sending Result {
        try mutex.withLock(body)
    }
}

extension Duration {
    var seconds: Double { Double(components.seconds) + Double(components.attoseconds) / 1e18 }
}
