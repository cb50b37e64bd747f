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
        built(env: "PETREL_PYTHON_SDK", checkout: ".build/python-sdk", package: "python-sdk", holding: "boto3/__init__.py")
    }

    /// The java17 runtime (its jar and archive): $PETREL_JAVA_RUNTIME, else the checkout's
    /// `.build/java-runtime` (Scripts/setup builds it), else the package's `/usr/lib/petrel/java`.
    static func javaRuntime() -> String? {
        built(env: "PETREL_JAVA_RUNTIME", checkout: ".build/java-runtime", package: "java", holding: "petrel-java.jar")
    }

    /// What Scripts/setup builds into the checkout and the package installs in `/usr/lib/petrel`:
    /// `$env` (empty: none), else the checkout's, else the installed one, when it holds `holding`.
    static func built(env: String, checkout: String, package: String, holding: String) -> String? {
        if let v = ProcessInfo.processInfo.environment[env] { return v.isEmpty ? nil : v }
        let here = URL(fileURLWithPath: rootfs()).deletingLastPathComponent().appendingPathComponent(checkout).path
        let exe = URL(fileURLWithPath: CommandLine.executablePath).resolvingSymlinksInPath().deletingLastPathComponent()
        let installed = exe.deletingLastPathComponent().appendingPathComponent("lib/petrel/" + package).path
        return [here, installed].first { FileManager.default.fileExists(atPath: $0 + "/" + holding) }
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
