import Glibc

/// One sandbox's cgroup v2 directory, held open: its files are written relative to
/// that descriptor (no path walk through the cgroup filesystem per write).
final class CgroupV2Cgroup: SandboxCgroup {
    let dir: String
    let fd: Int32
    /// Whether the kernel has cpu.max.burst (5.14 and later).
    let hasBurst: Bool
    var paths: [String] { [dir] }
    var peakMemoryPath: String { dir + "/memory.peak" }

    init(dir: String) throws {
        self.dir = dir
        fd = try Sys.open(dir, O_RDONLY | O_DIRECTORY)
        hasBurst = Sys.exists(at: fd, "cpu.max.burst")
    }

    deinit { Sys.close(fd) }

    private func write(_ name: String, _ value: String) throws {
        try Sys.write(at: fd, name, value, describedAs: dir + "/" + name)
    }

    private func read(_ name: String) -> String {
        (try? Sys.read(at: fd, name, describedAs: dir + "/" + name)) ?? ""
    }

    func apply(_ limits: CgroupLimits) throws {
        try write("memory.max", "\(limits.memoryBytes)")
        try write("memory.swap.max", "0")
        try write("memory.oom.group", "1")
        // The kernel refuses a burst above the quota: lower it first, set it last.
        if hasBurst { try write("cpu.max.burst", "0") }
        try applyCPUQuota(limits)
        if hasBurst { try write("cpu.max.burst", "\(limits.cpuBurstMicros)") }
        try write("cpu.weight", "\(limits.cpuWeight)")
        try write("pids.max", "\(limits.pidsMax)")
    }

    func applyCPUQuota(_ limits: CgroupLimits) throws {
        try write("cpu.max", "\(limits.cpuQuotaMicros) \(CgroupLimits.cpuPeriodMicros)")
    }

    func openProcsFiles() throws -> [Int32] { [try Sys.openAt(fd, "cgroup.procs", O_WRONLY, describedAs: dir + "/cgroup.procs")] }

    func stats() -> CgroupStats {
        let peak = Int(read("memory.peak").trimmed) ?? 0
        var cpu = 0
        for line in read("cpu.stat").split(separator: "\n") where line.hasPrefix("usage_usec ") {
            cpu = (Int(line.dropFirst("usage_usec ".count)) ?? 0) * 1000
        }
        var ooms = 0
        for line in read("memory.events").split(separator: "\n") where line.hasPrefix("oom_kill ") {
            ooms = Int(line.dropFirst("oom_kill ".count)) ?? 0
        }
        return CgroupStats(peakMemoryBytes: peak, cpuNanoseconds: cpu, oomKills: ooms)
    }

    func currentMemoryBytes() -> Int { Int(read("memory.current").trimmed) ?? 0 }

    func processes() -> [Int32] { read("cgroup.procs").split(separator: "\n").compactMap { Int32($0) } }

    func killAll() {
        for _ in 0..<100 {
            if processes().isEmpty { return }
            try? write("cgroup.kill", "1")
            Sys.sleep(milliseconds: 2)
        }
    }

    func remove() throws { try CgroupHost.removeDirectory(dir) }
}
