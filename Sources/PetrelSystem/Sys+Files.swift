import Glibc

extension Sys {
    /// Replaces `path` with `bytes` atomically: written to a new file beside it
    /// (a new inode), flushed, then renamed over it. Readers see the old file or the
    /// new one, never a part; any failure throws and leaves `path` as it was.
    public static func atomicWrite(_ path: String, _ bytes: [UInt8], mode: mode_t = 0o600) throws(SystemError) {
        let tmp = path + ".\(getpid()).\(UInt32.random(in: 0...UInt32.max)).tmp"
        let fd = try open(tmp, O_WRONLY | O_CREAT | O_EXCL, mode)
        do throws(SystemError) {
            let written = bytes.withUnsafeBytes { b in Result { () throws(SystemError) in try writeAll(fd, b, path: tmp) } }
            try written.get()
            try fsync(fd, path: tmp)
            close(fd)
            try rename(tmp, path)
        } catch {
            close(fd)
            _ = Glibc.unlink(tmp)
            throw error
        }
        // The rename itself reaches the disk with its directory.
        try fsyncDirectory(parentDirectory(path))
    }

    static func parentDirectory(_ path: String) -> String {
        guard let slash = path.lastIndex(of: "/") else { return "." }
        let p = String(path[..<slash])
        return p.isEmpty ? "/" : p
    }
}

/// An exclusive advisory lock (flock) on a file, held while the value lives or
/// until the process ends: what makes a directory one process's alone.
public final class FileLock: Sendable {
    public let path: String
    let fd: Int32

    /// Takes the lock without waiting. Throws `SystemError` with EWOULDBLOCK when
    /// another process holds it.
    public init(path: String) throws(SystemError) {
        let fd = try Sys.open(path, O_RDWR | O_CREAT, 0o600)
        do {
            try Sys.call("flock", path) { flock(fd, LOCK_EX | LOCK_NB) }
        } catch {
            Sys.close(fd)
            throw error
        }
        self.path = path
        self.fd = fd
        // Who holds it, for the operator who finds the file (advisory only).
        let pid = Array("\(getpid())\n".utf8)
        _ = ftruncate(fd, 0)
        _ = pid.withUnsafeBytes { pwrite(fd, $0.baseAddress, $0.count, 0) }
    }

    /// The pid written by the process holding the lock, when readable.
    public static func holder(of path: String) -> Int32? {
        (try? Sys.read(path, limit: 64)).flatMap { Int32($0.split(separator: "\n").first ?? "") }
    }

    deinit { Sys.close(fd) }
}

extension String {
    /// A NUL-terminated C buffer as text.
    public init(cBuffer buf: [CChar]) {
        let bytes = buf.prefix { $0 != 0 }.map { UInt8(bitPattern: $0) }
        self = String(decoding: bytes, as: UTF8.self)
    }
}

/// NULL-terminated C string arrays that live as long as the value.
public final class CStringArray {
    private var storage: [UnsafeMutablePointer<CChar>?]

    public init(_ strings: [String]) {
        storage = strings.map { strdup($0) }
        storage.append(nil)
    }

    deinit { for p in storage { free(p) } }

    public func withPointers<R>(_ body: (UnsafePointer<UnsafePointer<CChar>?>) throws -> R) rethrows -> R {
        try storage.withUnsafeBufferPointer { buf in
            try buf.baseAddress!.withMemoryRebound(to: UnsafePointer<CChar>?.self, capacity: buf.count) { try body($0) }
        }
    }

    /// The pointer to element i (kept alive by self).
    public func pointer(_ i: Int) -> UnsafePointer<CChar>? { UnsafePointer(storage[i]) }
}
