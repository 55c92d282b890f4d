import TextCoding
import Foundation
import Synchronization

/// The system tokens Forge hands us (`x-forge-oauth-system`), per installation, in memory only:
/// never stored, logged or returned. Each is used until shortly before its `exp` (read without
/// verifying: the token is opaque to us, Jira checks it); a site with no fresh token waits for
/// the next call that brings one. Bounded: the oldest entries go first when full.
public final class ForgeSystemTokens: Sendable {
    struct Entry {
        var token: String
        var expires: Date
    }

    private let entries = Mutex<[String: Entry]>([:])
    private let maxEntries: Int
    /// Tokens this close to expiry are not used: a call takes time.
    private let margin: TimeInterval = 60

    public init(maxEntries: Int = 100_000) {
        self.maxEntries = maxEntries
    }

    public func remember(_ token: String?, installationID: String, now: Date = Date()) {
        guard let token, !token.isEmpty else { return }
        // Forge caches its tokens, so most calls bring the one already held: nothing to parse.
        if entries.withLock({ $0[installationID]?.token == token }) { return }
        guard token.utf8.count <= 16 * 1024, !token.utf8.contains(where: { $0 < 0x21 || $0 > 0x7E }) else { return }
        // Forge's tokens live at most 4 hours; one whose exp we cannot read is trusted for an hour.
        let stated = Self.expiry(of: token).map { min($0, now.addingTimeInterval(4 * 3600)) }
        let expires = stated ?? now.addingTimeInterval(3600)
        guard expires > now.addingTimeInterval(margin) else { return }
        entries.withLock { entries in
            if entries.count >= maxEntries, entries[installationID] == nil,
                let oldest = entries.min(by: { $0.value.expires < $1.value.expires })?.key
            {
                entries[oldest] = nil
            }
            entries[installationID] = Entry(token: token, expires: expires)
        }
    }

    /// A token still good for a while, or nil.
    public func token(installationID: String, now: Date = Date()) -> String? {
        entries.withLock { entries in
            guard let entry = entries[installationID] else { return nil }
            guard entry.expires > now.addingTimeInterval(margin) else {
                entries[installationID] = nil
                return nil
            }
            return entry.token
        }
    }

    public func forget(installationID: String) {
        entries.withLock { $0[installationID] = nil }
    }

    static func expiry(of token: String) -> Date? {
        let parts = token.split(separator: ".", omittingEmptySubsequences: false)
        guard parts.count == 3, let json = Base64URL.decode(parts[1].utf8),
            let object = try? JSONSerialization.jsonObject(with: Data(json)) as? [String: Any],
            let exp = (object["exp"] as? NSNumber)?.doubleValue, exp.isFinite
        else { return nil }
        return Date(timeIntervalSince1970: exp)
    }
}
