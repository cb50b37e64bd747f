/// An error of the runtime layer: an extensible code, a sentence for people,
/// Lambda's throttling reason where one applies, and the cause (a `StoreError`,
/// a `SandboxError`). Mapped to HTTP only at the API edge (`LambdaError.from`).
public struct RuntimeError: Error, CustomStringConvertible, Sendable {
    public struct Code: RawRepresentable, Hashable, Sendable, CustomStringConvertible {
        public var rawValue: String
        public init(rawValue: String) { self.rawValue = rawValue }
        public var description: String { rawValue }

        /// No capacity now: a limit (the account's, the function's reserved concurrency, the
        /// memory budget) is reached. `reason` says which, in Lambda's words.
        public static let throttled = Code(rawValue: "throttled")
        /// The platform is shutting down.
        public static let unavailable = Code(rawValue: "unavailable")
        /// An instance could not be started (its code, its sandbox).
        public static let startFailed = Code(rawValue: "startFailed")
    }

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
