import CPetrelLinux
import Glibc

/// A sandbox's /tmp: a sparse ext4 image on a loop device. Its size is exactly
/// the function's ephemeral storage, and its pages are a disk's, not memory
/// the function is charged for. The image file is unlinked as soon as the loop
/// device holds it, so nothing stays on disk whatever happens to the daemon.
public final class ScratchDisk: Sendable {
    let loopFD: Int32
    public let device: String
    public let sizeMB: Int
    /// The (already unlinked) image behind the device.
    public let image: String
    init(loopFD: Int32, device: String, sizeMB: Int, image: String) {
        self.loopFD = loopFD
        self.device = device
        self.sizeMB = sizeMB
        self.image = image
    }

    /// Whether `device` is still attached to `image` (it may be reused for another image already).
    public static func isAttached(device: String, image: String) -> Bool {
        let name = device.split(separator: "/").last.map(String.init) ?? ""
        guard let backing = try? Sys.read("/sys/block/\(name)/loop/backing_file") else { return false }
        return backing.hasPrefix(image)
    }
}

/// Makes scratch disks and gives them back; made off the request path, as
/// part of a prepared sandbox.
final class ScratchDisks: Sendable {
    let directory: String

    init(directory: String) throws {
        self.directory = directory
        try Sys.mkdirs(directory, 0o700)
        // Images are named <pid>-<random>.img and unlinked as soon as they are attached;
        // one still here belongs to a daemon that died in between. Only those go:
        // another daemon sharing the directory may be making one right now.
        for f in Sys.listDirectory(directory) where f.hasSuffix(".img") {
            guard let pid = f.split(separator: "-").first.flatMap({ Int32($0) }), pid != getpid(), kill(pid, 0) != 0 else { continue }
            try? Sys.unlink(directory + "/" + f)
        }
    }

    func make(sizeMB: Int) throws -> ScratchDisk {
        let path = directory + "/\(getpid())-\(UInt64.random(in: 0...UInt64.max)).img"
        let fd = try Sys.open(path, O_CREAT | O_EXCL | O_WRONLY, 0o600)
        defer { try? Sys.unlink(path) }
        do {
            try Sys.call("ftruncate", path) { ftruncate(fd, off_t(sizeMB) << 20) }
            Sys.close(fd)
        } catch {
            Sys.close(fd)
            throw error
        }
        // No journal (the disk dies with the sandbox), no reserved blocks (all of it is the function's).
        try Sys.run(["/usr/sbin/mkfs.ext4", "-q", "-F", "-m", "0", "-O", "^has_journal",
                     "-E", "lazy_itable_init=1,nodiscard", "-L", "petrel-tmp", path])
        var dev = [CChar](repeating: 0, count: 64)
        var err = [CChar](repeating: 0, count: 512)
        let lfd = petrel_loop_attach(path, &dev, 64, &err, 512)
        guard lfd >= 0 else { throw SandboxError(.system, "loop device: \(String(cBuffer: err))", errno: errno) }
        return ScratchDisk(loopFD: lfd, device: String(cBuffer: dev), sizeMB: sizeMB, image: path)
    }

    /// Detaches the device. The kernel finishes a loop device's rundown
    /// asynchronously (a few ms later); nothing here waits for it.
    func release(_ disk: ScratchDisk) {
        _ = petrel_loop_detach(disk.loopFD)
    }
}
