import Logging
import Synchronization

/// Hands items to the store off the request and event-loop threads: producers
/// enqueue, one writer writes whatever has queued up in one transaction, in
/// order. After the doorbell it lets `gather` of items collect: one wake-up and
/// one transaction for many requests instead of one each (on a busy two-core
/// host every wake-up counts). Under load (the last write held `busyItems` or
/// more) it waits `busyGather` instead: SQLite rewrites every page a
/// transaction touches, so bigger transactions write fewer half-filled pages
/// again, and there are fewer transactions to pay for.
///
/// A write that fails (a full disk) loses its items: `lost` counts them (and the
/// caller's `onLoss` hears of each loss, for a metric); the daemon's log says so
/// at the first failure, then at most every 10 s while writes keep failing, and
/// once more when they succeed again, with how many went.
public final class BatchWriter<Item: Sendable>: Sendable {
    let write: @Sendable ([Item]) throws -> Void
    let weight: @Sendable (Item) -> Int
    let onLoss: @Sendable (Int) -> Void
    let what: String
    let gather: Duration
    let busyGather: Duration
    let busyItems: Int
    let logger: Logger
    private let queue = Mutex<[Item]>([])
    private let failures: FailureLog
    /// Rung when the queue goes from empty to not empty.
    private let doorbell: AsyncStream<Void>
    private let ring: AsyncStream<Void>.Continuation

    /// `weight`: how many of `what` an item holds (lines of a batch); `onLoss`: told how many were lost.
    public init(
        _ what: String, gather: Duration = .milliseconds(20), busyGather: Duration = .milliseconds(100), busyItems: Int = 64,
        logger: Logger, weight: @escaping @Sendable (Item) -> Int = { _ in 1 }, onLoss: @escaping @Sendable (Int) -> Void = { _ in },
        write: @escaping @Sendable ([Item]) throws -> Void
    ) {
        self.what = what
        failures = FailureLog("store \(what)", logger: logger)
        self.weight = weight
        self.onLoss = onLoss
        self.gather = gather
        self.busyGather = busyGather
        self.busyItems = busyItems
        self.logger = logger
        self.write = write
        (doorbell, ring) = AsyncStream.makeStream(of: Void.self, bufferingPolicy: .bufferingNewest(1))
    }

    public func append(_ item: Item) {
        let wasEmpty = queue.withLock { q in
            q.append(item)
            return q.count == 1
        }
        if wasEmpty { ring.yield() }
    }

    /// Writes until `finish()`; what was queued before is still written.
    public func run() async {
        var busy = false
        for await _ in doorbell {
            try? await Task.sleep(for: busy ? busyGather : gather)
            busy = drain() >= busyItems
        }
        drain()
    }

    /// Writes what is queued now, on the caller's thread; answers the largest write's count.
    @discardableResult
    public func drain() -> Int {
        var largest = 0
        while true {
            let items = queue.withLock { q -> [Item] in
                defer { q.removeAll(keepingCapacity: true) }
                return q
            }
            guard !items.isEmpty else { return largest }
            largest = max(largest, items.count)
            do {
                try write(items)
                failures.succeeded()
            } catch {
                let n = items.reduce(0) { $0 + weight($1) }
                onLoss(n)
                failures.failed(error, lost: n)
            }
        }
    }

    public func finish() { ring.finish() }
}
