import CPetrelLinux
import Glibc
import Synchronization

/// A runtime's interpreter started ahead in a prepared sandbox ("stem cell"): its
/// command runs with the runtime's own files loaded and no function's code, blocked on
/// the stem socket, until `SandboxEngine.spawn` hands it a function's code, working
/// directory and environment. Whatever the command reads when it starts must be the
/// same for every function that uses the stem: its argv, the variables in
/// `environment`, and (for runtimes that size themselves from it) the memory limit.
public struct StemSpec: Hashable, Sendable {
    public var command: [String]
    /// The environment it starts with: the runtime's constant variables. The go replaces
    /// it with the function's whole environment.
    public var environment: [String: String]
    /// The memory limit it starts under (V8 sizes its heap from it); nil: one stem serves every size.
    public var memoryMB: Int?
    /// Names the stems in metrics ("python3.11").
    public var label: String

    public init(command: [String], environment: [String: String], memoryMB: Int?, label: String) {
        self.command = command
        self.environment = environment
        self.memoryMB = memoryMB
        self.label = label
    }
}

/// What the stem pool holds, per runtime label: for the metrics and the bench.
public struct StemGauge: Sendable, Equatable {
    public var label: String
    public var ready: Int
    public var memoryBytes: Int
}

/// Pre-started commands ready per sandbox key and stem. A key is kept while it is asked
/// for (a cold start that wanted it registers it); the pool refills off the request path
/// (`SandboxEngine.replenishPools`), up to `target` per key, at most `keyLimit` keys
/// (the least recently asked go first), keys not asked for within `keyTTL` are dropped,
/// and nothing is made while the ready stems' memory is at the budget.
final class StemPool: Sendable {
    struct Key: Hashable, Sendable {
        var sandbox: PreparedSandbox.Key
        var stem: StemSpec
    }

    /// A pre-started sandbox and the read end of its command's output (stdout and stderr).
    struct Cell: Sendable {
        var box: PreparedSandbox
        var output: Int32

        func discard() {
            Sys.close(output)
            box.discard()
        }

        /// Whether the command still waits: its init has reported nothing since STEM_READY.
        var alive: Bool {
            var p = pollfd(fd: box.statusFD, events: Int16(POLLIN), revents: 0)
            return poll(&p, 1, 0) == 0
        }
    }

    private struct State {
        var ready: [Key: [Cell]] = [:]
        var asked: [Key: UInt64] = [:]
        var failedUntil: [Key: UInt64] = [:]
    }

    let target: Int
    let budgetBytes: Int
    let keyLimit = 8
    let keyTTL: UInt64 = 600 * 1_000_000_000
    static let retryAfterFailure: UInt64 = 30 * 1_000_000_000
    private let state = Mutex(State())

    init(target: Int, budgetMB: Int) {
        self.target = target
        budgetBytes = budgetMB * 1_048_576
    }

    /// A live stem for `key`, if one is ready; registers the key for refilling.
    func take(_ key: Key) -> Cell? {
        guard target > 0 else { return nil }
        while true {
            let cell: Cell? = state.withLock { s in
                s.asked[key] = Sys.monotonicNanoseconds()
                return s.ready[key]?.popLast()
            }
            guard let cell else { return nil }
            if cell.alive { return cell }
            cell.discard()
        }
    }

    /// Drops stale keys, then makes stems for the registered keys up to the target while
    /// under the memory budget. Returns how many it made.
    func replenish(_ make: (Key) throws -> Cell, failed: (Key, any Error) -> Void) -> Int {
        guard target > 0 else { return 0 }
        let now = Sys.monotonicNanoseconds()
        let (stale, keys) = state.withLock { s -> ([Cell], [Key]) in
            var byAge = s.asked.sorted { $0.value > $1.value }
            var dropped: [Key] = byAge.filter { now &- $0.value > keyTTL }.map(\.key)
            byAge.removeAll { now &- $0.value > keyTTL }
            if byAge.count > keyLimit { dropped += byAge[keyLimit...].map(\.key) }
            var cells: [Cell] = []
            for k in dropped {
                s.asked[k] = nil
                s.failedUntil[k] = nil
                cells += s.ready.removeValue(forKey: k) ?? []
            }
            // Dead stems (an OOM kill, a crash while waiting) are swept here too.
            for (k, list) in s.ready {
                var live: [Cell] = []
                for c in list {
                    if c.alive { live.append(c) } else { cells.append(c) }
                }
                s.ready[k] = live
            }
            let keys = byAge.prefix(keyLimit).map(\.key).filter { (s.failedUntil[$0] ?? 0) <= now }
            return (cells, keys)
        }
        stale.forEach { $0.discard() }
        var made = 0
        var held: Int? // the ready stems' memory: read once, when something is to be made
        for key in keys {
            while state.withLock({ $0.asked[key] != nil && $0.ready[key, default: []].count < target }) {
                let memory = held ?? memoryBytes()
                guard memory < budgetBytes else { return made }
                do {
                    let cell = try make(key)
                    held = memory + cell.box.cgroup.currentMemoryBytes()
                    let kept = state.withLock { s -> Bool in
                        guard s.asked[key] != nil else { return false }
                        s.ready[key, default: []].append(cell)
                        return true
                    }
                    if !kept { cell.discard() }
                    made += 1
                } catch {
                    state.withLock { $0.failedUntil[key] = Sys.monotonicNanoseconds() + Self.retryAfterFailure }
                    failed(key, error)
                    break
                }
            }
        }
        return made
    }

    /// Memory charged to the ready stems' cgroups.
    func memoryBytes() -> Int { gauges().reduce(0) { $0 + $1.memoryBytes } }

    func gauges() -> [StemGauge] {
        let cells = state.withLock { s in s.ready.map { ($0.key.stem.label, $0.value) } }
        var out: [String: StemGauge] = [:]
        for (label, list) in cells {
            var g = out[label] ?? StemGauge(label: label, ready: 0, memoryBytes: 0)
            g.ready += list.count
            g.memoryBytes += list.reduce(0) { $0 + $1.box.cgroup.currentMemoryBytes() }
            out[label] = g
        }
        return out.values.sorted { $0.label < $1.label }
    }

    func drain() {
        let all = state.withLock { s in
            let a = s.ready.values.flatMap { $0 }
            s = State()
            return a
        }
        all.forEach { $0.discard() }
    }
}
