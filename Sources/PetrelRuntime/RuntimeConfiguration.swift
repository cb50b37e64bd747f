import Foundation
import PetrelCore
import PetrelSandbox

/// What the runtime layer needs to know about the platform.
public struct RuntimeConfiguration: Sendable {
    public var region: String
    public var accountID: String
    /// The isolation policy every function instance runs under.
    public var policy: SandboxPolicy
    /// How long an idle instance is kept before it is torn down.
    public var keepAlive: Duration
    /// How long a runtime may take to initialize (its first `next`).
    public var initTimeout: Duration
    /// Concurrent executions allowed account-wide (reserved concurrency is carved out of it).
    public var concurrencyLimit: Int
    /// Memory the instances may take together (each counts its function's memory size).
    public var memoryBudgetMB: Int
    /// An instance's temporary credentials (its role's session) and when they expire (seconds
    /// since the epoch); nil when its function has none. Set by the daemon (see `ExecutionRoles`).
    public var credentials: (@Sendable (FunctionRecord) throws -> (environment: [String: String], expires: Int64)?)?
    /// The daemon's API on a Unix socket: each instance reaches it at 127.0.0.1:9002
    /// (`AWS_ENDPOINT_URL`, see `APIRelay`). nil: instances do not reach the API.
    public var apiSocket: String?
    /// The operator's networks, for functions with a VpcConfig.
    public var networks = FunctionNetworks()
    /// The java17 runtime's directory (its jar and class-data sharing archive), bound into
    /// every sandbox at the same path; nil: java17 functions cannot start here.
    public var javaRuntime: String?

    public init(
        region: String = "us-east-1", accountID: String = "000000000000", policy: SandboxPolicy = .default,
        keepAlive: Duration = .seconds(600), initTimeout: Duration = .seconds(10), concurrencyLimit: Int = 1000,
        memoryBudgetMB: Int = RuntimeConfiguration.defaultMemoryBudgetMB()
    ) {
        self.concurrencyLimit = concurrencyLimit
        self.memoryBudgetMB = memoryBudgetMB
        self.region = region
        self.accountID = accountID
        self.policy = policy
        self.keepAlive = keepAlive
        self.initTimeout = initTimeout
    }
}

extension RuntimeConfiguration {
    /// Most of the machine: 80% of MemTotal.
    public static func defaultMemoryBudgetMB() -> Int {
        guard let text = try? String(contentsOfFile: "/proc/meminfo", encoding: .utf8),
            let line = text.split(separator: "\n").first(where: { $0.hasPrefix("MemTotal:") }),
            let kb = Int(line.split(separator: " ").dropFirst().first ?? "")
        else { return 4096 }
        return kb / 1024 * 8 / 10
    }
}
