import Testing

@testable import WhosLookingApp

/// Names from Jira meet HTML in the server-rendered Connect panel: no character that ends an
/// attribute or starts a tag may survive escaping, whatever follows it.
@Suite("HTML escaping", .timeLimit(.minutes(3)))
struct HTMLEscapeTests {
    /// Scalars that fuse with a preceding quote into one grapheme cluster.
    static let joiners: [Unicode.Scalar] = ["\u{0301}", "\u{200D}", "\u{FE0F}", "\u{20E3}", "\u{0332}", "\u{E0101}"]

    @Test(arguments: joiners)
    func aQuoteFusedWithTheNextScalarIsStillEscaped(_ joiner: Unicode.Scalar) {
        for special in ["\"", "'", "<", ">", "&"] {
            let name = "Bob\(special)\(Character(joiner)) onload=alert(1) x="
            let escaped = HTML.escape(name)
            #expect(!escaped.unicodeScalars.contains { "\"'<>".unicodeScalars.contains($0) }, "\(escaped.debugDescription)")
            #expect(Self.unescape(escaped) == name, "nothing else changes")
        }
    }

    @Test func randomTextNeverKeepsAMarkupCharacterAndRoundTrips() {
        var generator = SystemRandomNumberGenerator()
        let alphabet: [Unicode.Scalar] = ["a", " ", "=", "\"", "'", "<", ">", "&", "/", "é"] + Self.joiners
        for _ in 0..<2000 {
            var scalars = String.UnicodeScalarView()
            for _ in 0..<Int.random(in: 0...24, using: &generator) { scalars.append(alphabet.randomElement(using: &generator)!) }
            let text = String(scalars)
            let escaped = HTML.escape(text)
            #expect(!escaped.unicodeScalars.contains { "\"'<>".unicodeScalars.contains($0) }, "\(text.debugDescription)")
            #expect(Self.unescape(escaped) == text, "\(text.debugDescription)")
        }
    }

    @Test func thePanelItemKeepsAFusedQuoteInsideTheAttribute() {
        let item = ViewerItem(
            viewer: .init(
                accountID: "x", since: .now, lastSeen: .now, details: .found(displayName: "Bob\"\u{200D} onerror=alert(1) x=", avatarURL: nil)),
            isCurrentUser: false
        )
        // Compared scalar by scalar: String.contains matches whole grapheme clusters.
        #expect(Self.scalars(item.html, contain: #"alt="Bob&quot;\#u{200D} onerror=alert(1) x=" width"#), "\(item.html)")
        #expect(!Self.scalars(item.html, contain: #"alt="Bob"\#u{200D}"#), "\(item.html)")
    }

    static func scalars(_ text: String, contain part: String) -> Bool {
        let haystack = Array(text.unicodeScalars)
        let needle = Array(part.unicodeScalars)
        guard needle.count <= haystack.count else { return false }
        return (0...(haystack.count - needle.count)).contains { Array(haystack[$0..<($0 + needle.count)]) == needle }
    }

    /// The inverse of escaping, scalar by scalar (String's own replacing works on grapheme
    /// clusters, and "&quot;" followed by a combining mark is not one).
    static func unescape(_ text: String) -> String {
        let entities: [(String, Unicode.Scalar)] = [("&lt;", "<"), ("&gt;", ">"), ("&quot;", "\""), ("&#39;", "'"), ("&amp;", "&")]
        let input = Array(text.unicodeScalars)
        var output = String.UnicodeScalarView()
        var index = 0
        scan: while index < input.count {
            for (entity, raw) in entities {
                let pattern = Array(entity.unicodeScalars)
                if index + pattern.count <= input.count, Array(input[index..<(index + pattern.count)]) == pattern {
                    output.append(raw)
                    index += pattern.count
                    continue scan
                }
            }
            output.append(input[index])
            index += 1
        }
        return String(output)
    }
}
