import Foundation
import Libpq
import NIOCore
import NIOPosix
import Synchronization
import TestSupport
import Testing
import Tenants

/// Slow clients against the real executable on real sockets: a request that trickles in is
/// dropped after the request timeout, an idle keep-alive connection is closed, half-sent
/// requests cannot keep a normal one out for longer than the request timeout, beyond the
/// connection cap new connections are turned away while open ones keep working, and a client
/// that stops reading its answers loses its connection while one that reads slowly keeps it.
@Suite("Slow clients: request, write and idle timeouts, connection cap", .timeLimit(.minutes(3)))
struct SlowClientTests {
    /// One byte every 100 ms: 60 bytes take 6 s, three times the 2 s request timeout.
    static let trickledHead = "GET /healthz HTTP/1.1\r\nHost: localhost\r\nX-Padding: \(String(repeating: "a", count: 5))\r\n\r\n"
    /// About 15 KB of answer for 49 bytes of request.
    static let panelRequest = "GET /public/panel.js HTTP/1.1\r\nHost: localhost\r\n\r\n"
    /// The client's receive buffer in the write tests: small, so that the server's sends block
    /// after a few answers rather than after megabytes.
    static let smallReceiveBuffer: Int32 = 4096

    @Test func aRequestTrickledOneByteAtATimeIsDroppedAfterTheRequestTimeout() async throws {
        try await ServedApp.with(
            environment: ["HTTP_REQUEST_TIMEOUT_SECONDS": "2", "HTTP_IDLE_TIMEOUT_SECONDS": "60"], name: "trickle"
        ) { app in
            #expect(Self.trickledHead.utf8.count == 60)
            // The head trickles, then (on a second connection) a body after a complete head.
            let bodyHead = "POST /api/issues/1/leave HTTP/1.1\r\nHost: localhost\r\nContent-Type: text/plain\r\nContent-Length: 60\r\n\r\n"
            for (name, prefix, trickled) in [
                ("head", "", Self.trickledHead), ("body", bodyHead, String(repeating: "b", count: 60)),
            ] {
                let connection = try await RawConnection.open(port: app.port)
                defer { connection.close() }
                if !prefix.isEmpty { try await connection.send(prefix) }
                let started = ContinuousClock.now
                for byte in trickled.utf8 {
                    guard !connection.isClosed else { break }
                    try? await connection.send(String(UnicodeScalar(byte)))
                    try await Task.sleep(for: .milliseconds(100))
                }
                #expect(await connection.waitUntilClosed(timeout: .seconds(1)), "\(name): the connection outlived the trickle")
                let closedAfter = try #require(connection.closedAt) - started
                #expect(closedAfter >= .milliseconds(1500) && closedAfter < .seconds(4), "\(name): closed after \(closedAfter), not about 2 s")
                let answers = RawResponse.parse(connection.received).responses
                #expect(!answers.contains { $0.status == 200 }, "\(name): a trickled request was answered")
                if name == "head" { #expect(answers.map(\.status) == [408], "a request timed out before any route saw it is told so") }
            }
            #expect(await app.answers("/healthz") == 200, "the server itself is fine")
        }
    }

    @Test func anIdleKeepAliveConnectionIsClosed() async throws {
        try await ServedApp.with(environment: ["HTTP_IDLE_TIMEOUT_SECONDS": "2"], name: "idle") { app in
            let connection = try await RawConnection.open(port: app.port)
            defer { connection.close() }
            try await connection.send("GET /healthz HTTP/1.1\r\nHost: localhost\r\n\r\n")
            guard case .complete(let answer) = await connection.nextResponse(timeout: .seconds(5)) else {
                Issue.record("no answer on a fresh connection")
                return
            }
            #expect(answer.status == 200)
            let answered = ContinuousClock.now
            #expect(await connection.waitUntilClosed(timeout: .seconds(5)), "an idle keep-alive connection stayed open")
            let idle = try #require(connection.closedAt) - answered
            // Loose bounds: on a loaded machine the client reads the answer late, which shortens
            // the idle time it sees; what matters is that it closes, and not at once nor never.
            #expect(idle >= .milliseconds(500) && idle < .seconds(6), "closed after \(idle) idle, not about 2 s")
        }
    }

    /// A host with a low descriptor limit (256) and 300 half-sent requests, half of them stuck in
    /// the head and half in the body: a normal request is answered within about the request
    /// timeout. Before the timeouts and the cap, the half-sent requests held every descriptor
    /// for ever and nothing else was ever accepted.
    @Test func halfSentRequestsCannotKeepANormalRequestOut() async throws {
        try await ServedApp.with(environment: ["HTTP_REQUEST_TIMEOUT_SECONDS": "2"], name: "half-sent", openFilesLimit: 256) { app in
            let stuck = try await RawConnection.openHalfSent(300, port: app.port)
            defer { stuck.forEach { $0.close() } }
            let started = ContinuousClock.now
            // A client that retries, as a browser or a load balancer would.
            var answered: Duration?
            while ContinuousClock.now - started < .seconds(8) {
                if await app.answers("/healthz", timeout: .seconds(1)) == 200 {
                    answered = ContinuousClock.now - started
                    break
                }
                try await Task.sleep(for: .milliseconds(200))
            }
            let after = try #require(answered, "a normal request was kept out for 8 s by 300 half-sent ones\n\(app.service.output.suffix(2000))")
            #expect(after < .seconds(5), "answered only after \(after)")
            #expect(
                await eventually(timeout: .seconds(4)) { stuck.allSatisfy(\.isClosed) },
                "\(stuck.filter { !$0.isClosed }.count) half-sent requests still held")
        }
    }

    /// Below the cap, half-sent requests delay nobody, and are dropped at the request timeout.
    @Test func halfSentRequestsBelowTheCapDelayNothingAndAreDropped() async throws {
        try await ServedApp.with(environment: ["HTTP_REQUEST_TIMEOUT_SECONDS": "2"], name: "half-sent-below-cap") { app in
            let stuck = try await RawConnection.openHalfSent(300, port: app.port)
            defer { stuck.forEach { $0.close() } }
            let started = ContinuousClock.now
            #expect(await app.answers("/healthz", timeout: .seconds(2)) == 200)
            #expect(ContinuousClock.now - started < .seconds(1), "a normal request waited behind half-sent ones")
            #expect(
                await eventually(timeout: .seconds(5)) { stuck.allSatisfy(\.isClosed) },
                "\(stuck.filter { !$0.isClosed }.count) half-sent requests still held")
        }
    }

    @Test func beyondTheConnectionCapNewConnectionsAreTurnedAwayWhileOpenOnesWork() async throws {
        try await ServedApp.with(environment: ["HTTP_MAX_CONNECTIONS": "20"], name: "cap") { app in
            var open: [RawConnection] = []
            defer { open.forEach { $0.close() } }
            for _ in 0..<20 {
                let connection = try await RawConnection.open(port: app.port)
                open.append(connection)
                try await connection.send("GET /healthz HTTP/1.1\r\nHost: localhost\r\n\r\n")
                let outcome = await connection.nextResponse(timeout: .seconds(5))
                guard case .complete(let answer) = outcome, answer.status == 200 else {
                    Issue.record("connection \(open.count) under the cap: \(outcome)")
                    return
                }
            }
            for extra in 0..<5 {
                let started = ContinuousClock.now
                guard let connection = try? await RawConnection.open(port: app.port) else { continue }  // refused: fine
                defer { connection.close() }
                try? await connection.send("GET /healthz HTTP/1.1\r\nHost: localhost\r\n\r\n")
                #expect(await connection.waitUntilClosed(timeout: .seconds(2)), "connection \(21 + extra) over the cap was kept open")
                #expect(ContinuousClock.now - started < .seconds(2))
                let statuses = RawResponse.parse(connection.received).responses.map(\.status)
                #expect(statuses == [503] || statuses.isEmpty, "over the cap: \(statuses)")
            }
            for (index, connection) in open.enumerated() {
                try await connection.send("GET /healthz HTTP/1.1\r\nHost: localhost\r\n\r\n")
                let outcome = await connection.nextResponse(timeout: .seconds(5))
                guard case .complete(let answer) = outcome, answer.status == 200 else {
                    Issue.record("open connection \(index) stopped working: \(outcome)")
                    continue
                }
            }
            // A connection closing makes room again.
            open.removeLast().close()
            #expect(await eventually(timeout: .seconds(5)) { await app.answers("/healthz", timeout: .seconds(1)) == 200 })
        }
    }
}

// MARK: Clients that do not read their answers

extension SlowClientTests {
    /// 600 requests pipelined in one write, and not one byte of their answers read: once the
    /// buffers between are full the answers make no progress, and the connection is closed about
    /// the request timeout later. Before the write deadline it stayed open for ever, past both
    /// timeouts (the idle one never starts while answers are owed).
    @Test func aClientThatNeverReadsItsAnswersIsDisconnected() async throws {
        try await ServedApp.with(
            environment: ["HTTP_REQUEST_TIMEOUT_SECONDS": "2", "HTTP_IDLE_TIMEOUT_SECONDS": "60"], name: "never-reads"
        ) { app in
            let connection = try await RawConnection.open(port: app.port, receiveBuffer: Self.smallReceiveBuffer, readsOnRequest: 4096)
            defer { connection.close() }
            let sent = ContinuousClock.now
            try await connection.send(String(repeating: Self.panelRequest, count: 600))
            // Loose: 2 s of no progress, plus slack for a loaded machine.
            #expect(await connection.waitUntilClosed(timeout: .seconds(8)), "a client that never reads held its connection 8 s")
            if let closedAt = connection.closedAt {
                #expect(closedAt - sent >= .seconds(1), "closed after \(closedAt - sent): sooner than the write deadline")
            }
            #expect(await app.answers("/healthz") == 200, "the server itself is fine")
        }
    }

    /// 20 such clients against a cap of 20: a new client is kept out only until their answers
    /// stall for the request timeout. Before the write deadline every new client got 503 for as
    /// long as the 20 stayed connected.
    @Test func clientsThatNeverReadCannotLockOutANewOne() async throws {
        try await ServedApp.with(
            environment: ["HTTP_REQUEST_TIMEOUT_SECONDS": "2", "HTTP_IDLE_TIMEOUT_SECONDS": "60", "HTTP_MAX_CONNECTIONS": "20"],
            name: "never-reads-cap"
        ) { app in
            // The readiness probe's connection may not be counted closed yet: give it a moment,
            // so that none of the 20 is the one turned away.
            try await Task.sleep(for: .milliseconds(300))
            var stuck: [RawConnection] = []
            defer { stuck.forEach { $0.close() } }
            for _ in 0..<20 {
                let connection = try await RawConnection.open(port: app.port, receiveBuffer: Self.smallReceiveBuffer, readsOnRequest: 4096)
                stuck.append(connection)
                try await connection.send(String(repeating: Self.panelRequest, count: 600))
            }
            let started = ContinuousClock.now
            // A client that retries, as a browser or a load balancer would.
            var answered: Duration?
            while ContinuousClock.now - started < .seconds(20) {
                if await app.answers("/healthz", timeout: .seconds(1)) == 200 {
                    answered = ContinuousClock.now - started
                    break
                }
                try await Task.sleep(for: .milliseconds(200))
            }
            let after = try #require(
                answered, "20 clients that never read kept a new one out for 20 s\n\(app.service.output.suffix(2000))")
            #expect(after < .seconds(8), "answered only after \(after)")
            #expect(
                await eventually(timeout: .seconds(8)) { stuck.allSatisfy(\.isClosed) },
                "\(stuck.filter { !$0.isClosed }.count) clients that never read still connected")
        }
    }

    /// A client that reads its answers slowly but steadily (4 KB every 25 ms, about 6 s for the
    /// 60 answers) keeps its connection, though the server's sends block all along: its answers
    /// make progress, and that is all the write deadline asks.
    @Test func aClientThatReadsSlowlyButSteadilyIsNotCutOff() async throws {
        try await ServedApp.with(
            environment: ["HTTP_REQUEST_TIMEOUT_SECONDS": "2", "HTTP_IDLE_TIMEOUT_SECONDS": "60"], name: "slow-reader"
        ) { app in
            let script = try Data(contentsOf: SharedMaterial.projectRoot.appendingPathComponent("Public/panel.js"))
            let connection = try await RawConnection.open(port: app.port, receiveBuffer: Self.smallReceiveBuffer, readsOnRequest: 4096)
            defer { connection.close() }
            let count = 60
            try await connection.send(String(repeating: Self.panelRequest, count: count))
            let started = ContinuousClock.now
            var answers: [RawResponse] = []
            reading: while answers.count < count, ContinuousClock.now - started < .seconds(120) {
                connection.read()
                try await Task.sleep(for: .milliseconds(25))
                while true {
                    switch await connection.nextResponse(timeout: .zero) {
                    case .complete(let answer): answers.append(answer)
                    case .noAnswer: continue reading
                    case let ended:
                        Issue.record("answer \(answers.count + 1) of \(count): \(ended)")
                        break reading
                    }
                }
            }
            let took = ContinuousClock.now - started
            #expect(answers.count == count, "\(answers.count) of \(count) answers in \(took)")
            #expect(answers.allSatisfy { $0.status == 200 && $0.body.count == script.count }, "an answer was not the whole script")
            #expect(!connection.isClosed, "a client that reads steadily was cut off after \(took)")
            // Else the server's sends never blocked for long, and this proves nothing.
            #expect(took > .seconds(4), "read in \(took): not slowly")
        }
    }

    /// A wait held by its route writes nothing for its whole hold, three times the request
    /// timeout here: that is not an answer making no progress, and it is answered at its end.
    @Test func aHeldWaitIsNotMistakenForAStalledAnswer() async throws {
        try await RunningApp.with(environment: ["WAIT_SECONDS": "6", "HTTP_REQUEST_TIMEOUT_SECONDS": "2"]) { app in
            let ticket = try await app.panelTicket("alice")
            let version = try await LiveRoutesTests.versionOnceListening(app, ticket: ticket)
            let connection = try await RawConnection.open(port: app.port)
            defer { connection.close() }
            let started = ContinuousClock.now
            try await connection.send(
                "POST /api/issues/10001/wait?version=\(version) HTTP/1.1\r\nHost: localhost\r\nAuthorization: Ticket \(ticket)\r\n"
                    + "Content-Length: 0\r\n\r\n")
            let outcome = await connection.nextResponse(timeout: .seconds(20))
            let held = ContinuousClock.now - started
            guard case .complete(let answer) = outcome else {
                Issue.record("a held wait ended \(outcome) after \(held)")
                return
            }
            #expect(answer.status == 200)
            #expect(held >= .seconds(5), "answered after \(held), not at its 6 s hold time")
            #expect(!connection.isClosed, "the connection of a held wait was closed")
        }
    }
}

/// The real executable serving a scratch database on a free port.
struct ServedApp {
    let service: ChildService
    let port: Int
    let conninfo: String
    let key: String

    static func with(
        environment: [String: String], name: String, openFilesLimit: Int? = nil, _ body: (ServedApp) async throws -> Void
    ) async throws {
        try await TestDatabase.withScratchDatabase { conninfo in
            let key = SecretBox.generateKey()
            var lastFailure = ""
            for _ in 0..<3 {
                let port = try FreePort.next()
                let service = try ChildService(
                    arguments: ["serve"],
                    environment: [
                        "DATABASE_URL": conninfo, "PORT": String(port), "SECRET_ENCRYPTION_KEY": key, "LOG_LEVEL": "notice",
                        "MIGRATIONS_DIR": SharedMaterial.projectRoot.appendingPathComponent("Migrations").path,
                    ].merging(environment) { $1 },
                    name: name, openFilesLimit: openFilesLimit
                )
                let app = ServedApp(service: service, port: port, conninfo: conninfo, key: key)
                // Raw and closed at once, so that no pooled client connection counts against a cap.
                guard await eventually(timeout: .seconds(30), { await app.answers("/readyz", timeout: .seconds(2)) == 200 }) else {
                    lastFailure = service.output
                    await service.stopAndWait()
                    continue  // most likely the port was taken
                }
                do {
                    try await body(app)
                } catch {
                    await service.stopAndWait()
                    throw error
                }
                await service.stopAndWait()
                return
            }
            Issue.record("the app never served:\n\(lastFailure)")
        }
    }

    /// The status of `GET path` on a connection of its own, nil when there is no complete answer.
    func answers(_ path: String, timeout: Duration = .seconds(5)) async -> Int? {
        guard let connection = try? await RawConnection.open(port: port) else { return nil }
        defer { connection.close() }
        guard (try? await connection.send("GET \(path) HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")) != nil else { return nil }
        guard case .complete(let answer) = await connection.nextResponse(timeout: timeout) else { return nil }
        return answer.status
    }
}

/// One HTTP/1.1 answer as it came off the wire.
struct RawResponse: Sendable {
    var status: Int
    var headers: [String: String]
    var body: [UInt8]

    /// The complete answers in `bytes`, where each ends, and how many bytes follow them (part of an answer).
    static func parse(_ bytes: [UInt8]) -> (responses: [RawResponse], ends: [Int], leftover: Int) {
        var responses: [RawResponse] = []
        var ends: [Int] = []
        var offset = 0
        let separator: [UInt8] = Array("\r\n\r\n".utf8)
        outer: while offset < bytes.count {
            var headEnd: Int?
            var index = offset
            while index + 4 <= bytes.count {
                if bytes[index] == separator[0], bytes[index + 1] == separator[1], bytes[index + 2] == separator[2],
                    bytes[index + 3] == separator[3]
                {
                    headEnd = index
                    break
                }
                index += 1
            }
            guard let headEnd else { break }
            let lines = String(decoding: bytes[offset..<headEnd], as: UTF8.self).components(separatedBy: "\r\n")
            let statusParts = lines[0].split(separator: " ")
            guard statusParts.count >= 2, statusParts[0].hasPrefix("HTTP/1."), let status = Int(statusParts[1]) else { break }
            var headers: [String: String] = [:]
            for line in lines.dropFirst() {
                guard let colon = line.firstIndex(of: ":") else { continue }
                headers[line[..<colon].lowercased()] = line[line.index(after: colon)...].trimmingCharacters(in: .whitespaces)
            }
            var cursor = headEnd + 4
            var body: [UInt8] = []
            if headers["transfer-encoding"]?.lowercased() == "chunked" {
                while true {
                    guard let lineEnd = Self.find(Array("\r\n".utf8), in: bytes, from: cursor) else { break outer }
                    let sizeText = String(decoding: bytes[cursor..<lineEnd], as: UTF8.self).split(separator: ";").first ?? ""
                    guard let size = Int(sizeText.trimmingCharacters(in: .whitespaces), radix: 16) else { break outer }
                    cursor = lineEnd + 2
                    guard bytes.count >= cursor + size + 2 else { break outer }
                    body += bytes[cursor..<(cursor + size)]
                    cursor += size + 2
                    if size == 0 { break }
                }
            } else {
                let length = Int(headers["content-length"] ?? "0") ?? 0
                guard bytes.count >= cursor + length else { break }
                body = Array(bytes[cursor..<(cursor + length)])
                cursor += length
            }
            responses.append(RawResponse(status: status, headers: headers, body: body))
            ends.append(cursor)
            offset = cursor
        }
        return (responses, ends, bytes.count - offset)
    }

    private static func find(_ needle: [UInt8], in bytes: [UInt8], from start: Int) -> Int? {
        guard bytes.count >= needle.count else { return nil }
        var index = start
        while index + needle.count <= bytes.count {
            if Array(bytes[index..<(index + needle.count)]) == needle { return index }
            index += 1
        }
        return nil
    }
}

/// A client socket that sends exactly the bytes it is given and records what comes back and
/// when the server closed it (EOF or reset).
final class RawConnection: Sendable {
    enum Outcome: Sendable, CustomStringConvertible {
        case complete(RawResponse)
        /// Closed before any byte of an answer: the server never took the request.
        case closedBeforeAnswer
        /// Closed in the middle of an answer.
        case truncated(bytes: Int)
        case noAnswer

        var description: String {
            switch self {
            case .complete(let answer): "complete \(answer.status)"
            case .closedBeforeAnswer: "closed before an answer"
            case .truncated(let bytes): "truncated after \(bytes) bytes"
            case .noAnswer: "no answer in time"
            }
        }
    }

    struct State {
        var received: [UInt8] = []
        var closedAt: ContinuousClock.Instant?
        /// Bytes of `received` already handed out as answers.
        var consumed = 0
    }

    final class Sink: Sendable {
        let state = Mutex(State())
    }

    let channel: any Channel
    private let sink: Sink

    private init(channel: any Channel, sink: Sink) {
        self.channel = channel
        self.sink = sink
    }

    final class Recorder: ChannelInboundHandler {
        typealias InboundIn = ByteBuffer
        let sink: Sink

        init(sink: Sink) { self.sink = sink }

        func channelRead(context: ChannelHandlerContext, data: NIOAny) {
            let buffer = unwrapInboundIn(data)
            sink.state.withLock { $0.received += buffer.readableBytesView }
        }

        func channelInactive(context: ChannelHandlerContext) {
            sink.state.withLock { if $0.closedAt == nil { $0.closedAt = .now } }
            context.fireChannelInactive()
        }

        func errorCaught(context: ChannelHandlerContext, error: any Error) {
            // A reset: recorded as the close it is.
            context.close(promise: nil)
        }
    }

    /// A connection to `port`. `receiveBuffer` sets its socket's `SO_RCVBUF` (before connecting,
    /// so that the window is small from the start). With `readsOnRequest`, it reads nothing by
    /// itself, and at most that many bytes on each `read()`: a client that reads slowly, or never
    /// (it still sees the server close the connection).
    static func open(port: Int, receiveBuffer: Int32? = nil, readsOnRequest: Int? = nil) async throws -> RawConnection {
        let sink = Sink()
        var bootstrap = ClientBootstrap(group: MultiThreadedEventLoopGroup.singleton).connectTimeout(.seconds(3))
        if let receiveBuffer {
            bootstrap = bootstrap.channelOption(.socketOption(.so_rcvbuf), value: ChannelOptions.Types.SocketOption.Value(receiveBuffer))
        }
        if let readsOnRequest {
            bootstrap =
                bootstrap
                .channelOption(.autoRead, value: false)
                .channelOption(.maxMessagesPerRead, value: 1)
                .channelOption(.recvAllocator, value: FixedSizeRecvByteBufferAllocator(capacity: readsOnRequest))
        }
        let channel =
            try await bootstrap
            .channelInitializer { channel in
                channel.eventLoop.makeCompletedFuture { try channel.pipeline.syncOperations.addHandler(Recorder(sink: sink)) }
            }
            .connect(host: "127.0.0.1", port: port).get()
        return RawConnection(channel: channel, sink: sink)
    }

    /// `count` requests left half-sent: half stop inside the head, half inside the body.
    static func openHalfSent(_ count: Int, port: Int) async throws -> [RawConnection] {
        var connections: [RawConnection] = []
        for index in 0..<count {
            guard let connection = try? await open(port: port) else { break }  // no more room: fine
            connections.append(connection)
            let partial =
                index.isMultiple(of: 2)
                ? "GET /healthz HTTP/1.1\r\nHost: localhost\r\nX-Unfinished: "
                : "POST /api/issues/1/leave HTTP/1.1\r\nHost: localhost\r\nContent-Type: text/plain\r\nContent-Length: 4000\r\n\r\nabc"
            try? await connection.send(partial)
        }
        return connections
    }

    func send(_ text: String) async throws {
        try await channel.writeAndFlush(ByteBuffer(string: text)).get()
    }

    var received: [UInt8] { sink.state.withLock { $0.received } }
    var closedAt: ContinuousClock.Instant? { sink.state.withLock { $0.closedAt } }
    var isClosed: Bool { closedAt != nil }

    func waitUntilClosed(timeout: Duration) async -> Bool {
        let deadline = ContinuousClock.now + timeout
        while ContinuousClock.now < deadline {
            if isClosed { return true }
            try? await Task.sleep(for: .milliseconds(10))
        }
        return isClosed
    }

    /// The next answer on this connection, or how it ended.
    func nextResponse(timeout: Duration) async -> Outcome {
        let deadline = ContinuousClock.now + timeout
        while true {
            let (bytes, consumed, closed) = sink.state.withLock { ($0.received, $0.consumed, $0.closedAt != nil) }
            let pending = Array(bytes[consumed...])
            let parsed = RawResponse.parse(pending)
            if let first = parsed.responses.first {
                sink.state.withLock { $0.consumed += parsed.ends[0] }
                return .complete(first)
            }
            if closed { return pending.isEmpty ? .closedBeforeAnswer : .truncated(bytes: pending.count) }
            if ContinuousClock.now >= deadline { return .noAnswer }
            try? await Task.sleep(for: .milliseconds(5))
        }
    }

    /// One read, for a connection opened with `readsOnRequest`.
    func read() {
        channel.read()
    }

    func close() {
        channel.close(promise: nil)
    }
}
