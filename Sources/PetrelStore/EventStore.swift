import Foundation
import GRDB
import PetrelCore

/// An asynchronous event waiting to run (or to run again).
public struct QueuedEvent: Sendable, Equatable {
    /// The request id: the function sees it, and it stays the same across retries.
    public var id: String
    public var account: String
    public var function: String
    /// The version or alias it was sent to (nil: the unqualified function).
    public var qualifier: String?
    public var payload: Data
    /// When it was accepted, in milliseconds of the platform clock.
    public var created: Int64
    /// When it may run next.
    public var due: Int64
    /// Attempts made so far.
    public var attempts: Int
    /// `invoke`, `schedule`, `destination` or `redrive`.
    public var source: String
    /// The last attempt's response and error type (for the failure record).
    public var lastResponse: Data?
    public var lastError: String?

    public init(id: String, account: String, function: String, payload: Data, created: Int64, source: String) {
        self.id = id
        self.account = account
        self.function = function
        self.payload = payload
        self.created = created
        self.due = created
        self.attempts = 0
        self.source = source
    }
}

/// A record put in the dead-letter queue.
public struct DeadLetter: Sendable, Equatable {
    public var id: Int64
    public var account: String
    public var function: String
    public var requestID: String
    /// `Success`, `RetriesExhausted` or `EventAgeExceeded`.
    public var condition: String
    public var created: Int64
    /// Lambda's invocation record (JSON).
    public var record: Data
    /// The original event, for a redrive.
    public var payload: Data

    public init(account: String, function: String, requestID: String, condition: String, created: Int64, record: Data, payload: Data) {
        id = 0
        self.account = account
        self.function = function
        self.requestID = requestID
        self.condition = condition
        self.created = created
        self.record = record
        self.payload = payload
    }
}

/// The asynchronous queue (SQLite, fsynced before an event is acknowledged),
/// the functions' event-invoke configurations and the dead-letter queue.
/// Payloads and records are sealed under the platform key. An event leaves the
/// queue in the same transaction that hands its record on (to another
/// function's queue or the dead-letter queue), so a record is never lost nor
/// doubled; the function itself may see an event twice after a crash.
public struct EventStore: Sendable {
    let db: PetrelDatabase
    let keys: KeyRing
    public let commits: GroupCommit

    public init(_ db: PetrelDatabase, keys: KeyRing) {
        self.db = db
        self.keys = keys
        commits = GroupCommit(db)
    }

    static func eventContext(_ account: String, _ id: String) -> String { "event:\(account):\(id)" }
    static func letterContext(_ account: String, _ requestID: String) -> String { "dead-letter:\(account):\(requestID)" }

    // MARK: - the queue

    static func insert(_ e: QueuedEvent, _ db: Database, keys: KeyRing) throws {
        try db.execute(
            sql: """
                INSERT INTO events (id, account, function, qualifier, payload, created, due, attempts, source)
                VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)
                """,
            arguments: [
                e.id, e.account, e.function, e.qualifier, try keys.seal(e.payload, context: eventContext(e.account, e.id)),
                e.created, e.due, e.attempts, e.source,
            ])
    }

    /// Queues events durably; returns once they are on disk.
    public func enqueue(_ events: [QueuedEvent]) async throws {
        let keys = self.keys
        try await commits.write { db in
            for e in events { try Self.insert(e, db, keys: keys) }
        }
    }

    func decodeEvent(_ row: Row) throws -> QueuedEvent {
        let account: String = row["account"]
        let id: String = row["id"]
        var e = QueuedEvent(
            id: id, account: account, function: row["function"],
            payload: try keys.unseal(row["payload"], context: Self.eventContext(account, id)),
            created: row["created"], source: row["source"])
        e.qualifier = row["qualifier"]
        e.due = row["due"]
        e.attempts = row["attempts"]
        e.lastError = row["last_error"]
        if let r = row["last_response"] as Data? {
            e.lastResponse = try keys.unseal(r, context: Self.eventContext(account, id) + ":response")
        }
        return e
    }

    /// Events due at `now`, oldest due first, leaving out those in `excluding` (running now).
    public func due(now: Int64, limit: Int, excluding: Set<String>) throws -> [QueuedEvent] {
        let rows = try db.pool.read { db in
            try Row.fetchAll(
                db, sql: "SELECT * FROM events WHERE due <= ? ORDER BY due, created LIMIT ?",
                arguments: [now, limit + excluding.count])
        }
        return try rows.filter { !excluding.contains($0["id"]) }.prefix(limit).map(decodeEvent)
    }

    /// When the next event not in `excluding` comes due.
    public func nextDue(excluding: Set<String>) throws -> Int64? {
        try db.pool.read { db in
            let rows = try Row.fetchAll(db, sql: "SELECT id, due FROM events ORDER BY due LIMIT ?", arguments: [excluding.count + 1])
            return rows.first { !excluding.contains($0["id"]) }.map { $0["due"] }
        }
    }

    public func count() throws -> Int {
        try db.pool.read { db in try Int.fetchOne(db, sql: "SELECT COUNT(*) FROM events") ?? 0 }
    }

    /// How many events are queued, and when the oldest was accepted (milliseconds; nil: none).
    public func depthAndOldest() throws -> (count: Int, oldest: Int64?) {
        try db.pool.read { db in
            let row = try Row.fetchOne(db, sql: "SELECT COUNT(*), MIN(created) FROM events")
            return (row?[0] ?? 0, row?[1])
        }
    }

    /// What happens to a finished event's record.
    public enum Handoff: Sendable {
        case none
        case event(QueuedEvent)
        case deadLetter(DeadLetter)
    }

    /// Removes a finished event and hands its record on, in one transaction.
    public func finish(_ e: QueuedEvent, then handoff: Handoff) async throws {
        let keys = self.keys
        try await commits.write { db in
            try db.execute(sql: "DELETE FROM events WHERE id = ? AND account = ?", arguments: [e.id, e.account])
            guard db.changesCount == 1 else { return } // finished already (a redelivery raced it)
            switch handoff {
            case .none: break
            case .event(let next): try Self.insert(next, db, keys: keys)
            case .deadLetter(let letter): try Self.insertLetter(letter, db, keys: keys)
            }
        }
    }

    /// Records a failed attempt and when the event runs again.
    public func retry(_ e: QueuedEvent, attempts: Int, due: Int64, response: Data, error: String) async throws {
        let sealed = try keys.seal(response, context: Self.eventContext(e.account, e.id) + ":response")
        try await commits.write { db in
            try db.execute(
                sql: "UPDATE events SET attempts = ?, due = ?, last_response = ?, last_error = ? WHERE id = ? AND account = ?",
                arguments: [attempts, due, sealed, error, e.id, e.account])
        }
    }

    /// Lets an event wait (it found no capacity); not an attempt.
    public func postpone(_ e: QueuedEvent, due: Int64) async throws {
        try await commits.write { db in
            try db.execute(sql: "UPDATE events SET due = ? WHERE id = ? AND account = ?", arguments: [due, e.id, e.account])
        }
    }

    /// Drops a deleted function's waiting events; returns how many.
    public func dropEvents(account: String, function: String) throws -> Int {
        try db.pool.write { db in
            try db.execute(sql: "DELETE FROM events WHERE account = ? AND function = ?", arguments: [account, function])
            return db.changesCount
        }
    }

    // MARK: - event-invoke configurations

    // The records' JSON coding (dates in milliseconds), as the function store's.
    static var encoder: JSONEncoder { FunctionStore.encoder }
    static var decoder: JSONDecoder { FunctionStore.decoder }

    /// A qualifier's configuration is stored under `name:qualifier`; the function's own under its name.
    public static func configKey(_ function: String, qualifier: String?) -> String {
        guard let q = qualifier, q != FunctionRecord.latest else { return function }
        return function + ":" + q
    }

    /// Every configuration of a function (its own first, then its qualifiers'), as (qualifier, configuration).
    public func configs(account: String, function: String) throws -> [(qualifier: String?, config: EventInvokeConfig)] {
        try db.pool.read { db in
            try Row.fetchAll(
                db,
                sql:
                    "SELECT function, config FROM event_configs WHERE account = ? AND (function = ? OR function LIKE ? || ':%') ORDER BY function",
                arguments: [account, function, function])
        }.map { row in
            let key: String = row["function"]
            let q = key.firstIndex(of: ":").map { String(key[key.index(after: $0)...]) }
            return (q, try Self.decoder.decode(EventInvokeConfig.self, from: Data((row["config"] as String).utf8)))
        }
    }

    /// Removes every configuration of a function (it was deleted).
    public func dropConfigs(account: String, function: String) throws {
        try db.pool.write { db in
            try db.execute(
                sql: "DELETE FROM event_configs WHERE account = ? AND (function = ? OR function LIKE ? || ':%')",
                arguments: [account, function, function])
        }
    }

    public func config(account: String, function: String) throws -> EventInvokeConfig? {
        try db.pool.read { db in
            try String.fetchOne(
                db, sql: "SELECT config FROM event_configs WHERE account = ? AND function = ?", arguments: [account, function])
        }.map { try Self.decoder.decode(EventInvokeConfig.self, from: Data($0.utf8)) }
    }

    /// Applies `change` to the stored configuration (nil when there is none) in one transaction;
    /// `change` returns what to store (nil: remove it). Returns what was stored.
    @discardableResult
    public func updateConfig(
        account: String, function: String,
        _ change: (EventInvokeConfig?) throws -> EventInvokeConfig?
    ) throws -> EventInvokeConfig? {
        try db.pool.write { db in
            let old = try String.fetchOne(
                db, sql: "SELECT config FROM event_configs WHERE account = ? AND function = ?",
                arguments: [account, function]
            )
            .map { try Self.decoder.decode(EventInvokeConfig.self, from: Data($0.utf8)) }
            let new = try change(old)
            if let new {
                try db.execute(
                    sql: "INSERT OR REPLACE INTO event_configs (account, function, config) VALUES (?, ?, ?)",
                    arguments: [account, function, String(decoding: try Self.encoder.encode(new), as: UTF8.self)])
            } else {
                try db.execute(sql: "DELETE FROM event_configs WHERE account = ? AND function = ?", arguments: [account, function])
            }
            return new
        }
    }

    // MARK: - the dead-letter queue

    /// The built-in dead-letter queue is each account's SQS queue of this name, made when
    /// first used: `petreld dlq` reads and redrives it, and SQS clients can too.
    public static let deadLetterQueueName = Destination.queueName
    /// Its messages stay as long as SQS allows: 14 days.
    static let deadLetterQueueAttributes = ["MessageRetentionPeriod": "1209600"]

    /// A dead letter as a message: the invocation record is the body; the function, the
    /// condition, the request id and the original event (for a redrive) are attributes.
    static func insertLetter(_ l: DeadLetter, _ db: Database, keys: KeyRing, sent: Int64? = nil) throws {
        let queue = try QueueRows.ensureQueue(
            account: l.account, name: deadLetterQueueName, attributes: deadLetterQueueAttributes, now: l.created, db)
        var attributes: [String: QueueRows.Attribute] = [
            "FunctionName": .init(dataType: "String", stringValue: l.function),
            "Condition": .init(dataType: "String", stringValue: l.condition),
            "RequestId": .init(dataType: "String", stringValue: l.requestID),
        ]
        if !l.payload.isEmpty { attributes["RequestPayload"] = .init(dataType: "Binary", binaryValue: l.payload) }
        let at = sent ?? l.created
        try QueueRows.insert(
            QueueRows.Row(
                id: FastIDs.uuid(), body: String(decoding: l.record, as: UTF8.self), attributes: attributes,
                sender: "lambda.amazonaws.com", sent: at, visibleAt: at),
            queue: queue, account: l.account, db, keys: keys)
    }

    static let letterColumns =
        "m.seq, m.id, m.body, m.attributes, m.sent FROM queue_messages m JOIN queues q ON q.id = m.queue WHERE q.account = ? AND q.name = ?"

    func decodeLetter(_ row: Row, account: String) throws -> DeadLetter {
        let (body, attrs) = try QueueRows.open(row, account: account, keys: keys)
        var l = DeadLetter(
            account: account, function: attrs["FunctionName"]?.stringValue ?? "", requestID: attrs["RequestId"]?.stringValue ?? "",
            condition: attrs["Condition"]?.stringValue ?? "", created: row["sent"], record: Data(body.utf8),
            payload: attrs["RequestPayload"]?.binaryValue ?? Data())
        l.id = row["seq"]
        return l
    }

    /// A function's dead letters, oldest first.
    public func deadLetters(account: String, function: String, limit: Int = 1000) throws -> [DeadLetter] {
        let rows = try db.pool.read { db in
            try Row.fetchAll(db, sql: "SELECT \(Self.letterColumns) ORDER BY m.seq", arguments: [account, Self.deadLetterQueueName])
        }
        return Array(try rows.map { try decodeLetter($0, account: account) }.filter { $0.function == function }.prefix(limit))
    }

    public func deadLetter(account: String, id: Int64) throws -> DeadLetter? {
        try db.pool.read { db in
            try Row.fetchOne(db, sql: "SELECT \(Self.letterColumns) AND m.seq = ?", arguments: [account, Self.deadLetterQueueName, id])
        }
        .map { try decodeLetter($0, account: account) }
    }

    /// Queues the original events of `ids` (all of the function's when nil) again, under
    /// new request ids, and removes the letters, in one transaction. Returns the new events.
    public func redrive(account: String, function: String, ids: [Int64]?, now: Int64) throws -> [QueuedEvent] {
        let letters = try deadLetters(account: account, function: function, limit: Int.max).filter { ids?.contains($0.id) ?? true }
        if let ids, let missing = ids.first(where: { id in !letters.contains { $0.id == id } }) {
            throw StoreError("the dead-letter queue of \(function) has no record \(missing)")
        }
        let events = letters.map { l in
            QueuedEvent(id: FastIDs.uuid(), account: account, function: function, payload: l.payload, created: now, source: "redrive")
        }
        let keys = self.keys
        try db.pool.write { db in
            for (l, e) in zip(letters, events) {
                try db.execute(sql: "DELETE FROM queue_messages WHERE seq = ?", arguments: [l.id])
                guard db.changesCount == 1 else { throw StoreError("record \(l.id) was redriven or received meanwhile") }
                try Self.insert(e, db, keys: keys)
            }
        }
        return events
    }

    /// Moves what the dead-letter table of earlier versions holds into the accounts'
    /// `petrel-dlq` queues (once; each letter stays until it is moved, in one transaction).
    /// They count as sent now, so that the queue's retention does not drop them at once.
    @discardableResult
    public func migrateDeadLetters(now: Int64) throws -> Int {
        let keys = self.keys
        return try db.pool.write { db in
            let rows = try Row.fetchAll(db, sql: "SELECT * FROM dead_letters ORDER BY id")
            for row in rows {
                let account: String = row["account"]
                let requestID: String = row["request_id"]
                let context = Self.letterContext(account, requestID)
                let l = DeadLetter(
                    account: account, function: row["function"], requestID: requestID, condition: row["condition"],
                    created: row["created"], record: try keys.unseal(row["record"], context: context),
                    payload: try keys.unseal(row["payload"], context: context + ":payload"))
                try Self.insertLetter(l, db, keys: keys, sent: now)
            }
            try db.execute(sql: "DELETE FROM dead_letters")
            return rows.count
        }
    }
}
