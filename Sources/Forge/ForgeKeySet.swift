import AsyncHTTPClient
import Foundation
import JWTKit
import Logging
import NIOCore
import NIOFoundationCompat
import Synchronization

/// Forge's public keys for invocation tokens: the JWKS at `FORGE_JWKS_URL`, fetched on the
/// first token and again only when a token names a kid we do not hold, at most once a
/// minute (an unknown kid is cheap for anyone to send). One fetch at a time; RSA keys only,
/// each used for RS256 alone whatever the JWKS says; at most `maxKeys`, so a hostile or
/// broken key server cannot grow memory.
///
/// Verification reads the keys it holds from a snapshot without entering the actor (jwt-kit's
/// own `JWTKeyCollection` is an actor, and verifying through it serialised every heartbeat's
/// RSA check on one executor); only fetching is the actor's.
public actor ForgeKeySet {
    public let jwksURL: String
    private let httpClient: HTTPClient
    private let timeout: TimeAmount
    private let refetchInterval: Duration
    private let retryAfterFailure: Duration
    private let maxKeys: Int
    private let logger: Logger

    /// kid → RS256 verifier (jwt-kit's), replaced whole by each fetch.
    private nonisolated let algorithms = Mutex<[String: any JWTAlgorithm]>([:])
    private var lastFetch: ContinuousClock.Instant?
    private var lastFetchFailed = false
    /// The fetch under way; concurrent callers await this one instead of starting their own.
    private var fetching: Task<Void, Never>?

    public init(
        jwksURL: String, httpClient: HTTPClient = .shared, timeout: TimeAmount = .seconds(5),
        refetchInterval: Duration = .seconds(60), retryAfterFailure: Duration = .seconds(5), maxKeys: Int = 64, logger: Logger
    ) {
        self.jwksURL = jwksURL
        self.httpClient = httpClient
        self.timeout = timeout
        self.refetchInterval = refetchInterval
        self.retryAfterFailure = retryAfterFailure
        self.maxKeys = maxKeys
        self.logger = logger
    }

    /// jwt-kit's RS256 verifier for the key named `kid`, fetching the key set if needed.
    public nonisolated func algorithm(for kid: String) async throws(ForgeTokenRejection) -> any JWTAlgorithm {
        if let known = algorithms.withLock({ $0[kid] }) { return known }
        return try await fetchedAlgorithm(for: kid)
    }

    private func fetchedAlgorithm(for kid: String) async throws(ForgeTokenRejection) -> any JWTAlgorithm {
        if let fetching {
            await fetching.value
        } else if mayFetch() {
            let task = Task { await self.fetch() }
            fetching = task
            await task.value
            fetching = nil
        }
        let (known, isEmpty) = algorithms.withLock { ($0[kid], $0.isEmpty) }
        if let known { return known }
        throw lastFetchFailed && isEmpty ? .keyServerUnavailable : .unknownKeyID
    }

    private func mayFetch() -> Bool {
        guard let lastFetch else { return true }
        return ContinuousClock.now - lastFetch >= (lastFetchFailed ? retryAfterFailure : refetchInterval)
    }

    private func fetch() async {
        lastFetch = .now
        do {
            let response = try await httpClient.execute(HTTPClientRequest(url: jwksURL), timeout: timeout)
            let body = try await response.body.collect(upTo: 256 * 1024)
            guard response.status == .ok else {
                throw Failure(description: "JWKS answered \(response.status.code)")
            }
            let set = try JSONDecoder().decode(KeySet.self, from: Data(buffer: body))
            var fresh: [String: any JWTAlgorithm] = [:]
            for key in set.keys.prefix(maxKeys) {
                guard key.kty == "RSA", key.alg == nil || key.alg == "RS256", key.use == nil || key.use == "sig",
                    let kid = key.kid, ForgeTokenVerifier.isPlausibleKeyID(kid), let n = key.n, let e = key.e,
                    let publicKey = try? Insecure.RSA.PublicKey(modulus: n, exponent: e)
                else { continue }
                // RS256 whatever the JWK says: the collection hands back jwt-kit's verifier for it.
                let collection = JWTKeyCollection()
                await collection.add(rsa: publicKey, digestAlgorithm: .sha256, kid: JWKIdentifier(string: kid))
                if let algorithm = try? await collection.getKey(for: JWKIdentifier(string: kid), alg: "RS256") {
                    fresh[kid] = algorithm
                }
            }
            let count = fresh.count
            algorithms.withLock { $0 = fresh }
            lastFetchFailed = false
            logger.info("fetched Forge signing keys", metadata: ["keys": "\(count)"])
        } catch {
            lastFetchFailed = true
            logger.warning("cannot fetch Forge signing keys", metadata: ["url": "\(jwksURL)", "error": "\(error)"])
        }
    }

    struct KeySet: Decodable {
        struct Key: Decodable {
            var kty: String?
            var kid: String?
            var alg: String?
            var use: String?
            var n: String?
            var e: String?
        }
        var keys: [Key]
    }

    struct Failure: Error, CustomStringConvertible { var description: String }
}
