import Tenants
import Foundation
import Libpq
import Logging

/// Settings read from the environment at start-up. Every variable has a documented default;
/// an invalid value stops start-up with a message naming the variable.
public struct AppConfiguration: Sendable {
    public struct Invalid: Error, CustomStringConvertible {
        public var variable: String
        public var reason: String
        public var description: String { "configuration error: \(variable) \(reason)" }
    }

    public var host: String
    public var port: Int
    /// The public URL Jira uses to reach us; the descriptor's baseUrl.
    public var baseURL: URL
    /// nil means: run the embedded PostgreSQL under `dataDirectory`.
    public var databaseURL: String?
    public var dataDirectory: URL
    public var databasePoolSize: Int
    /// Connections heartbeat batches may hold at once (group commit, see `HeartbeatBatcher`).
    public var heartbeatBatchConnections: Int
    public var databaseConnectTimeoutSeconds: Int
    /// The sessions' `statement_timeout`; the client cancels a statement one second after it,
    /// and drops the connection one more second later. 0 turns both off.
    public var databaseStatementTimeoutMilliseconds: Int
    /// How long a request waits for a free pool connection.
    public var databaseAcquireTimeoutMilliseconds: Int
    /// A heartbeat not recorded within this answers 503 with Retry-After.
    public var heartbeatTimeoutMilliseconds: Int
    /// Most heartbeats waiting for a batch; beyond, a heartbeat answers 503 at once.
    public var heartbeatQueueLimit: Int
    /// `/readyz` answers 503 when the database has not answered within this.
    public var readinessTimeoutMilliseconds: Int
    public var migrationsDirectory: URL
    public var logLevel: Logger.Level
    /// The descriptor's `key`.
    public var appKey: String
    /// Where Atlassian publishes the public keys of signed installs, by kid.
    public var installKeysURL: String
    /// Base64 of 32 bytes sealing shared secrets; nil means the embedded default's key file.
    public var secretEncryptionKey: String?
    /// Keys being rotated out: secrets sealed under them are opened and re-sealed at start-up.
    public var previousSecretEncryptionKeys: [String]
    /// Keys being rotated in: opened (and their tickets verified), never used to seal.
    public var nextSecretEncryptionKeys: [String]
    /// Clock leeway for inbound JWT `exp` and `iat`.
    public var jwtLeewaySeconds: Int
    /// How often an open panel sends a heartbeat.
    public var pollIntervalSeconds: Int
    /// A viewer unseen this long is no longer listed.
    public var viewerTTLSeconds: Int
    /// How often expired viewers are deleted.
    public var sweepIntervalSeconds: Int
    /// How often a hidden (away) panel sends a heartbeat.
    public var awayPollIntervalSeconds: Int
    /// How long after going away a hidden panel is still listed (as away).
    public var awayTTLSeconds: Int
    /// How long a panel's wait for a change is held before it is answered "unchanged".
    public var waitSeconds: Int
    /// Most panel waits held at once; beyond, a wait answers 503 at once.
    public var maxWaitingPanels: Int
    /// How long a Connect panel's viewer tickets are renewed after the panel was loaded.
    public var ticketMaxAgeSeconds: Int
    /// Atlassian's iframe bridge script.
    public var allJSURL: String
    /// The panel's static files.
    public var publicDirectory: URL
    /// How long names and avatars from Jira are used before being fetched again.
    public var userCacheTTLSeconds: Int
    /// How long an account Jira did not return is not asked for again.
    public var userMissingTTLSeconds: Int
    /// Bound on each call to Jira.
    public var jiraTimeoutSeconds: Int
    /// Atlassian's personal data reporting API.
    public var personalDataReportURL: URL
    /// Mean time between personal data report runs (each run jittered ±50%).
    public var personalDataReportIntervalSeconds: Int
    /// `text` or `json` (one object per line).
    public var logFormat: String
    /// When set, `/metrics` requires `Authorization: Bearer <token>`.
    public var metricsToken: String?
    /// The Forge app's id (`ari:cloud:ecosystem::app/<uuid>`); nil turns the `/forge` routes off.
    public var forgeAppID: String?
    /// Where Forge publishes the keys of its invocation tokens.
    public var forgeJWKSURL: String
    /// Held waits one site may have at once (default three quarters of `MAX_WAITING_PANELS`):
    /// no site can take every slot. Above it, and above the per-person and per-tab quotas, 429.
    public var maxWaitingPanelsPerSite: Int
    /// Heartbeats one person may have waiting for the database at once (429 above it): a tab
    /// sends one at a time, so nobody's tabs come near it, and one person cannot fill the queue.
    public var heartbeatQueueLimitPerAccount: Int
    /// Held waits one person may have at once.
    public var maxWaitingPanelsPerAccount: Int
    /// When set, every invocation token must name this Forge environment (`app.environment.id`).
    public var forgeEnvironmentID: String?
    /// How long Jira's answer to "may this person see this issue?" is kept (Forge door).
    public var forgeIssueAccessTTLSeconds: Int
    /// A request still incomplete this long after its first byte is dropped (slow clients).
    public var httpRequestTimeoutSeconds: Int
    /// An HTTP connection with no request being read or answered is closed after this long.
    public var httpIdleTimeoutSeconds: Int
    /// Most HTTP connections open at once; more are answered 503 and closed.
    public var httpMaxConnections: Int
    /// How often `/metrics`' database figures (viewers, issues, tenants) are refreshed.
    public var metricsRefreshSeconds: Int

    static let forgeAppIDPrefix = "ari:cloud:ecosystem::app/"

    public var embeddedPostgresDirectory: URL { dataDirectory.appendingPathComponent("postgres") }

    public init(environment: [String: String] = ProcessInfo.processInfo.environment) throws {
        let reader = EnvironmentReader(environment)
        host = reader.string("HOST", default: "127.0.0.1")
        port = try reader.integer("PORT", default: 8080, in: 0...65535)
        baseURL = try reader.baseURL("BASE_URL", default: "http://localhost:\(port)", trustAnchor: true)
        databaseURL = reader.optionalString("DATABASE_URL")
        dataDirectory = URL(fileURLWithPath: reader.string("DATA_DIR", default: ".whoslooking"))
        databasePoolSize = try reader.integer("DATABASE_POOL_SIZE", default: 8, in: 1...200)
        heartbeatBatchConnections = try reader.integer("HEARTBEAT_BATCH_CONNECTIONS", default: min(2, databasePoolSize), in: 1...200)
        guard heartbeatBatchConnections <= databasePoolSize else {
            throw Invalid(
                variable: "HEARTBEAT_BATCH_CONNECTIONS",
                reason: "must not exceed DATABASE_POOL_SIZE (\(databasePoolSize)), got \(heartbeatBatchConnections)")
        }
        databaseConnectTimeoutSeconds = try reader.integer("DATABASE_CONNECT_TIMEOUT_SECONDS", default: 5, in: 1...300)
        databaseStatementTimeoutMilliseconds = try reader.integer("DATABASE_STATEMENT_TIMEOUT_MS", default: 5000, in: 0...3_600_000)
        databaseAcquireTimeoutMilliseconds = try reader.integer("DATABASE_ACQUIRE_TIMEOUT_MS", default: 5000, in: 1...600_000)
        heartbeatTimeoutMilliseconds = try reader.integer("HEARTBEAT_TIMEOUT_MS", default: 3000, in: 100...600_000)
        heartbeatQueueLimit = try reader.integer("HEARTBEAT_QUEUE_LIMIT", default: 1024, in: 1...1_000_000)
        heartbeatQueueLimitPerAccount = try reader.integer("HEARTBEAT_QUEUE_LIMIT_PER_ACCOUNT", default: 16, in: 1...1_000_000)
        readinessTimeoutMilliseconds = try reader.integer("READINESS_TIMEOUT_MS", default: 1000, in: 10...60_000)
        migrationsDirectory = try reader.directory("MIGRATIONS_DIR", default: Self.defaultProjectFolder("Migrations"))
        logLevel = try reader.logLevel("LOG_LEVEL", default: .info)
        appKey = reader.string("APP_KEY", default: "whos-looking")
        guard appKey.count <= 64, appKey.allSatisfy({ $0.isASCII && ($0.isLetter || $0.isNumber || "-._".contains($0)) }) else {
            throw Invalid(variable: "APP_KEY", reason: "must be 1 to 64 characters of A-Z a-z 0-9 - . _, got '\(appKey)'")
        }
        installKeysURL = try reader.baseURL("CONNECT_INSTALL_KEYS_URL", default: "https://connect-install-keys.atlassian.com", trustAnchor: true)
            .absoluteString
        secretEncryptionKey = reader.optionalString("SECRET_ENCRYPTION_KEY")
        if let secretEncryptionKey, (try? SecretBox(base64Key: secretEncryptionKey)) == nil {
            throw Invalid(variable: "SECRET_ENCRYPTION_KEY", reason: "must be 32 random bytes, base64-encoded (openssl rand -base64 32)")
        }
        previousSecretEncryptionKeys = (reader.optionalString("SECRET_ENCRYPTION_KEY_PREVIOUS") ?? "")
            .split(separator: ",").map { $0.trimmingCharacters(in: .whitespaces) }.filter { !$0.isEmpty }
        for key in previousSecretEncryptionKeys where (try? SecretBox(base64Key: key)) == nil {
            throw Invalid(variable: "SECRET_ENCRYPTION_KEY_PREVIOUS", reason: "must be a comma-separated list of base64 32-byte keys")
        }
        nextSecretEncryptionKeys = (reader.optionalString("SECRET_ENCRYPTION_KEY_NEXT") ?? "")
            .split(separator: ",").map { $0.trimmingCharacters(in: .whitespaces) }.filter { !$0.isEmpty }
        for key in nextSecretEncryptionKeys where (try? SecretBox(base64Key: key)) == nil {
            throw Invalid(variable: "SECRET_ENCRYPTION_KEY_NEXT", reason: "must be a comma-separated list of base64 32-byte keys")
        }
        jwtLeewaySeconds = try reader.integer("JWT_LEEWAY_SECONDS", default: 30, in: 0...300)
        pollIntervalSeconds = try reader.integer("POLL_INTERVAL_SECONDS", default: 10, in: 1...3600)
        viewerTTLSeconds = try reader.integer("VIEWER_TTL_SECONDS", default: 3 * pollIntervalSeconds, in: 1...86400)
        guard viewerTTLSeconds > pollIntervalSeconds else {
            throw Invalid(
                variable: "VIEWER_TTL_SECONDS",
                reason: "must be longer than POLL_INTERVAL_SECONDS (\(pollIntervalSeconds)), or every viewer flickers out between heartbeats")
        }
        sweepIntervalSeconds = try reader.integer("SWEEP_INTERVAL_SECONDS", default: 30, in: 1...86400)
        ticketMaxAgeSeconds = try reader.integer("TICKET_MAX_AGE_SECONDS", default: 12 * 3600, in: 60...(7 * 86400))
        allJSURL = try reader.baseURL("ALLJS_URL", default: "https://connect-cdn.atl-paas.net/all.js", trustAnchor: true).absoluteString
        publicDirectory = try reader.directory("PUBLIC_DIR", default: Self.defaultProjectFolder("Public"))
        awayPollIntervalSeconds = try reader.integer("AWAY_POLL_INTERVAL_SECONDS", default: 60, in: 1...3600)
        awayTTLSeconds = try reader.integer("AWAY_TTL_SECONDS", default: 1800, in: 1...86400)
        guard awayTTLSeconds >= awayPollIntervalSeconds else {
            throw Invalid(variable: "AWAY_TTL_SECONDS", reason: "must be at least AWAY_POLL_INTERVAL_SECONDS (\(awayPollIntervalSeconds))")
        }
        // Forge ends an invokeRemote call after 25 s: a held wait must be answered before.
        waitSeconds = try reader.integer("WAIT_SECONDS", default: 20, in: 1...24)
        maxWaitingPanels = try reader.integer("MAX_WAITING_PANELS", default: 20_000, in: 0...1_000_000)
        maxWaitingPanelsPerSite = try reader.integer("MAX_WAITING_PANELS_PER_SITE", default: max(1, maxWaitingPanels * 3 / 4), in: 1...1_000_000)
        maxWaitingPanelsPerAccount = try reader.integer("MAX_WAITING_PANELS_PER_ACCOUNT", default: 20, in: 1...10_000)
        userCacheTTLSeconds = try reader.integer("USER_CACHE_TTL_SECONDS", default: 86400, in: 60...(30 * 86400))
        userMissingTTLSeconds = try reader.integer("USER_MISSING_TTL_SECONDS", default: 3600, in: 1...86400)
        jiraTimeoutSeconds = try reader.integer("JIRA_TIMEOUT_SECONDS", default: 10, in: 1...120)
        personalDataReportURL = try reader.baseURL(
            "PERSONAL_DATA_REPORT_URL", default: "https://api.atlassian.com/app/report-accounts/", keepTrailingSlash: true,
            trustAnchor: true)
        personalDataReportIntervalSeconds = try reader.integer("PERSONAL_DATA_REPORT_INTERVAL_SECONDS", default: 3600, in: 1...(7 * 86400))
        logFormat = reader.string("LOG_FORMAT", default: "text").lowercased()
        guard ["text", "json"].contains(logFormat) else {
            throw Invalid(variable: "LOG_FORMAT", reason: "must be text or json, got '\(logFormat)'")
        }
        metricsToken = reader.optionalString("METRICS_TOKEN")
        forgeAppID = reader.optionalString("FORGE_APP_ID")
        if let forgeAppID {
            let id = forgeAppID.dropFirst(Self.forgeAppIDPrefix.count)
            guard forgeAppID.hasPrefix(Self.forgeAppIDPrefix), (1...64).contains(id.utf8.count),
                id.utf8.allSatisfy({
                    $0 == UInt8(ascii: "-") || (0x30...0x39).contains($0) || (0x61...0x66).contains($0) || (0x41...0x46).contains($0)
                })
            else {
                throw Invalid(
                    variable: "FORGE_APP_ID", reason: "must be the app id from `forge register`, \(Self.forgeAppIDPrefix)<uuid>, got '\(forgeAppID)'")
            }
        }
        forgeJWKSURL = try reader.baseURL(
            "FORGE_JWKS_URL", default: "https://forge.cdn.prod.atlassian-dev.net/.well-known/jwks.json", keepTrailingSlash: true,
            trustAnchor: true
        ).absoluteString
        forgeEnvironmentID = reader.optionalString("FORGE_ENVIRONMENT_ID")
        if let forgeEnvironmentID, forgeEnvironmentID.utf8.count > 255 || forgeEnvironmentID.utf8.contains(where: { $0 < 0x21 || $0 > 0x7E }) {
            throw Invalid(variable: "FORGE_ENVIRONMENT_ID", reason: "must be the environment's id from the developer console")
        }
        forgeIssueAccessTTLSeconds = try reader.integer("FORGE_ISSUE_ACCESS_TTL_SECONDS", default: 300, in: 1...3600)
        httpRequestTimeoutSeconds = try reader.integer("HTTP_REQUEST_TIMEOUT_SECONDS", default: 30, in: 1...3600)
        httpIdleTimeoutSeconds = try reader.integer("HTTP_IDLE_TIMEOUT_SECONDS", default: 75, in: 1...3600)
        httpMaxConnections = try reader.integer("HTTP_MAX_CONNECTIONS", default: 20_000, in: 1...1_000_000)
        metricsRefreshSeconds = try reader.integer("METRICS_REFRESH_SECONDS", default: 15, in: 1...3600)
        variablesRead = reader.namesRead
        plainHTTPTrustAnchors = reader.plainHTTPTrustAnchors
    }

    /// The trust anchors given as plain http (allowed only on a loopback host: the local
    /// stand-ins and tests): logged once at start, since each relaxes what is trusted.
    public let plainHTTPTrustAnchors: [String]

    /// Every environment variable this configuration reads.
    public let variablesRead: Set<String>

    /// The key sealing shared secrets: SECRET_ENCRYPTION_KEY, or with the embedded database a key
    /// generated once into DATA_DIR/secret.key (mode 0600). Other setups must set it.
    public func resolveSecretBox() throws -> SecretBox {
        if let secretEncryptionKey {
            return try SecretBox(base64Key: secretEncryptionKey).addingPrevious(previousSecretEncryptionKeys).addingNext(nextSecretEncryptionKeys)
        }
        guard databaseURL == nil else {
            throw Invalid(
                variable: "SECRET_ENCRYPTION_KEY", reason: "is required when DATABASE_URL is set: 32 random bytes, base64 (openssl rand -base64 32)")
        }
        return try SecretBox(base64Key: SecretBox.loadOrCreateKeyFile(dataDirectory.appendingPathComponent("secret.key")))
    }

    /// The pool's settings: size, the connections reserved for heartbeat batches (leaving at
    /// least two for other work: a personal data report run holds its lock on one connection
    /// while it queries on another), and every deadline.
    public func databasePoolConfiguration(conninfo: String) -> PostgresPool.Configuration {
        let statementTimeout: Duration? = databaseStatementTimeoutMilliseconds > 0 ? .milliseconds(databaseStatementTimeoutMilliseconds) : nil
        return PostgresPool.Configuration(
            conninfo: conninfo,
            maxConnections: databasePoolSize,
            connectTimeoutSeconds: databaseConnectTimeoutSeconds,
            acquireTimeout: .milliseconds(databaseAcquireTimeoutMilliseconds),
            statementTimeout: statementTimeout,
            // The server's timeout fires first and keeps the session; ours is for a server
            // that cannot answer at all (a stopped backend, a network stall).
            queryTimeout: statementTimeout.map { $0 + .seconds(1) },
            cancelGrace: .seconds(1),
            reservedConnections: min(heartbeatBatchConnections, max(0, databasePoolSize - 2))
        )
    }

    /// The path part of BASE_URL, which canonical request paths are relative to.
    public var basePath: String {
        URLComponents(url: baseURL, resolvingAgainstBaseURL: false)?.percentEncodedPath ?? ""
    }

    /// `name` (Migrations, Public) in the working folder, else in the checkout the executable was built in.
    static func defaultProjectFolder(_ name: String) -> String {
        if FileManager.default.fileExists(atPath: name) { return name }
        var folder = URL(fileURLWithPath: CommandLine.arguments[0]).resolvingSymlinksInPath().deletingLastPathComponent()
        while folder.path != "/" {
            let candidate = folder.appendingPathComponent(name)
            if FileManager.default.fileExists(atPath: candidate.path) { return candidate.path }
            folder = folder.deletingLastPathComponent()
        }
        return name
    }
}

/// Reads typed values from the environment; empty counts as unset. Remembers every name it
/// was asked for, so deployment files can be checked against what the app really reads.
final class EnvironmentReader {
    let environment: [String: String]
    private(set) var namesRead: Set<String> = []
    private(set) var plainHTTPTrustAnchors: [String] = []

    init(_ environment: [String: String]) {
        self.environment = environment
    }

    func optionalString(_ name: String) -> String? {
        namesRead.insert(name)
        guard let value = environment[name]?.trimmingCharacters(in: .whitespaces), !value.isEmpty else { return nil }
        return value
    }

    func string(_ name: String, default fallback: String) -> String {
        optionalString(name) ?? fallback
    }

    func integer(_ name: String, default fallback: Int, in range: ClosedRange<Int>) throws -> Int {
        guard let text = optionalString(name) else { return fallback }
        guard let value = Int(text), range.contains(value) else {
            throw AppConfiguration.Invalid(
                variable: name, reason: "must be a whole number from \(range.lowerBound) to \(range.upperBound), got '\(text)'")
        }
        return value
    }

    /// An absolute http(s) URL. A `trustAnchor` (where keys, scripts or our own identity come
    /// from) must be https, unless its host is a loopback address, where only this machine
    /// can answer; those are listed in `plainHTTPTrustAnchors`.
    func baseURL(_ name: String, default fallback: String, keepTrailingSlash: Bool = false, trustAnchor: Bool = false) throws -> URL {
        let text = optionalString(name) ?? fallback
        guard let components = URLComponents(string: text),
            let scheme = components.scheme?.lowercased(), scheme == "https" || scheme == "http",
            components.host?.isEmpty == false,
            components.query == nil, components.fragment == nil,
            let url = components.url
        else {
            throw AppConfiguration.Invalid(variable: name, reason: "must be an absolute http(s) URL without query or fragment, got '\(text)'")
        }
        if trustAnchor, scheme == "http" {
            guard Self.isLoopback(host: components.host ?? "") else {
                throw AppConfiguration.Invalid(variable: name, reason: "must be https (plain http only on a loopback host), got '\(text)'")
            }
            plainHTTPTrustAnchors.append(name)
        }
        if keepTrailingSlash { return url }
        // One trailing slash is the same URL as none: keep none, so paths join cleanly.
        let trimmed = url.absoluteString.hasSuffix("/") ? String(url.absoluteString.dropLast()) : url.absoluteString
        return URL(string: trimmed)!
    }

    /// `localhost`, 127.0.0.0/8 and `::1`.
    static func isLoopback(host: String) -> Bool {
        let host = host.lowercased()
        if host == "localhost" || host == "::1" || host == "[::1]" { return true }
        let octets = host.split(separator: ".", omittingEmptySubsequences: false)
        return octets.count == 4 && octets[0] == "127" && octets.allSatisfy { UInt8($0) != nil }
    }

    func directory(_ name: String, default fallback: String) throws -> URL {
        let path = string(name, default: fallback)
        var isDirectory: ObjCBool = false
        guard FileManager.default.fileExists(atPath: path, isDirectory: &isDirectory), isDirectory.boolValue else {
            throw AppConfiguration.Invalid(variable: name, reason: "must name an existing folder, got '\(path)'")
        }
        return URL(fileURLWithPath: path)
    }

    func logLevel(_ name: String, default fallback: Logger.Level) throws -> Logger.Level {
        guard let text = optionalString(name) else { return fallback }
        guard let level = Logger.Level(rawValue: text.lowercased()) else {
            let allowed = Logger.Level.allCases.map(\.rawValue).joined(separator: ", ")
            throw AppConfiguration.Invalid(variable: name, reason: "must be one of \(allowed), got '\(text)'")
        }
        return level
    }
}
