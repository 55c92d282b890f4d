import Forge

/// Which of the app's Forge modules may make a call, read from the parts of the invocation
/// token that Forge sets (`app.module`, and whether there is a `context` or a `principal`),
/// never from the browser-alterable `context` itself. Every `/forge/*` route names the one
/// kind of caller it takes; any other valid token is refused with 403 before anything is read
/// or changed (`docs/forge.md`, "Who may call what").
///
/// From the Forge Remote invocation contract: `app.module.type` is the UI module's type for
/// frontend calls and `core:endpoint` otherwise; `context` is present only for frontend calls;
/// `principal` is set for UI modules only. The contract calls `app.module.key` "the Forge module
/// key for this endpoint": for a trigger that is the endpoint's key (not documented further;
/// inferred), and the trigger module's own key is accepted beside it, as both are ours.
enum ForgeCaller: Sendable, CustomStringConvertible {
    /// The issue panel or the background script on the issue view, from the browser.
    case issueView
    /// The `trigger` of installed/upgraded events.
    case lifecycleTrigger
    /// The `preUninstall` module.
    case preUninstall
    /// The hourly `scheduledTrigger`.
    case scheduledTrigger

    /// The manifest's keys (`forge/manifest.yml`; `ForgeManifestTests` keeps them equal).
    static let panel = ForgeModule(type: "jira:issueContext", key: "wl-panel")
    static let background = ForgeModule(type: "jira:issueViewBackgroundScript", key: "wl-background")
    static let lifecycleKeys: Set<String> = ["wl-lifecycle", "wl-lifecycle-trigger"]
    static let preUninstallKeys: Set<String> = ["wl-uninstall", "wl-pre-uninstall"]
    static let scheduledKeys: Set<String> = ["wl-scheduled", "wl-hourly"]
    /// The preUninstall module's key, as its event body names it.
    static let preUninstallModuleKey = "wl-pre-uninstall"

    var description: String {
        switch self {
        case .issueView: "the issue view's modules"
        case .lifecycleTrigger: "the lifecycle trigger"
        case .preUninstall: "the preUninstall trigger"
        case .scheduledTrigger: "the scheduled trigger"
        }
    }

    func admits(_ invocation: ForgeInvocation) -> Bool {
        switch self {
        case .issueView:
            return (invocation.module == Self.panel || invocation.module == Self.background) && invocation.hasUIContext
        case .lifecycleTrigger: return Self.isEndpointCall(invocation, keys: Self.lifecycleKeys)
        case .preUninstall: return Self.isEndpointCall(invocation, keys: Self.preUninstallKeys)
        case .scheduledTrigger: return Self.isEndpointCall(invocation, keys: Self.scheduledKeys)
        }
    }

    /// A trigger's call: `core:endpoint`, one of our keys, and neither a UI context nor a user.
    private static func isEndpointCall(_ invocation: ForgeInvocation, keys: Set<String>) -> Bool {
        invocation.module.type == ForgeModule.endpointType && keys.contains(invocation.module.key) && !invocation.hasUIContext
            && invocation.principal == nil
    }
}
