import Foundation
import Logging

/// The rootfs skeleton as instances see it: a copy in the run directory with the
/// runtimes' Python modules compiled. An instance's /var/runtime is read-only and
/// runs with PYTHONDONTWRITEBYTECODE, so without the bytecode made here every
/// cold start would compile the runtime's source again (`Scripts/bench invoke`
/// prints the module's start both ways, under its runtime-start row).
public enum RuntimeFiles {
    /// The interpreter the Python runtime runs (bound from the host; InstanceLauncher starts
    /// it): bytecode is read only by the interpreter version that wrote it.
    static let python = "/usr/bin/python3"

    /// Copies `skeleton` to `runDirectory/rootfs` (made afresh) and compiles its
    /// Python modules there. Returns the copy, or `skeleton` itself (logged) when
    /// either step fails: instances then start as before, only slower.
    public static func stage(skeleton: String, runDirectory: String, logger: Logger) -> String {
        let fm = FileManager.default
        let staged = runDirectory + "/rootfs"
        do {
            if fm.fileExists(atPath: staged) { try fm.removeItem(atPath: staged) }
            try fm.copyItem(atPath: skeleton, toPath: staged)
            var modules: [String] = []
            if let walk = fm.enumerator(atPath: staged) {
                for case let path as String in walk {
                    let name = (path as NSString).lastPathComponent
                    if name == "__pycache__" {
                        // Bytecode that came with the skeleton (a checkout where the bootstrap ran on the host).
                        try fm.removeItem(atPath: staged + "/" + path)
                        walk.skipDescendants()
                    } else if name.hasSuffix(".py") && name != "bootstrap.py" {
                        modules.append(staged + "/" + path)
                    }
                }
            }
            try compile(modules)
            return staged
        } catch {
            try? fm.removeItem(atPath: staged)
            logger.warning("the runtimes' Python modules are not precompiled; every Python cold start compiles them",
                           metadata: ["skeleton": "\(skeleton)", "error": "\(error)"])
            return skeleton
        }
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
        p.arguments = ["-S", "-c", "import os, py_compile, sys\nos.umask(0o022)\nfor f in sys.argv[1:]:\n    py_compile.compile(f, doraise=True)"] + modules
        let errors = Pipe()
        p.standardError = errors
        p.standardOutput = FileHandle.nullDevice
        try p.run()
        let message = errors.fileHandleForReading.readDataToEndOfFile()
        p.waitUntilExit()
        guard p.terminationStatus == 0 else {
            throw CompileFailed(description: "\(python) py_compile exited with \(p.terminationStatus): \(String(decoding: message, as: UTF8.self))")
        }
    }
}
