import Glibc

/// cgroup v2, the primary driver. The daemon's subtree is below the cgroup it
/// started in: when that cgroup cannot hand controllers down because it holds
/// processes (the no-internal-process rule), the daemon moves itself into a leaf
/// `…/petreld` first; sandboxes live in `…/petrel/sb-*`, a sibling of that leaf.
public final class CgroupV2Driver: CgroupDriver {
    public var hostMode: CgroupHostMode { .unified }
    public var name: String { "cgroup v2" }
    let base: String
    public var bases: [String] { [base] }

    static let controllers = ["memory", "cpu", "pids"]

    public init(mountPoint: String = "/sys/fs/cgroup") throws {
        guard let own = CgroupHost.ownCgroups().first(where: { $0.controllers == [""] || $0.controllers.isEmpty }) else {
            throw SandboxError(.unsupportedHost, "/proc/self/cgroup has no cgroup v2 entry")
        }
        let root = CgroupHost.mounts().first { $0.mountPoint == mountPoint && $0.fsType == "cgroup2" }?.root ?? "/"
        var start = CgroupHost.join(mountPoint, root, own.path)
        // A daemon restarted inside its own leaf: its subtree is beside it.
        if start.hasSuffix("/petreld") { start = String(start.dropLast("/petreld".count)) }
        let available = ((try? Sys.read(start + "/cgroup.controllers")) ?? "").split(whereSeparator: { $0 == " " || $0 == "\n" }).map(
            String.init)
        for c in Self.controllers where !available.contains(c) {
            throw SandboxError(
                .unsupportedHost, "the cgroup v2 \(c) controller is not available in \(start) (delegate memory, cpu and pids to petreld)")
        }
        let enable = Self.controllers.map { "+" + $0 }.joined(separator: " ")
        do {
            try Sys.write(start + "/cgroup.subtree_control", enable)
        } catch {
            guard error.errno == EBUSY else { throw error }
            // Processes in `start`: move ourselves into a leaf and try again.
            let leaf = start + "/petreld"
            try Sys.mkdir(leaf)
            try Sys.write(leaf + "/cgroup.procs", "\(getpid())")
            do {
                try Sys.write(start + "/cgroup.subtree_control", enable)
            } catch {
                throw SandboxError(
                    .unsupportedHost,
                    "cannot enable \(enable) in \(start): other processes live there; start petreld in a cgroup of its own", cause: error)
            }
        }
        base = start + "/petrel"
        try Sys.mkdir(base)
        try Sys.write(base + "/cgroup.subtree_control", enable)
        CgroupHost.sweepStale(base: base) { path in try? Sys.write(path + "/cgroup.kill", "1") }
    }

    public func create(name: String, limits: CgroupLimits) throws -> any SandboxCgroup {
        let dir = base + "/" + name
        try Sys.mkdirNew(dir)
        do {
            let cgroup = try CgroupV2Cgroup(dir: dir)
            try cgroup.apply(limits)
            return cgroup
        } catch {
            try? CgroupHost.removeDirectory(dir)
            throw error
        }
    }
}
