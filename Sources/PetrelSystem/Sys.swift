import Glibc

/// The one place that calls the kernel from Swift, for every target: errno is
/// read right after the call, EINTR is retried, and errors (`SystemError`) name
/// the call and the path.
public enum Sys {
    /// Runs `body` until it does not fail with EINTR; a negative result throws.
    @discardableResult
    public static func call<T: BinaryInteger>(_ name: String, _ path: String? = nil, _ body: () -> T) throws(SystemError) -> T {
        while true {
            let r = body()
            if r >= 0 { return r }
            let e = Glibc.errno
            if e == EINTR { continue }
            throw SystemError(name, path, errno: e)
        }
    }

    public static func open(_ path: String, _ flags: Int32, _ mode: mode_t = 0) throws(SystemError) -> Int32 {
        try call("open", path) { Glibc.open(path, flags | O_CLOEXEC, mode) }
    }

    /// `name` relative to the open directory `dir`.
    public static func openAt(_ dir: Int32, _ name: String, _ flags: Int32, _ mode: mode_t = 0, describedAs path: String? = nil)
        throws(SystemError) -> Int32
    {
        try call("openat", path ?? name) { Glibc.openat(dir, name, flags | O_CLOEXEC, mode) }
    }

    public static func close(_ fd: Int32) { if fd >= 0 { _ = Glibc.close(fd) } }

    /// Writes all of `bytes` to `fd` (short writes continued).
    public static func writeAll(_ fd: Int32, _ bytes: UnsafeRawBufferPointer, path: String? = nil) throws(SystemError) {
        var done = 0
        while done < bytes.count {
            let n = try call("write", path) { Glibc.write(fd, bytes.baseAddress! + done, bytes.count - done) }
            done += n
        }
    }

    /// Writes a whole small file (cgroup knobs): one write call, as the kernel wants.
    public static func write(_ path: String, _ value: String) throws(SystemError) {
        let fd = try open(path, O_WRONLY)
        defer { close(fd) }
        try writeKnob(fd, value, path: path)
    }

    /// Writes `name`, a small file in the open directory `dir`, in one write call.
    public static func write(at dir: Int32, _ name: String, _ value: String, describedAs path: String? = nil) throws(SystemError) {
        let fd = try openAt(dir, name, O_WRONLY, describedAs: path)
        defer { close(fd) }
        try writeKnob(fd, value, path: path ?? name)
    }

    private static func writeKnob(_ fd: Int32, _ value: String, path: String) throws(SystemError) {
        var bytes = Array(value.utf8)
        let n = bytes.count
        try call("write", path) { bytes.withUnsafeMutableBytes { Glibc.write(fd, $0.baseAddress, n) } }
    }

    /// Reads a whole file (at most `limit` bytes) as text.
    public static func read(_ path: String, limit: Int = 1 << 20) throws(SystemError) -> String {
        let fd = try open(path, O_RDONLY)
        defer { close(fd) }
        return try readAll(fd, path: path, limit: limit)
    }

    /// Reads `name` in the open directory `dir` as text.
    public static func read(at dir: Int32, _ name: String, describedAs path: String? = nil, limit: Int = 1 << 20) throws(SystemError)
        -> String
    {
        let fd = try openAt(dir, name, O_RDONLY, describedAs: path)
        defer { close(fd) }
        return try readAll(fd, path: path ?? name, limit: limit)
    }

    /// Reads `fd` to its end (at most `limit` bytes) as text; a non-blocking fd's end is
    /// what it holds now.
    public static func readAll(_ fd: Int32, path: String, limit: Int = 1 << 20) throws(SystemError) -> String {
        var out: [UInt8] = []
        var buf = [UInt8](repeating: 0, count: 8192)
        while out.count < limit {
            let n = buf.withUnsafeMutableBytes { Glibc.read(fd, $0.baseAddress, 8192) }
            if n < 0 {
                let e = Glibc.errno
                if e == EINTR { continue }
                if e == EAGAIN { break }
                throw SystemError("read", path, errno: e)
            }
            if n == 0 { break }
            out.append(contentsOf: buf[0..<n])
        }
        return String(decoding: out, as: UTF8.self)
    }

    public static func exists(_ path: String) -> Bool { access(path, F_OK) == 0 }

    /// The size of the filesystem that holds `path`, and what an unprivileged writer may still use of it, in bytes.
    public static func filesystemSpace(_ path: String) throws(SystemError) -> (size: Int64, available: Int64) {
        var fs = statvfs()
        _ = try call("statvfs", path) { statvfs(path, &fs) }
        return (Int64(fs.f_blocks) * Int64(fs.f_frsize), Int64(fs.f_bavail) * Int64(fs.f_frsize))
    }

    public static func exists(at dir: Int32, _ name: String) -> Bool { faccessat(dir, name, F_OK, 0) == 0 }

    public static func isDirectory(_ path: String) -> Bool {
        var st = stat()
        return stat(path, &st) == 0 && (st.st_mode & S_IFMT) == S_IFDIR
    }

    /// The target of a symbolic link, or nil when `path` is not one.
    public static func readLink(_ path: String) -> String? {
        var st = stat()
        guard lstat(path, &st) == 0, (st.st_mode & S_IFMT) == S_IFLNK else { return nil }
        var buf = [CChar](repeating: 0, count: 4096)
        let n = readlink(path, &buf, 4095)
        guard n > 0 else { return nil }
        return String(decoding: buf[0..<n].map { UInt8(bitPattern: $0) }, as: UTF8.self)
    }

    /// mkdir that is content when the directory exists.
    public static func mkdir(_ path: String, _ mode: mode_t = 0o755) throws(SystemError) {
        while true {
            if Glibc.mkdir(path, mode) == 0 { return }
            let e = Glibc.errno
            if e == EINTR { continue }
            if e == EEXIST { return }
            throw SystemError("mkdir", path, errno: e)
        }
    }

    /// mkdir that fails when the directory exists (a name that must be ours alone).
    public static func mkdirNew(_ path: String, _ mode: mode_t = 0o755) throws(SystemError) {
        try call("mkdir", path) { Glibc.mkdir(path, mode) }
    }

    /// Makes `path` and its missing parents.
    public static func mkdirs(_ path: String, _ mode: mode_t = 0o755) throws(SystemError) {
        var prefix = ""
        for part in path.split(separator: "/") {
            prefix += (prefix.isEmpty && !path.hasPrefix("/") ? "" : "/") + part
            if !isDirectory(prefix) { try mkdir(prefix, mode) }
        }
    }

    public static func rmdir(_ path: String) throws(SystemError) {
        try call("rmdir", path) { Glibc.rmdir(path) }
    }

    public static func unlink(_ path: String) throws(SystemError) {
        try call("unlink", path) { Glibc.unlink(path) }
    }

    public static func rename(_ from: String, _ to: String) throws(SystemError) {
        try call("rename", from + " -> " + to) { Glibc.rename(from, to) }
    }

    public static func fsync(_ fd: Int32, path: String? = nil) throws(SystemError) {
        try call("fsync", path) { Glibc.fsync(fd) }
    }

    /// The names in a directory, sorted, without `.` and `..`; empty when it cannot be read.
    public static func listDirectory(_ path: String) -> [String] {
        guard let d = opendir(path) else { return [] }
        defer { closedir(d) }
        var out: [String] = []
        while let e = readdir(d) {
            let name = withUnsafeBytes(of: e.pointee.d_name) { raw in
                String(cString: raw.bindMemory(to: CChar.self).baseAddress!)
            }
            if name != "." && name != ".." { out.append(name) }
        }
        return out.sorted()
    }

    public static func inode(ofFD fd: Int32) -> UInt64? {
        var st = stat()
        return fstat(fd, &st) == 0 ? UInt64(st.st_ino) : nil
    }

    public static func monotonicNanoseconds() -> UInt64 {
        var ts = timespec()
        clock_gettime(CLOCK_MONOTONIC, &ts)
        return UInt64(ts.tv_sec) * 1_000_000_000 + UInt64(ts.tv_nsec)
    }

    public static func sleep(milliseconds: Int) {
        var want = timespec(tv_sec: milliseconds / 1000, tv_nsec: (milliseconds % 1000) * 1_000_000)
        var left = timespec()
        while nanosleep(&want, &left) < 0 && Glibc.errno == EINTR { want = left }
    }

    /// Reads what is there now into `buffer`: the count, 0 at the end, nil when a
    /// non-blocking descriptor has nothing (EAGAIN).
    public static func readSome(_ fd: Int32, into buffer: UnsafeMutableRawBufferPointer, path: String? = nil) throws(SystemError) -> Int? {
        while true {
            let n = Glibc.read(fd, buffer.baseAddress, buffer.count)
            if n >= 0 { return n }
            let e = Glibc.errno
            if e == EINTR { continue }
            if e == EAGAIN || e == EWOULDBLOCK { return nil }
            throw SystemError("read", path, errno: e)
        }
    }

    /// A pipe, both ends close-on-exec; the read end non-blocking when asked.
    public static func pipe(nonBlockingRead: Bool = false) throws(SystemError) -> (read: Int32, write: Int32) {
        var fds: [Int32] = [-1, -1]
        try call("pipe") { Glibc.pipe(&fds) }
        do {
            for fd in fds { try call("fcntl", "F_SETFD") { fcntl(fd, F_SETFD, FD_CLOEXEC) } }
            if nonBlockingRead {
                let flags = try call("fcntl", "F_GETFL") { fcntl(fds[0], F_GETFL) }
                try call("fcntl", "F_SETFL") { fcntl(fds[0], F_SETFL, flags | O_NONBLOCK) }
            }
        } catch {
            fds.forEach(close)
            throw error
        }
        return (fds[0], fds[1])
    }

    /// Flushes a directory's entries (a rename or a new file in it) to the disk.
    public static func fsyncDirectory(_ path: String) throws(SystemError) {
        let fd = try open(path, O_RDONLY | O_DIRECTORY)
        defer { close(fd) }
        try fsync(fd, path: path)
    }

    /// The file's status, or nil when it is not there (any other failure throws).
    public static func status(_ path: String) throws(SystemError) -> Glibc.stat? {
        var st = Glibc.stat()
        while true {
            if fstatat(AT_FDCWD, path, &st, 0) == 0 { return st }
            let e = Glibc.errno
            if e == EINTR { continue }
            if e == ENOENT { return nil }
            throw SystemError("stat", path, errno: e)
        }
    }
}
