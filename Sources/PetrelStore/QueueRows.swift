import Crypto
import Foundation
import GRDB

/// The rows of an SQS message as the store keeps them: the body and attributes sealed
/// under the platform key, their MD5s as SQS answers them. PetrelMessaging writes and
/// reads them for the API; the event queue writes them too, for the built-in dead-letter
/// queue, in the transaction that finishes an event.
public enum QueueRows {
    /// A message attribute's type and value, in the JSON the attributes are stored as.
    public struct Attribute: Sendable, Equatable, Codable {
        public var dataType: String
        public var stringValue: String?
        public var binaryValue: Data?

        public init(dataType: String, stringValue: String? = nil, binaryValue: Data? = nil) {
            self.dataType = dataType
            self.stringValue = stringValue
            self.binaryValue = binaryValue
        }

        public var isBinary: Bool { dataType.hasPrefix("Binary") }
    }

    /// A message to write.
    public struct Row: Sendable {
        public var id: String
        public var body: String
        public var attributes: [String: Attribute]
        public var sender: String
        public var sent: Int64
        public var visibleAt: Int64
        public var groupID: String?
        public var dedupID: String?
        public var deadLetterSource: String?

        public init(id: String, body: String, attributes: [String: Attribute], sender: String, sent: Int64, visibleAt: Int64) {
            self.id = id
            self.body = body
            self.attributes = attributes
            self.sender = sender
            self.sent = sent
            self.visibleAt = visibleAt
        }
    }

    public static func context(_ account: String, _ id: String) -> String { "queue-message:\(account):\(id)" }

    /// Writes a message of queue `queue` (owned by `account`); returns its sequence number.
    @discardableResult
    public static func insert(_ r: Row, queue: Int64, account: String, _ db: Database, keys: KeyRing) throws -> Int64 {
        let context = context(account, r.id)
        let attributes =
            r.attributes.isEmpty ? nil : try keys.seal(try JSONEncoder().encode(r.attributes), context: context + ":attributes")
        try db.execute(
            sql: """
                INSERT INTO queue_messages (queue, id, body, attributes, md5, md5_attributes, sender, sent, visible_at,
                  group_id, dedup_id, dead_letter_source)
                VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)
                """,
            arguments: [
                queue, r.id, try keys.seal(Data(r.body.utf8), context: context), attributes, md5Hex(Array(r.body.utf8)),
                md5(r.attributes), r.sender, r.sent, r.visibleAt, r.groupID, r.dedupID, r.deadLetterSource,
            ])
        return db.lastInsertedRowID
    }

    /// A stored message's body and attributes.
    public static func open(_ row: GRDB.Row, account: String, keys: KeyRing) throws -> (body: String, attributes: [String: Attribute]) {
        let id: String = row["id"]
        let context = context(account, id)
        let attributes: [String: Attribute] =
            try (row["attributes"] as Data?).map {
                try JSONDecoder().decode([String: Attribute].self, from: keys.unseal($0, context: context + ":attributes"))
            } ?? [:]
        return (String(decoding: try keys.unseal(row["body"], context: context), as: UTF8.self), attributes)
    }

    /// The id of `account`'s queue `name`, made (with `attributes`) when it does not exist.
    public static func ensureQueue(account: String, name: String, attributes: [String: String], now: Int64, _ db: Database) throws -> Int64
    {
        if let id = try Int64.fetchOne(db, sql: "SELECT id FROM queues WHERE account = ? AND name = ?", arguments: [account, name]) {
            return id
        }
        let json = String(decoding: try JSONEncoder().encode(attributes), as: UTF8.self)
        try db.execute(
            sql: "INSERT INTO queues (account, name, attributes, tags, created, modified) VALUES (?, ?, ?, '{}', ?, ?)",
            arguments: [account, name, json, now, now])
        return db.lastInsertedRowID
    }

    /// The MD5 SQS answers for a message's attributes: over the names in order, each
    /// with its type and value, every part preceded by its 4-byte big-endian length and
    /// the value by a transport byte (1 string, 2 binary). Nil when there are none.
    public static func md5(_ all: [String: Attribute]) -> String? {
        guard !all.isEmpty else { return nil }
        var bytes: [UInt8] = []
        func part(_ b: some Collection<UInt8>) {
            let n = UInt32(b.count)
            bytes += [UInt8(n >> 24), UInt8((n >> 16) & 0xff), UInt8((n >> 8) & 0xff), UInt8(n & 0xff)]
            bytes += b
        }
        for name in all.keys.sorted(by: { Array($0.utf8).lexicographicallyPrecedes(Array($1.utf8)) }) {
            let a = all[name]!
            part(Array(name.utf8))
            part(Array(a.dataType.utf8))
            if a.isBinary {
                bytes.append(2)
                part(Array(a.binaryValue ?? Data()))
            } else {
                bytes.append(1)
                part(Array((a.stringValue ?? "").utf8))
            }
        }
        return md5Hex(bytes)
    }

    public static func md5Hex(_ bytes: some DataProtocol) -> String {
        Insecure.MD5.hash(data: bytes).map { String(format: "%02x", $0) }.joined()
    }
}
