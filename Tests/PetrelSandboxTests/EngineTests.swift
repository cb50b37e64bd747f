import CPetrelLinux
import Foundation
import Glibc
import PetrelSandbox
import Testing

@Suite("Engine", .serialized)
struct EngineTests {
    @Test("helper programs (ip, mkfs.ext4) get stdin, stdout and stderr only, never the daemon's other fds")
    func helpersInheritOnlyStdio() throws {
        // A socket that is not close-on-exec, like SwiftNIO's listening and accepted sockets.
        let sock = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        try #require(sock >= 0)
        defer { close(sock) }
        let out = "/var/tmp/petrel-tests/helper-fds-\(getpid())"
        defer { unlink(out) }
        let words: [String] = ["/bin/sh", "-c", "ls /proc/self/fd > \(out)"]
        let cargs: [UnsafeMutablePointer<CChar>?] = words.map { strdup($0) } + [nil]
        defer { cargs.forEach { free($0) } }
        var err = [CChar](repeating: 0, count: 512)
        let status = cargs.map { $0.map { UnsafePointer($0) } }.withUnsafeBufferPointer {
            petrel_run_in_netns(-1, $0.baseAddress, nil, &err, 512)
        }
        #expect(status == 0)
        let fds = try String(contentsOfFile: out, encoding: .utf8).split(separator: "\n").compactMap { Int($0) }
        // ls sees 0, 1, 2 and the directory it is listing (3); nothing else came along.
        #expect(!fds.isEmpty && fds.allSatisfy { $0 <= 3 }, "the helper saw fds \(fds); the socket was \(sock)")
    }

    @Test("starting an engine removes a dead daemon's scratch images, never a live one's")
    func staleImages() throws {
        _ = try Fixtures.engine() // root check with a clear reason
        let dir = "/var/tmp/petrel-tests/state/scratch"
        // A pid that is surely dead: a child we started and reaped.
        let child = Process()
        child.executableURL = URL(fileURLWithPath: "/bin/true")
        try child.run()
        child.waitUntilExit()
        let dead = "\(dir)/\(child.processIdentifier)-1.img"
        let live = "\(dir)/1-1.img"
        defer {
            try? FileManager.default.removeItem(atPath: live)
            try? FileManager.default.removeItem(atPath: dead)
        }
        #expect(FileManager.default.createFile(atPath: dead, contents: nil))
        #expect(FileManager.default.createFile(atPath: live, contents: nil))
        let engine = try Fixtures.newEngine(pool: 0)
        defer { engine.shutdown() }
        #expect(!FileManager.default.fileExists(atPath: dead), "a dead daemon's image was kept")
        #expect(FileManager.default.fileExists(atPath: live), "a live daemon's image was removed")
    }

    @Test("a command and environment over 64 KiB are refused, and the sandbox prepared for them is gone")
    func oversizedStart() throws {
        _ = try Fixtures.engine() // root check with a clear reason
        // An engine of its own, so that nothing another test runs can be mistaken for a leak.
        let engine = try Fixtures.newEngine(pool: 0)
        defer { engine.shutdown() }
        let spec = SandboxSpec(command: ["true"], environment: ["BIG": String(repeating: "x", count: 70_000)])
        #expect { try engine.spawn(spec) } throws: { "\($0)".contains("64 KiB") }
        #expect(Self.cgroups(of: engine).isEmpty, "a cgroup of the refused sandbox is left")
        let inits = Fixtures.processes(named: "petrel-init", parent: getpid()).filter { pid in
            ((try? String(contentsOfFile: "/proc/\(pid)/cgroup", encoding: .utf8)) ?? "").contains(engine.instanceName + "-")
        }
        #expect(inits.isEmpty, "its init still runs: \(inits)")
    }

    @Test("when the daemon dies, its sandboxes die with it, and the next start sweeps their cgroups")
    func daemonDeath() async throws {
        _ = try Fixtures.engine()
        let code = try Fixtures.probeCode()
        let p = Process()
        p.executableURL = URL(fileURLWithPath: OperatorCommandTests.petreld)
        p.arguments = [
            "sandbox", "run", "--data-dir", "/var/tmp/petrel-tests/state", "--run-dir", "/var/tmp/petrel-tests/run",
            "--code", code, "--", "/var/task/sandbox-probe", "stubborn",
        ]
        let out = Pipe()
        p.standardOutput = out
        p.standardError = FileHandle.nullDevice
        try p.run()
        let reader = PipeReader(fd: dup(out.fileHandleForReading.fileDescriptor))
        try out.fileHandleForReading.close()
        #expect(await reader.waitFor("READY"), "\(reader.text)")
        let inits = Fixtures.processes(named: "petrel-init", parent: p.processIdentifier)
        try #require(inits.count == 1, "the daemon's sandbox init: \(inits)")
        let uid = try #require(Fixtures.uid(of: inits[0]))
        #expect(Fixtures.processes(ofUID: uid).count == 7)

        kill(p.processIdentifier, SIGKILL)
        p.waitUntilExit()
        var left = Fixtures.processes(ofUID: uid)
        for _ in 0..<200 where !left.isEmpty {
            try await Task.sleep(for: .milliseconds(10))
            left = Fixtures.processes(ofUID: uid)
        }
        #expect(left.isEmpty, "sandbox processes outlived their daemon: \(left)")
        // Its scratch disk goes with the last mount of it.
        let prefix = "/var/tmp/petrel-tests/state/scratch/\(p.processIdentifier)-"
        var attached = Fixtures.loopBackings().filter { $0.hasPrefix(prefix) }
        for _ in 0..<200 where !attached.isEmpty {
            try await Task.sleep(for: .milliseconds(10))
            attached = Fixtures.loopBackings().filter { $0.hasPrefix(prefix) }
        }
        #expect(attached.isEmpty, "loop devices of the dead daemon: \(attached)")
        // Its cgroups stay until a daemon starts again and sweeps them.
        let driver = try CgroupDrivers.detect()
        for base in driver.bases {
            let stale = ((try? FileManager.default.contentsOfDirectory(atPath: base)) ?? []).filter {
                $0.hasPrefix("sb-\(p.processIdentifier)-")
            }
            #expect(stale.isEmpty, "\(base): \(stale)")
        }
        _ = reader.finish()
    }

    @Test("a daemon holding more than 1024 descriptors still loads each sandbox's firewall (libnftables waits with select)")
    func manyDescriptors() async throws {
        _ = try Fixtures.engine()
        var limit = rlimit()
        getrlimit(Int32(RLIMIT_NOFILE.rawValue), &limit)
        let saved = limit
        if limit.rlim_cur < 4096 {
            limit.rlim_cur = min(4096, limit.rlim_max)
            setrlimit(Int32(RLIMIT_NOFILE.rawValue), &limit)
        }
        defer {
            var l = saved
            setrlimit(Int32(RLIMIT_NOFILE.rawValue), &l)
        }
        var held: [Int32] = []
        defer { held.forEach { close($0) } }
        while held.count < 1100 {
            let fd = open("/dev/null", O_RDONLY | O_CLOEXEC)
            try #require(fd >= 0, "cannot open a descriptor: \(String(cString: strerror(errno)))")
            held.append(fd)
        }
        try #require((held.max() ?? 0) >= 1024)
        let (report, output) = try await Fixtures.probe(["exit", "0"])
        #expect(report.exitCode == 0, "\(report) \(output)")
    }

    static func cgroups(of engine: SandboxEngine) -> [String] {
        engine.cgroups.bases.flatMap { base in
            ((try? FileManager.default.contentsOfDirectory(atPath: base)) ?? []).filter { $0.hasPrefix(engine.instanceName + "-") }.map {
                base + "/" + $0
            }
        }
    }
}
