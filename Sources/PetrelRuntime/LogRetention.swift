import Foundation
import Logging
import PetrelStore
import ServiceLifecycle

/// Deletes function logs older than their group's retention (PutRetentionPolicy), else
/// the daemon's log_retention_days: at start, then every `interval`. Without it a load
/// test's logs (`Scripts/bench invoke`'s log store row, per warm invocation) grow the data
/// directory until the disk is full.
public struct LogRetentionService: Service {
    let logs: LogStore
    let defaultDays: Int?
    let interval: Duration
    let logger: Logger

    public init(logs: LogStore, defaultDays: Int?, interval: Duration = .seconds(600), logger: Logger) {
        self.logs = logs
        self.defaultDays = defaultDays
        self.interval = interval
        self.logger = logger
    }

    public func run() async throws {
        while !Task.isCancelled {
            let (logs, days) = (self.logs, defaultDays)
            let result: Result<Int, any Error> = await blocking {
                Result { try logs.expire(nowMs: Int64(Date().timeIntervalSince1970 * 1000), defaultDays: days) }
            }
            switch result {
            case .success(let n) where n > 0: logger.info("expired function logs", metadata: ["log.events": "\(n)"])
            case .success: break
            case .failure(let error): logger.error("could not expire function logs", metadata: ["error": "\(error)"])
            }
            // Until the next round, or the daemon's shutdown.
            do { try await cancelWhenGracefulShutdown { try await Task.sleep(for: self.interval) } } catch { return }
        }
    }
}
