import Synchronization

/// Values derived from parts of tokens, by those parts: Forge signs with few keys and calls
/// for an installation repeat its apiBaseUrl, so most lookups hit. Parts may come from callers
/// we have not verified yet, so the cache is small and emptied whole when full: anyone can
/// fill it, no one can grow it.
final class BoundedCache<Key: Hashable & Sendable, Value: Sendable>: Sendable {
    private let entries = Mutex<[Key: Value]>([:])
    private let capacity: Int

    init(capacity: Int) {
        self.capacity = capacity
    }

    /// Entries held now.
    var count: Int { entries.withLock { $0.count } }

    /// The value held for `key`, or what `make` derives (kept unless it throws).
    func value<Failure: Error>(for key: Key, make: (Key) throws(Failure) -> Value) throws(Failure) -> Value {
        if let known = entries.withLock({ $0[key] }) { return known }
        let value = try make(key)
        entries.withLock { entries in
            if entries.count >= capacity { entries.removeAll(keepingCapacity: true) }
            entries[key] = value
        }
        return value
    }
}
