import TextCoding
import Crypto
import Foundation

/// HS256 signing and verification with swift-crypto's HMAC.
///
/// Not jwt-kit's HMAC signer: it asserts keys of at least 32 bytes (and says that will become a
/// precondition), while Connect shared secrets are whatever the host chose: Atlassian's own
/// interoperability vectors are signed with an 18-byte secret.
public enum HS256 {
    public static func sign(_ claims: ConnectClaims, secret: String) throws -> String {
        let header = Data(#"{"alg":"HS256","typ":"JWT"}"#.utf8).base64URLEncodedString()
        let encoder = JSONEncoder()
        encoder.outputFormatting = .sortedKeys
        let payload = try encoder.encode(claims).base64URLEncodedString()
        let signingInput = header + "." + payload
        let signature = HMAC<SHA256>.authenticationCode(for: Data(signingInput.utf8), using: SymmetricKey(data: Data(secret.utf8)))
        return signingInput + "." + Data(signature).base64URLEncodedString()
    }

    /// The token's claims if its signature is valid for `secret` (compared in constant time).
    public static func verify(_ token: String, secret: String) throws(TokenRejection) -> ConnectClaims {
        let unverified = try UnverifiedToken(token)
        guard unverified.header.alg == "HS256" else { throw .algorithmNotAllowed }
        guard let lastDot = token.lastIndex(of: "."), let signature = Data(base64URL: token[token.index(after: lastDot)...]) else {
            throw .malformed
        }
        let signingInput = Data(token[..<lastDot].utf8)
        guard HMAC<SHA256>.isValidAuthenticationCode(signature, authenticating: signingInput, using: SymmetricKey(data: Data(secret.utf8))) else {
            throw .badSignature
        }
        return unverified.claims
    }
}
