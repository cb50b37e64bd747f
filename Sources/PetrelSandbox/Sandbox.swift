import CPetrelLinux
import Glibc
import Synchronization

/// One running sandbox. `wait()` returns its report once it has ended and
/// everything it held is released; `kill()` ends it at any time.
public final class Sandbox: Sendable {
    public let id: String
    /// PID 1 of the sandbox, as the host sees it.
    public let pid: Int32
    public let resources: SandboxResources
    let engine: SandboxEngine
    let pidfd: Int32
    let statusFD: Int32
    let cgroup: any SandboxCgroup
    let network: SandboxNetwork
    let disk: ScratchDisk
    let timeout: Duration?
    let started: UInt64

    private enum Phase { case running, ending, ended(SandboxReport) }
    private let phase = Mutex<Phase>(.running)
    private let flags = Mutex<(timedOut: Bool, killed: Bool)>((false, false))

    init(engine: SandboxEngine, id: String, pid: Int32, pidfd: Int32, statusFD: Int32, cgroup: any SandboxCgroup,
         network: SandboxNetwork, disk: ScratchDisk, resources: SandboxResources, timeout: Duration?, started: UInt64) {
        self.engine = engine
        self.id = id
        self.pid = pid
        self.pidfd = pidfd
        self.statusFD = statusFD
        self.cgroup = cgroup
        self.network = network
        self.disk = disk
        self.resources = resources
        self.timeout = timeout
        self.started = started
    }

    /// Kills every process in the sandbox: init first (which takes its whole PID
    /// namespace with it), then whatever the cgroup still holds.
    public func kill() {
        guard case .running = phase.withLock({ $0 }) else { return }
        flags.withLock { $0.killed = true }
        _ = petrel_pidfd_kill(pidfd, SIGKILL)
    }

    /// Sends a signal to the command (through the sandbox's init, which forwards it).
    public func signal(_ sig: Int32) {
        guard case .running = phase.withLock({ $0 }) else { return }
        _ = petrel_pidfd_kill(pidfd, sig)
    }

    /// The processes (host PIDs) in the sandbox's cgroup.
    public func processes() -> [Int32] { cgroup.processes() }

    /// Waits for the end (killing the sandbox at its timeout), then tears it down.
    public func wait() async -> SandboxReport {
        let first: Bool = phase.withLock { p in
            if case .running = p { p = .ending; return true }
            return false
        }
        if !first {
            // Someone else is tearing down; wait for their report.
            while true {
                if case .ended(let r) = phase.withLock({ $0 }) { return r }
                try? await Task.sleep(for: .milliseconds(5))
            }
        }
        let pidfd = self.pidfd
        await withTaskGroup(of: Bool.self) { group in
            group.addTask { await Reaper.shared.exited(pidfd); return true }
            if let timeout {
                group.addTask { [self] in
                    do { try await Task.sleep(for: timeout) } catch { return false }
                    flags.withLock { $0.timedOut = true }
                    _ = petrel_pidfd_kill(pidfd, SIGKILL)
                    return false
                }
            }
            while let exited = await group.next() {
                if exited { group.cancelAll(); break }
            }
        }
        let report = finish()
        phase.withLock { $0 = .ended(report) }
        return report
    }

    private func finish() -> SandboxReport {
        let ended = Sys.monotonicNanoseconds()
        var initStatus: Int32 = 0
        _ = petrel_pidfd_reap(pidfd, &initStatus)
        var commandStatus: Int32?
        var startError: String?
        var execFailed = false
        var rec = petrel_record()
        while petrel_read_record(statusFD, &rec) == 1 {
            let message = withUnsafeBytes(of: rec.message) { String(cString: $0.bindMemory(to: CChar.self).baseAddress!) }
            switch Int(rec.kind) {
            case Int(PETREL_RECORD_SETUP_ERROR.rawValue):
                startError = "sandbox setup failed: \(message): \(String(cString: strerror(rec.err)))"
            case Int(PETREL_RECORD_EXEC_ERROR.rawValue):
                startError = "\(message): \(String(cString: strerror(rec.err)))"
                execFailed = true
            case Int(PETREL_RECORD_EXITED.rawValue):
                commandStatus = rec.value
            default: break
            }
        }
        let stats = cgroup.stats()
        cgroup.killAll()
        do { try cgroup.remove() } catch {
            engine.logger.error("cannot remove a sandbox cgroup", metadata: ["sandbox.id": "\(id)", "error": "\(error)"])
        }
        engine.disks.release(disk)
        engine.networks.release(network)
        engine.freeUID(resources.uid)
        Sys.close(pidfd)
        Sys.close(statusFD)

        let status = commandStatus ?? initStatus
        let f = flags.withLock { $0 }
        var report = SandboxReport(
            exitCode: nil, signal: nil, oomKilled: stats.oomKills > 0, timedOut: f.timedOut,
            durationMs: Double(ended - started) / 1e6, cpuTimeMs: Double(stats.cpuNanoseconds) / 1e6,
            maxMemoryMB: (Double(stats.peakMemoryBytes) / 1_048_576 * 10).rounded() / 10, startError: startError)
        if status & 0x7f == 0 {
            report.exitCode = Int((status >> 8) & 0xff)
        } else {
            report.signal = Int(status & 0x7f)
        }
        if startError != nil && !execFailed && commandStatus == nil { report.exitCode = 126; report.signal = nil }
        return report
    }
}
