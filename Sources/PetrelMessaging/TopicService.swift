import Foundation
import Logging
import Metrics
import PetrelCore
import Synchronization

/// How a topic reaches a function: the platform above this layer queues an
/// asynchronous invocation (once the function's policy lets the topic in).
public protocol FunctionDelivery: Sendable {
    /// Queues `event` for the function `arn` durably; throws when it does not exist or its
    /// resource policy does not let `topicARN` (of `topicAccount`) invoke it.
    func deliver(functionARN arn: String, event: Data, topicARN: String, topicAccount: String) async throws
}

/// The SNS-compatible topics: subscriptions of functions and queues (in this
/// process), filter policies, and publishing. A publish is answered once every
/// queue and function it goes to has it stored (fsynced).
public final class TopicService: Sendable {
    public let store: TopicStore
    let queues: QueueService
    let functions: any FunctionDelivery
    public let region: String
    let logger: Logger
    /// HTTP(S) subscribers: the endpoints the operator allows, the outbox and its sender.
    let allow: HTTPEndpointAllowList
    let outbox: OutboxStore
    let sender: HTTPDeliveryService?

    public init(
        store: TopicStore, queues: QueueService, functions: any FunctionDelivery, outbox: OutboxStore, allow: HTTPEndpointAllowList,
        sender: HTTPDeliveryService?, region: String, logger: Logger
    ) {
        self.store = store
        self.queues = queues
        self.functions = functions
        self.outbox = outbox
        self.allow = allow
        self.sender = sender
        self.region = region
        self.logger = logger
    }

    public static let settableTopicAttributes: Set<String> = [
        "DisplayName", "Policy", "DeliveryPolicy", "KmsMasterKeyId", "TracingConfig", "SignatureVersion", "ArchivePolicy",
    ]
    public static let settableSubscriptionAttributes: Set<String> = [
        "FilterPolicy", "FilterPolicyScope", "RawMessageDelivery", "RedrivePolicy", "DeliveryPolicy", "SubscriptionRoleArn",
    ]
    /// SNS's limit on a message with its attributes: 256 KiB.
    public static let maxMessageBytes = 262_144

    // MARK: - topics

    public func create(account: String, name: String, attributes: [String: String], tags: [String: String]) throws -> TopicRecord {
        guard TopicStore.isValidName(name) else {
            if name.hasSuffix(".fifo") {
                throw MessagingError.snsInvalid("Petrel does not offer FIFO topics; publish to a FIFO queue directly.")
            }
            throw MessagingError.snsInvalid(
                "Topic Name: must be 1 to 256 letters, digits, hyphens or underscores.")
        }
        if attributes["FifoTopic"] == "true" { throw MessagingError.snsInvalid("Petrel does not offer FIFO topics.") }
        for k in attributes.keys where !Self.settableTopicAttributes.contains(k) && k != "FifoTopic" {
            throw MessagingError.snsInvalid("Attributes Reason: Unknown attribute \(k)")
        }
        if let p = attributes["Policy"] { _ = try QueuePolicy(json: p) }
        return try store.create(
            TopicRecord(
                account: account, name: name, attributes: attributes.filter { $0.key != "FifoTopic" }, tags: tags,
                created: queues.now()))
    }

    /// The topic an ARN names, which the caller may use for `action` (its own, or one whose policy allows it).
    public func topic(arn: String, caller: String, action: String) throws -> TopicRecord {
        guard let a = TopicARN(arn) else { throw MessagingError.snsInvalid("TopicArn Reason: \(arn) is not a topic ARN") }
        guard let t = try store.topic(account: a.account, name: a.name) else { throw MessagingError.snsNotFound("Topic") }
        if a.account != caller {
            guard let p = t.attributes["Policy"].flatMap({ try? QueuePolicy(json: $0) }), p.allows(account: caller, action: action) else {
                throw MessagingError.snsAuthorization(
                    "User: arn:aws:iam::\(caller):root is not authorized to perform: \(action) on resource: \(arn)")
            }
        }
        return t
    }

    public func delete(_ t: TopicRecord) throws { try store.delete(account: t.account, name: t.name) }

    public func attributes(_ t: TopicRecord) throws -> [String: String] {
        let subs = try store.subscriptions(account: t.account, topic: t.name)
        var out = t.attributes
        let arn = t.arn(region: region)
        out["TopicArn"] = arn
        out["Owner"] = t.account
        out["DisplayName"] = out["DisplayName"] ?? ""
        out["SubscriptionsConfirmed"] = "\(subs.filter(\.confirmed).count)"
        out["SubscriptionsPending"] = "\(subs.filter { !$0.confirmed }.count)"
        out["SubscriptionsDeleted"] = "0"
        if out["Policy"] == nil {
            out["Policy"] =
                #"{"Version":"2008-10-17","Id":"__default_policy_ID","Statement":[{"Sid":"__default_statement_ID","Effect":"Allow","Principal":{"AWS":"*"},"Action":["SNS:Publish","SNS:Subscribe","SNS:GetTopicAttributes"],"Resource":"\#(arn)","Condition":{"StringEquals":{"AWS:SourceOwner":"\#(t.account)"}}}]}"#
        }
        return out
    }

    public func setAttribute(_ t: TopicRecord, name: String, value: String) throws {
        guard Self.settableTopicAttributes.contains(name) else { throw MessagingError.snsInvalid("AttributeName") }
        if name == "Policy", !value.isEmpty { _ = try QueuePolicy(json: value) }
        var u = t
        u.attributes[name] = value.isEmpty ? nil : value
        try store.update(u)
    }

    public func tag(_ t: TopicRecord, add: [String: String], remove: [String]) throws {
        var u = t
        u.tags.merge(add) { _, n in n }
        for k in remove { u.tags[k] = nil }
        guard u.tags.count <= 50 else {
            throw MessagingError("TagLimitExceeded", "Could not complete request: tag quota of per resource exceeded")
        }
        try store.update(u)
    }

    // MARK: - subscriptions

    public func subscribe(_ t: TopicRecord, protocol proto: String, endpoint: String, attributes: [String: String], caller: String)
        async throws -> SubscriptionRecord
    {
        let topicARN = t.arn(region: region)
        switch proto {
        case "lambda":
            let p = endpoint.split(separator: ":", omittingEmptySubsequences: false)
            guard p.count >= 7, p.count <= 8, p[0] == "arn", p[2] == "lambda", p[5] == "function" else {
                throw MessagingError.snsInvalid("Lambda endpoint ARN")
            }
        case "sqs":
            guard let q = try queues.queue(arn: endpoint) else { throw MessagingError.snsInvalid("SQS endpoint ARN") }
            if q.account != t.account {
                guard let p = q.settings.policy,
                    p.allows(account: t.account, service: "sns.amazonaws.com", action: "sqs:SendMessage", sourceArn: topicARN)
                else {
                    throw MessagingError.snsAuthorization(
                        "The queue \(endpoint) belongs to another account and its policy does not let this topic send to it.")
                }
            }
        case "http", "https":
            guard endpoint.lowercased().hasPrefix(proto + "://"), allow.allows(endpoint) else {
                throw MessagingError.snsInvalid(
                    "Endpoint \(endpoint) is not an address the operator lets topics deliver to (sns_http_allow).")
            }
        default:
            throw MessagingError.snsInvalid(
                "Petrel's topics deliver to the protocols lambda, sqs, http and https; not \(proto)")
        }
        var checked = try checkSubscriptionAttributes(attributes)
        let web = proto == "http" || proto == "https"
        if web {
            checked["PendingConfirmation"] = "true"
            // The token is what lets an unsigned request confirm: from the system's random source.
            var rng = SystemRandomNumberGenerator()
            checked["ConfirmationToken"] = (0..<4).map { _ in FastIDs.hex(rng.next(), 16) }.joined()
        }
        let s = SubscriptionRecord(
            arn: topicARN + ":" + FastIDs.uuid(), account: t.account, topic: t.name, protocol: proto, endpoint: endpoint,
            attributes: checked, created: queues.now())
        let stored = try store.subscribe(s)
        if web, stored == s, let token = s.attributes["ConfirmationToken"] {
            // As SNS: the endpoint gets a SubscriptionConfirmation whose SubscribeURL (or
            // ConfirmSubscription with its token) confirms the subscription.
            let id = FastIDs.uuid()
            let url =
                "\(queues.baseURL)/?Action=ConfirmSubscription&TopicArn=\(topicARN.addingPercentEncoding(withAllowedCharacters: Self.unreserved) ?? topicARN)&Token=\(token)"
            let body: [String: Any] = [
                "Type": "SubscriptionConfirmation", "MessageId": id, "Token": token, "TopicArn": topicARN,
                "Message":
                    "You have chosen to subscribe to the topic \(topicARN).\nTo confirm the subscription, visit the SubscribeURL included in this message.",
                "SubscribeURL": url, "Timestamp": PlatformClock.iso8601(millis: queues.now()), "SignatureVersion": "1", "Signature": "",
                "SigningCertURL": "",
            ]
            try await outbox.add(
                account: t.account, subscription: s.arn, messageType: "SubscriptionConfirmation", messageID: id,
                body: Data(Self.json(body).utf8), now: queues.now())
            sender?.ring()
        }
        return stored
    }

    /// Confirms the pending HTTP(S) subscription of `topicARN` that `token` was sent to.
    public func confirm(topicARN: String, token: String) throws -> SubscriptionRecord {
        guard let a = TopicARN(topicARN), !token.isEmpty,
            var s = try store.subscriptions(account: a.account, topic: a.name).first(where: { $0.attributes["ConfirmationToken"] == token })
        else {
            throw MessagingError.snsInvalid("Invalid token")
        }
        s.attributes["PendingConfirmation"] = nil
        s.attributes["ConfirmationToken"] = nil
        try store.update(s)
        return s
    }

    /// What a query string carries unescaped (RFC 3986's unreserved characters).
    static let unreserved = CharacterSet(charactersIn: "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_.~")

    func checkSubscriptionAttributes(_ attributes: [String: String]) throws -> [String: String] {
        for (k, v) in attributes {
            guard Self.settableSubscriptionAttributes.contains(k) else {
                throw MessagingError.snsInvalid("Attributes Reason: Unknown attribute \(k)")
            }
            switch k {
            case "FilterPolicy":
                if !v.isEmpty {
                    do { _ = try EventPattern(json: v) } catch { throw MessagingError.snsInvalid("Filter policy: \(error.message)") }
                }
            case "FilterPolicyScope":
                guard v == "MessageAttributes" || v == "MessageBody" else {
                    throw MessagingError.snsInvalid(
                        "Attributes Reason: FilterPolicyScope: Invalid value [\(v)]. Please use either MessageBody or MessageAttributes")
                }
            case "RawMessageDelivery":
                guard v == "true" || v == "false" else {
                    throw MessagingError.snsInvalid("Attributes Reason: RawMessageDelivery: Invalid value [\(v)]. Must be true or false.")
                }
            default: break
            }
        }
        return attributes.filter { !$0.value.isEmpty }
    }

    public func subscription(arn: String, caller: String) throws -> SubscriptionRecord {
        guard let s = try store.subscription(arn: arn), s.account == caller else { throw MessagingError.snsNotFound("Subscription") }
        return s
    }

    public func setSubscriptionAttribute(_ s: SubscriptionRecord, name: String, value: String) throws {
        var u = s
        let checked = try checkSubscriptionAttributes([name: value])
        u.attributes[name] = checked[name]
        try store.update(u)
    }

    public func unsubscribe(_ s: SubscriptionRecord) throws { try store.unsubscribe(arn: s.arn) }

    // MARK: - publishing

    public struct Publication: Sendable {
        public var message: String
        public var subject: String?
        public var attributes: [String: MessageAttribute]
        /// `json`: `message` is an object with a `default` and per-protocol messages.
        public var structure: String?
        public init(message: String, subject: String? = nil, attributes: [String: MessageAttribute] = [:], structure: String? = nil) {
            self.message = message
            self.subject = subject
            self.attributes = attributes
            self.structure = structure
        }
    }

    /// Checks a publication as SNS does.
    public func check(_ p: Publication) throws {
        guard !p.message.isEmpty else { throw MessagingError.snsInvalid("Empty message") }
        guard p.message.utf8.count + MessageAttribute.size(p.attributes) <= Self.maxMessageBytes else {
            throw MessagingError.snsInvalid("Message too long")
        }
        if let s = p.subject {
            guard !s.isEmpty, s.count <= 100, !s.contains("\n") else { throw MessagingError.snsInvalid("Subject") }
        }
        guard p.attributes.count <= 10 else { throw MessagingError.snsInvalid("Message attributes: at most 10") }
        if p.structure != nil {
            guard p.structure == "json",
                let o = (try? JSONSerialization.jsonObject(with: Data(p.message.utf8))) as? [String: Any], o["default"] is String
            else {
                throw MessagingError.snsInvalid("Message Structure - No default entry in JSON message body")
            }
        }
    }

    /// Delivers one publication to every subscription of `t` whose filter lets it through;
    /// returns its message id once each delivery is stored.
    public func publish(_ t: TopicRecord, _ p: Publication) async throws -> String {
        try check(p)
        let id = FastIDs.uuid()
        let topicARN = t.arn(region: region)
        let timestamp = PlatformClock.iso8601(millis: queues.now())
        for s in try store.subscriptions(account: t.account, topic: t.name) where s.confirmed {
            guard passes(s, p) else {
                Counter(label: "petrel_sns_deliveries_total", dimensions: [("protocol", s.protocol), ("outcome", "filtered")]).increment()
                continue
            }
            let message = Self.message(p, for: s.protocol)
            do {
                switch s.protocol {
                case "sqs":
                    guard let q = try queues.queue(arn: s.endpoint) else { throw MessagingError.noQueue }
                    let body: String
                    var attributes: [String: MessageAttribute] = [:]
                    if s.raw {
                        body = message
                        attributes = p.attributes
                    } else {
                        body = Self.json(
                            Self.envelope(
                                p, message: message, id: id, topicARN: topicARN, timestamp: timestamp, subscription: s.arn, lambda: false))
                    }
                    var m = NewMessage(id: FastIDs.uuid(), body: body, attributes: attributes, sender: "sns.amazonaws.com")
                    if q.fifo {
                        m.groupID = "sns"
                        m.dedupID = id
                    }
                    _ = try await queues.send(q, [m])
                case "http", "https":
                    let body =
                        s.raw
                        ? message
                        : Self.json(
                            Self.envelope(
                                p, message: message, id: id, topicARN: topicARN, timestamp: timestamp, subscription: s.arn, lambda: false))
                    try await outbox.add(
                        account: t.account, subscription: s.arn, messageType: "Notification", messageID: id, body: Data(body.utf8),
                        now: queues.now())
                    sender?.ring()
                    continue
                case "lambda":
                    let record: [String: Any] = [
                        "EventSource": "aws:sns", "EventVersion": "1.0", "EventSubscriptionArn": s.arn,
                        "Sns": Self.envelope(
                            p, message: message, id: id, topicARN: topicARN, timestamp: timestamp, subscription: s.arn, lambda: true),
                    ]
                    let event = try JSONSerialization.data(withJSONObject: ["Records": [record]], options: [.withoutEscapingSlashes])
                    try await functions.deliver(functionARN: s.endpoint, event: event, topicARN: topicARN, topicAccount: t.account)
                default:
                    continue
                }
                Counter(label: "petrel_sns_deliveries_total", dimensions: [("protocol", s.protocol), ("outcome", "delivered")]).increment()
            } catch {
                // As SNS: a subscriber that cannot take the message does not fail the publish.
                Counter(label: "petrel_sns_deliveries_total", dimensions: [("protocol", s.protocol), ("outcome", "failed")]).increment()
                logger.warning(
                    "a topic could not deliver to a subscriber",
                    metadata: ["topic": "\(topicARN)", "subscription": "\(s.arn)", "endpoint": "\(s.endpoint)", "error": "\(error)"])
            }
        }
        return id
    }

    /// The message a protocol gets (a `json` structure's entry for it, else its `default`).
    static func message(_ p: Publication, for proto: String) -> String {
        guard p.structure == "json", let o = (try? JSONSerialization.jsonObject(with: Data(p.message.utf8))) as? [String: Any] else {
            return p.message
        }
        return (o[proto] as? String) ?? (o["default"] as? String) ?? p.message
    }

    /// Filter policies as parsed, by their text: a publish checks every subscription's, and
    /// parsing one costs more than matching it. (Bounded: emptied past 1,000 policies.)
    private let policies = Mutex<[String: EventPattern]>([:])

    func filterPolicy(_ raw: String) -> EventPattern? {
        if let p = policies.withLock({ $0[raw] }) { return p }
        guard let p = try? EventPattern(json: raw) else { return nil }
        policies.withLock { c in
            if c.count >= 1000 { c.removeAll() }
            c[raw] = p
        }
        return p
    }

    /// Whether a subscription's filter policy lets a publication through.
    func passes(_ s: SubscriptionRecord, _ p: Publication) -> Bool {
        guard let raw = s.attributes["FilterPolicy"], let pattern = filterPolicy(raw) else { return true }
        if s.attributes["FilterPolicyScope"] == "MessageBody" {
            guard let body = try? JSONSerialization.jsonObject(with: Data(p.message.utf8), options: [.fragmentsAllowed]) else {
                return false
            }
            return pattern.matches(body)
        }
        var fields: [String: Any] = [:]
        for (name, a) in p.attributes {
            guard let v = a.stringValue else { continue }
            if a.dataType.hasPrefix("Number") {
                fields[name] = Double(v) ?? v
            } else if a.dataType == "String.Array", let list = try? JSONSerialization.jsonObject(with: Data(v.utf8)) as? [Any] {
                fields[name] = list
            } else {
                fields[name] = v
            }
        }
        return pattern.matches(fields)
    }

    /// SNS's notification document (the SQS message body; `Sns` of a Lambda record, whose
    /// URL fields are spelled `SigningCertUrl`/`UnsubscribeUrl`). Petrel does not sign
    /// notifications: `Signature` is empty.
    static func envelope(
        _ p: Publication, message: String, id: String, topicARN: String, timestamp: String, subscription: String, lambda: Bool
    ) -> [String: Any] {
        var o: [String: Any] = [
            "Type": "Notification", "MessageId": id, "TopicArn": topicARN, "Message": message, "Timestamp": timestamp,
            "SignatureVersion": "1", "Signature": "",
            lambda ? "SigningCertUrl" : "SigningCertURL": "",
            lambda ? "UnsubscribeUrl" : "UnsubscribeURL": "",
        ]
        o["Subject"] = p.subject ?? (lambda ? NSNull() : nil)
        var attrs: [String: Any] = [:]
        for (name, a) in p.attributes {
            attrs[name] = ["Type": a.dataType, "Value": a.stringValue ?? a.binaryValue?.base64EncodedString() ?? ""]
        }
        if lambda || !attrs.isEmpty { o["MessageAttributes"] = attrs }
        return o
    }

    static func json(_ o: [String: Any]) -> String {
        String(
            decoding: (try? JSONSerialization.data(withJSONObject: o, options: [.sortedKeys, .withoutEscapingSlashes])) ?? Data(),
            as: UTF8.self)
    }

}
