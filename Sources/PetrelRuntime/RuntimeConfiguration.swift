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

    public init(region: String = "us-east-1", accountID: String = "000000000000", policy: SandboxPolicy = .default,
                keepAlive: Duration = .seconds(600), initTimeout: Duration = .seconds(10)) {
        self.region = region
        self.accountID = accountID
        self.policy = policy
        self.keepAlive = keepAlive
        self.initTimeout = initTimeout
    }
}
