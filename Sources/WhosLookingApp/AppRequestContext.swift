import Hummingbird

/// The request context of every route: Hummingbird's core storage plus, on authenticated
/// routes, who the verified Connect JWT says is calling.
public struct AppRequestContext: RequestContext {
    public var coreContext: CoreRequestContextStorage
    public var identity: ConnectIdentity?
    /// Filled by handlers, read by the request log.
    public let notes = RequestNotes()
    /// The connection the request came on, to find its `ConnectionWatch`.
    let connectionID: ObjectIdentifier

    public init(source: ApplicationRequestContextSource) {
        coreContext = .init(source: source)
        connectionID = ObjectIdentifier(source.channel)
    }

    /// Lifecycle callbacks are small; anything near a megabyte is not from Jira.
    public var maxUploadSize: Int { 64 * 1024 }
}
