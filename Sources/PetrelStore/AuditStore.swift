import Foundation
import GRDB

/// The audit trail: one row per API call, refused ones included. The table
/// refuses UPDATE, and DELETE of any record at or after its horizon (triggers):
/// records are only ever added, and leave only by age (`expire`).
public struct AuditStore: Sendable {
    let db: PetrelDatabase
    public init(_ db: PetrelDatabase) { self.db = db }

    public struct Record: Sendable, Codable, Equatable {
        public var seq: Int64?
        /// Milliseconds since the epoch.
        public var time: Int64
        public var account: String?
        public var accessKey: String?
        public var source: String
        public var action: String
        public var resource: String?
        /// JSON of the call's parameters, secrets taken out.
        public var parameters: String
        public var status: Int
        public var errorCode: String?
        /// Who signed, when not the account's own keys: an assumed role's session ARN.
        public var principal: String?

        public init(
            time: Int64, account: String?, accessKey: String?, source: String, action: String, resource: String?,
            parameters: String, status: Int, errorCode: String?, principal: String? = nil
        ) {
            self.principal = principal
            self.time = time
            self.account = account
            self.accessKey = accessKey
            self.source = source
            self.action = action
            self.resource = resource
            self.parameters = parameters
            self.status = status
            self.errorCode = errorCode
        }
    }

    public func append(_ records: [Record]) throws {
        try db.pool.write { db in
            let stmt = try db.cachedStatement(
                sql: """
                    INSERT INTO audit (time, account, key_id, source, action, resource, parameters, status, error, principal)
                    VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)
                    """)
            for r in records {
                try stmt.execute(arguments: [
                    r.time, r.account, r.accessKey, r.source, r.action, r.resource, r.parameters, r.status, r.errorCode, r.principal,
                ])
            }
        }
    }

    /// Where the trail now begins: records older than this (milliseconds since the epoch) have expired.
    public func horizon() throws -> Int64 {
        try db.pool.read { db in try Int64.fetchOne(db, sql: "SELECT time FROM audit_horizon WHERE id = 1") ?? 0 }
    }

    /// Moves the horizon to `days` before `nowMs` (never back) and deletes the records
    /// older than it, `limit` to a transaction. When any went, the trail records that
    /// itself (action `ExpireAuditRecords`, source `petreld`). Returns how many went.
    public func expire(nowMs: Int64, days: Int, limit: Int = 5_000) throws -> Int {
        let cutoff = nowMs - Int64(days) * 86_400_000
        let horizon = try db.pool.write { db -> Int64 in
            try db.execute(sql: "UPDATE audit_horizon SET time = max(time, ?) WHERE id = 1", arguments: [cutoff])
            return try Int64.fetchOne(db, sql: "SELECT time FROM audit_horizon WHERE id = 1") ?? 0
        }
        let deleted = try db.deleteInBatches(
            "DELETE FROM audit WHERE seq IN (SELECT seq FROM audit WHERE time < ? ORDER BY time LIMIT ?)",
            [horizon], limit: limit)
        if deleted > 0 {
            try append([
                Record(
                    time: nowMs, account: nil, accessKey: nil, source: "petreld", action: "ExpireAuditRecords", resource: nil,
                    parameters: #"{"before":\#(horizon),"days":\#(days),"deleted":\#(deleted)}"#, status: 200, errorCode: nil)
            ])
        }
        return deleted
    }

    /// Records in order, optionally since a time, of one account, of one action.
    public func records(since: Int64? = nil, account: String? = nil, action: String? = nil, limit: Int = Int.max) throws -> [Record] {
        try db.pool.read { db in
            try Row.fetchAll(
                db,
                sql: """
                    SELECT * FROM audit WHERE time >= ? AND (? IS NULL OR account = ?) AND (? IS NULL OR action = ?)
                    ORDER BY seq LIMIT ?
                    """, arguments: [since ?? 0, account, account, action, action, limit])
        }.map { row in
            var r = Record(
                time: row["time"], account: row["account"], accessKey: row["key_id"], source: row["source"], action: row["action"],
                resource: row["resource"], parameters: row["parameters"], status: row["status"], errorCode: row["error"],
                principal: row["principal"])
            r.seq = row["seq"]
            return r
        }
    }
}
