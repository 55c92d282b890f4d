import Foundation
import Logging

/// `LOG_FORMAT=json`: one JSON object per line on stderr, for log shippers.
///
/// Written by our own encoder rather than JSONSerialization, so that every control character in
/// a value from outside is escaped, not only those JSON requires: C0 and the quote and backslash
/// as JSON demands, and also DEL, C1, the Unicode line and paragraph separators and the
/// bidirectional overrides (as `\uXXXX`), which a terminal or a JavaScript-based viewer could
/// otherwise act on. One event is always exactly one line.
public struct JSONLogHandler: LogHandler {
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
        var fields: [String: Any] = [
            "ts": ISO8601DateFormatter.string(from: Date(), timeZone: .gmt, formatOptions: [.withInternetDateTime, .withFractionalSeconds]),
            "level": event.level.rawValue,
            "label": label,
            "message": event.message.description,
            "source": event.source,
        ]
        let merged = metadata(of: event)
        for (key, value) in merged where fields[key] == nil {
            fields[key] = Self.json(value)
        }
        var line = ""
        Self.encode(fields, into: &line)
        line += "\n"
        output(line)
    }

    static func json(_ value: Logger.Metadata.Value) -> Any {
        switch value {
        case .string(let string): string
        case .stringConvertible(let convertible): convertible.description
        case .array(let array): array.map(json)
        case .dictionary(let dictionary): dictionary.mapValues(json)
        }
    }

    /// Strings, arrays and objects (keys sorted), which is all `json(_:)` makes.
    static func encode(_ value: Any, into output: inout String) {
        switch value {
        case let string as String:
            encode(string: string, into: &output)
        case let array as [Any]:
            output += "["
            for (index, element) in array.enumerated() {
                if index > 0 { output += "," }
                encode(element, into: &output)
            }
            output += "]"
        case let object as [String: Any]:
            output += "{"
            for (index, key) in object.keys.sorted().enumerated() {
                if index > 0 { output += "," }
                encode(string: key, into: &output)
                output += ":"
                encode(object[key]!, into: &output)
            }
            output += "}"
        default:
            encode(string: "\(value)", into: &output)
        }
    }

    static func encode(string: String, into output: inout String) {
        output += "\""
        for scalar in string.unicodeScalars {
            switch scalar {
            case "\"": output += #"\""#
            case "\\": output += #"\\"#
            case "\n": output += #"\n"#
            case "\r": output += #"\r"#
            case "\t": output += #"\t"#
            case _ where TextLogHandler.needsEscape(scalar):
                let hex = String(scalar.value, radix: 16)
                output += "\\u" + String(repeating: "0", count: max(0, 4 - hex.count)) + hex
            default:
                output.unicodeScalars.append(scalar)
            }
        }
        output += "\""
    }
}
