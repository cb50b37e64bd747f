import Foundation
import GRDB
import Testing

@testable import PetrelStore

/// The log store on a real SQLite file: streams by id (v4), a store written
/// by the v3 schema keeps every event through the migration, and batches of
/// one stream in one transaction share its row.
@Suite("Log store")
struct LogStoreTests {
    static let account = "000000000000"

    func directory() throws -> String { try makeScratchDirectory("logs") }

    @Test("expiry deletes events older than their group's retention, else the default, in bounded batches")
    func expiry() throws {
        let dir = try directory()
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let store = LogStore(try PetrelDatabase(path: dir + "/petrel.sqlite", adminAccount: Self.account))
        let day: Int64 = 86_400_000
        let now: Int64 = 1_800_000_000_000
        func g(_ name: String) -> String { LogStore.stored(account: Self.account, group: "/aws/lambda/" + name) }
        // Each group: a stream wholly older than 40 days, and one that goes from 40 days ago to now.
        for name in ["default", "own", "forever"] {
            try store.append(group: g(name), stream: "old", lines: (0..<7).map { (now - 50 * day + Int64($0), "old \($0)") })
            try store.append(
                group: g(name), stream: "mixed", lines: [(now - 40 * day, "40 days"), (now - 2 * day, "2 days"), (now, "now")])
        }
        #expect(try store.setRetention(account: Self.account, group: "/aws/lambda/own", days: 1))
        #expect(try store.setRetention(account: Self.account, group: "/aws/lambda/forever", days: 3653))
        #expect(try !store.setRetention(account: Self.account, group: "/aws/lambda/none", days: 1), "a group with no events")
        #expect(try store.groups(account: Self.account, prefix: "/aws/lambda/").map(\.retentionDays) == [nil, 3653, 1])
        func left(_ name: String) throws -> [String] {
            try store.events(
                account: Self.account, group: "/aws/lambda/" + name, streams: nil, start: nil, end: nil, contains: nil,
                afterID: nil, limit: 100
            ).map(\.message)
        }
        func ids(_ name: String) throws -> [String: Int64] {
            Dictionary(
                uniqueKeysWithValues: try store.events(
                    account: Self.account, group: "/aws/lambda/" + name, streams: nil, start: nil, end: nil, contains: nil,
                    afterID: nil, limit: 100
                ).map { ($0.message, $0.id) })
        }
        let before = try ids("default")
        // Batches of 3: every old event still goes.
        #expect(try store.expire(nowMs: now, defaultDays: 30, limit: 3) == 8 + 9)
        #expect(try left("default") == ["2 days", "now"])
        // The "mixed" batch straddled the cutoff: the lines it keeps keep their ids (paging tokens hold).
        #expect(try ids("default") == before.filter { ["2 days", "now"].contains($0.key) })
        #expect(try left("own") == ["now"])
        #expect(try left("forever").count == 10)
        // The stream whose events all went is gone; the others stay.
        #expect(
            try store.streams(account: Self.account, group: "/aws/lambda/default", prefix: nil, newestFirst: false, limit: 10).map(\.name)
                == ["mixed"])
        #expect(
            try store.streams(account: Self.account, group: "/aws/lambda/forever", prefix: nil, newestFirst: false, limit: 10).count == 2)
        // Nothing more to do; with no default, a group without a policy keeps everything.
        #expect(try store.expire(nowMs: now, defaultDays: 30) == 0)
        #expect(try store.setRetention(account: Self.account, group: "/aws/lambda/own", days: nil))
        #expect(try store.expire(nowMs: now + 10 * day, defaultDays: nil) == 0)
        #expect(try left("own") == ["now"])
        #expect(try store.expire(nowMs: now + 10 * day, defaultDays: 7) == 1 + 2)
        #expect(try left("default").isEmpty && left("own").isEmpty)
        #expect(try store.groups(account: Self.account, prefix: "/aws/lambda/").map(\.name) == ["/aws/lambda/forever"])
    }

    @Test("a store written by the v3 schema keeps its events, ids and streams through the migration")
    func migration() throws {
        let dir = try directory()
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let path = dir + "/petrel.sqlite"
        let g1 = Self.account + "/aws/lambda/one"
        let g2 = Self.account + "/aws/lambda/two"
        var written: [(id: Int64, group: String, stream: String, ts: Int64, message: String)] = []
        do {
            let old = try DatabasePool(path: path)
            try PetrelDatabase.migrator(adminAccount: Self.account).migrate(old, upTo: "v3-events")
            try old.write { db in
                for (g, s, created, last) in [
                    (g1, "2026/11/20/[$LATEST]aa", 1_000, 1_030), (g1, "2026/11/21/[$LATEST]bb", 2_000, 2_020),
                    (g2, "2026/11/20/[$LATEST]aa", 1_500, 1_510),
                ] as [(String, String, Int64, Int64)] {
                    try db.execute(sql: "INSERT INTO log_streams VALUES (?, ?, ?, ?)", arguments: [g, s, created, last])
                }
                // Interleaved as instances write, plus an event whose stream row is missing.
                let lines: [(String, String, Int64, String)] = [
                    (g1, "2026/11/20/[$LATEST]aa", 1_000, "START one"), (g2, "2026/11/20/[$LATEST]aa", 1_500, "START two"),
                    (g1, "2026/11/21/[$LATEST]bb", 2_000, "hello \"quoted\"\tand tabbed"), (g1, "2026/11/20/[$LATEST]aa", 1_030, "END one"),
                    (g2, "2026/11/20/[$LATEST]aa", 1_510, "END two"), (g2, "2026/11/22/[$LATEST]cc", 3_000, "orphan line"),
                ]
                for (g, s, ts, m) in lines {
                    try db.execute(
                        sql: "INSERT INTO log_events (log_group, log_stream, timestamp, ingested, message) VALUES (?, ?, ?, ?, ?)",
                        arguments: [g, s, ts, ts + 1, m])
                    written.append((db.lastInsertedRowID, g, s, ts, m))
                }
                // A gap in the ids, as a deleted tail would leave: the migration keeps the ids, not a renumbering.
                try db.execute(sql: "UPDATE sqlite_sequence SET seq = seq + 100 WHERE name = 'log_events'")
                try db.execute(
                    sql: "INSERT INTO log_events (log_group, log_stream, timestamp, ingested, message) VALUES (?, ?, ?, ?, ?)",
                    arguments: [g1, "2026/11/20/[$LATEST]aa", 1_031, 1_032, "after the gap"])
                written.append((db.lastInsertedRowID, g1, "2026/11/20/[$LATEST]aa", 1_031, "after the gap"))
            }
        }
        let store = LogStore(try PetrelDatabase(path: path, adminAccount: Self.account))
        for g in ["/aws/lambda/one", "/aws/lambda/two"] {
            let got = try store.events(
                account: Self.account, group: g, streams: nil, start: nil, end: nil, contains: nil, afterID: nil, limit: 100)
            let want = written.filter { $0.group == Self.account + g }
            #expect(got.map(\.id) == want.map(\.id))
            #expect(got.map(\.stream) == want.map(\.stream))
            #expect(got.map(\.timestamp) == want.map(\.ts))
            #expect(got.map(\.ingested) == want.map { $0.ts + 1 })
            #expect(got.map(\.message) == want.map(\.message))
        }
        let streams = try store.streams(account: Self.account, group: "/aws/lambda/one", prefix: nil, newestFirst: false, limit: 50)
        #expect(
            streams == [
                .init(name: "2026/11/20/[$LATEST]aa", created: 1_000, lastEvent: 1_030),
                .init(name: "2026/11/21/[$LATEST]bb", created: 2_000, lastEvent: 2_020),
            ])
        let orphan = try store.streams(account: Self.account, group: "/aws/lambda/two", prefix: "2026/11/22", newestFirst: false, limit: 50)
        #expect(orphan == [.init(name: "2026/11/22/[$LATEST]cc", created: 3_000, lastEvent: 3_000)])
        // New events go after every migrated id, into the migrated stream rows.
        try store.append(group: Self.account + "/aws/lambda/one", stream: "2026/11/20/[$LATEST]aa", lines: [(4_000, "new")])
        let all = try store.events(
            account: Self.account, group: "/aws/lambda/one", streams: ["2026/11/20/[$LATEST]aa"], start: nil, end: nil,
            contains: nil, afterID: nil, limit: 100)
        #expect(all.map(\.message) == ["START one", "END one", "after the gap", "new"])
        #expect(all.last!.id > written.map(\.id).max()!)
        #expect(
            try store.streams(account: Self.account, group: "/aws/lambda/one", prefix: "2026/11/20", newestFirst: false, limit: 1).first?
                .lastEvent == 4_000)
    }

    @Test("batches of one stream in one transaction share its row; queries by stream, time, text and token")
    func appendAndQuery() throws {
        let dir = try directory()
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let store = LogStore(try PetrelDatabase(path: dir + "/petrel.sqlite", adminAccount: Self.account))
        let g = Self.account + "/aws/lambda/f"
        try store.append([
            (group: g, stream: "a", lines: [(10, "START 1"), (11, "END 1")]),
            (group: g, stream: "b", lines: [(12, "START 2")]),
            (group: g, stream: "a", lines: [(20, "START 3"), (21, "END 3")]),
            (group: g, stream: "b", lines: []),
            (group: g, stream: "b", lines: [(15, "END 2")]),
            (group: Self.account + "/aws/lambda/other", stream: "a", lines: [(30, "elsewhere")]),
        ])
        let streams = try store.streams(account: Self.account, group: "/aws/lambda/f", prefix: nil, newestFirst: false, limit: 50)
        #expect(streams == [.init(name: "a", created: 10, lastEvent: 21), .init(name: "b", created: 12, lastEvent: 15)])
        // A later transaction with an older line does not move last_event back.
        try store.append(group: g, stream: "a", lines: [(5, "late")])
        #expect(
            try store.streams(account: Self.account, group: "/aws/lambda/f", prefix: "a", newestFirst: false, limit: 1).first?.lastEvent
                == 21)

        func messages(
            _ streams: [String]? = nil, start: Int64? = nil, end: Int64? = nil, contains: String? = nil, after: Int64? = nil,
            limit: Int = 100
        ) throws -> [String] {
            try store.events(
                account: Self.account, group: "/aws/lambda/f", streams: streams, start: start, end: end, contains: contains,
                afterID: after, limit: limit
            ).map(\.message)
        }
        #expect(try messages() == ["START 1", "END 1", "START 2", "START 3", "END 3", "END 2", "late"])
        #expect(try messages(["b"]) == ["START 2", "END 2"])
        #expect(try messages(start: 12, end: 21) == ["START 2", "START 3", "END 2"])
        #expect(try messages(contains: "END") == ["END 1", "END 3", "END 2"])
        let first = try store.events(
            account: Self.account, group: "/aws/lambda/f", streams: nil, start: nil, end: nil, contains: nil,
            afterID: nil, limit: 2)
        #expect(first.map(\.message) == ["START 1", "END 1"])
        #expect(try messages(after: first.last!.id, limit: 2) == ["START 2", "START 3"])
        #expect(try messages(["nope"]).isEmpty)
        #expect(
            try store.events(
                account: "111111111111", group: "/aws/lambda/f", streams: nil, start: nil, end: nil, contains: nil,
                afterID: nil, limit: 100
            ).isEmpty)
    }
}
