import HTTPTypes
import Metrics
import Synchronization

/// Per-route request metrics under the names Hummingbird's `MetricsMiddleware` uses
/// (`hb.requests`, `http.server.request.duration`, `hb.request.errors`,
/// `http.server.active_requests`), recorded by `EdgeMiddleware` instead.
///
/// Why not that middleware: it records once the body is written, by wrapping every answer's
/// body in a closure, which turns off Hummingbird's single write for a buffer body (head, body
/// and end in one pass, instead of three async writes each waiting for the event loop); and it
/// is one more async frame under every held wait (`docs/benchmarks.md`). Here the duration
/// ends when the answer is ready, before it is written.
final class RequestMetrics: Sendable {
    private struct Endpoint: Hashable {
        var route: String
        var method: HTTPRequest.Method
        var status: Int
    }

    private struct Recorders: Sendable {
        var requests: Counter
        var duration: Timer
    }

    private let active = Mutex<[HTTPRequest.Method: Meter]>([:])
    private let endpoints = Mutex<[Endpoint: Recorders]>([:])
    /// Made at a route's first error only, so that routes that never fail show no zero series.
    private let errors = Mutex<[Endpoint: Counter]>([:])

    /// The in-flight gauge of `method`'s requests.
    func activeRequests(_ method: HTTPRequest.Method) -> Meter {
        active.withLock { meters in
            if let meter = meters[method] { return meter }
            let meter = Meter(label: "http.server.active_requests", dimensions: [("http.request.method", method.rawValue)])
            meters[method] = meter
            return meter
        }
    }

    /// One answered request. `failed`: the route threw (the answer is the error's).
    func record(route: String, method: HTTPRequest.Method, status: Int, elapsed: Duration, failed: Bool) {
        let endpoint = Endpoint(route: route, method: method, status: status)
        let recorders = endpoints.withLock { recorders in
            if let known = recorders[endpoint] { return known }
            let dimensions = [("http.route", route), ("http.request.method", method.rawValue), ("http.response.status_code", String(status))]
            let made = Recorders(
                requests: Counter(label: "hb.requests", dimensions: dimensions),
                duration: Timer(label: "http.server.request.duration", dimensions: dimensions, preferredDisplayUnit: .seconds)
            )
            recorders[endpoint] = made
            return made
        }
        recorders.requests.increment()
        let (seconds, attoseconds) = elapsed.components
        recorders.duration.recordNanoseconds(seconds * 1_000_000_000 + attoseconds / 1_000_000_000)
        guard failed else { return }
        let counter = errors.withLock { counters in
            if let known = counters[endpoint] { return known }
            let made = Counter(
                label: "hb.request.errors",
                dimensions: [("http.route", route), ("http.request.method", method.rawValue), ("error.type", String(status))]
            )
            counters[endpoint] = made
            return made
        }
        counter.increment()
    }
}
