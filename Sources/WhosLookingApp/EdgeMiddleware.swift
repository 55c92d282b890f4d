import Hummingbird
import Logging

/// Every request's way in and out, in one middleware: the request target is checked before
/// anything reads it (`RequestTarget`), failures become the client's answer (`ClientErrors`,
/// then the error's own response), the request is counted and timed (`RequestMetrics`) and
/// logged (`RequestLog`), and every answer, errors and files included, gets the security
/// headers (`SecurityHeaders`).
///
/// One middleware rather than five because a request's async frames all stay allocated while
/// it is suspended, about 1 KB each, and a held wait is suspended for up to 20 s: five
/// middlewares cost a waiting panel 13 KB more (49 KB instead of 36 KB, `docs/benchmarks.md`).
struct EdgeMiddleware: RouterMiddleware {
    typealias Context = AppRequestContext

    let headers: SecurityHeaders
    let metrics: RequestMetrics

    func handle(_ request: Request, context: Context, next: (Request, Context) async throws -> Response) async throws -> Response {
        let started = ContinuousClock.now
        let active = metrics.activeRequests(request.method)
        active.increment()
        defer { active.decrement() }
        var response: Response
        var failed = false
        do {
            if let problem = RequestTarget.problem(of: request) { throw HTTPError(.badRequest, message: problem) }
            response = try await next(request, context)
        } catch {
            failed = true
            response = headers.response(for: ClientErrors.mapped(error, request: request, logger: context.logger), request: request, context: context)
        }
        let status = Int(response.status.code)
        let elapsed = ContinuousClock.now - started
        metrics.record(
            route: context.endpointPath ?? (failed ? "NotFound" : "Unknown"), method: request.method, status: status, elapsed: elapsed,
            failed: failed
        )
        RequestLog.log(request, context: context, status: status, elapsed: elapsed)
        headers.addHeaders(to: &response.headers)
        return response
    }
}
