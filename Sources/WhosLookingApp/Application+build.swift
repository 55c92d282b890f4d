import Hummingbird
import Libpq
import Logging

public typealias AppRequestContext = BasicRequestContext

/// The HTTP application over an open pool. Start-up (database, migrations) happens in `Server`.
public func buildApplication(
    configuration: AppConfiguration,
    pool: PostgresPool,
    logger: Logger
) -> some ApplicationProtocol {
    let router = buildRouter(pool: pool)
    return Application(
        router: router,
        configuration: .init(address: .hostname(configuration.host, port: configuration.port), serverName: "whoslooking"),
        services: [pool],
        logger: logger
    )
}

func buildRouter(pool: PostgresPool) -> Router<AppRequestContext> {
    let router = Router(context: AppRequestContext.self)
    router.add(middleware: DatabaseErrorMiddleware())
    HealthController(pool: pool).addRoutes(to: router)
    return router
}
