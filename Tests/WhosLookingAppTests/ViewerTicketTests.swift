import TextCoding
import Connect
import Crypto
import Foundation
@testable import Presence
import Testing

@Suite("Viewer tickets", .timeLimit(.minutes(3)))
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
        let old = ViewerTicket(
            tenant: "jira:a", issueID: "1", issueKey: "A-1", accountID: "acc", tabID: "tab",
            expires: Date().timeIntervalSince1970 + 60)
        let json = try JSONEncoder().encode(old)
        #expect(try signer.verify(signedWithOurKey(Array(json))) == old)
    }

    @Test func payloadsThatDoNotParseAreMalformedEvenWhenSigned() throws {
        let good = ViewerTicket(
            tenant: "t", issueID: "1", issueKey: "A-1", accountID: "a", tabID: "b",
            expires: Date().timeIntervalSince1970 + 60
        ).binaryPayload
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

    /// Renewals cannot keep a ticket alive for ever: a chain ends `maxChainAge` after the
    /// panel load, and then the panel must be reloaded (issue 12, defect 8).
    @Test func aChainOfRenewalsEndsAtItsMaximumAge() throws {
        let signer = ViewerTicketSigner(secret: secret, lifetime: 600, maxChainAge: 1000)
        let start = Date()
        var (ticket, signed) = signer.issue(tenant: "t", issueID: "1", issueKey: "A-1", accountID: "a", tabID: "b", now: start)
        // A panel heartbeating every 100 s, renewing each time.
        for step in 1...9 {
            let now = start.addingTimeInterval(Double(step) * 100)
            ticket = try signer.verify(signed, now: now)
            signed = signer.refresh(ticket, now: now)
        }
        let last = try signer.verify(signed, now: start.addingTimeInterval(950))
        #expect(last.expires <= start.timeIntervalSince1970 + 1000, "a renewal never reaches past the chain's end")
        #expect(last.chainStarted == start.timeIntervalSince1970.rounded(.down))
        #expect(throws: ViewerTicketSigner.Rejection.chainTooOld) { try signer.verify(signed, now: start.addingTimeInterval(1001)) }
        #expect(throws: ViewerTicketSigner.Rejection.chainTooOld) {
            try signer.verify(signer.refresh(last, now: start.addingTimeInterval(1001)), now: start.addingTimeInterval(1001))
        }
    }

    @Test func aVersionTwoTicketStillVerifiesAndItsRenewalsAreCapped() throws {
        let now = Date()
        let old = ViewerTicket(
            tenant: "t", issueID: "1", issueKey: "A-1", accountID: "a", tabID: "b", expires: (now.timeIntervalSince1970 + 60).rounded(.down))
        #expect(old.binaryPayload.first == 2)
        #expect(try signer.verify(signedWithOurKey(old.binaryPayload), now: now) == old)
        let renewed = try signer.verify(signer.refresh(old, now: now), now: now)
        #expect(renewed.chainStarted == old.expires - 600, "counted from the old ticket's own issue")
    }
}
