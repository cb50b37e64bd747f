import PetrelSystem

/// An error of the runtime layer: an extensible code, a sentence for people,
/// Lambda's throttling reason where one applies, and the cause (a `StoreError`,
/// a `SandboxError`). Mapped to HTTP only at the API edge (`LambdaError.from`).
public struct RuntimeError: Error, CustomStringConvertible, Sendable {
    public typealias Code = ErrorCode<RuntimeError>

    public var code: Code
    public var message: String
    public var reason: String?
    public var cause: (any Error)?

    public init(_ code: Code, _ message: String, reason: String? = nil, cause: (any Error)? = nil) {
        self.code = code
        self.message = message
        self.reason = reason
        self.cause = cause
    }

    public var description: String {
        var s = "\(code): \(message)"
        if let cause { s += " (\(cause))" }
        return s
    }
}

extension ErrorCode where Owner == RuntimeError {
    /// No capacity now: a limit (the account's, the function's reserved concurrency, the
    /// memory budget) is reached. `reason` says which, in Lambda's words.
    public static let throttled = Self("throttled")
    /// The platform is shutting down.
    public static let unavailable = Self("unavailable")
    /// An instance could not be started (its code, its sandbox).
    public static let startFailed = Self("startFailed")
}
