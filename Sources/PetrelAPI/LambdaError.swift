import PetrelCore
import PetrelMessaging
import PetrelRuntime
import PetrelStore
import PetrelSystem

/// An error the API answers with: Lambda's exception name, its HTTP status and
/// a sentence for the user. Everything that fails below the API edge is mapped
/// to one of these here, in `from(_:)`, and nowhere else.
public struct LambdaError: Error, Sendable, Equatable, CustomStringConvertible {
    public struct Code: RawRepresentable, Hashable, Sendable {
        public let rawValue: String
        public let status: Int
        public init(rawValue: String) { self.init(rawValue, status: 400) }
        public init(_ name: String, status: Int) {
            rawValue = name
            self.status = status
        }

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
        public static let malformedPolicy = Code("MalformedPolicyDocument", status: 400)
        public static let expiredToken = Code("ExpiredTokenException", status: 403)
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
        from(DomainError.constraint(value, at: field, constraint))
    }

    /// What any error of the layers below is in Lambda's terms: the layers' codes mapped
    /// to exception names and statuses, their messages kept. `action` names the operation
    /// for a failure that has no sentence of its own.
    public static func from(_ error: any Error, action: String = "the request") -> LambdaError {
        switch error {
        case let e as LambdaError:
            return e
        case let e as DomainError:
            let code: Code =
                switch e.code {
                case .invalidParameter: .invalidParameterValue
                case .constraint: .validation
                case .malformedPolicy: .malformedPolicy
                default: .service
                }
            return LambdaError(code, e.message)
        case let e as StoreError:
            let code: Code =
                switch e.code {
                case .invalid: .invalidParameterValue
                case .tooLarge: .requestEntityTooLarge
                default: .service
                }
            return LambdaError(code, e.message)
        case let e as RuntimeError:
            switch e.code {
            case .throttled: return LambdaError(.tooManyRequests, e.message, reason: e.reason)
            default: return LambdaError(.service, e.message)
            }
        case let e as MessagingError:
            return LambdaError(Code(e.name, status: e.status), e.message)
        case let e as SystemError:
            return LambdaError(.service, "Petrel could not complete \(action): \(e)")
        default:
            return LambdaError(.service, "Petrel could not complete \(action): \(error)")
        }
    }
}
