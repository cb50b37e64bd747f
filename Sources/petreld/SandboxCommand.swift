import ArgumentParser
import Dispatch
import Foundation
import Glibc
import PetrelSandbox

struct SandboxCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "sandbox",
        abstract: "Run commands in one-off sandboxes (for writing and checking isolation policies).",
        subcommands: [SandboxRun.self, SandboxBench.self]
    )
}

struct EngineOptions: ParsableArguments {
    @Option(name: .customLong("data-dir"), help: "State directory (scratch disks are made here).")
    var dataDirectory = "/var/lib/petrel"

    @Option(name: .customLong("run-dir"), help: "Runtime directory.")
    var runDirectory = "/run/petrel"

    func engine(preparedPool: Int = 0) throws -> SandboxEngine {
        try SandboxEngine(
            configuration: SandboxEngineConfiguration(
                stateDirectory: dataDirectory, runDirectory: runDirectory, rootfsSkeleton: Locations.rootfs(),
                preparedPoolSize: preparedPool))
    }
}

struct SandboxRun: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "run",
        abstract: "Run COMMAND in a one-off sandbox and print its report as one JSON line on stderr.",
        discussion: "Exits with COMMAND's status (128+signal when it was killed)."
    )

    @Option(help: "Isolation policy (TOML). Default: the built-in default policy.")
    var policy: String?

    @Option(help: "Memory in MB (128–10240); CPU is proportional (1,769 MB = one CPU).")
    var memory = 128

    @Option(name: .customLong("ephemeral-storage"), help: "Size of /tmp in MB (512–10240).")
    var ephemeralStorage = 512

    @Option(help: "Kill the sandbox after this many seconds.")
    var timeout: Double?

    @Option(help: "Directory bound read-only at /var/task.")
    var code: String?

    @Option(name: .customLong("layer"), help: "Directory merged read-only into /opt (repeatable, later on top).")
    var layers: [String] = []

    @Option(help: "Network: none (loopback only) or host (a veth to the host). Default: the policy's.")
    var network: String?

    @Option(name: .customLong("env"), help: "KEY=VALUE for the command's environment (repeatable).")
    var env: [String] = []

    @OptionGroup var engineOptions: EngineOptions

    @Argument(parsing: .postTerminator, help: "The command and its arguments, after --.")
    var command: [String] = []

    func validate() throws {
        if command.isEmpty { throw ValidationError("no command given: petreld sandbox run [OPTIONS] -- COMMAND [ARG...]") }
        if let network, SandboxPolicy.NetworkMode(rawValue: network) == nil {
            throw ValidationError("--network must be none or host, not \(network)")
        }
        if let timeout, !(timeout > 0) { throw ValidationError("--timeout must be a positive number of seconds") }
        for e in env where !e.contains("=") { throw ValidationError("--env takes KEY=VALUE, not \(e)") }
    }

    func run() async throws {
        let status: Int32
        do {
            status = try await execute()
        } catch let e as SandboxError {
            FileHandle.standardError.write(Data("petreld: \(e)\n".utf8))
            throw ExitCode(125)
        }
        throw ExitCode(status)
    }

    func execute() async throws -> Int32 {
        let policy = try Locations.policy(policy)
        var environment = ["PATH": "/usr/local/bin:/usr/bin:/bin", "HOME": "/tmp", "LANG": "C.UTF-8", "TZ": ":UTC"]
        for e in env {
            let kv = e.split(separator: "=", maxSplits: 1, omittingEmptySubsequences: false)
            environment[String(kv[0])] = String(kv[1])
        }
        let spec = SandboxSpec(
            command: command, environment: environment,
            codeDirectory: code.map { URL(fileURLWithPath: $0).standardizedFileURL.path }, layers: layers,
            memoryMB: memory, ephemeralStorageMB: ephemeralStorage,
            timeout: timeout.map { .milliseconds(Int64($0 * 1000)) },
            network: network.flatMap(SandboxPolicy.NetworkMode.init(rawValue:)))
        let engine = try engineOptions.engine()
        defer { engine.shutdown() }
        let sandbox = try engine.spawn(spec, policy: policy)

        // Ctrl-C, SIGTERM and friends go to the command, through the sandbox's init.
        var sources: [DispatchSourceSignal] = []
        for sig in [SIGINT, SIGTERM, SIGHUP, SIGQUIT, SIGUSR1, SIGUSR2] {
            signal(sig, SIG_IGN)
            let s = DispatchSource.makeSignalSource(signal: sig, queue: .global())
            s.setEventHandler { sandbox.signal(sig) }
            s.resume()
            sources.append(s)
        }
        let report = await sandbox.wait()
        sources.forEach { $0.cancel() }
        if let err = report.startError {
            FileHandle.standardError.write(Data("petreld: \(err)\n".utf8))
        }
        FileHandle.standardError.write(Data((report.jsonLine + "\n").utf8))
        return report.shellStatus
    }
}

extension SandboxReport {
    /// The operator command's report line, keys in a fixed order.
    var jsonLine: String {
        func num(_ d: Double) -> String { String(format: "%.1f", d) }
        func opt(_ i: Int?) -> String { i.map(String.init) ?? "null" }
        return "{\"exitCode\":\(opt(exitCode)),\"signal\":\(opt(signal)),\"oomKilled\":\(oomKilled),\"timedOut\":\(timedOut),"
            + "\"durationMs\":\(num(durationMs)),\"cpuTimeMs\":\(num(cpuTimeMs)),\"maxMemoryMB\":\(num(maxMemoryMB))}"
    }
}
