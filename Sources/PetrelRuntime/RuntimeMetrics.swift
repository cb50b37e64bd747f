import CoreMetrics
import Metrics

/// The runtime's metrics through swift-metrics (the daemon bootstraps a
/// Prometheus backend; elsewhere they go nowhere).
struct RuntimeMetrics: Sendable {
    func invoked(_ function: String, result: InvocationResult) {
        let dims = [("function", function)]
        Counter(label: "petrel_invocations_total", dimensions: dims).increment()
        if let type = result.errorType {
            Counter(label: "petrel_errors_total", dimensions: dims + [("type", type)]).increment()
        }
        Metrics.Timer(label: "petrel_invocation_duration_seconds", dimensions: dims, preferredDisplayUnit: .seconds)
            .recordNanoseconds(Int64(result.durationMs * 1e6))
        if let initMs = result.initDurationMs {
            Metrics.Timer(label: "petrel_init_duration_seconds", dimensions: dims, preferredDisplayUnit: .seconds)
                .recordNanoseconds(Int64(initMs * 1e6))
        }
    }

    func throttled(_ function: String, reason: String) {
        Counter(label: "petrel_throttles_total", dimensions: [("function", function), ("reason", reason)]).increment()
    }

    func coldStart(_ function: String, reason: ColdStartReason) {
        Counter(label: "petrel_cold_starts_total", dimensions: [("function", function), ("reason", reason.rawValue)]).increment()
    }

    func evicted(_ function: String) {
        Counter(label: "petrel_evictions_total", dimensions: [("function", function)]).increment()
    }

    func concurrency(_ n: Int) {
        Gauge(label: "petrel_concurrent_executions").record(n)
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
}
