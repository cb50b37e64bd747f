/// An error the API answers with: Lambda's exception name, its HTTP status and
/// a sentence for the user. Everything that fails below the API edge is mapped
/// to one of these there.
public struct LambdaError: Error, Sendable, Equatable, CustomStringConvertible {
    public struct Code: RawRepresentable, Hashable, Sendable {
        public let rawValue: String
        public let status: Int
        public init(rawValue: String) { self.init(rawValue, status: 400) }
        public init(_ name: String, status: Int) { rawValue = name; self.status = status }

        public static let resourceNotFound = Code("ResourceNotFoundException", status: 404)
        public static let resourceConflict = Code("ResourceConflictException", status: 409)
        public static let invalidParameterValue = Code("InvalidParameterValueException", status: 400)
        public static let validation = Code("ValidationException", status: 400)
        public static let invalidRequestContent = Code("InvalidRequestContentException", status: 400)
        public static let requestTooLarge = Code("RequestTooLargeException", status: 413)
        public static let requestEntityTooLarge = Code("RequestEntityTooLargeException", status: 413)
        public static let codeStorageExceeded = Code("CodeStorageExceededException", status: 400)
        public static let tooManyRequests = Code("TooManyRequestsException", status: 429)
        public static let unsupportedMediaType = Code("UnsupportedMediaTypeException", status: 415)
        public static let unknownOperation = Code("UnknownOperationException", status: 404)
        public static let service = Code("ServiceException", status: 500)
        public static let invalidRuntime = Code("InvalidRuntimeException", status: 502)
        public static let resourceNotReady = Code("ResourceNotReadyException", status: 502)
        public static let ec2Unexpected = Code("EC2UnexpectedException", status: 502)
        public static let missingAuthenticationToken = Code("MissingAuthenticationTokenException", status: 403)
        public static let incompleteSignature = Code("IncompleteSignatureException", status: 400)
        public static let invalidSignature = Code("InvalidSignatureException", status: 403)
        public static let unrecognizedClient = Code("UnrecognizedClientException", status: 403)
        public static let accessDenied = Code("AccessDeniedException", status: 403)
        public static let preconditionFailed = Code("PreconditionFailedException", status: 412)
    }

    public var code: Code
    public var message: String
    /// Lambda's `Type` field: `User` for the caller's mistakes, `Service` for ours.
    public var type: String { code.status >= 500 ? "Service" : "User" }
    /// Extra fields some exceptions carry (`Reason` on throttles).
    public var reason: String?

    public init(_ code: Code, _ message: String, reason: String? = nil) {
        self.code = code
        self.message = message
        self.reason = reason
    }

    public var description: String { "\(code.rawValue): \(message)" }

    /// The "1 validation error detected: …" sentence Lambda uses for constraint failures.
    public static func constraint(_ value: String, at field: String, _ constraint: String) -> LambdaError {
        LambdaError(.validation, "1 validation error detected: Value '\(value)' at '\(field)' failed to satisfy constraint: \(constraint)")
    }
}

/// `arn:aws:lambda:REGION:ACCOUNT:function:NAME[:QUALIFIER]`.
public struct FunctionARN: Sendable, Hashable, CustomStringConvertible {
    public var region: String
    public var account: String
    public var name: String
    public var qualifier: String?

    public init(region: String, account: String, name: String, qualifier: String? = nil) {
        self.region = region
        self.account = account
        self.name = name
        self.qualifier = qualifier
    }

    public var description: String {
        "arn:aws:lambda:\(region):\(account):function:\(name)" + (qualifier.map { ":" + $0 } ?? "")
    }
}
