import Foundation
import GRDB

/// Function logs, grouped like CloudWatch Logs: group `/aws/lambda/NAME`, one
/// stream per instance. Groups belong to an account: the store files them as
/// `ACCOUNT/aws/lambda/NAME` (`stored(account:group:)`), and every read names the
/// account and answers in the names its callers use.
///
/// Lines are stored in chunks (`LogChunk`): the lines of one batch, compressed
/// into one row whose events have the ids `first_id ..< first_id + count`. Each
/// stream row counts the bytes its chunks take (triggers keep it), which is what
/// the size budget (`evict(toBytes:)`) weighs.
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
        public var storedBytes: Int64

        public init(name: String, created: Int64, lastEvent: Int64, storedBytes: Int64 = 0) {
            self.name = name
            self.created = created
            self.lastEvent = lastEvent
            self.storedBytes = storedBytes
        }

        /// Equal in what a caller sees of the stream (its name and times).
        public static func == (a: Stream, b: Stream) -> Bool {
            a.name == b.name && a.created == b.created && a.lastEvent == b.lastEvent
        }
    }

    /// What a stream row is charged per chunk beyond its blob: the row's other columns and its index entries.
    static let chunkOverhead = 64
    /// The most lines in one chunk (a batch with more is split).
    static let chunkLines = 4096

    public typealias Batch = (group: String, stream: String, lines: [LogChunk.Line])

    public func append(group: String, stream: String, lines: [(timestamp: Int64, message: String)]) throws {
        try append([(group: group, stream: stream, lines: lines)])
    }

    /// `append` with the lines as (timestamp, message) pairs.
    public func append(_ batches: [(group: String, stream: String, lines: [(timestamp: Int64, message: String)])]) throws {
        try append(batches.map { (group: $0.group, stream: $0.stream, lines: $0.lines.map { LogChunk.Line($0.timestamp, $0.message) }) })
    }

    /// Several batches in one transaction, in order; `journaled` is the highest journal
    /// sequence number among them (recorded as applied in the same transaction). A stream's
    /// row is looked up (or made) once per transaction, however many of its batches it holds,
    /// and consecutive batches of one stream share a chunk.
    public func append(_ batches: [Batch], journaled: UInt64? = nil) throws {
        let now = Int64(Date().timeIntervalSince1970 * 1000)
        try db.pool.write { db in
            let streamStmt = try db.cachedStatement(
                sql: """
                    INSERT INTO log_streams (log_group, log_stream, created, last_event) VALUES (?, ?, ?, ?)
                    ON CONFLICT (log_group, log_stream) DO UPDATE SET last_event = max(last_event, excluded.last_event)
                    RETURNING id
                    """)
            let chunkStmt = try db.cachedStatement(
                sql: """
                    INSERT INTO log_chunks (first_id, stream, count, base_ts, min_ts, max_ts, ingested, text_bytes, data)
                    VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)
                    """)
            var nextID = try Int64.fetchOne(db, sql: "SELECT next_event_id FROM log_meta WHERE id = 1") ?? 1
            /// The streams met in this transaction: their row id, the last timestamp the row
            /// holds and the last one written since.
            var seen: [StreamKey: (id: Int64, stored: Int64, last: Int64)] = [:]
            var pending: (key: StreamKey, lines: [LogChunk.Line])?
            func flush() throws {
                guard let (key, lines) = pending, let stream = seen[key]?.id else { return }
                pending = nil
                var start = 0
                while start < lines.count {
                    let part = lines[start..<min(lines.count, start + Self.chunkLines)]
                    let base = part.first!.timestamp
                    var lo = base
                    var hi = base
                    var text = 0
                    for l in part {
                        lo = min(lo, l.timestamp)
                        hi = max(hi, l.timestamp)
                        text += l.message.utf8.count
                    }
                    try chunkStmt.execute(arguments: [
                        nextID, stream, part.count, base, lo, hi, now, text,
                        Data(LogChunk.encode(part, base: base)),
                    ])
                    nextID += Int64(part.count)
                    start += part.count
                }
            }
            for b in batches where !b.lines.isEmpty {
                let key = StreamKey(group: b.group, stream: b.stream)
                let last = b.lines.reduce(Int64.min) { max($0, $1.timestamp) }
                if let known = seen[key] {
                    seen[key]!.last = max(known.last, last)
                } else {
                    guard let made = try Int64.fetchOne(streamStmt, arguments: [b.group, b.stream, b.lines[0].timestamp, last]) else {
                        throw StoreError("log stream \(b.stream) could not be stored")
                    }
                    seen[key] = (made, last, last)
                }
                if pending?.key == key {
                    pending!.lines += b.lines
                } else {
                    try flush()
                    pending = (key, b.lines)
                }
            }
            try flush()
            for s in seen.values where s.last > s.stored {
                try db.execute(sql: "UPDATE log_streams SET last_event = max(last_event, ?) WHERE id = ?", arguments: [s.last, s.id])
            }
            try db.execute(
                sql: "UPDATE log_meta SET next_event_id = ?, journal_applied = max(journal_applied, ?) WHERE id = 1",
                arguments: [nextID, Int64(journaled ?? 0)])
        }
    }

    /// The highest journal sequence number whose batch the store holds.
    public func journalApplied() throws -> UInt64 {
        UInt64(try db.pool.read { db in try Int64.fetchOne(db, sql: "SELECT journal_applied FROM log_meta WHERE id = 1") } ?? 0)
    }

    /// The name a group is filed under (what `append` takes).
    public static func stored(account: String, group: String) -> String { account + group }

    /// An account's groups, by name, with their own retention (days; nil: the daemon's) and the bytes they hold.
    public func groups(account: String, prefix: String?) throws -> [(name: String, created: Int64, retentionDays: Int?, storedBytes: Int64)]
    {
        let stored = Self.stored(account: account, group: prefix ?? "")
        return try db.pool.read { db in
            try Row.fetchAll(
                db,
                sql: """
                    SELECT s.log_group, MIN(s.created) AS c, r.days, SUM(s.bytes) AS b FROM log_streams s
                    LEFT JOIN log_retention r ON r.log_group = s.log_group
                    WHERE s.log_group >= ? GROUP BY s.log_group ORDER BY s.log_group
                    """, arguments: [stored])
        }.map {
            (name: $0["log_group"] as String, created: $0["c"] as Int64, retentionDays: $0["days"] as Int?, storedBytes: $0["b"] as Int64)
        }
        .filter { $0.name.hasPrefix(stored) }
        .map {
            (
                name: String($0.name.dropFirst(account.count)), created: $0.created, retentionDays: $0.retentionDays,
                storedBytes: $0.storedBytes
            )
        }
    }

    /// PutRetentionPolicy (days) and DeleteRetentionPolicy (nil). False when the group has no
    /// events stored (then nothing changes).
    public func setRetention(account: String, group: String, days: Int?) throws -> Bool {
        let stored = Self.stored(account: account, group: group)
        return try db.pool.write { db in
            guard try Bool.fetchOne(db, sql: "SELECT EXISTS (SELECT 1 FROM log_streams WHERE log_group = ?)", arguments: [stored]) == true
            else {
                return false
            }
            if let days {
                try db.execute(
                    sql:
                        "INSERT INTO log_retention (log_group, days) VALUES (?, ?) ON CONFLICT (log_group) DO UPDATE SET days = excluded.days",
                    arguments: [stored, days])
            } else {
                try db.execute(sql: "DELETE FROM log_retention WHERE log_group = ?", arguments: [stored])
            }
            return true
        }
    }

    /// The stream ids of a stored group.
    static func streamIDs(_ db: Database, group: String) throws -> [Int64] {
        try Int64.fetchAll(db, sql: "SELECT id FROM log_streams WHERE log_group = ?", arguments: [group])
    }

    static func list(_ ids: [Int64]) -> String { ids.map(String.init).joined(separator: ",") }

    /// Deletes events older than their group's retention (its own, else `defaultDays`; nil:
    /// kept), at most `limit` chunks per transaction so that the log writer never waits long,
    /// then the streams left without events. A chunk with lines on both sides of the cutoff
    /// keeps its newer lines, under their ids. Returns how many events went.
    @discardableResult
    public func expire(nowMs: Int64, defaultDays: Int?, limit: Int = 5_000) throws -> Int {
        let groups = try db.pool.read { db in
            try Row.fetchAll(
                db,
                sql: """
                    SELECT g.log_group, r.days FROM (SELECT DISTINCT log_group FROM log_streams) g
                    LEFT JOIN log_retention r ON r.log_group = g.log_group
                    """
            ).map { (group: $0["log_group"] as String, days: $0["days"] as Int?) }
        }
        var deleted = 0
        for g in groups {
            guard let days = g.days ?? defaultDays else { continue }
            let cutoff = nowMs - Int64(days) * 86_400_000
            // Whole chunks first, in bounded transactions.
            while true {
                let n = try db.pool.write { db -> (chunks: Int, events: Int) in
                    let ids = Self.list(try Self.streamIDs(db, group: g.group))
                    let rows = try Row.fetchAll(
                        db, sql: "SELECT first_id, count FROM log_chunks WHERE stream IN (\(ids)) AND max_ts < ? LIMIT ?",
                        arguments: [cutoff, limit])
                    for r in rows { try db.execute(sql: "DELETE FROM log_chunks WHERE first_id = ?", arguments: [r["first_id"] as Int64]) }
                    return (rows.count, rows.reduce(0) { $0 + ($1["count"] as Int) })
                }
                deleted += n.events
                if n.chunks < limit { break }
            }
            // Then the chunks that straddle the cutoff: their newer lines stay, as chunks of their own.
            deleted += try db.pool.write { db -> Int in
                let ids = Self.list(try Self.streamIDs(db, group: g.group))
                var gone = 0
                for r in try Row.fetchAll(db, sql: "SELECT * FROM log_chunks WHERE stream IN (\(ids)) AND min_ts < ?", arguments: [cutoff])
                {
                    let lines = try LogChunk.decode([UInt8](r["data"] as Data), base: r["base_ts"])
                    try db.execute(sql: "DELETE FROM log_chunks WHERE first_id = ?", arguments: [r["first_id"] as Int64])
                    gone += lines.count
                    var run: (first: Int64, lines: [LogChunk.Line])?
                    func keep() throws {
                        guard let (first, kept) = run else { return }
                        run = nil
                        gone -= kept.count
                        try Self.insertChunk(db, first: first, stream: r["stream"], lines: kept, ingested: r["ingested"])
                    }
                    for (k, line) in lines.enumerated() {
                        if line.timestamp >= cutoff {
                            if run == nil { run = (r["first_id"] as Int64 + Int64(k), []) }
                            run!.lines.append(line)
                        } else {
                            try keep()
                        }
                    }
                    try keep()
                }
                return gone
            }
            // A group whose streams all went is no longer listed; its policy stays, for
            // when the function logs again.
            try db.pool.write { db in
                try db.execute(
                    sql: """
                        DELETE FROM log_streams WHERE log_group = ? AND last_event < ?
                            AND NOT EXISTS (SELECT 1 FROM log_chunks c WHERE c.stream = log_streams.id)
                        """, arguments: [g.group, cutoff])
            }
        }
        return deleted
    }

    static func insertChunk(_ db: Database, first: Int64, stream: Int64, lines: [LogChunk.Line], ingested: Int64) throws {
        let base = lines[0].timestamp
        try db.execute(
            sql: """
                INSERT INTO log_chunks (first_id, stream, count, base_ts, min_ts, max_ts, ingested, text_bytes, data)
                VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)
                """,
            arguments: [
                first, stream, lines.count, base, lines.map(\.timestamp).min()!, lines.map(\.timestamp).max()!, ingested,
                lines.reduce(0) { $0 + $1.message.utf8.count }, Data(LogChunk.encode(lines[...], base: base)),
            ])
    }

    /// The bytes the stored events take (their chunks and what each row and index entry adds).
    public func storedBytes() throws -> Int64 {
        try db.pool.read { db in try Int64.fetchOne(db, sql: "SELECT coalesce(SUM(bytes), 0) FROM log_streams") } ?? 0
    }

    /// Keeps the store within `budget` bytes: while it holds more, the oldest chunks of the
    /// group that holds the most go, down to `target` bytes (at most `batch` chunks per
    /// transaction, and never more of the top group than takes it below the next one). One
    /// noisy function's group shrinks to the size of the others before theirs lose anything.
    /// Streams left without events go too. Returns the events and bytes that went, and the
    /// bytes the store holds then.
    @discardableResult
    public func evict(budget: Int64, target: Int64, batch: Int = 500) throws -> (events: Int, bytes: Int64, left: Int64) {
        var events = 0
        var bytes: Int64 = 0
        let stored = try storedBytes()
        guard stored > budget else { return (0, 0, stored) }
        while true {
            let round = try db.pool.write { db -> (events: Int, bytes: Int64)? in
                let usage = try Row.fetchAll(
                    db, sql: "SELECT log_group, SUM(bytes) AS b FROM log_streams GROUP BY log_group ORDER BY b DESC")
                let total = usage.reduce(Int64(0)) { $0 + ($1["b"] as Int64) }
                guard total > target, let top = usage.first else { return nil }
                let next: Int64 = usage.count > 1 ? usage[1]["b"] : 0
                // Enough to reach the target, but not below the next group (then that one is the top).
                let want = max(1, min(total - target, (top["b"] as Int64) - next))
                let ids = Self.list(try Self.streamIDs(db, group: top["log_group"]))
                var freed: Int64 = 0
                var gone = 0
                var chunks = 0
                let rows = try Row.fetchCursor(
                    db,
                    sql: """
                        SELECT first_id, count, length(data) AS n FROM log_chunks WHERE stream IN (\(ids)) ORDER BY first_id LIMIT ?
                        """, arguments: [batch])
                var doomed: [Int64] = []
                while freed < want, let r = try rows.next() {
                    doomed.append(r["first_id"])
                    freed += (r["n"] as Int64) + Int64(Self.chunkOverhead)
                    gone += r["count"] as Int
                    chunks += 1
                }
                for id in doomed { try db.execute(sql: "DELETE FROM log_chunks WHERE first_id = ?", arguments: [id]) }
                try db.execute(
                    sql:
                        "DELETE FROM log_streams WHERE id IN (\(ids)) AND NOT EXISTS (SELECT 1 FROM log_chunks c WHERE c.stream = log_streams.id)"
                )
                return chunks == 0 ? nil : (gone, freed)
            }
            // Measured again: the log writer went on storing meanwhile.
            guard let round else { return (events, bytes, events == 0 ? stored : try storedBytes()) }
            events += round.events
            bytes += round.bytes
        }
    }

    public func hasGroup(account: String, _ group: String) throws -> Bool {
        try db.pool.read { db in
            try Bool.fetchOne(
                db, sql: "SELECT EXISTS (SELECT 1 FROM log_streams WHERE log_group = ?)",
                arguments: [Self.stored(account: account, group: group)]) ?? false
        }
    }

    public func streams(account: String, group: String, prefix: String?, newestFirst: Bool, limit: Int) throws -> [Stream] {
        try db.pool.read { db in
            try Row.fetchAll(
                db,
                sql:
                    "SELECT log_stream, created, last_event, bytes FROM log_streams WHERE log_group = ? AND log_stream >= ? ORDER BY \(newestFirst ? "last_event DESC" : "log_stream") LIMIT ?",
                arguments: [Self.stored(account: account, group: group), prefix ?? "", newestFirst ? Int.max : limit])
        }.map { Stream(name: $0["log_stream"], created: $0["created"], lastEvent: $0["last_event"], storedBytes: $0["bytes"]) }
            .filter { prefix == nil || $0.name.hasPrefix(prefix!) }
            .prefix(limit).map { $0 }
    }

    /// Events in order, optionally of some streams, in a time window, containing `pattern`, after `afterID`.
    public func events(
        account: String, group: String, streams: [String]?, start: Int64?, end: Int64?, contains pattern: String?,
        afterID: Int64?, limit: Int
    ) throws -> [Event] {
        try db.pool.read { db in
            var sql = "SELECT id, log_stream FROM log_streams WHERE log_group = ?"
            var args: [any DatabaseValueConvertible] = [Self.stored(account: account, group: group)]
            if let streams, !streams.isEmpty {
                sql += " AND log_stream IN (\(streams.map { _ in "?" }.joined(separator: ",")))"
                args += streams as [any DatabaseValueConvertible]
            }
            var names: [Int64: String] = [:]
            for r in try Row.fetchAll(db, sql: sql, arguments: StatementArguments(args)) { names[r["id"]] = r["log_stream"] }
            guard !names.isEmpty else { return [] }
            var out: [Event] = []
            let after = afterID ?? 0
            var lastChunk: Int64 = -1
            var chunkSQL =
                "SELECT first_id, count, stream, base_ts, ingested, data FROM log_chunks WHERE stream IN (\(Self.list(Array(names.keys))))"
                + " AND first_id + count > ? AND first_id > ?"
            if start != nil { chunkSQL += " AND max_ts >= \(start!)" }
            if end != nil { chunkSQL += " AND min_ts < \(end!)" }
            chunkSQL += " ORDER BY first_id LIMIT 256"
            let pattern = pattern.flatMap { $0.isEmpty ? nil : Array($0.utf8) }
            while out.count < limit {
                let chunks = try Row.fetchAll(db, sql: chunkSQL, arguments: [after + 1, lastChunk])
                for c in chunks {
                    let first: Int64 = c["first_id"]
                    let lines = try LogChunk.decode([UInt8](c["data"] as Data), base: c["base_ts"])
                    for (k, l) in lines.enumerated() {
                        let id = first + Int64(k)
                        guard id > after else { continue }
                        if let start, l.timestamp < start { continue }
                        if let end, l.timestamp >= end { continue }
                        if let pattern, l.message.utf8.firstRange(of: pattern) == nil { continue }
                        out.append(
                            Event(
                                id: id, stream: names[c["stream"]] ?? "", timestamp: l.timestamp, ingested: c["ingested"],
                                message: l.message))
                        if out.count == limit { return out }
                    }
                    lastChunk = first
                }
                if chunks.count < 256 { break }
            }
            return out
        }
    }

}
