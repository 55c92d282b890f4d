import Connect
import Crypto
import Foundation
@testable import Presence
import Testing

@Suite("Viewer tickets")
struct ViewerTicketTests {
    let secret = SymmetricKey(size: .bits256)
    var signer: ViewerTicketSigner { ViewerTicketSigner(secret: secret, lifetime: 600) }

    /// Signs any payload bytes the way the signer does, to reach the parser behind the MAC.
    func signedWithOurKey(_ payload: [UInt8]) -> String {
        let encoded = Base64URL.encode(payload)
        let mac = HMAC<SHA256>.authenticationCode(for: encoded, using: ViewerTicketSigner.ticketKey(secret))
        return String(decoding: encoded, as: UTF8.self) + "." + Base64URL.encodeToString(Array(mac))
    }

    @Test func awkwardFieldsRoundTrip() throws {
        let (ticket, signed) = signer.issue(
            tenant: "jira:ü.\"}{", issueID: "10001", issueKey: "ÄB-1", accountID: "557058:f1a2-…", tabID: UUID().uuidString
        )
        #expect(try signer.verify(signed) == ticket)
        #expect(signed.utf8.count < 300, "compact enough for a header: \(signed.utf8.count) bytes")
    }

    @Test func aVersionOneTicketFromBeforeTheUpgradeStillVerifies() throws {
        let old = ViewerTicket(tenant: "jira:a", issueID: "1", issueKey: "A-1", accountID: "acc", tabID: "tab",
                               expires: Date().timeIntervalSince1970 + 60)
        let json = try JSONEncoder().encode(old)
        #expect(try signer.verify(signedWithOurKey(Array(json))) == old)
    }

    @Test func payloadsThatDoNotParseAreMalformedEvenWhenSigned() throws {
        let good = ViewerTicket(tenant: "t", issueID: "1", issueKey: "A-1", accountID: "a", tabID: "b",
                                expires: Date().timeIntervalSince1970 + 60).binaryPayload
        var unknownVersion = good
        unknownVersion[0] = 9
        var badUTF8 = good
        badUTF8[badUTF8.count - 1] = 0xFF
        let cases: [(String, [UInt8])] = [
            ("empty", []),
            ("truncated", Array(good.dropLast())),
            ("trailing bytes", good + [0]),
            ("unknown version", unknownVersion),
            ("invalid UTF-8", badUTF8),
            ("length past the end", Array(good.prefix(9)) + [0xFF, 0xFF, 0x41]),
            ("JSON that is not a ticket", Array(#"{"t":"x"}"#.utf8)),
        ]
        for (name, payload) in cases {
            #expect(throws: ViewerTicketSigner.Rejection.malformed, "\(name)") { try signer.verify(signedWithOurKey(payload)) }
        }
    }

    @Test func refreshKeepsTheViewerAndMovesTheExpiry() throws {
        let now = Date()
        let (ticket, _) = signer.issue(tenant: "t", issueID: "1", issueKey: "A-1", accountID: "a", tabID: "b", now: now)
        let refreshed = try signer.verify(signer.refresh(ticket, now: now.addingTimeInterval(100)), now: now.addingTimeInterval(100))
        #expect(refreshed.viewer == ticket.viewer)
        #expect(refreshed.expires == ticket.expires + 100)
        #expect(throws: ViewerTicketSigner.Rejection.expired) {
            try signer.verify(signer.sign(ticket), now: now.addingTimeInterval(601))
        }
    }
}
