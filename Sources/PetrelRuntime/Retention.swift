import Foundation
import Logging
import PetrelStore
import ServiceLifecycle

/// Deletes what the data directory keeps per call once it is old enough, at start,
/// then every `interval`:
/// - function logs older than their group's retention (PutRetentionPolicy), else the
///   daemon's log_retention_days;
/// - audit records older than audit_retention_days (`AuditStore.expire`: the trail's
///   horizon moves forward, and the expiry is itself recorded).
/// Without it a load test's logs and audit records (`Scripts/bench invoke`'s log store
/// row, per warm invocation) grow the data directory until the disk is full. nil days:
/// kept forever.
public struct RetentionService: Service {
    let logs: LogStore
    let logDays: Int?
    let audit: AuditStore
    let auditDays: Int?
    let interval: Duration
    let logger: Logger

    public init(logs: LogStore, logDays: Int?, audit: AuditStore, auditDays: Int?, interval: Duration = .seconds(600), logger: Logger) {
        self.logs = logs
        self.logDays = logDays
        self.audit = audit
        self.auditDays = auditDays
        self.interval = interval
        self.logger = logger
    }

    public func run() async throws {
        while !Task.isCancelled {
            let (logs, logDays, audit, auditDays) = (self.logs, self.logDays, self.audit, self.auditDays)
            let now = Int64(Date().timeIntervalSince1970 * 1000)
            let rounds: [(what: String, result: Result<Int, any Error>)] = await blocking {
                [("function logs", Result { try logs.expire(nowMs: now, defaultDays: logDays) }),
                 ("audit records", Result { try auditDays.map { try audit.expire(nowMs: now, days: $0) } ?? 0 })]
            }
            for (what, result) in rounds {
                switch result {
                case .success(let n) where n > 0: logger.info("expired \(what)", metadata: ["records": "\(n)"])
                case .success: break
                case .failure(let error): logger.error("could not expire \(what)", metadata: ["error": "\(error)"])
                }
            }
            // Until the next round, or the daemon's shutdown.
            do { try await cancelWhenGracefulShutdown { try await Task.sleep(for: self.interval) } } catch { return }
        }
    }
}
