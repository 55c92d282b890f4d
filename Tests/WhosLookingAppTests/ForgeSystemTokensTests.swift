import Foundation
import TextCoding
import TestSupport
import Testing

@testable import Forge

/// Which `x-forge-oauth-system` token an installation's Jira calls use: the newest by `exp`,
/// whatever order calls bring them in, and never one Jira has refused.
@Suite("Forge system tokens", .timeLimit(.minutes(1)))
struct ForgeSystemTokensTests {
    static let installation = "ari:cloud:ecosystem::installation/0b1f4e2a-1111-4222-8333-944445555666"

    /// A JWT-shaped token whose payload is `payload`, as written.
    static func token(payload: String) -> String {
        Data(#"{"alg":"RS256","typ":"JWT"}"#.utf8).base64URLEncodedString() + "." + Data(payload.utf8).base64URLEncodedString() + "."
            + Data((0..<32).map { _ in UInt8.random(in: 0...255) }).base64URLEncodedString()
    }

    @Test func aNewerTokenByExpReplacesTheHeldOne() {
        let tokens = ForgeSystemTokens()
        let older = FakeForge.systemToken(expiresIn: 2 * 3600)
        let newer = FakeForge.systemToken(expiresIn: 3 * 3600)
        tokens.remember(older, installationID: Self.installation)
        tokens.remember(newer, installationID: Self.installation)
        #expect(tokens.token(installationID: Self.installation) == newer)
    }

    /// Calls race: one that brings an older token may arrive after one that brought a newer.
    @Test func anOlderTokenArrivingLaterIsIgnored() {
        let tokens = ForgeSystemTokens()
        let older = FakeForge.systemToken(expiresIn: 2 * 3600)
        let newer = FakeForge.systemToken(expiresIn: 3 * 3600)
        tokens.remember(newer, installationID: Self.installation)
        tokens.remember(older, installationID: Self.installation)
        #expect(tokens.token(installationID: Self.installation) == newer)
        // One whose exp cannot be read is trusted for an hour: older than the held one too.
        tokens.remember(Self.token(payload: #"{"jti":"no-exp"}"#), installationID: Self.installation)
        #expect(tokens.token(installationID: Self.installation) == newer)
    }

    /// Jira refused a token: it goes, and the next call's is taken even when it is not newer; but
    /// a newer one that replaced it before the refusal was known stays.
    @Test func aRefusedTokenIsForgottenButANewerOneThatReplacedItIsKept() {
        let tokens = ForgeSystemTokens()
        let refused = FakeForge.systemToken(expiresIn: 3 * 3600)
        let older = FakeForge.systemToken(expiresIn: 2 * 3600)
        let newer = FakeForge.systemToken(expiresIn: 4 * 3600 - 120)
        tokens.remember(refused, installationID: Self.installation)
        tokens.forget(token: refused, installationID: Self.installation)
        #expect(tokens.token(installationID: Self.installation) == nil)
        tokens.remember(older, installationID: Self.installation)
        #expect(tokens.token(installationID: Self.installation) == older, "nothing held: the next call's token is taken")

        tokens.remember(refused, installationID: Self.installation)
        tokens.remember(newer, installationID: Self.installation)
        tokens.forget(token: refused, installationID: Self.installation)
        #expect(tokens.token(installationID: Self.installation) == newer)
        tokens.forget(token: refused, installationID: "another installation")
        #expect(tokens.token(installationID: Self.installation) == newer)
    }

    /// `exp` is a JSON number in a JSON object, strictly; anything else is no exp at all.
    @Test func expIsReadStrictly() {
        #expect(ForgeSystemTokens.expiry(of: Self.token(payload: #"{"exp":1700000000,"jti":"a"}"#)) == Date(timeIntervalSince1970: 1_700_000_000))
        #expect(ForgeSystemTokens.expiry(of: Self.token(payload: #" {"exp": 1.7e9} "#)) == Date(timeIntervalSince1970: 1_700_000_000))
        let unreadable = [
            #"{"exp":"1700000000"}"#, #"{"exp":true}"#, #"{"exp":null}"#, #"{"exp":1e400}"#, #"{"exp":1,"exp":1700000000}"#,
            #"{"exp":1700000000} {}"#, #"{"exp":1700000000,}"#, #"{"exp":01700000000}"#, #"[1700000000]"#, #"{"jti":"a"}"#, "",
        ]
        for payload in unreadable {
            #expect(ForgeSystemTokens.expiry(of: Self.token(payload: payload)) == nil, "\(payload)")
        }
        #expect(ForgeSystemTokens.expiry(of: "no-dots") == nil)
        #expect(ForgeSystemTokens.expiry(of: "a.b+c.d") == nil, "not base64url")
    }
}
