import Connect
import Foundation
import HTTPTypes
import Hummingbird
import NIOFoundationCompat

/// A local Jira Cloud site (several, one per path prefix `/{site}`) and Atlassian's personal data
/// reporting API, over real HTTP. Every request's JWT is checked with jwt-kit (not the app's
/// HS256 code) and its qsh recomputed from what arrived; a request that fails is answered 401
/// and recorded in `unverified`, which tests expect to be empty.
public actor JiraStandIn {
    public enum Behaviour: Sendable {
        case normal
        /// 429 with this Retry-After for the next `times` calls, then normal.
        case rateLimited(retryAfter: Int, times: Int)
        case serverError
        case hang(seconds: Double)
        /// The bulk endpoint answers 404, as on a site without it; single lookups work.
        case noBulk
        /// Answers normally, after a delay.
        case slow(seconds: Double)
        /// Bulk pages after the first (`startAt` > 0) answer `status` (with `Retry-After` on a 429)
        /// for the next `times` such calls, then normally; first pages are always answered.
        case laterPagesFail(status: Int, retryAfter: Int = 1, times: Int)
        /// Every user call answers `status` (401 or 403: Jira refusing the app's credentials,
        /// which still verify here) until the behaviour is changed. With `noBulk` the bulk
        /// endpoint answers 404 instead, so the refusals come to the one-by-one lookups.
        case refusing(status: Int, noBulk: Bool = false)
    }

    public struct Call: Sendable {
        public var site: String
        public var path: String
        public var accountIDs: [String]
        public var at: Date
        public var status: Int
        /// The bulk call's `startAt` (nil when not sent, and for other calls).
        public var startAt: Int? = nil
    }

    public static let appKey = "whos-looking"

    public private(set) var calls: [Call] = []
    public private(set) var unverified: [String] = []
    public private(set) var reports: [[String: String]] = []
    /// User calls that arrived, counted when they arrive (`calls` records them when answered).
    public private(set) var userCallsArrived = 0
    /// Bulk pages hold at most this many users (nil: as many as the request's `maxResults`).
    public private(set) var bulkPageSize: Int?
    private var secrets: [String: String] = [:]  // site -> shared secret
    private var bearerTokens: [String: String] = [:]  // Forge sites: site -> the system token it accepts
    private var behaviours: [String: Behaviour] = [:]
    private var users: [String: [String: Any & Sendable]] = [:]
    /// Issue checks (`GET /{site}/rest/api/3/issue/{id}` with a user token `user-token-<accountId>`):
    /// issues restricted to some people; every other issue is visible to everyone.
    private var restrictedIssues: [String: Set<String>] = [:]
    /// When set, issue checks answer this status instead (a Jira that cannot answer).
    private var issueCheckStatus: Int?
    public private(set) var issueChecks: [(site: String, issueID: String, accountID: String?)] = []
    private var reportAnswer: @Sendable ([String]) -> (status: Int, headers: [String: String], body: String) = { _ in (204, [:], "") }

    public init() {}

    public func addSite(_ site: String, sharedSecret: String) { secrets[site] = sharedSecret }
    /// A site reached through Forge: user calls must carry `Authorization: Bearer <token>`.
    public func addForgeSite(_ site: String, systemToken: String) { bearerTokens[site] = systemToken }
    public func setBehaviour(_ behaviour: Behaviour, for site: String) { behaviours[site] = behaviour }
    /// Answers bulk lookups in pages of at most `size` users, as Jira may whatever `maxResults` asks.
    public func setBulkPageSize(_ size: Int?) { bulkPageSize = size }
    public func setReportAnswer(_ answer: @escaping @Sendable ([String]) -> (status: Int, headers: [String: String], body: String)) {
        reportAnswer = answer
    }

    /// A user every site knows.
    public func addUser(accountId: String, displayName: String, accountType: String = "atlassian", avatar: String? = nil) {
        var user: [String: Any & Sendable] = ["accountId": accountId, "displayName": displayName, "accountType": accountType, "active": true]
        if let avatar { user["avatarUrls"] = ["48x48": avatar, "24x24": avatar] }
        users[accountId] = user
    }

    /// The user token a test sends for `accountId` (`x-forge-oauth-user`): opaque to the app.
    public static func userToken(_ accountId: String) -> String { "user-token-\(accountId)" }
    /// Only these people may see the issue.
    public func restrictIssue(_ issueID: String, to accountIDs: Set<String>) { restrictedIssues[issueID] = accountIDs }
    /// Issue checks answer `status` (nil: normally).
    public func setIssueCheckStatus(_ status: Int?) { issueCheckStatus = status }

    public func renameUser(_ accountId: String, to name: String) { users[accountId]?["displayName"] = name }

    public func userCalls(site: String? = nil) -> [Call] {
        calls.filter { $0.path.contains("/rest/api/3/user") && (site == nil || $0.site == site) }
    }

    /// Runs the stand-in on a loopback port while `body` runs; `body` gets its base URL.
    public func serve<Result: Sendable>(_ body: @Sendable (_ baseURL: String) async throws -> Result) async throws -> Result {
        let router = Router()
        router.get(":site/rest/api/3/user/bulk") { request, context in
            await self.userRequest(request, site: context.parameters.get("site") ?? "", bulk: true)
        }
        router.get(":site/rest/api/3/user") { request, context in
            await self.userRequest(request, site: context.parameters.get("site") ?? "", bulk: false)
        }
        router.get(":site/rest/api/3/issue/:id") { request, context in
            await self.issueRequest(request, site: context.parameters.get("site") ?? "", issueID: context.parameters.get("id") ?? "")
        }
        router.post("app/report-accounts") { request, _ in
            let body = try await request.body.collect(upTo: 1_000_000)
            return await self.reportRequest(request, body: Data(buffer: body))
        }
        return try await LiveServer.run(router: router) { port in try await body("http://127.0.0.1:\(port)") }
    }

    /// Jira's "Get issue" as the person whose user token it carries: 200 `{id, key}`, 404 for an
    /// issue they cannot see, 401 without a user token.
    private func issueRequest(_ request: Request, site: String, issueID: String) -> Response {
        let authorization = request.headers[.authorization] ?? ""
        let prefix = "Bearer user-token-"
        let accountID = authorization.hasPrefix(prefix) ? String(authorization.dropFirst(prefix.count)) : nil
        issueChecks.append((site, issueID, accountID))
        func answer(_ status: HTTPResponse.Status, _ body: String) -> Response {
            Response(status: status, headers: [.contentType: "application/json"], body: .init(byteBuffer: ByteBuffer(string: body)))
        }
        if let issueCheckStatus { return answer(.init(code: issueCheckStatus), #"{"errorMessages":["unavailable"]}"#) }
        guard let accountID else { return answer(.unauthorized, #"{"errorMessages":["Unauthorized"]}"#) }
        guard restrictedIssues[issueID].map({ $0.contains(accountID) }) ?? true else {
            return answer(.notFound, #"{"errorMessages":["Issue does not exist or you do not have permission to see it."]}"#)
        }
        return answer(.ok, #"{"id":"\#(issueID)","key":"JIRA-\#(issueID)","fields":{}}"#)
    }

    /// Checks the request's JWT as Jira would (`AppRequestCheck`), with the qsh relative to `basePath`.
    private func verify(_ request: Request, secret: String, basePath: String) async -> Bool {
        let result = await AppRequestCheck.verify(
            authorization: request.headers[.authorization], method: request.method.rawValue, target: request.uri.description,
            basePath: basePath, sharedSecret: secret, appKey: Self.appKey
        )
        if case .failure(let failure) = result {
            unverified.append("\(request.uri): \(failure)")
            return false
        }
        return true
    }

    private func userRequest(_ request: Request, site: String, bulk: Bool) async -> Response {
        userCallsArrived += 1
        let accountIDs = request.uri.queryParameters.getAll("accountId").map { String($0) }
        let path = bulk ? "/rest/api/3/user/bulk" : "/rest/api/3/user"
        let startAt = bulk ? request.uri.queryParameters.get("startAt").flatMap { Int($0) } : nil
        func answer(_ status: Int, _ json: String = "", headers: HTTPFields = [:]) -> Response {
            calls.append(Call(site: site, path: path, accountIDs: accountIDs, at: Date(), status: status, startAt: startAt))
            var fields = headers
            fields[.contentType] = "application/json"
            return Response(status: .init(code: status), headers: fields, body: .init(byteBuffer: ByteBuffer(string: json)))
        }
        if let token = bearerTokens[site] {
            guard request.headers[.authorization] == "Bearer \(token)" else {
                unverified.append("\(request.uri): not the site's system token")
                return answer(401)
            }
        } else {
            guard let secret = secrets[site], await verify(request, secret: secret, basePath: "/\(site)") else { return answer(401) }
        }
        switch behaviours[site] ?? .normal {
        case .rateLimited(let retryAfter, let times) where times > 0:
            behaviours[site] = .rateLimited(retryAfter: retryAfter, times: times - 1)
            return answer(429, headers: [HTTPField.Name("Retry-After")!: String(retryAfter)])
        case .serverError:
            return answer(500, #"{"errorMessages":["boom"]}"#)
        case .hang(let seconds):
            try? await Task.sleep(for: .milliseconds(Int(seconds * 1000)))
            return answer(503)
        case .noBulk where bulk, .refusing(_, noBulk: true) where bulk:
            return answer(404)
        case .refusing(let status, _):
            return answer(status, #"{"errorMessages":["refused"]}"#)
        case .laterPagesFail(let status, let retryAfter, let times) where bulk && (startAt ?? 0) > 0 && times > 0:
            behaviours[site] = .laterPagesFail(status: status, retryAfter: retryAfter, times: times - 1)
            return answer(status, headers: status == 429 ? [HTTPField.Name("Retry-After")!: String(retryAfter)] : [:])
        case .slow(let seconds):
            try? await Task.sleep(for: .milliseconds(Int(seconds * 1000)))
        default:
            break
        }
        if bulk {
            guard let maxResults = request.uri.queryParameters.get("maxResults").flatMap({ Int($0) }), maxResults > 0 else {
                return answer(400, #"{"errorMessages":["maxResults missing"]}"#)
            }
            // A page of the users found, from the request's startAt, as Jira pages `PageBeanUser`.
            let found = accountIDs.compactMap { users[$0] }
            let first = max(0, startAt ?? 0)
            let size = min(maxResults, bulkPageSize ?? maxResults)
            let values = Array(found.dropFirst(first).prefix(size))
            let page: [String: Any] = [
                "maxResults": size, "startAt": first, "total": found.count, "isLast": first + size >= found.count, "values": values,
            ]
            return answer(200, String(decoding: try! JSONSerialization.data(withJSONObject: page), as: UTF8.self))
        }
        guard let id = accountIDs.first, let user = users[id] else { return answer(404, #"{"errorMessages":["not found"]}"#) }
        return answer(200, String(decoding: try! JSONSerialization.data(withJSONObject: user), as: UTF8.self))
    }

    private func reportRequest(_ request: Request, body: Data) async -> Response {
        // Any installation's secret may sign a report; a Forge installation sends its system token.
        var verified = bearerTokens.values.contains { request.headers[.authorization] == "Bearer \($0)" }
        for secret in secrets.values where !verified {
            let before = unverified.count
            verified = await verify(request, secret: secret, basePath: "")
            if !verified { unverified.removeSubrange(before...) }
        }
        guard verified else {
            unverified.append("report: no installation's secret verifies it")
            return Response(status: .unauthorized)
        }
        let accounts = ((try? JSONSerialization.jsonObject(with: body)) as? [String: [[String: String]]])?["accounts"] ?? []
        reports.append(contentsOf: accounts)
        calls.append(Call(site: "", path: "/app/report-accounts/", accountIDs: accounts.compactMap { $0["accountId"] }, at: Date(), status: 0))
        let answer = reportAnswer(accounts.compactMap { $0["accountId"] })
        var headers: HTTPFields = [.contentType: "application/json"]
        for (name, value) in answer.headers { headers[HTTPField.Name(name)!] = value }
        return Response(status: .init(code: answer.status), headers: headers, body: .init(byteBuffer: ByteBuffer(string: answer.body)))
    }
}

/// Polls `condition` until it holds or `timeout` passes; answers whether it held (an error counts as not yet).
public func eventually(timeout: Duration = .seconds(10), _ condition: () async throws -> Bool) async -> Bool {
    let deadline = ContinuousClock.now + timeout
    while ContinuousClock.now < deadline {
        if (try? await condition()) == true { return true }
        try? await Task.sleep(for: .milliseconds(50))
    }
    return (try? await condition()) == true
}

/// `body`'s outcome, after `cleanup` has run and finished, whether `body` threw or not: the
/// awaited counterpart of `defer`, whose body cannot await.
public func ensuring<Result>(_ body: () async throws -> Result, cleanup: () async -> Void) async throws -> Result {
    let outcome: Swift.Result<Result, any Error>
    do {
        outcome = .success(try await body())
    } catch {
        outcome = .failure(error)
    }
    await cleanup()
    return try outcome.get()
}
