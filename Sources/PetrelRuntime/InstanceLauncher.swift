import Foundation
import Glibc
import Logging
import NIOCore
import PetrelCore
import PetrelSandbox
import PetrelStore
import PetrelSystem

/// Starts instances: the runtime's command and environment, the sandbox, the
/// Runtime API inside it and the capture of its output.
struct InstanceLauncher: Sendable {
    let engine: SandboxEngine
    let configuration: RuntimeConfiguration
    let sink: LogSink
    let logger: Logger

    static let runtimeAPIPort: UInt16 = 9001

    /// Blocking (spawning is); call off the cooperative pool.
    func launch(_ function: FunctionRecord, codeDirectory: String, layers: [String], on loop: any EventLoop) throws -> Instance {
        // The instance's stdout and stderr: one pipe, read without blocking by the fd watcher.
        let (outRead, outWrite) = try Sys.pipe(nonBlockingRead: true)
        let devnull: Int32
        do { devnull = try Sys.open("/dev/null", O_RDONLY) } catch {
            Sys.close(outRead)
            Sys.close(outWrite)
            throw error
        }
        defer {
            Sys.close(devnull)
            Sys.close(outWrite)
        }
        let stream = Self.streamName(version: function.version)
        var env = environment(function, stream: stream)
        let command = try command(function)
        var credentialsExpire: Int64?
        do {
            if let creds = try configuration.credentials?(function) {
                env.merge(creds.environment) { _, c in c }
                credentialsExpire = creds.expires
            }
        } catch {
            Sys.close(outRead)
            throw RuntimeError(.startFailed, "Petrel could not make the instance's credentials: \(error)", cause: error)
        }
        var spec = SandboxSpec(
            command: command,
            environment: env,
            codeDirectory: codeDirectory,
            layers: layers,
            memoryMB: function.memoryMB,
            ephemeralStorageMB: function.ephemeralStorageMB,
            timeout: nil,
            workingDirectory: "/var/task",
            stdin: devnull, stdout: outWrite, stderr: outWrite)
        do {
            spec.attachment = try configuration.networks.attachment(function.vpc, account: function.account)
        } catch {
            Sys.close(outRead)
            throw RuntimeError(.startFailed, "Petrel could not attach the instance to its network: \(error.message)", cause: error)
        }
        spec.listen = Self.runtimeAPIAddresses + (configuration.apiSocket == nil ? [] : [.tcp(APIRelay.port)])
        spec.boostCPUUntilSettled = true
        let fresh = spec.attachment != nil ? .network : prestart(function)
        if fresh == nil { spec.stem = stem(function, command: command) }
        let sandbox: Sandbox
        let t0 = DispatchTime.now().uptimeNanoseconds
        do {
            sandbox = try engine.spawn(spec, policy: configuration.policy)
        } catch {
            Sys.close(outRead)
            throw RuntimeError(.startFailed, "Petrel could not start an instance: \(error)", cause: error)
        }
        // A pre-started command writes to the pipe it was started with.
        var output = outRead
        if let o = sandbox.output {
            Sys.close(outRead)
            output = o
        }
        let log = InstanceLog(
            group: LogStore.stored(account: function.account, group: function.logGroup()), stream: stream, sink: sink, fd: output)
        var l = logger
        l[metadataKey: "function.name"] = "\(function.name)"
        l[metadataKey: "instance.id"] = "\(sandbox.id)"
        let instance = Instance(
            id: sandbox.id, function: function, sandbox: sandbox, log: log, loop: loop, logger: l,
            sandboxMs: Double(DispatchTime.now().uptimeNanoseconds - t0) / 1e6, credentialsExpire: credentialsExpire,
            start: sandbox.prestarted ? .prestarted : .fresh(fresh ?? .noneReady))
        instance.attach(
            servers: sandbox.listeners.map { address, fd in
                if address == .tcp(APIRelay.port), let socket = configuration.apiSocket {
                    return APIRelay.start(listener: fd, on: loop, to: socket)
                }
                return RuntimeAPIServer.start(listener: fd, on: loop, delegate: instance)
            })
        do {
            try log.start()
        } catch {
            // Without its output read, the instance would block on a full pipe: it fails
            // at once (and is watched, waited for and torn down like any other).
            Sys.close(output)
            l.error("cannot watch the instance's output", metadata: ["error": "\(error)"])
            instance.fail(.startFailed("Petrel could not watch the instance's output: \(error)"))
        }
        return instance
    }

    /// AWS_LAMBDA_RUNTIME_API (TCP) and PETREL_RUNTIME_API_SOCKET (see RuntimeAPIServer):
    /// the same API at two addresses, for every runtime; Petrel's own use the second.
    static let runtimeAPIAddresses: [ListenAddress] = [.tcp(runtimeAPIPort), .abstract(RuntimeAPIServer.abstractName)]

    /// Debian's OpenJDK 17 with Petrel's runtime: the serial collector and C1 only (less to
    /// start and to warm up: `Scripts/bench invoke` prints the cold start beside a bare `java`
    /// with the same flags), the runtime's class-data sharing archive, no perf data file, and a
    /// heap below the memory limit so that a full heap is the function's OutOfMemoryError, not a kill.
    static func javaCommand(memoryMB: Int, runtime: String) -> [String] {
        let heap = max(32, memoryMB * 85 / 100 - 64)
        return [
            Self.javaExecutable, "-XX:+UseSerialGC", "-XX:TieredStopAtLevel=1", "-XX:-UsePerfData", "-Xshare:auto",
            "-XX:SharedArchiveFile=\(runtime)/petrel.jsa", "-Xmx\(heap)m", "-cp", Self.javaClassPath(runtime),
            "petrel.runtime.Bootstrap",
        ]
    }

    static let javaExecutable = "/usr/lib/jvm/java-17-openjdk-amd64/bin/java"

    /// The runtime's jar and Debian's Jackson (the archive was made with exactly this class path).
    public static func javaClassPath(_ runtime: String) -> String {
        ([runtime + "/petrel-java.jar"] + ["databind", "core", "annotations"].map { "/usr/share/java/jackson-\($0).jar" })
            .joined(separator: ":")
    }

    func javaRuntime() throws(RuntimeError) -> String {
        guard let java = configuration.javaRuntime else {
            throw RuntimeError(
                .startFailed,
                "The java17 runtime is not installed here: Scripts/setup builds it, the package installs it in /usr/lib/petrel/java.")
        }
        return java
    }

    /// The command of an instance of `f`: its runtime's (java17 needs the runtime's directory).
    func command(_ f: FunctionRecord) throws(RuntimeError) -> [String] {
        switch f.runtime {
        // -S: no `site` (~3.5 ms of every cold start), so the host's dist-packages stay out of
        // functions, as on Lambda: a function sees the standard library, /var/task and /opt/python.
        // The interpreter that compiled the runtime's bytecode (RuntimeFiles), so that it reads it.
        case .python311: [RuntimeFiles.python, "-S", "-u", "-X", "utf8", "/var/runtime/python/bootstrap.py"]
        // --interrupt-budget: V8 optimizes hot code after 1/16 of its default budget, so an
        // instance reaches its optimized speed within hundreds of invocations rather than
        // thousands (see the Node rows' runtime CPU per invocation in `Scripts/bench invoke`).
        case .nodejs20: ["/usr/bin/node", "--interrupt-budget=8192", "/var/runtime/node/bootstrap.js"]
        case .ruby31: ["/usr/bin/ruby", "/var/runtime/ruby/bootstrap.rb"]
        case .java17: Self.javaCommand(memoryMB: f.memoryMB, runtime: try javaRuntime())
        case .provided, .providedAL2, .providedAL2023: ["/var/task/bootstrap"]
        }
    }

    /// Lambda's standard environment; the function's own variables cannot override it.
    func environment(_ f: FunctionRecord, stream: String) -> [String: String] {
        var env = f.environment
        let platform: [String: String] = [
            "AWS_LAMBDA_FUNCTION_NAME": f.name,
            "AWS_LAMBDA_FUNCTION_VERSION": f.version,
            "AWS_LAMBDA_FUNCTION_MEMORY_SIZE": "\(f.memoryMB)",
            "AWS_LAMBDA_LOG_GROUP_NAME": f.logGroup(),
            "AWS_LAMBDA_LOG_STREAM_NAME": stream,
            "AWS_LAMBDA_INITIALIZATION_TYPE": "on-demand",
            "AWS_LAMBDA_RUNTIME_API": "127.0.0.1:\(Self.runtimeAPIPort)",
            "PETREL_RUNTIME_API_SOCKET": "@" + RuntimeAPIServer.abstractName,
            "AWS_REGION": configuration.region,
            "AWS_DEFAULT_REGION": configuration.region,
            "AWS_EXECUTION_ENV": "AWS_Lambda_\(f.runtime.rawValue)",
            "LAMBDA_TASK_ROOT": "/var/task",
            "LAMBDA_RUNTIME_DIR": "/var/runtime",
            "_HANDLER": f.handler ?? "",
        ]
        env.merge(platform) { _, p in p }
        env.merge(Self.startEnvironment(f.runtime)) { _, p in p }
        // The SDKs reach Petrel's API through the sandbox's own 127.0.0.1:9002 (APIRelay).
        if configuration.apiSocket != nil { env["AWS_ENDPOINT_URL"] = "http://127.0.0.1:\(APIRelay.port)" }
        return env
    }

    /// The platform's variables that an interpreter reads while it starts: the same for
    /// every function of a runtime (a function's own cannot override them), so a runtime
    /// pre-started with them starts as a function's would.
    static func startEnvironment(_ runtime: FunctionRuntime) -> [String: String] {
        var env = [
            "TZ": ":UTC",
            "LANG": "en_US.UTF-8",
            "PATH": "/usr/local/bin:/usr/bin/:/bin:/opt/bin",
            "LD_LIBRARY_PATH": "/var/lang/lib:/lib64:/usr/lib64:/var/runtime:/var/runtime/lib:/var/task:/var/task/lib:/opt/lib",
        ]
        switch runtime {
        case .python311:
            env["PYTHONPATH"] = "/var/runtime/python"
            env["PYTHONDONTWRITEBYTECODE"] = "1"
        case .nodejs20:
            env["NODE_PATH"] = "/opt/nodejs/node20/node_modules:/opt/nodejs/node_modules:/var/runtime/node_modules:/var/runtime:/var/task"
        case .ruby31:
            // As Lambda's Ruby runtime: gems vendored in the ZIP (bundle install --path vendor/bundle)
            // and in layers (/opt/ruby/gems), libraries in the ZIP and in layers (/opt/ruby/lib).
            env["GEM_PATH"] = "/var/task/vendor/bundle/ruby/3.1.0:/opt/ruby/gems/3.1.0"
            env["RUBYLIB"] = "/var/task:/opt/ruby/lib"
        default: break
        }
        return env
    }

    /// Variables of a function's own that an interpreter (or the C library under it) reads
    /// when it starts, by prefix or whole name: a function that sets one starts fresh.
    static let startVariablePrefixes = ["PYTHON", "NODE_", "LD_", "LC_", "UV_", "MALLOC_", "OPENSSL_", "SSL_CERT_"]
    static let startVariables: Set<String> = ["LANGUAGE", "GLIBC_TUNABLES", "FORCE_COLOR", "NO_COLOR"]

    /// Why `f` cannot start from a pre-started runtime; nil when it can.
    func prestart(_ f: FunctionRecord) -> StartPath.Fresh? {
        guard engine.configuration.stemsPerKey > 0 else { return .disabled }
        switch f.runtime {
        case .python311, .nodejs20: break
        default: return .runtime
        }
        guard SandboxEngine.canPrestart(configuration.policy) else { return .policy }
        for name in f.environment.keys.sorted()
        where Self.startVariables.contains(name) || Self.startVariablePrefixes.contains(where: name.hasPrefix) {
            return .environment(name)
        }
        return nil
    }

    /// The pre-started runtime `f` can use: one per runtime, and per memory size for Node
    /// (V8 sizes its heap from the memory limit it starts under).
    func stem(_ f: FunctionRecord, command: [String]) -> StemSpec {
        StemSpec(
            command: command, environment: Self.startEnvironment(f.runtime),
            memoryMB: f.runtime == .nodejs20 ? f.memoryMB : nil, label: f.runtime.rawValue)
    }

    /// `YYYY/MM/DD/[VERSION]<32 hex>`, as Lambda names an instance's stream.
    static func streamName(version: String) -> String {
        var t = time(nil)
        var tm = tm()
        gmtime_r(&t, &tm)
        let hex = (0..<32).map { _ in String(Int.random(in: 0..<16), radix: 16) }.joined()
        return String(format: "%04d/%02d/%02d/", tm.tm_year + 1900, tm.tm_mon + 1, tm.tm_mday) + "[\(version)]" + hex
    }
}
