import CoreMetrics
import Metrics
import PetrelSandbox
import Synchronization

/// The runtime's metrics through swift-metrics (the daemon bootstraps a
/// Prometheus backend; elsewhere they go nowhere). The per-invocation handles
/// are made once per function: looking them up costs locks on every call.
final class RuntimeMetrics: Sendable {
    private struct Handles: @unchecked Sendable {
        var invocations: Counter
        var duration: Metrics.Timer
        var initDuration: Metrics.Timer
    }
    private let handles = Mutex<[String: Handles]>([:])

    /// A function's dimensions from its key (`account:name`) or a version's (`account:name:version`).
    static func dims(_ key: String, alias: String?, url: Bool = false) -> [(String, String)] {
        dims(key) + (alias.map { [("alias", $0)] } ?? []) + (url ? [("url", "true")] : [])
    }

    static func dims(_ key: String) -> [(String, String)] {
        let p = key.split(separator: ":", maxSplits: 2, omittingEmptySubsequences: false).map(String.init)
        switch p.count {
        case 1: return [("function", key)]
        case 2: return [("account", p[0]), ("function", p[1])]
        default: return [("account", p[0]), ("function", p[1]), ("version", p[2])]
        }
    }

    private func handles(_ function: String, alias: String?, url: Bool) -> Handles {
        var key = alias.map { function + "@" + $0 } ?? function
        if url { key += "#url" }
        if let h = handles.withLock({ $0[key] }) { return h }
        let dims = Self.dims(function, alias: alias, url: url)
        let h = Handles(
            invocations: Counter(label: "petrel_invocations_total", dimensions: dims),
            duration: Metrics.Timer(label: "petrel_invocation_duration_seconds", dimensions: dims, preferredDisplayUnit: .seconds),
            initDuration: Metrics.Timer(label: "petrel_init_duration_seconds", dimensions: dims, preferredDisplayUnit: .seconds))
        handles.withLock { $0[key] = h }
        return h
    }

    func invoked(_ function: String, alias: String?, url: Bool = false, result: InvocationResult) {
        let h = handles(function, alias: alias, url: url)
        h.invocations.increment()
        if let type = result.errorType {
            Counter(label: "petrel_errors_total", dimensions: Self.dims(function, alias: alias, url: url) + [("type", type)]).increment()
        }
        h.duration.recordNanoseconds(Int64(result.durationMs * 1e6))
        if let initMs = result.initDurationMs { h.initDuration.recordNanoseconds(Int64(initMs * 1e6)) }
    }

    func throttled(_ function: String, reason: String) {
        Counter(label: "petrel_throttles_total", dimensions: Self.dims(function) + [("reason", reason)]).increment()
    }

    func coldStart(_ function: String, alias: String? = nil, url: Bool = false, reason: ColdStartReason, start: StartPath) {
        Counter(
            label: "petrel_cold_starts_total",
            dimensions: Self.dims(function, alias: alias, url: url) + [("reason", reason.rawValue), ("start", start.label)]
        )
        .increment()
    }

    /// An asynchronous event's step: succeeded, retried, failed, expired, throttled or dropped.
    func asyncEvent(_ function: String, outcome: String) {
        Counter(label: "petrel_async_events_total", dimensions: Self.dims(function) + [("outcome", outcome)]).increment()
    }

    func evicted(_ function: String) {
        Counter(label: "petrel_evictions_total", dimensions: Self.dims(function)).increment()
    }

    private let concurrencyGauge = Gauge(label: "petrel_concurrent_executions")

    func concurrency(_ n: Int) {
        concurrencyGauge.record(n)
    }

    func instances(_ s: Dispatcher.Snapshot) {
        Gauge(label: "petrel_instances", dimensions: [("state", "idle")]).record(s.idle)
        Gauge(label: "petrel_instances", dimensions: [("state", "live")]).record(s.live)
        Gauge(label: "petrel_instance_memory_megabytes", dimensions: [("of", "in_use")]).record(s.memoryInUseMB)
        Gauge(label: "petrel_instance_memory_megabytes", dimensions: [("of", "budget")]).record(s.memoryBudgetMB)
    }

    func prepared(_ n: Int) {
        Gauge(label: "petrel_instances", dimensions: [("state", "prepared")]).record(n)
    }

    private let stemLabels = Mutex<Set<String>>([])

    /// Pre-started runtimes ready and the memory their cgroups hold, per runtime (a runtime
    /// whose stems are gone reads 0).
    func prestarted(_ gauges: [StemGauge]) {
        let seen = stemLabels.withLock { s in
            s.formUnion(gauges.map(\.label))
            return s
        }
        for label in seen {
            let g = gauges.first { $0.label == label }
            Gauge(label: "petrel_prestarted_runtimes", dimensions: [("runtime", label)]).record(g?.ready ?? 0)
            Gauge(label: "petrel_prestarted_memory_bytes", dimensions: [("runtime", label)]).record(g?.memoryBytes ?? 0)
        }
    }
}
