import Foundation

/// `../shared/` beside the project root: data nobody on this project wrote.
public enum SharedMaterial {
    public static let projectRoot: URL = URL(fileURLWithPath: #filePath)
        .deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent()

    public struct Missing: Error, CustomStringConvertible {
        public var description: String
    }

    public static func conformance(_ name: String) throws -> Data {
        let url = projectRoot.deletingLastPathComponent().appendingPathComponent("shared/conformance/\(name)")
        guard let data = FileManager.default.contents(atPath: url.path) else {
            throw Missing(description: "\(url.path) is missing: the conformance data must sit in ../shared beside the project")
        }
        return data
    }
}
