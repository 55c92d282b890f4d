import Connect
import Hummingbird
import Libpq
import Logging

/// The HTTP application over an open pool. Start-up (database, migrations) happens in `Server`.
public func buildApplication(
    configuration: AppConfiguration,
    pool: PostgresPool,
    secrets: SecretBox,
    logger: Logger
) -> some ApplicationProtocol {
    let router = buildRouter(configuration: configuration, pool: pool, secrets: secrets, logger: logger)
    return Application(
        router: router,
        configuration: .init(address: .hostname(configuration.host, port: configuration.port), serverName: "whoslooking"),
        services: [pool],
        logger: logger
    )
}

func buildRouter(configuration: AppConfiguration, pool: PostgresPool, secrets: SecretBox, logger: Logger) -> Router<AppRequestContext> {
    let router = Router(context: AppRequestContext.self)
    router.add(middleware: DatabaseErrorMiddleware())
    let tenants = TenantRepository(pool: pool, secrets: secrets)
    let verifier = ConnectTokenVerifier(basePath: configuration.basePath, leeway: Double(configuration.jwtLeewaySeconds))
    let descriptor = AppDescriptor(appKey: configuration.appKey, baseURL: configuration.baseURL.absoluteString)

    HealthController(pool: pool).addRoutes(to: router)
    DescriptorController(descriptor: descriptor).addRoutes(to: router)
    LifecycleController(
        appKey: configuration.appKey,
        appBaseURL: configuration.baseURL.absoluteString,
        verifier: verifier,
        installKeys: InstallKeyProvider(baseURL: configuration.installKeysURL, logger: logger),
        tenants: tenants
    ).addRoutes(to: router)
    PanelController(
        authentication: ConnectJWTMiddleware(verifier: verifier, tenants: tenants, policy: .exactRequest)
    ).addRoutes(to: router)
    return router
}
