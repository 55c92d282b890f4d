import Foundation

/// The change feed's wire format: statements that change an issue's viewers notify
/// `channel` with the issue as payload, `<bytes of client_key>:<client_key><issue_id>`
/// (length-prefixed, so no character of either value needs escaping).
public enum ViewerChanges {
    public static let channel = "whoslooking_viewers"

    /// The notification, for a row source with `client_key` and `issue_id` columns.
    static let notifyCall: StaticString = "pg_notify('whoslooking_viewers', octet_length(client_key) || ':' || client_key || issue_id)"

    /// The issue a payload names; nil for anything else.
    public static func issue(fromPayload payload: String) -> IssueRef? {
        let bytes = Array(payload.utf8)
        guard let colon = bytes.firstIndex(of: UInt8(ascii: ":")), colon > 0, colon <= 6 else { return nil }
        guard let length = Int(String(decoding: bytes[..<colon], as: UTF8.self)), length > 0 else { return nil }
        let tenantStart = colon + 1
        guard bytes.count - tenantStart > length else { return nil }
        let tenant = String(decoding: bytes[tenantStart..<(tenantStart + length)], as: UTF8.self)
        let issueID = String(decoding: bytes[(tenantStart + length)...], as: UTF8.self)
        return IssueRef(tenant: tenant, issueID: issueID)
    }
}

/// A short fingerprint of what a panel shows for a list of viewers: who, in which state,
/// since when, under which name and avatar. Not who is asking (every panel of the issue gets
/// the same version) and not the order. Panels send it back when they wait, so that only a
/// list that differs is sent to them.
public enum ViewerListVersion {
    public static func of(_ viewers: [Viewer]) -> String {
        // FNV-1a (64 bits): stable across processes and instances, unlike Swift's Hasher.
        var hash: UInt64 = 0xcbf2_9ce4_8422_2325
        func mix(_ text: String) {
            for byte in text.utf8 {
                hash ^= UInt64(byte)
                hash &*= 0x0000_0100_0000_01b3
            }
            hash ^= 0x1f
            hash &*= 0x0000_0100_0000_01b3
        }
        for viewer in viewers.filter(\.isPerson).sorted(by: { $0.accountID < $1.accountID }) {
            mix(viewer.accountID)
            mix(viewer.isAway ? "away" : "active")
            mix(String(Int(viewer.since.timeIntervalSince1970)))
            if case .found(let name, let avatar) = viewer.details {
                mix(name ?? "")
                mix(avatar ?? "")
            }
        }
        let hex = String(hash, radix: 16)
        return String(repeating: "0", count: 16 - hex.count) + hex
    }

    /// What a panel may send as a version: empty (it has none yet) or up to 64 of
    /// `[A-Za-z0-9_-]`.
    public static func isWellFormed(_ text: String) -> Bool {
        text.utf8.count <= 64
            && text.utf8.allSatisfy { byte in
                switch byte {
                case UInt8(ascii: "a")...UInt8(ascii: "z"), UInt8(ascii: "A")...UInt8(ascii: "Z"), UInt8(ascii: "0")...UInt8(ascii: "9"),
                    UInt8(ascii: "-"), UInt8(ascii: "_"):
                    true
                default: false
                }
            }
    }
}
