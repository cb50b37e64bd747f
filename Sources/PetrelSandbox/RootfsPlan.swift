import CPetrelLinux
import Glibc

/// One mount of a sandbox's root, in the order the child performs them.
struct MountEntry: Sendable, Equatable {
    var kind: petrel_mount_kind
    var source: String?
    var target: String
    var data: String?
}

/// The read-only root every sandbox sees: the policy's host paths, the
/// project's skeleton (`rootfs/etc/…`), /var/task, /opt, a private /proc, a
/// minimal /dev and the scratch disk at /tmp.
enum RootfsPlan {
    /// The part that depends only on the policy and the skeleton (computed once per policy).
    static func base(_ rootfs: SandboxPolicy.Rootfs, skeleton: String, readOnly: [String: String] = [:]) -> [MountEntry] {
        var out: [MountEntry] = []
        for p in rootfs.hostPaths {
            if let link = Sys.readLink(p) {
                out.append(MountEntry(kind: PETREL_MOUNT_SYMLINK, source: link, target: p))
            } else if Sys.exists(p) {
                out.append(MountEntry(kind: PETREL_MOUNT_BIND_RO, source: p, target: p))
            }
        }
        let etc = skeleton + "/etc"
        out.append(MountEntry(kind: PETREL_MOUNT_DIR, target: "/etc"))
        for f in Sys.listDirectory(etc) where !Sys.isDirectory(etc + "/" + f) {
            out.append(MountEntry(kind: PETREL_MOUNT_BIND_RO, source: etc + "/" + f, target: "/etc/" + f))
        }
        // The runtime bootstraps the project ships, where Lambda keeps its own.
        let runtimes = skeleton + "/runtimes"
        if Sys.isDirectory(runtimes) {
            out.append(MountEntry(kind: PETREL_MOUNT_BIND_RO, source: runtimes, target: "/var/runtime"))
        }
        // The daemon's own read-only directories (the runtimes' SDKs), by target; one already
        // there, at its own path below a host path of the policy, needs no mount of its own.
        for (target, source) in readOnly.sorted(by: { $0.key < $1.key }) where Sys.isDirectory(source) {
            if source == target, rootfs.hostPaths.contains(where: { target.hasPrefix($0.hasSuffix("/") ? $0 : $0 + "/") }) { continue }
            out.append(MountEntry(kind: PETREL_MOUNT_BIND_RO, source: source, target: target))
        }
        return out
    }

    /// The per-sandbox part. /var/task and /opt are empty mountpoints here: the
    /// code and the layers arrive as detached mounts when the command starts.
    static func sandbox(scratchDevice: String) -> [MountEntry] {
        var out: [MountEntry] = []
        out.append(MountEntry(kind: PETREL_MOUNT_DIR, target: "/var/task"))
        out.append(MountEntry(kind: PETREL_MOUNT_DIR, target: "/opt"))
        out.append(MountEntry(kind: PETREL_MOUNT_PROC, target: "/proc"))
        out.append(MountEntry(kind: PETREL_MOUNT_TMPFS, target: "/dev", data: "mode=0755,size=64k,nr_inodes=64"))
        for d in ["null", "zero", "full", "random", "urandom"] {
            out.append(MountEntry(kind: PETREL_MOUNT_BIND_RW, source: "/dev/" + d, target: "/dev/" + d))
        }
        out.append(MountEntry(kind: PETREL_MOUNT_DEVPTS, target: "/dev/pts"))
        out.append(MountEntry(kind: PETREL_MOUNT_SYMLINK, source: "pts/ptmx", target: "/dev/ptmx"))
        out.append(MountEntry(kind: PETREL_MOUNT_TMPFS, target: "/dev/shm", data: "mode=1777,size=64m"))
        out.append(MountEntry(kind: PETREL_MOUNT_SYMLINK, source: "/proc/self/fd", target: "/dev/fd"))
        for (i, n) in ["stdin", "stdout", "stderr"].enumerated() {
            out.append(MountEntry(kind: PETREL_MOUNT_SYMLINK, source: "/proc/self/fd/\(i)", target: "/dev/" + n))
        }
        out.append(MountEntry(kind: PETREL_MOUNT_EXT4, source: scratchDevice, target: "/tmp", data: "noinit_itable"))
        return out
    }
}

/// The C view of a mount list; keeps its strings alive.
final class CMountList {
    private var strings: [UnsafeMutablePointer<CChar>] = []
    private(set) var mounts: [petrel_mount] = []

    init(_ entries: [MountEntry]) {
        for e in entries {
            mounts.append(petrel_mount(kind: Int32(e.kind.rawValue), source: keep(e.source), target: keep(e.target), data: keep(e.data)))
        }
    }

    private func keep(_ s: String?) -> UnsafePointer<CChar>? {
        guard let s, let p = strdup(s) else { return nil }
        strings.append(p)
        return UnsafePointer(p)
    }

    deinit { strings.forEach { free($0) } }
}
