import CPetrelLinux
import Foundation
import Glibc
import PetrelSandbox
import Testing

@Suite("Reports", .serialized)
struct ReportTests {
    @Test("exit codes, signals, wall and CPU time, peak memory")
    func report() async throws {
        let (exited, _) = try await Fixtures.probe(["exit", "3"])
        #expect(exited.exitCode == 3 && exited.signal == nil && !exited.oomKilled && !exited.timedOut)
        #expect(exited.durationMs > 0 && exited.durationMs < 10_000)
        #expect(exited.shellStatus == 3)

        let (signalled, _) = try await Fixtures.probe(["kill-self", "15"])
        #expect(signalled.signal == 15 && signalled.exitCode == nil)
        #expect(signalled.shellStatus == 143)

        let (busy, _) = try await Fixtures.probe(["alloc", "64"])
        #expect(busy.maxMemoryMB >= 64, "peak \(busy.maxMemoryMB)")
        #expect(busy.cpuTimeMs > 0)
    }

    @Test("a command that does not exist is reported, not hidden")
    func execFailure() async throws {
        let run = try Fixtures.start(["/no/such/program"], probe: false)
        let (report, _) = await run.finish()
        #expect(report.exitCode == 127)
        #expect(report.startError?.contains("No such file") == true, "\(report)")
        Fixtures.expectReleased(run.sandbox.resources)
    }

    @Test("commands are found through PATH inside the sandbox, and the host's PATH does not matter")
    func pathLookup() async throws {
        let run = try Fixtures.start(["sh", "-c", "command -v python3; echo ok"], probe: false)
        let (report, output) = await run.finish()
        #expect(report.exitCode == 0, "\(output)")
        #expect(output.contains("/usr/bin/python3"), "\(output)")
        Fixtures.expectReleased(run.sandbox.resources)
    }

    @Test("a bad spec is refused before anything is made")
    func badSpec() throws {
        let engine = try Fixtures.engine()
        #expect(throws: SandboxError.self) { try engine.spawn(SandboxSpec(command: [])) }
        #expect(throws: SandboxError.self) { try engine.spawn(SandboxSpec(command: ["true"], memoryMB: 64)) }
        #expect(throws: SandboxError.self) { try engine.spawn(SandboxSpec(command: ["true"], ephemeralStorageMB: 20_000)) }
        #expect(throws: SandboxError.self) { try engine.spawn(SandboxSpec(command: ["true"], codeDirectory: "/no/such/dir")) }
    }

    @Test("layers are merged read-only at /opt, later layers on top")
    func layers() async throws {
        let base = FileManager.default.temporaryDirectory.appendingPathComponent("petrel-layers-\(getpid())").path
        defer { try? FileManager.default.removeItem(atPath: base) }
        for (i, files) in [["a": "1", "shared": "first"], ["b": "2", "shared": "second"]].enumerated() {
            try FileManager.default.createDirectory(atPath: "\(base)/l\(i)", withIntermediateDirectories: true)
            for (f, v) in files { try v.write(toFile: "\(base)/l\(i)/\(f)", atomically: true, encoding: .utf8) }
        }
        let engine = try Fixtures.engine()
        var fds: [Int32] = [-1, -1]
        _ = petrel_pipe_cloexec(&fds)
        let spec = SandboxSpec(
            command: ["sh", "-c", "cat /opt/a /opt/b /opt/shared; echo; touch /opt/x 2>&1"],
            layers: ["\(base)/l0", "\(base)/l1"], stdout: fds[1], stderr: fds[1])
        let sandbox = try engine.spawn(spec)
        close(fds[1])
        let reader = PipeReader(fd: fds[0])
        _ = await sandbox.wait()
        let out = reader.finish()
        #expect(out.hasPrefix("12second"), "\(out)")
        #expect(out.contains("Read-only file system"), "\(out)")
        Fixtures.expectReleased(sandbox.resources)
    }
}

@Suite("Prepared sandboxes", .serialized)
struct PreparedPoolTests {
    @Test("a prepared sandbox is taken from the pool, runs its command, and a drained pool leaves nothing")
    func pool() async throws {
        _ = try Fixtures.engine() // root check with a clear reason
        let engine = try Fixtures.newEngine(pool: 2)
        try engine.prewarm()
        #expect(engine.preparedCount == 2)
        var fds: [Int32] = [-1, -1]
        _ = petrel_pipe_cloexec(&fds)
        let sandbox = try engine.spawn(SandboxSpec(command: ["sh", "-c", "echo pooled; cat /proc/1/comm"], stdout: fds[1], stderr: fds[1]))
        close(fds[1])
        let reader = PipeReader(fd: fds[0])
        #expect(engine.preparedCount == 1, "the sandbox did not come from the pool")
        let report = await sandbox.wait()
        #expect(report.exitCode == 0)
        #expect(reader.finish() == "pooled\npetrel-init\n")
        // The ones still waiting in the pool go away with the engine's shutdown,
        // and so does the ended sandbox's /tmp disk, which the engine kept as a spare.
        engine.replenishPools()
        #expect(engine.preparedCount == 2)
        engine.shutdown()
        #expect(engine.preparedCount == 0)
        Fixtures.expectReleased(sandbox.resources)
        let leftovers = EngineTests.cgroups(of: engine)
        #expect(leftovers.isEmpty, "cgroups of discarded prepared sandboxes: \(leftovers)")
    }

    @Test("a released /tmp disk serves the next sandbox formatted afresh: nothing of the last one is left, not even on the raw device")
    func recycledDisk() async throws {
        _ = try Fixtures.engine()
        let engine = try Fixtures.newEngine(pool: 1)
        defer { engine.shutdown() }
        try engine.prewarm()
        let marker = "petrel-secret-\(UInt64.random(in: 1...UInt64.max))"
        let first = try engine.spawn(SandboxSpec(command: ["sh", "-c", "printf %s \(marker) > /tmp/secret"]))
        #expect(await first.wait().exitCode == 0)
        let device = first.resources.loopDevice
        // Kept attached and unmounted; what the sandbox wrote is on it encrypted only (see ScratchEncryptionTests).
        #expect(ScratchDisk.isAttached(device: device, image: first.resources.scratchImage))
        #expect(!Fixtures.mountedHere(device))
        let used = try ScratchEncryptionTests.scan(device, for: [marker])
        #expect(used.found.isEmpty, "the marker is on \(device) in clear")

        engine.replenishPools() // the spare is formatted again for the next prepared sandbox
        let formatted = try ScratchEncryptionTests.scan(device, for: [marker])
        #expect(formatted.found.isEmpty)
        #expect(
            formatted.nonZeroBytes < used.nonZeroBytes,
            "\(device) was not formatted again: \(formatted.nonZeroBytes) bytes in use, \(used.nonZeroBytes) before")
        var fds: [Int32] = [-1, -1]
        _ = petrel_pipe_cloexec(&fds)
        let second = try engine.spawn(
            SandboxSpec(
                command: ["sh", "-c", "ls -A /tmp; cat /tmp/secret 2>&1; df -m /tmp | tail -1"],
                stdout: fds[1], stderr: fds[1]))
        close(fds[1])
        let reader = PipeReader(fd: fds[0])
        _ = await second.wait()
        let out = reader.finish()
        #expect(second.resources.loopDevice == device, "the second sandbox did not get the recycled disk")
        #expect(out.hasPrefix("cat: /tmp/secret: No such file"), "/tmp is empty: \(out)")
        #expect(out.contains("No such file"), "\(out)")
        #expect(!out.contains(marker), "\(out)")

        engine.shutdown()
        Fixtures.expectReleased(first.resources)
        Fixtures.expectReleased(second.resources)
    }
}
