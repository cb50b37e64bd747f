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
    private let cache = FunctionCache()

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
        let records = Mutex<[String: FunctionRecord]>([:])
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

    public func delete(account: String, _ name: String) throws -> FunctionRecord? {
        try db.pool.write { db in
            guard
                let row = try Row.fetchOne(
                    db, sql: "SELECT record, env_sealed FROM functions WHERE account = ? AND name = ?",
                    arguments: [account, name])
            else { return nil }
            try db.execute(sql: "DELETE FROM functions WHERE account = ? AND name = ?", arguments: [account, name])
            cache.records.withLock { $0[Self.cacheKey(account, name)] = nil }
            return try decode(row)
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

    public func codeInUse(hex: String) throws -> Bool {
        try db.pool.read { db in
            try Bool.fetchOne(db, sql: "SELECT EXISTS (SELECT 1 FROM functions WHERE code_hex = ?)", arguments: [hex]) ?? false
        }
    }

    /// Total size of an account's stored code (GetAccountSettings' TotalCodeSize).
    /// Code blobs are shared by digest: each counts once.
    public func totalCodeSize(account: String) throws -> Int {
        var sizes: [String: Int] = [:]
        for f in try list(account: account, after: nil, limit: Int.max) { sizes[f.codeDigestHex] = f.codeSize }
        return sizes.values.reduce(0, +)
    }
}
