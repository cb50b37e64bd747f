import Logging
import PetrelStore

/// Hands log batches to the store off the event loops: instances enqueue, one
/// writer (part of the runtime's Service) writes them in order.
public final class LogSink: Sendable {
    struct Batch: Sendable {
        var group: String
        var stream: String
        var lines: [(timestamp: Int64, message: String)]
    }
    let store: LogStore
    let logger: Logger
    private let stream: AsyncStream<Batch>
    private let continuation: AsyncStream<Batch>.Continuation

    public init(store: LogStore, logger: Logger) {
        self.store = store
        self.logger = logger
        (stream, continuation) = AsyncStream.makeStream(of: Batch.self)
    }

    func write(group: String, stream: String, lines: [(timestamp: Int64, message: String)]) {
        continuation.yield(Batch(group: group, stream: stream, lines: lines))
    }

    /// Writes batches until `finish()`; what was queued before is still written.
    func run() async {
        for await b in stream {
            do {
                try store.append(group: b.group, stream: b.stream, lines: b.lines)
            } catch {
                logger.error("cannot store log lines", metadata: ["log.group": "\(b.group)", "error": "\(error)"])
            }
        }
    }

    func finish() { continuation.finish() }
}
