import Foundation
import Glibc
import PetrelSandbox
import Testing

/// The cgroup promises. Scripts/test runs this suite twice: on this host (v1
/// controllers, hybrid) and on a pure cgroup v2 kernel under cgroup2-vm, where
/// PETREL_EXPECT_CGROUP=v2 makes sure the v2 driver is the one tested.
@Suite("Cgroups", .serialized)
struct CgroupTests {
    @Test("the driver matches the host, and its subtree is below the cgroup the process started in")
    func driverAndDelegation() throws {
        let engine = try Fixtures.engine()
        let mounts = (try? String(contentsOfFile: "/proc/self/mountinfo", encoding: .utf8)) ?? ""
        let unified = mounts.split(separator: "\n").contains { $0.contains(" /sys/fs/cgroup ") && $0.contains(" - cgroup2 ") }
        if let expected = ProcessInfo.processInfo.environment["PETREL_EXPECT_CGROUP"] {
            #expect(engine.cgroups.name.hasPrefix("cgroup \(expected)"), "expected the \(expected) driver, got \(engine.cgroups.name)")
            try #require(expected != "v2" || unified, "PETREL_EXPECT_CGROUP=v2 but this kernel is not on a pure cgroup v2 hierarchy")
        }
        #expect(engine.cgroups.name.hasPrefix(unified ? "cgroup v2" : "cgroup v1"))
        // Every base sits below where this process (or, on v2, its leaf's parent) lives.
        let own = (try? String(contentsOfFile: "/proc/self/cgroup", encoding: .utf8)) ?? ""
        for base in engine.cgroups.bases {
            #expect(base.hasSuffix("/petrel"), "\(base)")
            let parent = String(base.dropLast("/petrel".count))
            let rel = parent.replacingOccurrences(of: #"^/sys/fs/cgroup(/[^/]+)?"#, with: "", options: .regularExpression)
            let relV2 = parent.replacingOccurrences(of: "/sys/fs/cgroup", with: "")
            #expect(
                own.contains(":\(rel.isEmpty ? "/" : rel)\n") || own.contains(":\(relV2.isEmpty ? "/" : relV2)\n")
                    || own.contains(":\(relV2)/petreld\n"), "\(base) is not below this process's cgroup:\n\(own)")
        }
    }

    @Test("a boosted start runs with the host's CPUs; settling lowers the quota alone, to the memory's share")
    func boostAndSettle() async throws {
        let run = try Fixtures.start(["sleep", "30"], memoryMB: 256, timeout: .seconds(60), boost: true)
        defer { run.sandbox.kill() }
        let paths = run.sandbox.resources.cgroupPaths
        func read(_ file: String) -> String? { Fixtures.cgroupFile(paths, file) }
        let settled = Int(256.0 / 1769.0 * 20_000)
        let boosted = ProcessInfo.processInfo.activeProcessorCount * 20_000
        let v2 = read("cpu.max") != nil
        func quota() -> String? { v2 ? read("cpu.max") : read("cpu.cfs_quota_us") }
        func burst() -> String? { read(v2 ? "cpu.max.burst" : "cpu.cfs_burst_us") }
        let memory = read(v2 ? "memory.max" : "memory.limit_in_bytes")
        #expect(quota() == (v2 ? "\(boosted) 20000" : "\(boosted)"))
        // The burst is the settled one from the start: lowering the quota to it is then allowed.
        if let b = burst() { #expect(b == "\(settled)") }
        try run.sandbox.settle()
        #expect(quota() == (v2 ? "\(settled) 20000" : "\(settled)"))
        if let b = burst() { #expect(b == "\(settled)") }
        #expect(read(v2 ? "memory.max" : "memory.limit_in_bytes") == memory && memory == "\(256 << 20)")
        try run.sandbox.settle() // idempotent
        #expect(quota() == (v2 ? "\(settled) 20000" : "\(settled)"))
    }

    @Test("limits follow the memory size: memory, swap, CPU proportional at 1,769 MB per CPU, pids")
    func limits() async throws {
        let run = try Fixtures.start(["sleep", "30"], memoryMB: 512, timeout: .seconds(60))
        defer { run.sandbox.kill() }
        let paths = run.sandbox.resources.cgroupPaths
        func read(_ file: String) -> String? { Fixtures.cgroupFile(paths, file) }
        let cpus = min(512.0 / 1769.0, Double(ProcessInfo.processInfo.activeProcessorCount))
        let quota = Int(cpus * 20_000)
        if read("memory.max") != nil {
            #expect(read("memory.max") == "\(512 << 20)")
            #expect(read("memory.swap.max") == "0")
            #expect(read("memory.oom.group") == "1")
            #expect(read("cpu.max") == "\(quota) 20000")
            if let burst = read("cpu.max.burst") { #expect(burst == "\(quota)") }
            #expect(read("cpu.weight") == "\(512 * 100 / 1769)")
        } else {
            #expect(read("memory.limit_in_bytes") == "\(512 << 20)")
            if let memsw = read("memory.memsw.limit_in_bytes") { #expect(memsw == "\(512 << 20)") }
            #expect(read("cpu.cfs_quota_us") == "\(quota)")
            #expect(read("cpu.cfs_period_us") == "20000")
            if let burst = read("cpu.cfs_burst_us") { #expect(burst == "\(quota)") }
            #expect(read("cpu.shares") == "\(512 * 1024 / 1769)")
            #expect(read("freezer.state") != nil)
        }
        #expect(read("pids.max") == "1024")
        // Both processes of the sandbox (init and the command) are in it, once they have started.
        var members: [Int32] = []
        for _ in 0..<200 where members.count < 2 {
            members = run.sandbox.processes()
            try await Task.sleep(for: .milliseconds(10))
        }
        #expect(members.count == 2, "\(members)")
        run.sandbox.kill()
        _ = await run.finish()
        Fixtures.expectReleased(run.sandbox.resources)
    }

    @Test("allocating past the memory size is OOM-killed and reported; the host is unharmed")
    func oom() async throws {
        let (report, output) = try await Fixtures.probe(["alloc", "512"], memoryMB: 128)
        #expect(report.oomKilled, "not reported as OOM: \(report) \(output)")
        #expect(report.signal == 9)
        #expect(!output.contains("ALLOCATED"))
        #expect(report.maxMemoryMB <= 129 && report.maxMemoryMB >= 100, "peak \(report.maxMemoryMB) MB")
        // The host (this process) goes on, and so does the next sandbox.
        let (next, _) = try await Fixtures.probe(["exit", "0"])
        #expect(next.exitCode == 0 && !next.oomKilled)
    }

    @Test("a fork bomb is stopped by the pids limit and leaves nothing")
    func forkBomb() async throws {
        let (report, output) = try await Fixtures.probe(["forkbomb"])
        #expect(report.exitCode == 0, "\(output)")
        #expect(Fixtures.result(output, "fork") == "EAGAIN", "\(output)")
        let forked = output.split(separator: "\n").first { $0.hasPrefix("FORKED ") }.flatMap { Int($0.dropFirst(7)) } ?? -1
        #expect(forked > 500 && forked < 1024, "forked \(forked)")
    }

    @Test("a process that ignores SIGTERM and spawns children is gone, children and all, after kill")
    func killTree() async throws {
        let run = try Fixtures.start(["stubborn"], timeout: .seconds(60))
        #expect(await run.out.waitFor("READY"), "\(run.out.text)")
        #expect(run.sandbox.processes().count == 7, "init, the probe and five children: \(run.sandbox.processes())")
        run.sandbox.signal(SIGTERM)
        try await Task.sleep(for: .milliseconds(200))
        #expect(run.sandbox.processes().count == 7, "SIGTERM should have been ignored")
        run.sandbox.kill()
        let (report, _) = await run.finish()
        #expect(report.signal == 9)
        #expect(!report.timedOut)
        Fixtures.expectReleased(run.sandbox.resources)
    }

    @Test("a timeout kills the sandbox and says so")
    func timeout() async throws {
        let (report, _) = try await Fixtures.probe(["stubborn"], timeout: .milliseconds(800))
        #expect(report.timedOut)
        #expect(report.signal == 9)
        #expect(report.durationMs >= 800 && report.durationMs < 5000, "\(report.durationMs) ms")
    }

    @Test("writing past the size of /tmp fails with ENOSPC; /tmp is not charged as memory")
    func scratchFull() async throws {
        // 512 MB of /tmp written from a 256 MB sandbox: the disk fills, the memory limit does not kill.
        let (report, output) = try await Fixtures.probe(["fill", "/tmp"], memoryMB: 256, storageMB: 512, timeout: .seconds(120))
        #expect(Fixtures.result(output, "fill") == "ENOSPC", "\(output)")
        let wrote = output.split(separator: "\n").first { $0.hasPrefix("WROTE ") }.flatMap { Int($0.dropFirst(6)) } ?? 0
        #expect(wrote <= 512 << 20 && wrote >= 480 << 20, "wrote \(wrote) bytes into a 512 MB /tmp")
        #expect(!report.oomKilled)
        #expect(report.exitCode == 0)
    }
}
