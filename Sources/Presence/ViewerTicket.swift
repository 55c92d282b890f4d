import TextCoding
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
    /// When the panel was loaded (seconds since 1970): renewals keep it, and a chain of renewals
    /// ends `maxChainAge` after it. nil in tickets from before version 3.
    public var chainStarted: Double?
    /// The install of the site the ticket was issued in (`Tenant.generation`): a ticket of an
    /// earlier install records and lists nothing. Tickets from before version 4 count as the
    /// first install's, which is what every site was when generations began.
    public var generation: Int64 = 1

    enum CodingKeys: String, CodingKey {
        case tenant = "t", issueID = "i", issueKey = "k", accountID = "a", tabID = "b", expires = "e", chainStarted = "c"
    }

    public init(
        tenant: String, issueID: String, issueKey: String, accountID: String, tabID: String, expires: Double, chainStarted: Double? = nil,
        generation: Int64 = 1
    ) {
        self.tenant = tenant
        self.issueID = issueID
        self.issueKey = issueKey
        self.accountID = accountID
        self.tabID = tabID
        self.expires = expires
        self.chainStarted = chainStarted
        self.generation = generation
    }

    public var viewer: ViewerKey { ViewerKey(tenant: tenant, issueID: issueID, accountID: accountID, tabID: tabID) }
}

/// The signed payload. Version 4 is binary: a version byte, the expiry and the chain's start
/// as big-endian seconds and the install generation (8 bytes each), then each string as a
/// big-endian 16-bit length and its UTF-8 bytes. Version 3 was the same without the generation. Version 2 was the same without the chain's start; version 1 was JSON
/// (`Codable` above). Older tickets still verify while they live, so an upgrade does not log
/// anyone out. Binary because JSONEncoder/JSONDecoder were an eighth of a heartbeat's CPU
/// profile.
extension ViewerTicket {
    static let binaryVersion: UInt8 = 4
    static let binaryVersionWithoutGeneration: UInt8 = 3
    static let binaryVersionWithoutChain: UInt8 = 2

    var binaryPayload: [UInt8] {
        let fields = [tenant, issueID, issueKey, accountID, tabID]
        var bytes: [UInt8] = [chainStarted == nil ? Self.binaryVersionWithoutChain : Self.binaryVersion]
        bytes.reserveCapacity(25 + fields.reduce(0) { $0 + 2 + $1.utf8.count })
        withUnsafeBytes(of: Int64(expires).bigEndian) { bytes.append(contentsOf: $0) }
        if let chainStarted {
            withUnsafeBytes(of: Int64(chainStarted).bigEndian) { bytes.append(contentsOf: $0) }
            withUnsafeBytes(of: generation.bigEndian) { bytes.append(contentsOf: $0) }
        }
        for field in fields {
            // Each field was checked against a 255-character limit, far below 16 bits.
            let length = UInt16(clamping: field.utf8.count)
            bytes.append(UInt8(length >> 8))
            bytes.append(UInt8(length & 0xFF))
            bytes.append(contentsOf: field.utf8.prefix(Int(length)))
        }
        return bytes
    }

    init?(payload: [UInt8]) {
        switch payload.first {
        case let version?
        where version == Self.binaryVersion || version == Self.binaryVersionWithoutGeneration || version == Self.binaryVersionWithoutChain:
            var reader = PayloadReader(bytes: payload, offset: 1)
            guard let expires = reader.int64() else { return nil }
            var chainStarted: Int64?
            var generation: Int64 = 1
            if version != Self.binaryVersionWithoutChain {
                guard let started = reader.int64() else { return nil }
                chainStarted = started
            }
            if version == Self.binaryVersion {
                guard let issued = reader.int64(), issued > 0 else { return nil }
                generation = issued
            }
            guard let tenant = reader.string(), let issueID = reader.string(),
                let issueKey = reader.string(), let accountID = reader.string(), let tabID = reader.string(),
                reader.isAtEnd
            else { return nil }
            self.init(
                tenant: tenant, issueID: issueID, issueKey: issueKey, accountID: accountID, tabID: tabID, expires: Double(expires),
                chainStarted: chainStarted.map(Double.init), generation: generation
            )
        case UInt8(ascii: "{")?:
            guard let ticket = try? JSONDecoder().decode(ViewerTicket.self, from: Data(payload)) else { return nil }
            self = ticket
        default:
            return nil
        }
    }

    private struct PayloadReader {
        let bytes: [UInt8]
        var offset: Int

        var isAtEnd: Bool { offset == bytes.count }

        mutating func int64() -> Int64? {
            guard bytes.count - offset >= 8 else { return nil }
            defer { offset += 8 }
            return bytes[offset..<offset + 8].reduce(0) { $0 << 8 | Int64($1) }
        }

        mutating func string() -> String? {
            guard bytes.count - offset >= 2 else { return nil }
            let length = Int(bytes[offset]) << 8 | Int(bytes[offset + 1])
            offset += 2
            guard bytes.count - offset >= length else { return nil }
            defer { offset += length }
            return String(validating: bytes[offset..<offset + length], as: UTF8.self)
        }
    }
}

/// Signs and verifies tickets with a key of our own.
public struct ViewerTicketSigner: Sendable {
    public enum Rejection: Error, Equatable, CustomStringConvertible {
        case malformed, badSignature, expired, chainTooOld
        public var description: String {
            switch self {
            case .malformed: "malformed ticket"
            case .badSignature: "bad ticket signature"
            case .expired: "ticket expired"
            case .chainTooOld: "panel open too long: reload the page"
            }
        }
    }

    /// Keyed once: copying a keyed HMAC skips hashing the key on every ticket.
    private let keyedMAC: HMAC<SHA256>
    /// Keys of secrets being rotated out: tickets they signed still verify until they expire.
    private let previousKeyedMACs: [HMAC<SHA256>]
    public let lifetime: TimeInterval
    /// How long renewals keep a panel's tickets alive after the panel was loaded; then the
    /// panel must be reloaded (Jira signs a new panel URL, re-checking who is looking).
    public let maxChainAge: TimeInterval

    /// `secret`: key material shared by every instance (derived from SECRET_ENCRYPTION_KEY).
    public init(secret: SymmetricKey, previousSecrets: [SymmetricKey] = [], lifetime: TimeInterval = 3600, maxChainAge: TimeInterval = 12 * 3600) {
        keyedMAC = HMAC(key: Self.ticketKey(secret))
        previousKeyedMACs = previousSecrets.map { HMAC(key: Self.ticketKey($0)) }
        self.lifetime = lifetime
        self.maxChainAge = maxChainAge
    }

    private static func code(_ keyed: HMAC<SHA256>, _ bytes: some DataProtocol) -> HashedAuthenticationCode<SHA256> {
        var mac = keyed
        mac.update(data: bytes)
        return mac.finalize()
    }

    /// A key of its own for this one purpose, so a ticket MAC can never double as anything else.
    static func ticketKey(_ secret: SymmetricKey) -> SymmetricKey {
        HKDF<SHA256>.deriveKey(inputKeyMaterial: secret, info: Data("whoslooking viewer ticket v1".utf8), outputByteCount: 32)
    }

    /// A ticket for a new tab, and its signed form for the page.
    public func issue(
        tenant: String, issueID: String, issueKey: String, accountID: String, tabID: String, generation: Int64 = 1, now: Date = Date()
    ) -> (ticket: ViewerTicket, signed: String) {
        let started = now.timeIntervalSince1970.rounded(.down)
        let ticket = ViewerTicket(
            tenant: tenant, issueID: issueID, issueKey: issueKey, accountID: accountID, tabID: tabID,
            expires: min(started + lifetime, started + maxChainAge), chainStarted: started, generation: generation
        )
        return (ticket, sign(ticket))
    }

    /// The tab of a panel page: derived from Jira's signed panel URL (its JWT), so the same URL
    /// loaded again (a replay) is the same tab, not one more, while each page Jira renders
    /// (a fresh JWT) is a tab of its own. Keyed, so nobody can tell or choose it from the URL.
    public func tabID(forPanelToken token: String) -> String {
        var mac = keyedMAC
        mac.update(data: Array("panel-tab:".utf8) + Array(token.utf8))
        let bytes = Array(mac.finalize()).prefix(16)
        let hex = bytes.map { ($0 < 16 ? "0" : "") + String($0, radix: 16) }.joined()
        let parts = [hex.prefix(8), hex.dropFirst(8).prefix(4), hex.dropFirst(12).prefix(4), hex.dropFirst(16).prefix(4), hex.dropFirst(20)]
        return parts.joined(separator: "-")
    }

    /// The same viewer, with a new expiry, never past the end of its chain.
    public func refresh(_ ticket: ViewerTicket, now: Date = Date()) -> String {
        var renewed = ticket
        let started = chainStart(of: ticket)
        renewed.chainStarted = started
        renewed.expires = min((now.timeIntervalSince1970 + lifetime).rounded(.down), started + maxChainAge)
        return sign(renewed)
    }

    /// Tickets from before version 3 count their chain from their own issue.
    func chainStart(of ticket: ViewerTicket) -> Double {
        ticket.chainStarted ?? ticket.expires - lifetime
    }

    public func sign(_ ticket: ViewerTicket) -> String {
        let payload = Base64URL.encode(ticket.binaryPayload)
        let mac = Self.code(keyedMAC, payload)
        var signed = payload
        signed.append(UInt8(ascii: "."))
        signed.append(contentsOf: Base64URL.encode(Array(mac)))
        return String(decoding: signed, as: UTF8.self)
    }

    public func verify(_ text: String, now: Date = Date()) throws(Rejection) -> ViewerTicket {
        let bytes = Array(text.utf8)
        guard bytes.count <= 4096, let dot = bytes.firstIndex(of: UInt8(ascii: ".")) else { throw .malformed }
        let signed = bytes[..<dot]
        guard let mac = Base64URL.decode(bytes[(dot + 1)...]), mac.count == SHA256.byteCount else { throw .malformed }
        // HashedAuthenticationCode's == compares in constant time.
        guard Self.code(keyedMAC, signed) == mac || previousKeyedMACs.contains(where: { Self.code($0, signed) == mac }) else {
            throw .badSignature
        }
        guard let payload = Base64URL.decode(signed), let ticket = ViewerTicket(payload: payload) else { throw .malformed }
        guard now.timeIntervalSince1970 <= chainStart(of: ticket) + maxChainAge else { throw .chainTooOld }
        guard ticket.expires >= now.timeIntervalSince1970 else { throw .expired }
        return ticket
    }
}
