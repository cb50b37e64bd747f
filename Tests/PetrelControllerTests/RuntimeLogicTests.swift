import Foundation
import NIOCore
import PetrelCore
import Testing

@testable import PetrelRuntime

/// The runtime's pure logic, in-process: who is admitted, which idle instance
/// goes first, and how a failed instance is reported.
@Suite("Runtime logic")
struct RuntimeLogicTests {
    final class Member {
        let name: String
        var usable = true
        var here = false
        init(_ name: String) { self.name = name }
    }

    @Test("admission: the account's unreserved pool, a function's reserved share, the minimum left unreserved")
    func admission() throws {
        var a = Admission(accountLimit: 20, memoryBudgetMB: 1_000)
        #expect(a.minimumUnreserved == 2)
        try a.setReserved("r", 3)
        #expect(a.unreservedLimit == 17)
        // The reserved function runs within its 3 only, and does not take from the pool.
        var tickets: [Admission.Ticket] = []
        for _ in 0..<3 { tickets.append(try #require(try? a.admit("r").get())) }
        #expect(throws: Admission.Refusal.reserved) { try a.admit("r").get() }
        for _ in 0..<17 { tickets.append(try #require(try? a.admit("f\(tickets.count)").get())) }
        #expect(throws: Admission.Refusal.account) { try a.admit("other").get() }
        #expect(a.totalInFlight == 20)
        a.release(tickets.removeFirst())
        #expect(try a.admit("r").get().fromReserved)
        a.release(tickets.removeLast())
        #expect(try !a.admit("other").get().fromReserved)
        // A reservation that leaves less than the minimum unreserved is refused, and changes nothing.
        #expect(throws: DomainError.self) { try a.setReserved("big", 16) }
        #expect(throws: DomainError.self) { try a.setReserved("neg", -1) }
        #expect(a.reserved == ["r": 3])
        // The refusals carry Lambda's reasons.
        #expect(Admission.Refusal.reserved.error.reason == "ReservedFunctionConcurrentInvocationLimitExceeded")
        #expect(Admission.Refusal.capacity.error.code == .throttled)
        // Memory: what fits the budget.
        a.charge(memoryMB: 900)
        #expect(a.fits(memoryMB: 100) && !a.fits(memoryMB: 101))
        a.uncharge(memoryMB: 900)
        #expect(a.memoryInUseMB == 0)
    }

    @Test("the idle pool: the most recent first, one on the caller's loop preferred, least recently used evicted first")
    func idlePool() {
        var pool = IdlePool<Member>()
        let t0 = ContinuousClock.now
        let (a1, a2, a3, b1) = (Member("a1"), Member("a2"), Member("a3"), Member("b1"))
        pool.add(a1, function: "a", at: t0)
        pool.add(b1, function: "b", at: t0 + .seconds(1))
        pool.add(a2, function: "a", at: t0 + .seconds(2))
        pool.add(a3, function: "a", at: t0 + .seconds(3))
        #expect(pool.count == 4)
        // The most recently used, unless one nearby is on the caller's loop.
        a2.here = true
        #expect(pool.take("a", preferred: { $0.here }, usable: { $0.usable }).member === a2)
        #expect(pool.take("a", preferred: { $0.here }, usable: { $0.usable }).member === a3)
        pool.add(a2, function: "a", at: t0 + .seconds(4))
        // An unusable one on the way is handed back as stale.
        a2.usable = false
        let taken = pool.take("a", preferred: { _ in false }, usable: { $0.usable })
        #expect(taken.member === a1 && taken.stale.map(\.name) == ["a2"])
        #expect(pool.take("a", preferred: { _ in false }, usable: { _ in true }).member == nil)
        // Eviction: the least recently used of all functions, skipping what may not go.
        pool.add(a1, function: "a", at: t0 + .seconds(5))
        pool.add(a3, function: "a", at: t0 + .seconds(6))
        #expect(pool.evictOldest(where: { $0 !== b1 })?.member === a1)
        #expect(pool.evictOldest(where: { _ in true })?.member === b1)
        #expect(pool.members(of: "b").isEmpty)
        // Expiry: idle for the keep-alive or longer, unless kept.
        #expect(pool.expire(now: t0 + .seconds(10), keepAlive: .seconds(5), where: { _ in true }).isEmpty, "a3 has been idle 4 s")
        #expect(pool.expire(now: t0 + .seconds(11), keepAlive: .seconds(5), where: { _ in false }).isEmpty)
        #expect(pool.expire(now: t0 + .seconds(11), keepAlive: .seconds(5), where: { _ in true }).map(\.name) == ["a3"])
        #expect(pool.count == 0)
        // removeAll asks once per member, oldest first.
        for (i, m) in [a1, a2, a3].enumerated() { pool.add(m, function: "a", at: t0 + .seconds(i)) }
        var asked: [String] = []
        let gone = pool.removeAll("a") {
            asked.append($0.name)
            return $0 !== a2
        }
        #expect(asked == ["a1", "a2", "a3"] && gone.map(\.name) == ["a1", "a3"] && pool.members(of: "a").map(\.name) == ["a2"])
    }

    @Test("the record book runs a version's newest record: one read before an update does not bring the old one back")
    func recordBook() {
        var book = RecordBook()
        let old = FunctionRecord(
            account: "000000000000", name: "f", runtime: .python311, handler: "app.handler", role: "arn:aws:iam::000000000000:role/r",
            codeSha256: "old=", codeSize: 1, lastModified: Date(timeIntervalSince1970: 100))
        var new = old
        new.codeSha256 = "new="
        new.revisionId = "r2"
        new.lastModified = Date(timeIntervalSince1970: 101)
        #expect(book.note(old, key: old.instanceKey) == (old, .first))
        #expect(book.note(old, key: old.instanceKey) == (old, .none))
        book.set(new.instanceKey, new) // the update
        // An invocation that read the record before the update runs the new one, and changes nothing.
        #expect(book.note(old, key: old.instanceKey) == (new, .none))
        #expect(book.isCurrent(new, key: new.instanceKey) && !book.isCurrent(old, key: old.instanceKey))
        // A newer record seen first through an invocation replaces the known one.
        var newer = new
        newer.revisionId = "r3"
        newer.lastModified = Date(timeIntervalSince1970: 102)
        #expect(book.note(newer, key: newer.instanceKey) == (newer, .newer))
        // Versions are apart: version 1's record does not touch $LATEST's.
        let v1 = newer.published(as: 1, description: nil)
        #expect(book.note(v1, key: v1.instanceKey).change == .first && book.isCurrent(newer, key: newer.instanceKey))
        book.set(v1.instanceKey, nil) // deleted
        #expect(!book.isCurrent(v1, key: v1.instanceKey))
    }

    @Test("a failed instance is reported as Lambda reports it: error type, message and the REPORT status")
    func failures() {
        let id = "rid-1"
        func doc(_ f: InstanceFailure) -> (String, [String: String]) {
            let d = f.document(requestID: id)
            return (d.type, (try? JSONSerialization.jsonObject(with: Data(d.json.utf8)) as? [String: String]) ?? [:])
        }
        #expect(doc(.timedOut(seconds: 3)).0 == "Sandbox.Timedout")
        #expect(doc(.timedOut(seconds: 3)).1["errorMessage"] == "RequestId: rid-1 Error: Task timed out after 3.00 seconds")
        #expect(InstanceFailure.timedOut(seconds: 3).reportStatus == "timeout")
        #expect(doc(.initTimedOut(seconds: 10)).1["errorMessage"] == "RequestId: rid-1 Error: Init phase timed out after 10.00 seconds")
        let oom = InstanceFailure.exited(report: .init(oom: true, exitCode: nil, signal: 9, startError: nil))
        #expect(doc(oom).0 == "Runtime.OutOfMemory")
        #expect(oom.reportStatus == "error\tError Type: Runtime.OutOfMemory")
        let crash = InstanceFailure.exited(report: .init(oom: false, exitCode: nil, signal: 11, startError: nil))
        #expect(doc(crash).1["errorMessage"] == "RequestId: rid-1 Error: Runtime exited with error: signal: segmentation fault")
        let exit = InstanceFailure.exited(report: .init(oom: false, exitCode: 3, signal: nil, startError: nil))
        #expect(
            doc(exit) == (
                "Runtime.ExitError",
                ["errorType": "Runtime.ExitError", "errorMessage": "RequestId: rid-1 Error: Runtime exited with error: exit status 3"]
            ))
        let missing = InstanceFailure.exited(report: .init(oom: false, exitCode: 127, signal: nil, startError: "no /var/task/bootstrap"))
        #expect(doc(missing).0 == "Runtime.InvalidEntrypoint")
        // The runtime's own init error document passes through with its type.
        #expect(
            InstanceFailure.initError(ByteBuffer(string: "{\"x\":1}"), type: "Runtime.ImportModuleError").document(requestID: id)
                == ("Runtime.ImportModuleError", "{\"x\":1}"))
        #expect(doc(.responseTooLarge).0 == "Function.ResponseSizeTooLarge")
        #expect(
            PlatformLines.report("r", durationMs: 1.234, memoryMB: 128, maxMemoryUsedMB: 20, initDurationMs: 15.5, status: "timeout")
                == "REPORT RequestId: r\tDuration: 1.23 ms\tBilled Duration: 2 ms\tMemory Size: 128 MB\tMax Memory Used: 20 MB\tInit Duration: 15.50 ms\tStatus: timeout"
        )
    }
}
