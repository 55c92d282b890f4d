import AsyncHTTPClient
import Foundation
import Logging
import Metrics
import NIOCore
import NIOHTTP1

/// How the app proves itself to a site's Jira.
public enum SiteCredentials: Sendable {
    /// A Connect site: each request signed with its shared secret (HS256 JWT with the request's qsh).
    case connect(baseURL: URL, sharedSecret: String)
    /// A Forge installation: its apiBaseUrl and a system token Forge handed us (`x-forge-oauth-system`).
    case bearer(apiBaseURL: URL, token: String)

    /// Where the REST API's paths are appended.
    public var baseURL: URL {
        switch self {
        case .connect(let baseURL, _): baseURL
        case .bearer(let apiBaseURL, _): apiBaseURL
        }
    }
}

/// Calls a tenant's Jira REST API as the app, every request authenticated and bounded in time.
public struct JiraClient: Sendable {
    public struct Response: Sendable {
        public var status: Int
        public var headers: HTTPHeaders
        public var body: ByteBuffer
    }

    public struct Failure: Error, CustomStringConvertible {
        public var description: String
        public init(description: String) { self.description = description }
    }

    private let httpClient: HTTPClient
    private let signer: JiraRequestSigner
    private let timeout: TimeAmount
    private let maxResponseBytes: Int

    public init(appKey: String, httpClient: HTTPClient = .shared, timeout: TimeAmount = .seconds(10), maxResponseBytes: Int = 4 * 1024 * 1024) {
        self.httpClient = httpClient
        self.signer = JiraRequestSigner(appKey: appKey)
        self.timeout = timeout
        self.maxResponseBytes = maxResponseBytes
    }

    /// GET `path` (beginning with `/`, relative to the tenant's baseUrl) with query items.
    public func get(tenantBaseURL: URL, sharedSecret: String, path: String, query: [URLQueryItem] = []) async throws -> Response {
        try await get(.connect(baseURL: tenantBaseURL, sharedSecret: sharedSecret), path: path, query: query)
    }

    /// GET `path` (beginning with `/`, relative to the site's REST base URL) with query items.
    public func get(_ site: SiteCredentials, path: String, query: [URLQueryItem] = []) async throws -> Response {
        var components = URLComponents(url: site.baseURL, resolvingAgainstBaseURL: false)!
        components.percentEncodedPath = (components.percentEncodedPath.hasSuffix("/") ? String(components.percentEncodedPath.dropLast()) : components.percentEncodedPath) + path
        if !query.isEmpty {
            // RFC 3986 encoding, the same the qsh uses, so what we send is what we hashed.
            components.percentEncodedQuery = query
                .map { CanonicalRequest.rfc3986Encode($0.name) + "=" + CanonicalRequest.rfc3986Encode($0.value ?? "") }
                .joined(separator: "&")
        }
        guard let url = components.url else { throw Failure(description: "cannot build a URL for \(path)") }
        return try await send(.GET, url: url, authorization: try authorization(.GET, url: url, site: site, signingBase: site.baseURL))
    }

    /// POSTs JSON to an absolute URL outside the tenant's site (e.g. Atlassian's personal data
    /// reporting API), signed with the tenant's secret; the qsh path is the URL's own path.
    public func postJSON(url: URL, sharedSecret: String, body: ByteBuffer) async throws -> Response {
        try await postJSON(url: url, credentials: .connect(baseURL: url, sharedSecret: sharedSecret), body: body)
    }

    /// POSTs JSON to an absolute URL outside the site (e.g. the personal data reporting API):
    /// JWT-signed for a Connect site (the qsh path is the URL's own), the token as Bearer for Forge.
    public func postJSON(url: URL, credentials: SiteCredentials, body: ByteBuffer) async throws -> Response {
        var root = URLComponents(url: url, resolvingAgainstBaseURL: false)!
        root.percentEncodedPath = ""
        root.percentEncodedQuery = nil
        return try await send(.POST, url: url, authorization: try authorization(.POST, url: url, site: credentials, signingBase: root.url ?? url), body: body)
    }

    private func authorization(_ method: HTTPMethod, url: URL, site: SiteCredentials, signingBase: URL) throws -> String {
        switch site {
        case .connect(_, let sharedSecret):
            try signer.authorization(method: method.rawValue, url: url, tenantBaseURL: signingBase, sharedSecret: sharedSecret)
        case .bearer(_, let token):
            "Bearer \(token)"
        }
    }

    private func send(_ method: HTTPMethod, url: URL, authorization: String, body: ByteBuffer? = nil) async throws -> Response {
        var request = HTTPClientRequest(url: url.absoluteString)
        request.method = method
        request.headers.add(name: "Authorization", value: authorization)
        request.headers.add(name: "Accept", value: "application/json")
        if let body {
            request.headers.add(name: "Content-Type", value: "application/json")
            request.body = .bytes(body)
        }
        let response: HTTPClientResponse
        do {
            response = try await httpClient.execute(request, timeout: timeout)
        } catch {
            Counter(label: "jira_requests_total", dimensions: [("status", "error")]).increment()
            throw error
        }
        Counter(label: "jira_requests_total", dimensions: [("status", String(response.status.code))]).increment()
        let collected = try await response.body.collect(upTo: maxResponseBytes)
        return Response(status: Int(response.status.code), headers: response.headers, body: collected)
    }
}
