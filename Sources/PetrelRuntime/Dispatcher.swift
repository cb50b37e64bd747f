import Dispatch
import Foundation
import Logging
import NIOCore
import NIOPosix
import PetrelCore
import PetrelSandbox
import PetrelStore

/// Routes invocations to instances: an idle warm instance of the function's
/// current revision when there is one, a new one otherwise. Admission comes
/// first (account limit, reserved concurrency, the memory budget, evicting
/// idle instances least recently used first). Instances of an older revision
/// finish what they run and are then torn down.
public actor Dispatcher {
    let launcher: InstanceLauncher
    /// Where instances' output goes (journaled, then stored).
    nonisolated var logs: LogSink { launcher.sink }
    let code: CodeStore
    let configuration: RuntimeConfiguration
    let group: any EventLoopGroup
    let logger: Logger
    let metrics = RuntimeMetrics()

    private struct Idle {
        var instance: Instance
        var since: ContinuousClock.Instant
    }
    private var idle: [String: [Idle]] = [:]
    private var live: [ObjectIdentifier: Instance] = [:]
    /// Memory charged to the budget per live instance (removed once, at stop or end).
    private var charged: [ObjectIdentifier: Int] = [:]
    /// The newest revision seen per function; nil once deleted.
    private var revisions: [String: String] = [:]
    /// Why the next cold start of a function happens, when it is not simply "no idle instance".
    private var nextColdReason: [String: ColdStartReason] = [:]
    private var admission: Admission
    private var stopping = false

    /// Provisioned concurrency: instances initialized ahead and kept (never evicted
    /// nor reaped), per function, for its current record.
    private struct Provisioned {
        var function: FunctionRecord
        var requested: Int
        var starting = 0
        var lastModified = Date()
        var failure: String?
    }
    private var provisioned: [String: Provisioned] = [:]
    /// Instances that belong to a function's provisioned set.
    private var provisionedIDs: Set<ObjectIdentifier> = []
    /// Those of them that finished their init and joined the pool (what "allocated" counts).
    private var provisionedReady: Set<ObjectIdentifier> = []

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
        let idleCount = idle.values.reduce(0) { $0 + $1.count }
        return Snapshot(live: live.count, idle: idleCount, memoryInUseMB: admission.memoryInUseMB,
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
    public func invokeWhenAdmitted(_ function: FunctionRecord, _ request: InvocationRequest,
                                   patience: Duration = .seconds(1)) async throws(RuntimeError) -> InvocationResult {
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

    /// Invokes `function` synchronously; throttles at once (429) when it may not run now.
    public func invoke(_ function: FunctionRecord, _ request: InvocationRequest) async throws(RuntimeError) -> InvocationResult {
        guard !stopping else { throw RuntimeError(.unavailable, "Petrel is shutting down; try again shortly.") }
        noteRevision(function)
        let ticket: Admission.Ticket
        switch admission.admit(function.key) {
        case .success(let t): ticket = t
        case .failure(let refusal):
            metrics.throttled(function.key, reason: refusal.reason)
            throw refusal.error
        }
        metrics.concurrency(admission.totalInFlight)
        defer {
            admission.release(ticket)
            metrics.concurrency(admission.totalInFlight)
            wakeCapacityWaiters()
        }
        var cold = false
        let instance: Instance
        if let warm = takeIdle(function) {
            instance = warm
        } else {
            cold = true
            let reason = nextColdReason.removeValue(forKey: function.key) ?? .noIdleInstance
            guard makeRoom(forMB: function.memoryMB) else {
                metrics.throttled(function.key, reason: Admission.Refusal.capacity.reason)
                throw Admission.Refusal.capacity.error
            }
            admission.charge(memoryMB: function.memoryMB)
            do {
                instance = try await start(function, charge: function.memoryMB)
            } catch {
                admission.uncharge(memoryMB: function.memoryMB)
                throw error
            }
            metrics.coldStart(function.key, reason: reason)
        }
        if cold {
            do {
                try await instance.waitInitialized(timeout: configuration.initTimeout)
            } catch {
                let failure = error as? InstanceFailure ?? .startFailed("\(error)")
                instance.log.platform("START RequestId: \(request.requestID) Version: $LATEST")
                retire(instance, because: .afterCrash)
                _ = await instance.finalReport(within: .seconds(2))
                let result = finish(instance, request, .failed(failure), cold: true, startedNanos: DispatchTime.now().uptimeNanoseconds)
                metrics.invoked(function.key, result: result)
                return result
            }
        }
        let started = DispatchTime.now().uptimeNanoseconds
        instance.log.beginTail(wanted: request.wantsLogTail, keep: cold)
        instance.log.platform("START RequestId: \(request.requestID) Version: $LATEST")
        let outcome = await instance.invoke(request, timeoutSeconds: function.timeoutSeconds)
        if case .failed = outcome {
            // The instance is done for: its last figures come from its final report.
            retire(instance, because: .afterCrash)
            _ = await instance.finalReport(within: .seconds(2))
        }
        let result = finish(instance, request, outcome, cold: cold, startedNanos: started)
        metrics.invoked(function.key, result: result)
        if case .failed = outcome { return result }
        if instance.isUsable, !stopping, revisions[function.key] == function.revisionId {
            idle[function.key, default: []].append(Idle(instance: instance, since: .now))
        } else {
            retire(instance, because: .afterUpdate)
            metrics.instances(snapshot)
        }
        return result
    }

    /// Tears down the idle instances of a function (its code or configuration
    /// changed, or it was deleted); busy ones go when they finish.
    public func retire(_ name: String, newRevision: String?, record: FunctionRecord? = nil) {
        revisions[name] = newRevision
        if newRevision == nil {
            try? admission.setReserved(name, nil)
            provisioned[name] = nil
        }
        if let record, provisioned[name] != nil { provisioned[name]?.function = record }
        for i in idle.removeValue(forKey: name) ?? [] { retire(i.instance, because: .afterUpdate) }
        if newRevision != nil { nextColdReason[name] = .afterUpdate }
        metrics.instances(snapshot)
    }

    /// Stops instances idle for longer than the keep-alive; returns how many.
    @discardableResult
    public func reapIdle(now: ContinuousClock.Instant = .now) -> Int {
        var n = 0
        for (name, list) in idle {
            let expired = list.filter { now - $0.since >= configuration.keepAlive && !isProvisioned($0.instance) }
            guard !expired.isEmpty else { continue }
            let keep = list.filter { i in !expired.contains { $0.instance === i.instance } }
            idle[name] = keep.isEmpty ? nil : keep
            for e in expired { retire(e.instance, because: nil) }
            n += expired.count
        }
        if n > 0 { metrics.instances(snapshot) }
        return n
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
        idle = [:]
        for i in live.values { retire(i, because: nil) }
        if live.isEmpty { launchesContinuation.finish() }
    }

    func ended(_ instance: Instance) {
        let id = ObjectIdentifier(instance)
        live[id] = nil
        provisionedIDs.remove(id)
        provisionedReady.remove(id)
        if let mb = charged.removeValue(forKey: id) { admission.uncharge(memoryMB: mb) }
        if var list = idle[instance.function.key] {
            list.removeAll { $0.instance === instance }
            idle[instance.function.key] = list.isEmpty ? nil : list
        }
        metrics.instances(snapshot)
        if stopping && live.isEmpty { launchesContinuation.finish() }
    }

    // MARK: -

    private func isProvisioned(_ i: Instance) -> Bool { provisionedIDs.contains(ObjectIdentifier(i)) }

    // MARK: - provisioned concurrency

    public struct ProvisionedStatus: Sendable {
        public var requested: Int
        public var allocated: Int
        public var available: Int
        public var status: String
        public var reason: String?
        public var lastModified: Date
    }

    /// Sets (nil: removes) a function's provisioned concurrency; instances are made by `maintainProvisioned()`.
    public func setProvisioned(_ function: FunctionRecord, _ count: Int?) {
        noteRevision(function)
        if let count, count > 0 {
            var p = provisioned[function.key] ?? Provisioned(function: function, requested: count)
            p.function = function
            p.requested = count
            p.lastModified = Date()
            p.failure = nil
            provisioned[function.key] = p
        } else {
            provisioned[function.key] = nil
        }
        trimProvisioned(function.key)
    }

    public func provisionedStatus(_ name: String) -> ProvisionedStatus? {
        guard let p = provisioned[name] else { return nil }
        // Allocated: initialized and in the pool (an instance still in its init does not count yet;
        // counting it as soon as its runtime is up would report READY before it is available).
        let mine = live.values.filter { $0.function.key == name && provisionedReady.contains(ObjectIdentifier($0))
                                        && $0.function.revisionId == p.function.revisionId && $0.isUsable }
        let allocated = mine.count
        let available = idle[name]?.filter { isProvisioned($0.instance) }.count ?? 0
        let status = p.failure != nil ? "FAILED" : (allocated >= p.requested ? "READY" : "IN_PROGRESS")
        return ProvisionedStatus(requested: p.requested, allocated: min(allocated, p.requested), available: min(available, p.requested),
                                 status: status, reason: p.failure, lastModified: p.lastModified)
    }

    /// Starts what is missing of every provisioned set (one round; the maintenance loop repeats it).
    public func maintainProvisioned() async {
        for (name, p) in provisioned where p.failure == nil && !stopping {
            let have = live.values.filter { $0.function.key == name && isProvisioned($0) && $0.function.revisionId == p.function.revisionId }.count
            let missing = p.requested - have - p.starting
            guard missing > 0 else { continue }
            provisioned[name]?.starting += missing
            await withTaskGroup(of: Void.self) { group in
                for _ in 0..<missing { group.addTask { await self.startProvisioned(p.function) } }
            }
        }
    }

    private func startProvisioned(_ function: FunctionRecord) async {
        defer { provisioned[function.key]?.starting -= 1 }
        guard makeRoom(forMB: function.memoryMB) else {
            provisioned[function.key]?.failure = "The host's memory budget for instances cannot hold the provisioned instances."
            return
        }
        admission.charge(memoryMB: function.memoryMB)
        let instance: Instance
        do {
            instance = try await start(function, charge: function.memoryMB)
        } catch {
            admission.uncharge(memoryMB: function.memoryMB)
            provisioned[function.key]?.failure = "An instance could not start: \(error)"
            return
        }
        provisionedIDs.insert(ObjectIdentifier(instance))
        metrics.coldStart(function.key, reason: .provisioned)
        do {
            try await instance.waitInitialized(timeout: configuration.initTimeout)
        } catch {
            retire(instance, because: nil)
            provisioned[function.key]?.failure = "The function's init failed: \(error)"
            return
        }
        _ = instance.log.endTail(build: false).tail
        // Still wanted (the same revision, the set not shrunk meanwhile)?
        guard let p = provisioned[function.key], p.function.revisionId == function.revisionId, !stopping else {
            retire(instance, because: nil)
            return
        }
        idle[function.key, default: []].append(Idle(instance: instance, since: .now))
        provisionedReady.insert(ObjectIdentifier(instance))
        trimProvisioned(function.key)
        metrics.instances(snapshot)
    }

    /// Retires provisioned idle instances beyond the requested count (or of an old revision).
    private func trimProvisioned(_ name: String) {
        let want = provisioned[name]
        var list = idle[name] ?? []
        var kept = 0
        list.removeAll { i in
            guard isProvisioned(i.instance) else { return false }
            if let want, i.instance.function.revisionId == want.function.revisionId, kept < want.requested {
                kept += 1
                return false
            }
            provisionedIDs.remove(ObjectIdentifier(i.instance))
            provisionedReady.remove(ObjectIdentifier(i.instance))
            retire(i.instance, because: nil)
            return true
        }
        idle[name] = list.isEmpty ? nil : list
    }

    /// Stops an instance and gives its memory back to the budget at once (its
    /// processes die within milliseconds; the teardown that follows holds no memory
    /// worth counting). `because`: what the function's next cold start is owed to.
    private func retire(_ instance: Instance, because reason: ColdStartReason?) {
        instance.stop()
        if let mb = charged.removeValue(forKey: ObjectIdentifier(instance)) { admission.uncharge(memoryMB: mb) }
        if let reason { nextColdReason[instance.function.key] = reason }
    }

    /// Evicts idle instances, least recently used first, until `mb` fits the budget.
    private func makeRoom(forMB mb: Int) -> Bool {
        while !admission.fits(memoryMB: mb) {
            let oldest = idle.flatMap { name, list in list.filter { !isProvisioned($0.instance) }.map { (name, $0) } }
                .min { $0.1.since < $1.1.since }
            guard let (name, victim) = oldest else { return false }
            var list = idle[name]!
            list.removeAll { $0.instance === victim.instance }
            idle[name] = list.isEmpty ? nil : list
            retire(victim.instance, because: .evicted)
            metrics.evicted(name)
            logger.debug("evicted an idle instance", metadata: ["function.name": "\(name)", "instance.id": "\(victim.instance.id)"])
        }
        return true
    }

    private func noteRevision(_ f: FunctionRecord) {
        if revisions[f.key] != f.revisionId {
            let known = revisions[f.key] != nil
            revisions[f.key] = f.revisionId
            // Only instances of another revision go (provisioned ones may be current already).
            let list = idle[f.key] ?? []
            let (stale, current) = (list.filter { $0.instance.function.revisionId != f.revisionId },
                                    list.filter { $0.instance.function.revisionId == f.revisionId })
            idle[f.key] = current.isEmpty ? nil : current
            for i in stale { retire(i.instance, because: .afterUpdate) }
            if known { nextColdReason[f.key] = .afterUpdate }
        }
    }

    private func takeIdle(_ f: FunctionRecord) -> Instance? {
        // Among the most recently used few, one on this thread's event loop saves the
        // invocation two thread hand-offs (see LoopAffineExecutor).
        if let here = MultiThreadedEventLoopGroup.currentEventLoop, var list = idle[f.key], list.count > 1,
           let i = list.indices.reversed().prefix(8).first(where: { list[$0].instance.loop === here }),
           list[i].instance.function.revisionId == f.revisionId, list[i].instance.isUsable {
            let hit = list.remove(at: i)
            idle[f.key] = list
            return hit.instance
        }
        while var list = idle[f.key], let last = list.popLast() {
            idle[f.key] = list.isEmpty ? nil : list
            if last.instance.function.revisionId == f.revisionId, last.instance.isUsable { return last.instance }
            retire(last.instance, because: .afterCrash)
        }
        return nil
    }

    private func start(_ function: FunctionRecord, charge: Int) async throws(RuntimeError) -> Instance {
        // The instance serves its Runtime API on the loop of the request that started it,
        // which is where the same caller's next requests will most likely arrive.
        let loop = MultiThreadedEventLoopGroup.currentEventLoop ?? group.next()
        let launcher = self.launcher
        let code = self.code
        let result: Result<Instance, RuntimeError> = await withCheckedContinuation { cont in
            DispatchQueue.global().async {
                do {
                    let dir = try code.unpacked(hex: function.codeDigestHex)
                    cont.resume(returning: .success(try launcher.launch(function, codeDirectory: dir, on: loop)))
                } catch let e as RuntimeError {
                    cont.resume(returning: .failure(e))
                } catch let e as StoreError {
                    // The code's own sentence (missing, altered, not unpacked) is what the caller needs.
                    cont.resume(returning: .failure(RuntimeError(.startFailed, e.message, cause: e)))
                } catch {
                    cont.resume(returning: .failure(RuntimeError(.startFailed, "Petrel could not start an instance: \(error)", cause: error)))
                }
            }
        }
        let instance = try result.get()
        live[ObjectIdentifier(instance)] = instance
        charged[ObjectIdentifier(instance)] = charge
        launchesContinuation.yield(instance)
        instance.log.beginTail(wanted: true, keep: false) // init output joins the first invocation's tail
        instance.log.platform("INIT_START Runtime Version: \(function.runtime.rawValue)\tRuntime Version ARN: petrel:\(function.runtime.rawValue)")
        if stopping { instance.stop() }
        return instance
    }

    private func finish(_ instance: Instance, _ request: InvocationRequest, _ outcome: InvocationOutcome,
                        cold: Bool, startedNanos: UInt64) -> InvocationResult {
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
        instance.log.platform("END RequestId: \(request.requestID)")
        var report = "REPORT RequestId: \(request.requestID)\tDuration: \(FastIDs.twoDecimals(durationMs)) ms\tBilled Duration: \(Int(durationMs.rounded(.up))) ms\tMemory Size: \(instance.function.memoryMB) MB\tMax Memory Used: \(peakMB) MB"
        if let initMs { report += "\tInit Duration: \(FastIDs.twoDecimals(initMs)) ms" }
        if let status { report += "\tStatus: \(status)" }
        instance.log.platform(report)
        let (tail, logSeq) = instance.log.endTail(build: request.wantsLogTail)
        return InvocationResult(payload: payload, functionError: functionError, errorType: errorType, logTail: tail, logSequence: logSeq,
                                executedVersion: "$LATEST", coldStart: cold, durationMs: durationMs, initDurationMs: initMs,
                                phases: cold ? instance.coldStartPhases : nil)
    }
}

/// Why an invocation started a new instance.
public enum ColdStartReason: String, Sendable {
    case noIdleInstance = "no_idle_instance"
    case evicted
    case afterUpdate = "after_update"
    case afterCrash = "after_crash"
    /// Made ahead for provisioned concurrency (no invocation waited for it).
    case provisioned
}
