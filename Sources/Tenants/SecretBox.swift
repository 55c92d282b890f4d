import Crypto
import Foundation

/// Seals tenants' shared secrets at rest with AES-256-GCM, under the current key; opens them
/// under the current or a previous key (key rotation), chosen by the stored key id.
public struct SecretBox: Sendable {
    public struct Failure: Error, CustomStringConvertible {
        public var description: String
    }

    private let key: SymmetricKey
    /// The raw key, for deriving keys of other purposes (HKDF) shared by every instance.
    public var keyMaterial: SymmetricKey { key }
    /// A short fingerprint of the key, stored beside each sealed value so rotation can tell keys apart.
    public let keyID: String

    /// `base64Key`: 32 random bytes, base64 (e.g. `openssl rand -base64 32`).
    public init(base64Key: String) throws {
        guard let bytes = Data(base64Encoded: base64Key.trimmingCharacters(in: .whitespacesAndNewlines)), bytes.count == 32 else {
            throw Failure(description: "the key must be 32 random bytes, base64-encoded")
        }
        key = SymmetricKey(data: bytes)
        keyID = SHA256.hash(data: bytes).prefix(4).map { String(format: "%02x", $0) }.joined()
        previous = []
    }

    /// Keys being rotated out, by key id: still opened, re-sealed under the current key at
    /// start-up, never used to seal.
    public private(set) var previous: [(keyID: String, key: SymmetricKey)]
    /// Keys being rotated in (the first step of a rolling rotation): opened, never used to
    /// seal, and never re-sealed away, so instances still on the old key can open what
    /// instances already on the new one seal.
    public private(set) var next: [(keyID: String, key: SymmetricKey)] = []

    /// The same box, also able to open what `base64Keys` sealed, re-sealing it at start-up.
    public func addingPrevious(_ base64Keys: [String]) throws -> SecretBox {
        var box = self
        for base64 in base64Keys {
            let old = try SecretBox(base64Key: base64)
            if old.keyID != keyID { box.previous.append((old.keyID, old.key)) }
        }
        return box
    }

    /// The same box, also able to open what `base64Keys` sealed, leaving it sealed as it is.
    public func addingNext(_ base64Keys: [String]) throws -> SecretBox {
        var box = self
        for base64 in base64Keys {
            let new = try SecretBox(base64Key: base64)
            if new.keyID != keyID { box.next.append((new.keyID, new.key)) }
        }
        return box
    }

    /// Every other key's material, so tickets signed by instances on either side of a rotation verify.
    public var previousKeyMaterial: [SymmetricKey] { (previous + next).map(\.key) }

    /// A new random key, base64.
    public static func generateKey() -> String {
        SymmetricKey(size: .bits256).withUnsafeBytes { Data($0).base64EncodedString() }
    }

    /// `context` (the tenant's clientKey) is authenticated but not stored in the box.
    public func seal(_ secret: String, context: String) throws -> [UInt8] {
        let box = try AES.GCM.seal(Data(secret.utf8), using: key, authenticating: Data(context.utf8))
        guard let combined = box.combined else { throw Failure(description: "AES-GCM gave no combined form") }
        return Array(combined)
    }

    /// Opens a value sealed under the key `keyID` (nil: the current key).
    public func open(_ sealed: [UInt8], context: String, keyID sealedWith: String? = nil) throws -> String {
        let opener: SymmetricKey
        if let sealedWith, sealedWith != keyID {
            guard let old = (previous + next).first(where: { $0.keyID == sealedWith }) else {
                throw Failure(
                    description: "sealed under key \(sealedWith), which is not SECRET_ENCRYPTION_KEY, nor in SECRET_ENCRYPTION_KEY_PREVIOUS or _NEXT"
                )
            }
            opener = old.key
        } else {
            opener = key
        }
        do {
            let box = try AES.GCM.SealedBox(combined: sealed)
            return String(decoding: try AES.GCM.open(box, using: opener, authenticating: Data(context.utf8)), as: UTF8.self)
        } catch {
            throw Failure(description: "cannot open a sealed secret (wrong SECRET_ENCRYPTION_KEY?)")
        }
    }

    /// The embedded default's key: read from `file`, or generated once and written with mode 0600.
    public static func loadOrCreateKeyFile(_ file: URL) throws -> String {
        if let existing = try? String(contentsOf: file, encoding: .utf8) {
            return existing.trimmingCharacters(in: .whitespacesAndNewlines)
        }
        try FileManager.default.createDirectory(at: file.deletingLastPathComponent(), withIntermediateDirectories: true)
        let key = generateKey()
        guard FileManager.default.createFile(atPath: file.path, contents: Data((key + "\n").utf8), attributes: [.posixPermissions: 0o600]) else {
            throw Failure(description: "cannot write the secret key file \(file.path)")
        }
        return key
    }
}
