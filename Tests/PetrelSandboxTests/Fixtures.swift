import CPetrelLinux
import Foundation
import Glibc
import PetrelSandbox
import Synchronization
import Testing

/// Shared set-up of the sandbox tests: one engine per test process (pools off,
/// so every resource a test sees is its own), the probe binary, and the checks
/// that a sandbox left nothing behind.
enum Fixtures {
    static let repo = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent()
        .path

    struct Failure: Error, CustomStringConvertible { var description: String }

    private static let shared = Mutex<SandboxEngine?>(nil)

    /// The engine; a test that cannot have one (not root) fails with the reason.
    static func engine() throws -> SandboxEngine {
        guard geteuid() == 0 else {
            throw Failure(
                description:
                    "sandbox tests need root: they use real namespaces, cgroups, loop devices and nftables (run Scripts/test as root)")
        }
        return try shared.withLock { e in
            if let e { return e }
            let made = try newEngine(pool: 0)
            e = made
            return made
        }
    }

    /// An engine of the caller's own on the tests' directories (`pool`: prepared sandboxes
    /// kept per kind, and twice as many released disks); the caller shuts it down.
    static func newEngine(pool: Int) throws -> SandboxEngine {
        try SandboxEngine(
            configuration: SandboxEngineConfiguration(
                stateDirectory: "/var/tmp/petrel-tests/state", runDirectory: "/var/tmp/petrel-tests/run",
                rootfsSkeleton: repo + "/rootfs", preparedPoolSize: pool))
    }

    /// A file of a sandbox's cgroup (whichever of its directories has it), trimmed.
    static func cgroupFile(_ paths: [String], _ file: String) -> String? {
        for p in paths {
            if let s = try? String(contentsOfFile: p + "/" + file, encoding: .utf8) {
                return s.trimmingCharacters(in: .whitespacesAndNewlines)
            }
        }
        return nil
    }

    private static let probeDir = Mutex<String?>(nil)

    /// A directory holding the statically linked probe (used as the sandbox's /var/task).
    static func probeCode() throws -> String {
        try probeDir.withLock { d in
            if let d { return d }
            let dir = repo + "/.build/petrel-probe"
            try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
            let src = repo + "/Tests/Probe/main.c"
            let bin = dir + "/sandbox-probe"
            let fresh =
                (try? FileManager.default.attributesOfItem(atPath: bin)[.modificationDate] as? Date).flatMap { b in
                    (try? FileManager.default.attributesOfItem(atPath: src)[.modificationDate] as? Date).map { b > $0 }
                } ?? false
            if !fresh {
                let p = Process()
                p.executableURL = URL(fileURLWithPath: "/usr/bin/cc")
                p.arguments = ["-O1", "-static", "-o", bin, src]
                p.standardError = FileHandle.nullDevice
                try p.run()
                p.waitUntilExit()
                guard p.terminationStatus == 0 else { throw Failure(description: "cc could not build the probe (\(src))") }
            }
            d = dir
            return dir
        }
    }

    /// A running sandbox with its stdout and stderr captured.
    final class Run: Sendable {
        let sandbox: Sandbox
        let out: PipeReader
        init(sandbox: Sandbox, out: PipeReader) {
            self.sandbox = sandbox
            self.out = out
        }
        func finish() async -> (report: SandboxReport, output: String) {
            let r = await sandbox.wait()
            return (r, out.finish())
        }
    }

    static func start(
        _ args: [String], memoryMB: Int = 1769, storageMB: Int = 512, timeout: Duration? = nil,
        network: SandboxPolicy.NetworkMode? = nil, policy: SandboxPolicy = .default,
        probe: Bool = true, listen: [ListenAddress] = [], boost: Bool = false, engine own: SandboxEngine? = nil
    ) throws -> Run {
        let engine = try own ?? engine()
        let code = try probeCode()
        var fds: [Int32] = [-1, -1]
        guard petrel_pipe_cloexec(&fds) == 0 else { throw Failure(description: "pipe2 failed") }
        let devnull = open("/dev/null", O_RDONLY | O_CLOEXEC)
        defer {
            close(devnull)
            close(fds[1])
        }
        let command = probe ? ["/var/task/sandbox-probe"] + args : args
        var spec = SandboxSpec(
            command: command, environment: ["PATH": "/usr/bin:/bin"], codeDirectory: code,
            memoryMB: memoryMB, ephemeralStorageMB: storageMB, timeout: timeout, network: network,
            stdin: devnull, stdout: fds[1], stderr: fds[1])
        spec.listen = listen
        spec.boostCPUUntilSettled = boost
        let sandbox: Sandbox
        do { sandbox = try engine.spawn(spec, policy: policy) } catch {
            close(fds[0])
            throw error
        }
        return Run(sandbox: sandbox, out: PipeReader(fd: fds[0]))
    }

    /// Runs a probe to the end and checks that it left nothing behind.
    static func probe(
        _ args: [String], memoryMB: Int = 1769, storageMB: Int = 512, timeout: Duration? = .seconds(60),
        network: SandboxPolicy.NetworkMode? = nil, policy: SandboxPolicy = .default
    ) async throws -> (report: SandboxReport, output: String) {
        let run = try start(args, memoryMB: memoryMB, storageMB: storageMB, timeout: timeout, network: network, policy: policy)
        let result = await run.finish()
        expectReleased(run.sandbox.resources)
        return result
    }

    /// The probe's "RESULT <what> <outcome>" for `what`.
    static func result(_ output: String, _ what: String) -> String? {
        for line in output.split(separator: "\n") where line.hasPrefix("RESULT \(what) ") {
            return String(line.dropFirst("RESULT \(what) ".count))
        }
        return nil
    }

    // MARK: leak checks

    /// Everything the sandbox held is gone: processes, cgroups, loop device, network namespace, veth.
    static func expectReleased(_ r: SandboxResources, sourceLocation: SourceLocation = #_sourceLocation) {
        for p in r.cgroupPaths {
            #expect(!FileManager.default.fileExists(atPath: p), "cgroup \(p) was left behind", sourceLocation: sourceLocation)
        }
        // The kernel runs a loop device down asynchronously once it is released: allow it 2 s.
        var attached = true
        for _ in 0..<400 {
            attached = ScratchDisk.isAttached(device: r.loopDevice, image: r.scratchImage)
            if !attached { break }
            usleep(5000)
        }
        #expect(!attached, "loop device \(r.loopDevice) is still attached", sourceLocation: sourceLocation)
        #expect(
            !FileManager.default.fileExists(atPath: r.scratchImage), "scratch image \(r.scratchImage) is still on disk",
            sourceLocation: sourceLocation)
        if let veth = r.hostInterface {
            #expect(petrel_link_exists(veth) == 0, "veth \(veth) was left behind", sourceLocation: sourceLocation)
        }
        #expect(!netnsHeld(r.netnsInode), "network namespace \(r.netnsInode) is still held", sourceLocation: sourceLocation)
        #expect(processes(ofUID: r.uid).isEmpty, "processes of uid \(r.uid) are still running", sourceLocation: sourceLocation)
        #expect(!mountedHere(r.loopDevice), "\(r.loopDevice) is mounted in the host's namespace", sourceLocation: sourceLocation)
    }

    static func netnsHeld(_ inode: UInt64) -> Bool {
        let needle = "net:[\(inode)]"
        for pid in Sys.pids() {
            if readlink("/proc/\(pid)/ns/net") == needle { return true }
            for fd in (try? FileManager.default.contentsOfDirectory(atPath: "/proc/\(pid)/fd")) ?? []
            where readlink("/proc/\(pid)/fd/\(fd)") == needle {
                return true
            }
        }
        return false
    }

    static func processes(ofUID uid: UInt32) -> [Int32] {
        Sys.pids().filter { pid in
            guard let s = try? String(contentsOfFile: "/proc/\(pid)/status", encoding: .utf8) else { return false }
            return s.split(separator: "\n").contains {
                $0.hasPrefix("Uid:") && $0.split(separator: "\t").dropFirst().first == Substring("\(uid)")
            }
        }
    }

    /// Processes with this command name whose parent is `parent`.
    static func processes(named name: String, parent: Int32) -> [Int32] {
        Sys.pids().filter { pid in
            guard let s = try? String(contentsOfFile: "/proc/\(pid)/status", encoding: .utf8) else { return false }
            let lines = s.split(separator: "\n")
            return lines.contains("Name:\t\(name)") && lines.contains("PPid:\t\(parent)")
        }
    }

    static func uid(of pid: Int32) -> UInt32? {
        guard let s = try? String(contentsOfFile: "/proc/\(pid)/status", encoding: .utf8),
            let line = s.split(separator: "\n").first(where: { $0.hasPrefix("Uid:") })
        else { return nil }
        return line.split(separator: "\t").dropFirst().first.flatMap { UInt32($0) }
    }

    /// The backing files of every attached loop device.
    static func loopBackings() -> [String] {
        ((try? FileManager.default.contentsOfDirectory(atPath: "/sys/block")) ?? []).filter { $0.hasPrefix("loop") }.compactMap {
            try? String(contentsOfFile: "/sys/block/\($0)/loop/backing_file", encoding: .utf8)
        }
    }

    static func mountedHere(_ device: String) -> Bool {
        ((try? String(contentsOfFile: "/proc/self/mountinfo", encoding: .utf8)) ?? "").contains(" \(device) ")
    }

    static func readlink(_ path: String) -> String? { try? FileManager.default.destinationOfSymbolicLink(atPath: path) }

    enum Sys {
        static func pids() -> [Int32] {
            ((try? FileManager.default.contentsOfDirectory(atPath: "/proc")) ?? []).compactMap { Int32($0) }
        }
    }
}

/// Reads a pipe on a thread of its own, so a test can wait for a line while the sandbox runs.
final class PipeReader: Sendable {
    private let fd: Int32
    private let buffer = Mutex<(text: String, done: Bool)>(("", false))

    init(fd: Int32) {
        self.fd = fd
        let t = Thread { [self] in
            var chunk = [UInt8](repeating: 0, count: 4096)
            while true {
                let n = chunk.withUnsafeMutableBytes { read(fd, $0.baseAddress, 4096) }
                if n < 0 && errno == EINTR { continue }
                if n <= 0 { break }
                let s = String(decoding: chunk[0..<n], as: UTF8.self)
                buffer.withLock { $0.text += s }
            }
            close(fd)
            buffer.withLock { $0.done = true }
        }
        t.start()
    }

    var text: String { buffer.withLock { $0.text } }

    /// Waits until the output contains `needle` (true) or the time is up / the pipe closed (false).
    func waitFor(_ needle: String, seconds: Double = 10) async -> Bool {
        let deadline = Date().addingTimeInterval(seconds)
        while Date() < deadline {
            let (t, done) = buffer.withLock { ($0.text, $0.done) }
            if t.contains(needle) { return true }
            if done { return false }
            try? await Task.sleep(for: .milliseconds(10))
        }
        return false
    }

    /// Waits for EOF (the sandbox has ended) and returns everything.
    func finish() -> String {
        for _ in 0..<1000 {
            if buffer.withLock({ $0.done }) { break }
            Thread.sleep(forTimeInterval: 0.005)
        }
        return text
    }
}
