import CLibpq
import Foundation
#if canImport(Glibc)
import Glibc
#endif
import Synchronization

/// A notification sent with `NOTIFY` / `pg_notify` to a channel we listen on.
public struct PostgresNotification: Sendable, Equatable {
    public var channel: String
    public var payload: String
    /// The server process that sent it.
    public var senderPID: Int32
}

/// What a listener tells its owner, in order, from its own thread.
public enum PostgresListenerEvent: Sendable {
    /// Connected and listening. Notifications sent while it was not listening are lost: the
    /// owner should treat everything as possibly changed.
    case listening
    case notifications([PostgresNotification])
    /// The connection failed or was lost; it reconnects after a backoff.
    case lost(PostgresError)
}

/// `LISTEN` on a dedicated libpq connection, outside the pool: notifications are read as they
/// arrive (a `poll()` on the session's socket, no query loop), on a thread of its own since
/// libpq blocks. A lost connection is opened again with exponential backoff.
public struct PostgresListener: Sendable {
    public struct Configuration: Sendable {
        public var conninfo: String
        public var channels: [String]
        public var connectTimeoutSeconds: Int
        /// Backoff between reconnection attempts: doubles from `minimumBackoff` up to `maximumBackoff`.
        public var minimumBackoff: Duration
        public var maximumBackoff: Duration
        /// After this long without a word from the server, a trivial statement checks the
        /// session is still there (a silently dropped network path would never say so).
        public var idleCheck: Duration

        public init(
            conninfo: String, channels: [String], connectTimeoutSeconds: Int = 5, minimumBackoff: Duration = .milliseconds(100),
            maximumBackoff: Duration = .seconds(5), idleCheck: Duration = .seconds(30)
        ) {
            self.conninfo = conninfo
            self.channels = channels
            self.connectTimeoutSeconds = connectTimeoutSeconds
            self.minimumBackoff = minimumBackoff
            self.maximumBackoff = maximumBackoff
            self.idleCheck = idleCheck
        }
    }

    let configuration: Configuration

    public init(configuration: Configuration) {
        precondition(configuration.channels.allSatisfy(Self.isValidChannel), "channel names are plain lower-case identifiers")
        self.configuration = configuration
    }

    /// Channel names go into `LISTEN` as identifiers, so only plain ones are accepted.
    static func isValidChannel(_ name: String) -> Bool {
        guard let first = name.utf8.first, (UInt8(ascii: "a")...UInt8(ascii: "z")).contains(first), name.utf8.count <= 63 else { return false }
        return name.utf8.allSatisfy { byte in
            (UInt8(ascii: "a")...UInt8(ascii: "z")).contains(byte) || (UInt8(ascii: "0")...UInt8(ascii: "9")).contains(byte)
                || byte == UInt8(ascii: "_")
        }
    }

    /// Listens until the calling task is cancelled, telling `onEvent` what happens (on the
    /// listener's thread: keep it short). Returns once the thread has ended.
    public func run(_ onEvent: @escaping @Sendable (PostgresListenerEvent) -> Void) async {
        // The pipe that wakes the thread: without a free file descriptor there is none, and the
        // listener waits for one as it would for the database.
        var wake = WakePipe()
        while wake == nil {
            onEvent(.lost(PostgresError(.connection, message: "no file descriptor for the listener's wake-up pipe")))
            do {
                try await Task.sleep(for: configuration.maximumBackoff)
            } catch {
                return
            }
            wake = WakePipe()
        }
        guard let wake else { return }
        let thread = ListenerThread(configuration: configuration, wake: wake, onEvent: onEvent)
        await withTaskCancellationHandler {
            await withCheckedContinuation { (continuation: CheckedContinuation<Void, Never>) in
                let worker = Thread {
                    thread.loop()
                    continuation.resume()
                }
                worker.name = "libpq-listen"
                worker.start()
            }
        } onCancel: {
            wake.signal()
        }
        wake.close()
    }
}

/// A pipe whose read end becomes readable to stop the listener thread's `poll()`.
final class WakePipe: Sendable {
    private let descriptors: (read: Int32, write: Int32)
    private let closed = Atomic(false)

    init?() {
        var ends: [Int32] = [-1, -1]
        guard pipe(&ends) == 0 else { return nil }
        for end in ends { _ = fcntl(end, F_SETFL, fcntl(end, F_GETFL) | O_NONBLOCK) }
        descriptors = (ends[0], ends[1])
    }

    var readEnd: Int32 { descriptors.read }

    func signal() {
        var byte: UInt8 = 1
        _ = write(descriptors.write, &byte, 1)
    }

    /// True once `signal()` was called (the byte stays in the pipe).
    var isSignalled: Bool {
        var descriptor = pollfd(fd: descriptors.read, events: Int16(POLLIN), revents: 0)
        return poll(&descriptor, 1, 0) > 0
    }

    func close() {
        guard !closed.exchange(true, ordering: .acquiringAndReleasing) else { return }
        _ = Glibc.close(descriptors.read)
        _ = Glibc.close(descriptors.write)
    }
}

/// The listener's blocking loop; runs on its own thread only.
private struct ListenerThread: @unchecked Sendable {
    let configuration: PostgresListener.Configuration
    let wake: WakePipe
    let onEvent: @Sendable (PostgresListenerEvent) -> Void

    func loop() {
        var backoff = configuration.minimumBackoff
        while !wake.isSignalled {
            do {
                // A name of its own, so that operators (and tests) tell it from the pool's sessions.
                let connection = try PostgresConnection(
                    conninfo: configuration.conninfo, connectTimeoutSeconds: configuration.connectTimeoutSeconds,
                    applicationName: "whoslooking-listen"
                )
                defer { connection.close() }
                for channel in configuration.channels {
                    try connection.execute(script: "LISTEN \(channel)", timeout: .seconds(Int64(configuration.connectTimeoutSeconds)))
                }
                onEvent(.listening)
                backoff = configuration.minimumBackoff
                try listen(on: connection)
                return  // woken: stop
            } catch {
                onEvent(.lost(error))
            }
            // Sleeps unless woken meanwhile; then tries again, waiting longer each time.
            if waitForWake(upTo: backoff) { return }
            backoff = min(backoff * 2, configuration.maximumBackoff)
        }
    }

    /// Reads notifications as they arrive until woken (returns) or the session fails (throws).
    private func listen(on connection: PostgresConnection) throws(PostgresError) {
        let idleMilliseconds = Int32(clamping: PostgresConnection.milliseconds(configuration.idleCheck))
        while true {
            var descriptors = [
                pollfd(fd: PQsocket(connection.handle), events: Int16(POLLIN), revents: 0),
                pollfd(fd: wake.readEnd, events: Int16(POLLIN), revents: 0),
            ]
            let ready = poll(&descriptors, 2, idleMilliseconds)
            if ready < 0 {
                if errno == EINTR { continue }
                throw PostgresError(.connection, message: "poll failed: \(String(cString: strerror(errno)))")
            }
            if descriptors[1].revents != 0 { return }
            if ready == 0 {
                // Quiet for a while: make sure the session is still there.
                try connection.execute(script: "SELECT 1", timeout: .seconds(Int64(configuration.connectTimeoutSeconds)))
            } else if PQconsumeInput(connection.handle) != 1 || PQstatus(connection.handle) != CONNECTION_OK {
                throw PostgresError(.connection, message: PostgresConnection.errorMessage(of: connection.handle))
            }
            let notifications = connection.takeNotifications()
            if !notifications.isEmpty { onEvent(.notifications(notifications)) }
        }
    }

    /// True when woken before `duration` passed.
    private func waitForWake(upTo duration: Duration) -> Bool {
        var descriptor = pollfd(fd: wake.readEnd, events: Int16(POLLIN), revents: 0)
        return poll(&descriptor, 1, Int32(clamping: PostgresConnection.milliseconds(duration))) > 0
    }
}

extension PostgresConnection {
    /// The notifications libpq has read for this session so far (after any call that read
    /// from the server), oldest first.
    func takeNotifications() -> [PostgresNotification] {
        var notifications: [PostgresNotification] = []
        while let notification = PQnotifies(handle) {
            defer { PQfreemem(notification) }
            notifications.append(
                PostgresNotification(
                    channel: String(cString: notification.pointee.relname),
                    payload: String(cString: notification.pointee.extra),
                    senderPID: notification.pointee.be_pid
                )
            )
        }
        return notifications
    }
}
