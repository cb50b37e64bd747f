import CPetrelLinux
import Glibc
@_exported import PetrelSystem

extension Sys {
    /// Runs a host program (absolute path) and waits; throws unless it exits 0.
    static func run(_ argv: [String], stdin: String? = nil, inNetworkNamespace nsfd: Int32 = -1) throws {
        var err = [CChar](repeating: 0, count: 512)
        let status = CStringArray(argv).withPointers { args in
            if let stdin {
                return petrel_run_in_netns(nsfd, args, stdin, &err, 512)
            }
            return petrel_run_in_netns(nsfd, args, nil, &err, 512)
        }
        if status < 0 {
            throw SandboxError(.system, String(cBuffer: err), errno: Glibc.errno)
        }
        if status != 0 {
            throw SandboxError(.system, "\(argv.joined(separator: " ")) failed (wait status \(status))")
        }
    }
}
