import Libpq
import Logging
import Metrics
import ServiceLifecycle
import Synchronization

/// Panels waiting for their issue's viewers to change, answered as soon as they do.
///
/// Changes come from PostgreSQL's `LISTEN`/`NOTIFY` (`ViewerChanges`) on a dedicated
/// connection, so a change made through any instance reaches the panels waiting on every
/// instance. A woken issue is read once (all issues woken together in one statement) and each
/// of its waiting panels whose version differs from the fresh list gets it. A wait is held for
/// at most `holdFor`, then answered `.unchanged`; the panel waits again.
///
/// As a `Service` it runs the listener, the reads and the deadlines, and on shutdown answers
/// every held wait (`WaitUnavailable.closed`) and refuses new ones.
public final class WaitRoom: Service, Sendable {
    public enum Outcome: Sendable, Equatable {
        /// The issue's viewers now, and their version.
        case changed([Viewer], version: String)
        /// Nothing changed within the hold time.
        case unchanged
        /// The issue's site or installation is no longer installed.
        case uninstalled
    }

    public struct Settings: Sendable {
        /// How long a wait is held at most (below Forge's 25 s `invokeRemote` limit).
        public var holdFor: Duration
        /// Waits held at once, beyond which one is refused (`WaitUnavailable.full`).
        public var maxWaiting: Int
        /// A wait arriving this soon after its issue changed reads the issue at once: the
        /// change may have come between the panel's last answer and this wait.
        public var recentWindow: Duration
        /// How often deadlines are checked; a wait ends within this of its hold time.
        public var tick: Duration
        /// Waits one caller may hold at once (`WaitUnavailable.overQuota`, answered 429): a tab
        /// needs one (two while its next wait overtakes the answer to its last), a person a few
        /// per open issue, and no site may hold every wait the instance has.
        public var maxPerTab = 2
        public var maxPerAccount = 20
        public var maxPerTenant: Int

        public init(
            holdFor: Duration = .seconds(20), maxWaiting: Int = 20_000, recentWindow: Duration = .seconds(5), tick: Duration = .milliseconds(250)
        ) {
            self.holdFor = holdFor
            self.maxWaiting = maxWaiting
            self.recentWindow = recentWindow
            self.tick = tick
            self.maxPerTenant = max(1, maxWaiting / 2)
        }
    }

    /// Who holds a wait: its site, person and tab (the quotas' keys).
    public struct Caller: Hashable, Sendable {
        public var tenant: String
        public var accountID: String
        public var tabID: String
        public init(tenant: String, accountID: String, tabID: String) {
            self.tenant = tenant
            self.accountID = accountID
            self.tabID = tabID
        }
        var account: [String] { [tenant, accountID] }
    }

    private struct Waiter {
        var issue: IssueRef
        var version: String
        var caller: Caller?
        var continuation: CheckedContinuation<Outcome, any Error>
    }

    private struct State {
        var waiters: [Int: Waiter] = [:]
        var waitersByIssue: [IssueRef: Set<Int>] = [:]
        var nextID = 0
        /// Held waits by deadline, oldest first: every wait is held for the same time and
        /// registered under this lock, so appending keeps the order, and a tick looks only at
        /// the waits that are due. Waits answered earlier are skipped when their turn comes.
        var deadlines: [(deadline: ContinuousClock.Instant, id: Int)] = []
        var firstDeadline = 0
        /// The feed is listening: changes are heard. Until it is (and while it reconnects),
        /// waits are refused, and panels rely on their heartbeats.
        var listening = false
        /// The current outage of the feed was logged (once per outage).
        var outageLogged = false
        var closed = false
        /// When each issue last changed (pruned after `recentWindow`).
        var recentChanges: [IssueRef: ContinuousClock.Instant] = [:]
        /// Issues to read and answer.
        var dirty: Set<IssueRef> = []
        /// Waits held per tab, person and site (only those with a caller).
        var perTab: [Caller: Int] = [:]
        var perAccount: [[String]: Int] = [:]
        var perTenant: [String: Int] = [:]

        func isOverQuota(_ caller: Caller, _ settings: Settings) -> Bool {
            perTab[caller, default: 0] >= settings.maxPerTab || perAccount[caller.account, default: 0] >= settings.maxPerAccount
                || perTenant[caller.tenant, default: 0] >= settings.maxPerTenant
        }

        mutating func count(_ caller: Caller?, _ change: Int) {
            guard let caller else { return }
            func adjust<Key: Hashable>(_ counts: inout [Key: Int], _ key: Key) {
                let value = counts[key, default: 0] + change
                counts[key] = value > 0 ? value : nil
            }
            adjust(&perTab, caller)
            adjust(&perAccount, caller.account)
            adjust(&perTenant, caller.tenant)
        }

        mutating func remove(_ id: Int) -> Waiter? {
            guard let waiter = waiters.removeValue(forKey: id) else { return nil }
            count(waiter.caller, -1)
            waitersByIssue[waiter.issue]?.remove(id)
            if waitersByIssue[waiter.issue]?.isEmpty == true { waitersByIssue[waiter.issue] = nil }
            return waiter
        }

        /// The waits whose hold time is up, removed.
        mutating func removeDue(at now: ContinuousClock.Instant) -> [Waiter] {
            var due: [Waiter] = []
            while firstDeadline < deadlines.count, deadlines[firstDeadline].deadline <= now {
                if let waiter = remove(deadlines[firstDeadline].id) { due.append(waiter) }
                firstDeadline += 1
            }
            // Drop the passed entries once they are most of the array.
            if firstDeadline > 1024, firstDeadline * 2 > deadlines.count {
                deadlines.removeFirst(firstDeadline)
                firstDeadline = 0
            }
            return due
        }

        mutating func removeAll() -> [Waiter] {
            defer {
                waiters = [:]
                waitersByIssue = [:]
                perTab = [:]
                perAccount = [:]
                perTenant = [:]
                deadlines = []
                firstDeadline = 0
            }
            return Array(waiters.values)
        }
    }

    private let state = Mutex(State())
    private let repository: PresenceRepository
    private let listener: PostgresListener
    private let settings: Settings
    private let logger: Logger
    private let wakeups: AsyncStream<Void>
    private let wake: AsyncStream<Void>.Continuation

    public init(repository: PresenceRepository, listener: PostgresListener, settings: Settings = .init(), logger: Logger) {
        self.repository = repository
        self.listener = listener
        self.settings = settings
        self.logger = logger
        (wakeups, wake) = AsyncStream.makeStream(of: Void.self, bufferingPolicy: .bufferingNewest(1))
    }

    /// Waits until the issue's viewers differ from `version` (at once if they already may),
    /// or `holdFor` passes. Throws `WaitUnavailable` when the wait cannot be held, and when the
    /// task is cancelled (the server shutting down).
    ///
    /// Once the wait is held, `onHeld` gets a function that abandons it (its client went away):
    /// the wait then ends at once as `.unchanged`, an answer nobody will read. A `caller` over
    /// its quota (`Settings.maxPerTab`, `maxPerAccount`, `maxPerTenant`) is refused at once.
    public func wait(
        for issue: IssueRef, version: String, caller: Caller? = nil, onHeld: (_ abandon: @escaping @Sendable () -> Void) -> Void = { _ in }
    ) async throws -> Outcome {
        let id = state.withLock { state in
            defer { state.nextID &+= 1 }
            return state.nextID
        }
        return try await withTaskCancellationHandler {
            try await withCheckedThrowingContinuation { continuation in
                let refusal: WaitUnavailable.Reason? = state.withLock { state in
                    // Under the lock, so a cancellation either finds the waiter or is seen here.
                    if state.closed || Task.isCancelled { return .closed }
                    if !state.listening { return .feedDown }
                    if state.waiters.count >= settings.maxWaiting { return .full }
                    if let caller, state.isOverQuota(caller, settings) { return .overQuota }
                    let now = ContinuousClock.now
                    state.waiters[id] = Waiter(issue: issue, version: version, caller: caller, continuation: continuation)
                    state.count(caller, 1)
                    state.deadlines.append((now + settings.holdFor, id))
                    state.waitersByIssue[issue, default: []].insert(id)
                    let recent = state.recentChanges[issue].map { now - $0 < settings.recentWindow } ?? false
                    if recent || version.isEmpty {
                        state.dirty.insert(issue)
                        wake.yield()
                    }
                    return nil
                }
                if let refusal {
                    Self.refused.increment()
                    continuation.resume(throwing: WaitUnavailable(reason: refusal))
                } else {
                    onHeld { self.abandon(id) }
                }
            }
        } onCancel: {
            state.withLock { $0.remove(id) }?.continuation.resume(throwing: WaitUnavailable(reason: .closed))
        }
    }

    /// Waits held now.
    public var waiting: Int { state.withLock { $0.waiters.count } }

    private func abandon(_ id: Int) {
        guard let waiter = state.withLock({ $0.remove(id) }) else { return }
        Self.abandoned.increment()
        waiter.continuation.resume(returning: .unchanged)
    }

    /// The change feed is listening: waits are held.
    public var isListening: Bool { state.withLock { $0.listening && !$0.closed } }

    public func run() async throws {
        await cancelWhenGracefulShutdown {
            await withDiscardingTaskGroup { group in
                group.addTask { await self.listener.run { event in self.feed(event) } }
                group.addTask { await self.answerChanges() }
                group.addTask { await self.answerDeadlines() }
            }
        }
        close()
        Self.waitingGauge.record(0)
    }

    /// Answers every held wait (`WaitUnavailable.closed`) and refuses new ones: the server is
    /// shutting down. Idempotent; from any thread.
    public func close() {
        let held = state.withLock { state in
            state.closed = true
            state.listening = false
            return state.removeAll()
        }
        for waiter in held { waiter.continuation.resume(throwing: WaitUnavailable(reason: .closed)) }
    }

    /// From the listener's thread.
    private func feed(_ event: PostgresListenerEvent) {
        switch event {
        case .listening:
            logger.info("change feed listening")
            state.withLock { state in
                state.listening = true
                state.outageLogged = false
                // Changes while we were not listening are lost: every waiting issue may have changed.
                state.dirty.formUnion(state.waitersByIssue.keys)
            }
            wake.yield()
        case .notifications(let notifications):
            let now = ContinuousClock.now
            let issues = notifications.compactMap { $0.channel == ViewerChanges.channel ? ViewerChanges.issue(fromPayload: $0.payload) : nil }
            Self.changes.increment(by: issues.count)
            let woken = state.withLock { state in
                var woken = false
                for issue in issues {
                    state.recentChanges[issue] = now
                    if state.waitersByIssue[issue] != nil {
                        state.dirty.insert(issue)
                        woken = true
                    }
                }
                return woken
            }
            if woken { wake.yield() }
        case .lost(let error):
            let (firstFailure, wasListening, held) = state.withLock { state in
                let wasListening = state.listening
                let firstFailure = !state.outageLogged
                state.listening = false
                state.outageLogged = true
                return (firstFailure, wasListening, wasListening ? state.removeAll() : [])
            }
            // Once per outage at warning (start-up included); each failed reconnection at debug.
            logger.log(
                level: firstFailure ? .warning : .debug, "change feed lost; reconnecting",
                metadata: ["error": "\(error)", "answeredWaits": "\(held.count)"]
            )
            if wasListening { Self.feedLosses.increment() }
            for waiter in held { waiter.continuation.resume(throwing: WaitUnavailable(reason: .feedDown)) }
        }
    }

    /// Reads the woken issues (together) and answers their waits that see a change.
    private func answerChanges() async {
        for await _ in wakeups {
            let issues = state.withLock { state in
                defer { state.dirty = [] }
                return state.dirty.filter { state.waitersByIssue[$0] != nil }
            }
            guard !issues.isEmpty else { continue }
            let ordered = Array(issues)
            for start in stride(from: 0, to: ordered.count, by: 500) {
                let chunk = Array(ordered[start..<min(start + 500, ordered.count)])
                do {
                    let lists = try await repository.viewers(of: chunk, timeout: .seconds(3))
                    answer(chunk, with: lists)
                } catch {
                    // Nothing answered: those panels keep waiting, and their heartbeats keep them current.
                    logger.warning("reading changed issues failed", metadata: ["error": "\(error)", "issues": "\(chunk.count)"])
                }
            }
        }
    }

    private func answer(_ issues: [IssueRef], with lists: [IssueRef: [Viewer]]) {
        var answers: [(CheckedContinuation<Outcome, any Error>, Outcome)] = []
        state.withLock { state in
            for issue in issues {
                let list = lists[issue]
                let version = list.map(ViewerListVersion.of)
                for id in state.waitersByIssue[issue] ?? [] {
                    guard let waiter = state.waiters[id], waiter.version != version else { continue }
                    _ = state.remove(id)
                    answers.append((waiter.continuation, list.map { .changed($0, version: version!) } ?? .uninstalled))
                }
            }
        }
        Self.answered.increment(by: answers.count)
        for (continuation, outcome) in answers { continuation.resume(returning: outcome) }
    }

    /// Answers waits whose hold time is up, and forgets old changes.
    private func answerDeadlines() async {
        while !Task.isCancelled {
            do {
                try await Task.sleep(for: settings.tick)
            } catch {
                return
            }
            let now = ContinuousClock.now
            let (expired, count) = state.withLock { state in
                let expired = state.removeDue(at: now)
                state.recentChanges = state.recentChanges.filter { now - $0.value < settings.recentWindow }
                return (expired, state.waiters.count)
            }
            for waiter in expired { waiter.continuation.resume(returning: .unchanged) }
            Self.waitingGauge.record(count)
        }
    }

    static let waitingGauge = Gauge(label: "panels_waiting")
    static let answered = Counter(label: "panel_waits_answered_total")
    static let refused = Counter(label: "panel_waits_refused_total")
    static let abandoned = Counter(label: "panel_waits_abandoned_total")
    static let changes = Counter(label: "viewer_changes_heard_total")
    static let feedLosses = Counter(label: "change_feed_losses_total")
}

/// A wait that could not be held: the client should wait again after `retryAfterSeconds`
/// (HTTP 503 with `Retry-After`), meanwhile its heartbeats keep it current.
public struct WaitUnavailable: Error, CustomStringConvertible, Sendable {
    public enum Reason: String, Sendable {
        /// Too many waits held.
        case full
        /// The change feed is not listening (the database is down or reconnecting).
        case feedDown = "feed_down"
        /// Shutting down.
        case closed
        /// This tab, person or site holds as many waits as it may (answered 429).
        case overQuota = "over_quota"
    }

    public var reason: Reason

    public var retryAfterSeconds: Int {
        switch reason {
        case .full, .feedDown, .overQuota: 5
        case .closed: 1
        }
    }

    public var description: String {
        switch reason {
        case .full: "too many panels waiting"
        case .feedDown: "live updates are unavailable for now"
        case .closed: "the server is restarting"
        case .overQuota: "too many waits for this caller"
        }
    }
}
