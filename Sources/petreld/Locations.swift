import Foundation
import PetrelSandbox

/// Where petreld finds its files when nothing says otherwise.
enum Locations {
    /// The rootfs skeleton: $PETREL_ROOTFS, else the `rootfs/` of the checkout the
    /// binary was built in, else the installed copy.
    static func rootfs() -> String {
        if let env = ProcessInfo.processInfo.environment["PETREL_ROOTFS"], !env.isEmpty { return env }
        var dir = URL(fileURLWithPath: CommandLine.executablePath).resolvingSymlinksInPath().deletingLastPathComponent()
        for _ in 0..<6 {
            let candidate = dir.appendingPathComponent("rootfs")
            if FileManager.default.fileExists(atPath: candidate.appendingPathComponent("etc/passwd").path) { return candidate.path }
            dir = dir.deletingLastPathComponent()
        }
        return "/usr/share/petrel/rootfs"
    }

    /// `Config/petreld.toml` of the checkout the binary was built in, else the package's
    /// `/etc/petrel/petreld.toml`, when there is one.
    static func defaultConfig() -> String? {
        let checkout = URL(fileURLWithPath: rootfs()).deletingLastPathComponent().appendingPathComponent("Config/petreld.toml").path
        return [checkout, "/etc/petrel/petreld.toml"].first { FileManager.default.fileExists(atPath: $0) }
    }

    static func policy(_ path: String?) throws -> SandboxPolicy {
        guard let path else { return .default }
        guard let data = FileManager.default.contents(atPath: path), let text = String(data: data, encoding: .utf8) else {
            throw SandboxError(.invalidPolicy, "cannot read the policy file \(path)")
        }
        let name = URL(fileURLWithPath: path).deletingPathExtension().lastPathComponent
        return try SandboxPolicy(toml: text, name: name)
    }
}

extension CommandLine {
    static var executablePath: String {
        (try? FileManager.default.destinationOfSymbolicLink(atPath: "/proc/self/exe")) ?? arguments[0]
    }
}
