import Hummingbird
import Libpq
import Logging

/// Liveness and readiness, for load balancers and orchestrators.
struct HealthController {
    typealias Context = AppRequestContext
    let pool: PostgresPool

    func addRoutes(to router: Router<Context>) {
        router.get("healthz") { _, _ in "ok\n" }
        router.get("readyz", use: ready)
    }

    /// 200 only when the database answers.
    @Sendable func ready(_ request: Request, context: Context) async -> Response {
        do {
            try await pool.query("SELECT 1")
            return Response(status: .ok, body: .init(byteBuffer: ByteBuffer(string: "ready\n")))
        } catch {
            context.logger.warning("readiness check failed", metadata: ["error": "\(error)"])
            return Response(status: .serviceUnavailable, body: .init(byteBuffer: ByteBuffer(string: "database unavailable\n")))
        }
    }
}
