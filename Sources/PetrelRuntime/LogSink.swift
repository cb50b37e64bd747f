import Logging
import Metrics
import PetrelStore

/// Hands instances' log lines to the store off the event loops (one writer,
/// part of the runtime's Service; see `BatchWriter`). Each batch is journaled
/// first (`LogJournal`), on the caller's thread, so that what an answered
/// invocation printed survives a `kill -9` of the daemon; the store's
/// transaction then records the batches it took as applied.
public final class LogSink: Sendable {
    struct Batch: Sendable {
        var group: String
        var stream: String
        var lines: [LogChunk.Line]
        var seq: UInt64?
    }
    let writer: BatchWriter<Batch>
    let journal: LogJournal?

    public init(store: LogStore, journal: LogJournal?, logger: Logger) {
        self.journal = journal
        let dropped = Counter(label: "petrel_log_lines_dropped_total")
        writer = BatchWriter("log lines", logger: logger, weight: { $0.lines.count }, onLoss: { dropped.increment(by: Int64($0)) }) {
            batches in
            let seq = batches.compactMap(\.seq).max()
            try store.append(batches.map { (group: $0.group, stream: $0.stream, lines: $0.lines) }, journaled: seq)
            if let seq { journal?.applied(through: seq) }
        }
    }

    /// Journals the batch and queues it for the store; returns its journal sequence number
    /// (nil when it could not be journaled, or there is no journal).
    @discardableResult
    func write(group: String, stream: String, lines: [LogChunk.Line]) -> UInt64? {
        guard let journal else {
            writer.append(Batch(group: group, stream: stream, lines: lines, seq: nil))
            return nil
        }
        var seq: UInt64?
        journal.append(group: group, stream: stream, lines: lines) { s in
            seq = s
            writer.append(Batch(group: group, stream: stream, lines: lines, seq: s))
        }
        if seq == nil { Self.journalFailures.increment() }
        return seq
    }

    static let journalFailures = Counter(label: "petrel_log_journal_failures_total")

    /// Makes the batches up to `seq` durable on disk, not only against the daemon's death.
    func sync(through seq: UInt64) throws { try journal?.sync(through: seq) }

    func run() async { await writer.run() }
    func finish() { writer.finish() }
}
