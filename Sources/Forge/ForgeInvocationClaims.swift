import Foundation
import JWTKit

/// The claims of a Forge Invocation Token (FIT): what Forge says about a call it proxies to
/// our remote, read once jwt-kit has checked the signature; `ForgeTokenVerifier` checks them
/// with its own clock and leeway. Only the fields we use are decoded; unknown ones are ignored, and identifiers
/// that the docs show as strings are also accepted as numbers.
public struct ForgeInvocationClaims: Codable, Sendable {
    public struct App: Codable, Sendable {
        public struct Module: Codable, Sendable {
            public var type: String?
            public var key: String?
        }
        public struct Installation: Codable, Sendable {
            public struct Context: Codable, Sendable {
                public var cloudId: String?
                public var apiBaseUrl: String?
            }
            public var id: String?
            public var contexts: [Context]?
        }
        public var id: String
        public var appVersion: String?
        public var installationId: String?
        public var apiBaseUrl: String?
        public var module: Module?
        public var installation: Installation?
    }

    public struct Context: Codable, Sendable {
        public struct Extension: Codable, Sendable {
            public struct Issue: Codable, Sendable {
                public var id: LooseString?
                public var key: String?
            }
            public var type: String?
            public var issue: Issue?
        }
        public var cloudId: String?
        public var siteUrl: String?
        public var moduleKey: String?
        public var localId: String?
        public var `extension`: Extension?
    }

    public var iss: String
    public var aud: AudienceClaim
    public var exp: Double
    public var nbf: Double?
    public var iat: Double?
    public var jti: String?
    public var app: App
    public var context: Context?
    /// The account of the user whose browser made the call; absent for anonymous users and events.
    public var principal: String?
}

/// A string that may arrive as a JSON number (issue ids are strings in Forge's examples).
public struct LooseString: Codable, Sendable, Equatable {
    public var value: String

    public init(_ value: String) { self.value = value }

    public init(from decoder: any Decoder) throws {
        let container = try decoder.singleValueContainer()
        if let text = try? container.decode(String.self) {
            value = text
        } else {
            value = String(try container.decode(Int64.self))
        }
    }

    public func encode(to encoder: any Encoder) throws {
        var container = encoder.singleValueContainer()
        try container.encode(value)
    }
}
