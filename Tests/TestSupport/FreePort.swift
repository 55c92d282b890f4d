#if canImport(Glibc)
import Glibc
#endif

/// Loopback ports for the executables a test starts (apps, devhost, chromedriver), which must
/// be told their port before they bind it.
///
/// The kernel picks each one (a bind to port 0) among the ports nobody holds, where a port
/// picked at random could already be held: by an executable of the test before that is still
/// shutting down, or as the local end of one of the machine's outgoing connections (random
/// ports in 32768–60999 fall in Linux's ephemeral range).
public enum FreePort {
    public struct Failure: Error, CustomStringConvertible {
        public var description: String
    }

    /// A port free now. The socket that asked is closed again, so a later bind can take it; only
    /// another bind to port 0 in between could take it first.
    public static func next() throws -> Int {
        let descriptor = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        guard descriptor >= 0 else { throw Failure(description: "socket: errno \(errno)") }
        defer { close(descriptor) }
        var address = sockaddr_in()
        address.sin_family = sa_family_t(AF_INET)
        address.sin_port = 0
        address.sin_addr.s_addr = inet_addr("127.0.0.1")
        let length = socklen_t(MemoryLayout<sockaddr_in>.size)
        let bound = withUnsafePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(descriptor, $0, length) }
        }
        guard bound == 0 else { throw Failure(description: "bind: errno \(errno)") }
        var chosen = sockaddr_in()
        var chosenLength = length
        let named = withUnsafeMutablePointer(to: &chosen) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { getsockname(descriptor, $0, &chosenLength) }
        }
        guard named == 0 else { throw Failure(description: "getsockname: errno \(errno)") }
        return Int(UInt16(bigEndian: chosen.sin_port))
    }

    /// `count` different free ports.
    public static func next(_ count: Int) throws -> [Int] {
        var ports: [Int] = []
        while ports.count < count {
            let port = try next()
            if !ports.contains(port) { ports.append(port) }
        }
        return ports
    }
}
