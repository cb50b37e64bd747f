import Foundation
import PetrelSandbox
import PetrelTOML
import Testing

@Suite("Policies")
struct PolicyTests {
    @Test("Config/policies/default.toml is exactly the built-in default")
    func defaultFile() throws {
        let text = try String(contentsOfFile: Fixtures.repo + "/Config/policies/default.toml", encoding: .utf8)
        #expect(try SandboxPolicy(toml: text, name: "default") == SandboxPolicy.default)
    }

    @Test("a policy may change what it names and keeps the rest")
    func partial() throws {
        let p = try SandboxPolicy(
            toml: """
                [network]
                mode = "host"
                deny_tcp_ports = [25, 587]   # submission too
                deny_cidrs = ["192.0.2.0/24"]
                [resources]
                pids_max = 64
                """, name: "strict")
        #expect(p.name == "strict")
        #expect(p.network.mode == .host && p.network.denyTCPPorts == [25, 587] && p.network.denyCIDRs == ["192.0.2.0/24"])
        #expect(p.resources.pidsMax == 64 && p.resources.openFiles == 1024)
        #expect(p.seccomp == SandboxPolicy.default.seccomp)
    }

    @Test(
        "mistakes are refused with a sentence that names the key",
        arguments: [
            ("[network]\nmode = \"bridge\"", "network.mode"),
            ("[seccomp]\nerrno = \"EWHAT\"", "seccomp.errno"),
            ("[seccomp]\ndenny = [\"ptrace\"]", "unknown key seccomp.denny"),
            ("[resources]\npids_max = \"many\"", "resources.pids_max must be an integer"),
            ("[resources]\npids_max = 1", "resources.pids_max"),
            ("[network]\ndeny_cidrs = [\"10.0.0.0/40\"]", "deny_cidrs"),
            ("[network]\ndeny_tcp_ports = [70000]", "deny_tcp_ports"),
            ("[rootfs]\nhost_paths = [\"/proc\"]", "managed by the sandbox"),
            ("[rootfs]\nhost_paths = [\"relative\"]", "absolute"),
            ("[network\nmode = 1", "line 1"),
            ("name = \"x\"\nname = \"y\"", "redefine existing"),
        ])
    func invalid(text: String, mentions: String) {
        do {
            _ = try SandboxPolicy(toml: text, name: "bad")
            Issue.record("accepted: \(text)")
        } catch {
            #expect("\(error)".contains(mentions), "\(error)")
        }
    }

    @Test("an unknown system call in seccomp.deny is refused when the policy is used")
    func unknownSyscall() async throws {
        var p = SandboxPolicy.default
        p.seccomp.deny.append("no_such_syscall")
        let engine = try Fixtures.engine()
        #expect { try engine.spawn(SandboxSpec(command: ["true"]), policy: p) } throws: { error in
            "\(error)".contains("no_such_syscall")
        }
    }

    @Test("a policy's own deny list is enforced")
    func policyDeny() async throws {
        var p = SandboxPolicy.default
        p.seccomp.deny.append("socket")
        let (_, output) = try await Fixtures.probe(["tcpsock"], policy: p)
        #expect(Fixtures.result(output, "tcp_socket") == "EPERM", "\(output)")
    }

    @Test("the TOML reader: strings, escapes, numbers, arrays over lines, comments, dotted tables")
    func toml() throws {
        let doc = try TOML.parse(
            """
            # comment
            a = "x\\ty\\u00e9"   # trailing
            b = 'C:\\raw'
            c = 1_024
            d = [ "p",
                  "q", # inside
                ]
            [t.u]
            e = true
            f = 0.5
            """)
        #expect(doc["a"] == .string("x\tyé"))
        #expect(doc["b"] == .string("C:\\raw"))
        #expect(doc["c"] == .integer(1024))
        #expect(doc["d"] == .array([.string("p"), .string("q")]))
        #expect(doc["t"] == .table(["u": .table(["e": .bool(true), "f": .double(0.5)])]))
        #expect(throws: TOMLError.self) { try TOML.parse("a = \"open") }
        #expect(throws: TOMLError.self) { try TOML.parse("a = 1 2") }
    }
}
