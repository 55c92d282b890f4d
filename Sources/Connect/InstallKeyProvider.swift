import AsyncHTTPClient
import Foundation
import JWTKit
import Logging
import NIOCore

/// Atlassian's public keys for signed installs, fetched by `kid` from the key server
/// (`CONNECT_INSTALL_KEYS_URL/<kid>`, PEM) with a timeout, and cached per kid.
public actor InstallKeyProvider {
    public let baseURL: String
    private let httpClient: HTTPClient
    private let timeout: TimeAmount
    private let logger: Logger
    private var cache: [String: Insecure.RSA.PublicKey] = [:]
    /// kids the server said it does not know, with when we asked; asked again after a minute.
    private var unknown: [String: ContinuousClock.Instant] = [:]

    public init(baseURL: String, httpClient: HTTPClient = .shared, timeout: TimeAmount = .seconds(5), logger: Logger) {
        self.baseURL = baseURL.hasSuffix("/") ? String(baseURL.dropLast()) : baseURL
        self.httpClient = httpClient
        self.timeout = timeout
        self.logger = logger
    }

    public func publicKey(kid: String) async throws -> Insecure.RSA.PublicKey {
        // kid comes from an unverified header: only a plain identifier may become part of a URL.
        guard kid.count <= 128, !kid.contains(".."),
              kid.unicodeScalars.allSatisfy({ CharacterSet.alphanumerics.contains($0) && $0.isASCII || "-_.".unicodeScalars.contains($0) })
        else { throw TokenRejection.unknownKeyID }
        if let key = cache[kid] { return key }
        if let askedAt = unknown[kid], ContinuousClock.now - askedAt < .seconds(60) { throw TokenRejection.unknownKeyID }

        let request = HTTPClientRequest(url: "\(baseURL)/\(kid)")
        let response: HTTPClientResponse
        let body: ByteBuffer
        do {
            response = try await httpClient.execute(request, timeout: timeout)
            body = try await response.body.collect(upTo: 64 * 1024)
        } catch {
            logger.warning("install key server unreachable", metadata: ["kid": "\(kid)", "error": "\(error)"])
            throw TokenRejection.keyServerUnavailable
        }
        switch response.status.code {
        case 200:
            do {
                let key = try Insecure.RSA.PublicKey(pem: String(buffer: body))
                cache[kid] = key
                return key
            } catch {
                logger.warning("install key server sent an unreadable key", metadata: ["kid": "\(kid)"])
                throw TokenRejection.keyServerUnavailable
            }
        case 404, 410:
            unknown[kid] = .now
            throw TokenRejection.unknownKeyID
        default:
            logger.warning("install key server answered an error", metadata: ["kid": "\(kid)", "status": "\(response.status.code)"])
            throw TokenRejection.keyServerUnavailable
        }
    }
}
