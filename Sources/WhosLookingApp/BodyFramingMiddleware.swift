import Hummingbird
import NIOHTTP1

/// A request whose head parsed but whose body is malformed (a bad chunk size, a chunk longer
/// than it said, a transfer coding we do not speak) fails only when a handler reads the body.
/// That is the client's mistake: 400, and the connection is not reused, since where the next
/// request would start is unknown.
struct BodyFramingMiddleware<Context: RequestContext>: RouterMiddleware {
    func handle(_ request: Request, context: Context, next: (Request, Context) async throws -> Response) async throws -> Response {
        do {
            return try await next(request, context)
        } catch let error as HTTPParserError {
            context.logger.info("malformed request body", metadata: ["error": "\(error)", "path": "\(request.uri.path)"])
            throw HTTPError(.badRequest, headers: [.connection: "close"], message: "malformed request body")
        }
    }
}
