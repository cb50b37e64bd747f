import Foundation
import Logging
import Metrics
import NIOCore
import PetrelCore
import PetrelMessaging
import PetrelRuntime
import PetrelStore
import ServiceLifecycle
import Synchronization

/// Runs the event source mappings: for each enabled one, as many consumers as its
/// concurrency allows, each taking a place in the function's concurrency before it
/// receives (so a throttled function slows consumption down and never fails a
/// message), receiving a batch, dropping what the filters leave out, invoking the
/// function and deleting what succeeded. A change of a mapping restarts its consumers.
public final class MappingService: Service, Sendable {
    public let store: MappingStore
    let queues: QueueService
    let functions: FunctionStore
    let dispatcher: Dispatcher
    let region: String
    let logger: Logger
    /// The operator's lists (reloadable: see `reconfigure`).
    private let sources: Mutex<(brokers: BrokerDirectory, databases: BrokerDirectory, kafkaAllow: KafkaAllowList)>
    /// Where RabbitMQ brokers are (their credentials are in `secrets`).
    var brokers: BrokerDirectory { sources.withLock { $0.brokers } }
    let secrets: SecretStore
    /// Where PostgreSQL servers are (cluster ARNs name them).
    var databases: BrokerDirectory { sources.withLock { $0.databases } }
    /// Which Kafka bootstrap servers mappings may name.
    var kafkaAllow: KafkaAllowList { sources.withLock { $0.kafkaAllow } }
    /// Where stream mappings' on-failure records go (queues and topics).
    let sink: (any RecordSink)?
    /// Stream mappings' partitions: lag and position, by mapping and partition.
    let streamStatus = Mutex<[String: [String: PartitionStatus]]>([:])
    /// Deleted PostgreSQL mappings whose slots are being dropped.
    let retiring = Mutex<Set<String>>([])
    let changes: AsyncStream<Void>
    let changed: AsyncStream<Void>.Continuation

    /// The consumers' generation per mapping: a consumer whose mapping's generation moved on stops.
    struct Running {
        var generation: Int
        var mapping: EventSourceMapping
    }
    private let running = Mutex<[String: Running]>([:])
    private let generations = Mutex(0)

    public init(
        store: MappingStore, queues: QueueService, functions: FunctionStore, dispatcher: Dispatcher,
        brokers: BrokerDirectory = BrokerDirectory(), databases: BrokerDirectory = BrokerDirectory(),
        kafkaAllow: KafkaAllowList = KafkaAllowList([]), sink: (any RecordSink)? = nil,
        secrets: SecretStore, region: String, logger: Logger
    ) {
        sources = Mutex((brokers, databases, kafkaAllow))
        self.sink = sink
        self.secrets = secrets
        self.store = store
        self.queues = queues
        self.functions = functions
        self.dispatcher = dispatcher
        self.region = region
        self.logger = logger
        (changes, changed) = AsyncStream.makeStream(of: Void.self, bufferingPolicy: .bufferingNewest(1))
    }

    /// New operator lists (a configuration reload): they apply to mappings made, and to
    /// consumers that connect, from now on; running consumers keep their connections.
    public func reconfigure(brokers: BrokerDirectory, databases: BrokerDirectory, kafkaAllow: KafkaAllowList) {
        sources.withLock { $0 = (brokers, databases, kafkaAllow) }
    }

    /// A mapping was made, changed or deleted: the service reconciles its consumers.
    public func mappingsChanged() { changed.yield() }

    public func run() async throws {
        await withDiscardingTaskGroup { group in
            group.addTask {
                try? await gracefulShutdown()
                self.changed.finish()
            }
            reconcile(into: &group)
            for await _ in changes { reconcile(into: &group) }
            // Shutting down: every consumer stops (a running batch finishes; what it did not
            // delete becomes visible again after its visibility timeout).
            let stopped = running.withLock { r -> [EventSourceMapping] in
                defer { r = [:] }
                return r.values.map(\.mapping)
            }
            wake(stopped, &group)
        }
        logger.info("event source mappings stopped")
    }

    /// Starts consumers for mappings that are enabled and not running as they are stored,
    /// stops the others, and moves the stored states along (Creating/Updating → Enabled or
    /// Disabled; Deleting → gone).
    private func reconcile(into group: inout DiscardingTaskGroup) {
        let all: [EventSourceMapping]
        do { all = try store.all(account: nil) } catch {
            logger.error("cannot read the event source mappings", metadata: ["error": "\(error)"])
            return
        }
        var keep: Set<String> = []
        var stopped: [EventSourceMapping] = []
        for var m in all {
            if m.state == "Deleting" {
                if m.kind == .postgres {
                    // Its reader stops first (a slot in use cannot be dropped); then the slot goes, then the mapping.
                    if retiring.withLock({ $0.insert(m.uuid).inserted }) {
                        let mapping = m
                        group.addTask { await self.retire(mapping) }
                    }
                } else {
                    try? store.delete(m.uuid)
                }
                continue
            }
            let settled = m.enabled ? "Enabled" : "Disabled"
            if m.state != settled {
                m.state = settled
                try? store.update(m)
            }
            guard m.enabled else { continue }
            keep.insert(m.uuid)
            let current = running.withLock { $0[m.uuid] }
            if let current, Self.sameConsumers(current.mapping, m) { continue }
            if let current { stopped.append(current.mapping) }
            let generation = generations.withLock { g -> Int in
                g += 1
                return g
            }
            running.withLock { $0[m.uuid] = Running(generation: generation, mapping: m) }
            let mapping = m
            switch m.kind {
            case .sqs:
                for _ in 0..<m.concurrency {
                    group.addTask { await self.consume(mapping, generation: generation) }
                }
            case .rabbitmq:
                // One connection per mapping: a queue's order holds, and the broker's prefetch is the batch.
                group.addTask { await self.consumeRabbit(mapping, generation: generation) }
            case .kafka, .postgres:
                // One reader per mapping; a task per partition (see StreamEngine).
                group.addTask { await self.consumeStream(mapping, generation: generation) }
            }
        }
        stopped += running.withLock { r -> [EventSourceMapping] in
            let gone = r.filter { !keep.contains($0.key) }
            for k in gone.keys { r[k] = nil }
            return gone.values.map(\.mapping)
        }
        wake(stopped, &group)
    }

    /// Whether two versions of a mapping are consumed the same way (a change of what the
    /// last batch did does not restart anything).
    static func sameConsumers(_ a: EventSourceMapping, _ b: EventSourceMapping) -> Bool {
        var x = a
        var y = b
        x.lastProcessingResult = ""
        y.lastProcessingResult = ""
        x.state = ""
        y.state = ""
        x.lastModified = Date(timeIntervalSince1970: 0)
        y.lastModified = Date(timeIntervalSince1970: 0)
        return x == y
    }

    /// Wakes stopped consumers wherever they wait: a long poll of their queue, or a place in their function.
    private func wake(_ stopped: [EventSourceMapping], _ group: inout DiscardingTaskGroup) {
        // (A RabbitMQ consumer looks at its generation every second by itself.)
        for m in stopped where m.kind == .sqs { if let q = try? queues.queue(arn: m.sourceArn) { queues.wake(q) } }
        if !stopped.isEmpty { group.addTask { await self.dispatcher.nudge() } }
    }

    func current(_ uuid: String, _ generation: Int) -> Bool { running.withLock { $0[uuid]?.generation == generation } }

    // MARK: - results

    private let lastResults = Mutex<[String: String]>([:])

    /// Records what a batch came to, in the stored mapping when it changed.
    func report(_ m: EventSourceMapping, _ result: String) {
        let changedResult = lastResults.withLock { r -> Bool in
            defer { r[m.uuid] = result }
            return r[m.uuid] != result
        }
        guard changedResult, var stored = try? store.get(m.uuid) else { return }
        stored.lastProcessingResult = result
        try? store.update(stored)
    }

    static func batches(_ m: EventSourceMapping, _ outcome: String) {
        Counter(label: "petrel_mapping_batches_total", dimensions: [("mapping", m.uuid), ("outcome", outcome)]).increment()
    }

    static func messages(_ m: EventSourceMapping, _ outcome: String, _ n: Int) {
        guard n > 0 else { return }
        Counter(label: "petrel_mapping_messages_total", dimensions: [("mapping", m.uuid), ("outcome", outcome)]).increment(by: Int64(n))
    }

    // MARK: - one consumer

    /// The most a batch's event may hold: Lambda's 6 MB synchronous payload.
    static let maxPayload = 6_291_456

    func consume(_ m: EventSourceMapping, generation: Int) async {
        let stop: @Sendable () -> Bool = { [self] in !current(m.uuid, generation) }
        let patterns = m.filters.compactMap { try? EventPattern(json: $0) }
        while !stop() {
            do {
                guard let target = try functions.resolve(account: m.account, m.function, qualifier: m.qualifier) else {
                    report(m, "PROBLEM: Function not found.")
                    try await pause(stop)
                    continue
                }
                guard let queue = try queues.queue(arn: m.sourceArn) else {
                    report(m, "PROBLEM: The queue \(m.sourceArn) does not exist.")
                    try await pause(stop)
                    continue
                }
                guard let slot = await dispatcher.reserveSlot(target.record.key) else { return }
                if stop() {
                    await dispatcher.releaseSlot(slot)
                    return
                }
                let batch = try await receiveBatch(m, queue, stop: stop)
                guard !batch.isEmpty else {
                    await dispatcher.releaseSlot(slot)
                    continue
                }
                Gauge(label: "petrel_mapping_lag_seconds", dimensions: [("mapping", m.uuid)]).record(
                    Double(queues.now() - (batch.map(\.sent).min() ?? queues.now())) / 1000)
                // Filtered out: deleted, as Lambda does.
                var records: [[String: Any]] = []
                var kept: [QueueMessage] = []
                var dropped: [String] = []
                for message in batch {
                    let record = sqsRecord(message, queue)
                    if Self.passes(patterns, record, field: "body", payload: Data(message.body.utf8)) {
                        records.append(record)
                        kept.append(message)
                    } else {
                        dropped.append(message.receiptHandle)
                    }
                }
                if !dropped.isEmpty { _ = try queues.delete(queue, handles: dropped) }
                Self.messages(m, "filtered", dropped.count)
                guard !kept.isEmpty else {
                    await dispatcher.releaseSlot(slot)
                    continue
                }
                try await invoke(m, target, queue, kept, records, slot: slot)
            } catch {
                logger.warning("an event source mapping's batch failed", metadata: ["mapping": "\(m.uuid)", "error": "\(error)"])
                report(m, "PROBLEM: \(error)")
                try? await pause(stop)
            }
        }
    }

    func pause(_ stop: @Sendable () -> Bool) async throws {
        for _ in 0..<10 where !stop() { try await Task.sleep(for: .milliseconds(500)) }
    }

    /// Receives up to the batch size, waiting (long polling) for the first message and, with
    /// a batching window, for more until the window closes; never more than a payload's worth.
    func receiveBatch(_ m: EventSourceMapping, _ queue: QueueRecord, stop: @escaping @Sendable () -> Bool) async throws -> [QueueMessage] {
        var batch = try await queues.receive(queue, max: min(10, m.batchSize), visibility: nil, waitSeconds: 20, until: stop)
        guard !batch.isEmpty, m.batchSize > batch.count, m.maximumBatchingWindowInSeconds > 0 else { return batch }
        let closes = queues.now() + Int64(m.maximumBatchingWindowInSeconds) * 1000
        var bytes = batch.reduce(0) { $0 + $1.body.utf8.count + 512 }
        while batch.count < m.batchSize, bytes < Self.maxPayload, !stop() {
            let left = closes - queues.now()
            guard left > 0 else { break }
            let more = try await queues.receive(
                queue, max: min(10, m.batchSize - batch.count), visibility: nil, waitSeconds: Int((left + 999) / 1000), until: stop)
            if more.isEmpty { break }
            batch += more
            bytes += more.reduce(0) { $0 + $1.body.utf8.count + 512 }
        }
        return batch
    }

    func invoke(
        _ m: EventSourceMapping, _ target: FunctionStore.Target, _ queue: QueueRecord, _ kept: [QueueMessage], _ records: [[String: Any]],
        slot: Dispatcher.Slot
    ) async throws {
        // A payload over 6 MB: the messages that do not fit go back, uncounted, for the next batch.
        var fitting = kept.count
        var payload = try JSONSerialization.data(withJSONObject: ["Records": records], options: [.withoutEscapingSlashes])
        while payload.count > Self.maxPayload, fitting > 1 {
            fitting = max(1, fitting / 2)
            payload = try JSONSerialization.data(
                withJSONObject: ["Records": Array(records.prefix(fitting))], options: [.withoutEscapingSlashes])
        }
        if fitting < kept.count { try queues.release(queue, handles: kept[fitting...].map(\.receiptHandle)) }
        let messages = Array(kept.prefix(fitting))
        let result: InvocationResult
        do {
            result = try await invokeBatch(m, target, payload: payload, slot: slot)
        } catch {
            // The platform could not run it (no memory, shutting down): the messages go back uncounted.
            try queues.release(queue, handles: messages.map(\.receiptHandle))
            Self.batches(m, "throttled")
            report(m, "PROBLEM: Function call failed: \(error.message)")
            if error.code == .throttled { try? await Task.sleep(for: .milliseconds(100)) }
            return
        }
        guard result.functionError == nil else {
            // Nothing is deleted: the batch is received again once its visibility timeout passes,
            // and goes to the queue's dead-letter queue after maxReceiveCount receives.
            Self.batches(m, "failed")
            Self.messages(m, "failed", messages.count)
            report(m, "PROBLEM: Function call failed")
            return
        }
        var failed: Set<String> = []
        if m.reportsItemFailures {
            switch Self.itemFailures(result.payload, ids: Set(messages.map(\.id))) {
            case .some(let ids): failed = ids
            case .none: failed = Set(messages.map(\.id))
            }
        }
        let done = messages.filter { !failed.contains($0.id) }
        if !done.isEmpty { _ = try queues.delete(queue, handles: done.map(\.receiptHandle)) }
        Self.batches(m, failed.isEmpty ? "succeeded" : "partial")
        Self.messages(m, "succeeded", done.count)
        Self.messages(m, "failed", messages.count - done.count)
        report(m, "OK")
    }

    /// The ids a `ReportBatchItemFailures` response names; nil when the response is not a valid
    /// report (then the whole batch failed, as on Lambda). No report, or an empty one: none failed.
    public static func itemFailures(_ payload: ByteBuffer, ids: Set<String>) -> Set<String>? {
        let data = Data(payload.readableBytesView)
        guard let o = try? JSONSerialization.jsonObject(with: data, options: [.fragmentsAllowed]) as? [String: Any] else {
            return []
        }
        guard let list = o["batchItemFailures"] else { return [] }
        if list is NSNull { return [] }
        guard let items = list as? [[String: Any]] else { return nil }
        var out: Set<String> = []
        for item in items {
            guard let id = item["itemIdentifier"] as? String, !id.isEmpty, ids.contains(id) else { return nil }
            out.insert(id)
        }
        return out
    }

    /// Lambda's SQS record.
    func sqsRecord(_ m: QueueMessage, _ q: QueueRecord) -> [String: Any] {
        var attributes: [String: String] = [
            "ApproximateReceiveCount": "\(m.receiveCount)", "SentTimestamp": "\(m.sent)", "SenderId": m.sender,
            "ApproximateFirstReceiveTimestamp": "\(m.firstReceive)",
        ]
        if q.fifo {
            attributes["SequenceNumber"] = String(repeating: "0", count: max(0, 20 - String(m.sequence).count)) + String(m.sequence)
            attributes["MessageGroupId"] = m.groupID
            attributes["MessageDeduplicationId"] = m.dedupID
        }
        if let d = m.deadLetterSource { attributes["DeadLetterQueueSourceArn"] = d }
        var messageAttributes: [String: Any] = [:]
        for (name, a) in m.attributes {
            messageAttributes[name] = [
                "stringValue": a.stringValue as Any? ?? NSNull(), "binaryValue": a.binaryValue?.base64EncodedString() as Any? ?? NSNull(),
                "stringListValues": [String](), "binaryListValues": [String](), "dataType": a.dataType,
            ]
        }
        var r: [String: Any] = [
            "messageId": m.id, "receiptHandle": m.receiptHandle, "body": m.body, "attributes": attributes,
            "messageAttributes": messageAttributes, "md5OfBody": m.md5, "eventSource": "aws:sqs",
            "eventSourceARN": q.arn(region: region), "awsRegion": region,
        ]
        if let md5 = m.md5Attributes { r["md5OfMessageAttributes"] = md5 }
        return r
    }

    /// Whether a record passes a mapping's filters (none: every record). The record's payload
    /// `field` (an SQS body, a broker message's data) is matched as JSON when it is a JSON object.
    static func passes(_ patterns: [EventPattern], _ record: [String: Any], field: String, payload: Data) -> Bool {
        guard !patterns.isEmpty else { return true }
        var view = record
        if let parsed = try? JSONSerialization.jsonObject(with: payload), parsed is [String: Any] { view[field] = parsed }
        return patterns.contains { $0.matches(view) }
    }

    /// Runs one batch's event in the place `slot` holds: how every consumer invokes.
    func invokeBatch(_ m: EventSourceMapping, _ target: FunctionStore.Target, payload: Data, slot: Dispatcher.Slot)
        async throws(RuntimeError)
        -> InvocationResult
    {
        let f = target.record
        var request = InvocationRequest(
            requestID: FastIDs.uuid(), payload: ByteBuffer(bytes: payload),
            invokedARN: FunctionARN(region: region, account: f.account, name: f.name, qualifier: m.qualifier).description)
        request.wantsLogTail = false
        if case .alias(let a, _) = target { request.alias = a.name }
        return try await dispatcher.invoke(f, request, slot: slot)
    }
}
