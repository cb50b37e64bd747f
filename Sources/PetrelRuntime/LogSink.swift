import Logging
import PetrelStore

/// Hands instances' log lines to the store off the event loops (one writer,
/// part of the runtime's Service; see `BatchWriter`).
public final class LogSink: Sendable {
    struct Batch: Sendable {
        var group: String
        var stream: String
        var lines: [(timestamp: Int64, message: String)]
    }
    let writer: BatchWriter<Batch>

    public init(store: LogStore, logger: Logger) {
        writer = BatchWriter("log lines", logger: logger) { batches in
            try store.append(batches.map { (group: $0.group, stream: $0.stream, lines: $0.lines) })
        }
    }

    func write(group: String, stream: String, lines: [(timestamp: Int64, message: String)]) {
        writer.append(Batch(group: group, stream: stream, lines: lines))
    }

    func run() async { await writer.run() }
    func finish() { writer.finish() }
}
