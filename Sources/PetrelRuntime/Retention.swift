import Foundation
import Logging
import Metrics
import PetrelStore
import PetrelSystem
import ServiceLifecycle

/// Bounds what the data directory keeps per call:
/// - function logs older than their group's retention (PutRetentionPolicy), else the
///   daemon's log_retention_days, and audit records older than audit_retention_days
///   (`AuditStore.expire`: the trail's horizon moves forward, and the expiry is itself
///   recorded): at start, then every `interval`;
/// - function logs beyond `logBudget` bytes (`LogStore.evict`: the oldest events of the
///   group that holds the most go first, down to 90% of the budget): every `budgetInterval`.
/// Without it a load test's logs and audit records (`Scripts/bench invoke`'s log store
/// row, per warm invocation) grow the data directory until the disk is full. nil days:
/// kept forever.
public struct RetentionService: Service {
    let logs: LogStore
    let logDays: Int?
    let logBudget: Int64
    let audit: AuditStore
    let auditDays: Int?
    let interval: Duration
    let budgetInterval: Duration
    let logger: Logger
    let budgetFailures: FailureLog
    let storedBytes = Gauge(label: "petrel_log_stored_bytes")
    /// The filesystem of the data directory (nil: not watched).
    let dataDirectory: String?
    let evicted = Counter(label: "petrel_log_events_evicted_total")

    public init(
        logs: LogStore, logDays: Int?, logBudget: Int64, audit: AuditStore, auditDays: Int?, interval: Duration = .seconds(600),
        budgetInterval: Duration = .milliseconds(500), dataDirectory: String? = nil, logger: Logger
    ) {
        self.dataDirectory = dataDirectory
        self.logs = logs
        self.logDays = logDays
        self.logBudget = logBudget
        self.audit = audit
        self.auditDays = auditDays
        self.interval = interval
        self.budgetInterval = budgetInterval
        self.logger = logger
        budgetFailures = FailureLog("keep the function logs within their size budget", logger: logger, every: .seconds(60))
    }

    public func run() async throws {
        var nextExpiry = ContinuousClock.now
        var nextDisk = ContinuousClock.now
        while !Task.isCancelled {
            if ContinuousClock.now >= nextExpiry {
                await expire()
                nextExpiry = .now + interval
            }
            if let dataDirectory, ContinuousClock.now >= nextDisk, let space = try? Sys.filesystemSpace(dataDirectory) {
                // For the disk alert: how full the data directory's filesystem is.
                Gauge(label: "petrel_data_filesystem_bytes", dimensions: [("of", "size")]).record(space.size)
                Gauge(label: "petrel_data_filesystem_bytes", dimensions: [("of", "available")]).record(space.available)
                nextDisk = .now + .seconds(10)
            }
            await keepWithinBudget()
            // Until the next round, or the daemon's shutdown.
            do { try await cancelWhenGracefulShutdown { try await Task.sleep(for: self.budgetInterval) } } catch { return }
        }
    }

    func expire() async {
        let (logs, logDays, audit, auditDays) = (self.logs, self.logDays, self.audit, self.auditDays)
        let now = Int64(Date().timeIntervalSince1970 * 1000)
        let rounds: [(what: String, result: Result<Int, any Error>)] = await blocking {
            [
                ("function logs", Result { try logs.expire(nowMs: now, defaultDays: logDays) }),
                ("audit records", Result { try auditDays.map { try audit.expire(nowMs: now, days: $0) } ?? 0 }),
            ]
        }
        for (what, result) in rounds {
            switch result {
            case .success(let n) where n > 0: logger.info("expired \(what)", metadata: ["records": "\(n)"])
            case .success: break
            case .failure(let error): logger.error("could not expire \(what)", metadata: ["error": "\(error)"])
            }
        }
    }

    func keepWithinBudget() async {
        let (logs, budget) = (self.logs, self.logBudget)
        let result = await blocking {
            Result { try logs.evict(budget: budget, target: budget / 10 * 9) }
        }
        switch result {
        case .success(let r):
            budgetFailures.succeeded()
            storedBytes.record(r.left)
            if r.events > 0 {
                evicted.increment(by: Int64(r.events))
                logger.info(
                    "the function logs reached their size budget: the oldest events went",
                    metadata: ["events": "\(r.events)", "bytes": "\(r.bytes)", "budget.bytes": "\(budget)"])
            }
        case .failure(let error):
            budgetFailures.failed(error)
        }
    }
}
