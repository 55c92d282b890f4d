import Hummingbird
import Libpq

/// Logs a database failure with its SQLSTATE and answers the client only a generic reason.
struct DatabaseErrorMiddleware<Context: RequestContext>: RouterMiddleware {
    func handle(_ request: Request, context: Context, next: (Request, Context) async throws -> Response) async throws -> Response {
        do {
            return try await next(request, context)
        } catch let error as PostgresError {
            context.logger.error("database error", metadata: ["error": "\(error)", "path": "\(request.uri.path)"])
            let status: HTTPResponse.Status = error.isConnectionFailure || error.kind == .poolTimeout || error.kind == .poolClosed
                ? .serviceUnavailable : .internalServerError
            throw HTTPError(status, message: error.clientMessage)
        }
    }
}
