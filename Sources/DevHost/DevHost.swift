import AsyncHTTPClient
import Connect
import Crypto
import _CryptoExtras
import Foundation
import Hummingbird
import JWTKit
import Logging
import NIOFoundationCompat

/// A stand-in for a Jira Cloud site, toward the app over real HTTP: it installs the app with a
/// real signed install (its own RSA key, published under `/install-keys/{kid}`), serves issue
/// pages with the app's panel in an iframe signed as Jira signs it, an all.js stand-in, and the
/// REST user and personal data endpoints, verifying the app's JWTs. With a Forge configuration
/// it also plays Forge's part for the same site (`ForgeSite`, `/forge/...`).
///
/// Its signing goes through jwt-kit (RS256 and HS256), not the app's own HS256 code; only the
/// canonical request is shared, and Atlassian's vectors guard that.
public final class DevHost: Sendable {
    public struct Configuration: Sendable {
        public var port: Int
        /// The app instance that is installed (descriptor, signed install, Forge lifecycle).
        public var appURL: String
        public var host: String
        /// Also play Forge's part for a Forge app (`ForgeSite`); nil: Connect only.
        public var forge: ForgeSite.Configuration?
        /// More instances of the same app on the same database (as behind a load balancer).
        /// They are never installed (the site is in the shared database): an issue page with
        /// `via=N` (2 and up) shows the panel from the Nth instance, and its Forge calls go there.
        public var otherAppURLs: [String]
        public init(
            port: Int = 2990, appURL: String = "http://localhost:8080", host: String = "127.0.0.1", forge: ForgeSite.Configuration? = nil,
            otherAppURLs: [String] = []
        ) {
            self.port = port
            self.appURL = Self.trimmed(appURL)
            self.host = host
            self.forge = forge
            self.otherAppURLs = otherAppURLs.map(Self.trimmed)
        }

        /// Every instance, the installed one first: `via=N` picks the Nth.
        public var appURLs: [String] { [appURL] + otherAppURLs }

        static func trimmed(_ url: String) -> String { url.hasSuffix("/") ? String(url.dropLast()) : url }
    }

    let configuration: Configuration
    let logger: Logger
    let state: DevHostState
    let kid = "devhost-\(UUID().uuidString.prefix(8).lowercased())"
    let privateKey: _RSA.Signing.PrivateKey
    /// The Forge side of the same site, when configured.
    public let forge: ForgeSite?

    /// The site's own URL, which the app sees as the tenant's baseUrl.
    public var baseURL: String { "http://localhost:\(configuration.port)" }

    public init(configuration: Configuration, logger: Logger) throws {
        self.configuration = configuration
        self.logger = logger
        self.privateKey = try _RSA.Signing.PrivateKey(keySize: .bits2048)
        self.state = DevHostState()
        self.forge = try configuration.forge.map {
            try ForgeSite(
                configuration: $0, siteURL: "http://localhost:\(configuration.port)", appURL: configuration.appURL,
                otherAppURLs: configuration.otherAppURLs, logger: logger)
        }
    }

    /// Serves until cancelled, installing the app (retrying until it answers).
    public func run() async throws {
        let app = Application(
            router: router(),
            configuration: .init(address: .hostname(configuration.host, port: configuration.port), serverName: "whoslooking-devhost"),
            logger: logger
        )
        try await withThrowingTaskGroup(of: Void.self) { group in
            group.addTask { await self.installWhenReachable() }
            if let forge = self.forge {
                group.addTask { await forge.installWhenReachable() }
            }
            // The server runs until a shutdown signal; installs still waiting for the app stop then.
            try await app.runService()
            group.cancelAll()
        }
    }

    func installWhenReachable() async {
        while !Task.isCancelled {
            do {
                try await install()
                return
            } catch {
                logger.info("waiting for the app to install it", metadata: ["app": "\(configuration.appURL)", "reason": "\(error)"])
                try? await Task.sleep(for: .seconds(1))
            }
        }
    }

    struct Descriptor: Decodable {
        struct Lifecycle: Decodable { var installed: String }
        struct Panel: Decodable { var url: String }
        struct Modules: Decodable { var webPanels: [Panel] }
        var key: String
        var baseUrl: String
        var lifecycle: Lifecycle
        var modules: Modules
    }

    struct Failure: Error, CustomStringConvertible { var description: String }

    /// Fetches the descriptor and performs a signed install with a fresh shared secret.
    func install() async throws {
        let descriptorResponse = try await HTTPClient.shared.execute(
            HTTPClientRequest(url: configuration.appURL + "/atlassian-connect.json"), timeout: .seconds(5))
        guard descriptorResponse.status == .ok else { throw Failure(description: "descriptor answered \(descriptorResponse.status.code)") }
        let descriptor = try JSONDecoder().decode(Descriptor.self, from: Data(buffer: try await descriptorResponse.body.collect(upTo: 1 << 20)))
        guard let panelURL = descriptor.modules.webPanels.first?.url else { throw Failure(description: "the descriptor has no web panel") }

        let clientKey = "devhost:\(configuration.port)"
        let sharedSecret = Data((0..<32).map { _ in UInt8.random(in: 0...255) }).base64EncodedString()
        let appBase = descriptor.baseUrl.hasSuffix("/") ? String(descriptor.baseUrl.dropLast()) : descriptor.baseUrl
        let installURL = appBase + descriptor.lifecycle.installed
        let appBasePath = URLComponents(string: appBase)?.percentEncodedPath ?? ""
        let now = Date().timeIntervalSince1970.rounded(.down)
        let claims = ConnectClaims(
            iss: clientKey, aud: .init([descriptor.baseUrl]), iat: now, exp: now + 180,
            qsh: CanonicalRequest(
                method: "POST", target: URLComponents(string: installURL)?.percentEncodedPath ?? "/installed", basePath: appBasePath
            ).qsh
        )
        let keys = JWTKeyCollection()
        await keys.add(rsa: try Insecure.RSA.PrivateKey(backing: privateKey), digestAlgorithm: .sha256, kid: JWKIdentifier(string: kid))
        let token = try await keys.sign(claims, kid: JWKIdentifier(string: kid))

        let body: [String: String] = [
            "key": descriptor.key, "clientKey": clientKey, "sharedSecret": sharedSecret, "baseUrl": baseURL,
            "displayUrl": baseURL, "productType": "jira", "description": "Local Jira stand-in", "eventType": "installed",
        ]
        var request = HTTPClientRequest(url: installURL)
        request.method = .POST
        request.headers.add(name: "Authorization", value: "JWT \(token)")
        request.headers.add(name: "Content-Type", value: "application/json")
        request.body = .bytes(ByteBuffer(data: try JSONSerialization.data(withJSONObject: body)))
        let response = try await HTTPClient.shared.execute(request, timeout: .seconds(10))
        let answer = String(buffer: try await response.body.collect(upTo: 1 << 16))
        guard response.status.code == 200 || response.status.code == 204 else {
            throw Failure(description: "install answered \(response.status.code) \(answer)")
        }
        await state.installed(
            .init(
                clientKey: clientKey, sharedSecret: sharedSecret, appBase: appBase, appBasePath: appBasePath, appKey: descriptor.key,
                panelURL: panelURL))
        logger.notice("app installed", metadata: ["app": "\(appBase)", "clientKey": "\(clientKey)"])
    }
}

/// What an install established.
actor DevHostState {
    struct Installation: Sendable {
        var clientKey: String
        var sharedSecret: String
        var appBase: String
        var appBasePath: String
        var appKey: String
        var panelURL: String
    }

    private(set) var installation: Installation?
    private(set) var reportedAccounts: [String] = []

    func installed(_ installation: Installation) { self.installation = installation }
    func reported(_ accounts: [String]) { reportedAccounts.append(contentsOf: accounts) }
}
