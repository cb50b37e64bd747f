import Synchronization

/// Prepared sandboxes kept ready per key (policy, network mode, /tmp size).
final class SandboxPool: Sendable {
    let target: Int
    private let ready = Mutex<[PreparedSandbox.Key: [PreparedSandbox]]>([:])

    init(target: Int) { self.target = target }

    /// A ready sandbox for `key`, if there is one; remembers the key for refilling.
    func take(_ key: PreparedSandbox.Key) -> PreparedSandbox? {
        ready.withLock { r in
            if r[key] == nil { r[key] = [] }
            return r[key]!.popLast()
        }
    }

    /// Registers `key` and prepares sandboxes until it has `target` ready; errors are thrown.
    func fill(_ key: PreparedSandbox.Key, _ make: (PreparedSandbox.Key) throws -> PreparedSandbox) throws -> Int {
        var made = 0
        while ready.withLock({ $0[key, default: []].count }) < target {
            let s = try make(key)
            ready.withLock { $0[key, default: []].append(s) }
            made += 1
        }
        return made
    }

    /// Refills every key seen so far; a key that fails is left for the next round.
    func replenish(_ make: (PreparedSandbox.Key) throws -> PreparedSandbox) -> Int {
        let keys = ready.withLock { Array($0.keys) }
        return keys.reduce(0) { $0 + ((try? fill($1, make)) ?? 0) }
    }

    var count: Int { ready.withLock { $0.values.reduce(0) { $0 + $1.count } } }

    func drain() {
        let all = ready.withLock { r in
            let a = r.values.flatMap { $0 }
            r = [:]
            return a
        }
        all.forEach { $0.discard() }
    }
}
