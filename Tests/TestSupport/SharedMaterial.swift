import Foundation

/// `../shared/` beside the project root: data nobody on this project wrote.
public enum SharedMaterial {
    public static let projectRoot: URL = URL(fileURLWithPath: #filePath)
        .deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent()

    public static func conformance(_ name: String) throws -> Data {
        let url = projectRoot.deletingLastPathComponent().appendingPathComponent("shared/conformance/\(name)")
        return try Data(contentsOf: url)
    }
}
