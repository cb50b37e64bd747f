import Foundation
import GRDB

/// Function logs, grouped like CloudWatch Logs: group `/aws/lambda/NAME`, one
/// stream per instance. Groups belong to an account: the store files them as
/// `ACCOUNT/aws/lambda/NAME` (`stored(account:group:)`), and every read names the
/// account and answers in the names its callers use.
public struct LogStore: Sendable {
    let db: PetrelDatabase
    public init(_ db: PetrelDatabase) { self.db = db }

    public struct Event: Sendable, Equatable {
        public var id: Int64
        public var stream: String
        public var timestamp: Int64
        public var ingested: Int64
        public var message: String
    }

    struct StreamKey: Hashable {
        var group: String
        var stream: String
    }

    public struct Stream: Sendable, Equatable {
        public var name: String
        public var created: Int64
        public var lastEvent: Int64
    }

    public func append(group: String, stream: String, lines: [(timestamp: Int64, message: String)]) throws {
        try append([(group: group, stream: stream, lines: lines)])
    }

    /// Several batches in one transaction, in order. A stream's row is looked up (or
    /// made) once per transaction, however many of its batches the transaction holds.
    public func append(_ batches: [(group: String, stream: String, lines: [(timestamp: Int64, message: String)])]) throws {
        let now = Int64(Date().timeIntervalSince1970 * 1000)
        try db.pool.write { db in
            let streamStmt = try db.cachedStatement(sql: """
                INSERT INTO log_streams (log_group, log_stream, created, last_event) VALUES (?, ?, ?, ?)
                ON CONFLICT (log_group, log_stream) DO UPDATE SET last_event = max(last_event, excluded.last_event)
                RETURNING id
                """)
            let stmt = try db.cachedStatement(sql: "INSERT INTO log_events (stream, timestamp, ingested, message) VALUES (?, ?, ?, ?)")
            /// The streams met in this transaction: their row id, the last timestamp the row
            /// holds and the last one written since.
            var seen: [StreamKey: (id: Int64, stored: Int64, last: Int64)] = [:]
            for b in batches where !b.lines.isEmpty {
                let key = StreamKey(group: b.group, stream: b.stream), last = b.lines[b.lines.count - 1].timestamp
                let id: Int64
                if let known = seen[key] {
                    id = known.id
                    seen[key]!.last = max(known.last, last)
                } else {
                    guard let made = try Int64.fetchOne(streamStmt, arguments: [b.group, b.stream, b.lines[0].timestamp, last]) else {
                        throw StoreError("log stream \(b.stream) could not be stored")
                    }
                    id = made
                    seen[key] = (made, last, last)
                }
                for l in b.lines { try stmt.execute(arguments: [id, l.timestamp, now, l.message]) }
            }
            for s in seen.values where s.last > s.stored {
                try db.execute(sql: "UPDATE log_streams SET last_event = max(last_event, ?) WHERE id = ?", arguments: [s.last, s.id])
            }
        }
    }

    /// The name a group is filed under (what `append` takes).
    public static func stored(account: String, group: String) -> String { account + group }

    /// An account's groups, by name, with their own retention (days; nil: the daemon's).
    public func groups(account: String, prefix: String?) throws -> [(name: String, created: Int64, retentionDays: Int?)] {
        let stored = Self.stored(account: account, group: prefix ?? "")
        return try db.pool.read { db in
            try Row.fetchAll(db, sql: """
                SELECT s.log_group, MIN(s.created) AS c, r.days FROM log_streams s LEFT JOIN log_retention r ON r.log_group = s.log_group
                WHERE s.log_group >= ? GROUP BY s.log_group ORDER BY s.log_group
                """, arguments: [stored])
        }.map { (name: $0["log_group"] as String, created: $0["c"] as Int64, retentionDays: $0["days"] as Int?) }
         .filter { $0.name.hasPrefix(stored) }
         .map { (name: String($0.name.dropFirst(account.count)), created: $0.created, retentionDays: $0.retentionDays) }
    }

    /// PutRetentionPolicy (days) and DeleteRetentionPolicy (nil). False when the group has no
    /// events stored (then nothing changes).
    public func setRetention(account: String, group: String, days: Int?) throws -> Bool {
        let stored = Self.stored(account: account, group: group)
        return try db.pool.write { db in
            guard try Bool.fetchOne(db, sql: "SELECT EXISTS (SELECT 1 FROM log_streams WHERE log_group = ?)", arguments: [stored]) == true else {
                return false
            }
            if let days {
                try db.execute(sql: "INSERT INTO log_retention (log_group, days) VALUES (?, ?) ON CONFLICT (log_group) DO UPDATE SET days = excluded.days",
                               arguments: [stored, days])
            } else {
                try db.execute(sql: "DELETE FROM log_retention WHERE log_group = ?", arguments: [stored])
            }
            return true
        }
    }

    /// Deletes events older than their group's retention (its own, else `defaultDays`; nil:
    /// kept), at most `limit` per transaction so that the log writer never waits long, then
    /// the streams left without events. Returns how many events went.
    @discardableResult
    public func expire(nowMs: Int64, defaultDays: Int?, limit: Int = 5_000) throws -> Int {
        let groups = try db.pool.read { db in
            try Row.fetchAll(db, sql: """
                SELECT g.log_group, r.days FROM (SELECT DISTINCT log_group FROM log_streams) g
                LEFT JOIN log_retention r ON r.log_group = g.log_group
                """).map { (group: $0["log_group"] as String, days: $0["days"] as Int?) }
        }
        var deleted = 0
        for g in groups {
            guard let days = g.days ?? defaultDays else { continue }
            let cutoff = nowMs - Int64(days) * 86_400_000
            deleted += try db.deleteInBatches("""
                DELETE FROM log_events WHERE id IN (
                    SELECT e.id FROM log_streams s JOIN log_events e ON e.stream = s.id
                    WHERE s.log_group = ? AND e.timestamp < ? LIMIT ?)
                """, [g.group, cutoff], limit: limit)
            // A group whose streams all went is no longer listed; its policy stays, for
            // when the function logs again.
            try db.pool.write { db in
                try db.execute(sql: """
                    DELETE FROM log_streams WHERE log_group = ? AND last_event < ?
                        AND NOT EXISTS (SELECT 1 FROM log_events e WHERE e.stream = log_streams.id)
                    """, arguments: [g.group, cutoff])
            }
        }
        return deleted
    }

    public func hasGroup(account: String, _ group: String) throws -> Bool {
        try db.pool.read { db in
            try Bool.fetchOne(db, sql: "SELECT EXISTS (SELECT 1 FROM log_streams WHERE log_group = ?)",
                              arguments: [Self.stored(account: account, group: group)]) ?? false
        }
    }

    public func streams(account: String, group: String, prefix: String?, newestFirst: Bool, limit: Int) throws -> [Stream] {
        try db.pool.read { db in
            try Row.fetchAll(db, sql: "SELECT log_stream, created, last_event FROM log_streams WHERE log_group = ? AND log_stream >= ? ORDER BY \(newestFirst ? "last_event DESC" : "log_stream") LIMIT ?",
                             arguments: [Self.stored(account: account, group: group), prefix ?? "", newestFirst ? Int.max : limit])
        }.map { Stream(name: $0["log_stream"], created: $0["created"], lastEvent: $0["last_event"]) }
         .filter { prefix == nil || $0.name.hasPrefix(prefix!) }
         .prefix(limit).map { $0 }
    }

    /// Events in order, optionally of some streams, in a time window, containing `pattern`, after `afterID`.
    public func events(account: String, group: String, streams: [String]?, start: Int64?, end: Int64?, contains pattern: String?,
                       afterID: Int64?, limit: Int) throws -> [Event] {
        var sql = """
            SELECT e.id, s.log_stream, e.timestamp, e.ingested, e.message
            FROM log_streams s JOIN log_events e ON e.stream = s.id WHERE s.log_group = ?
            """
        var args: [any DatabaseValueConvertible] = [Self.stored(account: account, group: group)]
        if let streams, !streams.isEmpty {
            sql += " AND s.log_stream IN (\(streams.map { _ in "?" }.joined(separator: ",")))"
            args += streams as [any DatabaseValueConvertible]
        }
        if let start { sql += " AND e.timestamp >= ?"; args.append(start) }
        if let end { sql += " AND e.timestamp < ?"; args.append(end) }
        if let pattern, !pattern.isEmpty { sql += " AND instr(e.message, ?) > 0"; args.append(pattern) }
        if let afterID { sql += " AND e.id > ?"; args.append(afterID) }
        sql += " ORDER BY e.id LIMIT ?"
        args.append(limit)
        return try db.pool.read { db in
            try Row.fetchAll(db, sql: sql, arguments: StatementArguments(args))
        }.map { Event(id: $0["id"], stream: $0["log_stream"], timestamp: $0["timestamp"], ingested: $0["ingested"], message: $0["message"]) }
    }
}
