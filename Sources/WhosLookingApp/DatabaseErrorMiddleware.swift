import Hummingbird
import Libpq
import Presence

/// Logs a database failure with its cause (SQLSTATE, message, statement) and answers the
/// client only a generic reason. When the database is down, slow or busy (a transient
/// failure: a lost connection, a deadline passed, a statement cancelled, a heartbeat the
/// queue could not take, a panel's wait that cannot be held) the answer is 503 with `Retry-After`; other failures are 500.
struct DatabaseErrorMiddleware<Context: RequestContext>: RouterMiddleware {
    /// What a 503 asks clients to wait, in seconds.
    static var retryAfterSeconds: Int { 5 }

    func handle(_ request: Request, context: Context, next: (Request, Context) async throws -> Response) async throws -> Response {
        do {
            return try await next(request, context)
        } catch let error as PostgresError {
            context.logger.error("database error", metadata: ["error": "\(error)", "path": "\(request.uri.path)"])
            guard error.isTransient else { throw HTTPError(.internalServerError, message: error.clientMessage) }
            throw Self.unavailable(error.clientMessage)
        } catch let error as HeartbeatUnavailable {
            // One line per heartbeat would flood the log in an outage: the batch's failure is
            // logged once with its cause, and `heartbeats_unavailable_total` counts these.
            context.logger.debug("heartbeat not recorded", metadata: ["reason": "\(error.reason.rawValue)", "path": "\(request.uri.path)"])
            throw Self.unavailable("database unavailable")
        } catch let error as WaitUnavailable {
            context.logger.debug("wait not held", metadata: ["reason": "\(error.reason.rawValue)", "path": "\(request.uri.path)"])
            throw Self.unavailable(error.description, retryAfter: error.retryAfterSeconds)
        }
    }

    static func unavailable(_ message: String, retryAfter: Int = retryAfterSeconds) -> HTTPError {
        HTTPError(.serviceUnavailable, headers: [.retryAfter: "\(retryAfter)"], message: message)
    }
}
