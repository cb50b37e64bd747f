import Foundation
import GRDB
import PetrelCore
import PetrelStore

/// A topic as stored.
public struct TopicRecord: Sendable, Equatable {
    public var account: String
    public var name: String
    public var attributes: [String: String]
    public var tags: [String: String]
    public var created: Int64

    public func arn(region: String) -> String { "arn:aws:sns:\(region):\(account):\(name)" }
}

/// A subscription as stored.
public struct SubscriptionRecord: Sendable, Equatable {
    public var arn: String
    public var account: String
    public var topic: String
    public var `protocol`: String
    public var endpoint: String
    /// FilterPolicy, FilterPolicyScope, RawMessageDelivery, PendingConfirmation, ConfirmationToken, ...
    public var attributes: [String: String]
    public var created: Int64

    public var confirmed: Bool { attributes["PendingConfirmation"] != "true" }
    public var raw: Bool { attributes["RawMessageDelivery"] == "true" }
}

/// `arn:aws:sns:REGION:ACCOUNT:NAME`.
public struct TopicARN: Sendable, Equatable {
    public var region: String
    public var account: String
    public var name: String

    public init?(_ arn: String) {
        let p = arn.split(separator: ":", omittingEmptySubsequences: false)
        guard p.count == 6, p[0] == "arn", p[1] == "aws", p[2] == "sns", FunctionReference.isAccount(String(p[4])),
            TopicStore.isValidName(String(p[5]))
        else { return nil }
        region = String(p[3])
        account = String(p[4])
        name = String(p[5])
    }
}

/// Topics and subscriptions in SQLite.
public struct TopicStore: Sendable {
    let db: PetrelDatabase

    public init(_ db: PetrelDatabase) { self.db = db }

    /// 1–256 of letters, digits, `-` and `_`.
    public static func isValidName(_ name: String) -> Bool {
        !name.isEmpty && name.utf8.count <= 256
            && name.utf8.allSatisfy { ($0 >= 48 && $0 <= 57) || ($0 >= 65 && $0 <= 90) || ($0 >= 97 && $0 <= 122) || $0 == 45 || $0 == 95 }
    }

    static func decode(_ s: String) -> [String: String] { (try? JSONDecoder().decode([String: String].self, from: Data(s.utf8))) ?? [:] }
    static func encode(_ d: [String: String]) -> String { QueueStore.json(d) }

    static func topic(_ row: Row) -> TopicRecord {
        TopicRecord(
            account: row["account"], name: row["name"], attributes: decode(row["attributes"]), tags: decode(row["tags"]),
            created: row["created"])
    }

    static func subscription(_ row: Row) -> SubscriptionRecord {
        SubscriptionRecord(
            arn: row["arn"], account: row["account"], topic: row["topic"], protocol: row["protocol"], endpoint: row["endpoint"],
            attributes: decode(row["attributes"]), created: row["created"])
    }

    public func topic(account: String, name: String) throws -> TopicRecord? {
        try db.pool.read { db in
            try Row.fetchOne(db, sql: "SELECT * FROM topics WHERE account = ? AND name = ?", arguments: [account, name]).map(Self.topic)
        }
    }

    public func topics(account: String) throws -> [TopicRecord] {
        try db.pool.read { db in
            try Row.fetchAll(db, sql: "SELECT * FROM topics WHERE account = ? ORDER BY name", arguments: [account]).map(Self.topic)
        }
    }

    /// Makes the topic, or answers the one of that name (its attributes unchanged, as SNS does).
    public func create(_ t: TopicRecord) throws -> TopicRecord {
        try db.pool.write { db in
            if let row = try Row.fetchOne(db, sql: "SELECT * FROM topics WHERE account = ? AND name = ?", arguments: [t.account, t.name]) {
                return Self.topic(row)
            }
            try db.execute(
                sql: "INSERT INTO topics (account, name, attributes, tags, created) VALUES (?, ?, ?, ?, ?)",
                arguments: [t.account, t.name, Self.encode(t.attributes), Self.encode(t.tags), t.created])
            return t
        }
    }

    public func update(_ t: TopicRecord) throws {
        try db.pool.write { db in
            try db.execute(
                sql: "UPDATE topics SET attributes = ?, tags = ? WHERE account = ? AND name = ?",
                arguments: [Self.encode(t.attributes), Self.encode(t.tags), t.account, t.name])
        }
    }

    public func delete(account: String, name: String) throws {
        try db.pool.write { db in
            try db.execute(sql: "DELETE FROM subscriptions WHERE account = ? AND topic = ?", arguments: [account, name])
            try db.execute(sql: "DELETE FROM topics WHERE account = ? AND name = ?", arguments: [account, name])
        }
    }

    public func subscriptions(account: String, topic: String?) throws -> [SubscriptionRecord] {
        try db.pool.read { db in
            if let topic {
                return try Row.fetchAll(
                    db, sql: "SELECT * FROM subscriptions WHERE account = ? AND topic = ? ORDER BY created, arn",
                    arguments: [account, topic]
                ).map(Self.subscription)
            }
            return try Row.fetchAll(db, sql: "SELECT * FROM subscriptions WHERE account = ? ORDER BY created, arn", arguments: [account])
                .map(Self.subscription)
        }
    }

    public func subscription(arn: String) throws -> SubscriptionRecord? {
        try db.pool.read { db in
            try Row.fetchOne(db, sql: "SELECT * FROM subscriptions WHERE arn = ?", arguments: [arn]).map(Self.subscription)
        }
    }

    /// Stores a subscription, or answers the existing one of the same topic, protocol and endpoint.
    public func subscribe(_ s: SubscriptionRecord) throws -> SubscriptionRecord {
        try db.pool.write { db in
            if let row = try Row.fetchOne(
                db, sql: "SELECT * FROM subscriptions WHERE account = ? AND topic = ? AND protocol = ? AND endpoint = ?",
                arguments: [s.account, s.topic, s.protocol, s.endpoint])
            {
                return Self.subscription(row)
            }
            try db.execute(
                sql:
                    "INSERT INTO subscriptions (arn, account, topic, protocol, endpoint, attributes, created) VALUES (?, ?, ?, ?, ?, ?, ?)",
                arguments: [s.arn, s.account, s.topic, s.protocol, s.endpoint, Self.encode(s.attributes), s.created])
            return s
        }
    }

    public func update(_ s: SubscriptionRecord) throws {
        try db.pool.write { db in
            try db.execute(sql: "UPDATE subscriptions SET attributes = ? WHERE arn = ?", arguments: [Self.encode(s.attributes), s.arn])
        }
    }

    public func unsubscribe(arn: String) throws {
        try db.pool.write { db in try db.execute(sql: "DELETE FROM subscriptions WHERE arn = ?", arguments: [arn]) }
    }
}
