import PetrelSystem

/// An error of the sandbox layer: an extensible code, a sentence for people,
/// and the cause. Mapped to HTTP only at the API edge.
public struct SandboxError: Error, CustomStringConvertible, Sendable {
    public typealias Code = ErrorCode<SandboxError>

    public var code: Code
    public var message: String
    public var errno: Int32?
    public var cause: (any Error & Sendable)?

    public init(_ code: Code, _ message: String, errno: Int32? = nil, cause: (any Error & Sendable)? = nil) {
        self.code = code
        self.message = message
        self.errno = errno
        self.cause = cause
    }

    public var description: String {
        var s = message
        if let cause { s += " (\(cause))" }
        return s
    }
}

extension ErrorCode where Owner == SandboxError {
    /// A system call failed (the message names the call and the path).
    public static let system = Self("system")
    /// The policy or a spec is not valid.
    public static let invalidPolicy = Self("invalidPolicy")
    public static let invalidSpec = Self("invalidSpec")
    /// The host cannot do what is asked (no cgroup controller, no root).
    public static let unsupportedHost = Self("unsupportedHost")
    /// Setting the sandbox up failed inside the child, before exec.
    public static let setup = Self("setup")
    /// The command could not be executed.
    public static let exec = Self("exec")
    /// A pool or range is used up (uids, addresses).
    public static let exhausted = Self("exhausted")
}
