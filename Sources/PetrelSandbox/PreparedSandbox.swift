import CPetrelLinux
import Glibc

/// A sandbox whose init has built everything — namespaces, network, root,
/// /tmp, cgroup membership — and waits for its command. Preparing is the slow
/// part (a cgroup v1 migration alone waits for an RCU grace period), so the
/// engine keeps some ready; starting one only sends the command.
public final class PreparedSandbox: Sendable {
    public let id: String
    public let pid: Int32
    public let resources: SandboxResources
    public let key: Key
    let engine: SandboxEngine
    let pidfd: Int32
    let statusFD: Int32
    let controlFD: Int32
    let cgroup: any SandboxCgroup
    let network: SandboxNetwork
    let disk: ScratchDisk

    /// What makes two prepared sandboxes interchangeable.
    public struct Key: Hashable, Sendable {
        public var seccomp: SandboxPolicy.Seccomp
        public var rootfs: SandboxPolicy.Rootfs
        public var network: SandboxPolicy.Network
        public var mode: SandboxPolicy.NetworkMode
        public var processes: Int
        public var openFiles: Int
        public var ephemeralStorageMB: Int
        /// An operator's network (such sandboxes are prepared when they are started: no pool keeps them).
        public var attachment: NetworkAttachment?

        init(policy: SandboxPolicy, mode: SandboxPolicy.NetworkMode, ephemeralStorageMB: Int, attachment: NetworkAttachment? = nil) {
            self.attachment = attachment
            seccomp = policy.seccomp
            rootfs = policy.rootfs
            network = policy.network
            self.mode = mode
            processes = policy.resources.processes
            openFiles = policy.resources.openFiles
            self.ephemeralStorageMB = ephemeralStorageMB
        }
    }

    init(
        engine: SandboxEngine, id: String, key: Key, result: petrel_spawn_result,
        cgroup: any SandboxCgroup, network: SandboxNetwork, disk: ScratchDisk, resources: SandboxResources
    ) {
        self.engine = engine
        self.id = id
        self.key = key
        self.pid = result.pid
        self.pidfd = result.pidfd
        self.statusFD = result.status_fd
        self.controlFD = result.control_fd
        self.cgroup = cgroup
        self.network = network
        self.disk = disk
        self.resources = resources
    }

    /// Waits until init reports READY; on a setup error, tears down and throws.
    func awaitReady() throws {
        var rec = petrel_record()
        let r = petrel_wait_record(statusFD, 10_000, &rec)
        if r == 1, rec.kind == Int32(PETREL_RECORD_READY.rawValue) { return }
        let why: String
        if r == 1 {
            why = "\(rec.text): \(String(cString: strerror(rec.err)))"
        } else {
            why = r == 0 ? "no answer from the sandbox's init within 10 s" : "reading the status pipe: \(String(cString: strerror(errno)))"
        }
        _ = petrel_pidfd_kill(pidfd, SIGKILL)
        release()
        throw SandboxError(.setup, "sandbox setup failed: \(why)")
    }

    /// Ends a prepared sandbox that will not be used.
    func discard() {
        Sys.close(controlFD)
        _ = petrel_pidfd_kill(pidfd, SIGKILL)
        release()
    }

    /// Reaps init (blocking until it is gone) and gives everything back.
    @discardableResult
    func release() -> (initStatus: Int32, stats: CgroupStats) {
        var status: Int32 = 0
        for attempt in 0..<2000 {
            let r = petrel_pidfd_reap(pidfd, &status)
            if r != 0 { break }
            Sys.sleep(milliseconds: attempt < 100 ? 1 : 5)
        }
        let stats = cgroup.stats()
        cgroup.killAll()
        do { try cgroup.remove() } catch {
            engine.logger.error("cannot remove a sandbox cgroup", metadata: ["sandbox.id": "\(id)", "error": "\(error)"])
        }
        engine.disks.release(disk)
        engine.networks.release(network)
        engine.freeUID(resources.uid)
        Sys.close(controlFD)
        Sys.close(pidfd)
        Sys.close(statusFD)
        return (status, stats)
    }
}

extension petrel_record {
    var text: String {
        withUnsafeBytes(of: message) { String(decoding: $0.prefix { $0 != 0 }, as: UTF8.self) }
    }
}
