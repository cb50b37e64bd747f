import Crypto
import Foundation
import Logging
import Metrics
import PetrelCore
import PetrelStore
import ServiceLifecycle
import Synchronization

/// The SQS-compatible queues: what the API's operations and the platform's own
/// consumers (event source mappings, SNS subscriptions, destinations) do with
/// them. Queues belong to accounts; another account reaches one only where its
/// policy allows. Also a `Service`: it drops expired messages and publishes the
/// queues' gauges.
public final class QueueService: Service, Sendable {
    public let store: QueueStore
    public let region: String
    /// The address queue URLs start with (`http://HOST:PORT`): the API's own listener.
    public let baseURL: String
    let clock: PlatformClock
    let logger: Logger
    let signals = QueueSignals()
    /// Queues whose gauges were published, so a deleted queue's go to zero.
    private let published = Mutex<Set<String>>([])

    public init(store: QueueStore, region: String, baseURL: String, clock: PlatformClock = PlatformClock(), logger: Logger) {
        self.store = store
        self.region = region
        self.baseURL = baseURL
        self.clock = clock
        self.logger = logger
    }

    public func now() -> Int64 { clock.nowMillis() }

    public func url(_ q: QueueRecord) -> String { "\(baseURL)/\(q.account)/\(q.name)" }

    // MARK: - queues

    public func create(account: String, name: String, attributes: [String: String], tags: [String: String]) throws -> QueueRecord {
        guard QueueName.isValid(name) else {
            throw MessagingError.invalidParameter(
                "Can only include alphanumeric characters, hyphens, or underscores. 1 to 80 in length; a FIFO queue's name ends in .fifo.")
        }
        let fifo = name.hasSuffix(".fifo")
        if fifo, attributes["FifoQueue"] != "true" {
            throw MessagingError.invalidParameter("The name of a FIFO queue must be given with the attribute FifoQueue=true.")
        }
        var settings = QueueSettings()
        try settings.set(attributes, fifo: fifo, creating: true)
        try checkRedrive(settings, account: account, fifo: fifo, sourceName: name)
        guard tags.count <= 50 else { throw MessagingError.invalidParameter("A queue may have at most 50 tags.") }
        guard let q = try store.create(account: account, name: name, settings: settings, tags: tags, now: now()) else {
            throw MessagingError("QueueNameExists", "A queue already exists with the same name and a different value for attribute(s).")
        }
        return q
    }

    /// A redrive policy must name an existing queue of the same account and type that lets this one use it.
    func checkRedrive(_ settings: QueueSettings, account: String, fifo: Bool, sourceName: String) throws {
        guard let raw = settings.values["RedrivePolicy"] else { return }
        let policy = try RedrivePolicy(json: raw)
        guard let arn = QueueARN(policy.deadLetterTargetArn), arn.account == account,
            let target = try store.queue(account: arn.account, name: arn.name)
        else {
            throw MessagingError.invalidAttributeValue("RedrivePolicy", "Dead letter target does not exist.")
        }
        guard target.fifo == fifo else {
            throw MessagingError.invalidAttributeValue("RedrivePolicy", "Dead-letter queue must be same type of queue as the source.")
        }
        let source = "arn:aws:sqs:\(region):\(account):\(sourceName)"
        if let allow = target.settings.values["RedriveAllowPolicy"], let p = try? RedriveAllowPolicy(json: allow), !p.allows(source) {
            throw MessagingError.invalidAttributeValue(
                "RedrivePolicy", "The dead-letter queue's RedriveAllowPolicy does not allow this queue.")
        }
    }

    /// The owner and name a queue URL (or `ACCOUNT/NAME`, or a bare name of the caller's) names.
    public static func address(_ url: String, caller: String) -> (owner: String, name: String)? {
        let parts = url.split(separator: "/", omittingEmptySubsequences: true).map(String.init)
        if parts.count >= 2, FunctionReference.isAccount(parts[parts.count - 2]) { return (parts[parts.count - 2], parts[parts.count - 1]) }
        return parts.count == 1 ? (caller, parts[0]) : nil
    }

    /// The queue a URL (or `ACCOUNT/NAME`, or a bare name of the caller's) names, which
    /// `caller` may use for `action` (its own, or another account's whose policy allows it).
    public func queue(url: String, caller: String, action: String) throws -> QueueRecord {
        guard let (owner, name) = Self.address(url, caller: caller) else {
            throw MessagingError("InvalidAddress", "The address \(url) is not valid for this endpoint.", status: 404)
        }
        guard let q = try store.queue(account: owner, name: name) else { throw MessagingError.noQueue }
        if owner != caller {
            guard let policy = q.settings.policy, policy.allows(account: caller, action: action) else {
                // As SQS: another account's queue that does not let the caller in is as good as absent.
                throw MessagingError.noQueue
            }
        }
        return q
    }

    public func queue(arn: String) throws -> QueueRecord? {
        guard let a = QueueARN(arn) else { return nil }
        return try store.queue(account: a.account, name: a.name)
    }

    public func list(account: String, prefix: String?) throws -> [QueueRecord] {
        try store.queues(account: account).filter { prefix == nil || $0.name.hasPrefix(prefix!) }
    }

    public func delete(_ q: QueueRecord) throws {
        try store.delete(q)
        signals.ring(q.id)
    }

    public func purge(_ q: QueueRecord) throws { try store.purge(q) }

    /// The attributes asked for (`All` for every one), the computed counts among them.
    public func attributes(_ q: QueueRecord, names: [String]) throws -> [String: String] {
        let all = names.contains("All")
        let known = QueueSettings.settable.union([
            "ApproximateNumberOfMessages", "ApproximateNumberOfMessagesNotVisible", "ApproximateNumberOfMessagesDelayed",
            "CreatedTimestamp", "LastModifiedTimestamp", "QueueArn",
        ])
        for n in names where n != "All" && !known.contains(n) { throw MessagingError.invalidAttributeName(n) }
        let wanted = all ? known : Set(names)
        var out: [String: String] = [:]
        for n in wanted {
            if let v = q.settings.value(n, fifo: q.fifo) { out[n] = v }
        }
        if !q.fifo { out["FifoQueue"] = nil }
        if wanted.contains("QueueArn") { out["QueueArn"] = q.arn(region: region) }
        if wanted.contains("CreatedTimestamp") { out["CreatedTimestamp"] = "\(q.created / 1000)" }
        if wanted.contains("LastModifiedTimestamp") { out["LastModifiedTimestamp"] = "\(q.modified / 1000)" }
        if !wanted.isDisjoint(with: [
            "ApproximateNumberOfMessages", "ApproximateNumberOfMessagesNotVisible", "ApproximateNumberOfMessagesDelayed",
        ]) {
            let c = try store.counts(q.id, now: now())
            if wanted.contains("ApproximateNumberOfMessages") { out["ApproximateNumberOfMessages"] = "\(c.visible)" }
            if wanted.contains("ApproximateNumberOfMessagesNotVisible") { out["ApproximateNumberOfMessagesNotVisible"] = "\(c.inFlight)" }
            if wanted.contains("ApproximateNumberOfMessagesDelayed") { out["ApproximateNumberOfMessagesDelayed"] = "\(c.delayed)" }
        }
        return out
    }

    public func setAttributes(_ q: QueueRecord, _ attributes: [String: String]) throws {
        var updated = q
        try updated.settings.set(attributes, fifo: q.fifo, creating: false)
        try checkRedrive(updated.settings, account: q.account, fifo: q.fifo, sourceName: q.name)
        try store.update(updated, now: now())
        signals.ring(q.id)
    }

    public func tag(_ q: QueueRecord, _ tags: [String: String]) throws {
        var updated = q
        updated.tags.merge(tags) { _, new in new }
        guard updated.tags.count <= 50 else { throw MessagingError.invalidParameter("A queue may have at most 50 tags.") }
        try store.update(updated, now: q.modified)
    }

    public func untag(_ q: QueueRecord, _ keys: [String]) throws {
        var updated = q
        for k in keys { updated.tags[k] = nil }
        try store.update(updated, now: q.modified)
    }

    /// The queues whose redrive policy names `q`.
    public func deadLetterSources(_ q: QueueRecord) throws -> [QueueRecord] {
        let arn = q.arn(region: region)
        return try store.queues(account: q.account).filter { $0.settings.redrive?.deadLetterTargetArn == arn }
    }

    // MARK: - messages

    /// What a send gives for one message: its fields as the API took them.
    public struct Outgoing: Sendable {
        public var body: String
        public var attributes: [String: MessageAttribute]
        public var delaySeconds: Int?
        public var groupID: String?
        public var dedupID: String?
        public init(
            body: String, attributes: [String: MessageAttribute] = [:], delaySeconds: Int? = nil, groupID: String? = nil,
            dedupID: String? = nil
        ) {
            self.body = body
            self.attributes = attributes
            self.delaySeconds = delaySeconds
            self.groupID = groupID
            self.dedupID = dedupID
        }
    }

    /// Checks one message against the queue's rules and makes it ready to store.
    public func prepare(_ q: QueueRecord, _ m: Outgoing, sender: String) throws(MessagingError) -> NewMessage {
        guard !m.body.isEmpty else { throw .missingParameter("MessageBody") }
        for u in m.body.unicodeScalars {
            let v = u.value
            guard v == 9 || v == 10 || v == 13 || (0x20...0xD7FF).contains(v) || (0xE000...0xFFFD).contains(v) || v >= 0x10000 else {
                throw MessagingError(
                    "InvalidMessageContents",
                    "Invalid characters found. Valid unicode characters are #x9 | #xA | #xD | #x20 to #xD7FF | #xE000 to #xFFFD | #x10000 to #x10FFFF"
                )
            }
        }
        try MessageAttribute.check(m.attributes)
        let size = m.body.utf8.count + MessageAttribute.size(m.attributes)
        guard size <= q.settings.maximumMessageSize else {
            throw .invalidParameter(
                "One or more parameters are invalid. Reason: Message must be shorter than \(q.settings.maximumMessageSize) bytes.")
        }
        if let d = m.delaySeconds {
            guard (0...900).contains(d) else {
                throw .invalidParameter("Value \(d) for parameter DelaySeconds is invalid. Reason: must be between 0 and 900, if provided.")
            }
            guard !q.fifo else {
                throw .invalidParameter(
                    "Value \(d) for parameter DelaySeconds is invalid. Reason: The request include parameter that is not valid for this queue type."
                )
            }
        }
        var dedup = m.dedupID
        if q.fifo {
            guard let g = m.groupID, !g.isEmpty else { throw .missingParameter("MessageGroupId") }
            try Self.checkToken(g, "MessageGroupId")
            if let d = dedup {
                try Self.checkToken(d, "MessageDeduplicationId")
            } else if q.settings.contentBasedDeduplication {
                dedup = SHA256.hash(data: Array(m.body.utf8)).map { String(format: "%02x", $0) }.joined()
            } else {
                throw .invalidParameter(
                    "The queue should either have ContentBasedDeduplication enabled or MessageDeduplicationId provided explicitly")
            }
        } else if m.dedupID != nil {
            throw .invalidParameter(
                "Value \(m.dedupID!) for parameter MessageDeduplicationId is invalid. Reason: The request includes a parameter that is not valid for this queue type."
            )
        }
        return NewMessage(
            body: m.body, attributes: m.attributes, sender: sender, delaySeconds: m.delaySeconds ?? q.settings.delaySeconds,
            groupID: m.groupID, dedupID: dedup)
    }

    static func checkToken(_ s: String, _ name: String) throws(MessagingError) {
        guard (1...128).contains(s.utf8.count), s.utf8.allSatisfy({ $0 >= 33 && $0 <= 126 }) else {
            throw .invalidParameter("Value \(s) for parameter \(name) is invalid. Reason: 1 to 128 printable ASCII characters, no spaces.")
        }
    }

    /// Stores messages durably, then wakes the receives waiting on the queue.
    public func send(_ q: QueueRecord, _ messages: [NewMessage]) async throws -> [SentMessage] {
        let sent = try await store.send(q, messages, now: now())
        signals.ring(q.id)
        return sent
    }

    /// Wakes the long polls waiting on `q` (a consumer that should stop looks again).
    public func wake(_ q: QueueRecord) { signals.ring(q.id) }

    /// Receives up to `max` messages, waiting up to `waitSeconds` for the first (long polling);
    /// a wait ends early, with nothing, once `until` says so (looked at whenever the poll wakes).
    public func receive(
        _ q: QueueRecord, max: Int, visibility: Int?, waitSeconds: Int?, until: @Sendable () -> Bool = { false }
    ) async throws -> [QueueMessage] {
        let deadline = now() + Int64(waitSeconds ?? q.settings.waitSeconds) * 1000
        var queue = q
        while true {
            let redrive = try redrive(for: queue)
            let got = try store.receive(
                queue, max: max, visibility: visibility ?? queue.settings.visibilitySeconds, now: now(), redrive: redrive)
            if got.moved > 0, let r = redrive { signals.ring(r.target.id) }
            if !got.messages.isEmpty { return got.messages }
            let t = now()
            guard t < deadline, !Task.isCancelled, !until() else { return [] }
            var wait = deadline - t
            if let next = try store.nextVisible(queue.id) { wait = min(wait, Swift.max(1, next - t)) }
            await signals.wait(queue.id, timeoutMillis: wait)
            if until() { return [] }
            // The queue may have been changed or deleted meanwhile.
            guard let fresh = try store.queue(id: q.id) else { throw MessagingError.noQueue }
            queue = fresh
        }
    }

    func redrive(for q: QueueRecord) throws -> QueueStore.Redrive? {
        guard let r = q.settings.redrive, let a = QueueARN(r.deadLetterTargetArn), a.account == q.account,
            let target = try store.queue(account: a.account, name: a.name)
        else { return nil }
        return QueueStore.Redrive(target: target, maxReceiveCount: r.maxReceiveCount, sourceARN: q.arn(region: region))
    }

    public func delete(_ q: QueueRecord, handle: String) throws { _ = try store.delete(q, handle: handle) }

    public func delete(_ q: QueueRecord, handles: [String]) throws -> [Result<Bool, MessagingError>] {
        try store.delete(q, handles: handles)
    }

    public func changeVisibility(_ q: QueueRecord, handles: [String], timeout: Int) throws -> [Result<Void, MessagingError>] {
        let r = try store.changeVisibility(q, handles: handles, timeout: timeout, now: now())
        if timeout == 0 { signals.ring(q.id) }
        return r
    }

    /// Makes received messages visible again without counting the receive (the platform's
    /// own consumer took them but could not run them: no capacity, shutting down).
    public func release(_ q: QueueRecord, handles: [String]) throws {
        _ = try store.changeVisibility(q, handles: handles, timeout: 0, now: now(), uncount: true)
        signals.ring(q.id)
    }

    // MARK: - upkeep

    public func run() async throws {
        var lastExpiry: Int64 = 0
        while !Task.isCancelled {
            let t = now()
            do {
                if t - lastExpiry >= 60_000 {
                    let n = try store.expire(now: t)
                    if n > 0 { logger.info("dropped messages past their queue's retention period", metadata: ["messages": "\(n)"]) }
                    lastExpiry = t
                }
                try publishGauges(now: t)
            } catch {
                logger.warning("queue upkeep failed", metadata: ["error": "\(error)"])
            }
            do { try await cancelWhenGracefulShutdown { try await Task.sleep(for: .seconds(5)) } } catch { break }
        }
        signals.ringAll()
    }

    func publishGauges(now t: Int64) throws {
        var seen: Set<String> = []
        for q in try store.queues(account: nil) {
            let c = try store.counts(q.id, now: t)
            let label = "\(q.account):\(q.name)"
            seen.insert(label)
            let dims = [("queue", label)]
            Gauge(label: "petrel_queue_messages", dimensions: dims + [("state", "visible")]).record(c.visible)
            Gauge(label: "petrel_queue_messages", dimensions: dims + [("state", "in_flight")]).record(c.inFlight)
            Gauge(label: "petrel_queue_messages", dimensions: dims + [("state", "delayed")]).record(c.delayed)
            Gauge(label: "petrel_queue_oldest_message_age_seconds", dimensions: dims).record(
                Double(c.oldestSent.map { t - $0 } ?? 0) / 1000)
        }
        let gone = published.withLock { p -> Set<String> in
            defer { p = seen }
            return p.subtracting(seen)
        }
        for label in gone {
            for state in ["visible", "in_flight", "delayed"] {
                Gauge(label: "petrel_queue_messages", dimensions: [("queue", label), ("state", state)]).record(0)
            }
            Gauge(label: "petrel_queue_oldest_message_age_seconds", dimensions: [("queue", label)]).record(0)
        }
    }
}
