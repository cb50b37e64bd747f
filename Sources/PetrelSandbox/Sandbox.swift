import CPetrelLinux
import Glibc
import Synchronization

/// One running sandbox. `wait()` returns its report once it has ended and
/// everything it held is released; `kill()` ends it at any time.
public final class Sandbox: Sendable {
    let prepared: PreparedSandbox
    let timeout: Duration?
    let started: UInt64

    public var id: String { prepared.id }
    /// PID 1 of the sandbox, as the host sees it.
    public var pid: Int32 { prepared.pid }
    public var resources: SandboxResources { prepared.resources }
    /// Listening sockets opened inside for `SandboxSpec.listen`; the caller owns and closes them.
    public let listeners: [ListenAddress: Int32]
    /// The read end of a pre-started command's stdout and stderr (non-blocking; the caller
    /// owns and closes it); nil when the command started with the spec's streams.
    public let output: Int32?
    /// Whether the command was pre-started (see `StemSpec`).
    public var prestarted: Bool { output != nil }

    /// `waiting`: someone is in wait() and the command still runs (signals still go
    /// through); `releasing`: it has exited and its fds are being closed.
    private enum Phase {
        case running, waiting, releasing
        case ended(SandboxReport)
    }
    private let phase = Mutex<Phase>(.running)
    private let timedOut = Mutex<Bool>(false)

    private let pendingLimits: Mutex<CgroupLimits?>
    private let peakFD = Mutex<Int32>(-1)

    init(
        prepared: PreparedSandbox, timeout: Duration?, started: UInt64, listeners: [ListenAddress: Int32] = [:],
        settled: CgroupLimits? = nil, output: Int32? = nil
    ) {
        self.output = output
        self.prepared = prepared
        self.listeners = listeners
        pendingLimits = Mutex(settled)
        self.timeout = timeout
        self.started = started
    }

    /// Kills every process in the sandbox: killing init takes its whole PID
    /// namespace with it; the cgroup is swept at teardown.
    public func kill() { signal(SIGKILL) }

    /// Sends a signal to the sandbox's init, which forwards it to the command.
    public func signal(_ sig: Int32) {
        // Under the lock, so the pidfd cannot be closed (and its number reused) meanwhile.
        phase.withLock { p in
            switch p {
            case .running, .waiting: _ = petrel_pidfd_kill(prepared.pidfd, sig)
            case .releasing, .ended: break
            }
        }
    }

    /// Ends a CPU boost (`SandboxSpec.boostCPUUntilSettled`): the memory-proportional
    /// limits apply from now on. Idempotent.
    public func settle() throws {
        guard
            let limits = pendingLimits.withLock({ p -> CgroupLimits? in
                defer { p = nil }
                return p
            })
        else { return }
        try phase.withLock { p in
            switch p {
            case .running, .waiting: try prepared.cgroup.applyCPUQuota(limits)
            case .releasing, .ended: break
            }
        }
    }

    /// Peak memory so far, in bytes: read through a file descriptor kept open, since
    /// every invocation's REPORT asks (a path lookup in the cgroup filesystem each
    /// time costs more than the read). nil once the sandbox is being released.
    public func peakMemoryBytes() -> Int? {
        phase.withLock { p -> Int? in
            switch p {
            case .running, .waiting: break
            case .releasing, .ended: return nil
            }
            return peakFD.withLock { fd -> Int? in
                if fd < 0 { fd = open(prepared.cgroup.peakMemoryPath, O_RDONLY | O_CLOEXEC) }
                guard fd >= 0 else { return nil }
                var buf = [UInt8](repeating: 0, count: 32)
                let n = buf.withUnsafeMutableBytes { pread(fd, $0.baseAddress, 31, 0) }
                guard n > 0 else { return nil }
                var v = 0
                for b in buf[0..<n] where b >= 0x30 && b <= 0x39 { v = v * 10 + Int(b - 0x30) }
                return v
            }
        }
    }

    /// The processes (host PIDs) in the sandbox's cgroup.
    public func processes() -> [Int32] { prepared.cgroup.processes() }

    /// Waits for the end (killing the sandbox at its timeout), then tears it down.
    public func wait() async -> SandboxReport {
        let first: Bool = phase.withLock { p in
            if case .running = p {
                p = .waiting
                return true
            }
            return false
        }
        if !first {
            // Someone else is tearing down; wait for their report.
            while true {
                if case .ended(let r) = phase.withLock({ $0 }) { return r }
                try? await Task.sleep(for: .milliseconds(5))
            }
        }
        let pidfd = prepared.pidfd
        await withTaskGroup(of: Bool.self) { group in
            group.addTask {
                await Reaper.exited(pidfd)
                return true
            }
            if let timeout {
                group.addTask { [self] in
                    do { try await Task.sleep(for: timeout) } catch { return false }
                    timedOut.withLock { $0 = true }
                    _ = petrel_pidfd_kill(pidfd, SIGKILL)
                    return false
                }
            }
            while let exited = await group.next() {
                if exited {
                    group.cancelAll()
                    break
                }
            }
        }
        phase.withLock { $0 = .releasing }
        peakFD.withLock { fd in
            if fd >= 0 { close(fd) }
            fd = -1
        }
        let report = finish()
        phase.withLock { $0 = .ended(report) }
        return report
    }

    private func finish() -> SandboxReport {
        let ended = Sys.monotonicNanoseconds()
        var commandStatus: Int32?
        var startError: String?
        var execFailed = false
        var rec = petrel_record()
        while petrel_read_record(prepared.statusFD, &rec) == 1 {
            switch Int(rec.kind) {
            case Int(PETREL_RECORD_SETUP_ERROR.rawValue):
                startError = "sandbox setup failed: \(rec.text): \(String(cString: strerror(rec.err)))"
            case Int(PETREL_RECORD_EXEC_ERROR.rawValue):
                startError = "\(rec.text): \(String(cString: strerror(rec.err)))"
                execFailed = true
            case Int(PETREL_RECORD_EXITED.rawValue):
                commandStatus = rec.value
            default: break
            }
        }
        let (initStatus, stats) = prepared.release()
        let status = commandStatus ?? initStatus
        var report = SandboxReport(
            exitCode: nil, signal: nil, oomKilled: stats.oomKills > 0, timedOut: timedOut.withLock { $0 },
            durationMs: Double(ended - started) / 1e6, cpuTimeMs: Double(stats.cpuNanoseconds) / 1e6,
            maxMemoryMB: (Double(stats.peakMemoryBytes) / 1_048_576 * 10).rounded() / 10, startError: startError)
        if status & 0x7f == 0 {
            report.exitCode = Int((status >> 8) & 0xff)
        } else {
            report.signal = Int(status & 0x7f)
        }
        if startError != nil && !execFailed && commandStatus == nil {
            report.exitCode = 126
            report.signal = nil
        }
        return report
    }
}
