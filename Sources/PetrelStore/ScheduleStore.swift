import Foundation
import GRDB
import PetrelCore

/// A schedule: a function invoked asynchronously at every slot of an expression.
public struct ScheduleRecord: Sendable, Equatable {
    public var account: String
    public var name: String
    public var function: String
    /// The version or alias invoked; `$LATEST` when nil.
    public var qualifier: String?
    /// As given (`rate(5 minutes)`, `cron(0 12 * * ? *)`).
    public var expression: String
    /// A constant event instead of EventBridge's scheduled-event document.
    public var input: String?
    public var description: String
    /// Milliseconds of the platform clock; a rate counts from here.
    public var created: Int64
    /// The last slot fired (Unix seconds).
    public var lastSlot: Int64?

    public init(account: String, name: String, function: String, expression: String, input: String?, description: String, created: Int64) {
        self.account = account
        self.name = name
        self.function = function
        self.expression = expression
        self.input = input
        self.description = description
        self.created = created
    }

    public var parsed: ScheduleExpression? { try? ScheduleExpression(parsing: expression) }

    public static func isValidName(_ s: String) -> Bool {
        (1...64).contains(s.utf8.count)
            && s.utf8.allSatisfy { c in
                (c >= 0x30 && c <= 0x39) || (c >= 0x41 && c <= 0x5A) || (c >= 0x61 && c <= 0x7A) || c == 0x2D || c == 0x5F || c == 0x2E
            }
    }
}

/// Schedules, and firing their slots: a slot's event is queued in the same
/// transaction that records the slot as fired, so a slot fires once at most.
public struct ScheduleStore: Sendable {
    let db: PetrelDatabase
    let events: EventStore

    public init(_ db: PetrelDatabase, events: EventStore) {
        self.db = db
        self.events = events
    }

    static func decode(_ row: Row) -> ScheduleRecord {
        var s = ScheduleRecord(
            account: row["account"], name: row["name"], function: row["function"], expression: row["expression"],
            input: row["input"], description: row["description"], created: row["created"])
        s.lastSlot = row["last_slot"]
        s.qualifier = row["qualifier"]
        return s
    }

    /// Stores a new schedule; false when the name is taken in its account.
    public func create(_ s: ScheduleRecord) throws -> Bool {
        try db.pool.write { db in
            try db.execute(
                sql: """
                    INSERT OR IGNORE INTO schedules (account, name, function, qualifier, expression, input, description, created)
                    VALUES (?, ?, ?, ?, ?, ?, ?, ?)
                    """, arguments: [s.account, s.name, s.function, s.qualifier, s.expression, s.input, s.description, s.created])
            return db.changesCount == 1
        }
    }

    /// An account's schedules (every account's when nil), by name.
    public func list(account: String?) throws -> [ScheduleRecord] {
        try db.pool.read { db in
            if let account {
                return try Row.fetchAll(db, sql: "SELECT * FROM schedules WHERE account = ? ORDER BY name", arguments: [account])
            }
            return try Row.fetchAll(db, sql: "SELECT * FROM schedules ORDER BY account, name")
        }.map(Self.decode)
    }

    public func get(account: String, name: String) throws -> ScheduleRecord? {
        try db.pool.read { db in
            try Row.fetchOne(db, sql: "SELECT * FROM schedules WHERE account = ? AND name = ?", arguments: [account, name])
        }
        .map(Self.decode)
    }

    public func delete(account: String, name: String) throws -> Bool {
        try db.pool.write { db in
            try db.execute(sql: "DELETE FROM schedules WHERE account = ? AND name = ?", arguments: [account, name])
            return db.changesCount == 1
        }
    }

    /// Fires `slot` of a schedule: queues `event` and records the slot, unless a slot at
    /// or after it fired already (or the schedule is gone). Returns whether it fired.
    public func fire(_ s: ScheduleRecord, slot: Int64, event: QueuedEvent) async throws -> Bool {
        let keys = events.keys
        return try await events.commits.write { db in
            try db.execute(
                sql: """
                    UPDATE schedules SET last_slot = ?
                    WHERE account = ? AND name = ? AND created = ? AND (last_slot IS NULL OR last_slot < ?)
                    """, arguments: [slot, s.account, s.name, s.created, slot])
            guard db.changesCount == 1 else { return false }
            try EventStore.insert(event, db, keys: keys)
            return true
        }
    }
}
