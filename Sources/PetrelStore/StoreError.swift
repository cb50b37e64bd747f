import PetrelSystem

/// An error of the store: an extensible code, a sentence naming what failed,
/// and the cause (a `SystemError`, SQLite's own). Mapped to HTTP only at the API edge.
public struct StoreError: Error, CustomStringConvertible, Sendable {
    public typealias Code = ErrorCode<StoreError>

    public var code: Code
    public var message: String
    public var cause: (any Error)?

    public init(code: Code, _ message: String, cause: (any Error)? = nil) {
        self.init(message, code: code, cause: cause)
    }

    public init(_ message: String, code: Code = .failed, cause: (any Error)? = nil) {
        self.code = code
        self.message = message
        self.cause = cause
    }

    public var description: String {
        guard let cause else { return message }
        return "\(message) (\(cause))"
    }
}

extension ErrorCode where Owner == StoreError {
    /// Something failed that the caller did not cause (I/O, a corrupt row, a lost key).
    public static let failed = Self("failed")
    /// The input is not acceptable (a bad name, a bad archive).
    public static let invalid = Self("invalid")
    /// More than a limit allows (code size, storage quota).
    public static let tooLarge = Self("tooLarge")
}
