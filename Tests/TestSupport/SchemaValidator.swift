import Foundation

/// JSON Schema (draft-04) validation through Python's `jsonschema`, a maintained validator;
/// `scripts/test` installs it when missing.
public enum SchemaValidator {
    public struct Missing: Error, CustomStringConvertible {
        public var description: String
    }

    public struct Result: Sendable {
        public var valid: Bool
        public var errors: String
    }

    public static func validate(instance: URL, schema: URL) async throws -> Result {
        let script = """
            import json, sys, jsonschema
            schema = json.load(open(sys.argv[1])); instance = json.load(open(sys.argv[2]))
            errors = sorted(jsonschema.Draft4Validator(schema).iter_errors(instance), key=lambda e: list(e.path))
            for e in errors: print("/".join(map(str, e.path)) + ": " + e.message[:300])
            sys.exit(1 if errors else 0)
            """
        let outcome = try await Subprocess.run(URL(fileURLWithPath: "/usr/bin/env"), ["python3", "-c", script, schema.path, instance.path])
        if outcome.output.contains("ModuleNotFoundError") { throw Missing(description: "python3 jsonschema is missing: run the tests with scripts/test") }
        return Result(valid: outcome.status == 0, errors: outcome.output)
    }
}
