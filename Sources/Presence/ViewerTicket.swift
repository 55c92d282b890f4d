import Connect
import Crypto
import Foundation

/// What the panel route hands the panel's script: proof that Jira showed this user this issue's
/// panel in this tab, signed by us (HMAC-SHA256), so a heartbeat is verified without a
/// database read. Each heartbeat answers a fresh ticket; an old one expires.
public struct ViewerTicket: Codable, Sendable, Equatable {
    /// Tenant clientKey.
    public var tenant: String
    public var issueID: String
    public var issueKey: String
    public var accountID: String
    /// One per page load, so a user's tabs count separately until the last one leaves.
    public var tabID: String
    /// Seconds since 1970.
    public var expires: Double

    enum CodingKeys: String, CodingKey {
        case tenant = "t", issueID = "i", issueKey = "k", accountID = "a", tabID = "b", expires = "e"
    }

    public init(tenant: String, issueID: String, issueKey: String, accountID: String, tabID: String, expires: Double) {
        self.tenant = tenant
        self.issueID = issueID
        self.issueKey = issueKey
        self.accountID = accountID
        self.tabID = tabID
        self.expires = expires
    }

    public var viewer: ViewerKey { ViewerKey(tenant: tenant, issueID: issueID, accountID: accountID, tabID: tabID) }
}

/// Signs and verifies tickets with a key of our own.
public struct ViewerTicketSigner: Sendable {
    public enum Rejection: Error, Equatable, CustomStringConvertible {
        case malformed, badSignature, expired
        public var description: String {
            switch self {
            case .malformed: "malformed ticket"
            case .badSignature: "bad ticket signature"
            case .expired: "ticket expired"
            }
        }
    }

    private let key: SymmetricKey
    /// Keys of secrets being rotated out: tickets they signed still verify until they expire.
    private let previousKeys: [SymmetricKey]
    public let lifetime: TimeInterval

    /// `secret`: key material shared by every instance (derived from SECRET_ENCRYPTION_KEY).
    public init(secret: SymmetricKey, previousSecrets: [SymmetricKey] = [], lifetime: TimeInterval = 3600) {
        key = Self.ticketKey(secret)
        previousKeys = previousSecrets.map(Self.ticketKey)
        self.lifetime = lifetime
    }

    /// A key of its own for this one purpose, so a ticket MAC can never double as anything else.
    static func ticketKey(_ secret: SymmetricKey) -> SymmetricKey {
        HKDF<SHA256>.deriveKey(inputKeyMaterial: secret, info: Data("whoslooking viewer ticket v1".utf8), outputByteCount: 32)
    }

    /// A ticket for a new tab, and its signed form for the page.
    public func issue(tenant: String, issueID: String, issueKey: String, accountID: String, tabID: String, now: Date = Date()) -> (ticket: ViewerTicket, signed: String) {
        let ticket = ViewerTicket(tenant: tenant, issueID: issueID, issueKey: issueKey, accountID: accountID, tabID: tabID,
                                  expires: (now.timeIntervalSince1970 + lifetime).rounded(.down))
        return (ticket, sign(ticket))
    }

    /// The same viewer, with a new expiry.
    public func refresh(_ ticket: ViewerTicket, now: Date = Date()) -> String {
        var renewed = ticket
        renewed.expires = (now.timeIntervalSince1970 + lifetime).rounded(.down)
        return sign(renewed)
    }

    public func sign(_ ticket: ViewerTicket) -> String {
        let payload = ((try? JSONEncoder().encode(ticket)) ?? Data()).base64URLEncodedString()
        let mac = HMAC<SHA256>.authenticationCode(for: Data(payload.utf8), using: key)
        return payload + "." + Data(mac).base64URLEncodedString()
    }

    public func verify(_ text: String, now: Date = Date()) throws(Rejection) -> ViewerTicket {
        let parts = text.split(separator: ".", omittingEmptySubsequences: false)
        guard parts.count == 2, text.utf8.count <= 4096, let mac = Data(base64URL: parts[1]) else { throw .malformed }
        let signed = Data(parts[0].utf8)
        guard ([key] + previousKeys).contains(where: { HMAC<SHA256>.isValidAuthenticationCode(mac, authenticating: signed, using: $0) }) else {
            throw .badSignature
        }
        guard let payload = Data(base64URL: parts[0]), let ticket = try? JSONDecoder().decode(ViewerTicket.self, from: payload) else {
            throw .malformed
        }
        guard ticket.expires >= now.timeIntervalSince1970 else { throw .expired }
        return ticket
    }
}
