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

    /// Prepares sandboxes until every key seen has `target` ready; returns how many it made.
    func replenish(_ make: (PreparedSandbox.Key) throws -> PreparedSandbox) -> Int {
        var made = 0
        while true {
            let key: PreparedSandbox.Key? = ready.withLock { r in r.first { $0.value.count < target }?.key }
            guard let key, let s = try? make(key) else { return made }
            ready.withLock { $0[key, default: []].append(s) }
            made += 1
        }
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
