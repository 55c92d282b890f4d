import TextCoding
import Connect
import Foundation
import Hummingbird
import HummingbirdTesting
import JWTKit
import Tenants
import TestSupport
import Testing

@testable import WhosLookingApp

/// From a valid tenant token, one claim or header field changed at random: every change that
/// matters is refused and records nothing; the changes that do not matter (another viewer of
/// the same site, an extra claim) are accepted. Tokens are minted by jwt-kit, never by the
/// app's own HS256 code (issue 12, "a property test of the inbound JWT check").
@Suite("Inbound Connect JWTs, one field changed at random", .timeLimit(.minutes(3)))
struct InboundJWTPropertyTests {
    static let site = InboundJWTTests.tenantA
    static let other = InboundJWTTests.tenantB
    static let target = InboundJWTTests.panelTarget

    enum Change: CaseIterable {
        case issuerOfAnotherSite, unknownIssuer, noIssuer, expired, noExpiry, issuedInTheFuture
        case qshOfAnotherRequest, contextQSH, noQSH, otherSecret, algorithmNone, algorithmHS512, flippedSignatureBit
        // Changes that do not matter: still a valid token of this site.
        case anotherViewer, extraClaim

        var matters: Bool { self != .anotherViewer && self != .extraClaim }
    }

    static func mint(_ change: Change, now: Date = Date()) async throws -> String {
        let seconds = Int(now.timeIntervalSince1970)
        var claims: [String: Any] = [
            "iss": site.clientKey, "sub": "account-alice", "iat": seconds, "exp": seconds + 180,
            "qsh": CanonicalRequest(method: "GET", target: target).qsh,
        ]
        var secret = site.sharedSecret
        switch change {
        case .issuerOfAnotherSite: claims["iss"] = other.clientKey
        case .unknownIssuer: claims["iss"] = "jira:" + UUID().uuidString
        case .noIssuer: claims["iss"] = nil
        case .expired: claims["exp"] = seconds - Int.random(in: 120...86_400)
        case .noExpiry: claims["exp"] = nil
        case .issuedInTheFuture: claims["iat"] = seconds + Int.random(in: 120...86_400)
        case .qshOfAnotherRequest:
            claims["qsh"] =
                CanonicalRequest(method: "GET", target: target.replacingOccurrences(of: "10001", with: "1000\(Int.random(in: 2...9))")).qsh
        case .contextQSH: claims["qsh"] = ConnectClaims.contextQSH
        case .noQSH: claims["qsh"] = nil
        case .otherSecret: secret = other.sharedSecret
        case .anotherViewer: claims["sub"] = "account-\(UUID().uuidString.prefix(8))"
        case .extraClaim: claims["context"] = ["user": ["accountId": "x"]]
        // jwt-kit insists on a key as long as the digest: a longer one, as an attacker would choose.
        case .algorithmHS512: secret = String(repeating: secret, count: 2)
        case .algorithmNone, .flippedSignatureBit: break
        }
        let keys = JWTKeyCollection()
        await keys.add(hmac: HMACKey(from: secret), digestAlgorithm: change == .algorithmHS512 ? .sha512 : .sha256)
        let token = try await keys.sign(RawClaims(claims))
        switch change {
        case .algorithmNone:
            let parts = token.split(separator: ".")
            return Data(#"{"alg":"none","typ":"JWT"}"#.utf8).base64URLEncodedString() + "." + parts[1] + "."
        case .flippedSignatureBit:
            var parts = token.split(separator: ".").map(String.init)
            var signature = try #require(Data(base64URL: Substring(parts[2])))
            let index = Int.random(in: 0..<signature.count)
            signature[index] ^= UInt8(1 << Int.random(in: 0..<8))
            parts[2] = signature.base64URLEncodedString()
            return parts.joined(separator: ".")
        default:
            return token
        }
    }

    @Test func everyChangeThatMattersIsRefusedAndRecordsNothing() async throws {
        try await TestApp.with { testApp, app in
            try await testApp.tenants.install(Self.site)
            try await testApp.tenants.install(Self.other)
            try await app.test(.router) { client in
                var generator = SystemRandomNumberGenerator()
                var seen: Set<String> = []
                // Tokens minted in the same second from the same claims are the same bytes: the
                // same panel URL again, so the same tab (a replay is not one more viewer).
                var loaded: Set<String> = []
                for round in 0..<150 {
                    // Every change at least once, then at random.
                    let change = round < Change.allCases.count ? Change.allCases[round] : Change.allCases.randomElement(using: &generator)!
                    seen.insert("\(change)")
                    let token = try await Self.mint(change)
                    let before = try await testApp.pool.query("SELECT count(*) AS n FROM viewers")[0].decode(Int.self, "n")
                    let inHeader = Bool.random(using: &generator)
                    let (status, body) = try await client.execute(
                        uri: inHeader ? Self.target : Self.target + "&jwt=\(token)", method: .get,
                        headers: inHeader ? [.authorization: "JWT \(token)"] : [:]
                    ) { ($0.status, String(buffer: $0.body)) }
                    let after = try await testApp.pool.query("SELECT count(*) AS n FROM viewers")[0].decode(Int.self, "n")
                    if change.matters {
                        #expect(status == .unauthorized, "\(change) was accepted: \(status)")
                        #expect(after == before, "\(change) recorded a viewer")
                        #expect(!body.contains(Self.site.sharedSecret) && !body.contains(token), "\(change): the answer leaks")
                    } else {
                        #expect(status == .ok, "\(change) was refused: \(status) \(body)")
                        let isNewTab = loaded.insert(token).inserted
                        #expect(after == before + (isNewTab ? 1 : 0), "\(change): a new panel URL is a new tab, the same one again is not")
                    }
                }
                #expect(seen.count == Change.allCases.count)
            }
        }
    }
}
