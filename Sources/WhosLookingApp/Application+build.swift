import Tenants
import Connect
import Crypto
import Forge
import Foundation
import Hummingbird
import Libpq
import Logging
import Presence
import Prometheus
import UserDirectory

/// The HTTP application over an open pool. Start-up (database, migrations) happens in `Server`.
public func buildApplication(
    configuration: AppConfiguration,
    pool: PostgresPool,
    secrets: SecretBox,
    metrics: PrometheusCollectorRegistry,
    logger: Logger
) -> some ApplicationProtocol {
    let parts = AppParts(configuration: configuration, pool: pool, secrets: secrets, metrics: metrics, logger: logger)
    return Application(
        router: parts.router(),
        // Slow clients: request and idle timeouts and a connection cap (ConnectionLimits).
        server: .http1(limits: ConnectionLimits(configuration: configuration, logger: logger), connections: parts.connections),
        configuration: .init(address: .hostname(configuration.host, port: configuration.port), serverName: "whoslooking"),
        services: [
            pool, parts.enricher, parts.sweeper, parts.reporter, parts.waitRoom,
            GaugeRefresher(
                presence: parts.presence, tenants: parts.tenants, registry: metrics,
                interval: .seconds(configuration.metricsRefreshSeconds), logger: logger
            ),
        ],
        logger: logger
    )
}

/// The application's pieces, wired once.
struct AppParts {
    let configuration: AppConfiguration
    let pool: PostgresPool
    let metrics: PrometheusCollectorRegistry
    let logger: Logger
    let tenants: TenantRepository
    let presence: PresenceRepository
    let userDetails: UserDetailsRepository
    let enricher: UserEnricher
    let sweeper: ExpirySweeper
    let reporter: PersonalDataReporter
    /// Calls to each site's Jira (names, reports, Forge issue checks).
    let jira: JiraClient
    let tickets: ViewerTicketSigner
    let recorder: HeartbeatRecorder
    let waitRoom: WaitRoom
    /// Forge system tokens, in memory only.
    let systemTokens = ForgeSystemTokens()
    /// The server's open connections: counted against the cap, and watched by held waits.
    let connections = OpenConnections()

    init(configuration: AppConfiguration, pool: PostgresPool, secrets: SecretBox, metrics: PrometheusCollectorRegistry, logger: Logger) {
        self.configuration = configuration
        self.pool = pool
        self.metrics = metrics
        self.logger = logger
        let tenants = TenantRepository(pool: pool, secrets: secrets, erasers: [ViewerEraser(), UserDetailsEraser()])
        self.tenants = tenants
        let presence = PresenceRepository(
            pool: pool, liveness: configuration.viewerLiveness, maxConcurrentBatches: configuration.heartbeatBatchConnections,
            maxWaiting: configuration.heartbeatQueueLimit, maxWaitingPerAccount: configuration.heartbeatQueueLimitPerAccount,
            timeout: .milliseconds(configuration.heartbeatTimeoutMilliseconds), logger: logger
        )
        self.presence = presence
        waitRoom = WaitRoom(
            repository: presence,
            listener: PostgresListener(configuration: .init(conninfo: pool.configuration.conninfo, channels: [ViewerChanges.channel])),
            settings: configuration.waitRoomSettings,
            logger: logger
        )
        userDetails = UserDetailsRepository(
            pool: pool, ttl: Double(configuration.userCacheTTLSeconds), missingTTL: Double(configuration.userMissingTTLSeconds)
        )
        let jira = JiraClient(appKey: configuration.appKey, timeout: .seconds(Int64(configuration.jiraTimeoutSeconds)))
        self.jira = jira
        let systemTokens = systemTokens
        let credentials: UserEnricher.Credentials = { clientKey in
            guard let found = try await tenants.installedTenant(clientKey: clientKey) else { return .uninstalled }
            switch found.tenant.kind {
            case .connect:
                guard let secret = found.sharedSecret else { return .uninstalled }
                return .available(.connect(baseURL: found.tenant.baseURL, sharedSecret: secret))
            case .forge:
                guard let token = systemTokens.token(installationID: clientKey) else { return .waiting }
                return .available(.bearer(apiBaseURL: found.tenant.baseURL, token: token))
            }
        }
        enricher = UserEnricher(
            client: jira, repository: userDetails, credentials: credentials,
            // Jira refused this installation's system token: forget it, so the next call's token is used.
            credentialsRefused: { clientKey, refused in
                if case .bearer(_, let token) = refused { systemTokens.forget(token: token, installationID: clientKey) }
            },
            logger: logger)
        sweeper = ExpirySweeper(repository: presence, interval: .seconds(configuration.sweepIntervalSeconds), logger: logger)
        reporter = PersonalDataReporter(
            pool: pool, client: jira, repository: userDetails, enricher: enricher, credentials: credentials,
            settings: .init(reportURL: configuration.personalDataReportURL, interval: .seconds(configuration.personalDataReportIntervalSeconds)),
            logger: logger
        )
        tickets = ViewerTicketSigner(
            secret: secrets.keyMaterial, previousSecrets: secrets.previousKeyMaterial, maxChainAge: Double(configuration.ticketMaxAgeSeconds)
        )
        recorder = HeartbeatRecorder(presence: presence, enricher: enricher)
    }

    func router() -> Router<AppRequestContext> {
        let router = Router(context: AppRequestContext.self)
        // Around everything else, so that every answer, errors and files included, carries the
        // security headers and is counted and logged, and before anything reads the path or query.
        router.add(
            middleware: EdgeMiddleware(
                headers: SecurityHeaders(allJSURL: configuration.allJSURL, installKeysURL: configuration.installKeysURL),
                metrics: RequestMetrics()
            ))
        // The panel's files, under /public only: as a group's middleware it is not one more
        // frame in every other request (a held wait keeps each frame, `EdgeMiddleware`).
        let files = router.group("public").add(
            middleware: FileMiddleware(
                configuration.publicDirectory.path, urlBasePath: "/public",
                // The panel's script, stylesheet and default avatar: an hour, then revalidated by ETag.
                cacheControl: CacheControl([(MediaType(type: .any), [.public, .maxAge(3600)])]),
                logger: logger
            )
        )
        // Reached only when no file answered.
        files.get("**") { _, _ -> Response in throw HTTPError(.notFound) }
        files.head("**") { _, _ -> Response in throw HTTPError(.notFound) }
        let verifier = ConnectTokenVerifier(basePath: configuration.basePath, leeway: Double(configuration.jwtLeewaySeconds))

        HealthController(pool: pool, budget: .milliseconds(configuration.readinessTimeoutMilliseconds)).addRoutes(to: router)
        MetricsController(registry: metrics, pool: pool, token: configuration.metricsToken)
            .addRoutes(to: router)
        DescriptorController(descriptor: AppDescriptor(appKey: configuration.appKey, baseURL: configuration.baseURL.absoluteString))
            .addRoutes(to: router)
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
            recorder: recorder,
            tickets: tickets,
            generations: TenantGenerations(tenants: tenants),
            waits: PanelWaits(room: waitRoom, connections: connections),
            page: PanelPage(
                allJSURL: configuration.allJSURL, pollIntervalSeconds: configuration.pollIntervalSeconds,
                awayPollIntervalSeconds: configuration.awayPollIntervalSeconds
            ),
            polls: configuration.panelPolls
        ).addRoutes(to: router)
        if let forgeAppID = configuration.forgeAppID {
            ForgeController(
                verifier: ForgeTokenVerifier(
                    appID: forgeAppID,
                    keySet: ForgeKeySet(jwksURL: configuration.forgeJWKSURL, logger: logger),
                    environmentID: configuration.forgeEnvironmentID,
                    leeway: Double(configuration.jwtLeewaySeconds)
                ),
                tenants: tenants, presence: presence, recorder: recorder, waits: PanelWaits(room: waitRoom, connections: connections),
                systemTokens: systemTokens,
                issueAccess: ForgeIssueAccess(
                    jira: jira,
                    ttl: .seconds(configuration.forgeIssueAccessTTLSeconds), logger: logger
                ),
                reporter: reporter,
                polls: configuration.panelPolls
            ).addRoutes(to: router)
        }
        return router
    }
}

/// What panels are told about their timers.
struct PanelPolls: Sendable {
    var pollSeconds: Int
    var awayPollSeconds: Int
}

extension AppConfiguration {
    var waitRoomSettings: WaitRoom.Settings {
        var settings = WaitRoom.Settings(holdFor: .seconds(waitSeconds), maxWaiting: maxWaitingPanels)
        settings.maxPerTenant = maxWaitingPanelsPerSite
        settings.maxPerAccount = maxWaitingPanelsPerAccount
        return settings
    }

    var panelPolls: PanelPolls { PanelPolls(pollSeconds: pollIntervalSeconds, awayPollSeconds: awayPollIntervalSeconds) }

    /// An away tab heartbeats every `awayPollIntervalSeconds`, but a browser may delay a hidden
    /// tab's timers by up to a minute more: it is kept for two intervals plus a visible tab's TTL.
    var viewerLiveness: ViewerLiveness {
        ViewerLiveness(
            activeTTL: Double(viewerTTLSeconds), awayTTL: Double(2 * awayPollIntervalSeconds + viewerTTLSeconds),
            awayLimit: Double(awayTTLSeconds)
        )
    }
}
