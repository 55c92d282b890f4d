import Crypto
import Foundation
import Hummingbird
import NIOFoundationCompat

/// The Forge stand-in's routes (`docs/forge.md`, "The local stand-in").
extension DevHost {
    func addForgeRoutes(to router: Router<BasicRequestContext>, forge: ForgeSite) {
        router.get("forge/jwks.json") { _, _ in
            Self.json(try forge.jwks())
        }
        router.get("forge/browse/:key") { request, context in
            guard let issue = Cast.issue(key: context.parameters.get("key") ?? "") else { throw HTTPError(.notFound, message: "no such issue") }
            let viewer = request.uri.queryParameters.get("as").flatMap { Cast.person($0) }
            let query = request.uri.queryParameters
            let instance = try self.instance(via: query.get("via"))
            return Self.html(
                ForgePages.issue(
                    issue, viewer: viewer, forge: forge, installed: await forge.status == .installed,
                    collapsed: query.get("collapsed") == "1", dark: query.get("theme") == "dark", via: instance + 1
                ))
        }
        router.get("forge/bridge-standin.js") { _, _ in
            Response(
                status: .ok, headers: [.contentType: "text/javascript; charset=utf-8", .cacheControl: "no-store"],
                body: .init(byteBuffer: ByteBuffer(string: ForgeBridgeStandIn.script))
            )
        }
        router.get("forge/app/**") { _, context in
            try Self.customUIFile(forge: forge, segments: context.parameters.getCatchAll())
        }
        router.post("forge/invoke") { request, _ -> Response in
            let body = try await request.body.collect(upTo: 1 << 20)
            let call: ForgeSite.InvokeCall
            do {
                call = try JSONDecoder().decode(ForgeSite.InvokeCall.self, from: Data(buffer: body))
            } catch {
                throw HTTPError(.badRequest, message: "bad invoke request: \(error)")
            }
            do {
                return Self.json(try await forge.invoke(call))
            } catch let failure as ForgeSite.Failure {
                throw HTTPError(.badRequest, message: failure.description)
            }
        }
        router.post("forge/uninstall-app") { _, _ -> Response in
            await forge.uninstall()
            return Response(status: .seeOther, headers: [.location: "/"])
        }
        router.post("forge/reinstall-app") { _, _ -> Response in
            do {
                try await forge.reinstall()
            } catch {
                throw HTTPError(.badGateway, message: "the app did not take the installed event: \(error)")
            }
            return Response(status: .seeOther, headers: [.location: "/"])
        }
        // The Jira REST double behind `app.apiBaseUrl`, for system tokens only.
        router.get("ex/jira/:cloudId/rest/api/3/user/bulk") { request, context in
            guard context.parameters.get("cloudId") == forge.cloudId else { return Response(status: .notFound) }
            return try await self.users(
                request, bulk: true, authorised: await forge.acceptsSystemToken(authorization: request.headers[.authorization]))
        }
        router.get("ex/jira/:cloudId/rest/api/3/user") { request, context in
            guard context.parameters.get("cloudId") == forge.cloudId else { return Response(status: .notFound) }
            return try await self.users(
                request, bulk: false, authorised: await forge.acceptsSystemToken(authorization: request.headers[.authorization]))
        }
        // What a person may see, asked with their own user token: 200 with the issue's id and
        // key, 404 for an issue they cannot see (as Jira answers), 401 without a valid token.
        router.get("ex/jira/:cloudId/rest/api/3/issue/:id") { request, context in
            guard context.parameters.get("cloudId") == forge.cloudId else { return Response(status: .notFound) }
            guard let accountId = await forge.userTokenAccount(authorization: request.headers[.authorization]) else {
                return Self.json(["errorMessages": ["Unauthorized"]], status: .unauthorized)
            }
            guard let issue = Cast.issue(id: context.parameters.get("id") ?? ""), issue.isVisible(to: accountId) else {
                return Self.json(["errorMessages": ["Issue does not exist or you do not have permission to see it."]], status: .notFound)
            }
            return Self.json(["id": issue.id, "key": issue.key, "fields": [String: String]()])
        }
        router.post("forge/run-scheduled-trigger") { _, _ -> Response in
            let status = try await forge.runScheduledTrigger()
            guard (200..<300).contains(status) else { throw HTTPError(.badGateway, message: "the app answered \(status)") }
            return Response(status: .seeOther, headers: [.location: "/"])
        }
        router.get("ex/jira/:cloudId/rest/api/3/serverInfo") { _, context in
            guard context.parameters.get("cloudId") == forge.cloudId else { return Response(status: .notFound) }
            return Self.json(["baseUrl": forge.siteURL, "deploymentType": "Cloud", "serverTitle": "Local Jira stand-in"])
        }
    }

    static func json(_ object: Any, status: HTTPResponse.Status = .ok) -> Response {
        let data = (try? JSONSerialization.data(withJSONObject: object, options: [.sortedKeys, .withoutEscapingSlashes])) ?? Data("{}".utf8)
        return Response(
            status: status, headers: [.contentType: "application/json", .cacheControl: "no-store"], body: .init(byteBuffer: ByteBuffer(data: data)))
    }

    static let customUIContentTypes = [
        "html": "text/html; charset=utf-8", "js": "text/javascript; charset=utf-8", "mjs": "text/javascript; charset=utf-8",
        "css": "text/css; charset=utf-8", "svg": "image/svg+xml", "json": "application/json", "png": "image/png",
    ]

    /// The import map that points `@forge/bridge` at the stand-in.
    static let importMap = #"{"imports":{"@forge/bridge":"/forge/bridge-standin.js"}}"#

    /// A file of the Custom UI source folder. Only plain names below the folder (no `..`, no
    /// hidden files, no symlink out of it) with a known type; `index.html` gets the import map
    /// and a Content-Security-Policy like Forge's (scripts and styles from the app only).
    static func customUIFile(forge: ForgeSite, segments: [Substring]) throws -> Response {
        var names: [String] = []
        for segment in segments {
            guard let name = segment.removingPercentEncoding, !name.isEmpty, !name.hasPrefix("."),
                !name.contains("/"), !name.contains("\\"), !name.contains("\0")
            else { throw HTTPError(.notFound) }
            names.append(name)
        }
        guard let last = names.last, let type = customUIContentTypes[(last as NSString).pathExtension.lowercased()] else {
            throw HTTPError(.notFound)
        }
        let root = forge.sourceRoot.path
        let file = names.reduce(forge.sourceRoot) { $0.appendingPathComponent($1) }.standardizedFileURL.resolvingSymlinksInPath()
        var isDirectory: ObjCBool = false
        guard file.path.hasPrefix(root + "/"), FileManager.default.fileExists(atPath: file.path, isDirectory: &isDirectory), !isDirectory.boolValue,
            let data = FileManager.default.contents(atPath: file.path)
        else { throw HTTPError(.notFound) }
        var headers: HTTPFields = [.contentType: type, .cacheControl: "no-store"]
        guard last == "index.html" else { return Response(status: .ok, headers: headers, body: .init(byteBuffer: ByteBuffer(data: data))) }

        var html = String(decoding: data, as: UTF8.self)
        let tag = "<script type=\"importmap\">\(importMap)</script>"
        if let script = html.range(of: "<script", options: .caseInsensitive) {
            html.insert(contentsOf: tag, at: script.lowerBound)
        } else if let head = html.range(of: "</head>", options: .caseInsensitive) {
            html.insert(contentsOf: tag, at: head.lowerBound)
        } else {
            html = tag + html
        }
        let hash = Data(SHA256.hash(data: Data(importMap.utf8))).base64EncodedString()
        let manifest = forge.sourceRoot.deletingLastPathComponent().appendingPathComponent("manifest.yml")
        let inlineStyles = (try? String(contentsOf: manifest, encoding: .utf8))?.contains("unsafe-inline") == true
        headers[.contentSecurityPolicy] =
            "default-src 'self'; script-src 'self' 'sha256-\(hash)'; style-src 'self'\(inlineStyles ? " 'unsafe-inline'" : ""); "
            + "img-src 'self' data: blob:; connect-src 'self'; object-src 'none'; base-uri 'self'; frame-ancestors 'self'"
        return Response(status: .ok, headers: headers, body: .init(byteBuffer: ByteBuffer(string: html)))
    }
}
