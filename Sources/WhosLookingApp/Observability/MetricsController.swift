import Hummingbird
import Libpq
import Metrics
import Prometheus

/// `GET /metrics`: Prometheus text format. Figures that live in the database or the pool are
/// read at scrape time. With METRICS_TOKEN set, a matching bearer token is required.
struct MetricsController {
    let registry: PrometheusCollectorRegistry
    let pool: PostgresPool
    let viewerTTLSeconds: Int
    let token: String?

    func addRoutes(to router: Router<AppRequestContext>) {
        router.get("metrics") { request, _ in try await scrape(request) }
    }

    func scrape(_ request: Request) async throws -> Response {
        if let token {
            let presented = request.headers[.authorization].flatMap { value -> String? in
                value.hasPrefix("Bearer ") ? String(value.dropFirst(7)) : nil
            }
            guard let presented, presented.utf8.count == token.utf8.count,
                  zip(presented.utf8, token.utf8).reduce(0, { $0 | ($1.0 ^ $1.1) }) == 0
            else { throw HTTPError(.unauthorized, message: "metrics need the bearer token") }
        }
        let statistics = await pool.statistics()
        Gauge(label: "db_pool_connections_open").record(statistics.open)
        Gauge(label: "db_pool_connections_idle").record(statistics.idle)
        Gauge(label: "db_pool_waiting").record(statistics.waiting)
        Gauge(label: "db_pool_connections_max").record(statistics.maxConnections)
        if let rows = try? await pool.query("""
            SELECT (SELECT count(*) FROM viewers WHERE last_seen > now() - make_interval(secs => \(viewerTTLSeconds))) AS viewers,
                   (SELECT count(DISTINCT (client_key, issue_id)) FROM viewers WHERE last_seen > now() - make_interval(secs => \(viewerTTLSeconds))) AS issues,
                   (SELECT count(*) FROM tenants WHERE state = 'installed') AS tenants
            """), let row = rows.first {
            Gauge(label: "viewers_active").record(try row.decode(Int.self, "viewers"))
            Gauge(label: "issues_watched").record(try row.decode(Int.self, "issues"))
            Gauge(label: "tenants_installed").record(try row.decode(Int.self, "tenants"))
        }
        return Response(
            status: .ok,
            headers: [.contentType: "text/plain; version=0.0.4; charset=utf-8", .cacheControl: "no-store"],
            body: .init(byteBuffer: ByteBuffer(bytes: registry.emitToBuffer()))
        )
    }
}
