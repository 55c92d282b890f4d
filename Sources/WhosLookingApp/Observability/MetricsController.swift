import Hummingbird
import Libpq
import Prometheus

/// `GET /metrics`: Prometheus text format. A scrape reads memory only: the figures that live in
/// the database are kept in the registry by `GaugeRefresher`, and the pool's figures are its
/// in-memory counters. With METRICS_TOKEN set, a matching bearer token is required.
struct MetricsController {
    let registry: PrometheusCollectorRegistry
    let pool: PostgresPool
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
        // The pool's own counters (no connection, no query).
        let statistics = await pool.statistics()
        gauge("db_pool_connections_open").set(Int64(statistics.open))
        gauge("db_pool_connections_idle").set(Int64(statistics.idle))
        gauge("db_pool_waiting").set(Int64(statistics.waiting))
        gauge("db_pool_connections_max").set(Int64(statistics.maxConnections))
        return Response(
            status: .ok,
            headers: [.contentType: "text/plain; version=0.0.4; charset=utf-8", .cacheControl: "no-store"],
            body: .init(byteBuffer: ByteBuffer(bytes: registry.emitToBuffer()))
        )
    }

    private func gauge(_ name: String) -> Gauge {
        registry.makeGauge(descriptor: MetricNameDescriptor(metricName: name, unitName: "", helpText: ""))
    }
}
