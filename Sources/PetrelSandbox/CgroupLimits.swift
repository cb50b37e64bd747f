import Glibc

/// How the host mounts cgroups.
public enum CgroupHostMode: String, Sendable {
    /// Only cgroup2 at /sys/fs/cgroup.
    case unified
    /// v1 controllers plus an (often empty) cgroup2 hierarchy.
    case hybrid
    /// v1 controllers only.
    case legacy
}

/// The limits of one sandbox's cgroup, derived from its memory size.
public struct CgroupLimits: Sendable, Equatable {
    public var memoryBytes: Int
    /// CPU time per period, in microseconds. The period is 20 ms, not the usual 100:
    /// a small function (7% of a CPU at 128 MB) that uses up its quota then waits at
    /// most ~19 ms instead of ~93, which is what an invocation's p99 feels.
    public var cpuQuotaMicros: Int
    public static let cpuPeriodMicros = 20_000
    /// Unused quota a cgroup may carry into the next period (the kernel allows up to the
    /// quota): one quota of the memory-proportional share. A boosted start keeps it, so that
    /// settling lowers the quota alone (the kernel refuses a quota below the burst).
    public var cpuBurstMicros: Int
    /// cgroup v2 cpu.weight (1–10,000) and v1 cpu.shares, both proportional to memory.
    public var cpuWeight: Int
    public var cpuShares: Int
    public var pidsMax: Int

    public init(memoryMB: Int, policy: SandboxPolicy.Resources, hostCPUs: Int) {
        memoryBytes = memoryMB << 20
        let cpus = min(Double(memoryMB) / Double(policy.mbPerCPU), Double(max(hostCPUs, 1)))
        cpuQuotaMicros = max(1000, Int(cpus * Double(Self.cpuPeriodMicros)))
        cpuBurstMicros = cpuQuotaMicros
        cpuWeight = min(10_000, max(1, memoryMB * 100 / policy.mbPerCPU))
        cpuShares = max(2, memoryMB * 1024 / policy.mbPerCPU)
        pidsMax = policy.pidsMax
    }
}

/// What a sandbox's cgroup measured.
public struct CgroupStats: Sendable, Equatable {
    public var peakMemoryBytes: Int
    public var cpuNanoseconds: Int
    public var oomKills: Int
}
