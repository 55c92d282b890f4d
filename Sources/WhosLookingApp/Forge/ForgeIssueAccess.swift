import Connect
import Foundation
import Logging
import Metrics
import Synchronization

/// Whether a person may see an issue, as Jira says when asked with that person's own token
/// (`x-forge-oauth-user`): `GET {apiBaseUrl}/rest/api/3/issue/{id}?fields=id`, 200 yes, 403 or
/// 404 no. The Forge door needs it because the issue of a call comes from the invocation
/// token's `context`, which the browser can alter ("App context security"): without it, any
/// user could watch who reads a restricted issue. Answers are kept per installation, account
/// and issue for `ttl`; concurrent first checks of one key share one request. It fails closed:
/// no token, a refused token or a Jira that cannot answer is never taken as a yes.
final class ForgeIssueAccess: Sendable {
    enum Refusal: Error, Equatable {
        /// Jira says the person cannot see the issue (403/404), or the call had no user token,
        /// or Jira refused the token (401).
        case denied(String)
        /// Jira did not answer usefully (network, timeout, 429, 5xx): not the caller's fault.
        case unavailable(String)
    }

    struct Key: Hashable, Sendable {
        var installationID: String
        var accountID: String
        var issueID: String
    }

    private struct Entry {
        /// The issue's key as Jira gives it, when the person may see it; nil when not.
        var issueKey: String?
        var expires: ContinuousClock.Instant
    }

    private struct State {
        var entries: [Key: Entry] = [:]
        var inFlight: [Key: Task<Result<String, Refusal>, Never>] = [:]
    }

    private let jira: JiraClient
    private let ttl: Duration
    private let capacity: Int
    private let logger: Logger
    private let state = Mutex(State())

    static let checks = Counter(label: "forge_issue_access_checks_total")

    init(jira: JiraClient, ttl: Duration, capacity: Int = 100_000, logger: Logger) {
        self.jira = jira
        self.ttl = ttl
        self.capacity = capacity
        self.logger = logger
    }

    /// The issue's key (Jira's, not the browser's) when `key.accountID` may see it; throws
    /// `Refusal` otherwise.
    func issueKey(for key: Key, apiBaseURL: URL, userToken: String?) async throws(Refusal) -> String {
        let now = ContinuousClock.now
        enum Step {
            case known(Entry)
            case wait(Task<Result<String, Refusal>, Never>)
        }
        let step: Step? = state.withLock { state in
            if let entry = state.entries[key], entry.expires > now { return .known(entry) }
            if let running = state.inFlight[key] { return .wait(running) }
            return nil
        }
        switch step {
        case .known(let entry)?:
            guard let issueKey = entry.issueKey else { throw .denied("you cannot see this issue") }
            return issueKey
        case .wait(let running)?:
            return try await running.value.get()
        case nil:
            break
        }
        guard let userToken, !userToken.isEmpty else { throw .denied("no user token to check the issue with") }
        // Awaited right here, by this request and any that ask for the same key meanwhile: the
        // task only lets concurrent first checks share one Jira request, and is gone once it answers.
        let (running, started) = state.withLock { state in
            if let other = state.inFlight[key] { return (other, false) }
            let task = Task { await self.ask(key, apiBaseURL: apiBaseURL, userToken: userToken) }
            state.inFlight[key] = task
            return (task, true)
        }
        let result = await running.value
        if started { state.withLock { _ = $0.inFlight.removeValue(forKey: key) } }
        return try result.get()
    }

    private func ask(_ key: Key, apiBaseURL: URL, userToken: String) async -> Result<String, Refusal> {
        Self.checks.increment()
        let response: JiraClient.Response
        do {
            response = try await jira.get(
                .bearer(apiBaseURL: apiBaseURL, token: userToken), path: "/rest/api/3/issue/\(key.issueID)",
                query: [
                    URLQueryItem(name: "fields", value: "id")
                ])
        } catch {
            logger.warning("issue check failed: Jira did not answer", metadata: ["installation": "\(key.installationID)", "error": "\(error)"])
            return .failure(.unavailable("Jira did not answer the issue check"))
        }
        switch response.status {
        case 200:
            guard let issue = try? JSONDecoder().decode(IssueID.self, from: Data(buffer: response.body)), issue.id == key.issueID,
                ForgeController.isPlainText(issue.key)
            else {
                logger.warning("issue check: Jira's answer names another issue", metadata: ["installation": "\(key.installationID)"])
                return .failure(.unavailable("Jira's answer to the issue check was not understood"))
            }
            remember(key, issueKey: issue.key)
            return .success(issue.key)
        case 403, 404:
            remember(key, issueKey: nil)
            return .failure(.denied("you cannot see this issue"))
        case 401:
            // The person's token: not kept, the next call may bring a good one.
            logger.info("issue check: Jira refused the user token", metadata: ["installation": "\(key.installationID)"])
            return .failure(.denied("Jira refused the user token"))
        default:
            logger.warning(
                "issue check failed", metadata: ["installation": "\(key.installationID)", "status": "\(response.status)"])
            return .failure(.unavailable("Jira could not answer the issue check"))
        }
    }

    private func remember(_ key: Key, issueKey: String?) {
        let expires = ContinuousClock.now + ttl
        state.withLock { state in
            if state.entries.count >= capacity {
                let now = ContinuousClock.now
                state.entries = state.entries.filter { $0.value.expires > now }
                // Still full of live answers: start again rather than grow.
                if state.entries.count >= capacity { state.entries.removeAll(keepingCapacity: true) }
            }
            state.entries[key] = Entry(issueKey: issueKey, expires: expires)
        }
    }

    private struct IssueID: Decodable {
        var id: String
        var key: String
    }
}
