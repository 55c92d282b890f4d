import Connect
import Crypto
import Hummingbird
import Libpq
import Logging
import Presence

/// The HTTP application over an open pool. Start-up (database, migrations) happens in `Server`.
public func buildApplication(
    configuration: AppConfiguration,
    pool: PostgresPool,
    secrets: SecretBox,
    logger: Logger
) -> some ApplicationProtocol {
    let presence = PresenceRepository(pool: pool, ttl: Double(configuration.viewerTTLSeconds))
    let router = buildRouter(configuration: configuration, pool: pool, secrets: secrets, presence: presence, logger: logger)
    let sweeper = ExpirySweeper(repository: presence, interval: .seconds(configuration.sweepIntervalSeconds), logger: logger)
    return Application(
        router: router,
        configuration: .init(address: .hostname(configuration.host, port: configuration.port), serverName: "whoslooking"),
        services: [pool, sweeper],
        logger: logger
    )
}

func buildRouter(
    configuration: AppConfiguration,
    pool: PostgresPool,
    secrets: SecretBox,
    presence: PresenceRepository,
    logger: Logger
) -> Router<AppRequestContext> {
    let router = Router(context: AppRequestContext.self)
    router.add(middleware: DatabaseErrorMiddleware())
    router.add(middleware: FileMiddleware(configuration.publicDirectory.path, urlBasePath: "/public", logger: logger))
    let tenants = TenantRepository(pool: pool, secrets: secrets, erasers: [ViewerEraser()])
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
    PresenceController(
        authentication: ConnectJWTMiddleware(verifier: verifier, tenants: tenants, policy: .exactRequest),
        presence: presence,
        tickets: ViewerTicketSigner(secret: secrets.keyMaterial),
        page: PanelPage(allJSURL: configuration.allJSURL, pollIntervalSeconds: configuration.pollIntervalSeconds),
        pollIntervalSeconds: configuration.pollIntervalSeconds
    ).addRoutes(to: router)
    return router
}
