import Foundation
import GRDB
import PetrelCore
import Synchronization

/// Function URLs, by id (every URL request looks one up: served from memory) and by
/// function and qualifier (one each).
public final class FunctionURLStore: Sendable {
    let db: PetrelDatabase
    private let byID = Mutex<[String: FunctionURLConfig]?>(nil)

    public init(_ db: PetrelDatabase) {
        self.db = db
    }

    static func decode(_ json: String) throws -> FunctionURLConfig {
        try FunctionStore.decoder.decode(FunctionURLConfig.self, from: Data(json.utf8))
    }

    static func encode(_ u: FunctionURLConfig) throws -> String {
        String(decoding: try FunctionStore.encoder.encode(u), as: UTF8.self)
    }

    /// The URL with this id (nil: none), from memory once loaded.
    public func url(id: String) throws -> FunctionURLConfig? {
        if let hit = byID.withLock({ $0.map { $0[id] } }) { return hit }
        let all = try db.pool.read { db in try String.fetchAll(db, sql: "SELECT record FROM function_urls") }.map(Self.decode)
        let map = Dictionary(uniqueKeysWithValues: all.map { ($0.id, $0) })
        byID.withLock { $0 = map }
        return map[id]
    }

    public func url(account: String, function: String, qualifier: String?) throws -> FunctionURLConfig? {
        try db.pool.read { db in
            try String.fetchOne(
                db, sql: "SELECT record FROM function_urls WHERE account = ? AND function = ? AND qualifier = ?",
                arguments: [account, function, qualifier ?? ""])
        }.map(Self.decode)
    }

    /// A function's URLs (its own first, then its aliases').
    public func urls(account: String, function: String) throws -> [FunctionURLConfig] {
        try db.pool.read { db in
            try String.fetchAll(
                db, sql: "SELECT record FROM function_urls WHERE account = ? AND function = ? ORDER BY qualifier",
                arguments: [account, function])
        }.map(Self.decode)
    }

    /// Stores a new URL; false when its function and qualifier have one already.
    public func insert(_ u: FunctionURLConfig) throws -> Bool {
        let inserted = try db.pool.write { db -> Bool in
            let taken = try Bool.fetchOne(
                db, sql: "SELECT EXISTS (SELECT 1 FROM function_urls WHERE account = ? AND function = ? AND qualifier = ?)",
                arguments: [u.account, u.function, u.qualifier ?? ""])
            if taken == true { return false }
            // An id given before fails here (its primary key): none is given twice.
            try db.execute(sql: "INSERT INTO url_ids (id) VALUES (?)", arguments: [u.id])
            try db.execute(
                sql: "INSERT INTO function_urls (id, account, function, qualifier, record) VALUES (?, ?, ?, ?, ?)",
                arguments: [u.id, u.account, u.function, u.qualifier ?? "", try Self.encode(u)])
            return true
        }
        if inserted { byID.withLock { $0?[u.id] = u } }
        return inserted
    }

    /// Applies `change` in one transaction; nil when there is no such URL.
    public func update(
        account: String, function: String, qualifier: String?, _ change: (inout FunctionURLConfig) throws -> Void
    ) throws -> FunctionURLConfig? {
        let updated = try db.pool.write { db -> FunctionURLConfig? in
            guard
                var u = try String.fetchOne(
                    db, sql: "SELECT record FROM function_urls WHERE account = ? AND function = ? AND qualifier = ?",
                    arguments: [account, function, qualifier ?? ""]
                ).map(Self.decode)
            else { return nil }
            try change(&u)
            u.lastModified = Date()
            try db.execute(sql: "UPDATE function_urls SET record = ? WHERE id = ?", arguments: [try Self.encode(u), u.id])
            return u
        }
        if let updated { byID.withLock { $0?[updated.id] = updated } }
        return updated
    }

    /// Deletes the URLs of a function (a qualifier's, or all of them when `qualifier` is
    /// nil and `all`); answers what went.
    @discardableResult
    public func delete(account: String, function: String, qualifier: String?, all: Bool = false) throws -> [FunctionURLConfig] {
        let gone = try db.pool.write { db -> [FunctionURLConfig] in
            let rows =
                all
                ? try String.fetchAll(
                    db, sql: "SELECT record FROM function_urls WHERE account = ? AND function = ?", arguments: [account, function])
                : try String.fetchAll(
                    db, sql: "SELECT record FROM function_urls WHERE account = ? AND function = ? AND qualifier = ?",
                    arguments: [account, function, qualifier ?? ""])
            let urls = try rows.map(Self.decode)
            for u in urls { try db.execute(sql: "DELETE FROM function_urls WHERE id = ?", arguments: [u.id]) }
            return urls
        }
        byID.withLock { m in for u in gone { m?[u.id] = nil } }
        return gone
    }
}
