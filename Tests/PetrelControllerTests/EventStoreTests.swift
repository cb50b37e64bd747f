import Foundation
import PetrelCore
import PetrelStore
import Testing

/// The durable event queue on a real SQLite file: group commit keeps every
/// caller's write (and only a failing one is undone), a finished event hands
/// its record on in the same transaction, and a redrive moves letters back.
@Suite("Event store")
struct EventStoreTests {
    func open() throws -> (EventStore, String) {
        let dir = try makeScratchDirectory("events")
        let db = try PetrelDatabase(path: dir + "/petrel.sqlite")
        return (EventStore(db, keys: try KeyRing(directory: dir, db: db)), dir)
    }

    func event(_ id: String, _ n: Int = 0) -> QueuedEvent {
        QueuedEvent(id: id, account: "000000000000", function: "f", payload: Data("{\"n\":\(n)}".utf8), created: 1000, source: "invoke")
    }

    @Test("concurrent enqueues all land; a failing one fails alone")
    func groupCommit() async throws {
        let (store, dir) = try open()
        defer { try? FileManager.default.removeItem(atPath: dir) }
        try await store.enqueue([event("dup")])
        let outcomes = await withTaskGroup(of: Bool.self) { group in
            for i in 0..<200 {
                group.addTask {
                    // Every tenth one reuses a stored id: refused by the primary key.
                    let id = i % 10 == 0 ? "dup" : "e\(i)"
                    return (try? await store.enqueue([self.event(id, i)])) != nil
                }
            }
            return await group.reduce(into: [Bool]()) { $0.append($1) }
        }
        #expect(outcomes.filter { $0 }.count == 180)
        #expect(try store.count() == 181)
        let due = try store.due(now: 1000, limit: 1000, excluding: ["e1"])
        #expect(due.count == 180)
        #expect(due.first { $0.id == "e7" }?.payload == Data("{\"n\":7}".utf8))
    }

    @Test("finishing hands the record on in one step; redrive requeues under new ids")
    func handoffAndRedrive() async throws {
        let (store, dir) = try open()
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let e = event("a", 1)
        try await store.enqueue([e])
        try await store.retry(e, attempts: 1, due: 5000, response: Data("{\"errorType\":\"X\"}".utf8), error: "Unhandled")
        #expect(try store.due(now: 4999, limit: 10, excluding: []).isEmpty)
        let again = try #require(try store.due(now: 5000, limit: 10, excluding: []).first)
        #expect(again.attempts == 1 && again.lastResponse == Data("{\"errorType\":\"X\"}".utf8) && again.lastError == "Unhandled")
        let letter = DeadLetter(
            account: e.account, function: "f", requestID: "a", condition: "RetriesExhausted", created: 6000,
            record: Data("{\"r\":1}".utf8), payload: e.payload)
        try await store.finish(again, then: .deadLetter(letter))
        // A second finish (a redelivery that raced it) hands nothing on twice.
        try await store.finish(again, then: .deadLetter(letter))
        #expect(try store.count() == 0)
        let letters = try store.deadLetters(account: e.account, function: "f")
        #expect(letters.count == 1 && letters[0].record == Data("{\"r\":1}".utf8))
        #expect(throws: StoreError.self) { try store.redrive(account: e.account, function: "f", ids: [letters[0].id + 1], now: 7000) }
        #expect(try store.deadLetters(account: e.account, function: "f").count == 1)
        let requeued = try store.redrive(account: e.account, function: "f", ids: nil, now: 7000)
        #expect(requeued.count == 1 && requeued[0].id != "a" && requeued[0].payload == e.payload)
        #expect(try store.deadLetters(account: e.account, function: "f").isEmpty)
        #expect(try store.due(now: 7000, limit: 10, excluding: []).map(\.id) == [requeued[0].id])
    }

    @Test("the dead-letter table of earlier versions moves into the account's petrel-dlq queue, once")
    func deadLetterMigration() throws {
        let dir = try makeScratchDirectory("events")
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let db = try PetrelDatabase(path: dir + "/petrel.sqlite")
        let keys = try KeyRing(directory: dir, db: db)
        let store = EventStore(db, keys: keys)
        // A letter as earlier versions stored it.
        let context = "dead-letter:000000000000:req-1"
        try db.pool.write { d in
            try d.execute(
                sql: """
                    INSERT INTO dead_letters (account, function, request_id, condition, created, record, payload)
                    VALUES ('000000000000', 'f', 'req-1', 'RetriesExhausted', 1000, ?, ?)
                    """,
                arguments: [
                    try keys.seal(Data("{\"r\":1}".utf8), context: context),
                    try keys.seal(Data("{\"n\":1}".utf8), context: context + ":payload"),
                ])
        }
        #expect(try store.migrateDeadLetters(now: 5000) == 1)
        #expect(try store.migrateDeadLetters(now: 6000) == 0)
        let letters = try store.deadLetters(account: "000000000000", function: "f")
        #expect(letters.count == 1)
        #expect(letters[0].requestID == "req-1" && letters[0].condition == "RetriesExhausted" && letters[0].created == 5000)
        #expect(letters[0].record == Data("{\"r\":1}".utf8) && letters[0].payload == Data("{\"n\":1}".utf8))
        #expect(try store.deadLetters(account: "000000000000", function: "g").isEmpty)
        let queue = try db.pool.read { d in
            try String.fetchOne(
                d, sql: "SELECT name FROM queues q JOIN queue_messages m ON m.queue = q.id WHERE m.seq = ?", arguments: [letters[0].id])
        }
        #expect(queue == "petrel-dlq")
    }
}
