import Foundation
import GRDB
import PetrelCore

/// A secret as Secrets Manager describes it.
public struct SecretRecord: Sendable, Equatable {
    public var arn: String
    public var account: String
    public var name: String
    public var description: String
    /// `[{"Key":…,"Value":…}]`, as given.
    public var tags: [[String: String]]
    public var created: Int64
    public var changed: Int64
    public var accessed: Int64?
    /// When a secret marked for deletion goes for good.
    public var deleted: Int64?
    /// Version id → its stages (`AWSCURRENT`, `AWSPREVIOUS`, the caller's own).
    public var versions: [String: [String]]

    public init(
        arn: String, account: String, name: String, description: String, tags: [[String: String]], created: Int64, changed: Int64,
        accessed: Int64? = nil, deleted: Int64? = nil, versions: [String: [String]]
    ) {
        self.arn = arn
        self.account = account
        self.name = name
        self.description = description
        self.tags = tags
        self.created = created
        self.changed = changed
        self.accessed = accessed
        self.deleted = deleted
        self.versions = versions
    }
}

/// One version's value.
public struct SecretValue: Sendable, Equatable {
    public var version: String
    public var string: String?
    public var binary: Data?
    public var stages: [String]
    public var created: Int64
}

/// Secrets Manager's secrets in SQLite, each version's value sealed under the platform
/// key (bound to the secret's ARN and version). What event source mappings read
/// broker credentials from, and functions their own secrets.
public struct SecretStore: Sendable {
    let db: PetrelDatabase
    let keys: KeyRing

    public init(_ db: PetrelDatabase, keys: KeyRing) {
        self.db = db
        self.keys = keys
    }

    static func context(_ arn: String, _ version: String) -> String { "secret:\(arn):\(version)" }

    /// Drops the secrets whose recovery window has passed.
    func purge(_ db: Database, now: Int64) throws {
        let gone = try String.fetchAll(db, sql: "SELECT arn FROM secrets WHERE deleted IS NOT NULL AND deleted <= ?", arguments: [now])
        for arn in gone {
            try db.execute(sql: "DELETE FROM secret_versions WHERE arn = ?", arguments: [arn])
            try db.execute(sql: "DELETE FROM secrets WHERE arn = ?", arguments: [arn])
        }
    }

    func record(_ row: Row, _ db: Database) throws -> SecretRecord {
        let arn: String = row["arn"]
        var versions: [String: [String]] = [:]
        for v in try Row.fetchAll(db, sql: "SELECT version, stages FROM secret_versions WHERE arn = ?", arguments: [arn]) {
            let stages = (try? JSONDecoder().decode([String].self, from: Data((v["stages"] as String).utf8))) ?? []
            if !stages.isEmpty { versions[v["version"]] = stages }
        }
        return SecretRecord(
            arn: arn, account: row["account"], name: row["name"], description: row["description"],
            tags: (try? JSONDecoder().decode([[String: String]].self, from: Data((row["tags"] as String).utf8))) ?? [],
            created: row["created"], changed: row["changed"], accessed: row["accessed"], deleted: row["deleted"], versions: versions)
    }

    /// The secret an id (its name or ARN, or an ARN without the random suffix) names in `account`.
    public func secret(account: String, id: String, now: Int64) throws -> SecretRecord? {
        try db.pool.write { db in
            try purge(db, now: now)
            let row =
                try Row.fetchOne(
                    db, sql: "SELECT * FROM secrets WHERE account = ? AND (arn = ? OR name = ?)", arguments: [account, id, id])
                ?? Row.fetchOne(
                    db, sql: "SELECT * FROM secrets WHERE account = ? AND substr(arn, 1, length(arn) - 7) = ?", arguments: [account, id])
            return try row.map { try record($0, db) }
        }
    }

    public func list(account: String, now: Int64) throws -> [SecretRecord] {
        try db.pool.write { db in
            try purge(db, now: now)
            return try Row.fetchAll(db, sql: "SELECT * FROM secrets WHERE account = ? ORDER BY name", arguments: [account]).map {
                try record($0, db)
            }
        }
    }

    /// Stores a new secret with its first version (nil value: a secret with no version yet).
    /// False when the name is taken (a secret marked for deletion holds its name too).
    public func create(_ s: SecretRecord, version: String, string: String?, binary: Data?, now: Int64) throws -> Bool {
        try db.pool.write { db in
            try purge(db, now: now)
            guard
                try Bool.fetchOne(
                    db, sql: "SELECT EXISTS (SELECT 1 FROM secrets WHERE account = ? AND name = ?)", arguments: [s.account, s.name])
                    == false
            else { return false }
            try db.execute(
                sql: "INSERT INTO secrets (arn, account, name, description, tags, created, changed) VALUES (?, ?, ?, ?, ?, ?, ?)",
                arguments: [
                    s.arn, s.account, s.name, s.description, String(decoding: try JSONEncoder().encode(s.tags), as: UTF8.self), now, now,
                ])
            if string != nil || binary != nil {
                try insertVersion(arn: s.arn, version: version, string: string, binary: binary, stages: ["AWSCURRENT"], now: now, db)
            }
            return true
        }
    }

    func insertVersion(arn: String, version: String, string: String?, binary: Data?, stages: [String], now: Int64, _ db: Database) throws {
        let plain = binary ?? Data((string ?? "").utf8)
        try db.execute(
            sql: "INSERT INTO secret_versions (arn, version, value, binary, stages, created) VALUES (?, ?, ?, ?, ?, ?)",
            arguments: [
                arn, version, try keys.seal(plain, context: Self.context(arn, version)), binary != nil,
                String(decoding: try JSONEncoder().encode(stages), as: UTF8.self), now,
            ])
    }

    /// Adds a version that becomes AWSCURRENT (the current one becomes AWSPREVIOUS); the same
    /// version id with the same value again changes nothing. False: that id holds another value.
    public func put(arn: String, version: String, string: String?, binary: Data?, stages: [String], now: Int64) throws -> Bool {
        try db.pool.write { db in
            if let existing = try Row.fetchOne(
                db, sql: "SELECT value, binary FROM secret_versions WHERE arn = ? AND version = ?", arguments: [arn, version])
            {
                let plain = try keys.unseal(existing["value"], context: Self.context(arn, version))
                return plain == (binary ?? Data((string ?? "").utf8)) && (existing["binary"] as Bool) == (binary != nil)
            }
            if stages.contains("AWSCURRENT") {
                for row in try Row.fetchAll(db, sql: "SELECT version, stages FROM secret_versions WHERE arn = ?", arguments: [arn]) {
                    var st = (try? JSONDecoder().decode([String].self, from: Data((row["stages"] as String).utf8))) ?? []
                    let wasCurrent = st.contains("AWSCURRENT")
                    st.removeAll { $0 == "AWSPREVIOUS" || $0 == "AWSCURRENT" }
                    if wasCurrent { st.append("AWSPREVIOUS") }
                    try db.execute(
                        sql: "UPDATE secret_versions SET stages = ? WHERE arn = ? AND version = ?",
                        arguments: [String(decoding: try JSONEncoder().encode(st), as: UTF8.self), arn, row["version"] as String])
                }
                // Versions with no stage left are gone, as on Secrets Manager.
                try db.execute(sql: "DELETE FROM secret_versions WHERE arn = ? AND stages = '[]'", arguments: [arn])
            }
            try insertVersion(arn: arn, version: version, string: string, binary: binary, stages: stages, now: now, db)
            try db.execute(sql: "UPDATE secrets SET changed = ? WHERE arn = ?", arguments: [now, arn])
            return true
        }
    }

    /// The value of a version (by id or stage; default AWSCURRENT); records the access.
    public func value(arn: String, version: String?, stage: String?, now: Int64) throws -> SecretValue? {
        try db.pool.write { db in
            for row in try Row.fetchAll(db, sql: "SELECT * FROM secret_versions WHERE arn = ?", arguments: [arn]) {
                let v: String = row["version"]
                let stages = (try? JSONDecoder().decode([String].self, from: Data((row["stages"] as String).utf8))) ?? []
                // By id (and then the stage, when given, must be one of its stages), else by stage.
                if let version {
                    guard v == version, stage.map(stages.contains) ?? true else { continue }
                } else {
                    guard stages.contains(stage ?? "AWSCURRENT") else { continue }
                }
                let plain = try keys.unseal(row["value"], context: Self.context(arn, v))
                try db.execute(sql: "UPDATE secrets SET accessed = ? WHERE arn = ?", arguments: [now - now % 86_400_000, arn])
                let binary: Bool = row["binary"]
                return SecretValue(
                    version: v, string: binary ? nil : String(decoding: plain, as: UTF8.self), binary: binary ? plain : nil, stages: stages,
                    created: row["created"])
            }
            return nil
        }
    }

    /// Marks a secret for deletion at `at` (now: gone at once).
    public func delete(arn: String, at: Int64, now: Int64) throws {
        try db.pool.write { db in
            try db.execute(sql: "UPDATE secrets SET deleted = ? WHERE arn = ?", arguments: [at, arn])
            try purge(db, now: now)
        }
    }
}
