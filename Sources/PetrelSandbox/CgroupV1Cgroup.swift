import Glibc

/// One sandbox's cgroup on the v1 hierarchies: a directory per hierarchy (memory,
/// cpu, cpuacct, pids, freezer; some hosts mount several together), each held
/// open so that its files are written relative to it.
final class CgroupV1Cgroup: SandboxCgroup {
    /// controller → its directory.
    let dirs: [String: String]
    /// The distinct directories.
    let unique: [String]
    /// directory → its descriptor.
    private let fds: [String: Int32]
    let hasMemsw: Bool
    let hasBurst: Bool
    var paths: [String] { unique }
    var peakMemoryPath: String { dirs["memory"]! + "/memory.max_usage_in_bytes" }

    init(dirs: [String: String], unique: [String]) throws {
        self.dirs = dirs
        self.unique = unique
        var fds: [String: Int32] = [:]
        do {
            for d in unique { fds[d] = try Sys.open(d, O_RDONLY | O_DIRECTORY) }
        } catch {
            fds.values.forEach(Sys.close)
            throw error
        }
        self.fds = fds
        hasMemsw = Sys.exists(at: fds[dirs["memory"]!]!, "memory.memsw.limit_in_bytes")
        hasBurst = Sys.exists(at: fds[dirs["cpu"]!]!, "cpu.cfs_burst_us")
    }

    deinit { fds.values.forEach(Sys.close) }

    private func write(_ controller: String, _ name: String, _ value: String) throws {
        let dir = dirs[controller]!
        try Sys.write(at: fds[dir]!, name, value, describedAs: dir + "/" + name)
    }

    private func read(_ controller: String, _ name: String) -> String {
        let dir = dirs[controller]!
        return (try? Sys.read(at: fds[dir]!, name, describedAs: dir + "/" + name)) ?? ""
    }

    func apply(_ limits: CgroupLimits) throws {
        // memory+swap may never be below memory: raise memsw first, lower it last.
        if hasMemsw {
            let current = Int(read("memory", "memory.limit_in_bytes").trimmed) ?? 0
            if limits.memoryBytes > current {
                try write("memory", "memory.memsw.limit_in_bytes", "\(limits.memoryBytes)")
                try write("memory", "memory.limit_in_bytes", "\(limits.memoryBytes)")
            } else {
                try write("memory", "memory.limit_in_bytes", "\(limits.memoryBytes)")
                try write("memory", "memory.memsw.limit_in_bytes", "\(limits.memoryBytes)")
            }
        } else {
            try write("memory", "memory.limit_in_bytes", "\(limits.memoryBytes)")
        }
        try? write("memory", "memory.swappiness", "0")
        try write("cpu", "cpu.cfs_period_us", "\(CgroupLimits.cpuPeriodMicros)")
        // Lower the burst first: the kernel refuses a burst above the quota.
        if hasBurst { try write("cpu", "cpu.cfs_burst_us", "0") }
        try applyCPUQuota(limits)
        if hasBurst { try write("cpu", "cpu.cfs_burst_us", "\(limits.cpuBurstMicros)") }
        try write("cpu", "cpu.shares", "\(limits.cpuShares)")
        try write("pids", "pids.max", "\(limits.pidsMax)")
    }

    func applyCPUQuota(_ limits: CgroupLimits) throws {
        try write("cpu", "cpu.cfs_quota_us", "\(limits.cpuQuotaMicros)")
    }

    func openProcsFiles() throws -> [Int32] {
        var out: [Int32] = []
        do {
            for d in unique { out.append(try Sys.openAt(fds[d]!, "cgroup.procs", O_WRONLY, describedAs: d + "/cgroup.procs")) }
        } catch {
            out.forEach(Sys.close)
            throw error
        }
        return out
    }

    func stats() -> CgroupStats {
        let peak = Int(read("memory", "memory.max_usage_in_bytes").trimmed) ?? 0
        let cpu = Int(read("cpuacct", "cpuacct.usage").trimmed) ?? 0
        var ooms = 0
        for line in read("memory", "memory.oom_control").split(separator: "\n") where line.hasPrefix("oom_kill ") {
            ooms = Int(line.dropFirst("oom_kill ".count)) ?? 0
        }
        return CgroupStats(peakMemoryBytes: peak, cpuNanoseconds: cpu, oomKills: ooms)
    }

    func currentMemoryBytes() -> Int { Int(read("memory", "memory.usage_in_bytes").trimmed) ?? 0 }

    /// A sandbox's processes join every hierarchy together, so one hierarchy's list is all of them.
    func processes() -> [Int32] { read("pids", "cgroup.procs").split(separator: "\n").compactMap { Int32($0) } }

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
