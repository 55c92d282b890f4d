import Foundation
import Logging
import Presence
import Prometheus
import ServiceLifecycle
import Tenants

/// Keeps the figures that live in the database (`viewers_active`, `issues_watched`,
/// `tenants_installed`) in `registry`, refreshed every `interval` through the modules that own
/// those tables (`Presence`, `Tenants`), so that a
/// `/metrics` scrape only reads memory: scrapes never run table scans, never take a pool
/// connection, and answer while the database is slow or gone (the figures then keep their last
/// value, and `metrics_db_refreshed_timestamp_seconds` says how old they are).
struct GaugeRefresher: Service {
    let presence: PresenceRepository
    let tenants: TenantRepository
    let registry: PrometheusCollectorRegistry
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
            let activity = try await presence.activity()
            let installed = try await tenants.installedCount()
            gauge("viewers_active").set(Double(activity.viewers))
            gauge("issues_watched").set(Double(activity.issues))
            gauge("tenants_installed").set(Double(installed))
            gauge("metrics_db_refreshed_timestamp_seconds").set(Date().timeIntervalSince1970)
        } catch {
            logger.warning("refreshing the database metrics failed; keeping the last figures", metadata: ["error": "\(error)"])
        }
    }

    private func gauge(_ name: String) -> Gauge {
        registry.makeGauge(descriptor: MetricNameDescriptor(metricName: name, unitName: "", helpText: ""))
    }
}
