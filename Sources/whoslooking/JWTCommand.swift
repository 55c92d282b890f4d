import ArgumentParser
import Connect
import Foundation

struct JWTCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "jwt",
        abstract: "Inspect Connect JWTs: compute a qsh, decode a token, verify one.",
        subcommands: [QSH.self, Decode.self, Verify.self]
    )

    struct QSH: ParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Print the canonical request and its qsh.")
        @Argument(help: "HTTP method, e.g. GET.") var method: String
        @Argument(help: "The full request URL.") var url: String
        @Option(help: "The app's (or outbound: the tenant's) baseUrl; paths are relative to its path.") var baseURL: String?

        func run() throws {
            print(try JWTInspector.qsh(method: method, url: url, baseURL: baseURL))
        }
    }

    struct Decode: ParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Print a token's header and claims as JSON (nothing is checked).")
        @Argument(help: "The JWT.") var token: String

        func run() throws {
            print(try JWTInspector.decode(token))
        }
    }

    struct Verify: ParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Check an HS256 token: signature, times, qsh. Exits 1 if any check fails.")
        @Argument(help: "The JWT.") var token: String
        @Option(help: "The shared secret.") var secret: String
        @Option(help: "HTTP method of the request.") var method: String = "GET"
        @Option(help: "The full request URL.") var url: String
        @Option(help: "The app's baseUrl.") var baseURL: String?

        func run() throws {
            let (allPassed, report) = try JWTInspector.verify(token, secret: secret, method: method, url: url, baseURL: baseURL)
            print(report)
            if !allPassed { throw ExitCode.failure }
        }
    }
}
