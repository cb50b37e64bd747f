import CPetrelLinux
import Glibc
import Synchronization

/// A sandbox's /tmp: a sparse ext4 image on a loop device. Its size is exactly
/// the function's ephemeral storage, and its pages are a disk's, not memory
/// the function is charged for. What a function writes there is encrypted at
/// rest under a key that only the kernel holds (see `encrypt_scratch` in spawn.c). The image file is unlinked as soon as the loop
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
///
/// Detaching a loop device is slow (its rundown freezes the device's queue, a
/// millisecond or more), so up to `spareLimit` released disks are kept attached
/// and formatted again, with their old blocks discarded, for the next sandbox.
final class ScratchDisks: Sendable {
    let directory: String
    let spareLimit: Int
    /// Spare disks, and whether more may be kept (not after `drain`).
    private let spares = Mutex<(disks: [ScratchDisk], open: Bool)>(([], true))

    init(directory: String, spareLimit: Int) throws {
        self.directory = directory
        self.spareLimit = spareLimit
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
        while let spare = takeSpare(sizeMB: sizeMB) {
            if reformat(spare) { return spare }
            detach(spare)
        }
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
        try Self.format(path, discard: false) // a new sparse file has nothing to discard
        var dev = [CChar](repeating: 0, count: 64)
        var err = [CChar](repeating: 0, count: 512)
        let lfd = petrel_loop_attach(path, &dev, 64, &err, 512)
        guard lfd >= 0 else { throw SandboxError(.system, "loop device: \(String(cBuffer: err))", errno: errno) }
        return ScratchDisk(loopFD: lfd, device: String(cBuffer: dev), sizeMB: sizeMB, image: path)
    }

    /// No journal (the disk dies with the sandbox), no reserved blocks (all of it is the function's),
    /// fscrypt on (the sandbox's child encrypts /tmp under a key of its own; blocks of the page
    /// size, which fscrypt wants on older kernels).
    /// With `discard`, every block of the device is discarded first: the loop device punches
    /// them out of its image, so nothing a previous sandbox wrote survives, even on the raw device.
    static func format(_ target: String, discard: Bool) throws {
        try Sys.run([
            "/usr/sbin/mkfs.ext4", "-q", "-F", "-m", "0", "-b", "4096", "-O", "^has_journal,encrypt",
            "-E", "lazy_itable_init=1," + (discard ? "discard" : "nodiscard"), "-L", "petrel-tmp", target,
        ])
    }

    /// Keeps the disk for another sandbox when there is room, otherwise detaches it.
    /// Its sandbox must be gone (its mount namespace, and with it the mount, ended with its init).
    func release(_ disk: ScratchDisk) {
        let kept = spares.withLock { s -> Bool in
            guard s.open, s.disks.count < spareLimit else { return false }
            s.disks.append(disk)
            return true
        }
        if !kept { detach(disk) }
    }

    /// Detaches every spare disk (the engine is shutting down).
    func drain() {
        spares.withLock { s -> [ScratchDisk] in
            defer { s = ([], false) }
            return s.disks
        }.forEach(detach)
    }

    private func takeSpare(sizeMB: Int) -> ScratchDisk? {
        spares.withLock { s in s.disks.firstIndex { $0.sizeMB == sizeMB }.map { s.disks.remove(at: $0) } }
    }

    /// Formats a spare again, unless something still has it open exclusively (mounted somewhere).
    private func reformat(_ disk: ScratchDisk) -> Bool {
        let probe = open(disk.device, O_RDONLY | O_EXCL | O_CLOEXEC)
        guard probe >= 0 else { return false }
        close(probe)
        return (try? Self.format(disk.device, discard: true)) != nil
    }

    /// Detaches the device. The kernel finishes a loop device's rundown
    /// asynchronously (a few ms later); nothing here waits for it.
    private func detach(_ disk: ScratchDisk) {
        _ = petrel_loop_detach(disk.loopFD)
    }
}
