import Dispatch
import Foundation
import Logging
import NIOCore
import NIOPosix
import PetrelCore
import PetrelSandbox
import PetrelStore

/// Routes invocations to instances: an idle warm instance of the version's
/// current revision when there is one, a new one otherwise. Instances belong to
/// one version (`FunctionRecord.instanceKey`), whichever alias routed to it;
/// admission and reserved concurrency count the whole function (`key`).
/// Admission comes first (account limit, reserved concurrency, the memory
/// budget, evicting idle instances least recently used first). Instances of an
/// older revision finish what they run and are then torn down.
public actor Dispatcher {
    let launcher: InstanceLauncher
    /// Where instances' output goes (journaled, then stored).
    nonisolated var logs: LogSink { launcher.sink }
    let code: CodeStore
    let configuration: RuntimeConfiguration
    let group: any EventLoopGroup
    let logger: Logger
    let metrics = RuntimeMetrics()

    var idle = IdlePool<Instance>()
    var live: [ObjectIdentifier: Instance] = [:]
    /// Memory charged to the budget per live instance (removed once, at stop or end).
    private var charged: [ObjectIdentifier: Int] = [:]
    /// The newest record seen per version: what an invocation runs.
    private var records = RecordBook()
    /// Why the next cold start of a version happens, when it is not simply "no idle instance".
    var nextColdReason: [String: ColdStartReason] = [:]
    var admission: Admission
    var stopping = false

    /// Provisioned concurrency: instances initialized ahead and kept (never evicted
    /// nor reaped), per version, for its record.
    struct Provisioned {
        var function: FunctionRecord
        var requested: Int
        var starting = 0
        var lastModified = Date()
        var failure: String?
    }
    var provisioned: [String: Provisioned] = [:]
    /// Instances that belong to a function's provisioned set.
    var provisionedIDs: Set<ObjectIdentifier> = []
    /// Those of them that finished their init and joined the pool (what "allocated" counts).
    var provisionedReady: Set<ObjectIdentifier> = []

    /// New instances to watch (the runtime service owns the watching tasks).
    nonisolated let launches: AsyncStream<Instance>
    private nonisolated let launchesContinuation: AsyncStream<Instance>.Continuation

    init(launcher: InstanceLauncher, code: CodeStore, configuration: RuntimeConfiguration, group: any EventLoopGroup, logger: Logger) {
        self.launcher = launcher
        self.code = code
        self.configuration = configuration
        self.group = group
        self.logger = logger
        admission = Admission(accountLimit: configuration.concurrencyLimit, memoryBudgetMB: configuration.memoryBudgetMB)
        (launches, launchesContinuation) = AsyncStream.makeStream(of: Instance.self)
    }

    /// What the platform holds right now.
    public struct Snapshot: Sendable, Equatable {
        public var live: Int
        public var idle: Int
        public var memoryInUseMB: Int
        public var memoryBudgetMB: Int
        public var concurrentExecutions: Int
        public var accountLimit: Int
        public var unreservedLimit: Int
    }

    public var snapshot: Snapshot {
        return Snapshot(
            live: live.count, idle: idle.count, memoryInUseMB: admission.memoryInUseMB,
            memoryBudgetMB: admission.memoryBudgetMB, concurrentExecutions: admission.totalInFlight,
            accountLimit: admission.accountLimit, unreservedLimit: admission.unreservedLimit)
    }

    // MARK: - reserved concurrency

    /// Loads the reservations stored with the functions (at start).
    public func loadReservations(_ all: [String: Int]) {
        for (name, value) in all { try? admission.setReserved(name, value) }
    }

    /// Checks a reservation without keeping it (the caller stores it, then calls `setReserved`).
    public func checkReserved(_ function: String, _ value: Int?) throws(DomainError) {
        var copy = admission
        try copy.setReserved(function, value)
    }

    public func setReserved(_ function: String, _ value: Int?) throws(DomainError) {
        try admission.setReserved(function, value)
    }

    // MARK: - invoking

    /// Callers waiting for a slot to free up (asynchronous events wait where a synchronous invoke is throttled).
    private var capacityWaiters: [CheckedContinuation<Void, Never>] = []

    /// Invokes like `invoke`, but waits up to `patience` for capacity instead of
    /// answering 429 at once (asynchronous events; the caller postpones an event
    /// still throttled after that, so one function's queue cannot hold every worker).
    public func invokeWhenAdmitted(
        _ function: FunctionRecord, _ request: InvocationRequest,
        patience: Duration = .seconds(1)
    ) async throws(RuntimeError) -> InvocationResult {
        let deadline = ContinuousClock.now + patience
        while !stopping {
            var trial = admission
            guard case .failure(let refusal) = trial.admit(function.key) else { break }
            guard ContinuousClock.now < deadline else {
                metrics.throttled(function.key, reason: refusal.reason)
                throw refusal.error
            }
            await withCheckedContinuation { capacityWaiters.append($0) }
        }
        return try await invoke(function, request)
    }

    /// Lets waiting events try again (a slot or memory was freed, or the maintenance tick came).
    func wakeCapacityWaiters() {
        guard !capacityWaiters.isEmpty else { return }
        let waiters = capacityWaiters
        capacityWaiters = []
        for w in waiters { w.resume() }
    }

    /// A place in the function's concurrency, taken ahead of an invocation: a consumer of an
    /// event source takes one before it receives, so that a function at its limit slows the
    /// consumption down rather than failing the messages it took.
    public struct Slot: Sendable {
        let ticket: Admission.Ticket
    }

    /// Waits until the function (its `key`) may run one more invocation and takes that place;
    /// nil when the platform is stopping or the waiting task was cancelled (and `nudge` called).
    public func reserveSlot(_ functionKey: String) async -> Slot? {
        while !stopping && !Task.isCancelled {
            if case .success(let t) = admission.admit(functionKey) {
                metrics.concurrency(admission.totalInFlight)
                return Slot(ticket: t)
            }
            await withCheckedContinuation { capacityWaiters.append($0) }
        }
        return nil
    }

    /// Wakes everything waiting for capacity, to look again (a cancelled waiter then leaves).
    public func nudge() { wakeCapacityWaiters() }

    /// Gives back a place that no invocation used.
    public func releaseSlot(_ slot: Slot) {
        admission.release(slot.ticket)
        metrics.concurrency(admission.totalInFlight)
        wakeCapacityWaiters()
    }

    /// Invokes `given` (or the newer record of its version the dispatcher knows) synchronously;
    /// throttles at once (429) when it may not run now. With a `slot` (of this function, from
    /// `reserveSlot`) it runs in that place, which it gives back when done.
    public func invoke(_ given: FunctionRecord, _ request: InvocationRequest, slot: Slot? = nil) async throws(RuntimeError)
        -> InvocationResult
    {
        guard !stopping else {
            if let slot { releaseSlot(slot) }
            throw RuntimeError(.unavailable, "Petrel is shutting down; try again shortly.")
        }
        // The version's key, made once: the pools, the records and the metrics all use it.
        let key = given.instanceKey
        let function = noteRevision(given, key: key)
        let ticket: Admission.Ticket
        if let slot {
            ticket = slot.ticket
        } else {
            switch admission.admit(function.key) {
            case .success(let t): ticket = t
            case .failure(let refusal):
                metrics.throttled(function.key, reason: refusal.reason)
                throw refusal.error
            }
        }
        metrics.concurrency(admission.totalInFlight)
        defer {
            admission.release(ticket)
            metrics.concurrency(admission.totalInFlight)
            wakeCapacityWaiters()
        }
        var cold = false
        let instance: Instance
        if let warm = takeIdle(function, key: key) {
            instance = warm
        } else {
            cold = true
            let reason = nextColdReason.removeValue(forKey: key) ?? .noIdleInstance
            do {
                instance = try await start(function)
            } catch {
                if error.code == .throttled { metrics.throttled(function.key, reason: Admission.Refusal.capacity.reason) }
                throw error
            }
            metrics.coldStart(key, alias: request.alias, url: request.viaURL, reason: reason, start: instance.start)
        }
        if cold {
            do {
                try await instance.waitInitialized(timeout: configuration.initTimeout)
            } catch {
                let failure = error as? InstanceFailure ?? .startFailed("\(error)")
                instance.log.platform(PlatformLines.start(request.requestID, version: function.version))
                retire(instance, because: .afterCrash)
                _ = await instance.finalReport(within: .seconds(2))
                let result = finish(instance, request, .failed(failure), cold: true, startedNanos: DispatchTime.now().uptimeNanoseconds)
                metrics.invoked(key, alias: request.alias, url: request.viaURL, result: result)
                return result
            }
        }
        let started = DispatchTime.now().uptimeNanoseconds
        instance.log.beginTail(wanted: request.wantsLogTail, keep: cold)
        instance.log.platform(PlatformLines.start(request.requestID, version: function.version))
        let outcome = await instance.invoke(request, timeoutSeconds: function.timeoutSeconds)
        if case .failed = outcome {
            // The instance is done for: its last figures come from its final report.
            retire(instance, because: .afterCrash)
            _ = await instance.finalReport(within: .seconds(2))
        }
        let result = finish(instance, request, outcome, cold: cold, startedNanos: started)
        metrics.invoked(key, alias: request.alias, url: request.viaURL, result: result)
        if case .failed = outcome { return result }
        if instance.isUsable, !stopping, records.isCurrent(function, key: key) {
            idle.add(instance, function: key)
        } else {
            retire(instance, because: .afterUpdate)
            metrics.instances(snapshot)
        }
        return result
    }

    /// Tears down the idle instances of a version whose code or configuration changed
    /// (`record`, its new revision) or that was deleted (nil); busy ones go when they finish.
    public func retire(_ instanceKey: String, record: FunctionRecord?) {
        records.set(instanceKey, record)
        if let record {
            if provisioned[instanceKey] != nil { provisioned[instanceKey]?.function = record }
            nextColdReason[instanceKey] = .afterUpdate
        } else {
            provisioned[instanceKey] = nil
        }
        for i in idle.removeAll(instanceKey) { retire(i, because: .afterUpdate) }
        metrics.instances(snapshot)
    }

    /// A function was deleted: its versions' instances go (busy ones when they finish), and
    /// its reservation with them.
    public func functionDeleted(_ key: String, versions: [String]) {
        try? admission.setReserved(key, nil)
        for v in versions { retire(v, record: nil) }
    }

    /// Stops instances idle for longer than the keep-alive; returns how many.
    @discardableResult
    public func reapIdle(now: ContinuousClock.Instant = .now) -> Int {
        let expired = idle.expire(now: now, keepAlive: configuration.keepAlive) { !isProvisioned($0) }
        for i in expired { retire(i, because: nil) }
        if !expired.isEmpty { metrics.instances(snapshot) }
        return expired.count
    }

    /// Publishes the instance gauges (the maintenance loop calls this; the hot path does not).
    public func publishGauges() {
        metrics.instances(snapshot)
        // Memory freed by teardowns, reservations changed: waiting events look again.
        wakeCapacityWaiters()
    }

    /// Stops everything; new invocations are refused from now on.
    func stopAll() {
        stopping = true
        wakeCapacityWaiters()
        _ = idle.removeEverything()
        for i in live.values { retire(i, because: nil) }
        if live.isEmpty { launchesContinuation.finish() }
    }

    func ended(_ instance: Instance) {
        let id = ObjectIdentifier(instance)
        live[id] = nil
        provisionedIDs.remove(id)
        provisionedReady.remove(id)
        release(instance)
        idle.remove(instance, function: instance.function.instanceKey)
        metrics.instances(snapshot)
        if stopping && live.isEmpty { launchesContinuation.finish() }
    }

    // MARK: -

    func isProvisioned(_ i: Instance) -> Bool { provisionedIDs.contains(ObjectIdentifier(i)) }

    /// Stops an instance and gives its memory back to the budget at once (its
    /// processes die within milliseconds; the teardown that follows holds no memory
    /// worth counting). `because`: what the function's next cold start is owed to.
    func retire(_ instance: Instance, because reason: ColdStartReason?) {
        instance.stop()
        release(instance)
        if let reason { nextColdReason[instance.function.instanceKey] = reason }
    }

    /// Gives an instance's memory back to the budget (once, whichever comes first: its
    /// retirement or its end).
    private func release(_ instance: Instance) {
        if let mb = charged.removeValue(forKey: ObjectIdentifier(instance)) { admission.uncharge(memoryMB: mb) }
    }

    /// Evicts idle instances, least recently used first, until `mb` fits the budget.
    func makeRoom(forMB mb: Int) -> Bool {
        while !admission.fits(memoryMB: mb) {
            guard let (name, victim) = idle.evictOldest(where: { !isProvisioned($0) }) else { return false }
            retire(victim, because: .evicted)
            metrics.evicted(name)
            logger.debug("evicted an idle instance", metadata: ["function.name": "\(name)", "instance.id": "\(victim.id)"])
        }
        return true
    }

    /// Notes the record an invocation (or a provisioned set) came with, and answers the one
    /// to run (see `RecordBook`).
    @discardableResult
    func noteRevision(_ f: FunctionRecord, key: String? = nil) -> FunctionRecord {
        let key = key ?? f.instanceKey
        let (run, change) = records.note(f, key: key)
        if change != .none {
            // Only instances of another revision go (provisioned ones may be current already).
            for i in idle.removeAll(key, where: { $0.function.revisionId != f.revisionId }) { retire(i, because: .afterUpdate) }
        }
        if change == .newer { nextColdReason[key] = .afterUpdate }
        return run
    }

    private func takeIdle(_ f: FunctionRecord, key: String) -> Instance? {
        // Among the most recently used few, one on this thread's event loop saves the
        // invocation two thread hand-offs (see LoopAffineExecutor).
        let here = MultiThreadedEventLoopGroup.currentEventLoop
        let (taken, stale) = idle.take(
            key, preferred: { here != nil && $0.loop === here },
            usable: { $0.function.revisionId == f.revisionId && $0.isUsable && !$0.credentialsExpiring })
        for i in stale { retire(i, because: i.credentialsExpiring && i.isUsable ? .credentialsExpired : .afterCrash) }
        return taken
    }

    /// Starts an instance of `function`: makes room in the memory budget (evicting idle
    /// instances) and charges its memory there, the one place a charge is made; throws a
    /// throttle when no room can be made, and gives the charge back when the start fails.
    func start(_ function: FunctionRecord) async throws(RuntimeError) -> Instance {
        guard makeRoom(forMB: function.memoryMB) else { throw Admission.Refusal.capacity.error }
        admission.charge(memoryMB: function.memoryMB)
        let instance: Instance
        do {
            instance = try await launch(function)
        } catch {
            admission.uncharge(memoryMB: function.memoryMB)
            throw error
        }
        charged[ObjectIdentifier(instance)] = function.memoryMB
        return instance
    }

    private func launch(_ function: FunctionRecord) async throws(RuntimeError) -> Instance {
        // The instance serves its Runtime API on the loop of the request that started it,
        // which is where the same caller's next requests will most likely arrive.
        let loop = MultiThreadedEventLoopGroup.currentEventLoop ?? group.next()
        let launcher = self.launcher
        let code = self.code
        let result: Result<Instance, RuntimeError> = await withCheckedContinuation { cont in
            DispatchQueue.global().async {
                do {
                    let dir = try code.unpacked(hex: function.codeDigestHex)
                    let layers = try (function.layers ?? []).map { try code.unpacked(hex: $0.codeDigestHex) }
                    cont.resume(returning: .success(try launcher.launch(function, codeDirectory: dir, layers: layers, on: loop)))
                } catch let e as RuntimeError {
                    cont.resume(returning: .failure(e))
                } catch let e as StoreError {
                    // The code's own sentence (missing, altered, not unpacked) is what the caller needs.
                    cont.resume(returning: .failure(RuntimeError(.startFailed, e.message, cause: e)))
                } catch {
                    cont.resume(
                        returning: .failure(RuntimeError(.startFailed, "Petrel could not start an instance: \(error)", cause: error)))
                }
            }
        }
        let instance = try result.get()
        live[ObjectIdentifier(instance)] = instance
        launchesContinuation.yield(instance)
        instance.log.beginTail(wanted: true, keep: false) // init output joins the first invocation's tail
        instance.log.platform(PlatformLines.initStart(function.runtime))
        if stopping { instance.stop() }
        return instance
    }

    private func finish(
        _ instance: Instance, _ request: InvocationRequest, _ outcome: InvocationOutcome,
        cold: Bool, startedNanos: UInt64
    ) -> InvocationResult {
        let durationMs = Double(DispatchTime.now().uptimeNanoseconds - startedNanos) / 1e6
        let peakMB = instance.peakMemoryMB()
        let initMs = cold ? instance.initDurationMs : nil
        var payload: ByteBuffer
        var functionError: String?
        var errorType: String?
        var status: String?
        switch outcome {
        case .response(let body):
            payload = body
        case .functionError(let body, let type):
            payload = body
            functionError = "Unhandled"
            errorType = type ?? "Unhandled"
        case .failed(let f):
            let doc = f.document(requestID: request.requestID)
            payload = ByteBuffer(string: doc.json)
            functionError = "Unhandled"
            errorType = doc.type
            status = f.reportStatus
        }
        instance.log.platform(PlatformLines.end(request.requestID))
        instance.log.platform(
            PlatformLines.report(
                request.requestID, durationMs: durationMs, memoryMB: instance.function.memoryMB,
                maxMemoryUsedMB: peakMB, initDurationMs: initMs, status: status))
        let (tail, logSeq) = instance.log.endTail(build: request.wantsLogTail)
        return InvocationResult(
            payload: payload, functionError: functionError, errorType: errorType, logTail: tail, logSequence: logSeq,
            executedVersion: instance.function.version, coldStart: cold, durationMs: durationMs, initDurationMs: initMs,
            phases: cold ? instance.coldStartPhases : nil)
    }
}

/// Why an invocation started a new instance.
public enum ColdStartReason: String, Sendable {
    case noIdleInstance = "no_idle_instance"
    case evicted
    case afterUpdate = "after_update"
    case afterCrash = "after_crash"
    /// The idle instance's credentials were about to expire (see `Instance.credentialsExpiring`).
    case credentialsExpired = "credentials_expired"
    /// Made ahead for provisioned concurrency (no invocation waited for it).
    case provisioned
}
