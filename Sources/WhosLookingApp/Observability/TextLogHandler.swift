import Foundation
import Logging

/// `LOG_FORMAT=text` (the default): one line per event on stderr, in swift-log's
/// `StreamLogHandler` layout (`<time> <level> <label>: <key>=<value> … [<source>] <message>`),
/// with every control character escaped.
///
/// Messages and metadata carry values from outside (a JWT's header fields, a path, an error
/// from PostgreSQL quoting a value); swift-log's handler writes them raw, so a newline in one
/// started a line of the attacker's choosing. Here a newline is `\n`, a carriage return `\r`, a
/// tab `\t`, a backslash `\\`, and any other control character (C0, DEL, C1, the Unicode line
/// and paragraph separators, and the bidirectional overrides that reorder what a terminal shows)
/// `\u{…}`: one event is always exactly one line, and an escape is never ambiguous. A metadata
/// value with a blank, `=` or `"` in it (or none at all) is quoted as logfmt does
/// (`reason="a b=c"`, a quote inside as `\"`), so a value can never pose as more keys.
public struct TextLogHandler: LogHandler {
    public var logLevel: Logger.Level = .info
    public var metadata: Logger.Metadata = [:]
    public var metadataProvider: Logger.MetadataProvider?
    let label: String
    let output: @Sendable (String) -> Void

    public init(
        label: String, metadataProvider: Logger.MetadataProvider? = nil, output: @escaping @Sendable (String) -> Void = LogLines.standardError
    ) {
        self.label = label
        self.metadataProvider = metadataProvider
        self.output = output
    }

    public subscript(metadataKey key: String) -> Logger.Metadata.Value? {
        get { metadata[key] }
        set { metadata[key] = newValue }
    }

    public func log(event: LogEvent) {
        let merged = metadata(of: event)
        var line = Self.timestamp()
        line += " \(event.level)"
        if !label.isEmpty { line += " " + Self.escape(label) }
        line += ":"
        for (key, value) in merged.sorted(by: { $0.key < $1.key }) {
            line += " " + Self.escape(key) + "=" + Self.value(value.description)
        }
        line += " [" + Self.escape(event.source) + "] " + Self.escape(event.message.description) + "\n"
        output(line)
    }

    /// `text` with every control character written as an escape (see the type's comment).
    public static func escape(_ text: String) -> String {
        guard text.unicodeScalars.contains(where: needsEscape) else { return text }
        var escaped = String.UnicodeScalarView()
        for scalar in text.unicodeScalars {
            switch scalar {
            case "\n": escaped.append(contentsOf: #"\n"#.unicodeScalars)
            case "\r": escaped.append(contentsOf: #"\r"#.unicodeScalars)
            case "\t": escaped.append(contentsOf: #"\t"#.unicodeScalars)
            case "\\": escaped.append(contentsOf: #"\\"#.unicodeScalars)
            case _ where needsEscape(scalar):
                escaped.append(contentsOf: "\\u{\(String(scalar.value, radix: 16))}".unicodeScalars)
            default: escaped.append(scalar)
            }
        }
        return String(escaped)
    }

    /// A metadata value: escaped, and quoted when it could otherwise read as more than one value.
    public static func value(_ text: String) -> String {
        let escaped = escape(text)
        guard escaped.isEmpty || escaped.unicodeScalars.contains(where: { $0 == " " || $0 == "=" || $0 == "\"" || $0.properties.isWhitespace })
        else { return escaped }
        return "\"" + escaped.replacingOccurrences(of: "\"", with: #"\""#) + "\""
    }

    /// Control characters, and the backslash that starts an escape.
    static func needsEscape(_ scalar: Unicode.Scalar) -> Bool {
        switch scalar.value {
        case 0x00...0x1F, 0x5C, 0x7F...0x9F: true
        // Line and paragraph separators; bidirectional embeddings, overrides and isolates.
        case 0x2028, 0x2029, 0x202A...0x202E, 0x2066...0x2069: true
        default: false
        }
    }

    /// Local time as swift-log's handler writes it: `2026-01-31T12:00:00+0100`.
    static func timestamp() -> String {
        var now = time(nil)
        var parts = tm()
        guard localtime_r(&now, &parts) != nil else { return "<unknown>" }
        var buffer = [Int8](repeating: 0, count: 64)
        let length = strftime(&buffer, buffer.count, "%Y-%m-%dT%H:%M:%S%z", &parts)
        return String(decoding: buffer.prefix(length).map { UInt8(bitPattern: $0) }, as: UTF8.self)
    }
}
