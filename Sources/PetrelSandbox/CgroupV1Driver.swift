import Glibc

/// cgroup v1 (hybrid and legacy hosts, like the machines this is built on):
/// memory, cpu, cpuacct, pids and freezer, each in its own hierarchy. The
/// daemon's subtree is `<the cgroup it started in>/petrel` in every one of them.
public final class CgroupV1Driver: CgroupDriver {
    public let hostMode: CgroupHostMode
    public var name: String { "cgroup v1 (\(hostMode.rawValue) host)" }
    /// controller → the daemon's base directory in its hierarchy.
    let base: [String: String]
    public var bases: [String] { Array(Set(base.values)).sorted() }

    static let controllers = ["memory", "cpu", "cpuacct", "pids", "freezer"]

    public init(hostMode: CgroupHostMode) throws {
        self.hostMode = hostMode
        let mounts = CgroupHost.mounts().filter { $0.fsType == "cgroup" }
        let own = CgroupHost.ownCgroups()
        var base: [String: String] = [:]
        for c in Self.controllers {
            guard let m = mounts.first(where: { $0.superOptions.contains(c) }) else {
                throw SandboxError(.unsupportedHost, "the cgroup v1 \(c) controller is not mounted; Petrel needs memory, cpu, cpuacct, pids and freezer")
            }
            guard let mine = own.first(where: { $0.controllers.contains(c) }) else {
                throw SandboxError(.unsupportedHost, "/proc/self/cgroup has no \(c) hierarchy")
            }
            base[c] = CgroupHost.join(m.mountPoint, m.root, mine.path) + "/petrel"
        }
        self.base = base
        for dir in Set(base.values) {
            do { try Sys.mkdir(dir) } catch {
                throw SandboxError(.unsupportedHost, "cannot create the daemon's cgroup \(dir); petreld must run as root with the cgroup it started in writable", cause: error)
            }
        }
        if let mem = base["memory"], let h = try? Sys.read(mem + "/memory.use_hierarchy"), h.hasPrefix("0") {
            try? Sys.write(mem + "/memory.use_hierarchy", "1")
        }
        for dir in Set(base.values) {
            CgroupHost.sweepStale(base: dir) { path in CgroupV1Cgroup.kill(processesIn: [path]) }
        }
    }

    public func create(name: String, limits: CgroupLimits) throws -> any SandboxCgroup {
        var dirs: [String: String] = [:]
        var made: [String] = []
        do {
            for c in Self.controllers {
                let dir = base[c]! + "/" + name
                if !made.contains(dir) {
                    try Sys.mkdirNew(dir)
                    made.append(dir)
                }
                dirs[c] = dir
            }
            try CgroupV1Cgroup(dirs: dirs, unique: made).apply(limits)
        } catch {
            for d in made.reversed() { try? CgroupHost.removeDirectory(d) }
            throw error
        }
        return CgroupV1Cgroup(dirs: dirs, unique: made)
    }
}

final class CgroupV1Cgroup: SandboxCgroup {
    let dirs: [String: String]
    let unique: [String]
    var paths: [String] { unique }
    var peakMemoryPath: String { dirs["memory"]! + "/memory.max_usage_in_bytes" }

    init(dirs: [String: String], unique: [String]) {
        self.dirs = dirs
        self.unique = unique
    }

    func apply(_ limits: CgroupLimits) throws {
        let mem = dirs["memory"]!
        // memory+swap may never be below memory: raise memsw first, lower it last.
        let memsw = mem + "/memory.memsw.limit_in_bytes"
        if Sys.exists(memsw) {
            let current = Int((try? Sys.read(mem + "/memory.limit_in_bytes"))?.trimmed ?? "") ?? 0
            if limits.memoryBytes > current {
                try Sys.write(memsw, "\(limits.memoryBytes)")
                try Sys.write(mem + "/memory.limit_in_bytes", "\(limits.memoryBytes)")
            } else {
                try Sys.write(mem + "/memory.limit_in_bytes", "\(limits.memoryBytes)")
                try Sys.write(memsw, "\(limits.memoryBytes)")
            }
        } else {
            try Sys.write(mem + "/memory.limit_in_bytes", "\(limits.memoryBytes)")
        }
        try? Sys.write(mem + "/memory.swappiness", "0")
        let cpu = dirs["cpu"]!
        try Sys.write(cpu + "/cpu.cfs_period_us", "\(CgroupLimits.cpuPeriodMicros)")
        // Lower the burst first: the kernel refuses a burst above the quota.
        if Sys.exists(cpu + "/cpu.cfs_burst_us") { try Sys.write(cpu + "/cpu.cfs_burst_us", "0") }
        try Sys.write(cpu + "/cpu.cfs_quota_us", "\(limits.cpuQuotaMicros)")
        if Sys.exists(cpu + "/cpu.cfs_burst_us") { try Sys.write(cpu + "/cpu.cfs_burst_us", "\(limits.cpuBurstMicros)") }
        try Sys.write(cpu + "/cpu.shares", "\(limits.cpuShares)")
        try Sys.write(dirs["pids"]! + "/pids.max", "\(limits.pidsMax)")
    }

    func openProcsFiles() throws -> [Int32] {
        var fds: [Int32] = []
        do {
            for d in unique { fds.append(try Sys.open(d + "/cgroup.procs", O_WRONLY)) }
        } catch {
            fds.forEach(Sys.close)
            throw error
        }
        return fds
    }

    func stats() -> CgroupStats {
        let mem = dirs["memory"]!
        let peak = Int((try? Sys.read(mem + "/memory.max_usage_in_bytes"))?.trimmed ?? "") ?? 0
        let cpu = Int((try? Sys.read(dirs["cpuacct"]! + "/cpuacct.usage"))?.trimmed ?? "") ?? 0
        var ooms = 0
        if let oc = try? Sys.read(mem + "/memory.oom_control") {
            for line in oc.split(separator: "\n") where line.hasPrefix("oom_kill ") {
                ooms = Int(line.dropFirst("oom_kill ".count)) ?? 0
            }
        }
        return CgroupStats(peakMemoryBytes: peak, cpuNanoseconds: cpu, oomKills: ooms)
    }

    /// A sandbox's processes join every hierarchy together, so one hierarchy's list is all of them.
    func processes() -> [Int32] { CgroupHost.pids(in: dirs["pids"]! + "/cgroup.procs") }

    func killAll() { Self.kill(processesIn: unique, freezer: dirs["freezer"]) }

    /// Freezes the group (so nothing forks while we kill), kills every member, thaws.
    static func kill(processesIn dirs: [String], freezer: String? = nil) {
        let fz = freezer ?? dirs.first { Sys.exists($0 + "/freezer.state") }
        for _ in 0..<100 {
            let pids = Set(dirs.flatMap { CgroupHost.pids(in: $0 + "/cgroup.procs") })
            if pids.isEmpty { return }
            if let fz { try? Sys.write(fz + "/freezer.state", "FROZEN") }
            for p in pids { Glibc.kill(p, SIGKILL) }
            if let fz { try? Sys.write(fz + "/freezer.state", "THAWED") }
            Sys.sleep(milliseconds: 2)
        }
    }

    func remove() throws {
        var firstError: (any Error)?
        for d in unique.reversed() {
            do { try CgroupHost.removeDirectory(d) } catch { firstError = firstError ?? error }
        }
        if let firstError { throw firstError }
    }
}

extension String {
    var trimmed: String {
        var s = Substring(self)
        while let l = s.last, l == "\n" || l == " " { s.removeLast() }
        return String(s)
    }
}
