import Foundation
import GRDB
import PetrelCore
import Synchronization

/// Functions, kept as their JSON record, per account. The environment variables
/// are not in that JSON: they are sealed apart (`env_sealed`) under the
/// function's `KMSKeyArn` key or the platform key. Reads of one function are
/// served from memory (every invoke reads its function); every write goes
/// through here and updates that copy, and one daemon owns a data directory.
public struct FunctionStore: Sendable {
    let db: PetrelDatabase
    let keys: KeyRing
    let cache = FunctionCache()

    /// Opens the store; records from before sealed environments are sealed now.
    public init(_ db: PetrelDatabase, keys: KeyRing) throws {
        self.db = db
        self.keys = keys
        let clear = try db.pool.read { db in
            try String.fetchAll(
                db, sql: "SELECT record FROM functions WHERE env_sealed IS NULL AND json_extract(record, '$.environment') != '{}'")
        }
        if !clear.isEmpty {
            for text in clear {
                let f = try Self.decoder.decode(FunctionRecord.self, from: Data(text.utf8))
                _ = try update(account: f.account, f.name) { $0 = f }
            }
            // The clear text may linger in free pages until they are rewritten.
            try db.pool.vacuum()
        }
    }

    final class FunctionCache: Sendable {
        /// `$LATEST` by `account:name`, published versions by `account:name:N`.
        let records = Mutex<[String: FunctionRecord]>([:])
        /// Aliases by `account:name:alias`.
        let aliases = Mutex<[String: FunctionAlias]>([:])

        /// Forgets everything of one function (it was deleted).
        func forget(_ account: String, _ name: String) {
            let key = FunctionStore.cacheKey(account, name)
            records.withLock { r in
                r[key] = nil
                for k in r.keys where k.hasPrefix(key + ":") { r[k] = nil }
            }
            aliases.withLock { a in for k in a.keys where k.hasPrefix(key + ":") { a[k] = nil } }
        }
    }

    static let encoder: JSONEncoder = {
        let e = JSONEncoder()
        e.dateEncodingStrategy = .millisecondsSince1970
        e.outputFormatting = [.sortedKeys]
        return e
    }()
    static let decoder: JSONDecoder = {
        let d = JSONDecoder()
        d.dateDecodingStrategy = .millisecondsSince1970
        return d
    }()

    /// The data key that seals a function's variables.
    public static func keyID(kmsKeyArn: String?) -> String {
        guard let arn = kmsKeyArn, let slash = arn.lastIndex(of: "/") else { return KeyRing.platformKeyID }
        return String(arn[arn.index(after: slash)...])
    }

    static func envContext(_ account: String, _ name: String) -> String { "env:\(account):\(name)" }

    /// The record's row: its JSON without the variables, and the variables sealed.
    func encode(_ f: FunctionRecord) throws -> (json: String, env: Data?) {
        var bare = f
        bare.environment = [:]
        let json = String(decoding: try Self.encoder.encode(bare), as: UTF8.self)
        guard !f.environment.isEmpty else { return (json, nil) }
        let plain = try Self.encoder.encode(f.environment)
        return (json, try keys.seal(plain, key: Self.keyID(kmsKeyArn: f.kmsKeyArn), context: Self.envContext(f.account, f.name)))
    }

    func decode(_ row: Row) throws -> FunctionRecord {
        var f = try Self.decoder.decode(FunctionRecord.self, from: Data((row["record"] as String).utf8))
        if let sealed = row["env_sealed"] as Data? {
            let plain = try keys.unseal(sealed, key: Self.keyID(kmsKeyArn: f.kmsKeyArn), context: Self.envContext(f.account, f.name))
            f.environment = try Self.decoder.decode([String: String].self, from: plain)
        }
        return f
    }

    static func cacheKey(_ account: String, _ name: String) -> String { account + ":" + name }

    public func get(account: String, _ name: String) throws -> FunctionRecord? {
        let k = Self.cacheKey(account, name)
        if let f = cache.records.withLock({ $0[k] }) { return f }
        let f = try db.pool.read { db in
            try Row.fetchOne(
                db, sql: "SELECT record, env_sealed FROM functions WHERE account = ? AND name = ?", arguments: [account, name])
        }.map(decode)
        if let f { cache.records.withLock { $0[k] = f } }
        return f
    }

    /// Inserts a new function; false when the name is taken in its account.
    public func insert(_ f: FunctionRecord) throws -> Bool {
        let row = try encode(f)
        return try db.pool.write { db in
            try db.execute(
                sql: "INSERT OR IGNORE INTO functions (account, name, record, code_hex, env_sealed) VALUES (?, ?, ?, ?, ?)",
                arguments: [f.account, f.name, row.json, f.codeDigestHex, row.env])
            let inserted = db.changesCount == 1
            if inserted { cache.records.withLock { $0[f.key] = f } }
            return inserted
        }
    }

    /// Applies `change` to the stored record in one transaction; nil when there is none.
    /// `change` may throw to refuse (nothing is written then).
    public func update(account: String, _ name: String, _ change: (inout FunctionRecord) throws -> Void) throws -> FunctionRecord? {
        try db.pool.write { db in
            guard
                let row = try Row.fetchOne(
                    db, sql: "SELECT record, env_sealed FROM functions WHERE account = ? AND name = ?",
                    arguments: [account, name])
            else { return nil }
            var f = try decode(row)
            try change(&f)
            f.account = account
            f.name = name
            let out = try encode(f)
            try db.execute(
                sql: "UPDATE functions SET record = ?, code_hex = ?, env_sealed = ? WHERE account = ? AND name = ?",
                arguments: [out.json, f.codeDigestHex, out.env, account, name])
            cache.records.withLock { $0[f.key] = f }
            return f
        }
    }

    /// Deletes a function with every published version and alias of it; answers `$LATEST`
    /// and the versions that went.
    public func delete(account: String, _ name: String) throws -> (latest: FunctionRecord, versions: [FunctionRecord])? {
        try db.pool.write { db in
            guard
                let row = try Row.fetchOne(
                    db, sql: "SELECT record, env_sealed FROM functions WHERE account = ? AND name = ?",
                    arguments: [account, name])
            else { return nil }
            let versions = try Row.fetchAll(
                db, sql: "SELECT record, env_sealed FROM function_versions WHERE account = ? AND name = ?", arguments: [account, name]
            ).map(decode)
            try db.execute(sql: "DELETE FROM functions WHERE account = ? AND name = ?", arguments: [account, name])
            try db.execute(sql: "DELETE FROM function_versions WHERE account = ? AND name = ?", arguments: [account, name])
            try db.execute(sql: "DELETE FROM function_aliases WHERE account = ? AND function = ?", arguments: [account, name])
            cache.forget(account, name)
            return (try decode(row), versions)
        }
    }

    /// An account's functions in name order, starting after `marker`.
    public func list(account: String, after marker: String?, limit: Int) throws -> [FunctionRecord] {
        try db.pool.read { db in
            try Row.fetchAll(
                db, sql: "SELECT record, env_sealed FROM functions WHERE account = ? AND name > ? ORDER BY name LIMIT ?",
                arguments: [account, marker ?? "", limit])
        }.map(decode)
    }

    /// Every function of every account.
    public func all() throws -> [FunctionRecord] {
        try db.pool.read { db in try Row.fetchAll(db, sql: "SELECT record, env_sealed FROM functions ORDER BY account, name") }.map(decode)
    }

    public func count(account: String) throws -> Int {
        try db.pool.read { db in try Int.fetchOne(db, sql: "SELECT COUNT(*) FROM functions WHERE account = ?", arguments: [account]) ?? 0 }
    }

    /// Whether any function, version or live layer version holds this blob, or any
    /// function or version uses it as a layer (a deleted layer stays for those).
    public func codeInUse(hex: String) throws -> Bool {
        let b64 = FastIDs.bytes(hex: hex).map { Data($0).base64EncodedString() } ?? ""
        return try db.pool.read { db in
            try Bool.fetchOne(
                db,
                sql: """
                    SELECT EXISTS (SELECT 1 FROM functions WHERE code_hex = ?1)
                        OR EXISTS (SELECT 1 FROM function_versions WHERE code_hex = ?1)
                        OR EXISTS (SELECT 1 FROM layer_versions WHERE code_hex = ?1 AND deleted = 0)
                        OR EXISTS (SELECT 1 FROM functions, json_each(functions.record, '$.layers') l
                                   WHERE json_extract(l.value, '$.codeSha256') = ?2)
                        OR EXISTS (SELECT 1 FROM function_versions v, json_each(v.record, '$.layers') l
                                   WHERE json_extract(l.value, '$.codeSha256') = ?2)
                    """, arguments: [hex, b64]) ?? false
        }
    }

    /// Total size of an account's stored code (GetAccountSettings' TotalCodeSize): its
    /// functions', versions' and layers'. Code blobs are shared by digest: each counts once.
    public func totalCodeSize(account: String) throws -> Int {
        try db.pool.read { db in
            try Int.fetchOne(
                db,
                sql: """
                    SELECT COALESCE(SUM(size), 0) FROM (
                        SELECT code_hex, MAX(json_extract(record, '$.codeSize')) AS size FROM (
                            SELECT code_hex, record FROM functions WHERE account = ?1
                            UNION ALL SELECT code_hex, record FROM function_versions WHERE account = ?1
                            UNION ALL SELECT code_hex, record FROM layer_versions WHERE account = ?1 AND deleted = 0)
                        GROUP BY code_hex)
                    """, arguments: [account]) ?? 0
        }
    }
}
