/// The Connect app descriptor served at `/atlassian-connect.json`.
public struct AppDescriptor: Codable, Sendable, Equatable {
    public struct Vendor: Codable, Sendable, Equatable {
        public var name: String
        public var url: String
    }

    public struct Authentication: Codable, Sendable, Equatable {
        public var type: String
    }

    public struct Lifecycle: Codable, Sendable, Equatable {
        public var installed: String
        public var uninstalled: String
    }

    public struct APIMigrations: Codable, Sendable, Equatable {
        public var contextQSH: Bool
        public var signedInstall: Bool
        public var gdpr: Bool

        enum CodingKeys: String, CodingKey {
            case contextQSH = "context-qsh"
            case signedInstall = "signed-install"
            case gdpr
        }
    }

    public struct I18nText: Codable, Sendable, Equatable {
        public var value: String
    }

    public struct Condition: Codable, Sendable, Equatable {
        public var condition: String
    }

    public struct WebPanel: Codable, Sendable, Equatable {
        public var key: String
        public var name: I18nText
        public var url: String
        public var location: String
        public var weight: Int
        public var conditions: [Condition]
    }

    public struct Modules: Codable, Sendable, Equatable {
        public var webPanels: [WebPanel]
    }

    public var key: String
    public var name: String
    public var description: String
    public var vendor: Vendor
    public var baseUrl: String
    public var authentication: Authentication
    public var lifecycle: Lifecycle
    public var scopes: [String]
    public var apiVersion: Int
    public var apiMigrations: APIMigrations
    public var modules: Modules

    /// Paths of the routes the descriptor names, relative to baseUrl.
    public enum Route {
        public static let installed = "/installed"
        public static let uninstalled = "/uninstalled"
        public static let panel = "/panel"
    }

    public static let panelKey = "whos-looking-panel"

    public init(appKey: String, baseURL: String) {
        key = appKey
        name = "Who's Looking"
        description = "See who else is viewing a Jira issue right now."
        vendor = Vendor(name: "Who's Looking", url: baseURL)
        baseUrl = baseURL
        authentication = Authentication(type: "jwt")
        lifecycle = Lifecycle(installed: Route.installed, uninstalled: Route.uninstalled)
        scopes = ["READ"]
        apiVersion = 1
        apiMigrations = APIMigrations(contextQSH: true, signedInstall: true, gdpr: true)
        modules = Modules(webPanels: [
            WebPanel(
                key: Self.panelKey,
                name: I18nText(value: "Who's Looking"),
                url: Route.panel + "?issueId={issue.id}&issueKey={issue.key}&projectId={project.id}&projectKey={project.key}",
                location: "atl.jira.view.issue.right.context",
                weight: 100,
                conditions: [Condition(condition: "user_is_logged_in")]
            ),
        ])
    }
}
