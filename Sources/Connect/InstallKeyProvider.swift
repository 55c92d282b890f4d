import AsyncHTTPClient
import Foundation
import JWTKit
import Logging
import NIOCore

/// Atlassian's public keys for signed installs, fetched by `kid` from the key server
/// (`CONNECT_INSTALL_KEYS_URL/<kid>`, PEM) with a timeout, and cached per kid.
///
/// The kid comes from the header of a token nobody has verified yet (anyone can post to
/// `/installed`), so fetching is bounded every way: only a plain identifier is ever put in a
/// URL; a kid the key server did not know is refused without asking again for `missTTL`, in
/// a map of at most `maxMisses` kids (the oldest forgotten first); at most
/// `maxFetchesPerWindow` fetches per `fetchWindow` for all kids together (beyond that a new
/// kid is answered "key server unavailable", a 503, and keys already held keep working); and
/// one fetch at a time per kid, shared by every request that wants it meanwhile.
public actor InstallKeyProvider {
    public struct Limits: Sendable {
        /// How long a kid the key server did not know is refused without asking again.
        public var missTTL: Duration = .seconds(60)
        /// Most unknown kids remembered; the oldest is forgotten first.
        public var maxMisses = 1000
        /// Most fetches from the key server per `fetchWindow`, all kids together.
        public var maxFetchesPerWindow = 30
        public var fetchWindow: Duration = .seconds(60)
        /// Most keys held (Atlassian publishes a handful); the oldest is dropped first.
        public var maxKeys = 64

        public init() {}
    }

    public let baseURL: String
    private let httpClient: HTTPClient
    private let timeout: TimeAmount
    private let limits: Limits
    private let logger: Logger
    /// Keys by kid, with when each was fetched (to drop the oldest when full).
    private var keys: [String: (key: Insecure.RSA.PublicKey, at: ContinuousClock.Instant)] = [:]
    /// Kids the server said it does not know, with when we asked.
    private var misses: [String: ContinuousClock.Instant] = [:]
    /// When each fetch of the current window started.
    private var recentFetches: [ContinuousClock.Instant] = []
    /// The fetch under way per kid; concurrent callers for that kid await it instead of starting their own.
    private var fetching: [String: Task<Insecure.RSA.PublicKey, any Error>] = [:]
    private var limitLoggedAt: ContinuousClock.Instant?

    public init(baseURL: String, httpClient: HTTPClient = .shared, timeout: TimeAmount = .seconds(5), limits: Limits = Limits(), logger: Logger) {
        self.baseURL = baseURL.hasSuffix("/") ? String(baseURL.dropLast()) : baseURL
        self.httpClient = httpClient
        self.timeout = timeout
        self.limits = limits
        self.logger = logger
    }

    /// How many unknown kids are remembered now (never more than `maxMisses`).
    public var rememberedMisses: Int { misses.count }

    /// Only a plain identifier from an unverified header may become part of a URL: 1 to 128
    /// ASCII letters, digits, `-`, `_` and `.`, starting with a letter or digit, no `..`.
    public static func isPlausibleKeyID(_ kid: String) -> Bool {
        let scalars = kid.unicodeScalars
        guard (1...128).contains(scalars.count), let first = scalars.first, first.isASCIIAlphanumeric, !kid.contains("..") else {
            return false
        }
        return scalars.allSatisfy { $0.isASCIIAlphanumeric || $0 == "-" || $0 == "_" || $0 == "." }
    }

    public func publicKey(kid: String) async throws -> Insecure.RSA.PublicKey {
        guard Self.isPlausibleKeyID(kid) else { throw TokenRejection.unknownKeyID }
        if let known = keys[kid] { return known.key }
        if let askedAt = misses[kid] {
            if ContinuousClock.now - askedAt < limits.missTTL { throw TokenRejection.unknownKeyID }
            misses[kid] = nil
        }
        if let shared = fetching[kid] { return try await shared.value }
        guard mayFetch() else { throw TokenRejection.keyServerUnavailable }

        let task = Task { try await self.fetch(kid: kid) }
        fetching[kid] = task
        defer { fetching[kid] = nil }
        return try await task.value
    }

    /// Counts this fetch against the window, or answers false when the window is full.
    private func mayFetch() -> Bool {
        let now = ContinuousClock.now
        recentFetches.removeAll { now - $0 >= limits.fetchWindow }
        guard recentFetches.count < limits.maxFetchesPerWindow else {
            if limitLoggedAt.map({ now - $0 >= limits.fetchWindow }) ?? true {
                limitLoggedAt = now
                logger.warning("install key fetch limit reached; refusing new kids for now", metadata: ["limit": "\(limits.maxFetchesPerWindow)"])
            }
            return false
        }
        recentFetches.append(now)
        return true
    }

    private func fetch(kid: String) async throws -> Insecure.RSA.PublicKey {
        let request = HTTPClientRequest(url: "\(baseURL)/\(kid)")
        let response: HTTPClientResponse
        let body: ByteBuffer
        do {
            response = try await httpClient.execute(request, timeout: timeout)
            body = try await response.body.collect(upTo: 64 * 1024)
        } catch {
            logger.warning("install key server unreachable", metadata: ["kid": "\(kid)", "error": "\(error)"])
            throw TokenRejection.keyServerUnavailable
        }
        switch response.status.code {
        case 200:
            do {
                let key = try Insecure.RSA.PublicKey(pem: String(buffer: body))
                remember(key: key, kid: kid)
                return key
            } catch {
                logger.warning("install key server sent an unreadable key", metadata: ["kid": "\(kid)"])
                throw TokenRejection.keyServerUnavailable
            }
        case 404, 410:
            rememberMiss(kid: kid)
            throw TokenRejection.unknownKeyID
        default:
            logger.warning("install key server answered an error", metadata: ["kid": "\(kid)", "status": "\(response.status.code)"])
            throw TokenRejection.keyServerUnavailable
        }
    }

    private func remember(key: Insecure.RSA.PublicKey, kid: String) {
        if keys.count >= limits.maxKeys, let oldest = keys.min(by: { $0.value.at < $1.value.at })?.key {
            keys[oldest] = nil
        }
        keys[kid] = (key, .now)
    }

    private func rememberMiss(kid: String) {
        let now = ContinuousClock.now
        if misses.count >= limits.maxMisses {
            misses = misses.filter { now - $0.value < limits.missTTL }
        }
        if misses.count >= limits.maxMisses, let oldest = misses.min(by: { $0.value < $1.value })?.key {
            misses[oldest] = nil
        }
        misses[kid] = now
    }
}

extension Unicode.Scalar {
    fileprivate var isASCIIAlphanumeric: Bool {
        ("a"..."z").contains(self) || ("A"..."Z").contains(self) || ("0"..."9").contains(self)
    }
}
