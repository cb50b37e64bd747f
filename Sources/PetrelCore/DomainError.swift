/// An error of the domain: an input that breaks one of Lambda's rules, a thing
/// that is not there or conflicts, a limit. Its codes say what went wrong, not
/// how an API reports it: PetrelAPI maps each to Lambda's exception name and
/// HTTP status in one place (`LambdaError.from`).
public struct DomainError: Error, CustomStringConvertible, Sendable, Equatable {
    public struct Code: RawRepresentable, Hashable, Sendable, CustomStringConvertible {
        public var rawValue: String
        public init(rawValue: String) { self.rawValue = rawValue }
        public var description: String { rawValue }

        /// A parameter's value is not acceptable (a runtime Petrel lacks, a reserved variable).
        public static let invalidParameter = Code(rawValue: "invalidParameter")
        /// A value breaks its field's constraint (pattern, length, range): `constraint(_:at:_:)`.
        public static let constraint = Code(rawValue: "constraint")
        /// The request's content cannot be read (not JSON, the wrong types).
        public static let invalidContent = Code(rawValue: "invalidContent")
        /// What is named does not exist.
        public static let notFound = Code(rawValue: "notFound")
        /// It exists already, or its state does not allow the change.
        public static let conflict = Code(rawValue: "conflict")
        /// A precondition the caller set (a revision) does not hold.
        public static let preconditionFailed = Code(rawValue: "preconditionFailed")
        /// A request or payload over its limit.
        public static let tooLarge = Code(rawValue: "tooLarge")
    }

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
