import NIOCore
import Synchronization

/// Open connections across all event loops: their count, against the cap, and a watch on each
/// accepted one that a route can ask to tell it when the client goes away.
final class OpenConnections: Sendable {
    private let count = Atomic<Int>(0)
    private let watches = Mutex<[ObjectIdentifier: ConnectionWatch]>([:])

    /// Counts a new connection; false when that makes more than `limit`.
    func open(limit: Int) -> Bool {
        count.wrappingAdd(1, ordering: .relaxed).newValue <= limit
    }

    /// Watches an accepted connection until it closes.
    func watch(_ channel: any Channel) -> ConnectionWatch {
        let id = ObjectIdentifier(channel)
        let watch = ConnectionWatch()
        watches.withLock { $0[id] = watch }
        channel.closeFuture.whenComplete { [self] _ in
            watches.withLock { $0[id] = nil }
            watch.clientLeft()
        }
        return watch
    }

    /// The watch of an open connection; nil once it has closed (or for a test's router client).
    func watch(_ id: ObjectIdentifier) -> ConnectionWatch? {
        watches.withLock { $0[id] }
    }

    func closed() {
        count.wrappingSubtract(1, ordering: .relaxed)
    }
}

/// The client of one connection going away, for the request being answered on it: at most one
/// action, replaced by each request that sets one and forgotten when that request is done, so a
/// long-lived keep-alive connection does not collect them.
///
/// The client has left when the connection closes, or when its input ends: the server allows
/// half-closed connections (Hummingbird's setting), so a browser closing a tab shows first as
/// the end of its input, while the connection stays open for an answer nobody will read. A
/// client that half-closes on purpose and waits for its answer loses nothing: what the action
/// does (end a held wait as "unchanged") is still answered.
final class ConnectionWatch: Sendable {
    private struct State {
        var hasLeft = false
        var action: (@Sendable () -> Void)?
    }

    private let state = Mutex(State())

    /// Runs `action` when the client leaves, at once if it has.
    func whenClientLeaves(_ action: @escaping @Sendable () -> Void) {
        let leftAlready = state.withLock { state in
            if !state.hasLeft { state.action = action }
            return state.hasLeft
        }
        if leftAlready { action() }
    }

    func forget() {
        state.withLock { $0.action = nil }
    }

    /// From the connection's event loop: its input ended, or it closed.
    func clientLeft() {
        let action = state.withLock { state in
            state.hasLeft = true
            defer { state.action = nil }
            return state.action
        }
        action?()
    }
}
