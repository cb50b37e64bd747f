import Foundation
import PetrelCore

/// A queue's settable attributes as SQS names them, checked against SQS's
/// ranges; what is not given takes SQS's default when read.
public struct QueueSettings: Sendable, Equatable {
    /// As set, by SQS's attribute name.
    public private(set) var values: [String: String]

    public static let settable: Set<String> = [
        "DelaySeconds", "MaximumMessageSize", "MessageRetentionPeriod", "ReceiveMessageWaitTimeSeconds", "VisibilityTimeout",
        "RedrivePolicy", "RedriveAllowPolicy", "Policy", "FifoQueue", "ContentBasedDeduplication", "DeduplicationScope",
        "FifoThroughputLimit", "KmsMasterKeyId", "KmsDataKeyReusePeriodSeconds", "SqsManagedSseEnabled",
    ]
    static let defaults: [String: String] = [
        "DelaySeconds": "0", "MaximumMessageSize": "1048576", "MessageRetentionPeriod": "345600",
        "ReceiveMessageWaitTimeSeconds": "0", "VisibilityTimeout": "30", "SqsManagedSseEnabled": "true",
    ]
    static let fifoDefaults: [String: String] = [
        "FifoQueue": "true", "ContentBasedDeduplication": "false", "DeduplicationScope": "queue", "FifoThroughputLimit": "perQueue",
    ]
    /// The most a message (and a batch) may hold: 1 MiB.
    public static let maxMessageBytes = 1_048_576

    public init(values: [String: String] = [:]) { self.values = values }

    public func value(_ name: String, fifo: Bool) -> String? {
        values[name] ?? Self.defaults[name] ?? (fifo ? Self.fifoDefaults[name] : nil)
    }

    func int(_ name: String) -> Int { Int(values[name] ?? Self.defaults[name] ?? "0") ?? 0 }

    public var delaySeconds: Int { int("DelaySeconds") }
    public var maximumMessageSize: Int { int("MaximumMessageSize") }
    public var retentionSeconds: Int { int("MessageRetentionPeriod") }
    public var waitSeconds: Int { int("ReceiveMessageWaitTimeSeconds") }
    public var visibilitySeconds: Int { int("VisibilityTimeout") }
    public var contentBasedDeduplication: Bool { values["ContentBasedDeduplication"] == "true" }
    public var redrive: RedrivePolicy? { values["RedrivePolicy"].flatMap { try? RedrivePolicy(json: $0) } }
    public var policy: QueuePolicy? { values["Policy"].flatMap { try? QueuePolicy(json: $0) } }

    /// Sets `given` on top of what is set, each checked; a queue's FIFO-ness is fixed
    /// at creation (`creating`). An empty RedrivePolicy or Policy removes it.
    public mutating func set(_ given: [String: String], fifo: Bool, creating: Bool) throws(MessagingError) {
        for (name, value) in given {
            guard Self.settable.contains(name) else { throw .invalidAttributeName(name) }
            func range(_ r: ClosedRange<Int>) throws(MessagingError) {
                guard let n = Int(value), r.contains(n) else {
                    throw .invalidAttributeValue(name, "Value must be between \(r.lowerBound) and \(r.upperBound).")
                }
            }
            switch name {
            case "DelaySeconds": try range(0...900)
            case "MaximumMessageSize": try range(1024...Self.maxMessageBytes)
            case "MessageRetentionPeriod": try range(60...1_209_600)
            case "ReceiveMessageWaitTimeSeconds": try range(0...20)
            case "VisibilityTimeout": try range(0...43_200)
            case "KmsDataKeyReusePeriodSeconds": try range(60...86_400)
            case "FifoQueue":
                guard creating || value == (fifo ? "true" : "false") else {
                    throw .invalidAttributeValue(name, "A queue's type cannot be changed.")
                }
                guard value == "true" || value == "false" else { throw .invalidAttributeValue(name) }
                guard (value == "true") == fifo else {
                    throw .invalidParameter(
                        "The name of a FIFO queue can only include alphanumeric characters, hyphens, or underscores, must end with .fifo suffix and be 1 to 80 in length."
                    )
                }
            case "ContentBasedDeduplication", "SqsManagedSseEnabled":
                guard value == "true" || value == "false" else { throw .invalidAttributeValue(name) }
                if name == "ContentBasedDeduplication" && !fifo { throw .invalidAttributeName(name) }
            case "DeduplicationScope":
                guard fifo, value == "queue" || value == "messageGroup" else { throw .invalidAttributeValue(name) }
            case "FifoThroughputLimit":
                guard fifo, value == "perQueue" || value == "perMessageGroupId" else { throw .invalidAttributeValue(name) }
            case "RedrivePolicy":
                if !value.isEmpty { _ = try RedrivePolicy(json: value) }
            case "RedriveAllowPolicy":
                if !value.isEmpty { _ = try RedriveAllowPolicy(json: value) }
            case "Policy":
                if !value.isEmpty { _ = try QueuePolicy(json: value) }
            default: break
            }
            if value.isEmpty, ["RedrivePolicy", "RedriveAllowPolicy", "Policy", "KmsMasterKeyId"].contains(name) {
                values[name] = nil
            } else {
                values[name] = value
            }
        }
        if fifo { values["FifoQueue"] = "true" }
    }
}

/// Where a queue's messages go after too many receives.
public struct RedrivePolicy: Sendable, Equatable {
    public var deadLetterTargetArn: String
    public var maxReceiveCount: Int

    public init(json: String) throws(MessagingError) {
        guard let o = (try? JSONSerialization.jsonObject(with: Data(json.utf8))) as? [String: Any],
            let arn = o["deadLetterTargetArn"] as? String, QueueARN(arn) != nil
        else {
            throw .invalidAttributeValue("RedrivePolicy", "Dead-letter target ARN is missing or not a queue ARN.")
        }
        let count = (o["maxReceiveCount"] as? Int) ?? (o["maxReceiveCount"] as? String).flatMap(Int.init)
        guard let count, (1...1000).contains(count) else {
            throw .invalidAttributeValue("RedrivePolicy", "Value maxReceiveCount must be an integer between 1 and 1000.")
        }
        deadLetterTargetArn = arn
        maxReceiveCount = count
    }
}

/// Which queues may use this one as their dead-letter queue.
public struct RedriveAllowPolicy: Sendable, Equatable {
    public var permission: String
    public var sources: [String]

    public init(json: String) throws(MessagingError) {
        guard let o = (try? JSONSerialization.jsonObject(with: Data(json.utf8))) as? [String: Any],
            let p = o["redrivePermission"] as? String, ["allowAll", "denyAll", "byQueue"].contains(p)
        else {
            throw .invalidAttributeValue("RedriveAllowPolicy", "redrivePermission must be allowAll, denyAll or byQueue.")
        }
        sources = o["sourceQueueArns"] as? [String] ?? []
        guard p != "byQueue" || (1...10).contains(sources.count) else {
            throw .invalidAttributeValue("RedriveAllowPolicy", "byQueue takes 1 to 10 sourceQueueArns.")
        }
        permission = p
    }

    public func allows(_ source: String) -> Bool {
        switch permission {
        case "allowAll": true
        case "denyAll": false
        default: sources.contains(source)
        }
    }
}

/// `arn:aws:sqs:REGION:ACCOUNT:NAME`.
public struct QueueARN: Sendable, Equatable {
    public var region: String
    public var account: String
    public var name: String

    public init?(_ arn: String) {
        let p = arn.split(separator: ":", omittingEmptySubsequences: false)
        guard p.count == 6, p[0] == "arn", p[1] == "aws", p[2] == "sqs", FunctionReference.isAccount(String(p[4])),
            QueueName.isValid(String(p[5]))
        else { return nil }
        region = String(p[3])
        account = String(p[4])
        name = String(p[5])
    }
}

public enum QueueName {
    /// 1–80 of letters, digits, `-` and `_`, a FIFO queue's ending in `.fifo`.
    public static func isValid(_ name: String) -> Bool {
        let base = name.hasSuffix(".fifo") ? String(name.dropLast(5)) : name
        return !base.isEmpty && name.utf8.count <= 80
            && base.utf8.allSatisfy { ($0 >= 48 && $0 <= 57) || ($0 >= 65 && $0 <= 90) || ($0 >= 97 && $0 <= 122) || $0 == 45 || $0 == 95 }
    }
}

/// A queue's (or topic's) access policy, in IAM's JSON grammar as far as queues use it:
/// statements allowing (or denying) principals (accounts, account ARNs, `*`, services)
/// actions (with `*` wildcards) on the resource, with an `aws:SourceArn` /
/// `aws:SourceAccount` condition. An explicit deny wins.
public struct QueuePolicy: Sendable, Equatable {
    struct Statement: Sendable, Equatable {
        var allow: Bool
        var principals: [String]
        var services: [String]
        var actions: [String]
        var sourceArns: [String]
        var sourceAccounts: [String]
    }
    var statements: [Statement]

    public init(json: String) throws(MessagingError) {
        guard let o = (try? JSONSerialization.jsonObject(with: Data(json.utf8))) as? [String: Any] else {
            throw .invalidAttributeValue("Policy", "The policy is not a JSON object.")
        }
        let raw: [[String: Any]]
        if let list = o["Statement"] as? [[String: Any]] {
            raw = list
        } else if let one = o["Statement"] as? [String: Any] {
            raw = [one]
        } else {
            throw .invalidAttributeValue("Policy", "The policy has no Statement.")
        }
        func strings(_ v: Any?) -> [String] { (v as? String).map { [$0] } ?? (v as? [String]) ?? [] }
        statements = try raw.map { (s) throws(MessagingError) -> Statement in
            guard let effect = s["Effect"] as? String, effect == "Allow" || effect == "Deny" else {
                throw .invalidAttributeValue("Policy", "Each statement needs an Effect of Allow or Deny.")
            }
            var principals: [String] = []
            var services: [String] = []
            if let p = s["Principal"] as? String {
                principals = [p]
            } else if let p = s["Principal"] as? [String: Any] {
                principals = strings(p["AWS"])
                services = strings(p["Service"])
            }
            let actions = strings(s["Action"])
            guard !actions.isEmpty, !(principals.isEmpty && services.isEmpty) else {
                throw .invalidAttributeValue("Policy", "Each statement needs a Principal and an Action.")
            }
            var arns: [String] = []
            var accounts: [String] = []
            if let c = s["Condition"] as? [String: Any] {
                for (_, test) in c {
                    guard let t = test as? [String: Any] else { continue }
                    arns += strings(t["aws:SourceArn"])
                    accounts += strings(t["aws:SourceAccount"])
                }
            }
            return Statement(
                allow: effect == "Allow", principals: principals, services: services, actions: actions, sourceArns: arns,
                sourceAccounts: accounts)
        }
    }

    /// Whether `account` (or `service` acting for `sourceArn`) may perform `action` (`sqs:SendMessage`).
    public func allows(account: String?, service: String? = nil, action: String, sourceArn: String? = nil) -> Bool {
        func matches(_ s: Statement) -> Bool {
            guard s.actions.contains(where: { Self.wildcard($0, action) }) else { return false }
            let byAccount =
                account.map { a in
                    s.principals.contains { $0 == "*" || $0 == a || $0 == "arn:aws:iam::\(a):root" }
                } ?? false
            let byService = service.map { s.services.contains($0) || s.principals.contains("*") } ?? false
            guard byAccount || byService else { return false }
            if !s.sourceArns.isEmpty {
                guard let sourceArn, s.sourceArns.contains(where: { Self.wildcard($0, sourceArn) }) else { return false }
            }
            if !s.sourceAccounts.isEmpty {
                guard let a = sourceArn.flatMap({ $0.split(separator: ":", omittingEmptySubsequences: false).dropFirst(4).first }),
                    s.sourceAccounts.contains(String(a))
                else { return false }
            }
            return true
        }
        if statements.contains(where: { !$0.allow && matches($0) }) { return false }
        return statements.contains { $0.allow && matches($0) }
    }

    /// IAM's `*` and `?` wildcards, case-insensitive for actions.
    static func wildcard(_ pattern: String, _ value: String) -> Bool {
        let p = Array(pattern.lowercased().utf8)
        let v = Array(value.lowercased().utf8)
        var memo = [[Bool?]](repeating: [Bool?](repeating: nil, count: v.count + 1), count: p.count + 1)
        func go(_ i: Int, _ j: Int) -> Bool {
            if let m = memo[i][j] { return m }
            let r: Bool
            if i == p.count {
                r = j == v.count
            } else if p[i] == UInt8(ascii: "*") {
                r = go(i + 1, j) || (j < v.count && go(i, j + 1))
            } else {
                r = j < v.count && (p[i] == UInt8(ascii: "?") || p[i] == v[j]) && go(i + 1, j + 1)
            }
            memo[i][j] = r
            return r
        }
        return go(0, 0)
    }
}
