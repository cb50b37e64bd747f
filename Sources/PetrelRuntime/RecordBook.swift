import Foundation
import PetrelCore

/// The newest record the dispatcher has seen of each version (`instanceKey`), by when it
/// was written. An invocation that read a version's record just before an update reaches
/// the dispatcher after it: it runs the newer record, instead of starting the old code
/// again and retiring the new instances as stale.
struct RecordBook {
    private var current: [String: FunctionRecord] = [:]

    /// What noting a record found.
    enum Change: Equatable {
        /// It is the record known already, or older than it.
        case none
        /// The first record seen of its version.
        case first
        /// It replaces an older revision (whose idle instances must go).
        case newer
    }

    /// Notes `f` (`key`: its `instanceKey`); answers the record to run and what changed.
    mutating func note(_ f: FunctionRecord, key k: String) -> (run: FunctionRecord, change: Change) {
        if let known = current[k], known.revisionId == f.revisionId || known.lastModified > f.lastModified { return (known, .none) }
        let change: Change = current[k] == nil ? .first : .newer
        current[k] = f
        return (f, change)
    }

    /// Sets a version's record after a change (nil: it was deleted).
    mutating func set(_ instanceKey: String, _ record: FunctionRecord?) { current[instanceKey] = record }

    /// Whether `f` is its version's newest record (an instance of it may go back to the pool).
    func isCurrent(_ f: FunctionRecord, key: String) -> Bool { current[key]?.revisionId == f.revisionId }
}
