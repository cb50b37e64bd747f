import Foundation
import GRDB
import PetrelCore
import PetrelStore

/// A queue as stored.
public struct QueueRecord: Sendable, Equatable {
    public var id: Int64
    public var account: String
    public var name: String
    public var settings: QueueSettings
    public var tags: [String: String]
    public var created: Int64
    public var modified: Int64

    public var fifo: Bool { name.hasSuffix(".fifo") }
    public func arn(region: String) -> String { "arn:aws:sqs:\(region):\(account):\(name)" }
}

/// A message to store.
public struct NewMessage: Sendable {
    public var id: String
    public var body: String
    public var attributes: [String: MessageAttribute]
    public var sender: String
    public var delaySeconds: Int
    public var groupID: String?
    public var dedupID: String?
    /// The queue it came from, when it was moved to this one as a dead letter.
    public var deadLetterSource: String?
    /// When it was first sent (a moved message keeps it); nil: now.
    public var sent: Int64?

    public init(
        id: String = FastIDs.uuid(), body: String, attributes: [String: MessageAttribute] = [:], sender: String, delaySeconds: Int = 0,
        groupID: String? = nil, dedupID: String? = nil
    ) {
        self.id = id
        self.body = body
        self.attributes = attributes
        self.sender = sender
        self.delaySeconds = delaySeconds
        self.groupID = groupID
        self.dedupID = dedupID
    }

    public var md5: String { MessageAttribute.md5Hex(Array(body.utf8)) }
}

/// What a send stored: the message's id and sequence (for FIFO queues, the id of the
/// earlier message a duplicate folded into).
public struct SentMessage: Sendable, Equatable {
    public var id: String
    public var sequence: Int64
    public var md5: String
    public var md5Attributes: String?
}

/// A received message, with the handle of this receive.
public struct QueueMessage: Sendable, Equatable {
    public var sequence: Int64
    public var id: String
    public var body: String
    public var attributes: [String: MessageAttribute]
    public var md5: String
    public var md5Attributes: String?
    public var sender: String
    public var sent: Int64
    public var receiveCount: Int
    public var firstReceive: Int64
    public var receiptHandle: String
    public var groupID: String?
    public var dedupID: String?
    public var deadLetterSource: String?
}

/// A receipt handle: the queue, the message and the token of one receive.
struct ReceiptHandle: Equatable {
    var queue: Int64
    var sequence: Int64
    var token: String

    var encoded: String { Data("\(queue):\(sequence):\(token)".utf8).base64EncodedString() }

    init(queue: Int64, sequence: Int64, token: String) {
        self.queue = queue
        self.sequence = sequence
        self.token = token
    }

    init?(_ s: String) {
        guard let d = Data(base64Encoded: s), let text = String(data: d, encoding: .utf8) else { return nil }
        let p = text.split(separator: ":")
        guard p.count == 3, let q = Int64(p[0]), let seq = Int64(p[1]), p[2].utf8.count == 16 else { return nil }
        queue = q
        sequence = seq
        token = String(p[2])
    }
}

/// Queues and their messages in SQLite. Sends are group-committed and fsynced
/// before they are acknowledged; receives, deletes and visibility changes are
/// ordinary commits (they survive the daemon's death; the machine's at worst
/// shows a message again, which at-least-once delivery allows). Bodies and
/// attributes are sealed under the platform key.
public struct QueueStore: Sendable {
    let db: PetrelDatabase
    let keys: KeyRing
    let commits: GroupCommit

    public init(_ db: PetrelDatabase, keys: KeyRing, commits: GroupCommit) {
        self.db = db
        self.keys = keys
        self.commits = commits
    }

    // MARK: - queues

    static let queueColumns = "id, account, name, attributes, tags, created, modified"

    static func decodeQueue(_ row: Row) -> QueueRecord {
        let attrs = (try? JSONDecoder().decode([String: String].self, from: Data((row["attributes"] as String).utf8))) ?? [:]
        let tags = (try? JSONDecoder().decode([String: String].self, from: Data((row["tags"] as String).utf8))) ?? [:]
        return QueueRecord(
            id: row["id"], account: row["account"], name: row["name"], settings: QueueSettings(values: attrs), tags: tags,
            created: row["created"], modified: row["modified"])
    }

    static func json(_ d: [String: String]) -> String {
        String(data: (try? JSONEncoder().encode(d)) ?? Data("{}".utf8), encoding: .utf8)!
    }

    public func queue(account: String, name: String) throws -> QueueRecord? {
        try db.pool.read { db in
            try Row.fetchOne(db, sql: "SELECT \(Self.queueColumns) FROM queues WHERE account = ? AND name = ?", arguments: [account, name])
                .map(Self.decodeQueue)
        }
    }

    public func queue(id: Int64) throws -> QueueRecord? {
        try db.pool.read { db in
            try Row.fetchOne(db, sql: "SELECT \(Self.queueColumns) FROM queues WHERE id = ?", arguments: [id]).map(Self.decodeQueue)
        }
    }

    /// Queues of `account` (nil: every account's), by name.
    public func queues(account: String?) throws -> [QueueRecord] {
        try db.pool.read { db in
            if let account {
                return try Row.fetchAll(
                    db, sql: "SELECT \(Self.queueColumns) FROM queues WHERE account = ? ORDER BY name", arguments: [account]
                ).map(Self.decodeQueue)
            }
            return try Row.fetchAll(db, sql: "SELECT \(Self.queueColumns) FROM queues ORDER BY account, name").map(Self.decodeQueue)
        }
    }

    /// Makes the queue, or answers the one of that name when its attributes are the same
    /// (nil when they differ).
    public func create(account: String, name: String, settings: QueueSettings, tags: [String: String], now: Int64) throws -> QueueRecord? {
        try db.pool.write { db in
            if let row = try Row.fetchOne(
                db, sql: "SELECT \(Self.queueColumns) FROM queues WHERE account = ? AND name = ?", arguments: [account, name])
            {
                let existing = Self.decodeQueue(row)
                return existing.settings == settings ? existing : nil
            }
            try db.execute(
                sql: "INSERT INTO queues (account, name, attributes, tags, created, modified) VALUES (?, ?, ?, ?, ?, ?)",
                arguments: [account, name, Self.json(settings.values), Self.json(tags), now, now])
            return QueueRecord(
                id: db.lastInsertedRowID, account: account, name: name, settings: settings, tags: tags, created: now, modified: now)
        }
    }

    public func update(_ q: QueueRecord, now: Int64) throws {
        try db.pool.write { db in
            try db.execute(
                sql: "UPDATE queues SET attributes = ?, tags = ?, modified = ? WHERE id = ?",
                arguments: [Self.json(q.settings.values), Self.json(q.tags), now, q.id])
        }
    }

    /// Removes the queue and its messages.
    public func delete(_ q: QueueRecord) throws {
        try db.pool.write { db in
            try db.execute(sql: "DELETE FROM queue_messages WHERE queue = ?", arguments: [q.id])
            try db.execute(sql: "DELETE FROM queue_dedup WHERE queue = ?", arguments: [q.id])
            try db.execute(sql: "DELETE FROM queues WHERE id = ?", arguments: [q.id])
        }
    }

    public func purge(_ q: QueueRecord) throws {
        try db.pool.write { db in
            try db.execute(sql: "DELETE FROM queue_messages WHERE queue = ?", arguments: [q.id])
        }
    }

    /// Messages visible now, in flight (received, not yet visible again) and delayed (never received, not yet visible).
    public struct Counts: Sendable, Equatable {
        public var visible = 0
        public var inFlight = 0
        public var delayed = 0
        /// When the oldest message was sent (nil: none).
        public var oldestSent: Int64?
    }

    public func counts(_ q: Int64, now: Int64) throws -> Counts {
        try db.pool.read { db in
            let row = try Row.fetchOne(
                db,
                sql: """
                    SELECT
                      coalesce(sum(visible_at <= ?1), 0) AS visible,
                      coalesce(sum(visible_at > ?1 AND receive_count > 0), 0) AS inflight,
                      coalesce(sum(visible_at > ?1 AND receive_count = 0), 0) AS delayed,
                      min(sent) AS oldest
                    FROM queue_messages WHERE queue = ?2
                    """, arguments: [now, q])
            return Counts(
                visible: row?["visible"] ?? 0, inFlight: row?["inflight"] ?? 0, delayed: row?["delayed"] ?? 0, oldestSent: row?["oldest"])
        }
    }

    /// The earliest time a message of `q` becomes visible (nil: it has none).
    public func nextVisible(_ q: Int64) throws -> Int64? {
        try db.pool.read { db in try Int64.fetchOne(db, sql: "SELECT min(visible_at) FROM queue_messages WHERE queue = ?", arguments: [q]) }
    }

    // MARK: - sending

    /// Stores `messages` in `q` durably (fsynced) and returns what each became. In a FIFO
    /// queue a message whose deduplication id was seen in the last five minutes is not
    /// stored again: it answers the earlier message's id.
    public func send(_ q: QueueRecord, _ messages: [NewMessage], now: Int64) async throws -> [SentMessage] {
        let keys = self.keys
        return try await commits.write { db in
            try messages.map { try Self.insert(q, $0, now: now, db, keys: keys) }
        }
    }

    static let dedupWindowMillis: Int64 = 300_000

    static func insert(_ q: QueueRecord, _ m: NewMessage, now: Int64, _ db: Database, keys: KeyRing) throws -> SentMessage {
        let md5Attributes = MessageAttribute.md5(m.attributes)
        if q.fifo, let dedup = m.dedupID {
            let key = q.settings.value("DeduplicationScope", fifo: true) == "messageGroup" ? (m.groupID ?? "") + "\u{0}" + dedup : dedup
            if let row = try Row.fetchOne(
                db, sql: "SELECT message_id, seq FROM queue_dedup WHERE queue = ? AND dedup_id = ? AND expires > ?",
                arguments: [q.id, key, now])
            {
                return SentMessage(id: row["message_id"], sequence: row["seq"], md5: m.md5, md5Attributes: md5Attributes)
            }
            try db.execute(sql: "DELETE FROM queue_dedup WHERE queue = ? AND dedup_id = ?", arguments: [q.id, key])
            try insertRow(q, m, now: now, md5Attributes: md5Attributes, db, keys: keys)
            let seq = db.lastInsertedRowID
            try db.execute(
                sql: "INSERT INTO queue_dedup (queue, dedup_id, expires, message_id, seq) VALUES (?, ?, ?, ?, ?)",
                arguments: [q.id, key, now + dedupWindowMillis, m.id, seq])
            return SentMessage(id: m.id, sequence: seq, md5: m.md5, md5Attributes: md5Attributes)
        }
        try insertRow(q, m, now: now, md5Attributes: md5Attributes, db, keys: keys)
        return SentMessage(id: m.id, sequence: db.lastInsertedRowID, md5: m.md5, md5Attributes: md5Attributes)
    }

    static func insertRow(_ q: QueueRecord, _ m: NewMessage, now: Int64, md5Attributes: String?, _ db: Database, keys: KeyRing) throws {
        var row = QueueRows.Row(
            id: m.id, body: m.body, attributes: m.attributes, sender: m.sender, sent: m.sent ?? now,
            visibleAt: now + Int64(m.delaySeconds) * 1000)
        row.groupID = m.groupID
        row.dedupID = m.dedupID
        row.deadLetterSource = m.deadLetterSource
        try QueueRows.insert(row, queue: q.id, account: q.account, db, keys: keys)
    }

    // MARK: - receiving

    /// Where messages received too often go.
    public struct Redrive: Sendable {
        public var target: QueueRecord
        public var maxReceiveCount: Int
        public var sourceARN: String
        public init(target: QueueRecord, maxReceiveCount: Int, sourceARN: String) {
            self.target = target
            self.maxReceiveCount = maxReceiveCount
            self.sourceARN = sourceARN
        }
    }

    /// Receives up to `max` visible messages of `q`, hiding them for `visibility` seconds.
    /// A message already received `maxReceiveCount` times moves to the dead-letter queue
    /// instead. In a FIFO queue, a message group with a message in flight gives nothing,
    /// and a group's messages come in order.
    public func receive(_ q: QueueRecord, max: Int, visibility: Int, now: Int64, redrive: Redrive?) throws -> (
        messages: [QueueMessage], moved: Int
    ) {
        let keys = self.keys
        return try db.pool.write { db in
            let candidates: [Row]
            let columns =
                "seq, id, body, attributes, md5, md5_attributes, sender, sent, receive_count, first_receive, group_id, dedup_id, dead_letter_source"
            if q.fifo {
                candidates = try Row.fetchAll(
                    db,
                    sql: """
                        SELECT \(columns) FROM queue_messages m WHERE queue = ?1 AND visible_at <= ?2
                          AND NOT EXISTS (SELECT 1 FROM queue_messages x WHERE x.queue = ?1 AND x.group_id = m.group_id
                                          AND x.visible_at > ?2 AND x.receive_count > 0)
                        ORDER BY seq LIMIT ?3
                        """, arguments: [q.id, now, max + 20])
            } else {
                candidates = try Row.fetchAll(
                    db,
                    sql: "SELECT \(columns) FROM queue_messages WHERE queue = ? AND visible_at <= ? ORDER BY visible_at, seq LIMIT ?",
                    arguments: [q.id, now, max])
            }
            var out: [QueueMessage] = []
            var moved = 0
            var blockedGroups: Set<String> = []
            for row in candidates where out.count < max {
                let seq: Int64 = row["seq"]
                let count: Int = row["receive_count"]
                let group: String? = row["group_id"]
                if let g = group, blockedGroups.contains(g) { continue }
                if let redrive, count >= redrive.maxReceiveCount {
                    try db.execute(
                        sql: """
                            UPDATE queue_messages SET queue = ?, visible_at = ?, receive_count = 0, first_receive = NULL,
                              receipt = NULL, dead_letter_source = ? WHERE seq = ?
                            """, arguments: [redrive.target.id, now, redrive.sourceARN, seq])
                    moved += 1
                    // A FIFO group's order holds only if its later messages wait for this receive.
                    if let g = group { blockedGroups.insert(g) }
                    continue
                }
                let token = FastIDs.hex(FastIDs.next(), 16)
                let first: Int64 = row["first_receive"] ?? now
                try db.execute(
                    sql: "UPDATE queue_messages SET visible_at = ?, receive_count = ?, first_receive = ?, receipt = ? WHERE seq = ?",
                    arguments: [now + Int64(visibility) * 1000, count + 1, first, token, seq])
                let (body, attributes) = try QueueRows.open(row, account: q.account, keys: keys)
                out.append(
                    QueueMessage(
                        sequence: seq, id: row["id"], body: body, attributes: attributes, md5: row["md5"],
                        md5Attributes: row["md5_attributes"], sender: row["sender"],
                        sent: row["sent"], receiveCount: count + 1, firstReceive: first,
                        receiptHandle: ReceiptHandle(queue: q.id, sequence: seq, token: token).encoded, groupID: group,
                        dedupID: row["dedup_id"], deadLetterSource: row["dead_letter_source"]))
            }
            return (out, moved)
        }
    }

    /// Deletes the message a handle names, if that handle is its latest receive's (an older
    /// handle deletes nothing, as on SQS). Throws for a handle that is not one of this queue's.
    public func delete(_ q: QueueRecord, handle: String) throws -> Bool {
        guard let h = ReceiptHandle(handle), h.queue == q.id else { throw MessagingError.receiptInvalid(handle) }
        return try db.pool.write { db in
            try db.execute(
                sql: "DELETE FROM queue_messages WHERE seq = ? AND queue = ? AND receipt = ?", arguments: [h.sequence, q.id, h.token])
            return db.changesCount > 0
        }
    }

    /// Deletes several messages in one transaction; each answer as `delete`'s.
    public func delete(_ q: QueueRecord, handles: [String]) throws -> [Result<Bool, MessagingError>] {
        try db.pool.write { db in
            try handles.map { handle in
                guard let h = ReceiptHandle(handle), h.queue == q.id else { return .failure(.receiptInvalid(handle)) }
                try db.execute(
                    sql: "DELETE FROM queue_messages WHERE seq = ? AND queue = ? AND receipt = ?", arguments: [h.sequence, q.id, h.token])
                return .success(db.changesCount > 0)
            }
        }
    }

    /// Sets when a received message becomes visible again (`timeout` seconds from now).
    /// `uncount`: the receive did not count (the platform's own consumer could not run it).
    public func changeVisibility(_ q: QueueRecord, handles: [String], timeout: Int, now: Int64, uncount: Bool = false) throws -> [Result<
        Void, MessagingError
    >] {
        try db.pool.write { db in
            try handles.map { handle in
                guard let h = ReceiptHandle(handle), h.queue == q.id else { return .failure(.receiptInvalid(handle)) }
                try db.execute(
                    sql: """
                        UPDATE queue_messages SET visible_at = ?, receive_count = receive_count - ?
                        WHERE seq = ? AND queue = ? AND receipt = ? AND visible_at > ?
                        """,
                    arguments: [now + Int64(timeout) * 1000, uncount ? 1 : 0, h.sequence, q.id, h.token, now])
                guard db.changesCount > 0 else {
                    return .failure(MessagingError("MessageNotInflight", "The message referred to is not in flight."))
                }
                return .success(())
            }
        }
    }

    // MARK: - upkeep

    /// Drops messages older than their queue's retention period and expired deduplication ids.
    public func expire(now: Int64) throws -> Int {
        var dropped = 0
        for q in try queues(account: nil) {
            dropped += try db.pool.write { db in
                try db.execute(
                    sql: "DELETE FROM queue_messages WHERE queue = ? AND sent < ?",
                    arguments: [q.id, now - Int64(q.settings.retentionSeconds) * 1000])
                return db.changesCount
            }
        }
        try db.pool.write { db in try db.execute(sql: "DELETE FROM queue_dedup WHERE expires <= ?", arguments: [now]) }
        return dropped
    }
}
