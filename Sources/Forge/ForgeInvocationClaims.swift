/// The claims of a Forge Invocation Token (FIT): what Forge says about a call it proxies to
/// our remote, read once the token's signature is checked; `ForgeTokenVerifier` checks them
/// with its own clock and leeway. Only the fields we use are read; unknown ones are ignored,
/// and identifiers that the docs show as strings are also accepted as numbers. A field of the
/// wrong type (a number for `iss`, an object for `principal`) makes the claims malformed, as
/// it would with `Codable`; absent and `null` optional fields are nil.
public struct ForgeInvocationClaims: Sendable {
    public struct App: Sendable {
        public struct Module: Sendable {
            public var type: String?
            public var key: String?
        }
        public struct Environment: Sendable {
            public var type: String?
            public var id: String?
        }
        public struct Installation: Sendable {
            public struct Context: Sendable {
                public var name: String?
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
        public var environment: Environment?
        public var installation: Installation?
    }

    public struct Context: Sendable {
        public struct Extension: Sendable {
            public struct Issue: Sendable {
                public var id: String?
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
    /// One audience or several (`aud` may be a string or an array of strings).
    public var aud: [String]
    public var exp: Double
    public var nbf: Double?
    public var iat: Double?
    public var jti: String?
    public var app: App
    public var context: Context?
    /// The account of the user whose browser made the call; absent for anonymous users and events.
    public var principal: String?

    struct Malformed: Error {}

    /// The claims in a token's JSON payload; `Malformed` when it is not a JSON object of them.
    init(json payload: [UInt8]) throws(Malformed) {
        guard let json = JSONValue.parse(payload) else { throw Malformed() }
        let claims = try Fields(json)
        iss = try claims.required(claims.string("iss"))
        switch claims.member("aud") {
        case .string(let audience)?: aud = [audience]
        case .array(let audiences)?:
            aud = try audiences.map { value throws(Malformed) in
                guard case .string(let audience) = value else { throw Malformed() }
                return audience
            }
        default: throw Malformed()
        }
        exp = try claims.required(claims.double("exp"))
        nbf = try claims.double("nbf")
        iat = try claims.double("iat")
        jti = try claims.string("jti")
        let app = try claims.required(claims.object("app"))
        self.app = App(
            id: try app.required(app.string("id")),
            appVersion: try app.string("appVersion"),
            installationId: try app.string("installationId"),
            apiBaseUrl: try app.string("apiBaseUrl"),
            module: try app.object("module").map { module throws(Malformed) in
                App.Module(type: try module.string("type"), key: try module.string("key"))
            },
            environment: try app.object("environment").map { environment throws(Malformed) in
                App.Environment(type: try environment.string("type"), id: try environment.string("id"))
            },
            installation: try app.object("installation").map { installation throws(Malformed) in
                App.Installation(
                    id: try installation.string("id"),
                    contexts: try installation.objects("contexts")?.map { context throws(Malformed) in
                        App.Installation.Context(
                            name: try context.string("name"), cloudId: try context.string("cloudId"), apiBaseUrl: try context.string("apiBaseUrl"))
                    }
                )
            }
        )
        context = try claims.object("context").map { context throws(Malformed) in
            Context(
                cloudId: try context.string("cloudId"),
                siteUrl: try context.string("siteUrl"),
                moduleKey: try context.string("moduleKey"),
                localId: try context.string("localId"),
                extension: try context.object("extension").map { found throws(Malformed) in
                    Context.Extension(
                        type: try found.string("type"),
                        issue: try found.object("issue").map { issue throws(Malformed) in
                            Context.Extension.Issue(id: try issue.identifier("id"), key: try issue.string("key"))
                        }
                    )
                }
            )
        }
        principal = try claims.string("principal")
    }
}

/// One JSON object's members, read with the types the claims expect.
private struct Fields {
    let members: [JSONValue.Member]

    func member(_ key: String) -> JSONValue? {
        members.first { $0.key == key }?.value
    }

    init(_ value: JSONValue) throws(ForgeInvocationClaims.Malformed) {
        guard case .object(let members) = value else { throw ForgeInvocationClaims.Malformed() }
        self.members = members
    }

    func required<Value>(_ value: Value?) throws(ForgeInvocationClaims.Malformed) -> Value {
        guard let value else { throw ForgeInvocationClaims.Malformed() }
        return value
    }

    func string(_ key: String) throws(ForgeInvocationClaims.Malformed) -> String? {
        switch member(key) {
        case nil, .null?: nil
        case .string(let text)?: text
        default: throw ForgeInvocationClaims.Malformed()
        }
    }

    func double(_ key: String) throws(ForgeInvocationClaims.Malformed) -> Double? {
        switch member(key) {
        case nil, .null?: return nil
        case .number(let text)?:
            guard let value = Double(text), value.isFinite else { throw ForgeInvocationClaims.Malformed() }
            return value
        default: throw ForgeInvocationClaims.Malformed()
        }
    }

    /// A string, or a whole number written as one (issue ids are strings in Forge's examples).
    func identifier(_ key: String) throws(ForgeInvocationClaims.Malformed) -> String? {
        switch member(key) {
        case .number(let text)?:
            guard let whole = Int64(text) else { throw ForgeInvocationClaims.Malformed() }
            return String(whole)
        default: return try string(key)
        }
    }

    func object(_ key: String) throws(ForgeInvocationClaims.Malformed) -> Fields? {
        switch member(key) {
        case nil, .null?: nil
        case let value?: try Fields(value)
        }
    }

    func objects(_ key: String) throws(ForgeInvocationClaims.Malformed) -> [Fields]? {
        switch member(key) {
        case nil, .null?: return nil
        case .array(let elements)?: return try elements.map { element throws(ForgeInvocationClaims.Malformed) in try Fields(element) }
        default: throw ForgeInvocationClaims.Malformed()
        }
    }
}
