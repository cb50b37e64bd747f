import Foundation
import GRDB

/// Function logs, grouped like CloudWatch Logs: group `/aws/lambda/NAME`, one
/// stream per instance.
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

    public struct Stream: Sendable, Equatable {
        public var name: String
        public var created: Int64
        public var lastEvent: Int64
    }

    public func append(group: String, stream: String, lines: [(timestamp: Int64, message: String)]) throws {
        try append([(group: group, stream: stream, lines: lines)])
    }

    /// Several batches in one transaction, in order.
    public func append(_ batches: [(group: String, stream: String, lines: [(timestamp: Int64, message: String)])]) throws {
        let now = Int64(Date().timeIntervalSince1970 * 1000)
        try db.pool.write { db in
            let streamStmt = try db.cachedStatement(sql: """
                INSERT INTO log_streams (log_group, log_stream, created, last_event) VALUES (?, ?, ?, ?)
                ON CONFLICT (log_group, log_stream) DO UPDATE SET last_event = excluded.last_event
                """)
            let stmt = try db.cachedStatement(sql: "INSERT INTO log_events (log_group, log_stream, timestamp, ingested, message) VALUES (?, ?, ?, ?, ?)")
            for b in batches where !b.lines.isEmpty {
                try streamStmt.execute(arguments: [b.group, b.stream, b.lines[0].timestamp, b.lines[b.lines.count - 1].timestamp])
                for l in b.lines { try stmt.execute(arguments: [b.group, b.stream, l.timestamp, now, l.message]) }
            }
        }
    }

    public func groups(prefix: String?) throws -> [(name: String, created: Int64)] {
        try db.pool.read { db in
            try Row.fetchAll(db, sql: "SELECT log_group, MIN(created) AS c FROM log_streams WHERE log_group >= ? GROUP BY log_group ORDER BY log_group",
                             arguments: [prefix ?? ""])
        }.map { (name: $0["log_group"] as String, created: $0["c"] as Int64) }
         .filter { prefix == nil || $0.name.hasPrefix(prefix!) }
    }

    public func streams(group: String, prefix: String?, newestFirst: Bool, limit: Int) throws -> [Stream] {
        try db.pool.read { db in
            try Row.fetchAll(db, sql: "SELECT log_stream, created, last_event FROM log_streams WHERE log_group = ? AND log_stream >= ? ORDER BY \(newestFirst ? "last_event DESC" : "log_stream") LIMIT ?",
                             arguments: [group, prefix ?? "", newestFirst ? Int.max : limit])
        }.map { Stream(name: $0["log_stream"], created: $0["created"], lastEvent: $0["last_event"]) }
         .filter { prefix == nil || $0.name.hasPrefix(prefix!) }
         .prefix(limit).map { $0 }
    }

    /// Events in order, optionally of some streams, in a time window, containing `pattern`, after `afterID`.
    public func events(group: String, streams: [String]?, start: Int64?, end: Int64?, contains pattern: String?,
                       afterID: Int64?, limit: Int) throws -> [Event] {
        var sql = "SELECT id, log_stream, timestamp, ingested, message FROM log_events WHERE log_group = ?"
        var args: [any DatabaseValueConvertible] = [group]
        if let streams, !streams.isEmpty {
            sql += " AND log_stream IN (\(streams.map { _ in "?" }.joined(separator: ",")))"
            args += streams as [any DatabaseValueConvertible]
        }
        if let start { sql += " AND timestamp >= ?"; args.append(start) }
        if let end { sql += " AND timestamp < ?"; args.append(end) }
        if let pattern, !pattern.isEmpty { sql += " AND instr(message, ?) > 0"; args.append(pattern) }
        if let afterID { sql += " AND id > ?"; args.append(afterID) }
        sql += " ORDER BY id LIMIT ?"
        args.append(limit)
        return try db.pool.read { db in
            try Row.fetchAll(db, sql: sql, arguments: StatementArguments(args))
        }.map { Event(id: $0["id"], stream: $0["log_stream"], timestamp: $0["timestamp"], ingested: $0["ingested"], message: $0["message"]) }
    }

    public func deleteGroup(_ group: String) throws {
        try db.pool.write { db in
            try db.execute(sql: "DELETE FROM log_events WHERE log_group = ?", arguments: [group])
            try db.execute(sql: "DELETE FROM log_streams WHERE log_group = ?", arguments: [group])
        }
    }
}
