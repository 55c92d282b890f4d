import TextCoding
import Connect
import Crypto
import _CryptoExtras
import Foundation
import Hummingbird
import JWTKit
import Logging
import ServiceLifecycle

/// Atlassian's side of a signed install, for tests: RSA key pairs by kid, a key server over
/// real HTTP that publishes some of them, and RS256 lifecycle tokens signed with jwt-kit.
public final class FakeAtlassian: Sendable {
    public struct KeyPair: Sendable {
        public let kid: String
        public let privateKey: _RSA.Signing.PrivateKey
        public var publicKeyPEM: String { privateKey.publicKey.pemRepresentation }
    }

    public let published: KeyPair
    /// A key the key server does not know: an attacker's.
    public let unpublished: KeyPair

    public init() throws {
        published = KeyPair(kid: "test-kid-\(UUID().uuidString.prefix(8))", privateKey: try _RSA.Signing.PrivateKey(keySize: .bits2048))
        unpublished = KeyPair(kid: "rogue-kid-\(UUID().uuidString.prefix(8))", privateKey: try _RSA.Signing.PrivateKey(keySize: .bits2048))
    }

    /// Every kid the key server was asked for, in order.
    public actor KeyFetches {
        public private(set) var kids: [String] = []
        public init() {}
        public var count: Int { kids.count }
        func add(_ kid: String) { kids.append(kid) }
    }

    /// Serves `GET /keys/{kid}` as PEM for the published key, 404 for anything else, while `body` runs;
    /// each answer after `delay`, each request recorded in `fetches`.
    public func withKeyServer<Result: Sendable>(
        delay: Duration = .zero,
        fetches: KeyFetches? = nil,
        _ body: @Sendable (_ keysURL: String) async throws -> Result
    ) async throws -> Result {
        let router = Router()
        let published = self.published
        // Every request counts, also those no route matches (an empty or odd kid).
        router.add(middleware: CountingMiddleware(fetches: fetches, delay: delay))
        router.get("keys/:kid") { _, context -> Response in
            guard context.parameters.get("kid") == published.kid else { return Response(status: .notFound) }
            return Response(
                status: .ok, headers: [.contentType: "application/x-pem-file"], body: .init(byteBuffer: ByteBuffer(string: published.publicKeyPEM)))
        }
        return try await LiveServer.run(router: router) { port in
            try await body("http://127.0.0.1:\(port)/keys")
        }
    }

    struct CountingMiddleware: RouterMiddleware {
        let fetches: KeyFetches?
        let delay: Duration

        func handle(
            _ request: Request, context: BasicRequestContext, next: (Request, BasicRequestContext) async throws -> Response
        ) async throws -> Response {
            let path = request.uri.path
            await fetches?.add(path.hasPrefix("/keys/") ? String(path.dropFirst("/keys/".count)) : path)
            if delay > .zero { try await Task.sleep(for: delay) }
            return try await next(request, context)
        }
    }

    /// An RS256 token as Atlassian signs lifecycle callbacks.
    public func lifecycleToken(
        key: KeyPair? = nil,
        kid: String? = nil,
        clientKey: String,
        audience: String,
        method: String = "POST",
        path: String,
        issuedAt: Date = Date(),
        lifetime: TimeInterval = 180,
        qsh: String? = nil
    ) async throws -> String {
        let key = key ?? published
        let keys = JWTKeyCollection()
        await keys.add(
            rsa: try Insecure.RSA.PrivateKey(backing: key.privateKey), digestAlgorithm: .sha256, kid: JWKIdentifier(string: kid ?? key.kid))
        let claims = ConnectClaims(
            iss: clientKey,
            aud: .init([audience]),
            iat: issuedAt.timeIntervalSince1970.rounded(.down),
            exp: issuedAt.timeIntervalSince1970.rounded(.down) + lifetime,
            qsh: qsh ?? CanonicalRequest(method: method, target: path).qsh
        )
        return try await keys.sign(claims, kid: JWKIdentifier(string: kid ?? key.kid))
    }

    /// A token with `alg: none` and no signature.
    public static func unsignedToken(_ claims: ConnectClaims) throws -> String {
        Data(#"{"alg":"none","typ":"JWT"}"#.utf8).base64URLEncodedString() + "." + (try JSONEncoder().encode(claims)).base64URLEncodedString() + "."
    }
}

/// Runs a Hummingbird router on a loopback port of its own while `body` runs, then shuts it
/// down gracefully: cancelling the server task instead can trip NIO's "deinited
/// NIOAsyncWriter" assertion when a connection is still queued.
public enum LiveServer {
    public static func run<Result: Sendable>(
        router: Router<BasicRequestContext>, _ body: @Sendable (Int) async throws -> Result
    ) async throws -> Result {
        let (portStream, portContinuation) = AsyncStream.makeStream(of: Int.self)
        let app = Application(
            router: router,
            configuration: .init(address: .hostname("127.0.0.1", port: 0)),
            onServerRunning: { channel in portContinuation.yield(channel.localAddress?.port ?? 0) }
        )
        let services = ServiceGroup(configuration: .init(services: [app], gracefulShutdownSignals: [], logger: Logger(label: "live-server")))
        return try await withThrowingTaskGroup(of: Void.self) { group in
            group.addTask { try await services.run() }
            var ports = portStream.makeAsyncIterator()
            guard let port = await ports.next() else { throw CancellationError() }
            let result: Result
            do {
                result = try await body(port)
            } catch {
                await services.triggerGracefulShutdown()
                try? await group.waitForAll()
                throw error
            }
            await services.triggerGracefulShutdown()
            try await group.waitForAll()
            return result
        }
    }
}
