import Foundation
import Logging
import PetrelStore
import Synchronization
import Testing

/// The writer behind the log and audit stores: a short gather when quiet, a
/// longer one while the last write was large.
@Suite("Batch writer")
struct BatchWriterTests {
    final class Written: Sendable {
        let batches = Mutex<[[Int]]>([])
        var all: [Int] { batches.withLock { $0.flatMap { $0 } } }
    }

    /// Waits (polling) until `done` holds; answers how long that took, nil after `limit`.
    func waited(_ limit: Duration, _ done: () -> Bool) async -> Duration? {
        let start = ContinuousClock.now
        while ContinuousClock.now - start < limit {
            if done() { return ContinuousClock.now - start }
            try? await Task.sleep(for: .milliseconds(5))
        }
        return done() ? ContinuousClock.now - start : nil
    }

    @Test("quiet items go out after the short gather; after a large write the next ones wait the long one; order kept")
    func gathers() async throws {
        let written = Written()
        let writer = BatchWriter<Int>(
            "numbers", gather: .milliseconds(10), busyGather: .seconds(2), busyItems: 3,
            logger: Logger(label: "test")
        ) { items in written.batches.withLock { $0.append(items) } }
        let running = Task { await writer.run() }

        // Three at once: one write of three, after the short gather.
        for i in 1...3 { writer.append(i) }
        let first = try #require(await waited(.seconds(1)) { written.all.count == 3 })
        #expect(first < .milliseconds(900))
        #expect(written.batches.withLock { $0 } == [[1, 2, 3]])

        // That write was large: the next item waits the long gather.
        writer.append(4)
        try await Task.sleep(for: .milliseconds(500))
        #expect(written.all == [1, 2, 3])
        let second = try #require(await waited(.seconds(5)) { written.all.count == 4 })
        #expect(second >= .milliseconds(1000))

        // A write of one is not large: quiet again.
        writer.append(5)
        let third = try #require(await waited(.seconds(1)) { written.all.count == 5 })
        #expect(third < .milliseconds(900))
        #expect(written.all == [1, 2, 3, 4, 5])

        // Finishing writes what is queued.
        writer.append(6)
        writer.finish()
        await running.value
        #expect(written.all == [1, 2, 3, 4, 5, 6])
    }
}
