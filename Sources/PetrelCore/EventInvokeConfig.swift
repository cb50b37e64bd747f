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
/// with the record as its event), an SQS queue or SNS topic of Petrel's, or the
/// account's built-in dead-letter queue (its SQS queue `petrel-dlq`, made when
/// first used, written in the transaction that finishes the event).
public enum Destination: Sendable, Equatable {
    case function(account: String, name: String)
    case queue(arn: String)
    case topic(arn: String)
    case deadLetterQueue

    /// The built-in queue's name in an SQS-shaped ARN (`arn:aws:sqs:::petrel-dlq`;
    /// region and account may be given and must then be the function's).
    public static let queueName = "petrel-dlq"

    /// Parses a destination of a function in `account`; other accounts' resources are refused.
    public init(parsing arn: String, account: String, region: String) throws(DomainError) {
        let p = arn.split(separator: ":", maxSplits: 6, omittingEmptySubsequences: false).map(String.init)
        func refuse(_ why: String) -> DomainError {
            DomainError(
                .invalidParameter,
                "The destination ARN \(arn) is not valid: \(why). Name a function (arn:aws:lambda:\(region):\(account):function:NAME), a queue (arn:aws:sqs:\(region):\(account):NAME) or a topic (arn:aws:sns:\(region):\(account):NAME) of this account, or Petrel's dead-letter queue (arn:aws:sqs:::\(Self.queueName))."
            )
        }
        guard p.count >= 6, p[0] == "arn", p[1] == "aws" else { throw refuse("it is not an ARN") }
        guard p[3].isEmpty || p[3] == region, p[4].isEmpty || p[4] == account else {
            throw refuse("it is in another region or account")
        }
        func validName(_ n: String, _ maxLength: Int) -> Bool {
            let base = n.hasSuffix(".fifo") ? String(n.dropLast(5)) : n
            return !base.isEmpty && n.utf8.count <= maxLength
                && base.utf8.allSatisfy {
                    ($0 >= 48 && $0 <= 57) || ($0 >= 65 && $0 <= 90) || ($0 >= 97 && $0 <= 122) || $0 == 45 || $0 == 95
                }
        }
        switch p[2] {
        case "sqs":
            guard p.count == 6 else { throw refuse("a queue is arn:aws:sqs:REGION:ACCOUNT:NAME") }
            if p[5] == Self.queueName {
                self = .deadLetterQueue
                return
            }
            guard !p[3].isEmpty, !p[4].isEmpty, validName(p[5], 80) else { throw refuse("a queue is arn:aws:sqs:REGION:ACCOUNT:NAME") }
            self = .queue(arn: arn)
        case "sns":
            guard p.count == 6, !p[3].isEmpty, !p[4].isEmpty, validName(p[5], 256), !p[5].hasSuffix(".fifo") else {
                throw refuse("a topic is arn:aws:sns:REGION:ACCOUNT:NAME")
            }
            self = .topic(arn: arn)
        case "lambda":
            guard p.count == 7, p[5] == "function", !p[4].isEmpty, FunctionReference.isValidName(p[6]) else {
                throw refuse("a function destination is arn:aws:lambda:REGION:ACCOUNT:function:NAME")
            }
            self = .function(account: p[4], name: p[6])
        default:
            throw refuse("Petrel delivers to functions, queues, topics and its dead-letter queue")
        }
    }
}
