import AsyncHTTPClient
import Foundation
import JWTKit
import Logging
import NIOCore
import NIOFoundationCompat
import Synchronization

/// Forge's public keys for invocation tokens: the JWKS at `FORGE_JWKS_URL`, fetched on the
/// first token and again when a token names a kid we do not hold. An unknown kid is cheap for
/// anyone to send, so fetches are at least `refetchInterval` (5 s) apart, and a kid the key
/// server did not list when last asked is not a reason to ask again for `missingKidTTL` (60 s):
/// one junk kid costs one fetch a minute, a stream of fresh junk kids one fetch per interval,
/// and a key Forge publishes now verifies within the interval instead of waiting out a minute
/// that a junk kid started. One fetch at a time; RSA keys only,
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
    private let missingKidTTL: Duration
    private let retryAfterFailure: Duration
    private let maxKeys: Int
    private let logger: Logger

    /// kid → RS256 verifier (jwt-kit's), replaced whole by each fetch.
    private nonisolated let algorithms = Mutex<[String: any JWTAlgorithm]>([:])
    private var lastFetch: ContinuousClock.Instant?
    private var lastFetchFailed = false
    /// Kids asked for that the last fetch after the asking did not list, and since when; bounded.
    private var missing: [String: ContinuousClock.Instant] = [:]
    /// The fetch under way; concurrent callers await this one instead of starting their own.
    private var fetching: Task<Void, Never>?

    public init(
        jwksURL: String, httpClient: HTTPClient = .shared, timeout: TimeAmount = .seconds(5),
        refetchInterval: Duration = .seconds(5), missingKidTTL: Duration = .seconds(60), retryAfterFailure: Duration = .seconds(5),
        maxKeys: Int = 64, logger: Logger
    ) {
        self.jwksURL = jwksURL
        self.httpClient = httpClient
        self.timeout = timeout
        self.refetchInterval = refetchInterval
        self.missingKidTTL = missingKidTTL
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
        var asked = false
        if let fetching {
            await fetching.value
            asked = true
        } else if mayFetch(for: kid) {
            let task = Task { await self.fetch() }
            fetching = task
            await task.value
            fetching = nil
            asked = true
        }
        let (known, isEmpty) = algorithms.withLock { ($0[kid], $0.isEmpty) }
        if let known { return known }
        // Only a kid the key server was asked about and did not list: one refused because the
        // last fetch was too recent must still be looked up once the interval has passed.
        if asked, !lastFetchFailed { rememberMissing(kid) }
        throw lastFetchFailed && isEmpty ? .keyServerUnavailable : .unknownKeyID
    }

    private func rememberMissing(_ kid: String) {
        let now = ContinuousClock.now
        if missing[kid] != nil { return }
        if missing.count >= 1024 { missing = missing.filter { now - $0.value < missingKidTTL } }
        if missing.count >= 1024 { missing.removeAll(keepingCapacity: true) }
        missing[kid] = now
    }

    private func mayFetch(for kid: String) -> Bool {
        guard let lastFetch else { return true }
        let now = ContinuousClock.now
        if !lastFetchFailed, let since = missing[kid], now - since < missingKidTTL { return false }
        return now - lastFetch >= (lastFetchFailed ? retryAfterFailure : refetchInterval)
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
