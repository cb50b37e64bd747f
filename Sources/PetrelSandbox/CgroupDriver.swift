import Foundation
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
    /// Unused quota a cgroup may carry into the next period (the kernel allows up to the quota).
    public var cpuBurstMicros: Int { cpuQuotaMicros }
    /// cgroup v2 cpu.weight (1–10,000) and v1 cpu.shares, both proportional to memory.
    public var cpuWeight: Int
    public var cpuShares: Int
    public var pidsMax: Int

    public init(memoryMB: Int, policy: SandboxPolicy.Resources, hostCPUs: Int) {
        memoryBytes = memoryMB << 20
        let cpus = min(Double(memoryMB) / Double(policy.mbPerCPU), Double(max(hostCPUs, 1)))
        cpuQuotaMicros = max(1000, Int(cpus * Double(Self.cpuPeriodMicros)))
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

/// One sandbox's cgroup (one directory per hierarchy on v1, one on v2).
public protocol SandboxCgroup: Sendable {
    /// The file that holds peak memory (bytes), read often while an instance lives.
    var peakMemoryPath: String { get }
    /// Directories that make up this cgroup (for tests and leak checks).
    var paths: [String] { get }
    /// Sets the limits (again: a prepared sandbox gets its function's limits when it starts).
    func apply(_ limits: CgroupLimits) throws
    /// Opens the cgroup.procs files the child writes itself into.
    func openProcsFiles() throws -> [Int32]
    func stats() -> CgroupStats
    /// PIDs (host view) still in the cgroup.
    func processes() -> [Int32]
    /// Kills every process in the cgroup and waits until it is empty (bounded).
    func killAll()
    /// Removes the directories; the cgroup must be empty.
    func remove() throws
}

/// Creates sandbox cgroups inside the daemon's own subtree.
public protocol CgroupDriver: Sendable {
    var hostMode: CgroupHostMode { get }
    var name: String { get }
    /// The daemon's subtree roots (one per hierarchy).
    var bases: [String] { get }
    func create(name: String, limits: CgroupLimits) throws -> any SandboxCgroup
}

/// Reading /proc/self/mountinfo and /proc/self/cgroup.
enum CgroupHost {
    struct Mount { var root: String; var mountPoint: String; var fsType: String; var superOptions: [String] }

    static func mounts() -> [Mount] {
        guard let text = try? Sys.read("/proc/self/mountinfo") else { return [] }
        var out: [Mount] = []
        for line in text.split(separator: "\n") {
            let halves = line.components(separatedBy: " - ")
            guard halves.count == 2 else { continue }
            let left = halves[0].split(separator: " ")
            let right = halves[1].split(separator: " ")
            guard left.count >= 5, right.count >= 3 else { continue }
            out.append(Mount(root: unescape(String(left[3])), mountPoint: unescape(String(left[4])),
                             fsType: String(right[0]), superOptions: right[2].split(separator: ",").map(String.init)))
        }
        return out
    }

    static func unescape(_ s: String) -> String {
        s.replacingOccurrences(of: "\\040", with: " ")
    }

    static func detect() -> CgroupHostMode {
        let ms = mounts()
        if ms.contains(where: { $0.mountPoint == "/sys/fs/cgroup" && $0.fsType == "cgroup2" }) { return .unified }
        let hasV2 = ms.contains { $0.fsType == "cgroup2" }
        return hasV2 ? .hybrid : .legacy
    }

    /// hierarchy id → (controllers, path) from /proc/self/cgroup.
    static func ownCgroups() -> [(controllers: [String], path: String)] {
        guard let text = try? Sys.read("/proc/self/cgroup") else { return [] }
        return text.split(separator: "\n").compactMap { line in
            let parts = line.split(separator: ":", maxSplits: 2, omittingEmptySubsequences: false)
            guard parts.count == 3 else { return nil }
            return (parts[1].split(separator: ",").map(String.init), String(parts[2]))
        }
    }

    static func join(_ mountPoint: String, _ mountRoot: String, _ path: String) -> String {
        var rel = path
        if mountRoot != "/", rel.hasPrefix(mountRoot) { rel = String(rel.dropFirst(mountRoot.count)) }
        if rel == "/" { rel = "" }
        return mountPoint + rel
    }

    static func hostCPUs() -> Int { max(1, Int(sysconf(Int32(_SC_NPROCESSORS_ONLN)))) }

    static func pids(in procsFile: String) -> [Int32] {
        guard let text = try? Sys.read(procsFile) else { return [] }
        return text.split(separator: "\n").compactMap { Int32($0) }
    }

    /// Removes a cgroup directory, retrying while the last processes finish leaving.
    static func removeDirectory(_ path: String) throws {
        var lastError: SystemError?
        for attempt in 0..<200 {
            do {
                try Sys.rmdir(path)
                return
            } catch {
                if error.errno == ENOENT { return }
                guard error.errno == EBUSY else { throw error }
                lastError = error
                Sys.sleep(milliseconds: attempt < 20 ? 1 : 10)
            }
        }
        throw lastError ?? SystemError("rmdir", path, errno: EBUSY)
    }

    /// Cgroups named sb-<pid>-… whose daemon is gone: kill what is left and remove them.
    static func sweepStale(base: String, kill: (String) -> Void) {
        for name in Sys.listDirectory(base) where name.hasPrefix("sb-") {
            let parts = name.split(separator: "-")
            guard parts.count >= 3, let pid = Int32(parts[1]) else { continue }
            if pid == getpid() || Glibc.kill(pid, 0) == 0 { continue }
            kill(base + "/" + name)
            try? removeDirectory(base + "/" + name)
        }
    }
}

/// Picks the driver for this host: v2 on a unified host, v1 otherwise.
public enum CgroupDrivers {
    public static func detect() throws -> any CgroupDriver {
        switch CgroupHost.detect() {
        case .unified: return try CgroupV2Driver()
        case let mode: return try CgroupV1Driver(hostMode: mode)
        }
    }
}
