import ArgumentParser
import AsyncHTTPClient
import Foundation

/// For container health checks without curl in the image: exit 0 when the URL answers 200.
struct ProbeCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "probe",
        abstract: "Exit 0 if the URL answers 200 within the timeout (for HEALTHCHECK)."
    )

    @Argument(help: "The URL to check.") var url: String = "http://127.0.0.1:8080/healthz"
    @Option(help: "Seconds to wait.") var timeout: Int64 = 3

    func run() async throws {
        let status: UInt
        do {
            let response = try await HTTPClient.shared.execute(HTTPClientRequest(url: url), timeout: .seconds(timeout))
            status = response.status.code
        } catch {
            FileHandle.standardError.write(Data("probe: \(url): \(error)\n".utf8))
            throw ExitCode.failure
        }
        guard status == 200 else {
            FileHandle.standardError.write(Data("probe: \(url) answered \(status)\n".utf8))
            throw ExitCode.failure
        }
    }
}
