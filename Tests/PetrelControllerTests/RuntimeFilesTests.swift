import Foundation
import Logging
import Testing

@testable import PetrelRuntime

/// The skeleton instances see: copied into the run directory with the runtime's
/// Python modules compiled, or the skeleton itself when that cannot be done.
@Suite("Runtime files")
struct RuntimeFilesTests {
    /// A scratch directory with an empty run directory in it (`dir/run`) and room for a
    /// skeleton (`dir/skeleton`), removed afterwards.
    func scratch(_ body: (_ dir: String, _ skeleton: String, _ run: String) throws -> Void) throws {
        let dir = try makeScratchDirectory("runtime-files")
        defer { try? FileManager.default.removeItem(atPath: dir) }
        try FileManager.default.createDirectory(atPath: dir + "/run", withIntermediateDirectories: true)
        try body(dir, dir + "/skeleton", dir + "/run")
    }

    func write(_ text: String, _ path: String) throws {
        try FileManager.default.createDirectory(atPath: (path as NSString).deletingLastPathComponent, withIntermediateDirectories: true)
        try text.write(toFile: path, atomically: false, encoding: .utf8)
    }

    @Test("the copy holds bytecode for each module but not the entry script, and none brought from the skeleton")
    func staged() throws {
        try scratch { _, skeleton, run in
            try write("root:x:0:0::/:/sbin/nologin\n", skeleton + "/etc/passwd")
            try write("import mod\nmod.main()\n", skeleton + "/runtimes/python/bootstrap.py")
            try write("def main():\n    pass\n", skeleton + "/runtimes/python/mod.py")
            try write("stale", skeleton + "/runtimes/python/__pycache__/old.cpython-311.pyc")
            // Copies of other skeletons (and of the layout before copies were named after their
            // contents), and a half-made one, are removed: the daemon owns its run directory.
            try write("left over", run + "/rootfs/leftover")
            try write("left over", run + "/rootfs-0123456789abcdef01234567/leftover")
            try write("half made", run + "/.rootfs-1-2/leftover")

            // Under the tightest umask the bytecode is still readable by the instances' users. (The
            // umask is the process's, for the ~50 ms of this call; Scripts/test runs tests one at a time.)
            let mask = umask(0o077)
            let got = RuntimeFiles.stage(skeleton: skeleton, runDirectory: run, logger: Logger(label: "test"))
            umask(mask)
            #expect(got.hasPrefix(run + "/rootfs-") && got.count == run.count + "/rootfs-".count + 24, "\(got)")
            #expect(try FileManager.default.contentsOfDirectory(atPath: run) == [(got as NSString).lastPathComponent])
            let cache = got + "/runtimes/python/__pycache__"
            let names = try FileManager.default.contentsOfDirectory(atPath: cache)
            #expect(names.count == 1 && names[0].hasPrefix("mod.cpython-") && names[0].hasSuffix(".pyc"), "\(names)")
            for path in [cache, cache + "/" + names[0]] {
                let mode = try #require(FileManager.default.attributesOfItem(atPath: path)[.posixPermissions] as? Int)
                #expect(mode & 0o004 != 0, "\(path) is not readable by others: \(String(mode, radix: 8))")
            }
            #expect(FileManager.default.fileExists(atPath: got + "/etc/passwd"))
            // The skeleton itself is not touched.
            #expect(
                try FileManager.default.contentsOfDirectory(atPath: skeleton + "/runtimes/python/__pycache__") == ["old.cpython-311.pyc"])
        }
    }

    @Test("a staged copy is never changed: the same skeleton finds it as it is, a changed one gets a copy of its own")
    func immutable() throws {
        try scratch { _, skeleton, run in
            try write("root:x:0:0::/:/sbin/nologin\n", skeleton + "/etc/passwd")
            try write("def main():\n    pass\n", skeleton + "/runtimes/python/mod.py")
            let logger = Logger(label: "test")
            func inode(_ path: String) throws -> Int {
                try #require(FileManager.default.attributesOfItem(atPath: path)[.systemFileNumber] as? Int)
            }
            let first = RuntimeFiles.stage(skeleton: skeleton, runDirectory: run, logger: logger)
            let files = ["/etc/passwd", "/runtimes/python/mod.py"]
            let before = try files.map { try inode(first + $0) }
            // Another start with the same files: the same copy, not one file of it rewritten.
            #expect(RuntimeFiles.stage(skeleton: skeleton, runDirectory: run, logger: logger) == first)
            #expect(try files.map { try inode(first + $0) } == before)
            // A changed file (or mode) names another copy.
            try write("def main():\n    return 1\n", skeleton + "/runtimes/python/mod.py")
            let second = RuntimeFiles.stage(skeleton: skeleton, runDirectory: run, logger: logger)
            #expect(second != first && second.hasPrefix(run + "/rootfs-"))
            chmod(skeleton + "/etc/passwd", 0o600)
            #expect(RuntimeFiles.stage(skeleton: skeleton, runDirectory: run, logger: logger) != second)
        }
    }

    @Test("a module that does not compile leaves the instances on the skeleton itself")
    func fallsBack() throws {
        try scratch { dir, skeleton, run in
            try write("def broken(:\n", skeleton + "/runtimes/python/bad.py")
            #expect(RuntimeFiles.stage(skeleton: skeleton, runDirectory: run, logger: Logger(label: "test")) == skeleton)
            #expect(try FileManager.default.contentsOfDirectory(atPath: run) == [], "the half-made copy is removed")
            #expect(RuntimeFiles.stage(skeleton: dir + "/absent", runDirectory: run, logger: Logger(label: "test")) == dir + "/absent")
        }
    }
}
