import TextCoding
import Foundation
import JWTKit

/// What a verified Forge Invocation Token says about a call. Forge sets everything here but
/// `issueID`/`issueKey`: those come from the token's `context`, which Atlassian's "App context
/// security" page says the browser can alter, so a route must check them with Jira before use.
public struct ForgeInvocation: Sendable {
    /// `app.installationId`, an installation ARI: the tenant.
    public var installationID: String
    /// The site's cloudId, from the installation's contexts or the apiBaseUrl (never from the
    /// browser-side `context`).
    public var cloudID: String?
    /// Where Jira's REST API is called for this installation.
    public var apiBaseURL: URL
    /// `app.module`: which of the app's modules made the call (a UI module's type and key, or
    /// `core:endpoint` and the endpoint's key for triggers). Set by Forge, not by the browser.
    public var module: ForgeModule
    /// Whether the token carries a `context`: Forge adds one to frontend calls only.
    public var hasUIContext: Bool
    /// The calling user's account; nil for anonymous users and for events.
    public var principal: String?
    /// `context.extension.issue`, when the call comes from an issue view module (alterable in
    /// the browser: check it with Jira).
    public var issueID: String?
    public var issueKey: String?
}

/// A module as a Forge Invocation Token names it (`app.module`).
public struct ForgeModule: Sendable, Hashable, CustomStringConvertible {
    public var type: String
    public var key: String
    public init(type: String, key: String) {
        self.type = type
        self.key = key
    }
    /// What Forge puts in `app.module.type` for every call that is not from a UI module:
    /// triggers, scheduled triggers, preUninstall.
    public static let endpointType = "core:endpoint"
    public var description: String { "\(type)/\(key)" }
}

/// Verifies Forge Invocation Tokens: RS256 only, the key by `kid` from Forge's JWKS,
/// `iss` = `forge/invocation-token`, `aud` and `app.id` = our app id, `exp`/`nbf`/`iat` with
/// leeway. No database read: a heartbeat's check costs one RSA verification.
public struct ForgeTokenVerifier: Sendable {
    public static let issuer = "forge/invocation-token"

    public let appID: String
    /// `app.environment.id` every token must carry, when configured (`FORGE_ENVIRONMENT_ID`).
    public let environmentID: String?
    public let leeway: TimeInterval
    let keySet: ForgeKeySet
    private let now: @Sendable () -> Date
    /// Decoded headers by their encoded text.
    let headers = BoundedCache<[UInt8], Header>(capacity: 16)
    /// `httpURL` by the text it was made from (nil for text that is not one).
    private let urls = BoundedCache<String, URL?>(capacity: 256)

    public init(
        appID: String, keySet: ForgeKeySet, environmentID: String? = nil, leeway: TimeInterval = 10,
        now: @escaping @Sendable () -> Date = Date.init
    ) {
        self.appID = appID
        self.environmentID = environmentID
        self.keySet = keySet
        self.leeway = leeway
        self.now = now
    }

    /// Verifies the token in an `Authorization: Bearer …` header value.
    public func verify(authorization: String?) async throws(ForgeTokenRejection) -> ForgeInvocation {
        guard let authorization, let token = Self.bearerToken(authorization) else { throw .missing }
        return try await verify(token: token)
    }

    public func verify(token: String) async throws(ForgeTokenRejection) -> ForgeInvocation {
        try await verify(token: Substring(token))
    }

    /// Every step works on the token's bytes: Foundation's string searching and base64 were
    /// most of a Forge heartbeat's CPU time (scripts/bench profile, docs/benchmarks.md).
    func verify(token: Substring) async throws(ForgeTokenRejection) -> ForgeInvocation {
        // A token is a native string: copied in one go, not byte by byte.
        let bytes = token.utf8.withContiguousStorageIfAvailable(Array.init) ?? Array(token.utf8)
        guard bytes.count <= 16 * 1024, let firstDot = bytes.firstIndex(of: UInt8(ascii: ".")),
            let secondDot = bytes[(firstDot + 1)...].firstIndex(of: UInt8(ascii: ".")),
            !bytes[(secondDot + 1)...].contains(UInt8(ascii: "."))
        else { throw .malformed }
        let header = try headers.value(for: Array(bytes[..<firstDot]), make: Self.header(encoded:))
        guard header.alg == "RS256" else { throw .algorithmNotAllowed }
        guard let kid = header.kid, !kid.isEmpty else { throw .missingKeyID }
        guard Self.isPlausibleKeyID(kid) else { throw .unknownKeyID }
        let algorithm = try await keySet.algorithm(for: kid)
        // The signature over `header.payload`, checked by jwt-kit's RS256 verifier; only then
        // are the claims read.
        guard let signature = Base64URL.decode(bytes[(secondDot + 1)...]), let payload = Base64URL.decode(bytes[(firstDot + 1)..<secondDot])
        else { throw .malformed }
        guard (try? algorithm.verify(signature, signs: bytes[..<secondDot])) == true else { throw .badSignature }
        let claims: ForgeInvocationClaims
        do {
            claims = try ForgeInvocationClaims(json: payload)
        } catch {
            throw .malformedClaims
        }
        return try check(claims)
    }

    /// The token of `Bearer <token>` (the scheme in any case), without surrounding blanks.
    static func bearerToken(_ value: String) -> Substring? {
        let utf8 = value.utf8
        guard let afterScheme = utf8.index(utf8.startIndex, offsetBy: 6, limitedBy: utf8.endIndex), afterScheme < utf8.endIndex,
            ASCII.equalsIgnoringCase(utf8[..<afterScheme], "bearer"), ASCII.isBlank(utf8[afterScheme])
        else { return nil }
        let token = ASCII.trimmingBlanks(utf8[afterScheme...])
        return token.isEmpty ? nil : value[token.startIndex..<token.endIndex]
    }

    func check(_ claims: ForgeInvocationClaims) throws(ForgeTokenRejection) -> ForgeInvocation {
        let current = now().timeIntervalSince1970
        guard claims.iss == Self.issuer else { throw .wrongIssuer }
        guard claims.aud.contains(appID) else { throw .wrongAudience }
        guard claims.app.id == appID else { throw .wrongApp }
        guard current <= claims.exp + leeway else { throw .expired }
        if let nbf = claims.nbf, nbf > current + leeway { throw .notYetValid }
        if let iat = claims.iat, iat > current + leeway { throw .notYetValid }
        if let environmentID, claims.app.environment?.id != environmentID { throw .wrongEnvironment }
        guard let installationID = claims.app.installationId ?? claims.app.installation?.id else { throw .missingInstallation }
        // Both places name one installation, and it is an installation ARI: never a Connect
        // clientKey or any other tenant's key (the tenants table holds both doors).
        guard Self.isInstallationARI(installationID), claims.app.installation?.id.map({ $0 == installationID }) ?? true else {
            throw .badInstallation
        }
        guard let moduleType = claims.app.module?.type, let moduleKey = claims.app.module?.key, !moduleType.isEmpty, !moduleKey.isEmpty else {
            throw .missingModule
        }
        let contexts = claims.app.installation?.contexts ?? []
        let jira = contexts.first { $0.name == "jira" } ?? contexts.first
        guard let apiBase = claims.app.apiBaseUrl ?? jira?.apiBaseUrl, let apiBaseURL = urls.value(for: apiBase, make: Self.httpURL) else {
            throw .missingAPIBaseURL
        }
        let issue = claims.context?.extension?.issue
        return ForgeInvocation(
            installationID: installationID,
            cloudID: (jira?.cloudId ?? Self.cloudID(fromAPIBase: apiBaseURL)).flatMap { Self.isPlausibleIdentifier($0) ? $0 : nil },
            apiBaseURL: apiBaseURL,
            module: ForgeModule(type: moduleType, key: moduleKey),
            hasUIContext: claims.context != nil,
            principal: claims.principal.flatMap { $0.isEmpty ? nil : $0 },
            issueID: issue?.id,
            issueKey: issue?.key
        )
    }

    struct Header: Decodable, Sendable {
        var alg: String?
        var kid: String?
        var icLabel: String?
    }

    static func header(encoded: [UInt8]) throws(ForgeTokenRejection) -> Header {
        guard let json = Base64URL.decode(encoded), let header = try? JSONDecoder().decode(Header.self, from: Data(json)) else {
            throw .malformed
        }
        if let label = header.icLabel, !isICLabel(label) { throw .badICLabel }
        return header
    }

    /// kids come from an unverified header: only short plain identifiers are looked up.
    static func isPlausibleKeyID(_ kid: String) -> Bool {
        kid.utf8.count <= 256
            && kid.utf8.allSatisfy { byte in
                (0x30...0x39).contains(byte) || (0x41...0x5A).contains(byte) || (0x61...0x7A).contains(byte) || "-_.:/+=".utf8.contains(byte)
            }
    }

    /// Installation and cloud ids (ARIs, UUIDs): printable ASCII without spaces, at most 255 bytes.
    static func isPlausibleIdentifier(_ value: String) -> Bool {
        !value.isEmpty && value.utf8.count <= 255 && value.utf8.allSatisfy { (0x21...0x7E).contains($0) }
    }

    static let installationPrefix = "ari:cloud:ecosystem::installation/"

    /// `ari:cloud:ecosystem::installation/<uuid>`, as Forge forms installation ids.
    public static func isInstallationARI(_ value: String) -> Bool {
        let utf8 = value.utf8
        guard utf8.count == installationPrefix.utf8.count + 36, utf8.starts(with: installationPrefix.utf8) else { return false }
        return utf8.dropFirst(installationPrefix.utf8.count).enumerated().allSatisfy { index, byte in
            [8, 13, 18, 23].contains(index) ? byte == UInt8(ascii: "-") : ASCII.hexValue(byte) != nil
        }
    }

    static func isICLabel(_ label: String) -> Bool {
        (1...50).contains(label.utf8.count)
            && label.utf8.allSatisfy { (0x61...0x7A).contains($0) || (0x30...0x39).contains($0) || $0 == 0x5F || $0 == 0x2D }
    }

    static func httpURL(_ text: String) -> URL? {
        guard let components = URLComponents(string: text), let scheme = components.scheme?.lowercased(),
            scheme == "https" || scheme == "http", components.host?.isEmpty == false, components.query == nil,
            let url = components.url
        else { return nil }
        return url.absoluteString.hasSuffix("/") ? URL(string: String(url.absoluteString.dropLast())) : url
    }

    /// `https://api.atlassian.com/ex/jira/<cloudId>` → `<cloudId>`.
    static func cloudID(fromAPIBase url: URL) -> String? {
        let components = url.path.split(separator: "/")
        guard components.count >= 3, components[components.count - 3] == "ex", components[components.count - 2] == "jira" else { return nil }
        return String(components[components.count - 1])
    }

    /// For messages: a value from an unverified header, cut short and without control characters.
    static func printable(_ value: String) -> String {
        String(String.UnicodeScalarView(value.unicodeScalars.prefix(16).filter { $0.value >= 0x20 && $0.value < 0x7F }))
    }
}
