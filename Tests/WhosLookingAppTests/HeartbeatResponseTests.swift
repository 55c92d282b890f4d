import Foundation
import Hummingbird
import Testing
@testable import WhosLookingApp

/// The hand-written JSON of a heartbeat's answer, read back by a real JSON parser.
@Suite("Heartbeat answer JSON", .timeLimit(.minutes(3)))
struct HeartbeatResponseTests {
    @Test(arguments: ["plain", "quote \" and \\ backslash", "new\nline\ttab\r", "bell \u{07} nul \u{00} us \u{1F}", "ünïcødé ✓ 👀", "</script><b>x</b>", ""])
    func everyStringSurvivesAJSONParser(_ text: String) throws {
        var buffer = ByteBuffer()
        buffer.writeJSONString(text)
        let parsed = try JSONSerialization.jsonObject(with: Data(buffer.readableBytesView), options: .fragmentsAllowed)
        #expect(parsed as? String == text)
    }
}
