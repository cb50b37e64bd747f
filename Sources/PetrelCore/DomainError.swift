import PetrelSystem

/// An error of the domain: an input that breaks one of Lambda's rules, a thing
/// that is not there or conflicts, a limit. Its codes say what went wrong, not
/// how an API reports it: PetrelAPI maps each to Lambda's exception name and
/// HTTP status in one place (`LambdaError.from`).
public struct DomainError: Error, CustomStringConvertible, Sendable, Equatable {
    public typealias Code = ErrorCode<DomainError>

    public var code: Code
    public var message: String

    public init(_ code: Code, _ message: String) {
        self.code = code
        self.message = message
    }

    public var description: String { "\(code): \(message)" }

    /// The "1 validation error detected: …" sentence Lambda uses for constraint failures.
    public static func constraint(_ value: String, at field: String, _ constraint: String) -> DomainError {
        DomainError(.constraint, "1 validation error detected: Value '\(value)' at '\(field)' failed to satisfy constraint: \(constraint)")
    }
}

extension ErrorCode where Owner == DomainError {
    /// A parameter's value is not acceptable (a runtime Petrel lacks, a reserved variable).
    public static let invalidParameter = Self("invalidParameter")
    /// A value breaks its field's constraint (pattern, length, range): `constraint(_:at:_:)`.
    public static let constraint = Self("constraint")
}

extension ErrorCode where Owner == DomainError {
    /// An IAM policy document Petrel cannot read or will not evaluate.
    public static let malformedPolicy = Self("malformedPolicy")
}
