import Logging
import Synchronization

/// Says in the daemon's log that something keeps failing without saying it a
/// thousand times: the first failure, then at most one line per `every` while
/// failures go on (with how many there were), and one line when it works again.
public final class FailureLog: Sendable {
    let logger: Logger
    let what: String
    let every: Duration
    private struct State {
        var failing = false
        var since = 0
        var total = 0
        var lastReport: ContinuousClock.Instant?
    }
    private let state = Mutex(State())

    public init(_ what: String, logger: Logger, every: Duration = .seconds(10)) {
        self.what = what
        self.logger = logger
        self.every = every
    }

    /// One more failure, of `count` items (lines, records; 0 when nothing was lost).
    public func failed(_ error: any Error, lost count: Int = 0) {
        let report = state.withLock { s -> (first: Bool, lost: Int, total: Int)? in
            s.total += count
            s.since += count
            let now = ContinuousClock.now
            guard !s.failing || s.lastReport.map({ now - $0 >= every }) ?? true else { return nil }
            defer {
                s.failing = true
                s.lastReport = now
                s.since = 0
            }
            return (!s.failing, s.since, s.total)
        }
        guard let report else { return }
        var metadata: Logger.Metadata = ["error": "\(error)"]
        if report.total > 0 {
            metadata["lost"] = "\(report.lost)"
            metadata["lost.total"] = "\(report.total)"
        }
        logger.error(report.first ? "cannot \(what)" : "still cannot \(what)", metadata: metadata)
    }

    /// It worked: said once after failures.
    public func succeeded() {
        let report = state.withLock { s -> (Int, Int)? in
            guard s.failing else { return nil }
            defer {
                s.failing = false
                s.since = 0
                s.lastReport = nil
            }
            return (s.since, s.total)
        }
        if let (lost, total) = report {
            var metadata: Logger.Metadata = [:]
            if total > 0 {
                metadata["lost"] = "\(lost)"
                metadata["lost.total"] = "\(total)"
            }
            logger.notice("can \(what) again", metadata: metadata)
        }
    }

}
