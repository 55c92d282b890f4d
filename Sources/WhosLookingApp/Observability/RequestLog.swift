import Hummingbird
import Logging
import Synchronization

/// What handlers learn about a request that its log line should carry (the tenant), shared by
/// reference because a handler's context changes do not flow back to outer middleware.
public final class RequestNotes: Sendable {
    private let tenantStorage = Mutex<String?>(nil)

    public init() {}

    public var tenant: String? {
        get { tenantStorage.withLock { $0 } }
        set { tenantStorage.withLock { $0 = newValue } }
    }
}

/// One line per request: method, route, status, duration and tenant. Never the query string,
/// which carries Jira's JWT.
enum RequestLog {
    static func log(_ request: Request, context: AppRequestContext, status: Int, elapsed: Duration) {
        let level: Logger.Level = status >= 500 ? .error : .info
        // Heartbeats are the hot path: build nothing when the line would be dropped.
        guard context.logger.logLevel <= level else { return }
        let milliseconds = Double(elapsed.components.seconds) * 1000 + Double(elapsed.components.attoseconds) / 1e15
        var metadata: Logger.Metadata = [
            "method": "\(request.method.rawValue)",
            "route": "\(context.endpointPath ?? request.uri.path)",
            "status": "\(status)",
            "duration_ms": "\((milliseconds * 10).rounded() / 10)",
        ]
        if let tenant = context.notes.tenant { metadata["tenant"] = "\(tenant)" }
        context.logger.log(level: level, "request", metadata: metadata)
    }
}
