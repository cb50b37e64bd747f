import Foundation
import PetrelCore

/// Provisioned concurrency: instances initialized ahead for a published version
/// and kept (never evicted nor reaped), per version, for its record. The
/// maintenance loop (`maintainProvisioned`) makes what is missing.
extension Dispatcher {
    public struct ProvisionedStatus: Sendable {
        public var requested: Int
        public var allocated: Int
        public var available: Int
        public var status: String
        public var reason: String?
        public var lastModified: Date

        public init(requested: Int, allocated: Int, available: Int, status: String, reason: String?, lastModified: Date) {
            self.requested = requested
            self.allocated = allocated
            self.available = available
            self.status = status
            self.reason = reason
            self.lastModified = lastModified
        }
    }

    /// Sets the provisioned counts of one function's versions (`function`: its key) at once:
    /// the versions left out keep none.
    public func setProvisioned(function key: String, _ wanted: [(FunctionRecord, Int)]) {
        let keep = Set(wanted.map { $0.0.instanceKey })
        for k in provisioned.keys where k.hasPrefix(key + ":") && !keep.contains(k) {
            provisioned[k] = nil
            trimProvisioned(k)
        }
        for (f, n) in wanted { setProvisioned(f, n) }
    }

    /// Sets (nil: removes) a version's provisioned concurrency; instances are made by `maintainProvisioned()`.
    public func setProvisioned(_ function: FunctionRecord, _ count: Int?) {
        noteRevision(function)
        if let count, count > 0 {
            var p = provisioned[function.instanceKey] ?? Provisioned(function: function, requested: count)
            p.function = function
            p.requested = count
            p.lastModified = Date()
            p.failure = nil
            provisioned[function.instanceKey] = p
        } else {
            provisioned[function.instanceKey] = nil
        }
        trimProvisioned(function.instanceKey)
    }

    public func provisionedStatus(_ name: String) -> ProvisionedStatus? {
        guard let p = provisioned[name] else { return nil }
        // Allocated: initialized and in the pool (an instance still in its init does not count yet;
        // counting it as soon as its runtime is up would report READY before it is available).
        let mine = live.values.filter {
            $0.function.instanceKey == name && provisionedReady.contains(ObjectIdentifier($0))
                && $0.function.revisionId == p.function.revisionId && $0.isUsable
        }
        let allocated = mine.count
        let available = idle.members(of: name).filter { isProvisioned($0) }.count
        let status = p.failure != nil ? "FAILED" : (allocated >= p.requested ? "READY" : "IN_PROGRESS")
        return ProvisionedStatus(
            requested: p.requested, allocated: min(allocated, p.requested), available: min(available, p.requested),
            status: status, reason: p.failure, lastModified: p.lastModified)
    }

    /// Starts what is missing of every provisioned set (one round; the maintenance loop repeats it).
    public func maintainProvisioned() async {
        // Idle provisioned instances whose credentials are about to expire make way for new ones
        // here, off the request path (an invocation would otherwise find none ready).
        for name in provisioned.keys {
            for i in idle.removeAll(name, where: { isProvisioned($0) && $0.credentialsExpiring }) {
                provisionedIDs.remove(ObjectIdentifier(i))
                provisionedReady.remove(ObjectIdentifier(i))
                retire(i, because: .credentialsExpired)
            }
        }
        for (name, p) in provisioned where p.failure == nil && !stopping {
            let have = live.values.filter {
                $0.function.instanceKey == name && isProvisioned($0) && $0.function.revisionId == p.function.revisionId
            }.count
            let missing = p.requested - have - p.starting
            guard missing > 0 else { continue }
            provisioned[name]?.starting += missing
            await withTaskGroup(of: Void.self) { group in
                for _ in 0..<missing { group.addTask { await self.startProvisioned(p.function) } }
            }
        }
    }

    func startProvisioned(_ function: FunctionRecord) async {
        defer { provisioned[function.instanceKey]?.starting -= 1 }
        let instance: Instance
        do {
            instance = try await start(function)
        } catch {
            provisioned[function.instanceKey]?.failure =
                error.code == .throttled
                ? "The host's memory budget for instances cannot hold the provisioned instances."
                : "An instance could not start: \(error)"
            return
        }
        provisionedIDs.insert(ObjectIdentifier(instance))
        metrics.coldStart(function.instanceKey, reason: .provisioned, start: instance.start)
        do {
            try await instance.waitInitialized(timeout: configuration.initTimeout)
        } catch {
            retire(instance, because: nil)
            provisioned[function.instanceKey]?.failure = "The function's init failed: \(error)"
            return
        }
        _ = instance.log.endTail(build: false).tail
        // Still wanted (the same revision, the set not shrunk meanwhile)?
        guard let p = provisioned[function.instanceKey], p.function.revisionId == function.revisionId, !stopping else {
            retire(instance, because: nil)
            return
        }
        idle.add(instance, function: function.instanceKey)
        provisionedReady.insert(ObjectIdentifier(instance))
        trimProvisioned(function.instanceKey)
        metrics.instances(snapshot)
    }

    /// Retires provisioned idle instances beyond the requested count (or of an old revision).
    func trimProvisioned(_ name: String) {
        let want = provisioned[name]
        var kept = 0
        let surplus = idle.removeAll(name) { i in
            guard isProvisioned(i) else { return false }
            if let want, i.function.revisionId == want.function.revisionId, kept < want.requested {
                kept += 1
                return false
            }
            return true
        }
        for i in surplus {
            provisionedIDs.remove(ObjectIdentifier(i))
            provisionedReady.remove(ObjectIdentifier(i))
            retire(i, because: nil)
        }
    }
}
