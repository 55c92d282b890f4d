import Foundation
import Libpq
import Logging
import Prometheus
import ServiceLifecycle

/// Keeps the figures that live in the database (`viewers_active`, `issues_watched`,
/// `tenants_installed`) in `registry`, refreshed every `interval` by one query, so that a
/// `/metrics` scrape only reads memory: scrapes never run table scans, never take a pool
/// connection, and answer while the database is slow or gone (the figures then keep their last
/// value, and `metrics_db_refreshed_timestamp_seconds` says how old they are).
struct GaugeRefresher: Service {
    let pool: PostgresPool
    let registry: PrometheusCollectorRegistry
    let viewerTTLSeconds: Int
    let interval: Duration
    let logger: Logger

    /// Refreshes at once, then every interval, until graceful shutdown.
    func run() async throws {
        await cancelWhenGracefulShutdown {
            while !Task.isCancelled {
                await refresh()
                do {
                    try await Task.sleep(for: interval)
                } catch {
                    return
                }
            }
        }
    }

    /// One refresh; a failure keeps the previous figures and is retried next interval.
    func refresh() async {
        do {
            let rows = try await pool.query(
                """
                SELECT (SELECT count(*) FROM viewers WHERE NOT gone AND last_seen > now() - make_interval(secs => \(viewerTTLSeconds))) AS viewers,
                       (SELECT count(DISTINCT (client_key, issue_id)) FROM viewers
                         WHERE NOT gone AND last_seen > now() - make_interval(secs => \(viewerTTLSeconds))) AS issues,
                       (SELECT count(*) FROM tenants WHERE state = 'installed') AS tenants
                """
            )
            guard let row = rows.first else { return }
            gauge("viewers_active").set(Double(try row.decode(Int.self, "viewers")))
            gauge("issues_watched").set(Double(try row.decode(Int.self, "issues")))
            gauge("tenants_installed").set(Double(try row.decode(Int.self, "tenants")))
            gauge("metrics_db_refreshed_timestamp_seconds").set(Date().timeIntervalSince1970)
        } catch {
            logger.warning("refreshing the database metrics failed; keeping the last figures", metadata: ["error": "\(error)"])
        }
    }

    private func gauge(_ name: String) -> Gauge {
        registry.makeGauge(descriptor: MetricNameDescriptor(metricName: name, unitName: "", helpText: ""))
    }
}
