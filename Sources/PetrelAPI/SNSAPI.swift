import Foundation
import Hummingbird
import Logging
import NIOCore
import PetrelCore
import PetrelMessaging

/// The SNS API in its query protocol (`POST /`, a form body with `Action=…`, XML
/// answers), as botocore's `sns` model describes it: topics, subscriptions of
/// functions and queues, publishing.
public struct SNSAPI: Sendable {
    let topics: TopicService
    let pipeline: RequestPipeline
    static let namespace = "http://sns.amazonaws.com/doc/2010-03-31/"
    typealias Node = QueryXML.Node

    public init(topics: TopicService, gate: Gatekeeper, logger: Logger) {
        self.topics = topics
        pipeline = RequestPipeline(gate: gate, logger: logger)
    }

    /// The topic a call names, as an ARN (`*` for none); a subscription's is its topic's.
    func topicARN(_ form: [String: String], account: String) -> String {
        if let t = form["TopicArn"] ?? form["ResourceArn"] { return t }
        if let s = form["SubscriptionArn"], let colon = s.lastIndex(of: ":") { return String(s[..<colon]) }
        if let name = form["Name"] { return "arn:aws:sns:\(topics.region):\(account):\(name)" }
        return "*"
    }

    func serve(_ req: Request, _ ctx: PetrelRequestContext) async -> Response {
        await pipeline.runQuery(
            req, ctx, service: "sns", limit: 2 * 1_048_576, namespace: Self.namespace,
            denied: LambdaError.Code("AuthorizationError", status: 403),
            audit: { form in
                var described: [String: String] = [:]
                for (k, v) in form
                where !(k == "Message" || k.hasPrefix("MessageAttributes.") || k.hasPrefix("PublishBatchRequestEntries.")) {
                    described[k] = v
                }
                if let m = form["Message"] { described["MessageBytes"] = "\(m.utf8.count)" }
                return (form["TopicArn"] ?? form["SubscriptionArn"] ?? form["ResourceArn"], described)
            },
            access: { form, action, call in [.init(action: "sns:" + action, resource: self.topicARN(form, account: call.caller.account))] }
        ) { form, action, call in
            try await dispatch(action, form, caller: call.caller)
        }
    }

    /// `GET /?Action=ConfirmSubscription&TopicArn=…&Token=…`: the SubscribeURL an HTTP(S)
    /// subscriber is sent. Unsigned, as on SNS: the token is the proof.
    func confirmUnsigned(_ req: Request, _ ctx: PetrelRequestContext) async -> Response {
        let q = Dictionary(Gatekeeper.query(req), uniquingKeysWith: { a, _ in a })
        let audit = RequestPipeline.Audit(
            resource: q["TopicArn"],
            parameters: AuditParameters.describe(query: [("TopicArn", q["TopicArn"] ?? "")], path: [:], body: nil, payloadIsData: false))
        return await pipeline.runUnsigned(req, ctx, action: "ConfirmSubscription", style: .queryXML, audit: audit) { requestID in
            let s = try topics.confirm(topicARN: q["TopicArn"] ?? "", token: q["Token"] ?? "")
            return QueryXML.response(
                "ConfirmSubscription", namespace: Self.namespace, [.text("SubscriptionArn", s.arn)], requestID: requestID)
        }
    }

    func required(_ f: [String: String], _ key: String) throws -> String {
        guard let v = f[key], !v.isEmpty else { throw MessagingError.snsInvalid("\(key) Reason: must be given") }
        return v
    }

    static func attributes(_ form: [String: String], _ prefix: String) throws -> [String: MessageAttribute] {
        var out: [String: MessageAttribute] = [:]
        for e in QueryXML.list(form, prefix, "entry") {
            guard let name = e["Name"], let type = e["Value.DataType"] else {
                throw MessagingError.snsInvalid("MessageAttributes Reason: each attribute needs a Name and a DataType")
            }
            var binary: Data?
            if let b = e["Value.BinaryValue"] {
                guard let d = Data(base64Encoded: b) else {
                    throw MessagingError.snsInvalid("MessageAttributes Reason: BinaryValue is not base64")
                }
                binary = d
            }
            out[name] = MessageAttribute(dataType: type, stringValue: e["Value.StringValue"], binaryValue: binary)
        }
        do { try MessageAttribute.check(out) } catch { throw MessagingError.snsInvalid("Message attributes: \(error.message)") }
        return out
    }

    static func page<T>(_ all: [T], token: String?, size: Int, key: (T) -> String) -> ([T], String?) {
        var rest = all
        if let token, let after = String(data: Data(base64Encoded: token) ?? Data(), encoding: .utf8) {
            rest = all.filter { key($0) > after }
        }
        let page = Array(rest.prefix(size))
        let next = rest.count > size ? page.last.map { Data(key($0).utf8).base64EncodedString() } : nil
        return (page, next)
    }

    func subscriptionNode(_ s: SubscriptionRecord) -> Node {
        .element(
            "member",
            [
                .text("SubscriptionArn", s.confirmed ? s.arn : "PendingConfirmation"), .text("Owner", s.account),
                .text("Protocol", s.protocol), .text("Endpoint", s.endpoint),
                .text("TopicArn", "arn:aws:sns:\(topics.region):\(s.account):\(s.topic)"),
            ])
    }

    static func entries(_ d: [String: String]) -> Node {
        .element("Attributes", d.keys.sorted().map { .element("entry", [.text("key", $0), .text("value", d[$0]!)]) })
    }

    func dispatch(_ action: String, _ f: [String: String], caller: Caller) async throws -> [Node] {
        let account = caller.account
        switch action {
        case "CreateTopic":
            var tags: [String: String] = [:]
            for t in QueryXML.list(f, "Tags") { if let k = t["Key"] { tags[k] = t["Value"] ?? "" } }
            let t = try topics.create(
                account: account, name: try required(f, "Name"), attributes: QueryXML.map(f, "Attributes"), tags: tags)
            return [.text("TopicArn", t.arn(region: topics.region))]
        case "ListTopics":
            let (page, next) = Self.page(try topics.store.topics(account: account), token: f["NextToken"], size: 100) { $0.name }
            var out: [Node] = [.element("Topics", page.map { .element("member", [.text("TopicArn", $0.arn(region: topics.region))]) })]
            if let next { out.append(.text("NextToken", next)) }
            return out
        case "DeleteTopic":
            // Deleting a topic that does not exist succeeds, as on SNS.
            if let a = TopicARN(try required(f, "TopicArn")), a.account == account,
                let t = try topics.store.topic(account: a.account, name: a.name)
            {
                try topics.delete(t)
            }
            return []
        case "GetTopicAttributes":
            let t = try topics.topic(arn: try required(f, "TopicArn"), caller: account, action: "sns:GetTopicAttributes")
            return [Self.entries(try topics.attributes(t))]
        case "SetTopicAttributes":
            let t = try topics.topic(arn: try required(f, "TopicArn"), caller: account, action: "sns:SetTopicAttributes")
            try topics.setAttribute(t, name: try required(f, "AttributeName"), value: f["AttributeValue"] ?? "")
            return []
        case "Subscribe":
            let t = try topics.topic(arn: try required(f, "TopicArn"), caller: account, action: "sns:Subscribe")
            let s = try await topics.subscribe(
                t, protocol: try required(f, "Protocol"), endpoint: try required(f, "Endpoint"), attributes: QueryXML.map(f, "Attributes"),
                caller: account)
            return [.text("SubscriptionArn", s.confirmed || f["ReturnSubscriptionArn"] == "true" ? s.arn : "pending confirmation")]
        case "ConfirmSubscription":
            let s = try topics.confirm(topicARN: try required(f, "TopicArn"), token: try required(f, "Token"))
            return [.text("SubscriptionArn", s.arn)]
        case "Unsubscribe":
            try topics.unsubscribe(try topics.subscription(arn: try required(f, "SubscriptionArn"), caller: account))
            return []
        case "GetSubscriptionAttributes":
            let s = try topics.subscription(arn: try required(f, "SubscriptionArn"), caller: account)
            var attrs = s.attributes
            attrs["ConfirmationToken"] = nil
            attrs["SubscriptionArn"] = s.arn
            attrs["TopicArn"] = "arn:aws:sns:\(topics.region):\(s.account):\(s.topic)"
            attrs["Protocol"] = s.protocol
            attrs["Endpoint"] = s.endpoint
            attrs["Owner"] = s.account
            attrs["ConfirmationWasAuthenticated"] = "true"
            attrs["PendingConfirmation"] = s.confirmed ? "false" : "true"
            attrs["RawMessageDelivery"] = s.raw ? "true" : "false"
            return [Self.entries(attrs)]
        case "SetSubscriptionAttributes":
            let s = try topics.subscription(arn: try required(f, "SubscriptionArn"), caller: account)
            try topics.setSubscriptionAttribute(s, name: try required(f, "AttributeName"), value: f["AttributeValue"] ?? "")
            return []
        case "ListSubscriptions", "ListSubscriptionsByTopic":
            var topic: String?
            if action == "ListSubscriptionsByTopic" {
                topic = try topics.topic(arn: try required(f, "TopicArn"), caller: account, action: "sns:ListSubscriptionsByTopic").name
            }
            let (page, next) = Self.page(try topics.store.subscriptions(account: account, topic: topic), token: f["NextToken"], size: 100) {
                "\($0.created)/\($0.arn)"
            }
            var out: [Node] = [.element("Subscriptions", page.map(subscriptionNode))]
            if let next { out.append(.text("NextToken", next)) }
            return out
        case "Publish":
            guard let arn = f["TopicArn"] ?? f["TargetArn"] else {
                throw MessagingError.snsInvalid("TopicArn or TargetArn Reason: no value for required parameter")
            }
            if f["PhoneNumber"] != nil { throw MessagingError.snsInvalid("Petrel does not send SMS") }
            let t = try topics.topic(arn: arn, caller: account, action: "sns:Publish")
            let id = try await topics.publish(
                t,
                .init(
                    message: f["Message"] ?? "", subject: f["Subject"], attributes: try Self.attributes(f, "MessageAttributes"),
                    structure: f["MessageStructure"]))
            return [.text("MessageId", id)]
        case "PublishBatch":
            let t = try topics.topic(arn: try required(f, "TopicArn"), caller: account, action: "sns:Publish")
            let entries = QueryXML.list(f, "PublishBatchRequestEntries")
            guard !entries.isEmpty else { throw MessagingError("EmptyBatchRequest", "The batch request doesn't contain any entries") }
            guard entries.count <= 10 else {
                throw MessagingError("TooManyEntriesInBatchRequest", "The batch request contains more entries than permissible")
            }
            let ids = entries.map { $0["Id"] ?? "" }
            guard Set(ids).count == ids.count else {
                throw MessagingError("BatchEntryIdsNotDistinct", "Two or more batch entries in the request have the same Id")
            }
            var ok: [Node] = []
            var failed: [Node] = []
            var prepared: [(String, TopicService.Publication)] = []
            var total = 0
            for e in entries {
                var attrs: [String: String] = [:]
                for (k, v) in e where k.hasPrefix("MessageAttributes.") { attrs[String(k.dropFirst("MessageAttributes.".count))] = v }
                do {
                    let p = TopicService.Publication(
                        message: e["Message"] ?? "", subject: e["Subject"],
                        attributes: try Self.attributes(attrs.reduce(into: [:]) { $0["A." + $1.key] = $1.value }, "A"),
                        structure: e["MessageStructure"])
                    try topics.check(p)
                    total += p.message.utf8.count
                    prepared.append((e["Id"] ?? "", p))
                } catch let error as MessagingError {
                    failed.append(
                        .element(
                            "member",
                            [
                                .text("Id", e["Id"] ?? ""), .text("Code", error.name), .text("Message", error.message),
                                .text("SenderFault", "true"),
                            ]))
                }
            }
            guard total <= TopicService.maxMessageBytes else {
                throw MessagingError("BatchRequestTooLong", "The length of all the messages put together is more than the limit.")
            }
            for (id, p) in prepared {
                let messageID = try await topics.publish(t, p)
                ok.append(.element("member", [.text("Id", id), .text("MessageId", messageID)]))
            }
            return [.element("Successful", ok), .element("Failed", failed)]
        case "ListTagsForResource":
            let t = try topics.topic(arn: try required(f, "ResourceArn"), caller: account, action: "sns:ListTagsForResource")
            return [.element("Tags", t.tags.keys.sorted().map { .element("member", [.text("Key", $0), .text("Value", t.tags[$0]!)]) })]
        case "TagResource":
            let t = try topics.topic(arn: try required(f, "ResourceArn"), caller: account, action: "sns:TagResource")
            var tags: [String: String] = [:]
            for m in QueryXML.list(f, "Tags") { if let k = m["Key"] { tags[k] = m["Value"] ?? "" } }
            try topics.tag(t, add: tags, remove: [])
            return []
        case "UntagResource":
            let t = try topics.topic(arn: try required(f, "ResourceArn"), caller: account, action: "sns:UntagResource")
            try topics.tag(t, add: [:], remove: QueryXML.list(f, "TagKeys").compactMap { $0[""] })
            return []
        default:
            throw MessagingError(
                "InvalidAction", action.isEmpty ? "The request names no action." : "Petrel does not implement \(action) of SNS.")
        }
    }
}
