import Foundation
import Glibc

/// Reading /proc/self/mountinfo and /proc/self/cgroup.
enum CgroupHost {
    struct Mount {
        var root: String
        var mountPoint: String
        var fsType: String
        var superOptions: [String]
    }

    static func mounts() -> [Mount] {
        guard let text = try? Sys.read("/proc/self/mountinfo") else { return [] }
        var out: [Mount] = []
        for line in text.split(separator: "\n") {
            let halves = line.components(separatedBy: " - ")
            guard halves.count == 2 else { continue }
            let left = halves[0].split(separator: " ")
            let right = halves[1].split(separator: " ")
            guard left.count >= 5, right.count >= 3 else { continue }
            out.append(
                Mount(
                    root: unescape(String(left[3])), mountPoint: unescape(String(left[4])),
                    fsType: String(right[0]), superOptions: right[2].split(separator: ",").map(String.init)))
        }
        return out
    }

    static func unescape(_ s: String) -> String {
        s.replacingOccurrences(of: "\\040", with: " ")
    }

    static func detect() -> CgroupHostMode {
        let ms = mounts()
        if ms.contains(where: { $0.mountPoint == "/sys/fs/cgroup" && $0.fsType == "cgroup2" }) { return .unified }
        let hasV2 = ms.contains { $0.fsType == "cgroup2" }
        return hasV2 ? .hybrid : .legacy
    }

    /// hierarchy id → (controllers, path) from /proc/self/cgroup.
    static func ownCgroups() -> [(controllers: [String], path: String)] {
        guard let text = try? Sys.read("/proc/self/cgroup") else { return [] }
        return text.split(separator: "\n").compactMap { line in
            let parts = line.split(separator: ":", maxSplits: 2, omittingEmptySubsequences: false)
            guard parts.count == 3 else { return nil }
            return (parts[1].split(separator: ",").map(String.init), String(parts[2]))
        }
    }

    static func join(_ mountPoint: String, _ mountRoot: String, _ path: String) -> String {
        var rel = path
        if mountRoot != "/", rel.hasPrefix(mountRoot) { rel = String(rel.dropFirst(mountRoot.count)) }
        if rel == "/" { rel = "" }
        return mountPoint + rel
    }

    static func hostCPUs() -> Int { max(1, Int(sysconf(Int32(_SC_NPROCESSORS_ONLN)))) }

    static func pids(in procsFile: String) -> [Int32] {
        guard let text = try? Sys.read(procsFile) else { return [] }
        return text.split(separator: "\n").compactMap { Int32($0) }
    }

    /// Removes a cgroup directory, retrying while the last processes finish leaving.
    static func removeDirectory(_ path: String) throws {
        var lastError: SystemError?
        for attempt in 0..<200 {
            do {
                try Sys.rmdir(path)
                return
            } catch {
                if error.errno == ENOENT { return }
                guard error.errno == EBUSY else { throw error }
                lastError = error
                Sys.sleep(milliseconds: attempt < 20 ? 1 : 10)
            }
        }
        throw lastError ?? SystemError("rmdir", path, errno: EBUSY)
    }

    /// Cgroups named sb-<pid>-… whose daemon is gone: kill what is left and remove them.
    static func sweepStale(base: String, kill: (String) -> Void) {
        for name in Sys.listDirectory(base) where name.hasPrefix("sb-") {
            let parts = name.split(separator: "-")
            guard parts.count >= 3, let pid = Int32(parts[1]) else { continue }
            if pid == getpid() || Glibc.kill(pid, 0) == 0 { continue }
            kill(base + "/" + name)
            try? removeDirectory(base + "/" + name)
        }
    }
}
