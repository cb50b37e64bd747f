import Glibc

/// One sandbox's cgroup (one directory per hierarchy on v1, one on v2).
public protocol SandboxCgroup: Sendable {
    /// The file that holds peak memory (bytes), read often while an instance lives.
    var peakMemoryPath: String { get }
    /// Directories that make up this cgroup (for tests and leak checks).
    var paths: [String] { get }
    /// Sets the limits (again: a prepared sandbox gets its function's limits when it starts).
    func apply(_ limits: CgroupLimits) throws
    /// Sets the CPU quota alone (the end of a boost: `Sandbox.settle`); the burst stays.
    func applyCPUQuota(_ limits: CgroupLimits) throws
    /// Opens the cgroup.procs files the child writes itself into.
    func openProcsFiles() throws -> [Int32]
    func stats() -> CgroupStats
    /// Memory charged to the cgroup now, in bytes (what a pre-started runtime costs while it waits).
    func currentMemoryBytes() -> Int
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

/// Picks the driver for this host: v2 on a unified host, v1 otherwise.
public enum CgroupDrivers {
    public static func detect() throws -> any CgroupDriver {
        switch CgroupHost.detect() {
        case .unified: return try CgroupV2Driver()
        case let mode: return try CgroupV1Driver(hostMode: mode)
        }
    }
}
