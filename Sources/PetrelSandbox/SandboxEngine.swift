import CPetrelLinux
import Glibc
import Logging
import Synchronization

/// Where the engine keeps its things and how big its pools are.
public struct SandboxEngineConfiguration: Sendable {
    /// Scratch-disk images are made (and at once unlinked) under `<stateDirectory>/scratch`.
    public var stateDirectory: String
    /// An empty directory every sandbox builds its root on, in its own mount namespace.
    public var runDirectory: String
    /// The project's `rootfs/` skeleton (its `etc/` files are bound into every sandbox).
    public var rootfsSkeleton: String
    /// Host directories bound read-only into every sandbox, by target (the Python runtime's SDK).
    public var readOnlyBinds: [String: String] = [:]
    /// Each sandbox runs as its own uid (and gid) from this range.
    public var uidRange: ClosedRange<UInt32>
    /// Addresses for host-mode networks: one /30 per sandbox.
    public var hostNetwork: IPv4CIDR
    /// Prepared sandboxes kept ready per policy, network mode and /tmp size.
    public var preparedPoolSize: Int
    /// Pre-started commands kept ready per sandbox key and `StemSpec` (0: none).
    public var stemsPerKey: Int = 2
    /// No stem is made while the ready ones' cgroups hold this much memory.
    public var stemMemoryMB: Int = 512
    /// The sandbox's PID 1 (the `petrel-init` product). nil: $PETREL_INIT, else
    /// `petrel-init` beside the running executable (where `swift build` puts it).
    public var initExecutable: String?

    public init(
        stateDirectory: String = "/var/lib/petrel", runDirectory: String = "/run/petrel",
        rootfsSkeleton: String, uidRange: ClosedRange<UInt32> = 200_000...1_199_999,
        hostNetwork: IPv4CIDR = IPv4CIDR("10.213.0.0/16")!, preparedPoolSize: Int = 2,
        initExecutable: String? = nil
    ) {
        self.initExecutable = initExecutable
        self.stateDirectory = stateDirectory
        self.runDirectory = runDirectory
        self.rootfsSkeleton = rootfsSkeleton
        self.uidRange = uidRange
        self.hostNetwork = hostNetwork
        self.preparedPoolSize = preparedPoolSize
    }
}

/// Runs isolated instances. One per daemon: it owns the cgroup subtree, the
/// pools of network namespaces and scratch disks, and the compiled policies.
public final class SandboxEngine: Sendable {
    public let configuration: SandboxEngineConfiguration
    public let cgroups: any CgroupDriver
    let logger: Logger
    let networks: SandboxNetworks
    let disks: ScratchDisks
    let prepared: SandboxPool
    let stems: StemPool
    let rootDirectory: String
    let hostCPUs = CgroupHost.hostCPUs()
    /// Write end of the lifeline: every sandbox's init dies when it closes (the daemon is gone).
    let lifeline: (read: Int32, write: Int32)
    /// petrel-init, held open (O_PATH) for execveat in every new sandbox.
    let initFD: Int32
    private let state = Mutex<State>(State())
    /// Names this engine's sandboxes: `sb-<pid>-<engine>` (the pid lets a later
    /// daemon sweep what a dead one left; the engine number keeps two engines
    /// of one process apart).
    public let instanceName: String
    private static let instances = Mutex<Int>(0)

    struct State {
        var counter = 0
        var uids = Set<UInt32>()
        var programs: [SandboxPolicy.Seccomp: SeccompProgram] = [:]
        var bases: [SandboxPolicy.Rootfs: [MountEntry]] = [:]
    }

    public init(
        configuration: SandboxEngineConfiguration, cgroups: (any CgroupDriver)? = nil, logger: Logger = Logger(label: "petrel.sandbox")
    ) throws {
        guard geteuid() == 0 else {
            throw SandboxError(.unsupportedHost, "the sandbox engine needs root (namespaces, cgroups, loop devices, nftables)")
        }
        self.configuration = configuration
        self.logger = logger
        let number = Self.instances.withLock { n -> Int in
            n += 1
            return n
        }
        instanceName = "sb-\(getpid())-\(number)"
        self.cgroups = try cgroups ?? CgroupDrivers.detect()
        networks = SandboxNetworks(subnet: configuration.hostNetwork)
        // Spare disks only where sandboxes are pooled: with no pool, every disk is detached at once.
        disks = try ScratchDisks(directory: configuration.stateDirectory + "/scratch", spareLimit: 2 * configuration.preparedPoolSize)
        prepared = SandboxPool(target: configuration.preparedPoolSize)
        stems = StemPool(target: configuration.stemsPerKey, budgetMB: configuration.stemMemoryMB)
        rootDirectory = configuration.runDirectory + "/root"
        try Sys.mkdirs(rootDirectory, 0o755)
        var fds: [Int32] = [-1, -1]
        try Sys.call("pipe2") { petrel_pipe_cloexec(&fds) }
        lifeline = (fds[0], fds[1])
        let initPath = configuration.initExecutable ?? Self.defaultInitExecutable()
        guard access(initPath, X_OK) == 0 else {
            throw SandboxError(
                .unsupportedHost,
                "the sandbox init \(initPath) is missing or not executable: build it with `swift build --product petrel-init`, or set PETREL_INIT"
            )
        }
        initFD = try Sys.open(initPath, O_RDONLY)
        guard Sys.exists(configuration.rootfsSkeleton + "/etc/passwd") else {
            throw SandboxError(.unsupportedHost, "the rootfs skeleton \(configuration.rootfsSkeleton) has no etc/passwd")
        }
        logger.debug("sandbox engine ready", metadata: ["cgroup.driver": "\(self.cgroups.name)"])
    }

    /// Starts `spec` in a sandbox under `policy`: a pre-started one when `spec.stem` asks
    /// for one and one is ready, else a prepared one when the pool has one for this policy,
    /// otherwise one prepared on the spot.
    public func spawn(_ spec: SandboxSpec, policy: SandboxPolicy = .default) throws -> Sandbox {
        try spec.validate()
        try policy.validate()
        let key = PreparedSandbox.Key(
            policy: policy, mode: spec.network ?? policy.network.mode,
            ephemeralStorageMB: spec.ephemeralStorageMB, attachment: spec.attachment)
        var cell: StemPool.Cell?
        if let stem = spec.stem, key.attachment == nil, Self.canPrestart(policy) {
            cell = stems.take(StemPool.Key(sandbox: key, stem: stem))
        }
        let box = try cell?.box ?? prepared.take(key) ?? prepare(key)
        let started = Sys.monotonicNanoseconds()
        var listeners: [ListenAddress: Int32] = [:]
        var settled: CgroupLimits?
        do {
            listeners = try Self.listen(in: box.network.fd, spec.listen)
            let limits = CgroupLimits(memoryMB: spec.memoryMB, policy: policy.resources, hostCPUs: hostCPUs)
            var initial = limits
            // A boost raises the quota alone; the burst is already the settled one (settle lowers the quota only).
            if spec.boostCPUUntilSettled { initial.cpuQuotaMicros = hostCPUs * CgroupLimits.cpuPeriodMicros }
            try box.cgroup.apply(initial)
            settled = spec.boostCPUUntilSettled ? limits : nil
            var trees: [Int32] = []
            defer { trees.forEach(Sys.close) }
            var err = [CChar](repeating: 0, count: 512)
            var code: Int32 = -1
            var opt: Int32 = -1
            if let dir = spec.codeDirectory {
                code = petrel_tree_open(dir, &err, 512)
                guard code >= 0 else { throw SandboxError(.system, "code directory: \(String(cBuffer: err))", errno: errno) }
                trees.append(code)
            }
            if spec.layers.count == 1 {
                opt = petrel_tree_open(spec.layers[0], &err, 512)
            } else if spec.layers.count > 1 {
                // overlayfs puts its first lower directory on top: later layers first.
                let lower = CStringArray(spec.layers.reversed())
                opt = lower.withPointers { petrel_overlay_open($0, spec.layers.count, &err, 512) }
            }
            if !spec.layers.isEmpty {
                guard opt >= 0 else { throw SandboxError(.system, "layers: \(String(cBuffer: err))", errno: errno) }
                trees.append(opt)
            }
            let envp = CStringArray(Self.environment(spec.environment))
            let rc: Int32
            if cell != nil {
                rc = envp.withPointers { petrel_go(box.controlFD, $0, spec.workingDirectory, code, opt, &err, 512) }
            } else {
                let argv = CStringArray(spec.command)
                rc = argv.withPointers { a in
                    envp.withPointers { e in
                        petrel_start(
                            box.controlFD, a, e, spec.workingDirectory, spec.stdin, spec.stdout, spec.stderr,
                            code, opt, 0, &err, 512)
                    }
                }
            }
            guard rc == 0 else { throw SandboxError(.system, String(cBuffer: err), errno: errno) }
        } catch {
            listeners.values.forEach(Sys.close)
            if let cell { Sys.close(cell.output) }
            box.discard()
            throw error
        }
        return Sandbox(
            prepared: box, timeout: spec.timeout, started: started, listeners: listeners, settled: settled, output: cell?.output)
    }

    /// `KEY=VALUE` strings in name order, with a PATH when there is none.
    static func environment(_ environment: [String: String]) -> [String] {
        var env = environment
        if env["PATH"] == nil { env["PATH"] = "/usr/local/bin:/usr/bin:/bin" }
        return env.keys.sorted().map { "\($0)=\(env[$0]!)" }
    }

    /// Whether commands can be pre-started under `policy`: the stem socket's descriptor
    /// must be below its open-files limit.
    public static func canPrestart(_ policy: SandboxPolicy) -> Bool { policy.resources.openFiles > Int(PETREL_STEM_FD) }

    /// Makes a pre-started command for `key`: a sandbox prepared for it, the command
    /// started with the stem's environment under the stem's memory limit (and one CPU,
    /// off the request path), ready once the command says it has loaded.
    func makeStem(_ key: StemPool.Key) throws -> StemPool.Cell {
        let box = try prepare(key.sandbox)
        var output: Int32 = -1
        do {
            var limits = CgroupLimits(
                memoryMB: key.stem.memoryMB ?? SandboxSpec.memoryRange.lowerBound, policy: SandboxPolicy.default.resources,
                hostCPUs: hostCPUs)
            limits.cpuQuotaMicros = CgroupLimits.cpuPeriodMicros
            try box.cgroup.apply(limits)
            let (outRead, outWrite) = try Sys.pipe(nonBlockingRead: true)
            output = outRead
            defer { Sys.close(outWrite) }
            let devnull = try Sys.open("/dev/null", O_RDONLY)
            defer { Sys.close(devnull) }
            var env = key.stem.environment
            env["PETREL_STEM_FD"] = "\(PETREL_STEM_FD)"
            let argv = CStringArray(key.stem.command)
            let envp = CStringArray(Self.environment(env))
            var err = [CChar](repeating: 0, count: 512)
            let rc = argv.withPointers { a in
                envp.withPointers { e in
                    petrel_start(box.controlFD, a, e, "/", devnull, outWrite, outWrite, -1, -1, Int32(PETREL_START_STEM), &err, 512)
                }
            }
            guard rc == 0 else { throw SandboxError(.system, String(cBuffer: err), errno: errno) }
            try awaitStem(box, output: outRead)
            return StemPool.Cell(box: box, output: outRead)
        } catch {
            if output >= 0 { Sys.close(output) }
            box.discard()
            throw error
        }
    }

    /// Waits for the pre-started command's STEM_READY (STARTED comes first); throws with
    /// what it printed when it ends or fails instead.
    private func awaitStem(_ box: PreparedSandbox, output: Int32) throws {
        let deadline = Sys.monotonicNanoseconds() + 10_000_000_000
        var rec = petrel_record()
        while true {
            let left = Int64(deadline) - Int64(Sys.monotonicNanoseconds())
            guard left > 0 else { throw SandboxError(.setup, "the pre-started command did not say it was ready within 10 s") }
            let r = petrel_wait_record(box.statusFD, Int32(left / 1_000_000) + 1, &rec)
            if r == 1 {
                switch Int(rec.kind) {
                case Int(PETREL_RECORD_STEM_READY.rawValue): return
                case Int(PETREL_RECORD_STARTED.rawValue): continue
                case Int(PETREL_RECORD_EXITED.rawValue):
                    let printed = (try? Sys.readAll(output, path: "a pre-started command's output")) ?? ""
                    throw SandboxError(.setup, "the pre-started command ended (status \(rec.value)): \(printed.suffix(300))")
                default: throw SandboxError(.setup, "the pre-started command failed: \(rec.text): \(String(cString: strerror(rec.err)))")
                }
            }
            if r < 0 { throw SandboxError(.system, "reading a pre-started sandbox's status", errno: errno) }
        }
    }

    /// Opens `addresses` (duplicates once) inside the network namespace `netns`, in one trip there.
    static func listen(in netns: Int32, _ addresses: [ListenAddress]) throws -> [ListenAddress: Int32] {
        var seen = Set<ListenAddress>()
        var ports: [Int32] = []
        var names: [String] = []
        for a in addresses where seen.insert(a).inserted {
            switch a {
            case .tcp(let port): ports.append(Int32(port))
            case .abstract(let name): names.append(name)
            }
        }
        guard !seen.isEmpty else { return [:] }
        var fds = [Int32](repeating: -1, count: ports.count + names.count)
        var err = [CChar](repeating: 0, count: 512)
        let rc = CStringArray(names).withPointers { petrel_netns_listen(netns, ports, ports.count, $0, names.count, &fds, &err, 512) }
        guard rc == 0 else { throw SandboxError(.system, String(cBuffer: err), errno: errno) }
        var out: [ListenAddress: Int32] = [:]
        for (i, port) in ports.enumerated() { out[.tcp(UInt16(port))] = fds[i] }
        for (i, name) in names.enumerated() { out[.abstract(name)] = fds[ports.count + i] }
        return out
    }

    /// Builds a sandbox up to the point where it waits for its command.
    func prepare(_ key: PreparedSandbox.Key) throws -> PreparedSandbox {
        let program = try seccomp(key.seccomp)
        let base = rootfsBase(key.rootfs)
        let (uid, number) = try allocateUID()
        var cleanup: [() -> Void] = [{ self.freeUID(uid) }]
        func unwind() { cleanup.reversed().forEach { $0() } }
        do {
            let network = try networks.make(key.network, mode: key.mode, attachment: key.attachment)
            cleanup.append { self.networks.release(network) }
            let disk = try disks.make(sizeMB: key.ephemeralStorageMB)
            cleanup.append { self.disks.release(disk) }
            let id = "\(instanceName)-\(number)"
            // Until its command starts, a prepared sandbox holds only its init: the smallest limits.
            let cgroup = try cgroups.create(
                name: id,
                limits: CgroupLimits(
                    memoryMB: SandboxSpec.memoryRange.lowerBound, policy: SandboxPolicy.default.resources, hostCPUs: hostCPUs))
            cleanup.append {
                cgroup.killAll()
                try? cgroup.remove()
            }
            let procs = try cgroup.openProcsFiles()
            defer { procs.forEach(Sys.close) }

            let mounts = CMountList(base + RootfsPlan.sandbox(scratchDevice: disk.device))
            let strings = CStringArray([rootDirectory, key.rootfs.hostname])
            var result = petrel_spawn_result()
            var err = [CChar](repeating: 0, count: 512)
            let rc: Int32 = mounts.mounts.withUnsafeBufferPointer { m in
                procs.withUnsafeBufferPointer { p in
                    var cfg = petrel_spawn_config()
                    cfg.root_dir = strings.pointer(0)
                    cfg.mounts = m.baseAddress
                    cfg.n_mounts = m.count
                    cfg.hostname = strings.pointer(1)
                    cfg.netns_fd = network.fd
                    cfg.cgroup_procs_fds = p.baseAddress
                    cfg.n_cgroup_fds = p.count
                    cfg.uid = uid
                    cfg.gid = uid
                    cfg.seccomp_fd = program.fd
                    cfg.seccomp_len = program.count
                    cfg.rlimit_nofile = UInt64(key.openFiles)
                    cfg.rlimit_nproc = UInt64(key.processes)
                    cfg.lifeline_fd = lifeline.read
                    cfg.init_fd = initFD
                    return petrel_spawn(&cfg, &result, &err, 512)
                }
            }
            guard rc == 0 else { throw SandboxError(.system, String(cBuffer: err), errno: errno) }
            let resources = SandboxResources(
                uid: uid, cgroupPaths: cgroup.paths, loopDevice: disk.device, scratchImage: disk.image,
                netnsInode: network.inode, hostInterface: network.hostInterface, gateway: network.gateway,
                address: network.address)
            let box = PreparedSandbox(
                engine: self, id: id, key: key, result: result, cgroup: cgroup,
                network: network, disk: disk, resources: resources)
            cleanup = []
            try box.awaitReady() // releases everything itself when it throws
            return box
        } catch {
            unwind()
            throw error
        }
    }

    /// Spawns, waits and tears down.
    public func run(_ spec: SandboxSpec, policy: SandboxPolicy = .default) async throws -> SandboxReport {
        try await spawn(spec, policy: policy).wait()
    }

    /// Fills the pools to their targets; returns how many things it made.
    @discardableResult
    public func replenishPools() -> Int {
        prepared.replenish(prepare)
            + stems.replenish(makeStem) { key, error in
                self.logger.warning(
                    "cannot pre-start a runtime; trying again in 30 s",
                    metadata: ["runtime": "\(key.stem.label)", "error": "\(error)"])
            }
    }

    /// Prepared sandboxes ready in the pool.
    public var preparedCount: Int { prepared.count }

    /// Pre-started runtimes ready, and the memory they hold, per runtime.
    public var stemGauges: [StemGauge] { stems.gauges() }

    /// Keeps prepared sandboxes for `policy` from now on, and prepares them now.
    public func prewarm(policy: SandboxPolicy = .default, mode: SandboxPolicy.NetworkMode? = nil, ephemeralStorageMB: Int = 512) throws {
        try policy.validate()
        let key = PreparedSandbox.Key(policy: policy, mode: mode ?? policy.network.mode, ephemeralStorageMB: ephemeralStorageMB)
        _ = try prepared.fill(key, prepare)
    }

    /// Releases everything pooled. Sandboxes still running are not touched.
    public func shutdown() {
        stems.drain()
        prepared.drain()
        disks.drain()
    }

    // MARK: internals

    /// $PETREL_INIT, else `petrel-init` in the directory of the running executable (where
    /// `swift build` puts it), else in `../lib/petrel/` from there (the package's place).
    static func defaultInitExecutable() -> String {
        if let env = getenv("PETREL_INIT"), env.pointee != 0 { return String(cString: env) }
        var buf = [CChar](repeating: 0, count: 4096)
        let n = readlink("/proc/self/exe", &buf, buf.count - 1)
        let exe = n > 0 ? String(cBuffer: buf) : ""
        let dir = exe.split(separator: "/", omittingEmptySubsequences: false).dropLast().joined(separator: "/")
        let beside = dir + "/petrel-init"
        let packaged =
            dir.split(separator: "/", omittingEmptySubsequences: false).dropLast().joined(separator: "/") + "/lib/petrel/petrel-init"
        return access(beside, X_OK) != 0 && access(packaged, X_OK) == 0 ? packaged : beside
    }

    func seccomp(_ seccomp: SandboxPolicy.Seccomp) throws -> SeccompProgram {
        if let p = state.withLock({ $0.programs[seccomp] }) { return p }
        guard let e = SandboxPolicy.errnoValues[seccomp.errno] else {
            throw SandboxError(.invalidPolicy, "unknown seccomp.errno \(seccomp.errno)")
        }
        let p = try SeccompProgram(seccomp, errno: e)
        state.withLock { $0.programs[seccomp] = p }
        return p
    }

    func rootfsBase(_ rootfs: SandboxPolicy.Rootfs) -> [MountEntry] {
        if let b = state.withLock({ $0.bases[rootfs] }) { return b }
        let b = RootfsPlan.base(rootfs, skeleton: configuration.rootfsSkeleton, readOnly: configuration.readOnlyBinds)
        state.withLock { $0.bases[rootfs] = b }
        return b
    }

    private func allocateUID() throws -> (UInt32, Int) {
        let range = configuration.uidRange
        return try state.withLock { s in
            guard s.uids.count < range.count else { throw SandboxError(.exhausted, "all \(range.count) sandbox uids are in use") }
            s.counter += 1
            while true {
                let u = UInt32.random(in: range)
                if s.uids.insert(u).inserted { return (u, s.counter) }
            }
        }
    }

    func freeUID(_ u: UInt32) { _ = state.withLock { $0.uids.remove(u) } }
}

/// What a sandbox holds on the host, so that tests can prove it is all gone afterwards.
public struct SandboxResources: Sendable, Equatable {
    public var uid: UInt32
    public var cgroupPaths: [String]
    public var loopDevice: String
    public var scratchImage: String
    public var netnsInode: UInt64
    public var hostInterface: String?
    public var gateway: String?
    public var address: String?
}
