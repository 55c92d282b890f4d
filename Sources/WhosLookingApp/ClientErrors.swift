import Hummingbird
import Libpq
import Logging
import NIOHTTP1
import Presence

/// What a failure below the routes becomes for the client: its cause (SQLSTATE, message,
/// statement) goes to the log, the client gets only a generic reason.
/// - The database down, slow or busy (a transient failure: a lost connection, a deadline
///   passed, a statement cancelled, a heartbeat the queue could not take, a panel's wait that
///   cannot be held): 503 with `Retry-After`. Other database failures: 500.
/// - A request whose head parsed but whose body is malformed (a bad chunk size, a chunk longer
///   than it said, a transfer coding we do not speak) fails only when a handler reads the body.
///   That is the client's mistake: 400, and the connection is not reused, since where the next
///   request would start is unknown.
enum ClientErrors {
    /// What a 503 asks clients to wait, in seconds.
    static let retryAfterSeconds = 5

    /// The error to answer for `error`: an `HTTPError` for the failures above, else `error` itself.
    static func mapped(_ error: any Error, request: Request, logger: Logger) -> any Error {
        switch error {
        case let error as PostgresError:
            logger.error("database error", metadata: ["error": "\(error)", "path": "\(request.uri.path)"])
            guard error.isTransient else { return HTTPError(.internalServerError, message: error.clientMessage) }
            return unavailable(error.clientMessage)
        case let error as HeartbeatUnavailable:
            // One line per heartbeat would flood the log in an outage: the batch's failure is
            // logged once with its cause, and `heartbeats_unavailable_total` counts these.
            logger.debug("heartbeat not recorded", metadata: ["reason": "\(error.reason.rawValue)", "path": "\(request.uri.path)"])
            guard error.reason != .overQuota else {
                return HTTPError(.tooManyRequests, headers: [.retryAfter: "1"], message: error.description)
            }
            return unavailable("database unavailable")
        case let error as WaitUnavailable:
            logger.debug("wait not held", metadata: ["reason": "\(error.reason.rawValue)", "path": "\(request.uri.path)"])
            guard error.reason != .overQuota else {
                // The caller's own doing, not ours: a 4xx, never an error-level line.
                return HTTPError(.tooManyRequests, headers: [.retryAfter: "\(error.retryAfterSeconds)"], message: error.description)
            }
            return unavailable(error.description, retryAfter: error.retryAfterSeconds)
        case let error as HTTPParserError:
            logger.info("malformed request body", metadata: ["error": "\(error)", "path": "\(request.uri.path)"])
            return HTTPError(.badRequest, headers: [.connection: "close"], message: "malformed request body")
        default:
            return error
        }
    }

    static func unavailable(_ message: String, retryAfter: Int = retryAfterSeconds) -> HTTPError {
        HTTPError(.serviceUnavailable, headers: [.retryAfter: "\(retryAfter)"], message: message)
    }
}
