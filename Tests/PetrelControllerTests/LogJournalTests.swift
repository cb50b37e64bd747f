import Foundation
import PetrelSystem
import Testing

@testable import PetrelStore

/// The log store's chunks and journal on their own: what is written is read
/// back exactly, a damaged tail is where reading stops, applied segments go.
@Suite("Log chunks and journal")
struct LogJournalTests {
    @Test("a chunk gives back every line exactly: times out of order, empty and non-ASCII lines, a long line")
    func chunkRoundTrip() throws {
        let lines: [LogChunk.Line] = [
            .init(1_800_000_000_000, "START RequestId: 8f1c6c3e-1b7e-4a0e-9a3b-2f1e0c6d5a4b Version: $LATEST"),
            .init(1_800_000_000_003, ""), .init(1_799_999_999_000, "late, from before: ünïcödé ✓ 🐦"),
            .init(1_800_000_000_010, String(repeating: "x", count: 300_000)), .init(-5, "before 1970"),
        ]
        let blob = LogChunk.encode(lines[...], base: lines[0].timestamp)
        #expect(try LogChunk.decode(blob, base: lines[0].timestamp) == lines)
        // Damaged: refused, not misread.
        var cut = blob
        cut.removeLast(10)
        #expect(throws: (any Error).self) { try LogChunk.decode(cut, base: 0) }
        #expect(throws: (any Error).self) { try LogChunk.decode([9, 1, 2], base: 0) }
    }

    @Test("an invocation's platform lines compress to a fraction of their text")
    func compression() throws {
        let id = "8f1c6c3e-1b7e-4a0e-9a3b-2f1e0c6d5a4b"
        let lines: [LogChunk.Line] = [
            .init(1, "START RequestId: \(id) Version: $LATEST"), .init(1, "hello from f \(id)"), .init(2, "END RequestId: \(id)"),
            .init(2, "REPORT RequestId: \(id)\tDuration: 0.42 ms\tBilled Duration: 1 ms\tMemory Size: 1769 MB\tMax Memory Used: 12 MB"),
        ]
        let text = lines.reduce(0) { $0 + $1.message.utf8.count }
        let blob = LogChunk.encode(lines[...], base: 1)
        #expect(blob.count * 2 < text, "\(blob.count) bytes for \(text) bytes of text")
        #expect(try LogChunk.decode(blob, base: 1) == lines)
    }

    @Test("the journal keeps batches in order across segments, recovery stops at a damaged record, applied segments go")
    func journal() throws {
        let dir = try makeScratchDirectory("journal")
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let journal = try LogJournal(directory: dir, nextSeq: 7)
        var handed: [UInt64?] = []
        let big = String(repeating: "y", count: 700_000)
        for i in 0..<12 {
            journal.append(group: "g", stream: "s\(i % 2)", lines: [.init(Int64(i), "line \(i)"), .init(Int64(i) + 1, big)]) {
                handed.append($0)
            }
        }
        #expect(handed == (7..<19).map { Optional($0) })
        let segments = Sys.listDirectory(dir)
        #expect(segments.count >= 2, "\(segments)")
        let found = LogJournal.recover(directory: dir, after: 10)
        #expect(found.entries.map(\.seq) == Array(11..<19))
        #expect(found.last == 18)
        #expect(found.entries.first?.lines == [.init(4, "line 4"), .init(5, big)])
        #expect(found.entries.first?.stream == "s0")
        // The store took up to 13: the segments that hold nothing later are removed.
        journal.applied(through: 13)
        let left = LogJournal.recover(directory: dir, after: 0)
        #expect(left.entries.first.map { $0.seq <= 14 } == true && left.last == 18, "\(left.entries.map(\.seq))")
        #expect(Sys.listDirectory(dir).count < segments.count)
        try journal.sync(through: 18)

        // A record cut short (a crash mid-write) and everything after it are not read.
        let last = dir + "/" + Sys.listDirectory(dir).last!
        var bytes = [UInt8](try Data(contentsOf: URL(fileURLWithPath: last)))
        let whole = LogJournal.parse(bytes).count
        // The segment's space is allocated ahead: the records end where the zeros begin.
        bytes = Array(bytes[..<(bytes.lastIndex { $0 != 0 }! + 1)])
        #expect(LogJournal.parse(bytes).count == whole)
        bytes.removeLast(3)
        #expect(LogJournal.parse(bytes).count == whole - 1)
        bytes[20] ^= 0xff
        #expect(LogJournal.parse(bytes).isEmpty || LogJournal.parse(bytes).count < whole - 1)
    }

    @Test("over its budget the store loses the oldest events of the group that holds the most, until the groups are even")
    func budget() throws {
        let dir = try makeScratchDirectory("budget")
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let store = LogStore(try PetrelDatabase(path: dir + "/petrel.sqlite"))
        func g(_ name: String) -> String { LogStore.stored(account: "000000000000", group: "/aws/lambda/" + name) }
        // A noisy function with 200 invocations' worth, a quiet one with 10; random text does not compress.
        func text(_ n: Int) -> String { (0..<n).map { _ in String(UInt64.random(in: 0...UInt64.max), radix: 36) }.joined(separator: " ") }
        for i in 0..<200 { try store.append(group: g("noisy"), stream: "s", lines: [(Int64(i), "noisy \(i) " + text(20))]) }
        for i in 0..<10 { try store.append(group: g("quiet"), stream: "s", lines: [(Int64(i), "quiet \(i) " + text(20))]) }
        let total = try store.storedBytes()
        let sizes = try store.groups(account: "000000000000", prefix: nil).map(\.storedBytes)
        #expect(total == sizes.reduce(0, +) && total > 0)
        #expect(try store.evict(budget: total, target: total / 2).events == 0, "within budget: nothing goes")

        let (events, bytes, left) = try store.evict(budget: total / 2, target: total / 2, batch: 7)
        #expect(left == total - bytes)
        #expect(events > 0 && bytes > 0)
        #expect(try store.storedBytes() <= total / 2)
        func messages(_ name: String) throws -> [String] {
            try store.events(
                account: "000000000000", group: "/aws/lambda/" + name, streams: nil, start: nil, end: nil, contains: nil,
                afterID: nil, limit: 1_000
            ).map { String($0.message.prefix { $0 != " " } + " " + $0.message.split(separator: " ")[1]) }
        }
        // The quiet group lost nothing; the noisy one lost its oldest.
        #expect(try messages("quiet") == (0..<10).map { "quiet \($0)" })
        let noisy = try messages("noisy")
        #expect(noisy == (200 - noisy.count..<200).map { "noisy \($0)" })

        // Down to a budget below both: each ends near the other's size, and the newest of each is kept.
        let small = try store.storedBytes() / 4
        try store.evict(budget: small, target: small, batch: 1)
        let after = try store.groups(account: "000000000000", prefix: nil)
        #expect(after.count == 2, "\(after)")
        let (a, b) = (after[0].storedBytes, after[1].storedBytes)
        #expect(abs(a - b) <= max(a, b) / 2 + 400, "uneven: \(a) and \(b)")
        #expect(try messages("quiet").last == "quiet 9" && messages("noisy").last == "noisy 199")
    }
}
