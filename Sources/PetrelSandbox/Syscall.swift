import CPetrelLinux
import Glibc

/// The one place that calls the kernel from Swift: errno is read right after
/// the call, EINTR is retried, and errors carry the call and the path.
enum Sys {
    static func error(_ call: String, _ path: String?, _ e: Int32) -> SandboxError {
        let what = path.map { "\(call) \($0)" } ?? call
        return SandboxError(.system, "\(what): \(String(cString: strerror(e)))", errno: e)
    }

    @discardableResult
    static func call<T: BinaryInteger>(_ name: String, _ path: String? = nil, _ body: () -> T) throws -> T {
        while true {
            let r = body()
            if r >= 0 { return r }
            let e = Glibc.errno
            if e == EINTR { continue }
            throw error(name, path, e)
        }
    }

    static func open(_ path: String, _ flags: Int32, _ mode: mode_t = 0) throws -> Int32 {
        try call("open", path) { Glibc.open(path, flags | O_CLOEXEC, mode) }
    }

    static func close(_ fd: Int32) { if fd >= 0 { _ = Glibc.close(fd) } }

    /// Writes a whole small file (cgroup knobs): one write call, as the kernel wants.
    static func write(_ path: String, _ value: String) throws {
        let fd = try open(path, O_WRONLY)
        defer { close(fd) }
        var bytes = Array(value.utf8)
        let n = bytes.count
        try call("write", path) { bytes.withUnsafeMutableBytes { Glibc.write(fd, $0.baseAddress, n) } }
    }

    static func read(_ path: String, limit: Int = 1 << 20) throws -> String {
        let fd = try open(path, O_RDONLY)
        defer { close(fd) }
        var out: [UInt8] = []
        var buf = [UInt8](repeating: 0, count: 8192)
        while out.count < limit {
            let n = try call("read", path) { buf.withUnsafeMutableBytes { Glibc.read(fd, $0.baseAddress, 8192) } }
            if n == 0 { break }
            out.append(contentsOf: buf[0..<n])
        }
        return String(decoding: out, as: UTF8.self)
    }

    static func exists(_ path: String) -> Bool { access(path, F_OK) == 0 }

    static func isDirectory(_ path: String) -> Bool {
        var st = stat()
        return stat(path, &st) == 0 && (st.st_mode & S_IFMT) == S_IFDIR
    }

    /// The target of a symbolic link, or nil when `path` is not one.
    static func readLink(_ path: String) -> String? {
        var st = stat()
        guard lstat(path, &st) == 0, (st.st_mode & S_IFMT) == S_IFLNK else { return nil }
        var buf = [CChar](repeating: 0, count: 4096)
        let n = readlink(path, &buf, 4095)
        guard n > 0 else { return nil }
        return String(decoding: buf[0..<n].map { UInt8(bitPattern: $0) }, as: UTF8.self)
    }

    static func mkdir(_ path: String, _ mode: mode_t = 0o755) throws {
        while true {
            if Glibc.mkdir(path, mode) == 0 { return }
            let e = Glibc.errno
            if e == EINTR { continue }
            if e == EEXIST { return }
            throw error("mkdir", path, e)
        }
    }

    /// mkdir that fails when the directory exists (a name that must be ours alone).
    static func mkdirNew(_ path: String, _ mode: mode_t = 0o755) throws {
        try call("mkdir", path) { Glibc.mkdir(path, mode) }
    }

    static func mkdirs(_ path: String, _ mode: mode_t = 0o755) throws {
        var prefix = ""
        for part in path.split(separator: "/") {
            prefix += "/" + part
            if !isDirectory(prefix) { try mkdir(prefix, mode) }
        }
    }

    static func rmdir(_ path: String) throws {
        try call("rmdir", path) { Glibc.rmdir(path) }
    }

    static func unlink(_ path: String) throws {
        try call("unlink", path) { Glibc.unlink(path) }
    }

    static func listDirectory(_ path: String) -> [String] {
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

    static func inode(ofFD fd: Int32) -> UInt64? {
        var st = stat()
        return fstat(fd, &st) == 0 ? UInt64(st.st_ino) : nil
    }

    static func monotonicNanoseconds() -> UInt64 {
        var ts = timespec()
        clock_gettime(CLOCK_MONOTONIC, &ts)
        return UInt64(ts.tv_sec) * 1_000_000_000 + UInt64(ts.tv_nsec)
    }

    static func sleep(milliseconds: Int) {
        var want = timespec(tv_sec: milliseconds / 1000, tv_nsec: (milliseconds % 1000) * 1_000_000)
        var left = timespec()
        while nanosleep(&want, &left) < 0 && Glibc.errno == EINTR { want = left }
    }

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

extension String {
    /// A NUL-terminated C buffer as text.
    init(cBuffer buf: [CChar]) {
        let bytes = buf.prefix { $0 != 0 }.map { UInt8(bitPattern: $0) }
        self = String(decoding: bytes, as: UTF8.self)
    }
}

/// NULL-terminated C string arrays that live as long as the value.
final class CStringArray {
    private var storage: [UnsafeMutablePointer<CChar>?]

    init(_ strings: [String]) {
        storage = strings.map { strdup($0) }
        storage.append(nil)
    }

    deinit { for p in storage { free(p) } }

    func withPointers<R>(_ body: (UnsafePointer<UnsafePointer<CChar>?>) throws -> R) rethrows -> R {
        try storage.withUnsafeBufferPointer { buf in
            try buf.baseAddress!.withMemoryRebound(to: UnsafePointer<CChar>?.self, capacity: buf.count) { try body($0) }
        }
    }

    /// The pointer to element i (kept alive by self).
    func pointer(_ i: Int) -> UnsafePointer<CChar>? { UnsafePointer(storage[i]) }
}
