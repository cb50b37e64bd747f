import CPetrelLinux
import Glibc

/// A policy's seccomp filter, compiled to BPF once and installed as-is by every sandbox.
final class SeccompProgram: Sendable {
    let instructions: [UInt64]   // struct sock_filter is 8 bytes

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
        instructions = Array(UnsafeBufferPointer(start: out.assumingMemoryBound(to: UInt64.self), count: count))
    }
}
