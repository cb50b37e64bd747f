import Foundation
import Logging
import Metrics
import NIOCore
import PetrelCore
import PetrelRuntime
import Synchronization

/// One record of an ordered stream, as the function's event carries it.
struct StreamRecord: @unchecked Sendable {
    /// The partition the record belongs to (`topic-0`; a PostgreSQL stream's one partition).
    var partition: String
    /// What a `ReportBatchItemFailures` response names the record by.
    var identifier: String
    /// When the source took the record (milliseconds since 1970).
    var time: Int64
    /// The record in the function's event (only JSON values).
    var record: [String: Any]
    /// What filters match as JSON when it is an object, under `field`.
    var payload: Data
    var field: String
    var size: Int
    /// Where the record stands in its partition, in the reader's terms: a Kafka offset; a
    /// PostgreSQL transaction's end LSN with the record's index in it.
    var position: UInt64
    var index: Int = 0
    /// Whether the record is the last of its transaction (always, for Kafka).
    var closes: Bool = true
}

/// A connection to an ordered source, read by one task per mapping; each partition's
/// records are then handed to the function by a task of the partition's own.
protocol StreamReader: AnyObject, Sendable {
    /// Records that arrived, waiting up to `waitMillis` for the first; in order within each partition.
    func poll(waitMillis: Int) async throws -> [StreamRecord]
    /// Every record of `record`'s partition up to and including it is done (succeeded,
    /// filtered out, or given up on): the source may forget them.
    func commit(_ record: StreamRecord) async throws
    /// Stops (or resumes) fetching a partition whose records pile up.
    func pause(_ partition: String, _ paused: Bool) async
    /// How many records the source holds beyond those committed (nil: unknown).
    func lag(_ partition: String) -> Int64?
    /// The function's event for a batch of one partition.
    func event(_ partition: String, _ records: [StreamRecord]) -> [String: Any]
    /// The on-failure record's description of a batch (`KafkaBatchInfo`, `PostgresBatchInfo`).
    func batchInfo(_ partition: String, _ records: [StreamRecord]) -> (key: String, value: [String: Any])
    /// A problem the reader met and recovered from by itself (a broker away); nil once it is over.
    var problem: String? { get }
    func close() async
}

/// The records a partition's reader fetched and its task has not taken yet.
final class PartitionBuffer: Sendable {
    let name: String
    private struct State {
        var records: [StreamRecord] = []
        var paused = false
    }
    private let state = Mutex(State())
    private let bell: AsyncStream<Void>.Continuation
    private let rings: AsyncStream<Void>
    /// Where the partition's reader pauses it, and resumes it.
    static let highWater = 5_000

    init(_ name: String) {
        self.name = name
        (rings, bell) = AsyncStream.makeStream(of: Void.self, bufferingPolicy: .bufferingNewest(1))
    }

    /// Adds records; true when the partition should now be paused.
    func append(_ records: [StreamRecord]) -> Bool {
        let pause = state.withLock { s -> Bool in
            s.records += records
            guard !s.paused, s.records.count > Self.highWater else { return false }
            s.paused = true
            return true
        }
        bell.yield()
        return pause
    }

    func ring() { bell.yield() }
    func finish() { bell.finish() }

    var oldest: Int64? { state.withLock { $0.records.first?.time } }

    /// Up to `max` records (and about a payload's worth), waiting for the first and, with a
    /// window, for more until it closes. Also says whether a paused partition may resume.
    func take(max: Int, windowMillis: Int, stop: @Sendable () -> Bool) async -> (records: [StreamRecord], resume: Bool) {
        var iterator = rings.makeAsyncIterator()
        while state.withLock({ $0.records.isEmpty }), !stop() {
            guard await iterator.next() != nil else { break }
        }
        if windowMillis > 0 {
            let closes = ContinuousClock.now + .milliseconds(windowMillis)
            while state.withLock({ $0.records.count < max }), ContinuousClock.now < closes, !stop() {
                guard await iterator.next() != nil else { break }
            }
        }
        return state.withLock { s in
            var n = 0
            var bytes = 0
            while n < min(max, s.records.count), n == 0 || bytes + s.records[n].size < MappingService.maxPayload * 3 / 4 {
                bytes += s.records[n].size
                n += 1
            }
            let out = Array(s.records.prefix(n))
            s.records.removeFirst(n)
            let resume = s.paused && s.records.count < Self.highWater / 2
            if resume { s.paused = false }
            return (out, resume)
        }
    }
}

/// The first error of a stream's partition tasks (which ends the stream's run).
final class FirstError: Sendable {
    private let value = Mutex<(any Error)?>(nil)
    var error: (any Error)? { value.withLock { $0 } }
    func set(_ e: any Error) { value.withLock { $0 = $0 ?? e } }
}

/// A run of a partition's records handed to the function together; `end` is the record the
/// partition is committed through once the segment is done (records filtered out or given
/// up on leave the segment; its end stays).
struct StreamSegment {
    var records: [StreamRecord]
    var end: StreamRecord
}

extension MappingService {
    /// Runs a stream mapping (Kafka, PostgreSQL): connects, reads, and hands each partition's
    /// records to the function in order, one batch at a time, partitions side by side; on a
    /// lost connection, connects again and goes on from the last committed record.
    func consumeStream(_ m: EventSourceMapping, generation: Int) async {
        let stop: @Sendable () -> Bool = { [self] in !current(m.uuid, generation) }
        while !stop() {
            let reader: any StreamReader
            do {
                reader = try await openStream(m)
            } catch {
                report(m, "PROBLEM: \(Self.describe(error))")
                logger.warning("a stream mapping cannot connect", metadata: ["mapping": "\(m.uuid)", "error": "\(error)"])
                try? await pause(stop)
                continue
            }
            do {
                try await runStream(m, reader, stop: stop)
            } catch {
                report(m, "PROBLEM: \(Self.describe(error))")
                logger.warning("a stream mapping lost its source", metadata: ["mapping": "\(m.uuid)", "error": "\(error)"])
            }
            await reader.close()
            if !stop() { try? await pause(stop) }
        }
        streamStatus.withLock { $0[m.uuid] = nil }
    }

    func openStream(_ m: EventSourceMapping) async throws -> any StreamReader {
        switch m.kind {
        case .kafka: return try await KafkaReader.open(m, settings: try kafkaSettings(m))
        case .postgres:
            return try await PostgresReader.open(
                m, settings: try postgresSettings(m), checkpoints: store, region: region)
        case .sqs, .rabbitmq: throw DomainError(.invalidParameter, "not a stream")
        }
    }

    /// Checks that a broker or stream mapping names a source the operator configured, and
    /// credentials that exist (the connection itself is the consumer's, and reported by it).
    public func checkSource(_ m: EventSourceMapping) throws {
        switch m.kind {
        case .kafka: _ = try kafkaSettings(m)
        case .postgres: _ = try postgresSettings(m)
        case .rabbitmq: _ = try rabbitSettings(m)
        case .sqs: break
        }
    }

    static func describe(_ error: any Error) -> String {
        if let e = error as? DomainError { return e.message }
        return "\(error)"
    }

    /// The reading loop: partitions get a task each as their first records arrive.
    private func runStream(_ m: EventSourceMapping, _ reader: any StreamReader, stop: @escaping @Sendable () -> Bool) async throws {
        let failed = FirstError()
        let ended: @Sendable () -> Bool = { stop() || failed.error != nil }
        var buffers: [String: PartitionBuffer] = [:]
        try await withThrowingDiscardingTaskGroup { group in
            defer { for b in buffers.values { b.finish() } }
            var wasProblem = false
            var lagRecorded = ContinuousClock.now - .seconds(1)
            while !ended() {
                let records = try await reader.poll(waitMillis: 200)
                if let problem = reader.problem {
                    report(m, "PROBLEM: Connection error. \(problem)")
                    wasProblem = true
                } else if wasProblem {
                    wasProblem = false
                    report(m, "OK")
                }
                var byPartition: [String: [StreamRecord]] = [:]
                for r in records { byPartition[r.partition, default: []].append(r) }
                for (p, list) in byPartition {
                    let buffer: PartitionBuffer
                    if let b = buffers[p] {
                        buffer = b
                    } else {
                        buffer = PartitionBuffer(p)
                        buffers[p] = buffer
                        let b = buffer
                        group.addTask {
                            do { try await self.drain(m, b, reader, stop: ended) } catch {
                                failed.set(error)
                            }
                        }
                    }
                    if buffer.append(list) { await reader.pause(p, true) }
                }
                // Every partition's task looks at the stop flag at least this often.
                for b in buffers.values { b.ring() }
                // (A busy reader polls many times a second; the lag gauges need no more than one.)
                if ContinuousClock.now - lagRecorded >= .seconds(1) {
                    recordLag(m, reader, buffers)
                    lagRecorded = .now
                }
            }
            for b in buffers.values { b.finish() }
        }
        if let e = failed.error { throw e }
    }

    private func recordLag(_ m: EventSourceMapping, _ reader: any StreamReader, _ buffers: [String: PartitionBuffer]) {
        let now = queues.now()
        for (p, b) in buffers {
            let seconds = b.oldest.map { max(0, Double(now - $0) / 1000) } ?? 0
            let records = reader.lag(p)
            Gauge(label: "petrel_mapping_lag_seconds", dimensions: [("mapping", m.uuid), ("partition", p)]).record(seconds)
            if let records {
                Gauge(label: "petrel_mapping_lag_records", dimensions: [("mapping", m.uuid), ("partition", p)]).record(Double(records))
            }
            streamStatus.withLock { s in
                var st = s[m.uuid]?[p] ?? PartitionStatus()
                st.lagSeconds = max(seconds, st.inFlightSince.map { Double(now - $0) / 1000 } ?? 0)
                st.lagRecords = records
                s[m.uuid, default: [:]][p] = st
            }
        }
    }

    /// One partition: batches in order, each retried (split in two with
    /// `BisectBatchOnFunctionError`) until it succeeds, or its retries or its records' age
    /// run out and it is recorded at the on-failure destination; only then does the
    /// partition move on. A throttled invocation waits and is never counted as a failure.
    private func drain(_ m: EventSourceMapping, _ buffer: PartitionBuffer, _ reader: any StreamReader, stop: @escaping @Sendable () -> Bool)
        async throws
    {
        guard let st = m.stream else { return }
        let patterns = m.filters.compactMap { try? EventPattern(json: $0) }
        var segments: [StreamSegment] = []
        var attempts = 0
        var invokes = 0
        // (The stream's run cancels this task when its reader fails.)
        while !stop(), !Task.isCancelled {
            if segments.isEmpty {
                let (batch, resume) = await buffer.take(max: m.batchSize, windowMillis: m.maximumBatchingWindowInSeconds * 1000, stop: stop)
                if resume { await reader.pause(buffer.name, false) }
                guard let last = batch.last else { continue }
                let kept = batch.filter { Self.passes(patterns, $0.record, field: $0.field, payload: $0.payload) }
                Self.messages(m, "filtered", batch.count - kept.count)
                segments = [StreamSegment(records: kept, end: last)]
                attempts = 0
                invokes = 0
                setInFlight(m, buffer.name, kept.first?.time)
            }
            var seg = segments[0]
            if st.maximumRecordAgeInSeconds > 0 {
                let oldest = queues.now() - Int64(st.maximumRecordAgeInSeconds) * 1000
                let expired = seg.records.filter { $0.time < oldest }
                if !expired.isEmpty {
                    try await giveUp(m, reader, buffer.name, expired, condition: "RecordAgeExceeded", invokes: invokes)
                    seg.records.removeAll { $0.time < oldest }
                    segments[0] = seg
                }
            }
            if seg.records.isEmpty {
                try await finish(m, reader, buffer.name, &segments)
                (attempts, invokes) = (0, 0)
                continue
            }
            guard let target = try functions.resolve(account: m.account, m.function, qualifier: m.qualifier) else {
                report(m, "PROBLEM: Function not found.")
                try await pause(stop)
                continue
            }
            let event = reader.event(buffer.name, seg.records)
            let payload = try JSONSerialization.data(withJSONObject: event, options: [.withoutEscapingSlashes])
            if payload.count > Self.maxPayload, seg.records.count > 1 {
                // Too big for one event: halves, in order (this is no failure).
                segments.replaceSubrange(0...0, with: Self.halves(seg))
                continue
            }
            guard let slot = await dispatcher.reserveSlot(target.record.key) else { return }
            if stop() {
                await dispatcher.releaseSlot(slot)
                return
            }
            let result: InvocationResult
            do {
                result = try await invokeBatch(m, target, payload: payload, slot: slot)
                invokes += 1
            } catch {
                // The platform could not run it (throttled, no memory): wait, and try again uncounted.
                Self.batches(m, "throttled")
                count(m, buffer.name, "throttled")
                report(m, "PROBLEM: Function call failed: \(error.message)")
                try await Task.sleep(for: .milliseconds(100))
                continue
            }
            var ok = result.functionError == nil && !m.reportsItemFailures
            if result.functionError == nil, m.reportsItemFailures,
                let ids = Self.itemFailures(result.payload, ids: Set(seg.records.map(\.identifier)))
            {
                // (A report that is not valid fails the whole batch, as on Lambda.)
                if let first = seg.records.firstIndex(where: { ids.contains($0.identifier) }) {
                    // The checkpoint moves to the lowest failed record; the batch is retried from there.
                    if first > 0 {
                        try await reader.commit(seg.records[first - 1])
                        Self.messages(m, "succeeded", first)
                        seg.records.removeFirst(first)
                        segments[0] = seg
                    }
                } else {
                    ok = true
                }
            }
            if ok {
                try await succeeded(m, reader, buffer.name, &segments, seg.records.count)
                (attempts, invokes) = (0, 0)
                continue
            }
            attempts += 1
            Self.batches(m, "failed")
            count(m, buffer.name, "failed")
            report(m, "PROBLEM: Function call failed")
            if st.bisectBatchOnFunctionError, seg.records.count > 1 {
                // Splitting does not use up a retry, as on Lambda.
                segments.replaceSubrange(0...0, with: Self.halves(seg))
                attempts = 0
                invokes = 0
                continue
            }
            if st.maximumRetryAttempts >= 0, attempts > st.maximumRetryAttempts {
                try await giveUp(m, reader, buffer.name, seg.records, condition: "RetryAttemptsExhausted", invokes: invokes)
                try await finish(m, reader, buffer.name, &segments)
                (attempts, invokes) = (0, 0)
                continue
            }
            let delay = min(100 * (1 << min(attempts - 1, 7)), 10_000)
            var waited = 0
            while waited < delay, !stop() {
                try await Task.sleep(for: .milliseconds(min(100, delay - waited)))
                waited += 100
            }
        }
    }

    static func halves(_ seg: StreamSegment) -> [StreamSegment] {
        let h = seg.records.count / 2
        return [
            StreamSegment(records: Array(seg.records[..<h]), end: seg.records[h - 1]),
            StreamSegment(records: Array(seg.records[h...]), end: seg.end),
        ]
    }

    private func succeeded(
        _ m: EventSourceMapping, _ reader: any StreamReader, _ partition: String, _ segments: inout [StreamSegment], _ count: Int
    ) async throws {
        Self.batches(m, "succeeded")
        self.count(m, partition, "succeeded")
        Self.messages(m, "succeeded", count)
        report(m, "OK")
        try await finish(m, reader, partition, &segments)
    }

    /// The first segment is done: the partition is committed through its end.
    private func finish(_ m: EventSourceMapping, _ reader: any StreamReader, _ partition: String, _ segments: inout [StreamSegment])
        async throws
    {
        try await reader.commit(segments[0].end)
        segments.removeFirst()
        setInFlight(m, partition, segments.first?.records.first?.time)
    }

    /// A batch outcome of a partition, for `GetEventSourceMapping`.
    private func count(_ m: EventSourceMapping, _ partition: String, _ outcome: String) {
        streamStatus.withLock { s in
            var st = s[m.uuid]?[partition] ?? PartitionStatus()
            st.batches[outcome, default: 0] += 1
            s[m.uuid, default: [:]][partition] = st
        }
    }

    private func setInFlight(_ m: EventSourceMapping, _ partition: String, _ time: Int64?) {
        streamStatus.withLock { s in
            var st = s[m.uuid]?[partition] ?? PartitionStatus()
            st.inFlightSince = time
            s[m.uuid, default: [:]][partition] = st
        }
    }

    /// Records given up on go to the on-failure destination as Lambda's failure record (which
    /// batch, which positions, why); with no destination they are dropped, counted and logged.
    /// A destination that cannot take the record fails the partition (its records come again).
    private func giveUp(
        _ m: EventSourceMapping, _ reader: any StreamReader, _ partition: String, _ records: [StreamRecord], condition: String, invokes: Int
    ) async throws {
        Self.messages(m, "discarded", records.count)
        Counter(label: "petrel_mapping_batches_total", dimensions: [("mapping", m.uuid), ("outcome", "given_up")]).increment()
        count(m, partition, "given_up")
        guard let destination = m.stream?.onFailure else {
            logger.warning(
                "a stream mapping dropped records it gave up on (no on-failure destination)",
                metadata: ["mapping": "\(m.uuid)", "partition": "\(partition)", "records": "\(records.count)", "condition": "\(condition)"])
            return
        }
        let (key, info) = reader.batchInfo(partition, records)
        let record: [String: Any] = [
            "requestContext": [
                "requestId": FastIDs.uuid(),
                "functionArn": FunctionARN(region: region, account: m.account, name: m.function, qualifier: m.qualifier).description,
                "condition": condition, "approximateInvokeCount": invokes,
            ],
            "responseContext": ["statusCode": 200, "executedVersion": m.qualifier ?? "$LATEST", "functionError": "Unhandled"],
            "version": "1.0", "timestamp": PlatformClock.iso8601(millis: queues.now()), key: info,
        ]
        let data = try JSONSerialization.data(withJSONObject: record, options: [.withoutEscapingSlashes, .sortedKeys])
        guard let sink else { throw DomainError(.invalidParameter, "no destination service") }
        do {
            try await sink.send(record: data, to: destination, account: m.account, attributes: [:])
        } catch {
            throw DomainError(.invalidParameter, "The on-failure destination \(destination) did not take the record: \(error)")
        }
    }

    /// What a stream mapping's partitions look like now, for `GetEventSourceMapping`.
    public func partitions(_ uuid: String) -> [(name: String, status: PartitionStatus)] {
        streamStatus.withLock { ($0[uuid] ?? [:]).sorted { $0.key < $1.key }.map { ($0.key, $0.value) } }
    }
}

/// Where a stream's partition stands.
public struct PartitionStatus: Sendable {
    /// Seconds since the oldest record not done yet arrived at the source.
    public var lagSeconds: Double = 0
    /// Records the source holds beyond the last committed one (nil: unknown).
    public var lagRecords: Int64?
    /// When the records in flight arrived (nil: none in flight).
    public var inFlightSince: Int64?
    /// Batches by outcome: succeeded, failed (each failed attempt), given_up, throttled.
    public var batches: [String: Int] = [:]
}
