import Foundation
import GRDB
import PetrelCore

/// Layer versions, per account and name. Their content is a code blob like any
/// function's (sealed, named by its SHA-256, stored once however many use it). A
/// deleted version stays as a row marked deleted: its number is never given again,
/// and the functions that use it keep it.
public struct LayerStore: Sendable {
    let db: PetrelDatabase

    public init(_ db: PetrelDatabase) {
        self.db = db
    }

    static func decode(_ text: String) throws -> LayerVersionRecord {
        try FunctionStore.decoder.decode(LayerVersionRecord.self, from: Data(text.utf8))
    }

    static func encode(_ l: LayerVersionRecord) throws -> String {
        String(decoding: try FunctionStore.encoder.encode(l), as: UTF8.self)
    }

    /// Stores `layer` as the next version of its name (the number it gets is set here).
    public func publish(_ layer: LayerVersionRecord) throws -> LayerVersionRecord {
        try db.pool.write { db in
            var l = layer
            let last = try Int.fetchOne(
                db, sql: "SELECT MAX(version) FROM layer_versions WHERE account = ? AND name = ?", arguments: [l.account, l.name])
            l.version = (last ?? 0) + 1
            try db.execute(
                sql: "INSERT INTO layer_versions (account, name, version, record, code_hex) VALUES (?, ?, ?, ?, ?)",
                arguments: [l.account, l.name, l.version, try Self.encode(l), l.codeDigestHex])
            return l
        }
    }

    /// One version, deleted or not (the caller decides what a deleted one may still do).
    public func get(account: String, _ name: String, _ version: Int) throws -> LayerVersionRecord? {
        try db.pool.read { db in
            try String.fetchOne(
                db, sql: "SELECT record FROM layer_versions WHERE account = ? AND name = ? AND version = ?",
                arguments: [account, name, version])
        }.map(Self.decode)
    }

    /// A layer's live versions, newest first.
    public func versions(account: String, _ name: String) throws -> [LayerVersionRecord] {
        try db.pool.read { db in
            try String.fetchAll(
                db, sql: "SELECT record FROM layer_versions WHERE account = ? AND name = ? AND deleted = 0 ORDER BY version DESC",
                arguments: [account, name])
        }.map(Self.decode)
    }

    /// The account's layers that have a live version, by name.
    public func names(account: String) throws -> [String] {
        try db.pool.read { db in
            try String.fetchAll(
                db, sql: "SELECT DISTINCT name FROM layer_versions WHERE account = ? AND deleted = 0 ORDER BY name", arguments: [account])
        }
    }

    /// Marks a version deleted; answers it (nil: there was no live one).
    public func delete(account: String, _ name: String, _ version: Int) throws -> LayerVersionRecord? {
        try rewrite(account: account, name, version) { $0.deleted = true }
    }

    /// Applies `change` to a live version in one transaction (its policy); nil when there is none.
    public func update(
        account: String, _ name: String, _ version: Int, _ change: (inout LayerVersionRecord) throws -> Void
    ) throws -> LayerVersionRecord? {
        try rewrite(account: account, name, version) { l in
            try change(&l)
            l.revisionId = FastIDs.uuid()
        }
    }

    private func rewrite(
        account: String, _ name: String, _ version: Int, _ change: (inout LayerVersionRecord) throws -> Void
    ) throws -> LayerVersionRecord? {
        try db.pool.write { db in
            guard
                var l = try String.fetchOne(
                    db, sql: "SELECT record FROM layer_versions WHERE account = ? AND name = ? AND version = ? AND deleted = 0",
                    arguments: [account, name, version]
                ).map(Self.decode)
            else { return nil }
            try change(&l)
            try db.execute(
                sql: "UPDATE layer_versions SET record = ?, deleted = ? WHERE account = ? AND name = ? AND version = ?",
                arguments: [try Self.encode(l), l.deleted, account, name, version])
            return l
        }
    }
}
