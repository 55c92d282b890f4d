import Hummingbird
import Logging

/// Every request's way in and out, in one middleware: the request target is checked before
/// anything reads it (`RequestTarget`), failures become the client's answer (`ClientErrors`,
/// then the error's own response), the request is logged (`RequestLog`), and every answer,
/// errors and files included, gets the security headers (`SecurityHeaders`).
///
/// One middleware rather than five because a request's async frames all stay allocated while
/// it is suspended, about 1 KB each, and a held wait is suspended for up to 20 s: five
/// middlewares cost a waiting panel 13 KB more (49 KB instead of 36 KB, `docs/benchmarks.md`).
struct EdgeMiddleware: RouterMiddleware {
    typealias Context = AppRequestContext

    let headers: SecurityHeaders

    func handle(_ request: Request, context: Context, next: (Request, Context) async throws -> Response) async throws -> Response {
        let started = ContinuousClock.now
        var response: Response
        do {
            if let problem = RequestTarget.problem(of: request) { throw HTTPError(.badRequest, message: problem) }
            response = try await next(request, context)
        } catch {
            response = headers.response(for: ClientErrors.mapped(error, request: request, logger: context.logger), request: request, context: context)
        }
        RequestLog.log(request, context: context, status: Int(response.status.code), started: started)
        headers.addHeaders(to: &response.headers)
        return response
    }
}
