import Dispatch
import GRDB
import Synchronization

/// Durable writes that many callers wait on: whatever has queued while the
/// previous transaction committed goes into the next one (group commit), so a
/// burst of event acceptances costs a few fsyncs, not one each. Each write runs
/// in its own savepoint: one that fails is undone alone and its caller gets
/// the error; the rest commit. A caller resumes only after its transaction
/// is on disk (`synchronous = FULL` for these transactions).
public final class GroupCommit: Sendable {
    let pool: DatabasePool

    private struct Entry: Sendable {
        var body: @Sendable (Database) throws -> Void
        var done: @Sendable ((any Error)?) -> Void
    }

    private struct State {
        var queue: [Entry] = []
        var running = false
    }
    private let state = Mutex(State())

    public init(_ db: PetrelDatabase) {
        pool = db.pool
    }

    /// Runs `op` in the next transaction and returns its result once that has committed.
    public func write<T: Sendable>(_ op: @escaping @Sendable (Database) throws -> T) async throws -> T {
        let box = ResultBox<T>()
        try await withCheckedThrowingContinuation { (cont: CheckedContinuation<Void, any Error>) in
            let entry = Entry(
                body: { db in
                    let value = try op(db)
                    box.value.withLock { $0 = value }
                },
                done: { error in
                    if let error { cont.resume(throwing: error) } else { cont.resume() }
                })
            let start = state.withLock { s in
                s.queue.append(entry)
                defer { s.running = true }
                return !s.running
            }
            if start { DispatchQueue.global().async { self.commitLoop() } }
        }
        return box.value.withLock { $0! }
    }

    private func commitLoop() {
        while true {
            let batch = state.withLock { s -> [Entry] in
                if s.queue.isEmpty { s.running = false }
                defer { s.queue.removeAll(keepingCapacity: true) }
                return s.queue
            }
            guard !batch.isEmpty else { return }
            var errors = [(any Error)?](repeating: nil, count: batch.count)
            do {
                // FULL for these commits only: the WAL is fsynced before a caller hears "stored".
                // (Every other writer keeps NORMAL: a fsync on each log or audit batch would
                // stall a cooperative thread, and those survive a crash of the daemon anyway.)
                try pool.writeWithoutTransaction { db in
                    try db.execute(sql: "PRAGMA synchronous = FULL")
                    defer { try? db.execute(sql: "PRAGMA synchronous = NORMAL") }
                    try db.inTransaction {
                        for (i, e) in batch.enumerated() {
                            do {
                                try db.inSavepoint {
                                    try e.body(db)
                                    return .commit
                                }
                            } catch {
                                errors[i] = error
                            }
                        }
                        return .commit
                    }
                }
            } catch {
                // The transaction itself failed (disk full, I/O): nothing of the batch is stored.
                for i in errors.indices where errors[i] == nil { errors[i] = error }
            }
            for (e, error) in zip(batch, errors) { e.done(error) }
        }
    }
}

final class ResultBox<T: Sendable>: Sendable {
    let value = Mutex<T?>(nil)
}
