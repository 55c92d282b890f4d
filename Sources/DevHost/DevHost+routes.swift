import Connect
import Foundation
import Hummingbird
import JWTKit

extension DevHost {
    func router() -> Router<BasicRequestContext> {
        let router = Router()
        router.get("/") { _, _ in
            var forgeSection = ""
            if let forge = self.forge {
                forgeSection = ForgePages.indexSection(
                    status: await forge.status, installationId: await forge.installationId, cloudId: forge.cloudId, appId: forge.appId
                )
            }
            return Self.html(
                DevHostPages.index(installed: await self.state.installation != nil, appURL: self.configuration.appURL, forge: forgeSection))
        }
        router.get("browse/:key") { request, context in try await self.issuePage(request, context: context) }
        router.get("people/:accountId") { _, context in
            Self.html(DevHostPages.profile(Cast.person(context.parameters.get("accountId") ?? "")))
        }
        router.get("avatars/:file") { _, context -> Response in
            let accountId = (context.parameters.get("file") ?? "").replacingOccurrences(of: ".svg", with: "")
            guard let person = Cast.person(accountId), person.color != nil else { return Response(status: .notFound) }
            return Response(
                status: .ok, headers: [.contentType: "image/svg+xml"], body: .init(byteBuffer: ByteBuffer(string: DevHostPages.avatar(person))))
        }
        router.get("all.js") { _, _ in
            Response(status: .ok, headers: [.contentType: "application/javascript"], body: .init(byteBuffer: ByteBuffer(string: DevHostPages.allJS)))
        }
        router.get("install-keys/:kid") { _, context -> Response in
            guard context.parameters.get("kid") == self.kid else { return Response(status: .notFound) }
            return Response(
                status: .ok, headers: [.contentType: "application/x-pem-file"],
                body: .init(byteBuffer: ByteBuffer(string: self.privateKey.publicKey.pemRepresentation)))
        }
        router.post("reinstall") { _, _ -> Response in
            try await self.install()
            return Response(status: .seeOther, headers: [.location: "/"])
        }
        router.get("rest/api/3/user/bulk") { request, _ in
            try await self.users(request, bulk: true, authorised: await self.verifyAppRequest(request))
        }
        router.get("rest/api/3/user") { request, _ in
            try await self.users(request, bulk: false, authorised: await self.verifyAppRequest(request))
        }
        // Connect JWT, or (not documented for Forge; see forge-remote.md) a Forge system token.
        router.post("app/report-accounts") { request, _ -> Response in
            var authorised = await self.forge?.acceptsSystemToken(authorization: request.headers[.authorization]) ?? false
            if !authorised { authorised = await self.verifyAppRequest(request) }
            guard authorised else { return Response(status: .unauthorized) }
            let body = try await request.body.collect(upTo: 1 << 20)
            let accounts = ((try? JSONSerialization.jsonObject(with: Data(buffer: body))) as? [String: [[String: String]]])?["accounts"] ?? []
            await self.state.reported(accounts.compactMap { $0["accountId"] })
            return Response(status: .noContent)
        }
        if let forge { addForgeRoutes(to: router, forge: forge) }
        return router
    }

    static func html(_ text: String) -> Response {
        Response(
            status: .ok, headers: [.contentType: "text/html; charset=utf-8", .cacheControl: "no-store"],
            body: .init(byteBuffer: ByteBuffer(string: text)))
    }

    /// The issue page: the panel URL from the descriptor, context variables substituted, signed
    /// like Jira signs an iframe (HS256, qsh of the panel request, `sub` = the viewer, 3 minutes).
    func issuePage(_ request: Request, context: BasicRequestContext) async throws -> Response {
        guard let issue = Cast.issue(key: context.parameters.get("key") ?? "") else { throw HTTPError(.notFound, message: "no such issue") }
        let viewer = request.uri.queryParameters.get("as").flatMap { Cast.person($0) }
        let instance = try instance(via: request.uri.queryParameters.get("via"))
        guard let installation = await state.installation else {
            return Self.html(DevHostPages.issue(issue, viewer: viewer, panelURL: nil, contextToken: nil))
        }
        let panelURL = try await signedPanelURL(installation: installation, issue: issue, accountId: viewer?.accountId, instance: instance)
        let now = Date().timeIntervalSince1970.rounded(.down)
        let keys = JWTKeyCollection()
        await keys.add(hmac: HMACKey(from: installation.sharedSecret), digestAlgorithm: .sha256)
        let contextToken = try await keys.sign(
            ConnectClaims(iss: installation.clientKey, sub: viewer?.accountId, iat: now, exp: now + 180, qsh: ConnectClaims.contextQSH))
        return Self.html(DevHostPages.issue(issue, viewer: viewer, panelURL: panelURL, contextToken: contextToken))
    }

    /// The panel's iframe URL for `accountId` on an issue, signed as Jira signs it; nil before the install.
    public func signedPanelURL(issueID: String, issueKey: String, accountId: String?) async throws -> String? {
        guard let installation = await state.installation else { return nil }
        let issue = Cast.Issue(id: issueID, key: issueKey, summary: "", projectId: "1", projectKey: String(issueKey.prefix { $0 != "-" }))
        return try await signedPanelURL(installation: installation, issue: issue, accountId: accountId)
    }

    public var isInstalled: Bool {
        get async { await state.installation != nil }
    }

    /// Which app instance an issue page talks to: `via=N` is the Nth `--app` (0-based answer);
    /// without `via`, the installed one.
    func instance(via: String?) throws -> Int {
        guard let via else { return 0 }
        guard let number = Int(via), configuration.appURLs.indices.contains(number - 1) else {
            throw HTTPError(.notFound, message: "no app instance \(via): there are \(configuration.appURLs.count)")
        }
        return number - 1
    }

    /// `instance` 0 is the installed app, at the descriptor's baseUrl; another instance serves
    /// the same signed path and query from its own URL (the qsh covers only those, and the
    /// site and its secret are in the shared database).
    func signedPanelURL(installation: DevHostState.Installation, issue: Cast.Issue, accountId: String?, instance: Int = 0) async throws -> String {
        var path = installation.panelURL
        for (variable, value) in [
            ("{issue.id}", issue.id), ("{issue.key}", issue.key), ("{project.id}", issue.projectId), ("{project.key}", issue.projectKey),
        ] {
            path = path.replacingOccurrences(of: variable, with: CanonicalRequest.rfc3986Encode(value))
        }
        let target = installation.appBasePath + path
        let now = Date().timeIntervalSince1970.rounded(.down)
        let keys = JWTKeyCollection()
        await keys.add(hmac: HMACKey(from: installation.sharedSecret), digestAlgorithm: .sha256)
        let iframeToken = try await keys.sign(
            ConnectClaims(
                iss: installation.clientKey, sub: accountId, iat: now, exp: now + 180,
                qsh: CanonicalRequest(method: "GET", target: target, basePath: installation.appBasePath).qsh
            ))
        let separator = path.contains("?") ? "&" : "?"
        let base = instance == 0 ? installation.appBase : configuration.appURLs[instance]
        return base + path + separator + "jwt=" + iframeToken
    }

    /// Checks an app request's JWT as Jira would (`AppRequestCheck`).
    func verifyAppRequest(_ request: Request) async -> Bool {
        guard let installation = await state.installation else { return false }
        let result = await AppRequestCheck.verify(
            authorization: request.headers[.authorization], method: request.method.rawValue, target: request.uri.description,
            sharedSecret: installation.sharedSecret, appKey: installation.appKey
        )
        if case .failure(let failure) = result {
            logger.warning("app request refused", metadata: ["path": "\(request.uri.path)", "reason": "\(failure)"])
            return false
        }
        return true
    }

    /// The user API's answer; `authorised` says whether the caller's token was good.
    func users(_ request: Request, bulk: Bool, authorised: Bool) async throws -> Response {
        guard authorised else { return Response(status: .unauthorized) }
        let ids = request.uri.queryParameters.getAll("accountId").map { String($0) }
        let found = ids.compactMap { Cast.person($0) }.map(userJSON)
        let object: Any
        if bulk {
            object = ["startAt": 0, "maxResults": found.count, "total": found.count, "isLast": true, "values": found] as [String: Any]
        } else {
            guard let user = found.first else { return Response(status: .notFound) }
            object = user
        }
        return Response(
            status: .ok, headers: [.contentType: "application/json"],
            body: .init(byteBuffer: ByteBuffer(data: try JSONSerialization.data(withJSONObject: object))))
    }

    func userJSON(_ person: Cast.Person) -> [String: Any] {
        var user: [String: Any] = [
            "accountId": person.accountId, "accountType": person.accountType, "displayName": person.displayName, "active": true,
        ]
        if person.color != nil {
            let url = "\(baseURL)/avatars/\(person.accountId).svg"
            user["avatarUrls"] = ["16x16": url, "24x24": url, "32x32": url, "48x48": url]
        }
        return user
    }
}
