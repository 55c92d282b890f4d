import ArgumentParser
import Foundation
import NIOCore
import NIOHTTP1
import NIOPosix

/// Where an app instance listens, from its URL (`http://127.0.0.1:18080`).
struct AppAddress: Sendable {
    var host: String
    var port: Int

    init(_ url: String) throws {
        guard let components = URLComponents(string: url), let host = components.host, components.scheme == "http" else {
            throw ValidationError("not an http URL: \(url)")
        }
        self.host = host
        port = components.port ?? 80
    }

    var hostHeader: String { "\(host):\(port)" }
}

/// One HTTP answer, whole.
struct Answer {
    var status: Int
    var headers: HTTPHeaders
    var body: ByteBuffer

    /// `Retry-After` in seconds, at least one (docs/live-presence.md: a panel never retries sooner).
    var retryAfterSeconds: Int { max(1, headers.first(name: "retry-after").flatMap { Int($0) } ?? 1) }
}

struct ConnectionClosed: Error {}

/// One kept-alive HTTP/1.1 connection, one request at a time, as a panel's `fetch` uses it.
/// Raw NIO rather than AsyncHTTPClient: each of ten thousand panels holds a connection of its
/// own for as long as it waits, and a connection pool would only add bookkeeping per request.
struct PanelConnection: ~Copyable {
    private var inbound: NIOAsyncChannelInboundStream<HTTPClientResponsePart>.AsyncIterator
    private let outbound: NIOAsyncChannelOutboundWriter<HTTPClientRequestPart>
    private let hostHeader: String

    /// Opens a connection to `address` and runs `body` with it; the connection is closed after.
    static func with<Result: Sendable>(
        _ address: AppAddress, group: any EventLoopGroup, _ body: (inout PanelConnection) async throws -> Result
    ) async throws -> Result {
        let channel = try await ClientBootstrap(group: group)
            .channelOption(.socketOption(.tcp_nodelay), value: 1)
            .connectTimeout(.seconds(10))
            .connect(host: address.host, port: address.port) { channel in
                channel.eventLoop.makeCompletedFuture {
                    try channel.pipeline.syncOperations.addHTTPClientHandlers()
                    return try NIOAsyncChannel<HTTPClientResponsePart, HTTPClientRequestPart>(wrappingChannelSynchronously: channel)
                }
            }
        return try await channel.executeThenClose { inbound, outbound in
            var connection = PanelConnection(inbound: inbound.makeAsyncIterator(), outbound: outbound, hostHeader: address.hostHeader)
            return try await body(&connection)
        }
    }

    /// A bodiless POST (heartbeat, wait, leave) with the viewer ticket, and its whole answer.
    /// `sending` runs just before the request is written: the latency clock starts there.
    mutating func post(_ path: String, ticket: String, sending: () -> Void = {}) async throws -> Answer {
        var headers = HTTPHeaders()
        headers.add(name: "Host", value: hostHeader)
        headers.add(name: "Authorization", value: "Ticket \(ticket)")
        headers.add(name: "Content-Length", value: "0")
        let head = HTTPRequestHead(version: .http1_1, method: .POST, uri: path, headers: headers)
        sending()
        try await outbound.write(contentsOf: [.head(head), .end(nil)])
        var answer = Answer(status: 0, headers: [:], body: ByteBuffer())
        while let part = try await inbound.next() {
            switch part {
            case .head(let head):
                answer.status = Int(head.status.code)
                answer.headers = head.headers
            case .body(var bytes):
                answer.body.writeBuffer(&bytes)
            case .end:
                return answer
            }
        }
        throw ConnectionClosed()
    }
}

/// What the bench needs of a wait's or heartbeat's answer (docs/live-presence.md).
struct PresenceAnswer: Decodable {
    struct Viewer: Decodable {
        var accountId: String
        var you: Bool?
    }

    var changed: Bool?
    var version: String?
    var viewers: [Viewer]?

    init(_ answer: Answer) throws {
        self = try JSONDecoder().decode(PresenceAnswer.self, from: Data(answer.body.readableBytesView))
    }
}

/// The bench host's tickets file: one `issueId ticket` line per prepared viewer.
enum TicketFile {
    static func read(_ path: String) throws -> [(issue: String, ticket: String)] {
        try String(contentsOfFile: path, encoding: .utf8).split(separator: "\n").compactMap { line in
            let fields = line.split(separator: " ")
            return fields.count == 2 ? (String(fields[0]), String(fields[1])) : nil
        }
    }
}

/// A process's resident memory, from `/proc/<pid>/status` (`VmRSS`, in kB).
enum ResidentMemory {
    static func megabytes(pid: Int) -> Double? {
        guard let status = try? String(contentsOfFile: "/proc/\(pid)/status", encoding: .utf8) else { return nil }
        for line in status.split(separator: "\n") where line.hasPrefix("VmRSS:") {
            return line.split(separator: " ").dropFirst().first.flatMap { Double($0) }.map { $0 / 1024 }
        }
        return nil
    }
}

/// Writes a line to standard output at once: scripts/bench reads the file while we run.
func emit(_ line: String) {
    FileHandle.standardOutput.write(Data((line + "\n").utf8))
}

/// A JSON object line from simple values, keys in the order given.
func jsonLine(_ fields: KeyValuePairs<String, any Sendable>) -> String {
    let body = fields.map { key, value -> String in
        switch value {
        case let number as Double: "\"\(key)\":\(number.isFinite ? String(format: "%.3f", number) : "null")"
        case let number as Int: "\"\(key)\":\(number)"
        case let flag as Bool: "\"\(key)\":\(flag)"
        case let optional as Double?: "\"\(key)\":\(optional.map { String(format: "%.3f", $0) } ?? "null")"
        default: "\"\(key)\":\"\(value)\""
        }
    }
    return "{" + body.joined(separator: ",") + "}"
}
