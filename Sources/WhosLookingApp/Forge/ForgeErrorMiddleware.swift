import Foundation
import Hummingbird
import Libpq
import NIOCore
import Presence

/// Forge wants every non-2xx answer as JSON (`invokeRemote` rejects others): refusals become
/// `{"error": "<reason>"}` with their status; database failures are logged with their cause
/// and answered with a generic reason (503 with `Retry-After` when the database is down, slow
/// or busy, as `ClientErrors` does).
struct ForgeErrorMiddleware<Context: RequestContext>: RouterMiddleware {
    func handle(_ request: Request, context: Context, next: (Request, Context) async throws -> Response) async throws -> Response {
        do {
            return try await next(request, context)
        } catch let error as HTTPError {
            return Self.json(error.status, error.body ?? error.status.reasonPhrase)
        } catch let error as NIOTooManyBytesError {
            // A body over the limit: Hummingbird would answer an empty 413, which Forge rejects.
            context.logger.debug("Forge body too large", metadata: ["error": "\(error)", "path": "\(request.uri.path)"])
            return Self.json(.contentTooLarge, "body too large")
        } catch let error as PostgresError {
            context.logger.error("database error", metadata: ["error": "\(error)", "path": "\(request.uri.path)"])
            return Self.json(error.isTransient ? .serviceUnavailable : .internalServerError, error.clientMessage)
        } catch let error as HeartbeatUnavailable {
            context.logger.debug("heartbeat not recorded", metadata: ["reason": "\(error.reason.rawValue)", "path": "\(request.uri.path)"])
            guard error.reason != .overQuota else { return Self.json(.tooManyRequests, error.description, retryAfter: 1) }
            return Self.json(.serviceUnavailable, "database unavailable")
        } catch let error as WaitUnavailable {
            context.logger.debug("wait not held", metadata: ["reason": "\(error.reason.rawValue)", "path": "\(request.uri.path)"])
            return Self.json(
                error.reason == .overQuota ? .tooManyRequests : .serviceUnavailable, error.description, retryAfter: error.retryAfterSeconds)
        }
    }

    static func json(
        _ status: HTTPResponse.Status, _ message: String, retryAfter: Int = ClientErrors.retryAfterSeconds
    ) -> Response {
        var body = ByteBuffer()
        body.writeStaticString(#"{"error":"#)
        body.writeJSONString(message)
        body.writeStaticString("}")
        var headers: HTTPFields = [.contentType: "application/json; charset=utf-8", .cacheControl: "no-store"]
        if status == .serviceUnavailable || status == .tooManyRequests { headers[.retryAfter] = "\(retryAfter)" }
        return Response(status: status, headers: headers, body: .init(byteBuffer: body))
    }
}
