import Foundation
import GRDB
import Testing

@testable import PetrelStore

/// The audit trail loses records only by age: those older than its horizon, which
/// only moves forward; everything at or after it still refuses DELETE and UPDATE.
@Suite("Audit store")
struct AuditStoreTests {
    static let account = "000000000000"
    static let day: Int64 = 86_400_000

    func record(_ time: Int64, _ action: String = "Invoke") -> AuditStore.Record {
        AuditStore.Record(
            time: time, account: Self.account, accessKey: "AKIA", source: "127.0.0.1", action: action,
            resource: "f", parameters: "{}", status: 200, errorCode: nil)
    }

    @Test("expiry deletes records older than the horizon in bounded batches, records itself, and never moves the horizon back")
    func expiry() throws {
        let dir = try makeScratchDirectory("audit")
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let db = try PetrelDatabase(path: dir + "/petrel.sqlite", adminAccount: Self.account)
        let audit = AuditStore(db)
        let now: Int64 = 1_800_000_000_000
        // 23 records 100 days old, 5 at 89 days, 4 new.
        try audit.append((0..<23).map { record(now - 100 * Self.day + Int64($0)) })
        try audit.append((0..<5).map { record(now - 89 * Self.day + Int64($0)) })
        try audit.append((0..<4).map { record(now - Int64($0)) })
        #expect(try audit.horizon() == 0)

        #expect(try audit.expire(nowMs: now, days: 90, limit: 5) == 23)
        #expect(try audit.horizon() == now - 90 * Self.day)
        let left = try audit.records()
        #expect(left.count == 5 + 4 + 1)
        #expect(left.allSatisfy { $0.time >= now - 90 * Self.day })
        let note = try #require(left.last)
        #expect(note.action == "ExpireAuditRecords" && note.source == "petreld" && note.account == nil)
        #expect(note.parameters == #"{"before":\#(now - 90 * Self.day),"days":90,"deleted":23}"#)

        // A longer retention later does not bring the horizon back; nothing to delete, nothing recorded.
        #expect(try audit.expire(nowMs: now, days: 365) == 0)
        #expect(try audit.horizon() == now - 90 * Self.day)
        #expect(try audit.records().count == 10)

        // What is at or after the horizon cannot be deleted or changed, not even by hand;
        // the horizon cannot be moved back or removed.
        try db.pool.write { db in
            for sql in [
                "DELETE FROM audit", "DELETE FROM audit WHERE time >= \(now - 90 * Self.day)", "UPDATE audit SET action = 'x'",
                "UPDATE audit_horizon SET time = 0", "DELETE FROM audit_horizon",
                "INSERT INTO audit_horizon (id, time) VALUES (2, 0)",
            ] {
                #expect(throws: DatabaseError.self, "\(sql)") { try db.execute(sql: sql) }
            }
        }
        #expect(try audit.records().count == 10)
        #expect(try audit.horizon() == now - 90 * Self.day)
    }
}
