import Foundation
import PetrelCore
import PetrelMessaging
import PetrelRuntime
import PetrelStore

/// How SNS reaches functions: an asynchronous invocation, queued durably, for a
/// function whose resource policy lets the topic in (`AddPermission` with
/// `Principal: sns.amazonaws.com` and the topic's ARN as `SourceArn`). Retries and
/// destinations are then the function's event-invoke configuration's.
public struct FunctionDeliveries: FunctionDelivery {
    let catalog: FunctionCatalog
    let events: EventService

    public init(catalog: FunctionCatalog, events: EventService) {
        self.catalog = catalog
        self.events = events
    }

    public func deliver(functionARN arn: String, event: Data, topicARN: String, topicAccount: String) async throws {
        let ref = try FunctionReference(parsing: arn)
        guard let account = ref.account, let f = try catalog.functions.get(account: account, ref.name) else {
            throw LambdaError(.resourceNotFound, "Function not found: \(arn)")
        }
        guard
            (f.policy ?? []).contains(where: {
                $0.guards(ref.qualifier) && $0.allowsService("sns.amazonaws.com", sourceArn: topicARN, sourceAccount: topicAccount)
            })
        else {
            throw LambdaError(
                .accessDenied, "The resource policy of \(arn) does not let sns.amazonaws.com invoke it for \(topicARN) (AddPermission).")
        }
        var e = QueuedEvent(
            id: FastIDs.uuid(), account: account, function: ref.name, payload: event, created: events.settings.clock.nowMillis(),
            source: "sns")
        e.qualifier = ref.qualifier
        try await events.accept([e])
    }
}

/// Where asynchronous invocations' records go when a destination names a queue or a topic.
public struct RecordDeliveries: RecordSink {
    let queues: QueueService
    let topics: TopicService

    public init(queues: QueueService, topics: TopicService) {
        self.queues = queues
        self.topics = topics
    }

    public func send(record: Data, to arn: String, account: String, attributes: [String: String]) async throws {
        let body = String(decoding: record, as: UTF8.self)
        let attrs = attributes.mapValues { MessageAttribute(dataType: $0.allSatisfy(\.isNumber) ? "Number" : "String", stringValue: $0) }
        if let t = TopicARN(arn) {
            guard t.account == account, let topic = try topics.store.topic(account: t.account, name: t.name) else {
                throw MessagingError.snsNotFound("Topic")
            }
            _ = try await topics.publish(topic, .init(message: body, attributes: attrs))
            return
        }
        guard let q = try queues.queue(arn: arn), q.account == account else { throw MessagingError.noQueue }
        var m = NewMessage(body: body, attributes: attrs, sender: "lambda.amazonaws.com")
        if q.fifo {
            m.groupID = "lambda"
            m.dedupID = FastIDs.uuid()
        }
        _ = try await queues.send(q, [m])
    }
}
