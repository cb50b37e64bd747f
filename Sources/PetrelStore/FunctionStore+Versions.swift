import Foundation
import GRDB
import PetrelCore

/// Published versions (frozen copies of `$LATEST`) and aliases, and the one place a
/// qualifier becomes the record an invocation runs.
extension FunctionStore {
    static func versionKey(_ account: String, _ name: String, _ version: Int) -> String { cacheKey(account, name) + ":\(version)" }
    static func aliasKey(_ account: String, _ name: String, _ alias: String) -> String { cacheKey(account, name) + ":" + alias }

    /// What a qualifier names.
    public enum Target: Sendable {
        /// `$LATEST` or a published version.
        case version(FunctionRecord)
        /// An alias, with the version this invocation runs (picked by the alias's weights).
        case alias(FunctionAlias, FunctionRecord)

        public var record: FunctionRecord {
            switch self {
            case .version(let f), .alias(_, let f): f
            }
        }
    }

    /// The record a qualifier (nil or `$LATEST`, a version number, an alias) names now; nil
    /// when the function or the qualifier does not exist. An alias with weights picks one
    /// of its versions at random, each with its share.
    public func resolve(account: String, _ name: String, qualifier: String?) throws -> Target? {
        guard let q = qualifier, q != FunctionRecord.latest else { return try get(account: account, name).map(Target.version) }
        if FunctionAlias.isVersionNumber(q) {
            guard let n = Int(q) else { return nil }
            return try version(account: account, name, n).map(Target.version)
        }
        guard let alias = try alias(account: account, name, q) else { return nil }
        let picked = alias.pick(draw: alias.weights.isEmpty ? 0 : Double.random(in: 0..<1))
        let record =
            picked == FunctionRecord.latest
            ? try get(account: account, name) : try Int(picked).flatMap { try version(account: account, name, $0) }
        return record.map { .alias(alias, $0) }
    }

    public func version(account: String, _ name: String, _ number: Int) throws -> FunctionRecord? {
        let k = Self.versionKey(account, name, number)
        if let f = cache.records.withLock({ $0[k] }) { return f }
        let f = try db.pool.read { db in
            try Row.fetchOne(
                db, sql: "SELECT record, env_sealed FROM function_versions WHERE account = ? AND name = ? AND version = ?",
                arguments: [account, name, number])
        }.map(decode)
        if let f { cache.records.withLock { $0[k] = f } }
        return f
    }

    /// A function's published versions in order, after version `after`.
    public func versions(account: String, _ name: String, after: Int = 0, limit: Int = Int.max) throws -> [FunctionRecord] {
        try db.pool.read { db in
            try Row.fetchAll(
                db,
                sql:
                    "SELECT record, env_sealed FROM function_versions WHERE account = ? AND name = ? AND version > ? ORDER BY version LIMIT ?",
                arguments: [account, name, after, limit])
        }.map(decode)
    }

    /// PublishVersion in one transaction: `check` sees `$LATEST` first (and may refuse);
    /// when nothing changed since the newest version, that version is answered (and
    /// nothing written), else `$LATEST` is frozen as the next number. Nil: no such function.
    public func publish(
        account: String, _ name: String, description: String?, check: (FunctionRecord) throws -> Void
    ) throws -> (version: FunctionRecord, new: Bool)? {
        try db.pool.write { db in
            guard
                let row = try Row.fetchOne(
                    db, sql: "SELECT record, env_sealed FROM functions WHERE account = ? AND name = ?", arguments: [account, name])
            else { return nil }
            var latest = try decode(row)
            try check(latest)
            if let newest = try Row.fetchOne(
                db, sql: "SELECT record, env_sealed FROM function_versions WHERE account = ? AND name = ? ORDER BY version DESC LIMIT 1",
                arguments: [account, name]
            ).map(decode), latest.sameContent(as: newest) {
                return (newest, false)
            }
            let number = (latest.lastPublished ?? 0) + 1
            let version = latest.published(as: number, description: description)
            let out = try encode(version)
            try db.execute(
                sql: "INSERT INTO function_versions (account, name, version, record, code_hex, env_sealed) VALUES (?, ?, ?, ?, ?, ?)",
                arguments: [account, name, number, out.json, version.codeDigestHex, out.env])
            latest.lastPublished = number
            let l = try encode(latest)
            try db.execute(
                sql: "UPDATE functions SET record = ?, env_sealed = ? WHERE account = ? AND name = ?",
                arguments: [l.json, l.env, account, name])
            cache.records.withLock {
                $0[latest.key] = latest
                $0[Self.versionKey(account, name, number)] = version
            }
            return (version, true)
        }
    }

    public enum VersionDeletion: Sendable {
        case deleted(FunctionRecord)
        case notFound
        /// An alias routes to it.
        case inUse(alias: String)
    }

    /// Deletes a published version unless an alias routes to it.
    public func deleteVersion(account: String, _ name: String, _ number: Int) throws -> VersionDeletion {
        try db.pool.write { db in
            guard
                let row = try Row.fetchOne(
                    db, sql: "SELECT record, env_sealed FROM function_versions WHERE account = ? AND name = ? AND version = ?",
                    arguments: [account, name, number])
            else { return .notFound }
            for a in try aliases(db, account, name) where a.versions.contains(String(number)) { return .inUse(alias: a.name) }
            try db.execute(
                sql: "DELETE FROM function_versions WHERE account = ? AND name = ? AND version = ?", arguments: [account, name, number])
            cache.records.withLock { $0[Self.versionKey(account, name, number)] = nil }
            return .deleted(try decode(row))
        }
    }

    // MARK: - aliases

    static func decodeAlias(_ json: String) throws -> FunctionAlias {
        try decoder.decode(FunctionAlias.self, from: Data(json.utf8))
    }

    public func alias(account: String, _ function: String, _ name: String) throws -> FunctionAlias? {
        let k = Self.aliasKey(account, function, name)
        if let a = cache.aliases.withLock({ $0[k] }) { return a }
        let a = try db.pool.read { db in
            try String.fetchOne(
                db, sql: "SELECT record FROM function_aliases WHERE account = ? AND function = ? AND name = ?",
                arguments: [account, function, name])
        }.map(Self.decodeAlias)
        if let a { cache.aliases.withLock { $0[k] = a } }
        return a
    }

    func aliases(_ db: Database, _ account: String, _ function: String) throws -> [FunctionAlias] {
        try String.fetchAll(
            db, sql: "SELECT record FROM function_aliases WHERE account = ? AND function = ? ORDER BY name", arguments: [account, function]
        ).map(Self.decodeAlias)
    }

    /// A function's aliases in name order.
    public func aliases(account: String, _ function: String) throws -> [FunctionAlias] {
        try db.pool.read { db in try aliases(db, account, function) }
    }

    public enum AliasWrite: Sendable {
        case written(FunctionAlias)
        /// No such function (or, updating, no such alias).
        case notFound
        /// Creating: the name is taken.
        case exists
        /// A version it would route to does not exist.
        case noVersion(String)
    }

    /// Creates (`change` gets nil) or updates an alias in one transaction: `change` returns
    /// the alias to store (or throws to refuse); every version it routes to must exist.
    public func writeAlias(
        account: String, _ function: String, _ name: String, creating: Bool, _ change: (FunctionAlias?) throws -> FunctionAlias
    ) throws -> AliasWrite {
        try db.pool.write { db in
            guard
                try Bool.fetchOne(
                    db, sql: "SELECT EXISTS (SELECT 1 FROM functions WHERE account = ? AND name = ?)", arguments: [account, function])
                    == true
            else { return .notFound }
            let current = try String.fetchOne(
                db, sql: "SELECT record FROM function_aliases WHERE account = ? AND function = ? AND name = ?",
                arguments: [account, function, name]
            ).map(Self.decodeAlias)
            if creating, current != nil { return .exists }
            if !creating, current == nil { return .notFound }
            var alias = try change(current)
            alias.name = name
            for v in alias.versions where v != FunctionRecord.latest {
                let exists = try Bool.fetchOne(
                    db, sql: "SELECT EXISTS (SELECT 1 FROM function_versions WHERE account = ? AND name = ? AND version = ?)",
                    arguments: [account, function, Int(v) ?? -1])
                if exists != true { return .noVersion(v) }
            }
            let json = String(decoding: try Self.encoder.encode(alias), as: UTF8.self)
            try db.execute(
                sql: "INSERT OR REPLACE INTO function_aliases (account, function, name, record) VALUES (?, ?, ?, ?)",
                arguments: [account, function, name, json])
            cache.aliases.withLock { $0[Self.aliasKey(account, function, name)] = alias }
            return .written(alias)
        }
    }

    /// Deletes an alias; answers it, or nil when there was none.
    public func deleteAlias(account: String, _ function: String, _ name: String) throws -> FunctionAlias? {
        try db.pool.write { db in
            let current = try String.fetchOne(
                db, sql: "SELECT record FROM function_aliases WHERE account = ? AND function = ? AND name = ?",
                arguments: [account, function, name]
            ).map(Self.decodeAlias)
            try db.execute(
                sql: "DELETE FROM function_aliases WHERE account = ? AND function = ? AND name = ?", arguments: [account, function, name])
            cache.aliases.withLock { $0[Self.aliasKey(account, function, name)] = nil }
            return current
        }
    }
}
