import Foundation
import Logging
import Metrics
import NIOCore
import PetrelCore
import PetrelStore
import ServiceLifecycle
import Synchronization

/// Settings of asynchronous invocation.
public struct EventSettings: Sendable {
    /// Events run at once at most (each also takes a slot of the concurrency limit).
    public var workers: Int
    /// The first retry waits this long; each later one twice as long as the one before.
    public var retryDelaySeconds: Int
    /// At shutdown, how long events that are running may take to finish.
    public var drainTimeout: Duration
    public var region: String
    public var clock: PlatformClock

    public init(
        workers: Int = 32, retryDelaySeconds: Int = 60, drainTimeout: Duration = .seconds(30), region: String = "us-east-1",
        clock: PlatformClock = PlatformClock()
    ) {
        self.workers = workers
        self.retryDelaySeconds = retryDelaySeconds
        self.drainTimeout = drainTimeout
        self.region = region
        self.clock = clock
    }
}

/// Where records bound for a queue or topic go (the messaging layer above, bound at start).
public protocol RecordSink: Sendable {
    /// Stores `record` in the SQS queue or SNS topic `arn` (of `account`) durably, with
    /// `attributes` as string message attributes.
    func send(record: Data, to arn: String, account: String, attributes: [String: String]) async throws
}

/// Sees asynchronous events through: runs what is due from the durable queue
/// (waiting for capacity rather than being throttled), retries failures with
/// backoff, gives up on events older than their function allows, and hands
/// each record to its destination. Also fires the schedules' slots. An event
/// stays queued until its outcome is stored, so a crash runs it again.
public final class EventService: Service, Sendable {
    public let store: EventStore
    public let schedules: ScheduleStore
    let functions: FunctionStore
    let dispatcher: Dispatcher
    public let settings: EventSettings
    let logger: Logger
    let wakeup = Wakeup()
    let scheduleWakeup = Wakeup()
    let queueDepth = Gauge(label: "petrel_async_queue_depth")
    /// Seconds since the oldest queued event was accepted (0: none queued).
    let oldestAge = Gauge(label: "petrel_async_oldest_event_age_seconds")
    /// Queues and topics, for destinations that name them (bound once the messaging layer exists).
    private let sink = Mutex<(any RecordSink)?>(nil)

    public func bind(_ s: any RecordSink) { sink.withLock { $0 = s } }

    private struct State {
        var running: Set<String> = []
        var stopping = false
        /// Past the drain: outcomes that still arrive are not stored (the events run again after restart).
        var abandoned = false
    }
    private let state = Mutex(State())

    public init(
        store: EventStore, schedules: ScheduleStore, functions: FunctionStore, dispatcher: Dispatcher,
        settings: EventSettings, logger: Logger
    ) {
        self.store = store
        self.schedules = schedules
        self.functions = functions
        self.dispatcher = dispatcher
        self.settings = settings
        self.logger = logger
    }

    /// How often the loops look at the store without being rung (another process
    /// may queue: `petreld dlq redrive`), or at a clock a test moves.
    var pollInterval: Duration { settings.clock.isMoved ? .milliseconds(100) : .seconds(1) }

    /// Queues events durably, then lets the runner know.
    public func accept(_ events: [QueuedEvent]) async throws {
        try await store.enqueue(events)
        wakeup.ring()
    }

    /// A schedule was made: its first slot may come before the loop would look again.
    public func schedulesChanged() { scheduleWakeup.ring() }

    var stopping: Bool { state.withLock { $0.stopping } }

    public func run() async throws {
        await withDiscardingTaskGroup { group in
            group.addTask {
                try? await gracefulShutdown()
                self.state.withLock { $0.stopping = true }
                self.wakeup.ring()
                self.scheduleWakeup.ring()
            }
            group.addTask { await self.fireSchedules() }
            var published = ContinuousClock.now - .seconds(2)
            while !stopping {
                do {
                    try dispatchDue(into: &group)
                    if ContinuousClock.now - published >= .seconds(1) {
                        let (depth, oldest) = try store.depthAndOldest()
                        queueDepth.record(depth)
                        oldestAge.record(oldest.map { max(0, Double(settings.clock.nowMillis() - $0) / 1000) } ?? 0)
                        published = .now
                    }
                } catch {
                    logger.error("cannot read the event queue", metadata: ["error": "\(error)"])
                }
                await wakeup.wait(timeout: nextWait())
            }
            await drain()
        }
        logger.info("event runner stopped")
    }

    /// Starts the due events there are workers for.
    private func dispatchDue(into group: inout DiscardingTaskGroup) throws {
        let running = state.withLock { $0.running }
        let free = settings.workers - running.count
        guard free > 0 else { return }
        for e in try store.due(now: settings.clock.nowMillis(), limit: free, excluding: running) {
            state.withLock { _ = $0.running.insert(e.id) }
            group.addTask {
                await self.attempt(e)
                self.state.withLock { _ = $0.running.remove(e.id) }
                self.wakeup.ring()
            }
        }
    }

    private func nextWait() -> Duration {
        let running = state.withLock { $0.running }
        guard running.count < settings.workers, let due = try? store.nextDue(excluding: running) else { return pollInterval }
        let ms = due - settings.clock.nowMillis()
        return ms <= 0 ? .milliseconds(1) : min(.milliseconds(ms), pollInterval)
    }

    /// At shutdown: lets running events finish within the drain timeout; past it, stops
    /// the instances and leaves those events queued.
    private func drain() async {
        let deadline = ContinuousClock.now + settings.drainTimeout
        while !state.withLock({ $0.running.isEmpty }), ContinuousClock.now < deadline {
            await wakeup.wait(timeout: .milliseconds(50))
        }
        let left = state.withLock { s -> Int in
            s.abandoned = !s.running.isEmpty
            return s.running.count
        }
        if left > 0 {
            logger.notice("events still running at shutdown stay queued and run again at the next start", metadata: ["events": "\(left)"])
            await dispatcher.stopAll()
        }
    }

    // MARK: - one attempt

    func attempt(_ e: QueuedEvent) async {
        do {
            guard let target = try functions.resolve(account: e.account, e.function, qualifier: e.qualifier) else {
                logger.notice(
                    "dropped an event: its function no longer exists",
                    metadata: ["invocation.id": "\(e.id)", "function.name": "\(e.function)"])
                count(e, "dropped")
                try await store.finish(e, then: .none)
                return
            }
            let f = target.record
            // The qualifier's own configuration, else the function's.
            let config =
                try store.config(account: e.account, function: EventStore.configKey(e.function, qualifier: e.qualifier))
                ?? store.config(account: e.account, function: e.function) ?? EventInvokeConfig()
            let arn = FunctionARN(region: settings.region, account: f.account, name: f.name, qualifier: e.qualifier).description
            if settings.clock.nowMillis() - e.created > Int64(config.maximumEventAgeSeconds) * 1000 {
                let last = e.lastResponse.map { EventDocuments.Response(payload: $0, functionError: e.lastError.map { _ in "Unhandled" }) }
                try await giveUp(e, f, config, condition: "EventAgeExceeded", attempts: e.attempts, response: last)
                return
            }
            var request = InvocationRequest(requestID: e.id, payload: ByteBuffer(bytes: e.payload), invokedARN: arn)
            request.wantsLogTail = false
            if case .alias(let a, _) = target { request.alias = a.name }
            let outcome: EventDocuments.Response
            do {
                let result = try await dispatcher.invokeWhenAdmitted(f, request)
                outcome = .init(
                    payload: Data(result.payload.readableBytesView), functionError: result.functionError,
                    executedVersion: result.executedVersion)
                // What the invocation printed is journaled already (it survives the daemon's death);
                // before its outcome is committed, make it survive the machine's too.
                // (fdatasync blocks: on a Dispatch thread, not one of the few cooperative ones.)
                if let seq = result.logSequence {
                    let logs = dispatcher.logs
                    let synced = await blocking { Result { try logs.sync(through: seq) } }
                    if case .failure(let error) = synced {
                        logger.warning("cannot sync the log journal", metadata: ["invocation.id": "\(e.id)", "error": "\(error)"])
                    }
                }
            } catch  where error.code == .throttled && !stopping {
                // No capacity for this function now: it waits its turn (not an attempt), while other work runs.
                try await store.postpone(e, due: settings.clock.nowMillis() + 250)
                count(e, "throttled")
                return
            } catch {
                if stopping { return } // the platform is going down: the event stays queued
                // The platform could not run it: in the record, as Lambda names a failure of its own.
                outcome = .init(
                    payload: Data("{\"errorType\":\"ServiceException\",\"errorMessage\":\(EventDocuments.string(error.message))}".utf8),
                    functionError: "Unhandled")
            }
            if state.withLock({ $0.abandoned }) { return }
            let attempts = e.attempts + 1
            if outcome.functionError == nil {
                try await handOff(e, f, destination: config.onSuccess, condition: "Success", attempts: attempts, response: outcome)
                count(e, "succeeded")
            } else if attempts <= config.maximumRetryAttempts {
                let delay = Int64(settings.retryDelaySeconds) * 1000 << Int64(attempts - 1)
                try await store.retry(
                    e, attempts: attempts, due: settings.clock.nowMillis() + delay, response: outcome.payload,
                    error: outcome.functionError ?? "Unhandled")
                count(e, "retried")
            } else {
                try await giveUp(e, f, config, condition: "RetriesExhausted", attempts: attempts, response: outcome)
            }
        } catch {
            // The event stays queued and runs again.
            logger.error("cannot store an event's outcome", metadata: ["invocation.id": "\(e.id)", "error": "\(error)"])
        }
    }

    private func count(_ e: QueuedEvent, _ outcome: String) {
        dispatcher.metrics.asyncEvent(e.account + ":" + e.function, outcome: outcome)
    }

    private func giveUp(
        _ e: QueuedEvent, _ f: FunctionRecord, _ config: EventInvokeConfig, condition: String, attempts: Int,
        response: EventDocuments.Response?
    ) async throws {
        logger.notice(
            "an event failed for good",
            metadata: [
                "invocation.id": "\(e.id)", "function.name": "\(f.name)",
                "event.condition": "\(condition)", "event.attempts": "\(attempts)",
            ])
        // The function's dead-letter queue (DeadLetterConfig) gets the event itself, with
        // Lambda's attributes, beside whatever the OnFailure destination gets.
        if let target = f.deadLetterTarget {
            var error = "Unhandled"
            var message = condition
            if let r = response, let doc = try? JSONSerialization.jsonObject(with: r.payload) as? [String: Any] {
                error = (doc["errorType"] as? String) ?? error
                message = (doc["errorMessage"] as? String) ?? message
            }
            do {
                guard let sink = sink.withLock({ $0 }) else { throw RuntimeError(.unavailable, "queues and topics are not ready") }
                try await sink.send(
                    record: e.payload, to: target, account: f.account,
                    attributes: ["RequestID": e.id, "ErrorCode": "200", "ErrorMessage": "\(error): \(message)"])
                count(e, "dead_lettered")
            } catch {
                logger.warning(
                    "the function's dead-letter queue could not take an event",
                    metadata: ["invocation.id": "\(e.id)", "destination": "\(target)", "error": "\(error)"])
                count(e, "dead_letter_failed")
            }
        }
        try await handOff(e, f, destination: config.onFailure, condition: condition, attempts: attempts, response: response)
        count(e, condition == "EventAgeExceeded" ? "expired" : "failed")
    }

    /// Removes the event and, in the same transaction, hands its record to `destination`.
    private func handOff(
        _ e: QueuedEvent, _ f: FunctionRecord, destination: String?, condition: String, attempts: Int,
        response: EventDocuments.Response?
    ) async throws {
        let handoff: EventStore.Handoff
        let now = settings.clock.nowMillis()
        if let destination, let target = try? Destination(parsing: destination, account: f.account, region: settings.region) {
            let arn = FunctionARN(region: settings.region, account: f.account, name: f.name, qualifier: e.qualifier ?? "$LATEST")
                .description
            let record = EventDocuments.invocationRecord(
                requestID: e.id, functionARN: arn, condition: condition, attempts: attempts,
                now: now, requestPayload: e.payload, response: response)
            switch target {
            case .deadLetterQueue:
                handoff = .deadLetter(
                    DeadLetter(
                        account: f.account, function: f.name, requestID: e.id, condition: condition,
                        created: now, record: record, payload: e.payload))
            case .function(let account, let name):
                handoff = .event(
                    QueuedEvent(
                        id: FastIDs.uuid(), account: account, function: name, payload: record, created: now,
                        source: "destination"))
            case .queue(let arn), .topic(let arn):
                // Stored there first, then the event leaves: a crash between the two sends the
                // record again (at least once, as Lambda's destinations).
                do {
                    guard let sink = sink.withLock({ $0 }) else { throw RuntimeError(.unavailable, "queues and topics are not ready") }
                    try await sink.send(record: record, to: arn, account: f.account, attributes: [:])
                    dispatcher.metrics.asyncEvent(e.account + ":" + e.function, outcome: "destination_delivered")
                } catch {
                    // As Lambda: a destination that cannot take the record loses it, and says so.
                    logger.warning(
                        "a destination could not take an invocation record",
                        metadata: ["invocation.id": "\(e.id)", "destination": "\(arn)", "error": "\(error)"])
                    dispatcher.metrics.asyncEvent(e.account + ":" + e.function, outcome: "destination_failed")
                }
                handoff = .none
            }
        } else {
            handoff = .none
        }
        try await store.finish(e, then: handoff)
    }
}
