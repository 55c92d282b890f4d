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

/// Bounds on what a client can hold: how long a request may take to arrive, how long an answer
/// may wait for the client to take it, how long an idle keep-alive connection stays open, how
/// many answers one connection may be owed, and how many connections are open at once.
///
/// - A request must arrive whole (head and body) within `requestTimeout` of its first byte;
///   otherwise the connection is closed (with a `408` when no answer is owed on it yet).
/// - An answer whose bytes the client does not take (flushed bytes waiting, and not one of them
///   taken) for `requestTimeout` closes the connection, with a reset. A route that holds its
///   answer (a long-poll wait) has nothing waiting: that is not a stalled answer.
/// - A connection with no request being read or answered is closed after `idleTimeout`
///   (a fresh connection counts as idle until its first byte).
/// - While `maxAnswersOwed` answers are owed on a connection (pipelined requests), nothing more
///   is read from it (what the last read brought is still decoded): its further requests wait
///   in the socket, and a client that sends them without reading the answers stalls them and
///   meets the write deadline. The time not read is not counted against a request arriving.
/// - Beyond `maxConnections` open connections, a new one is answered `503` and closed at once.
///
/// Time spent answering (the route's own work, a held wait included) is not bounded here: the
/// database calls behind it have their own deadlines, and a wait its hold time.
struct ConnectionLimits: Sendable {
    var requestTimeout: TimeAmount
    var idleTimeout: TimeAmount
    var maxConnections: Int
    /// Browsers do not pipeline at all; a client that does gets this many answers in flight.
    var maxAnswersOwed = 16

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
    /// `TCP_NOTSENT_LOWAT`: a common figure, enough to keep a fast link busy (bytes in flight
    /// are not counted), and a small part of what a stalled client can make the kernel hold.
    static let unsentBytes: SocketOptionValue = 16 * 1024

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
        // The kernel takes at most `unsentBytes` of unsent answer; the rest stays in the channel's
        // buffer, where the write deadline sees it move. Without this the kernel takes its whole
        // send buffer (autotuned to megabytes), and wakes the writer only once a third of that
        // has drained: a client reading slowly but steadily looked stalled for seconds at a time.
        // Not fatal when refused (not TCP): the deadline then sees progress more coarsely.
        try? channel.syncOptions?.setOption(.tcpOption(.init(rawValue: CInt(TCP_NOTSENT_LOWAT))), value: Self.unsentBytes)
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

/// First in a connection's pipeline: sees every byte that arrives and leaves, learns request and
/// response boundaries from `RequestBoundaryHandler`, and applies `ConnectionLimits`: it closes
/// the connection when a request takes longer than `requestTimeout` to arrive, when flushed
/// bytes of an answer make no progress into the socket for `requestTimeout`, or when the
/// connection sits idle for `idleTimeout`; and it holds back reads while `maxAnswersOwed`
/// answers are owed.
///
/// The write deadline runs whatever the phase (an answer can stall while the next request
/// arrives, or after the last one is written), and only while flushed bytes wait: a route
/// holding its answer (a long-poll wait) has written nothing, so nothing of it is stalled.
final class RequestTimer: ChannelDuplexHandler, RemovableChannelHandler {
    typealias InboundIn = ByteBuffer
    typealias InboundOut = ByteBuffer
    // What the HTTP encoder writes: byte buffers (and, in principle, file regions).
    typealias OutboundIn = IOData
    typealias OutboundOut = ByteBuffer

    private enum Phase {
        /// Nothing being read or answered, since then.
        case idle(since: NIODeadline)
        /// A request's bytes are arriving, since its first byte; whether its head is complete.
        case receiving(since: NIODeadline, headRead: Bool)
        /// Requests read, answers owed.
        case answering
    }

    /// How the flushed bytes are going: all in the socket, or some waiting for it.
    private enum Sending {
        case flowing
        /// Flushed bytes wait; `sent` bytes had reached the socket at `since`, when last some did.
        case blocked(sent: Int, since: NIODeadline)
    }

    private let limits: ConnectionLimits
    private let watch: ConnectionWatch
    private let logger: Logger
    private var phase: Phase = .idle(since: .now())
    private var answersOwed = 0
    /// A read asked for while too many answers are owed, passed on once fewer are.
    private var readDeferred = false
    /// Since when the socket is not being read (from the end of a read until the next is asked
    /// for and passed on): the server's time, which the request clock does not count.
    private var notReadingSince: NIODeadline?
    /// Bytes written to the socket's side of the pipeline, and the part of them flushed. With the
    /// channel's count of bytes still buffered they give how many have reached the socket.
    private var bytesWritten = 0
    private var bytesFlushed = 0
    private var sending: Sending = .flowing
    private var context: ChannelHandlerContext?
    private var timer: Scheduled<Void>?
    private var sendingCheck: Scheduled<Void>?

    /// Closed connections: a request incomplete, or an answer stalled, after the request timeout.
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
        cancelSendingCheck()
        self.context = nil
    }

    func channelInactive(context: ChannelHandlerContext) {
        cancelTimer()
        cancelSendingCheck()
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

    // MARK: Outbound

    /// Back-pressure: while too many answers are owed, the socket is not read, so pipelined
    /// requests wait in the kernel (and then in the client) rather than here. The HTTP decoder
    /// may still hold what the last read brought: one read's worth at most.
    func read(context: ChannelHandlerContext) {
        guard answersOwed < limits.maxAnswersOwed else {
            readDeferred = true
            return
        }
        startReading(context)
    }

    func channelReadComplete(context: ChannelHandlerContext) {
        notReadingSince = .now()
        context.fireChannelReadComplete()
    }

    private func startReading(_ context: ChannelHandlerContext) {
        if let paused = notReadingSince {
            notReadingSince = nil
            if case .receiving(let since, let headRead) = phase {
                // Usually a moment (the next read is asked for at once), but reading also stops
                // for answers owed, here or in the handlers after this one: a request behind
                // them cannot arrive, and that is not the client's time.
                let moved = since + (.now() - paused)
                phase = .receiving(since: moved, headRead: headRead)
                // A timer still pending fires early and moves on to the new deadline by itself.
                if timer == nil { schedule(at: moved + limits.requestTimeout) }
            }
        }
        context.read()
    }

    func write(context: ChannelHandlerContext, data: NIOAny, promise: EventLoopPromise<Void>?) {
        bytesWritten += unwrapOutboundIn(data).readableBytes
        context.write(data, promise: promise)
    }

    func flush(context: ChannelHandlerContext) {
        bytesFlushed = bytesWritten
        context.flush()
        // The flush has already offered the bytes to the socket: only what it could not take
        // now waits, and starts the write deadline.
        if case .flowing = sending { checkSending() }
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
        if readDeferred, answersOwed < limits.maxAnswersOwed, let context {
            readDeferred = false
            startReading(context)
        }
    }

    // MARK: Write deadline

    /// Looks at the flushed bytes not yet in the socket: none, and the deadline is off until a
    /// flush leaves some; some, and the connection closes once none has gone for the request
    /// timeout. The channel's buffered byte count is the measure of progress, not write promises
    /// nor writability: a large buffer written a part at a time completes no promise until its
    /// last byte, and writability changes only at the water marks, while the count falls with
    /// every byte the socket takes.
    private func checkSending() {
        guard let context, context.channel.isActive else { return }
        let buffered = (try? context.channel.syncOptions?.getOption(.bufferedWritableBytes)) ?? 0
        let sent = bytesWritten - buffered
        let now = NIODeadline.now()
        guard sent < bytesFlushed else {
            sending = .flowing
            cancelSendingCheck()
            return
        }
        var lastProgress = now
        switch sending {
        case .blocked(let before, let since) where sent <= before:
            guard now < since + limits.requestTimeout else {
                answerStalled(context)
                return
            }
            lastProgress = since
        case .flowing, .blocked:
            sending = .blocked(sent: sent, since: now)
        }
        // Looked at four times per timeout: progress is seen at most a quarter late, so a stalled
        // answer is closed between one and one and a quarter timeouts after its last progress.
        let next = min(now + .nanoseconds(limits.requestTimeout.nanoseconds / 4), lastProgress + limits.requestTimeout)
        sendingCheck?.cancel()
        sendingCheck = context.eventLoop.assumeIsolated().scheduleTask(deadline: next) { [self] in
            sendingCheck = nil
            checkSending()
        }
    }

    private func answerStalled(_ context: ChannelHandlerContext) {
        Self.requestTimeouts.increment()
        logger.debug("closing connection: the client took none of its answer for the request timeout")
        // A reset rather than a FIN: a FIN would queue behind the bytes the client does not
        // take, and the kernel would keep them, and the connection, for minutes after the close.
        if let socket = context.channel as? any SocketOptionProvider {
            _ = socket.setSoLinger(linger(l_onoff: 1, l_linger: 0))
        }
        context.close(promise: nil)
    }

    private func cancelSendingCheck() {
        sendingCheck?.cancel()
        sendingCheck = nil
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
        case .receiving where notReadingSince != nil:
            // Not reading, for answers owed: the clock is stopped; `startReading` sets it again.
            break
        case .receiving(let since, let headRead) where now >= since + limits.requestTimeout:
            Self.requestTimeouts.increment()
            logger.debug("closing connection: request incomplete after the request timeout")
            if !headRead, answersOwed == 0 {
                // No route has seen this request and no answer is being written: say why it closes.
                // Written from here, it passes no `write` of ours: counted by hand.
                bytesWritten += Self.timeoutAnswer.utf8.count
                bytesFlushed = bytesWritten
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
