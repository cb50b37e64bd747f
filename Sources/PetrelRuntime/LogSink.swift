import Logging
import PetrelStore
import Synchronization

/// Hands log batches to the store off the event loops: instances enqueue, one
/// writer (part of the runtime's Service) writes whatever has queued up in one
/// transaction, in order.
public final class LogSink: Sendable {
    struct Batch: Sendable {
        var group: String
        var stream: String
        var lines: [(timestamp: Int64, message: String)]
    }
    let store: LogStore
    let logger: Logger
    private let queue = Mutex<[Batch]>([])
    /// Rung when the queue goes from empty to not empty.
    private let doorbell: AsyncStream<Void>
    private let ring: AsyncStream<Void>.Continuation

    public init(store: LogStore, logger: Logger) {
        self.store = store
        self.logger = logger
        (doorbell, ring) = AsyncStream.makeStream(of: Void.self, bufferingPolicy: .bufferingNewest(1))
    }

    func write(group: String, stream: String, lines: [(timestamp: Int64, message: String)]) {
        let wasEmpty = queue.withLock { q in
            q.append(Batch(group: group, stream: stream, lines: lines))
            return q.count == 1
        }
        if wasEmpty { ring.yield() }
    }

    /// Writes until `finish()`; what was queued before is still written. After the
    /// doorbell it lets 20 ms of lines gather: one wake-up and one transaction for many
    /// invocations, instead of one each (on a busy two-core host every wake-up counts).
    func run() async {
        for await _ in doorbell {
            try? await Task.sleep(for: .milliseconds(20))
            drain()
        }
        drain()
    }

    private func drain() {
        while true {
            let batches = queue.withLock { q -> [Batch] in
                defer { q.removeAll(keepingCapacity: true) }
                return q
            }
            guard !batches.isEmpty else { return }
            do {
                try store.append(batches.map { (group: $0.group, stream: $0.stream, lines: $0.lines) })
            } catch {
                logger.error("cannot store log lines", metadata: ["error": "\(error)"])
            }
        }
    }

    func finish() { ring.finish() }
}
