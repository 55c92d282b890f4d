import HTTPTypes
import Hummingbird
import HummingbirdCore
import Logging
import Metrics
import NIOCore
import NIOHTTPTypes
import Synchronization

#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// Bounds on what a client can hold: how long a request may take to arrive, how long an idle
/// keep-alive connection stays open, and how many connections are open at once.
///
/// - A request must arrive whole (head and body) within `requestTimeout` of its first byte;
///   otherwise the connection is closed (with a `408` when no answer is owed on it yet).
/// - A connection with no request being read or answered is closed after `idleTimeout`
///   (a fresh connection counts as idle until its first byte).
/// - Beyond `maxConnections` open connections, a new one is answered `503` and closed at once.
///
/// Time spent answering (the route's own work) is not bounded here: the database calls behind
/// it have their own deadlines.
struct ConnectionLimits: Sendable {
    var requestTimeout: TimeAmount
    var idleTimeout: TimeAmount
    var maxConnections: Int

    /// The configured limits. The connection cap is lowered, with a warning, below the process's
    /// open-files limit, keeping descriptors for the database, files and logs: a server out of
    /// descriptors can accept nothing and reconnect to nothing.
    init(configuration: AppConfiguration, logger: Logger) {
        requestTimeout = .seconds(Int64(configuration.httpRequestTimeoutSeconds))
        idleTimeout = .seconds(Int64(configuration.httpIdleTimeoutSeconds))
        maxConnections = configuration.httpMaxConnections
        if let openFiles = Self.openFilesLimit() {
            let reserve = 64 + 2 * configuration.databasePoolSize
            let affordable = max(1, openFiles - reserve)
            if affordable < maxConnections {
                logger.warning(
                    "HTTP_MAX_CONNECTIONS lowered to fit the open-files limit (ulimit -n)",
                    metadata: [
                        "configured": "\(maxConnections)", "effective": "\(affordable)", "open_files_limit": "\(openFiles)",
                    ]
                )
                maxConnections = affordable
            }
        }
    }

    init(requestTimeout: TimeAmount, idleTimeout: TimeAmount, maxConnections: Int) {
        self.requestTimeout = requestTimeout
        self.idleTimeout = idleTimeout
        self.maxConnections = maxConnections
    }

    /// The soft limit on open file descriptors, nil when unlimited or unknown.
    static func openFilesLimit() -> Int? {
        var limit = rlimit()
        #if canImport(Glibc)
        let status = getrlimit(__rlimit_resource_t(RLIMIT_NOFILE.rawValue), &limit)
        #else
        let status = getrlimit(RLIMIT_NOFILE, &limit)
        #endif
        guard status == 0, limit.rlim_cur < rlim_t(Int.max) else { return nil }
        return Int(limit.rlim_cur)
    }
}

extension HTTPServerBuilder {
    /// HTTP/1.1 with the request and idle timeouts and the connection cap of `limits`.
    static func http1(limits: ConnectionLimits, connections: OpenConnections) -> HTTPServerBuilder {
        .init { responder in
            LimitedHTTP1Channel(base: HTTP1Channel(responder: responder), limits: limits, connections: connections)
        }
    }
}

/// Hummingbird's HTTP/1.1 child channel, with `ConnectionLimits` applied to each connection.
struct LimitedHTTP1Channel: ServerChildChannel {
    enum Value: ServerChildChannelValue {
        case http(HTTP1Channel.Value)
        /// Over the connection cap: answered 503 and closed in `setup`.
        case refused(any Channel)

        var channel: any Channel {
            switch self {
            case .http(let value): value.channel
            case .refused(let channel): channel
            }
        }
    }

    let base: HTTP1Channel
    let limits: ConnectionLimits
    let connections: OpenConnections

    static let refusedConnections = Counter(label: "http_connections_refused_total")

    func setup(channel: any Channel, logger: Logger) -> EventLoopFuture<Value> {
        let accepted = connections.open(limit: limits.maxConnections)
        let connections = connections
        channel.closeFuture.whenComplete { _ in connections.closed() }
        guard accepted else {
            Self.refusedConnections.increment()
            logger.debug("connection refused: too many open connections", metadata: ["limit": "\(limits.maxConnections)"])
            do {
                try channel.pipeline.syncOperations.addHandler(RefusalHandler())
            } catch {
                channel.close(promise: nil)
            }
            return channel.eventLoop.makeSucceededFuture(.refused(channel))
        }
        let timer = RequestTimer(limits: limits, watch: connections.watch(channel), logger: logger)
        let boundaries = NIOLoopBound(RequestBoundaryHandler(timer: timer), eventLoop: channel.eventLoop)
        var configuration = base.configuration
        let additional = configuration.additionalChannelHandlers
        configuration.additionalChannelHandlers = { [boundaries.value] + additional() }
        do {
            // Raw bytes, ahead of the HTTP decoder: the first byte of a request starts its clock.
            try channel.pipeline.syncOperations.addHandler(timer, position: .first)
        } catch {
            return channel.eventLoop.makeFailedFuture(error)
        }
        return HTTP1Channel(responder: base.responder, configuration: configuration)
            .setup(channel: channel, logger: logger)
            .map { .http($0) }
    }

    func handle(value: Value, logger: Logger) async {
        switch value {
        case .http(let channel): await base.handle(value: channel, logger: logger)
        case .refused: break
        }
    }
}

/// A connection over the cap: answered 503 as soon as it is active (it is set up before it is
/// registered), then closed.
final class RefusalHandler: ChannelInboundHandler {
    typealias InboundIn = ByteBuffer
    typealias OutboundOut = ByteBuffer

    static let answer =
        "HTTP/1.1 503 Service Unavailable\r\nConnection: close\r\nRetry-After: 1\r\n"
        + "Content-Type: text/plain; charset=utf-8\r\nContent-Length: 21\r\n\r\ntoo many connections\n"

    func handlerAdded(context: ChannelHandlerContext) {
        if context.channel.isActive { refuse(context) }
    }

    func channelActive(context: ChannelHandlerContext) {
        refuse(context)
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {}

    private var refused = false

    private func refuse(_ context: ChannelHandlerContext) {
        guard !refused else { return }
        refused = true
        context.writeAndFlush(wrapOutboundOut(ByteBuffer(string: Self.answer)), promise: nil)
        context.close(promise: nil)
    }
}

@available(*, unavailable)
extension RefusalHandler: Sendable {}

/// First in a connection's pipeline: sees every byte that arrives, learns request and response
/// boundaries from `RequestBoundaryHandler`, and closes the connection when a request takes
/// longer than `requestTimeout` to arrive or the connection sits idle for `idleTimeout`.
final class RequestTimer: ChannelDuplexHandler, RemovableChannelHandler {
    typealias InboundIn = ByteBuffer
    typealias InboundOut = ByteBuffer
    typealias OutboundIn = ByteBuffer
    typealias OutboundOut = ByteBuffer

    private enum Phase {
        /// Nothing being read or answered, since then.
        case idle(since: NIODeadline)
        /// A request's bytes are arriving, since its first byte; whether its head is complete.
        case receiving(since: NIODeadline, headRead: Bool)
        /// Requests read, answers owed.
        case answering
    }

    private let limits: ConnectionLimits
    private let watch: ConnectionWatch
    private let logger: Logger
    private var phase: Phase = .idle(since: .now())
    private var answersOwed = 0
    private var context: ChannelHandlerContext?
    private var timer: Scheduled<Void>?

    static let requestTimeouts = Counter(label: "http_request_timeouts_total")
    static let timeoutAnswer = "HTTP/1.1 408 Request Timeout\r\nConnection: close\r\nContent-Length: 0\r\n\r\n"

    init(limits: ConnectionLimits, watch: ConnectionWatch, logger: Logger) {
        self.limits = limits
        self.watch = watch
        self.logger = logger
    }

    func handlerAdded(context: ChannelHandlerContext) {
        self.context = context
        becomeIdle()
    }

    func handlerRemoved(context: ChannelHandlerContext) {
        cancelTimer()
        self.context = nil
    }

    func channelInactive(context: ChannelHandlerContext) {
        cancelTimer()
        context.fireChannelInactive()
    }

    func userInboundEventTriggered(context: ChannelHandlerContext, event: Any) {
        if case .inputClosed = event as? ChannelEvent { watch.clientLeft() }
        context.fireUserInboundEventTriggered(event)
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        switch phase {
        case .idle, .answering:
            // The first byte of the next request (pipelined ones included) starts its clock.
            let now = NIODeadline.now()
            phase = .receiving(since: now, headRead: false)
            schedule(at: now + limits.requestTimeout)
        case .receiving:
            break
        }
        context.fireChannelRead(data)
    }

    // MARK: From RequestBoundaryHandler, on the same event loop.

    func requestHeadRead() {
        answersOwed += 1
        if case .receiving(let since, _) = phase { phase = .receiving(since: since, headRead: true) }
    }

    func requestEndRead() {
        guard case .receiving = phase else { return }
        phase = .answering
        cancelTimer()
        if answersOwed == 0 { becomeIdle() }
    }

    func responseEndWritten() {
        answersOwed = max(0, answersOwed - 1)
        if answersOwed == 0, case .answering = phase { becomeIdle() }
    }

    // MARK: Timer

    private func becomeIdle() {
        let now = NIODeadline.now()
        phase = .idle(since: now)
        schedule(at: now + limits.idleTimeout)
    }

    private func schedule(at deadline: NIODeadline) {
        guard let context else { return }
        cancelTimer()
        timer = context.eventLoop.assumeIsolated().scheduleTask(deadline: deadline) { [self] in
            timer = nil
            expired()
        }
    }

    private func cancelTimer() {
        timer?.cancel()
        timer = nil
    }

    private func expired() {
        guard let context, context.channel.isActive else { return }
        let now = NIODeadline.now()
        switch phase {
        case .receiving(let since, let headRead) where now >= since + limits.requestTimeout:
            Self.requestTimeouts.increment()
            logger.debug("closing connection: request incomplete after the request timeout")
            if !headRead, answersOwed == 0 {
                // No route has seen this request and no answer is being written: say why it closes.
                context.writeAndFlush(wrapOutboundOut(ByteBuffer(string: Self.timeoutAnswer)), promise: nil)
            }
            context.close(promise: nil)
        case .idle(let since) where now >= since + limits.idleTimeout:
            logger.trace("closing idle connection")
            context.close(promise: nil)
        case .receiving(let since, _):
            schedule(at: since + limits.requestTimeout)
        case .idle(let since):
            schedule(at: since + limits.idleTimeout)
        case .answering:
            break
        }
    }
}

@available(*, unavailable)
extension RequestTimer: Sendable {}

/// After the HTTP codec: tells `RequestTimer` where requests and responses begin and end.
final class RequestBoundaryHandler: ChannelDuplexHandler, RemovableChannelHandler {
    typealias InboundIn = HTTPRequestPart
    typealias InboundOut = HTTPRequestPart
    typealias OutboundIn = HTTPResponsePart
    typealias OutboundOut = HTTPResponsePart

    private let timer: RequestTimer

    init(timer: RequestTimer) {
        self.timer = timer
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        switch unwrapInboundIn(data) {
        case .head: timer.requestHeadRead()
        case .end: timer.requestEndRead()
        case .body: break
        }
        context.fireChannelRead(data)
    }

    func write(context: ChannelHandlerContext, data: NIOAny, promise: EventLoopPromise<Void>?) {
        if case .end = unwrapOutboundIn(data) { timer.responseEndWritten() }
        context.write(data, promise: promise)
    }
}

@available(*, unavailable)
extension RequestBoundaryHandler: Sendable {}
