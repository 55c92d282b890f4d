import Base64URLCoding
import Foundation
import Synchronization

/// Decoded invocation-token headers, by their encoded text. Forge signs with few keys, so
/// nearly every token's header is one already seen; decoding it is skipped then. The header
/// is not yet verified when read, so the cache is small and replaced whole when full: any
/// caller can fill it, none can grow it.
final class TokenHeaders: Sendable {
    private let decoded = Mutex<[[UInt8]: ForgeTokenVerifier.Header]>([:])
    private let capacity: Int

    init(capacity: Int = 16) {
        self.capacity = capacity
    }

    /// Headers held now.
    var count: Int { decoded.withLock { $0.count } }

    func header(of encoded: ArraySlice<UInt8>) throws(ForgeTokenRejection) -> ForgeTokenVerifier.Header {
        let key = Array(encoded)
        if let known = decoded.withLock({ $0[key] }) { return known }
        guard let json = Base64URL.decode(encoded),
            let header = try? JSONDecoder().decode(ForgeTokenVerifier.Header.self, from: Data(json))
        else { throw .malformed }
        if let label = header.icLabel, !ForgeTokenVerifier.isICLabel(label) { throw .badICLabel }
        decoded.withLock { cache in
            if cache.count >= capacity { cache.removeAll(keepingCapacity: true) }
            cache[key] = header
        }
        return header
    }
}
