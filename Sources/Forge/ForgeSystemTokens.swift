import TextCoding
import Foundation
import Synchronization

/// The system tokens Forge hands us (`x-forge-oauth-system`), per installation, in memory only:
/// never stored, logged or returned. Each is used until shortly before its `exp` (read without
/// verifying: the token is opaque to us, Jira checks it); a site with no fresh token waits for
/// the next call that brings one. Bounded: the oldest entries go first when full.
///
/// Calls race, so the one that arrives last may bring an older token: the token held is the
/// newest by `exp`, whatever the order. One Jira refused is forgotten (`forget(token:)`), so
/// that the next call's token is taken even when it is not newer.
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
            // The held token lasts as long or longer: keep it (one past its use has an earlier
            // expiry than any token that passed the guard above, so it is replaced).
            if let held = entries[installationID], held.expires >= expires { return }
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

    /// Uninstalled: whatever token is held goes.
    public func forget(installationID: String) {
        entries.withLock { $0[installationID] = nil }
    }

    /// Jira refused `token`: it goes, unless another has replaced it meanwhile (a newer token
    /// from a later call is not the one refused).
    public func forget(token: String, installationID: String) {
        entries.withLock { entries in
            if entries[installationID]?.token == token { entries[installationID] = nil }
        }
    }

    /// The `exp` of a JWT-shaped token: a JSON number, finite, in a payload that is one strict
    /// JSON object (`JSONValue`). Anything else (a string, a boolean, a key twice, trailing
    /// bytes) is no `exp` at all.
    static func expiry(of token: String) -> Date? {
        let parts = token.utf8.split(separator: UInt8(ascii: "."), omittingEmptySubsequences: false)
        guard parts.count == 3, let json = Base64URL.decode(parts[1]), case .object(let members)? = JSONValue.parse(json),
            case .number(let text)? = members.first(where: { $0.key == "exp" })?.value,
            let exp = Double(text), exp.isFinite
        else { return nil }
        return Date(timeIntervalSince1970: exp)
    }
}
