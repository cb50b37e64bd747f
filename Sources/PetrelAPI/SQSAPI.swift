import Foundation
import HTTPTypes
import Hummingbird
import Logging
import NIOCore
import PetrelCore
import PetrelMessaging

/// The SQS API in its JSON protocol (`POST /`, `X-Amz-Target: AmazonSQS.…`, JSON 1.0),
/// as botocore's `sqs` model describes it, on the API's own listener; queue URLs are
/// `http(s)://<API address>/<account>/<name>`.
public struct SQSAPI: Sendable {
    let queues: QueueService
    let pipeline: RequestPipeline
    let logger: Logger

    public init(queues: QueueService, gate: Gatekeeper, logger: Logger) {
        self.queues = queues
        pipeline = RequestPipeline(gate: gate, logger: logger)
        self.logger = logger
    }

    /// A request of up to 1 MiB of messages, escaped in JSON.
    static let requestLimit = 4 * 1_048_576
    static let dataActions: Set<String> = ["SendMessage", "SendMessageBatch"]

    func serve(_ req: Request, _ ctx: PetrelRequestContext) async -> Response {
        let op = JSONProtocol.operation(req, prefix: "AmazonSQS.")
        // The body as the operation read it: the audit names its queue without reading it again.
        var parsed: [String: Any]?
        return await pipeline.run(
            req, ctx, action: op, limit: Self.requestLimit, service: "sqs", style: .sqsJSON,
            tooLarge: { _ in LambdaError.from(MessagingError("BatchRequestTooLong", "The request is larger than SQS accepts.")) },
            audit: { body in
                let resource = (parsed?["QueueUrl"] as? String) ?? (parsed?["QueueName"] as? String)
                return .init(
                    resource: resource,
                    parameters: AuditParameters.describe(query: [], path: [:], body: body, payloadIsData: Self.dataActions.contains(op)))
            },
            access: { call, _ in
                // A role's session: the body is read here, once, for the operation too.
                parsed = try? JSONProtocol.object(call.body, invalid: MessagingError("SerializationException", ""))
                return [.init(action: "sqs:" + op, resource: self.queueARN(parsed ?? [:], account: call.caller.account))]
            },
            denied: LambdaError.Code("AccessDenied", status: 403)
        ) { call in
            let body =
                try parsed
                ?? JSONProtocol.object(
                    call.body, invalid: MessagingError("SerializationException", "The request body is not a JSON object."))
            parsed = body
            return try JSONProtocol.response(try await dispatch(op, body, caller: call.caller), version: "1.0")
        }
    }

    /// The queue a call names, as an ARN (`*` for none): its URL's owner and name, as the
    /// queue service reads them; `QueueName` names one of the caller's (or `QueueOwnerAWSAccountId`'s).
    func queueARN(_ b: [String: Any], account: String) -> String {
        if let url = b["QueueUrl"] as? String {
            guard let (owner, name) = QueueService.address(url, caller: account) else { return "*" }
            return "arn:aws:sqs:\(queues.region):\(owner):\(name)"
        }
        if let name = b["QueueName"] as? String {
            return "arn:aws:sqs:\(queues.region):\((b["QueueOwnerAWSAccountId"] as? String) ?? account):\(name)"
        }
        return "*"
    }

    func dispatch(_ op: String, _ b: [String: Any], caller: Caller) async throws -> [String: Any] {
        let account = caller.account
        switch op {
        case "CreateQueue":
            let name = try Self.string(b, "QueueName")
            let q = try queues.create(
                account: account, name: name, attributes: try Self.map(b, "Attributes"), tags: try Self.map(b, "tags"))
            return ["QueueUrl": queues.url(q)]
        case "GetQueueUrl":
            let name = try Self.string(b, "QueueName")
            let owner = (b["QueueOwnerAWSAccountId"] as? String) ?? account
            let q = try queues.queue(url: "\(owner)/\(name)", caller: account, action: "sqs:GetQueueUrl")
            return ["QueueUrl": queues.url(q)]
        case "ListQueues":
            let prefix = b["QueueNamePrefix"] as? String
            let max = try Self.int(b, "MaxResults", 1...1000)
            var all = try queues.list(account: account, prefix: prefix)
            if let token = b["NextToken"] as? String {
                guard let after = String(data: Data(base64Encoded: token) ?? Data(), encoding: .utf8) else {
                    throw MessagingError.invalidParameter("Invalid NextToken value.")
                }
                all = all.filter { $0.name > after }
            }
            let page = Array(all.prefix(max ?? 1000))
            var out: [String: Any] = ["QueueUrls": page.map(queues.url)]
            if let max, all.count > max, let last = page.last { out["NextToken"] = Data(last.name.utf8).base64EncodedString() }
            return out
        case "DeleteQueue":
            try queues.delete(try queue(b, account, "sqs:DeleteQueue"))
            return [:]
        case "PurgeQueue":
            try queues.purge(try queue(b, account, "sqs:PurgeQueue"))
            return [:]
        case "GetQueueAttributes":
            let q = try queue(b, account, "sqs:GetQueueAttributes")
            let names = (b["AttributeNames"] as? [String]) ?? []
            let attrs = try queues.attributes(q, names: names)
            return attrs.isEmpty ? [:] : ["Attributes": attrs]
        case "SetQueueAttributes":
            try queues.setAttributes(try queue(b, account, "sqs:SetQueueAttributes"), try Self.map(b, "Attributes"))
            return [:]
        case "TagQueue":
            try queues.tag(try queue(b, account, "sqs:TagQueue"), try Self.map(b, "Tags"))
            return [:]
        case "UntagQueue":
            try queues.untag(try queue(b, account, "sqs:UntagQueue"), (b["TagKeys"] as? [String]) ?? [])
            return [:]
        case "ListQueueTags":
            let q = try queue(b, account, "sqs:ListQueueTags")
            return q.tags.isEmpty ? [:] : ["Tags": q.tags]
        case "ListDeadLetterSourceQueues":
            let q = try queue(b, account, "sqs:ListDeadLetterSourceQueues")
            return ["queueUrls": try queues.deadLetterSources(q).map(queues.url)]
        case "SendMessage":
            let q = try queue(b, account, "sqs:SendMessage")
            let m = try queues.prepare(q, try Self.outgoing(b), sender: caller.accessKey)
            let sent = try await queues.send(q, [m])[0]
            return Self.sentShape(sent, fifo: q.fifo)
        case "SendMessageBatch":
            return try await sendBatch(b, caller: caller)
        case "ReceiveMessage":
            return try await receive(b, account: account)
        case "DeleteMessage":
            let q = try queue(b, account, "sqs:DeleteMessage")
            try queues.delete(q, handle: try Self.string(b, "ReceiptHandle"))
            return [:]
        case "DeleteMessageBatch":
            let q = try queue(b, account, "sqs:DeleteMessage")
            let entries = try Self.entries(b)
            let handles = try entries.map { try Self.string($0, "ReceiptHandle") }
            let results = try queues.delete(q, handles: handles)
            return Self.batchResult(entries, results.map { $0.map { _ in [:] } })
        case "ChangeMessageVisibility":
            let q = try queue(b, account, "sqs:ChangeMessageVisibility")
            let timeout =
                try Self.int(b, "VisibilityTimeout", 0...43_200) ?? { throw MessagingError.missingParameter("VisibilityTimeout") }()
            if case .failure(let e) = try queues.changeVisibility(q, handles: [try Self.string(b, "ReceiptHandle")], timeout: timeout)[0] {
                throw e
            }
            return [:]
        case "ChangeMessageVisibilityBatch":
            let q = try queue(b, account, "sqs:ChangeMessageVisibility")
            let entries = try Self.entries(b)
            var results: [Result<[String: Any], MessagingError>] = []
            for e in entries {
                do {
                    let timeout = try Self.int(e, "VisibilityTimeout", 0...43_200) ?? 0
                    results.append(
                        try queues.changeVisibility(q, handles: [try Self.string(e, "ReceiptHandle")], timeout: timeout)[0].map { [:] })
                } catch let error as MessagingError {
                    results.append(.failure(error))
                }
            }
            return Self.batchResult(entries, results)
        default:
            throw MessagingError(
                "UnsupportedOperation", op.isEmpty ? "The request names no SQS operation." : "Petrel does not implement \(op) of SQS.")
        }
    }

    func queue(_ b: [String: Any], _ account: String, _ action: String) throws -> QueueRecord {
        try queues.queue(url: try Self.string(b, "QueueUrl"), caller: account, action: action)
    }

    func sendBatch(_ b: [String: Any], caller: Caller) async throws -> [String: Any] {
        let q = try queue(b, caller.account, "sqs:SendMessage")
        let entries = try Self.entries(b)
        var ready: [(Int, NewMessage)] = []
        var results = [Result<[String: Any], MessagingError>?](repeating: nil, count: entries.count)
        var total = 0
        for (i, e) in entries.enumerated() {
            do {
                let m = try queues.prepare(q, try Self.outgoing(e), sender: caller.accessKey)
                total += m.body.utf8.count + MessageAttribute.size(m.attributes)
                ready.append((i, m))
            } catch let error as MessagingError {
                results[i] = .failure(error)
            }
        }
        guard total <= QueueSettings.maxMessageBytes else {
            throw MessagingError(
                "BatchRequestTooLong",
                "Batch requests cannot be longer than \(QueueSettings.maxMessageBytes) bytes. You have sent \(total) bytes.")
        }
        let sent = try await queues.send(q, ready.map(\.1))
        for ((i, _), s) in zip(ready, sent) { results[i] = .success(Self.sentShape(s, fifo: q.fifo)) }
        return Self.batchResult(entries, results.map { $0! })
    }

    func receive(_ b: [String: Any], account: String) async throws -> [String: Any] {
        let q = try queue(b, account, "sqs:ReceiveMessage")
        let max = try Self.int(b, "MaxNumberOfMessages", 1...10) ?? 1
        let visibility = try Self.int(b, "VisibilityTimeout", 0...43_200)
        let wait = try Self.int(b, "WaitTimeSeconds", 0...20)
        let systemNames = Set(((b["AttributeNames"] as? [String]) ?? []) + ((b["MessageSystemAttributeNames"] as? [String]) ?? []))
        let attributeNames = (b["MessageAttributeNames"] as? [String]) ?? []
        let messages = try await queues.receive(q, max: max, visibility: visibility, waitSeconds: wait)
        guard !messages.isEmpty else { return [:] }
        return ["Messages": messages.map { Self.messageShape($0, system: systemNames, attributes: attributeNames) }]
    }

    // MARK: - shapes

    static func messageShape(_ m: QueueMessage, system: Set<String>, attributes: [String]) -> [String: Any] {
        var out: [String: Any] = ["MessageId": m.id, "ReceiptHandle": m.receiptHandle, "MD5OfBody": m.md5, "Body": m.body]
        let all = system.contains("All")
        var attrs: [String: String] = [:]
        func put(_ name: String, _ value: String?) {
            if let value, all || system.contains(name) { attrs[name] = value }
        }
        put("SenderId", m.sender)
        put("SentTimestamp", "\(m.sent)")
        put("ApproximateReceiveCount", "\(m.receiveCount)")
        put("ApproximateFirstReceiveTimestamp", "\(m.firstReceive)")
        if m.groupID != nil || m.dedupID != nil {
            put("SequenceNumber", sequence(m.sequence))
            put("MessageDeduplicationId", m.dedupID)
            put("MessageGroupId", m.groupID)
        }
        put("DeadLetterQueueSourceArn", m.deadLetterSource)
        if !attrs.isEmpty { out["Attributes"] = attrs }
        let wanted = m.attributes.filter { name, _ in
            attributes.contains {
                $0 == "All" || $0 == ".*" || $0 == name || ($0.hasSuffix(".*") && name.hasPrefix(String($0.dropLast(1))))
            }
        }
        if !wanted.isEmpty {
            out["MessageAttributes"] = wanted.mapValues(attributeShape)
            if let md5 = MessageAttribute.md5(wanted) { out["MD5OfMessageAttributes"] = md5 }
        }
        return out
    }

    static func attributeShape(_ a: MessageAttribute) -> [String: Any] {
        var o: [String: Any] = ["DataType": a.dataType]
        if let s = a.stringValue { o["StringValue"] = s }
        if let b = a.binaryValue { o["BinaryValue"] = b.base64EncodedString() }
        return o
    }

    static func sequence(_ n: Int64) -> String {
        let s = String(n)
        return String(repeating: "0", count: max(0, 20 - s.count)) + s
    }

    static func sentShape(_ s: SentMessage, fifo: Bool) -> [String: Any] {
        var o: [String: Any] = ["MessageId": s.id, "MD5OfMessageBody": s.md5]
        if let a = s.md5Attributes { o["MD5OfMessageAttributes"] = a }
        if fifo { o["SequenceNumber"] = sequence(s.sequence) }
        return o
    }

    /// A batch's answer: each entry's result under its `Id`, failures with SQS's fields.
    static func batchResult(_ entries: [[String: Any]], _ results: [Result<[String: Any], MessagingError>]) -> [String: Any] {
        var ok: [[String: Any]] = []
        var failed: [[String: Any]] = []
        for (e, r) in zip(entries, results) {
            let id = e["Id"] as? String ?? ""
            switch r {
            case .success(var o):
                o["Id"] = id
                ok.append(o)
            case .failure(let error):
                failed.append(["Id": id, "SenderFault": error.status < 500, "Code": error.name, "Message": error.message])
            }
        }
        return ["Successful": ok, "Failed": failed]
    }

    // MARK: - reading requests

    static func string(_ b: [String: Any], _ key: String) throws -> String {
        guard let s = b[key] as? String, !s.isEmpty else { throw MessagingError.missingParameter(key) }
        return s
    }

    static func int(_ b: [String: Any], _ key: String, _ range: ClosedRange<Int>) throws -> Int? {
        guard let v = b[key] else { return nil }
        guard let n = v as? Int, range.contains(n) else {
            throw MessagingError.invalidParameter(
                "Value \(v) for parameter \(key) is invalid. Reason: Must be between \(range.lowerBound) and \(range.upperBound), if provided."
            )
        }
        return n
    }

    static func map(_ b: [String: Any], _ key: String) throws -> [String: String] {
        guard let v = b[key] else { return [:] }
        guard let m = v as? [String: String] else { throw MessagingError.invalidParameter("\(key) must map names to strings.") }
        return m
    }

    static func entries(_ b: [String: Any]) throws -> [[String: Any]] {
        let entries = (b["Entries"] as? [[String: Any]]) ?? []
        guard !entries.isEmpty else { throw MessagingError("EmptyBatchRequest", "There should be at least one entry in the request.") }
        guard entries.count <= 10 else {
            throw MessagingError(
                "TooManyEntriesInBatchRequest", "Maximum number of entries per request are 10. You have sent \(entries.count).")
        }
        var seen: Set<String> = []
        for e in entries {
            guard let id = e["Id"] as? String, !id.isEmpty, id.utf8.count <= 80,
                id.utf8.allSatisfy({ ($0 >= 48 && $0 <= 57) || ($0 >= 65 && $0 <= 90) || ($0 >= 97 && $0 <= 122) || $0 == 45 || $0 == 95 })
            else {
                throw MessagingError(
                    "InvalidBatchEntryId",
                    "A batch entry id can only contain alphanumeric characters, hyphens and underscores. It can be at most 80 letters long."
                )
            }
            guard seen.insert(id).inserted else { throw MessagingError("BatchEntryIdsNotDistinct", "Id \(id) repeated.") }
        }
        return entries
    }

    static func outgoing(_ b: [String: Any]) throws -> QueueService.Outgoing {
        guard let body = b["MessageBody"] as? String else { throw MessagingError.missingParameter("MessageBody") }
        var attributes: [String: MessageAttribute] = [:]
        for (name, raw) in (b["MessageAttributes"] as? [String: Any]) ?? [:] {
            guard let o = raw as? [String: Any], let type = o["DataType"] as? String else {
                throw MessagingError.invalidParameter("Message attribute '\(name)' must have a DataType.")
            }
            var binary: Data?
            if let s = o["BinaryValue"] as? String {
                guard let d = Data(base64Encoded: s) else {
                    throw MessagingError.invalidParameter("Message attribute '\(name)' has a BinaryValue that is not base64.")
                }
                binary = d
            }
            attributes[name] = MessageAttribute(dataType: type, stringValue: o["StringValue"] as? String, binaryValue: binary)
        }
        let delay: Int?
        if let d = b["DelaySeconds"] {
            guard let n = d as? Int else { throw MessagingError.invalidParameter("DelaySeconds must be a number.") }
            delay = n
        } else {
            delay = nil
        }
        return QueueService.Outgoing(
            body: body, attributes: attributes, delaySeconds: delay, groupID: b["MessageGroupId"] as? String,
            dedupID: b["MessageDeduplicationId"] as? String)
    }
}
