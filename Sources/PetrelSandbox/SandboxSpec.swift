/// A listening socket inside a sandbox's network namespace.
public enum ListenAddress: Hashable, Sendable {
    /// TCP on 127.0.0.1:port.
    case tcp(UInt16)
    /// An AF_UNIX stream socket at this abstract name (without the leading NUL). Abstract
    /// names belong to the network namespace: only the sandbox's processes reach it, and
    /// it needs no file in the sandbox's tree.
    case abstract(String)
}

/// What to run in one sandbox and with how much.
public struct SandboxSpec: Sendable {
    /// argv; argv[0] is looked up in the spec's PATH when it has no slash.
    public var command: [String]
    public var environment: [String: String]
    /// Host directory bound read-only at /var/task (nil: an empty /var/task).
    public var codeDirectory: String?
    /// Host directories merged read-only at /opt, later ones on top.
    public var layers: [String]
    public var memoryMB: Int
    public var ephemeralStorageMB: Int
    /// Wall-clock limit; the sandbox is killed when it is reached.
    public var timeout: Duration?
    public var workingDirectory: String
    /// Overrides the policy's network mode.
    public var network: SandboxPolicy.NetworkMode?
    /// Where to listen inside the sandbox before the command starts (the daemon
    /// serves them; the Runtime API is one). The listening fds are handed to the
    /// caller in `Sandbox.listeners`.
    public var listen: [ListenAddress] = []
    /// An operator's network to attach to (Lambda's VpcConfig); nil: the policy's network mode.
    public var attachment: NetworkAttachment?
    /// Start with all of the host's CPUs (the memory-proportional CPU quota applies
    /// from `Sandbox.settle()` on): a function's init runs at full speed, as the
    /// runtime's start dominates a cold start on small memory sizes.
    public var boostCPUUntilSettled = false
    /// Start from a pre-started command when one is ready for this spec's sandbox and
    /// `stem` (whose command must be this spec's): see `StemSpec`. The sandbox's output
    /// is then `Sandbox.output`, not `stdout`/`stderr`.
    public var stem: StemSpec?
    /// The command's standard streams (host fds; they are duplicated, not taken).
    public var stdin: Int32
    public var stdout: Int32
    public var stderr: Int32

    public init(
        command: [String], environment: [String: String] = [:], codeDirectory: String? = nil,
        layers: [String] = [], memoryMB: Int = 128, ephemeralStorageMB: Int = 512,
        timeout: Duration? = nil, workingDirectory: String = "/var/task",
        network: SandboxPolicy.NetworkMode? = nil,
        stdin: Int32 = 0, stdout: Int32 = 1, stderr: Int32 = 2
    ) {
        self.command = command
        self.environment = environment
        self.codeDirectory = codeDirectory
        self.layers = layers
        self.memoryMB = memoryMB
        self.ephemeralStorageMB = ephemeralStorageMB
        self.timeout = timeout
        self.workingDirectory = workingDirectory
        self.network = network
        self.stdin = stdin
        self.stdout = stdout
        self.stderr = stderr
    }

    public static let memoryRange = 128...10_240
    public static let ephemeralStorageRange = 512...10_240

    public func validate() throws {
        guard let first = command.first, !first.isEmpty else {
            throw SandboxError(.invalidSpec, "no command to run")
        }
        guard Self.memoryRange.contains(memoryMB) else {
            throw SandboxError(
                .invalidSpec, "memory must be \(Self.memoryRange.lowerBound)–\(Self.memoryRange.upperBound) MB, not \(memoryMB)")
        }
        guard Self.ephemeralStorageRange.contains(ephemeralStorageMB) else {
            throw SandboxError(
                .invalidSpec,
                "ephemeral storage must be \(Self.ephemeralStorageRange.lowerBound)–\(Self.ephemeralStorageRange.upperBound) MB, not \(ephemeralStorageMB)"
            )
        }
        if let timeout, timeout <= .zero { throw SandboxError(.invalidSpec, "timeout must be positive") }
        for (k, _) in environment where k.isEmpty || k.contains("=") || k.contains("\0") {
            throw SandboxError(.invalidSpec, "environment variable name \"\(k)\" is not valid")
        }
        for s in command + Array(environment.values) where s.contains("\0") {
            throw SandboxError(.invalidSpec, "command and environment may not contain NUL bytes")
        }
        if let code = codeDirectory, !Sys.isDirectory(code) {
            throw SandboxError(.invalidSpec, "code directory \(code) does not exist")
        }
        for l in layers where !Sys.isDirectory(l) {
            throw SandboxError(.invalidSpec, "layer directory \(l) does not exist")
        }
        guard workingDirectory.hasPrefix("/") else { throw SandboxError(.invalidSpec, "working directory must be absolute") }
        if let stem, stem.command != command { throw SandboxError(.invalidSpec, "a pre-started command must be the spec's command") }
    }
}

/// How one sandbox ended.
public struct SandboxReport: Sendable, Equatable, Codable {
    /// The command's exit code, when it exited.
    public var exitCode: Int?
    /// The signal that killed it, when one did.
    public var signal: Int?
    public var oomKilled: Bool
    public var timedOut: Bool
    public var durationMs: Double
    public var cpuTimeMs: Double
    public var maxMemoryMB: Double
    /// Set when the sandbox could not start the command (setup or exec failure).
    public var startError: String?

    /// What the operator command exits with: the code, or 128+signal.
    public var shellStatus: Int32 {
        if let exitCode { return Int32(exitCode) }
        if let signal { return Int32(128 + signal) }
        return 125
    }
}
