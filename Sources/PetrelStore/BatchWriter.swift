import Logging
import Synchronization

/// Hands items to the store off the request and event-loop threads: producers
/// enqueue, one writer writes whatever has queued up in one transaction, in
/// order. After the doorbell it lets `gather` of items collect: one wake-up and
/// one transaction for many requests instead of one each (on a busy two-core
/// host every wake-up counts).
public final class BatchWriter<Item: Sendable>: Sendable {
    let write: @Sendable ([Item]) throws -> Void
    let what: String
    let gather: Duration
    let logger: Logger
    private let queue = Mutex<[Item]>([])
    /// Rung when the queue goes from empty to not empty.
    private let doorbell: AsyncStream<Void>
    private let ring: AsyncStream<Void>.Continuation

    public init(_ what: String, gather: Duration = .milliseconds(20), logger: Logger, write: @escaping @Sendable ([Item]) throws -> Void) {
        self.what = what
        self.gather = gather
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
        for await _ in doorbell {
            try? await Task.sleep(for: gather)
            drain()
        }
        drain()
    }

    /// Writes what is queued now, on the caller's thread.
    public func drain() {
        while true {
            let items = queue.withLock { q -> [Item] in
                defer { q.removeAll(keepingCapacity: true) }
                return q
            }
            guard !items.isEmpty else { return }
            do { try write(items) } catch {
                logger.error("cannot store \(what)", metadata: ["error": "\(error)"])
            }
        }
    }

    public func finish() { ring.finish() }
}
