import Foundation

/// How a function's asynchronous events are seen through: retries, the oldest
/// event still worth running, and where records go after success or failure.
public struct EventInvokeConfig: Sendable, Codable, Equatable {
    public var maximumRetryAttempts: Int
    public var maximumEventAgeSeconds: Int
    public var onSuccess: String?
    public var onFailure: String?
    public var lastModified: Date

    public static let defaultRetries = 2
    public static let defaultAgeSeconds = 21_600

    public init(
        maximumRetryAttempts: Int = EventInvokeConfig.defaultRetries, maximumEventAgeSeconds: Int = EventInvokeConfig.defaultAgeSeconds,
        onSuccess: String? = nil, onFailure: String? = nil, lastModified: Date = Date()
    ) {
        self.maximumRetryAttempts = maximumRetryAttempts
        self.maximumEventAgeSeconds = maximumEventAgeSeconds
        self.onSuccess = onSuccess
        self.onFailure = onFailure
        self.lastModified = lastModified
    }

    public static func checkRetries(_ n: Int) throws(DomainError) {
        guard (0...2).contains(n) else {
            throw DomainError.constraint(
                "\(n)", at: "maximumRetryAttempts", "Member must have value less than or equal to 2 and greater than or equal to 0")
        }
    }

    public static func checkAge(_ n: Int) throws(DomainError) {
        guard (60...21_600).contains(n) else {
            throw DomainError.constraint(
                "\(n)", at: "maximumEventAgeInSeconds", "Member must have value less than or equal to 21600 and greater than or equal to 60"
            )
        }
    }
}

/// Where an invocation record goes: another function (invoked asynchronously
/// with the record as its event) or the platform's dead-letter queue.
public enum Destination: Sendable, Equatable {
    case function(account: String, name: String)
    case deadLetterQueue

    /// The built-in queue's name in an SQS-shaped ARN (`arn:aws:sqs:::petrel-dlq`;
    /// region and account may be given and must then be the function's).
    public static let queueName = "petrel-dlq"

    /// Parses a destination of a function in `account`; other accounts' functions are refused.
    public init(parsing arn: String, account: String, region: String) throws(DomainError) {
        let p = arn.split(separator: ":", maxSplits: 6, omittingEmptySubsequences: false).map(String.init)
        func refuse(_ why: String) -> DomainError {
            DomainError(
                .invalidParameter,
                "The destination ARN \(arn) is not valid: \(why). Name a function of this account (arn:aws:lambda:\(region):\(account):function:NAME) or Petrel's dead-letter queue (arn:aws:sqs:::\(Self.queueName))."
            )
        }
        guard p.count >= 6, p[0] == "arn", p[1] == "aws" else { throw refuse("it is not an ARN") }
        guard p[3].isEmpty || p[3] == region, p[4].isEmpty || p[4] == account else {
            throw refuse("it is in another region or account")
        }
        switch p[2] {
        case "sqs":
            guard p.count == 6, p[5] == Self.queueName else { throw refuse("the only queue is \(Self.queueName)") }
            self = .deadLetterQueue
        case "lambda":
            guard p.count == 7, p[5] == "function", !p[4].isEmpty, FunctionReference.isValidName(p[6]) else {
                throw refuse("a function destination is arn:aws:lambda:REGION:ACCOUNT:function:NAME")
            }
            self = .function(account: p[4], name: p[6])
        default:
            throw refuse("Petrel delivers to functions and to its dead-letter queue only")
        }
    }
}
