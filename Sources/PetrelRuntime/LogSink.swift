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

    /// Lines that could not be stored (a full disk), whether from a write or from the journal at start.
    static let dropped = Counter(label: "petrel_log_lines_dropped_total")

    init(store: LogStore, journal: LogJournal?, logger: Logger) {
        self.journal = journal
        writer = BatchWriter("log lines", logger: logger, weight: { $0.lines.count }, onLoss: { Self.dropped.increment(by: Int64($0)) }) {
            batches in
            let seq = batches.compactMap(\.seq).max()
            try store.append(batches.map { (group: $0.group, stream: $0.stream, lines: $0.lines) }, journaled: seq)
            if let seq { journal?.applied(through: seq) }
        }
    }

    /// A sink whose batches are journaled in `journalDirectory` (nil: none), after what an
    /// earlier process left there has been stored (see `LogJournal.open`).
    convenience init(store: LogStore, journalDirectory: String?, logger: Logger) throws {
        guard let journalDirectory else {
            self.init(store: store, journal: nil, logger: logger)
            return
        }
        let opened = try LogJournal.open(directory: journalDirectory, store: store)
        if opened.replayed > 0 {
            logger.notice(
                "stored the function output a stopped daemon had journaled but not stored",
                metadata: ["lines": "\(opened.replayed)"])
        }
        if opened.lost > 0 {
            Self.dropped.increment(by: Int64(opened.lost))
            logger.error(
                "cannot store the function output left in the log journal; it is lost",
                metadata: ["lines": "\(opened.lost)", "error": "\(opened.error.map { "\($0)" } ?? "")"])
        }
        self.init(store: store, journal: opened.journal, logger: logger)
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
