import Foundation
import GRDB
import PetrelCore
import Synchronization

/// The metadata store: one SQLite database in WAL mode (`<data>/petrel.sqlite`).
public final class PetrelDatabase: Sendable {
    public let pool: DatabasePool

    public init(path: String) throws {
        var config = Configuration()
        config.busyMode = .timeout(10)
        config.prepareDatabase { db in
            try db.execute(sql: "PRAGMA synchronous = NORMAL")
        }
        pool = try DatabasePool(path: path, configuration: config)
        try Self.migrator.migrate(pool)
    }

    static var migrator: DatabaseMigrator {
        var m = DatabaseMigrator()
        m.registerMigration("v1") { db in
            try db.execute(sql: """
                CREATE TABLE functions (
                    name TEXT PRIMARY KEY NOT NULL,
                    record TEXT NOT NULL,
                    code_hex TEXT NOT NULL
                );
                CREATE TABLE log_streams (
                    log_group TEXT NOT NULL,
                    log_stream TEXT NOT NULL,
                    created INTEGER NOT NULL,
                    last_event INTEGER NOT NULL,
                    PRIMARY KEY (log_group, log_stream)
                );
                CREATE TABLE log_events (
                    id INTEGER PRIMARY KEY AUTOINCREMENT,
                    log_group TEXT NOT NULL,
                    log_stream TEXT NOT NULL,
                    timestamp INTEGER NOT NULL,
                    ingested INTEGER NOT NULL,
                    message TEXT NOT NULL
                );
                CREATE INDEX log_events_by_stream ON log_events (log_group, log_stream, id);
                CREATE INDEX log_events_by_time ON log_events (log_group, timestamp, id);
                """)
        }
        return m
    }
}

/// Functions, kept as their JSON record. Reads of one function are served from
/// memory (every invoke reads its function); every write goes through here and
/// updates that copy, and one daemon owns a data directory (it holds its lock).
public struct FunctionStore: Sendable {
    let db: PetrelDatabase
    private let cache = FunctionCache()
    public init(_ db: PetrelDatabase) { self.db = db }

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

    public func get(_ name: String) throws -> FunctionRecord? {
        if let f = cache.records.withLock({ $0[name] }) { return f }
        let f = try db.pool.read { db in
            try String.fetchOne(db, sql: "SELECT record FROM functions WHERE name = ?", arguments: [name])
        }.map { try Self.decoder.decode(FunctionRecord.self, from: Data($0.utf8)) }
        if let f { cache.records.withLock { $0[name] = f } }
        return f
    }

    /// Inserts a new function; false when the name is taken.
    public func insert(_ f: FunctionRecord) throws -> Bool {
        let json = String(decoding: try Self.encoder.encode(f), as: UTF8.self)
        return try db.pool.write { db in
            try db.execute(sql: "INSERT OR IGNORE INTO functions (name, record, code_hex) VALUES (?, ?, ?)",
                           arguments: [f.name, json, f.codeDigestHex])
            let inserted = db.changesCount == 1
            if inserted { cache.records.withLock { $0[f.name] = f } }
            return inserted
        }
    }

    /// Applies `change` to the stored record in one transaction; nil when there is none.
    /// `change` may throw to refuse (nothing is written then).
    public func update(_ name: String, _ change: (inout FunctionRecord) throws -> Void) throws -> FunctionRecord? {
        try db.pool.write { db in
            guard let text = try String.fetchOne(db, sql: "SELECT record FROM functions WHERE name = ?", arguments: [name]) else { return nil }
            var f = try Self.decoder.decode(FunctionRecord.self, from: Data(text.utf8))
            try change(&f)
            let json = String(decoding: try Self.encoder.encode(f), as: UTF8.self)
            try db.execute(sql: "UPDATE functions SET record = ?, code_hex = ? WHERE name = ?",
                           arguments: [json, f.codeDigestHex, name])
            cache.records.withLock { $0[name] = f }
            return f
        }
    }

    public func delete(_ name: String) throws -> FunctionRecord? {
        try db.pool.write { db in
            guard let text = try String.fetchOne(db, sql: "SELECT record FROM functions WHERE name = ?", arguments: [name]) else { return nil }
            try db.execute(sql: "DELETE FROM functions WHERE name = ?", arguments: [name])
            cache.records.withLock { $0[name] = nil }
            return try Self.decoder.decode(FunctionRecord.self, from: Data(text.utf8))
        }
    }

    /// Functions in name order, starting after `marker`.
    public func list(after marker: String?, limit: Int) throws -> [FunctionRecord] {
        try db.pool.read { db in
            try String.fetchAll(db, sql: "SELECT record FROM functions WHERE name > ? ORDER BY name LIMIT ?",
                                arguments: [marker ?? "", limit])
        }.map { try Self.decoder.decode(FunctionRecord.self, from: Data($0.utf8)) }
    }

    public func count() throws -> Int {
        try db.pool.read { db in try Int.fetchOne(db, sql: "SELECT COUNT(*) FROM functions") ?? 0 }
    }

    public func codeInUse(hex: String) throws -> Bool {
        try db.pool.read { db in
            try Int.fetchOne(db, sql: "SELECT COUNT(*) FROM functions WHERE code_hex = ?", arguments: [hex]) ?? 0
        } > 0
    }

    /// Total size of the stored code (GetAccountSettings' TotalCodeSize).
    /// Code blobs are shared by digest: each counts once.
    public func totalCodeSize() throws -> Int {
        var sizes: [String: Int] = [:]
        for f in try list(after: nil, limit: Int.max) { sizes[f.codeDigestHex] = f.codeSize }
        return sizes.values.reduce(0, +)
    }
}
