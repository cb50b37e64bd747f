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

    /// boto3 and botocore for the Python runtime (bound at /var/lang/python-sdk):
    /// $PETREL_PYTHON_SDK, else the checkout's `.build/python-sdk` (Scripts/setup installs it),
    /// else the package's `/usr/lib/petrel/python-sdk`; nil when there is none.
    static func pythonSDK() -> String? {
        let checkout = URL(fileURLWithPath: rootfs()).deletingLastPathComponent().appendingPathComponent(".build/python-sdk").path
        return located(env: "PETREL_PYTHON_SDK", among: [checkout, packaged("python-sdk")], holding: "boto3/__init__.py")
    }

    /// `$env` when set (empty: none), else the first of `candidates` that holds `holding`.
    static func located(env: String, among candidates: [String], holding: String) -> String? {
        if let v = ProcessInfo.processInfo.environment[env] { return v.isEmpty ? nil : v }
        return candidates.first { FileManager.default.fileExists(atPath: $0 + "/" + holding) }
    }

    /// `lib/petrel/NAME` beside the directory of the running executable (the package's `/usr/lib/petrel/NAME`).
    static func packaged(_ name: String) -> String {
        let exe = URL(fileURLWithPath: CommandLine.executablePath).resolvingSymlinksInPath().deletingLastPathComponent()
        return exe.deletingLastPathComponent().appendingPathComponent("lib/petrel/" + name).path
    }

    /// The java17 runtime (its jar and archive): $PETREL_JAVA_RUNTIME, else the package's
    /// `/usr/lib/petrel/java`, else `/usr/local/lib/petrel/java` (Scripts/setup builds it there:
    /// its archive names its path, which must be the same in sandboxes, and they bind /usr).
    static func javaRuntime() -> String? {
        located(env: "PETREL_JAVA_RUNTIME", among: [packaged("java"), "/usr/local/lib/petrel/java"], holding: "petrel-java.jar")
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
