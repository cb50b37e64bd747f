import CPetrelLinux
import Glibc

/// A policy's seccomp filter, compiled to BPF once and installed as-is by every
/// sandbox. The program is kept in a sealed memfd that every sandbox's init reads
/// (petrel-init gets it at a fixed fd number), so preparing a sandbox copies nothing.
final class SeccompProgram: Sendable {
    /// Its length in instructions (struct sock_filter, 8 bytes each).
    let count: Int
    let fd: Int32

    init(_ seccomp: SandboxPolicy.Seccomp, errno deny: Int32) throws {
        var out: UnsafeMutableRawPointer?
        var count = 0
        var err = [CChar](repeating: 0, count: 512)
        let names = CStringArray(seccomp.deny)
        let r = names.withPointers { p in
            petrel_seccomp_compile(p, seccomp.deny.count, deny, seccomp.allowNetlinkRoute ? 1 : 0, &out, &count, &err, 512)
        }
        guard r == 0, let out else { throw SandboxError(.invalidPolicy, String(cBuffer: err)) }
        defer { free(out) }
        self.count = count
        fd = petrel_memfd_sealed("petrel-seccomp", out, count * 8, &err, 512)
        guard fd >= 0 else { throw SandboxError(.system, String(cBuffer: err), errno: errno) }
    }

    deinit { Sys.close(fd) }
}
