import Foundation
import Testing

/// `petreld sandbox run` end to end, as an operator runs it.
@Suite("petreld sandbox run", .serialized)
struct OperatorCommandTests {
    static var petreld: String {
        URL(fileURLWithPath: (try? FileManager.default.destinationOfSymbolicLink(atPath: "/proc/self/exe")) ?? "")
            .deletingLastPathComponent().appendingPathComponent("petreld").path
    }

    func run(_ args: [String], stdin: String = "") throws -> (status: Int32, stdout: String, stderr: String) {
        let p = Process()
        p.executableURL = URL(fileURLWithPath: Self.petreld)
        p.arguments = ["sandbox", "run", "--data-dir", "/var/tmp/petrel-tests/state", "--run-dir", "/var/tmp/petrel-tests/run"] + args
        let (i, o, e) = (Pipe(), Pipe(), Pipe())
        p.standardInput = i
        p.standardOutput = o
        p.standardError = e
        try p.run()
        i.fileHandleForWriting.write(Data(stdin.utf8))
        try i.fileHandleForWriting.close()
        let out = o.fileHandleForReading.readDataToEndOfFile()
        let err = e.fileHandleForReading.readDataToEndOfFile()
        p.waitUntilExit()
        return (p.terminationStatus, String(decoding: out, as: UTF8.self), String(decoding: err, as: UTF8.self))
    }

    func reportLine(_ stderr: String) throws -> [String: Any] {
        let last = try #require(stderr.split(separator: "\n").last, "no report line")
        let obj = try JSONSerialization.jsonObject(with: Data(last.utf8)) as? [String: Any]
        return try #require(obj, "not JSON: \(last)")
    }

    @Test("passes stdio through, exits with the command's status and prints the report as JSON")
    func passThrough() throws {
        _ = try Fixtures.engine() // root check with a clear reason
        let r = try run(["--memory", "256", "--", "/bin/sh", "-c", "tr a-z A-Z; echo oops >&2; exit 7"], stdin: "hello\n")
        #expect(r.status == 7)
        #expect(r.stdout == "HELLO\n")
        #expect(r.stderr.hasPrefix("oops\n"))
        let j = try reportLine(r.stderr)
        #expect(j["exitCode"] as? Int == 7)
        #expect(j["signal"] is NSNull)
        #expect(j["oomKilled"] as? Bool == false)
        #expect(j["timedOut"] as? Bool == false)
        #expect((j["durationMs"] as? Double ?? -1) > 0)
        #expect(j["maxMemoryMB"] is Double)
        // The key order is the one the issue gives.
        let keys = ["exitCode", "signal", "oomKilled", "timedOut", "durationMs"]
        let positions = keys.compactMap { r.stderr.range(of: "\"\($0)\"")?.lowerBound }
        #expect(positions == positions.sorted() && positions.count == keys.count)
    }

    @Test("killed by a signal: 128+signal; timed out: reported")
    func signalled() throws {
        let r = try run(["--timeout", "0.5", "--", "/bin/sleep", "30"])
        #expect(r.status == 137)
        let j = try reportLine(r.stderr)
        #expect(j["timedOut"] as? Bool == true)
        #expect(j["signal"] as? Int == 9)
    }

    @Test("--code, --network and a policy file are honoured")
    func options() throws {
        let code = try Fixtures.probeCode()
        let r = try run(["--code", code, "--network", "host", "--", "/var/task/sandbox-probe", "connect", "127.0.0.1", "9"])
        #expect(r.status == 0)
        #expect(r.stdout.contains("RESULT connect ECONNREFUSED"), "\(r.stdout)")

        let policy = FileManager.default.temporaryDirectory.appendingPathComponent("petrel-policy-\(getpid()).toml").path
        defer { try? FileManager.default.removeItem(atPath: policy) }
        try "[seccomp]\ndeny = [\"socket\"]\n".write(toFile: policy, atomically: true, encoding: .utf8)
        let denied = try run(["--policy", policy, "--code", code, "--", "/var/task/sandbox-probe", "tcpsock"])
        #expect(denied.stdout.contains("RESULT tcp_socket EPERM"), "\(denied.stdout)")
    }

    @Test(
        "bad input is refused with a sentence and nothing runs",
        arguments: [
            (["--"], "no command"),
            (["--memory", "64", "--", "true"], "memory must be"),
            (["--ephemeral-storage", "100", "--", "true"], "ephemeral storage must be"),
            (["--network", "bridge", "--", "true"], "--network must be"),
            (["--timeout", "-1", "--", "true"], "--timeout"),
            (["--code", "/no/such/dir", "--", "true"], "does not exist"),
            (["--policy", "/no/such/policy.toml", "--", "true"], "cannot read the policy"),
        ])
    func badInput(args: [String], says: String) throws {
        let r = try run(args)
        #expect(r.status != 0)
        #expect(r.stderr.contains(says), "\(r.stderr)")
        #expect(!r.stderr.contains("Fatal error"), "\(r.stderr)")
    }
}
