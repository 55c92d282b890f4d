import TextCoding
import Crypto
import _CryptoExtras
import Foundation
import Hummingbird
import JWTKit
import Synchronization

/// Forge's side of an invocation, for tests: RSA keys by kid, a JWKS over real HTTP that
/// publishes one of them (and counts its fetches), and invocation tokens signed with jwt-kit,
/// never with the app's code.
public final class FakeForge: Sendable {
    public struct KeyPair: Sendable {
        public let kid: String
        public let privateKey: _RSA.Signing.PrivateKey
    }

    public static let appID = "ari:cloud:ecosystem::app/6f2a7c1e-0b7d-4c55-9a51-1d2e3f405060"
    public let published: KeyPair
    /// A key the JWKS does not hold: an attacker's.
    public let unpublished: KeyPair
    private let fetchCount = Mutex(0)
    /// Keys the JWKS publishes besides `published` (a key rotation).
    private let rotatedIn = Mutex<[KeyPair]>([])

    /// Publishes `key` from now on, as Forge does when it rotates its signing key.
    public func publish(_ key: KeyPair) { rotatedIn.withLock { $0.append(key) } }

    public var jwksFetches: Int { fetchCount.withLock { $0 } }

    public init() throws {
        published = KeyPair(
            kid: "forge/invocation-token/test-\(UUID().uuidString.prefix(8).lowercased())",
            privateKey: try _RSA.Signing.PrivateKey(keySize: .bits2048))
        unpublished = KeyPair(
            kid: "forge/invocation-token/rogue-\(UUID().uuidString.prefix(8).lowercased())",
            privateKey: try _RSA.Signing.PrivateKey(keySize: .bits2048))
    }

    /// Serves the JWKS at `GET /jwks.json` while `body` runs.
    public func withJWKS<Result: Sendable>(_ body: @Sendable (_ jwksURL: String) async throws -> Result) async throws -> Result {
        let router = Router()
        router.get("jwks.json") { _, _ -> Response in
            self.fetchCount.withLock { $0 += 1 }
            let json = try Self.jwks([self.published] + self.rotatedIn.withLock { $0 })
            return Response(status: .ok, headers: [.contentType: "application/json"], body: .init(byteBuffer: ByteBuffer(string: json)))
        }
        return try await LiveServer.run(router: router) { port in
            try await body("http://127.0.0.1:\(port)/jwks.json")
        }
    }

    static func jwks(_ keys: [KeyPair]) throws -> String {
        let entries = try keys.map { pair -> [String: String] in
            let primitives = try pair.privateKey.publicKey.getKeyPrimitives()
            return [
                "kty": "RSA", "kid": pair.kid, "alg": "RS256", "use": "sig",
                "n": primitives.modulus.base64URLEncodedString(), "e": primitives.publicExponent.base64URLEncodedString(),
            ]
        }
        return String(decoding: try JSONSerialization.data(withJSONObject: ["keys": entries]), as: UTF8.self)
    }

    /// The claims of an invocation from the issue panel, as the Forge docs show them.
    public static func panelClaims(
        installationID: String = "ari:cloud:ecosystem::installation/1b4e28ba-2fa1-11d2-883f-0016d3cca427",
        cloudID: String = "4a3b2c1d-0000-4000-8000-00000000c10d",
        principal: String? = "557058:alice",
        issueID: String? = "10001", issueKey: String? = "DEMO-1",
        apiBaseURL: String? = nil,
        now: Date = Date(), lifetime: TimeInterval = 25
    ) -> [String: Any] {
        let iat = now.timeIntervalSince1970.rounded(.down)
        let apiBase = apiBaseURL ?? "https://api.atlassian.com/ex/jira/\(cloudID)"
        var claims: [String: Any] = [
            "iss": "forge/invocation-token", "aud": appID, "iat": iat, "nbf": iat, "exp": iat + lifetime,
            "jti": UUID().uuidString,
            "app": [
                "id": appID, "appVersion": "1.0.0", "installationId": installationID,
                "apiBaseUrl": apiBase,
                "environment": ["type": "DEVELOPMENT", "id": "e1"],
                "module": ["type": "jira:issueContext", "key": "wl-panel"],
                "installation": ["id": installationID, "contexts": [["name": "jira", "apiBaseUrl": apiBase, "cloudId": cloudID]]] as [String: Any],
            ] as [String: Any],
        ]
        var extensionContext: [String: Any] = ["type": "jira:issueContext", "project": ["id": "10000", "key": "DEMO"]]
        if let issueID, let issueKey { extensionContext["issue"] = ["id": issueID, "key": issueKey] }
        claims["context"] =
            ["cloudId": cloudID, "siteUrl": "https://acme.atlassian.net", "moduleKey": "wl-panel", "localId": "l1", "extension": extensionContext]
            as [String: Any]
        if let principal { claims["principal"] = principal }
        return claims
    }

    /// The claims of a trigger's call (lifecycle, preUninstall, scheduled), as the Forge Remote
    /// contract describes them: `app.module` is `core:endpoint` and the endpoint's key, and
    /// there is neither a `context` nor a `principal`.
    public static func triggerClaims(
        endpoint: String, installationID: String = "ari:cloud:ecosystem::installation/1b4e28ba-2fa1-11d2-883f-0016d3cca427",
        cloudID: String = "4a3b2c1d-0000-4000-8000-00000000c10d", apiBaseURL: String? = nil
    ) -> [String: Any] {
        var claims = panelClaims(
            installationID: installationID, cloudID: cloudID, principal: nil, issueID: nil, issueKey: nil, apiBaseURL: apiBaseURL)
        claims["context"] = nil
        var app = claims["app"] as! [String: Any]
        app["module"] = ["type": "core:endpoint", "key": endpoint]
        claims["app"] = app
        return claims
    }

    /// An RS256 token over `claims`, signed by jwt-kit with `key` (the published one by default)
    /// under `kid` (the key's own by default; nil for none).
    public func token(_ claims: [String: Any], key: KeyPair? = nil, kid: String?? = .none) async throws -> String {
        let key = key ?? published
        let keys = JWTKeyCollection()
        let chosenKid: String? = kid ?? key.kid
        await keys.add(
            rsa: try Insecure.RSA.PrivateKey(backing: key.privateKey), digestAlgorithm: .sha256, kid: chosenKid.map { JWKIdentifier(string: $0) })
        return try await keys.sign(RawClaims(claims), kid: chosenKid.map { JWKIdentifier(string: $0) })
    }

    /// A system token as Forge hands them over: opaque to the app, JWT-shaped with an `exp`.
    public static func systemToken(expiresIn seconds: TimeInterval = 3 * 3600) -> String {
        let exp = Int(Date().timeIntervalSince1970 + seconds)
        return Data(#"{"alg":"RS256","typ":"JWT"}"#.utf8).base64URLEncodedString() + "."
            + Data(#"{"exp":\#(exp),"jti":"\#(UUID().uuidString)"}"#.utf8).base64URLEncodedString() + "."
            + Data((0..<32).map { _ in UInt8.random(in: 0...255) }).base64URLEncodedString()
    }

    /// HS256 keyed with the published public key's PEM: the classic algorithm confusion.
    public func confusedToken(_ claims: [String: Any]) async throws -> String {
        let keys = JWTKeyCollection()
        await keys.add(
            hmac: HMACKey(from: published.privateKey.publicKey.pemRepresentation), digestAlgorithm: .sha256, kid: JWKIdentifier(string: published.kid)
        )
        return try await keys.sign(RawClaims(claims), kid: JWKIdentifier(string: published.kid))
    }

    /// `alg: none`, no signature.
    public func unsignedToken(_ claims: [String: Any]) throws -> String {
        Data(#"{"alg":"none","typ":"JWT","kid":"\#(published.kid)"}"#.utf8).base64URLEncodedString() + "."
            + (try JSONEncoder().encode(AnyJSON(claims))).base64URLEncodedString() + "."
    }
}

/// Any JSON object built in Swift as a jwt-kit payload, so tests can shape claims freely.
public struct RawClaims: JWTPayload, @unchecked Sendable {
    let object: [String: Any]

    public init(_ object: [String: Any]) {
        self.object = object
    }

    public init(from decoder: any Decoder) throws {
        throw DecodingError.dataCorrupted(.init(codingPath: [], debugDescription: "tests only sign RawClaims"))
    }

    public func encode(to encoder: any Encoder) throws {
        var container = encoder.singleValueContainer()
        try container.encode(AnyJSON(object))
    }

    public func verify(using algorithm: some JWTAlgorithm) async throws {}
}

/// Encodes Swift values of JSON's shapes (Bool, Int, Double, String, arrays, dictionaries).
struct AnyJSON: Encodable {
    let value: Any
    init(_ value: Any) { self.value = value }

    func encode(to encoder: any Encoder) throws {
        var container = encoder.singleValueContainer()
        switch value {
        case let flag as Bool where type(of: value) == Bool.self: try container.encode(flag)
        case let number as Int: try container.encode(number)
        case let number as Double:
            if number.rounded() == number, abs(number) < 1e15 { try container.encode(Int64(number)) } else { try container.encode(number) }
        case let text as String: try container.encode(text)
        case let array as [Any]: try container.encode(array.map(AnyJSON.init))
        case let object as [String: Any]: try container.encode(object.mapValues(AnyJSON.init))
        default: throw EncodingError.invalidValue(value, .init(codingPath: encoder.codingPath, debugDescription: "not JSON"))
        }
    }
}
