import Crypto
import Foundation
import Logging
import PetrelCore
import PetrelSystem

/// The rootfs skeleton as instances see it: a copy in the run directory with the
/// runtimes' Python modules compiled. An instance's /var/runtime is read-only and
/// runs with PYTHONDONTWRITEBYTECODE, so without the bytecode made here every
/// cold start would compile the runtime's source again (`Scripts/bench invoke`
/// prints the module's start both ways, under its runtime-start row).
///
/// A staged copy is never changed once made: it is named after what it holds
/// (`rootfs-<digest>`, the skeleton's files and the interpreter), built under a
/// temporary name and renamed into place, so a sandbox that binds it can never
/// see it half made or replaced.
public enum RuntimeFiles {
    /// The interpreter the Python runtime runs (bound from the host; InstanceLauncher starts
    /// it): bytecode is read only by the interpreter version that wrote it.
    static let python = "/usr/bin/python3"

    /// Returns the staged copy of `skeleton` in `runDirectory` (made when it is not
    /// there yet), or `skeleton` itself (logged) when the copy or the compile fails:
    /// instances then start as before, only slower. Other staged copies in
    /// `runDirectory` are removed: the caller owns the directory (it holds its lock).
    public static func stage(skeleton: String, runDirectory: String, logger: Logger) -> String {
        let fm = FileManager.default
        var building: String?
        do {
            let staged = runDirectory + "/rootfs-" + (try digest(of: skeleton))
            if !fm.fileExists(atPath: staged) {
                let tmp = runDirectory + "/.rootfs-\(getpid())-\(UInt32.random(in: 0...UInt32.max))"
                building = tmp
                try fm.copyItem(atPath: skeleton, toPath: tmp)
                try compile(modules(in: tmp))
                do { try Sys.rename(tmp, staged) } catch {
                    guard error.errno == ENOTEMPTY || error.errno == EEXIST else { throw error }
                    try? fm.removeItem(atPath: tmp) // made meanwhile by someone else: theirs is the same
                }
                building = nil
            }
            for name in Sys.listDirectory(runDirectory)
            where (name.hasPrefix("rootfs") || name.hasPrefix(".rootfs-")) && runDirectory + "/" + name != staged {
                try? fm.removeItem(atPath: runDirectory + "/" + name)
            }
            return staged
        } catch {
            if let building { try? fm.removeItem(atPath: building) }
            logger.warning(
                "the runtimes' Python modules are not precompiled; every Python cold start compiles them",
                metadata: ["skeleton": "\(skeleton)", "error": "\(error)"])
            return skeleton
        }
    }

    /// What the staged copy's name says it holds: every file of the skeleton (path, kind,
    /// mode, contents or link target) but bytecode, and the interpreter that compiles it.
    static func digest(of skeleton: String) throws -> String {
        let fm = FileManager.default
        guard Sys.isDirectory(skeleton) else { throw CompileFailed(description: "\(skeleton) is not a directory") }
        var h = SHA256()
        func add(_ s: String) { h.update(data: Array(s.utf8) + [0]) }
        var paths: [String] = []
        if let walk = fm.enumerator(atPath: skeleton) {
            for case let path as String in walk {
                if (path as NSString).lastPathComponent == "__pycache__" {
                    walk.skipDescendants()
                    continue
                }
                paths.append(path)
            }
        }
        for path in paths.sorted() {
            let full = skeleton + "/" + path
            var st = stat()
            guard lstat(full, &st) == 0 else { throw SystemError("lstat", full, errno: errno) }
            add(path)
            add(String(st.st_mode, radix: 8))
            switch st.st_mode & S_IFMT {
            case S_IFLNK: add(Sys.readLink(full) ?? "")
            case S_IFREG: h.update(data: try Data(contentsOf: URL(fileURLWithPath: full)))
            default: break
            }
        }
        var st = stat()
        if stat(python, &st) == 0 { add("\(python) \(st.st_ino) \(st.st_size) \(st.st_mtim.tv_sec).\(st.st_mtim.tv_nsec)") }
        return FastIDs.hex(bytes: h.finalize().prefix(12))
    }

    /// The Python modules of a copy (not `bootstrap.py`: a main script's bytecode is never
    /// read); bytecode that came with the skeleton is removed.
    static func modules(in dir: String) throws -> [String] {
        let fm = FileManager.default
        var modules: [String] = []
        if let walk = fm.enumerator(atPath: dir) {
            for case let path as String in walk {
                let name = (path as NSString).lastPathComponent
                if name == "__pycache__" {
                    // Bytecode that came with the skeleton (a checkout where the bootstrap ran on the host).
                    try fm.removeItem(atPath: dir + "/" + path)
                    walk.skipDescendants()
                } else if name.hasSuffix(".py") && name != "bootstrap.py" {
                    modules.append(dir + "/" + path)
                }
            }
        }
        return modules
    }

    struct CompileFailed: Error, CustomStringConvertible {
        var description: String
    }

    /// Writes each module's `__pycache__/NAME.cpython-XY.pyc`, checked against its
    /// source's size and modification time when imported, as Python's own caches are.
    static func compile(_ modules: [String]) throws {
        guard !modules.isEmpty else { return }
        guard FileManager.default.isExecutableFile(atPath: python) else { throw CompileFailed(description: "\(python) is not there") }
        let p = Process()
        p.executableURL = URL(fileURLWithPath: python)
        // umask 022 whatever the daemon's: the instances' unprivileged users read the bytecode.
        p.arguments =
            ["-S", "-c", "import os, py_compile, sys\nos.umask(0o022)\nfor f in sys.argv[1:]:\n    py_compile.compile(f, doraise=True)"]
            + modules
        let errors = Pipe()
        p.standardError = errors
        p.standardOutput = FileHandle.nullDevice
        try p.run()
        let message = errors.fileHandleForReading.readDataToEndOfFile()
        p.waitUntilExit()
        guard p.terminationStatus == 0 else {
            throw CompileFailed(
                description: "\(python) py_compile exited with \(p.terminationStatus): \(String(decoding: message, as: UTF8.self))")
        }
    }
}
