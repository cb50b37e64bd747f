import CPetrelLinux
import Foundation
import Testing

@testable import PetrelSandbox

/// The read-only directories the daemon adds to every sandbox's root (the runtimes' own files).
@Suite("Rootfs plan")
struct RootfsPlanTests {
    @Test("a directory is bound at its target, unless it is already there below a host path of the policy")
    func readOnlyBinds() throws {
        let dir = try FileManager.default.url(
            for: .itemReplacementDirectory, in: .userDomainMask, appropriateFor: URL(fileURLWithPath: "/var/tmp"), create: true
        ).path
        defer { try? FileManager.default.removeItem(atPath: dir) }
        var rootfs = SandboxPolicy.default.rootfs
        rootfs.hostPaths = ["/usr", dir]
        // /usr/share is under the policy's /usr at its own path: nothing to mount. The same
        // directory at another target, or one below no host path, is mounted.
        let plan = RootfsPlan.base(
            rootfs, skeleton: Fixtures.repo + "/rootfs",
            readOnly: ["/usr/share": "/usr/share", "/var/lang/x": "/usr/share", "/srv-not-there": "/nonexistent-dir"])
        let asked: Set = ["/usr/share", "/var/lang/x", "/srv-not-there"]
        let binds = plan.filter { $0.kind == PETREL_MOUNT_BIND_RO && asked.contains($0.target) }
        #expect(binds.map(\.target) == ["/var/lang/x"], "\(binds)")
        #expect(binds.first?.source == "/usr/share")
    }
}
