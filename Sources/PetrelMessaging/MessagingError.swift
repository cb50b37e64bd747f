/// A refusal of the SQS or SNS API: the service's own exception name, its HTTP
/// status and a sentence. The API edge writes it in the protocol's shape (SQS's
/// JSON `__type`, SNS's XML `ErrorResponse`).
public struct MessagingError: Error, Sendable, Equatable, CustomStringConvertible {
    public var name: String
    public var message: String
    public var status: Int

    public init(_ name: String, _ message: String, status: Int = 400) {
        self.name = name
        self.message = message
        self.status = status
    }

    public var description: String { "\(name): \(message)" }

    // SQS
    public static let noQueue = MessagingError(
        "QueueDoesNotExist", "The specified queue does not exist for this wsdl version.")
    public static func invalidAttributeName(_ n: String) -> MessagingError {
        MessagingError("InvalidAttributeName", "Unknown Attribute \(n).")
    }
    public static func invalidAttributeValue(_ n: String, _ why: String = "") -> MessagingError {
        MessagingError("InvalidAttributeValue", "Invalid value for the parameter \(n).\(why.isEmpty ? "" : " " + why)")
    }
    public static func invalidParameter(_ message: String) -> MessagingError { MessagingError("InvalidParameterValue", message) }
    public static func missingParameter(_ n: String) -> MessagingError {
        MessagingError("MissingParameter", "The request must contain the parameter \(n).")
    }
    public static func receiptInvalid(_ h: String) -> MessagingError {
        MessagingError("ReceiptHandleIsInvalid", "The input receipt handle \"\(h)\" is not a valid receipt handle.")
    }

    // SNS
    public static func snsNotFound(_ what: String) -> MessagingError { MessagingError("NotFound", "\(what) does not exist", status: 404) }
    public static func snsInvalid(_ message: String) -> MessagingError {
        MessagingError("InvalidParameter", "Invalid parameter: \(message)")
    }
    public static func snsAuthorization(_ message: String) -> MessagingError { MessagingError("AuthorizationError", message, status: 403) }
}
