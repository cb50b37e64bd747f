import CPetrelLinux
import Foundation
import Glibc
import PetrelSandbox
import Testing

/// Pre-started commands ("stem cells", `StemSpec`) at the engine's level, with a shell as
/// the runtime (bash): what the go hands over, and what happens to one that dies while it waits.
@Suite("Pre-started commands", .serialized)
struct StemTests {
    /// Says it has loaded, waits for the go, and prints what the go held and what it sees.
    static let script = """
        if [ -n "$PETREL_STEM_FD" ]; then
          printf r >&63
          cat <&63 | tr '\\000' '\\n' > /tmp/go
          exec 63<&-
          sed 's/^/GO /' /tmp/go
          cd "$(head -n 1 /tmp/go)"
        fi
        echo "CWD $(pwd)"
        echo "FDS $(ls /proc/self/fd | tr '\\n' ' ')"
        echo "CODE $(cat /var/task/marker)"
        grep -E '^(CapInh|CapPrm|CapEff|CapBnd|CapAmb|NoNewPrivs|Seccomp):' /proc/1/status | tr -d '\\t' | sed 's/^/INIT /'
        """

    static func spec(code: String, stdout: Int32, devnull: Int32) -> SandboxSpec {
        let command = ["/bin/bash", "-c", script] // dash names no descriptor above 9
        var spec = SandboxSpec(
            command: command, environment: ["PATH": "/usr/bin:/bin", "FUNCTION_VAR": "set by the function"], codeDirectory: code,
            stdin: devnull, stdout: stdout, stderr: stdout)
        spec.stem = StemSpec(command: command, environment: ["PATH": "/usr/bin:/bin", "STEM_VAR": "1"], memoryMB: nil, label: "sh")
        return spec
    }

    /// Spawns and runs to the end; returns whether it was pre-started and its output.
    static func run(_ engine: SandboxEngine, code: String) async throws -> (prestarted: Bool, output: String) {
        var fds: [Int32] = [-1, -1]
        guard petrel_pipe_cloexec(&fds) == 0 else { throw Fixtures.Failure(description: "pipe2 failed") }
        let devnull = open("/dev/null", O_RDONLY | O_CLOEXEC)
        let sandbox: Sandbox
        do {
            sandbox = try engine.spawn(spec(code: code, stdout: fds[1], devnull: devnull))
        } catch {
            close(fds[0])
            close(fds[1])
            close(devnull)
            throw error
        }
        close(devnull)
        close(fds[1])
        let reader: PipeReader
        if let out = sandbox.output {
            close(fds[0])
            _ = fcntl(out, F_SETFL, fcntl(out, F_GETFL) & ~O_NONBLOCK) // the reader blocks
            reader = PipeReader(fd: out)
        } else {
            reader = PipeReader(fd: fds[0])
        }
        let report = await sandbox.wait()
        #expect(report.exitCode == 0, "\(report)")
        Fixtures.expectReleased(sandbox.resources)
        return (sandbox.prestarted, reader.finish())
    }

    static func code() throws -> String {
        let dir = "/var/tmp/petrel-tests/stem-code"
        try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
        try "the function's code\n".write(toFile: dir + "/marker", atomically: true, encoding: .utf8)
        return dir
    }

    /// Host pids of this engine's commands that wait as pre-started ones.
    static func waiting(_ engine: SandboxEngine) -> [Int32] {
        ((try? FileManager.default.contentsOfDirectory(atPath: "/proc")) ?? []).compactMap(Int32.init).filter { pid in
            let cg = (try? String(contentsOfFile: "/proc/\(pid)/cgroup", encoding: .utf8)) ?? ""
            let env = (try? Data(contentsOf: URL(fileURLWithPath: "/proc/\(pid)/environ"))) ?? Data()
            return cg.contains(engine.instanceName + "-") && FileManager.default.fileExists(atPath: "/proc/\(pid)/fd/63")
                && String(decoding: env, as: UTF8.self).contains("PETREL_STEM_FD=63")
        }
    }

    /// An engine of its own whose pool has two stems of the tests' kind, after one fresh
    /// start (the first asks for a stem of its kind: none yet); the caller shuts it down.
    static func primed() async throws -> (engine: SandboxEngine, code: String, fresh: (prestarted: Bool, output: String)) {
        _ = try Fixtures.engine() // root check with a clear reason
        let engine = try Fixtures.newEngine(pool: 0)
        let code = try Self.code()
        let fresh = try await Self.run(engine, code: code)
        #expect(!fresh.prestarted)
        #expect(engine.replenishPools() == 2)
        return (engine, code, fresh)
    }

    @Test(
        "the go hands over the function's code, working directory and environment; the stem socket does not outlive it; init has dropped every privilege"
    )
    func goHandsOver() async throws {
        let (engine, code, fresh) = try await Self.primed()
        defer { engine.shutdown() }
        #expect(!fresh.output.contains("GO "), "\(fresh.output)")
        #expect(engine.stemGauges.map(\.ready) == [2])
        #expect(engine.stemGauges.first.map { $0.memoryBytes > 0 } == true)
        let pre = try await Self.run(engine, code: code)
        #expect(pre.prestarted)
        let lines = pre.output.split(separator: "\n").map(String.init)
        #expect(lines.contains("GO /var/task"), "\(pre.output)") // the working directory comes first
        #expect(lines.contains("GO FUNCTION_VAR=set by the function"), "\(pre.output)")
        #expect(!lines.contains("GO STEM_VAR=1"), "\(pre.output)")
        #expect(lines.contains("CWD /var/task"), "\(pre.output)")
        #expect(lines.contains("CODE the function's code"), "\(pre.output)")
        #expect(fresh.output.contains("CODE the function's code"), "\(fresh.output)")
        let fds = lines.first { $0.hasPrefix("FDS ") } ?? ""
        #expect(!fds.contains("63"), "the stem socket is still open: \(fds)")
        // Init kept its privileges while the stem waited; by the go they are gone.
        for line in ["CapInh", "CapPrm", "CapEff", "CapBnd", "CapAmb"].map({ "INIT \($0):0000000000000000" }) + [
            "INIT NoNewPrivs:1", "INIT Seccomp:2",
        ] {
            #expect(lines.contains(line), "\(line) missing: \(pre.output)")
        }
        #expect(engine.stemGauges.map(\.ready) == [1])
        engine.shutdown()
        #expect(EngineTests.cgroups(of: engine).isEmpty, "a pooled stem's cgroup is left")
        #expect(Self.waiting(engine).isEmpty)
    }

    @Test("a pre-started command that dies while it waits is never handed out")
    func deadStem() async throws {
        let (engine, code, _) = try await Self.primed()
        defer { engine.shutdown() }
        let victims = Self.waiting(engine)
        #expect(!victims.isEmpty) // each shell and the children of its pipeline
        victims.forEach { kill($0, SIGKILL) }
        for _ in 0..<200 where !Self.waiting(engine).isEmpty { try await Task.sleep(for: .milliseconds(10)) }
        try await Task.sleep(for: .milliseconds(50)) // their inits report the end
        let after = try await Self.run(engine, code: code)
        #expect(!after.prestarted)
        #expect(after.output.contains("CODE the function's code"), "\(after.output)")
        #expect(engine.stemGauges.map(\.ready) == [0])
        #expect(engine.replenishPools() == 2)
        engine.shutdown()
        #expect(EngineTests.cgroups(of: engine).isEmpty)
    }
}
