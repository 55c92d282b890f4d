import TextCoding
import Foundation
import JWTKit

/// The claims of a Connect JWT. Checks beyond the signature are made by `ConnectTokenVerifier`,
/// one by one, so a rejection can say which check failed.
public struct ConnectClaims: JWTPayload, Equatable {
    public var iss: String
    public var sub: String?
    public var aud: Audience?
    public var iat: Double?
    public var exp: Double?
    public var qsh: String?

    public init(iss: String, sub: String? = nil, aud: Audience? = nil, iat: Double?, exp: Double?, qsh: String?) {
        self.iss = iss
        self.sub = sub
        self.aud = aud
        self.iat = iat
        self.exp = exp
        self.qsh = qsh
    }

    public func verify(using algorithm: some JWTAlgorithm) async throws {}

    /// `aud` is a string or an array of strings.
    public struct Audience: Codable, Sendable, Equatable {
        public var values: [String]
        public init(_ values: [String]) { self.values = values }

        public init(from decoder: any Decoder) throws {
            let container = try decoder.singleValueContainer()
            if let single = try? container.decode(String.self) {
                values = [single]
            } else {
                values = try container.decode([String].self)
            }
        }

        public func encode(to encoder: any Encoder) throws {
            var container = encoder.singleValueContainer()
            if values.count == 1 { try container.encode(values[0]) } else { try container.encode(values) }
        }
    }

    /// The `qsh` value Jira puts in tokens minted by `AP.context.getToken()`.
    public static let contextQSH = "context-qsh"
}

/// The parts of a JWT we read before trusting it: which key to use.
public struct UnverifiedToken: Sendable {
    public struct Header: Codable, Sendable {
        public var alg: String?
        public var kid: String?
        public var typ: String?
    }

    public let header: Header
    public let claims: ConnectClaims

    public init(_ token: String) throws(TokenRejection) {
        let parts = token.split(separator: ".", omittingEmptySubsequences: false)
        guard parts.count == 3,
            let headerData = Data(base64URL: parts[0]),
            let header = try? JSONDecoder().decode(Header.self, from: headerData),
            let claimsData = Data(base64URL: parts[1]),
            let claims = try? JSONDecoder().decode(ConnectClaims.self, from: claimsData)
        else { throw .malformed }
        // The issuer picks the tenant, so it reaches the database before anything is verified:
        // only something that can be a client key goes on (1 to 255 bytes, no control characters;
        // PostgreSQL text cannot hold a NUL and would answer an error, not "unknown").
        guard Self.isPlausibleIdentifier(claims.iss) else { throw .invalidIssuer }
        self.header = header
        self.claims = claims
    }

    /// 1 to `maxIdentifierBytes` UTF-8 bytes with no control characters: what a client key or an
    /// account id can be.
    public static func isPlausibleIdentifier(_ value: String) -> Bool {
        (1...maxIdentifierBytes).contains(value.utf8.count) && TokenRejection.hasNoControlCharacters(value)
    }

    /// A client key is at most 255 characters (the lifecycle payload's limit), and ASCII in practice.
    public static let maxIdentifierBytes = 255
}
