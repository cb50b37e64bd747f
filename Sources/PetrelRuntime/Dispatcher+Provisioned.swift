import Foundation
import PetrelCore

/// Provisioned concurrency: instances initialized ahead for a function and kept
/// (never evicted nor reaped), per function, for its current record. The
/// maintenance loop (`maintainProvisioned`) makes what is missing.
extension Dispatcher {
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
        let mine = live.values.filter {
            $0.function.key == name && provisionedReady.contains(ObjectIdentifier($0))
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
        for (name, p) in provisioned where p.failure == nil && !stopping {
            let have = live.values.filter {
                $0.function.key == name && isProvisioned($0) && $0.function.revisionId == p.function.revisionId
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
        defer { provisioned[function.key]?.starting -= 1 }
        let instance: Instance
        do {
            instance = try await start(function)
        } catch {
            provisioned[function.key]?.failure =
                error.code == .throttled
                ? "The host's memory budget for instances cannot hold the provisioned instances."
                : "An instance could not start: \(error)"
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
        idle.add(instance, function: function.key)
        provisionedReady.insert(ObjectIdentifier(instance))
        trimProvisioned(function.key)
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
