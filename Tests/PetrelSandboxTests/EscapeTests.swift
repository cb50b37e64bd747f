import PetrelSandbox
import Testing

/// Attempts to get out of a sandbox, each of which must fail in the expected way.
/// Every test ends with the leak check in `Fixtures.probe`.
@Suite("Escape attempts", .serialized)
struct EscapeTests {
    @Test(
        "blocked system calls fail with the errno the policy names",
        arguments: [
            (["ptrace"], "ptrace", "EPERM"),
            (["vmread"], "process_vm_readv", "EPERM"),
            (["iouring"], "io_uring_setup", "EPERM"),
            (["rawsock"], "raw_socket", "EPERM"),
            (["packetsock"], "packet_socket", "EAFNOSUPPORT"),
            (["mount"], "mount", "EPERM"),
            (["unshare"], "unshare", "EPERM"),
            (["clone-userns"], "clone_newuser", "EPERM"),
            (["setns"], "setns", "EPERM"),
            (["keyctl"], "keyctl", "EPERM"),
            (["bpf"], "bpf", "EPERM"),
            // clone3 hides its flags from seccomp: it answers ENOSYS so libc falls back to clone.
            (["clone3"], "clone3", "ENOSYS"),
            // stdin is /dev/null: without the rule this would be ENOTTY.
            (["tiocsti"], "tiocsti", "EPERM"),
            (["netlink", "audit"], "netlink_audit", "EPERM"),
            (["netlink", "uevent"], "netlink_uevent", "EPERM"),
        ])
    func blocked(args: [String], what: String, expected: String) async throws {
        let (report, output) = try await Fixtures.probe(args)
        #expect(report.exitCode == 0, "the probe itself failed: \(output)")
        #expect(Fixtures.result(output, what) == expected, "\(what): \(output)")
    }

    @Test("what is allowed still works: TCP sockets and writing /tmp")
    func allowedControls() async throws {
        let (_, tcp) = try await Fixtures.probe(["tcpsock"])
        #expect(Fixtures.result(tcp, "tcp_socket") == "ok")
        let (_, tmp) = try await Fixtures.probe(["write", "/tmp"])
        #expect(Fixtures.result(tmp, "/tmp") == "ok")
        // The C library reads interface addresses through NETLINK_ROUTE; the policy allows it.
        let (_, route) = try await Fixtures.probe(["netlink", "route"])
        #expect(Fixtures.result(route, "netlink_route") == "ok", "\(route)")
    }

    @Test("the root, the code and the layers are read-only", arguments: ["/", "/var/task", "/opt", "/etc", "/usr"])
    func readOnly(path: String) async throws {
        let (_, output) = try await Fixtures.probe(["write", path])
        #expect(Fixtures.result(output, path) == "EROFS", "\(path): \(output)")
    }

    @Test("PID 1 is petrel-init, with no more privilege than the command: its uid, no capabilities, no_new_privs, seccomp, fds hidden")
    func initPrivileges() async throws {
        let (_, output) = try await Fixtures.probe(["init"])
        #expect(output.contains("Name:\tpetrel-init"), "\(output)")
        for cap in ["CapInh", "CapPrm", "CapEff", "CapBnd", "CapAmb"] {
            #expect(output.contains("\(cap):\t0000000000000000"), "init's \(cap) is not empty: \(output)")
        }
        #expect(output.contains("NoNewPrivs:\t1"), "\(output)")
        #expect(output.contains("Seccomp:\t2"), "\(output)")
        let uid = output.split(separator: "\n").first { $0.hasPrefix("SELF_UID ") }.map { String($0.dropFirst(9)) }
        #expect(uid != nil && uid != "0")
        #expect(
            output.contains("Uid:\t\(uid ?? "?")\t\(uid ?? "?")\t\(uid ?? "?")\t\(uid ?? "?")"),
            "init does not run as the command's uid: \(output)")
        #expect(Fixtures.result(output, "init_fds") == "EACCES", "\(output)")
    }

    @Test("no capabilities, no_new_privs, seccomp on, an unprivileged uid, the per-sandbox rlimits")
    func privileges() async throws {
        let (_, output) = try await Fixtures.probe(["whoami"])
        for cap in ["CapInh", "CapPrm", "CapEff", "CapBnd", "CapAmb"] {
            #expect(output.contains("\(cap):\t0000000000000000"), "\(cap) is not empty: \(output)")
        }
        #expect(output.contains("NoNewPrivs:\t1"))
        #expect(output.contains("Seccomp:\t2"))
        #expect(output.contains("NOFILE 1024 NPROC 1024"))
        #expect(!output.contains("UID 0 "), "runs as root: \(output)")
        #expect(output.contains("HOST localhost"))
    }

    @Test("no host PIDs and no other sandbox's processes are visible")
    func pidNamespace() async throws {
        // Another sandbox running beside this one.
        let neighbour = try Fixtures.start(["sleep", "30"])
        defer { neighbour.sandbox.kill() }
        let (_, output) = try await Fixtures.probe(["pids"])
        #expect(Fixtures.result(output, "pids") == "2", "expected only init and the probe: \(output)")
        #expect(output.contains("PIDS 1 2"), "\(output)")
        neighbour.sandbox.kill()
        _ = await neighbour.finish()
        Fixtures.expectReleased(neighbour.sandbox.resources)
    }

    @Test("two sandboxes run as different uids")
    func distinctUIDs() async throws {
        let a = try Fixtures.start(["sleep", "5"])
        let b = try Fixtures.start(["sleep", "5"])
        #expect(a.sandbox.resources.uid != b.sandbox.resources.uid)
        a.sandbox.kill()
        b.sandbox.kill()
        _ = await a.finish()
        _ = await b.finish()
        Fixtures.expectReleased(a.sandbox.resources)
        Fixtures.expectReleased(b.sandbox.resources)
    }
}
