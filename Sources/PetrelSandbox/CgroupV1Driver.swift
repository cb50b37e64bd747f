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
                throw SandboxError(
                    .unsupportedHost, "the cgroup v1 \(c) controller is not mounted; Petrel needs memory, cpu, cpuacct, pids and freezer")
            }
            guard let mine = own.first(where: { $0.controllers.contains(c) }) else {
                throw SandboxError(.unsupportedHost, "/proc/self/cgroup has no \(c) hierarchy")
            }
            base[c] = CgroupHost.join(m.mountPoint, m.root, mine.path) + "/petrel"
        }
        self.base = base
        for dir in Set(base.values) {
            do { try Sys.mkdir(dir) } catch {
                throw SandboxError(
                    .unsupportedHost,
                    "cannot create the daemon's cgroup \(dir); petreld must run as root with the cgroup it started in writable",
                    cause: error)
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
            let cgroup = try CgroupV1Cgroup(dirs: dirs, unique: made)
            try cgroup.apply(limits)
            return cgroup
        } catch {
            for d in made.reversed() { try? CgroupHost.removeDirectory(d) }
            throw error
        }
    }
}
