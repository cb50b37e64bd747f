import Foundation
import HTTPTypes
import Hummingbird
import NIOCore
import PetrelCore
import PetrelMessaging
import PetrelSigV4
import PetrelSources

/// Event source mappings (`/2015-03-31/event-source-mappings`): SQS queues of Petrel's.
extension LambdaAPI {
    func registerMappings(on router: Router<PetrelRequestContext>) {
        let m = "/2015-03-31/event-source-mappings"
        router.post(RouterPath(m)) { req, ctx in await handle(req, ctx, "CreateEventSourceMapping", self.createMapping) }
        router.get(RouterPath(m)) { req, ctx in await handle(req, ctx, "ListEventSourceMappings", self.listMappings) }
        router.get(RouterPath(m + "/{uuid}")) { req, ctx in await handle(req, ctx, "GetEventSourceMapping", self.getMapping) }
        router.put(RouterPath(m + "/{uuid}")) { req, ctx in await handle(req, ctx, "UpdateEventSourceMapping", self.updateMapping) }
        router.delete(RouterPath(m + "/{uuid}")) { req, ctx in await handle(req, ctx, "DeleteEventSourceMapping", self.deleteMapping) }
    }

    struct MappingInput: Decodable {
        struct Filter: Decodable { var Pattern: String? }
        struct Criteria: Decodable { var Filters: [Filter]? }
        struct Scaling: Decodable { var MaximumConcurrency: Int? }
        var EventSourceArn: String?
        var FunctionName: String?
        var Enabled: Bool?
        var BatchSize: Int?
        var FilterCriteria: Criteria?
        var MaximumBatchingWindowInSeconds: Int?
        var FunctionResponseTypes: [String]?
        var ScalingConfig: Scaling?
        var Tags: [String: String]?
        // Parameters of stream and broker sources: refused for a queue, as Lambda does.
        var StartingPosition: String?
        var StartingPositionTimestamp: Double?
        var ParallelizationFactor: Int?
        var MaximumRetryAttempts: Int?
        var MaximumRecordAgeInSeconds: Int?
        var BisectBatchOnFunctionError: Bool?
        var TumblingWindowInSeconds: Int?
        var Topics: [String]?
        var Queues: [String]?
        struct Access: Codable {
            var `Type`: String?
            var URI: String?
        }
        var SourceAccessConfigurations: [Access]?
        struct Endpoints: Codable { var KAFKA_BOOTSTRAP_SERVERS: [String]? }
        struct SelfManaged: Codable { var Endpoints: Endpoints? }
        var SelfManagedEventSource: SelfManaged?
        struct KafkaConfig: Codable { var ConsumerGroupId: String? }
        var SelfManagedKafkaEventSourceConfig: KafkaConfig?
        struct DocumentDBConfig: Codable {
            var DatabaseName: String?
            var CollectionName: String?
            var FullDocument: String?
        }
        var DocumentDBEventSourceConfig: DocumentDBConfig?
        struct Target: Codable { var Destination: String? }
        struct Destinations: Codable {
            var OnSuccess: Target?
            var OnFailure: Target?
        }
        var DestinationConfig: Destinations?

        var settings: EventSourceMapping.Settings {
            var s = EventSourceMapping.Settings()
            s.enabled = Enabled
            s.batchSize = BatchSize
            s.maximumBatchingWindowInSeconds = MaximumBatchingWindowInSeconds
            s.functionResponseTypes = FunctionResponseTypes
            if let f = FilterCriteria { s.filters = (f.Filters ?? []).compactMap(\.Pattern) }
            if let c = ScalingConfig { s.maximumConcurrency = .some(c.MaximumConcurrency) }
            s.maximumRetryAttempts = MaximumRetryAttempts
            s.maximumRecordAgeInSeconds = MaximumRecordAgeInSeconds
            s.bisectBatchOnFunctionError = BisectBatchOnFunctionError
            if let d = DestinationConfig { s.onFailure = d.OnFailure?.Destination ?? "" }
            return s
        }

        /// A stream source's parameters (Kafka, PostgreSQL): what Petrel does not do is refused.
        func refuseUnsupportedStreamParameters(kafka: Bool) throws {
            let given: [(String, Bool)] = [
                ("StartingPositionTimestamp", StartingPositionTimestamp != nil),
                ("ParallelizationFactor", ParallelizationFactor != nil), ("TumblingWindowInSeconds", TumblingWindowInSeconds != nil),
                ("Queues", Queues != nil), ("ScalingConfig", ScalingConfig != nil),
                ("Topics", !kafka && Topics != nil),
                ("SelfManagedKafkaEventSourceConfig", !kafka && SelfManagedKafkaEventSourceConfig != nil),
                ("DocumentDBEventSourceConfig", kafka && DocumentDBEventSourceConfig != nil),
            ]
            if let (name, _) = given.first(where: \.1) {
                throw LambdaError(.invalidParameterValue, "Unsupported \(name) parameter for given event source mapping type.")
            }
            if DestinationConfig?.OnSuccess?.Destination != nil {
                throw LambdaError(.invalidParameterValue, "Unsupported OnSuccess destination for given event source mapping type.")
            }
        }

        func refuseStreamParameters(broker: Bool) throws {
            if DestinationConfig != nil || SelfManagedKafkaEventSourceConfig != nil || DocumentDBEventSourceConfig != nil {
                let name =
                    DestinationConfig != nil
                    ? "DestinationConfig"
                    : SelfManagedKafkaEventSourceConfig != nil ? "SelfManagedKafkaEventSourceConfig" : "DocumentDBEventSourceConfig"
                throw LambdaError(.invalidParameterValue, "Unsupported \(name) parameter for given event source mapping type.")
            }
            if !broker,
                let (name, _) = [("Queues", Queues != nil), ("SourceAccessConfigurations", SourceAccessConfigurations != nil)].first(
                    where: \.1)
            {
                throw LambdaError(.invalidParameterValue, "Unsupported \(name) parameter for given event source mapping type.")
            }
            if broker, ScalingConfig != nil || FunctionResponseTypes?.isEmpty == false {
                throw LambdaError(
                    .invalidParameterValue,
                    "Unsupported \(ScalingConfig != nil ? "ScalingConfig" : "FunctionResponseTypes") parameter for given event source mapping type."
                )
            }
            let given: [(String, Bool)] = [
                ("StartingPosition", StartingPosition != nil), ("StartingPositionTimestamp", StartingPositionTimestamp != nil),
                ("ParallelizationFactor", ParallelizationFactor != nil), ("MaximumRetryAttempts", MaximumRetryAttempts != nil),
                ("MaximumRecordAgeInSeconds", MaximumRecordAgeInSeconds != nil),
                ("BisectBatchOnFunctionError", BisectBatchOnFunctionError != nil),
                ("TumblingWindowInSeconds", TumblingWindowInSeconds != nil),
                ("Topics", Topics != nil),
            ]
            if let (name, _) = given.first(where: \.1) {
                throw LambdaError(.invalidParameterValue, "Unsupported \(name) parameter for given event source mapping type.")
            }
        }
    }

    struct MappingShape: Encodable {
        struct Filter: Encodable { var Pattern: String }
        struct Criteria: Encodable { var Filters: [Filter] }
        struct Scaling: Encodable { var MaximumConcurrency: Int }
        var UUID: String
        var EventSourceMappingArn: String
        var EventSourceArn: String?
        var FunctionArn: String
        var BatchSize: Int
        var MaximumBatchingWindowInSeconds: Int
        var FilterCriteria: Criteria?
        var FunctionResponseTypes: [String]
        var ScalingConfig: Scaling?
        var LastModified: Double
        var LastProcessingResult: String
        var State: String
        var StateTransitionReason: String
        var Queues: [String]?
        var SourceAccessConfigurations: [MappingInput.Access]?
        var Topics: [String]?
        var StartingPosition: String?
        var MaximumRetryAttempts: Int?
        var MaximumRecordAgeInSeconds: Int?
        var BisectBatchOnFunctionError: Bool?
        var DestinationConfig: MappingInput.Destinations?
        var SelfManagedEventSource: MappingInput.SelfManaged?
        var SelfManagedKafkaEventSourceConfig: MappingInput.KafkaConfig?
        var DocumentDBEventSourceConfig: MappingInput.DocumentDBConfig?
        /// Petrel's own: where each partition of a stream stands (not in Lambda's shape).
        struct Partition: Encodable {
            var Partition: String
            var LagSeconds: Double
            var LagRecords: Int64?
            var Batches: [String: Int]
        }
        var PetrelPartitions: [Partition]?
    }

    func mappingShape(_ m: EventSourceMapping) -> MappingShape {
        MappingShape(
            UUID: m.uuid, EventSourceMappingArn: "arn:aws:lambda:\(region):\(m.account):event-source-mapping:\(m.uuid)",
            EventSourceArn: m.sourceArn.isEmpty ? nil : m.sourceArn,
            FunctionArn: FunctionARN(region: region, account: m.account, name: m.function, qualifier: m.qualifier).description,
            BatchSize: m.batchSize, MaximumBatchingWindowInSeconds: m.maximumBatchingWindowInSeconds,
            FilterCriteria: m.filters.isEmpty ? nil : .init(Filters: m.filters.map { .init(Pattern: $0) }),
            FunctionResponseTypes: m.functionResponseTypes, ScalingConfig: m.maximumConcurrency.map { .init(MaximumConcurrency: $0) },
            LastModified: (m.lastModified.timeIntervalSince1970 * 1000).rounded() / 1000, LastProcessingResult: m.lastProcessingResult,
            State: m.state, StateTransitionReason: m.stateTransitionReason, Queues: m.queues,
            SourceAccessConfigurations: m.sourceAccess.map { $0.map { .init(Type: $0.type, URI: $0.uri) } },
            Topics: m.stream?.topics, StartingPosition: m.stream?.startingPosition, MaximumRetryAttempts: m.stream?.maximumRetryAttempts,
            MaximumRecordAgeInSeconds: m.stream?.maximumRecordAgeInSeconds,
            BisectBatchOnFunctionError: m.stream?.bisectBatchOnFunctionError,
            DestinationConfig: m.stream.map { .init(OnSuccess: nil, OnFailure: $0.onFailure.map { .init(Destination: $0) }) },
            SelfManagedEventSource: m.stream?.bootstrapServers.map { .init(Endpoints: .init(KAFKA_BOOTSTRAP_SERVERS: $0)) },
            SelfManagedKafkaEventSourceConfig: m.kind == .kafka ? .init(ConsumerGroupId: m.stream?.consumerGroupId ?? m.uuid) : nil,
            DocumentDBEventSourceConfig: m.kind == .postgres
                ? .init(DatabaseName: m.stream?.database, CollectionName: m.stream?.table, FullDocument: "UpdateLookup") : nil,
            PetrelPartitions: m.stream == nil
                ? nil
                : mappings.partitions(m.uuid).map {
                    .init(
                        Partition: $0.name, LagSeconds: ($0.status.lagSeconds * 1000).rounded() / 1000, LagRecords: $0.status.lagRecords,
                        Batches: $0.status.batches)
                })
    }

    static let mappingNotFound = LambdaError(.resourceNotFound, "The resource you requested does not exist.")

    /// The queue a mapping reads, which the caller's account may consume, and the function it invokes.
    func mappingTargets(sourceArn: String, functionName: String, caller: Caller) throws -> (QueueRecord, FunctionReference, FunctionRecord)
    {
        guard let arn = QueueARN(sourceArn) else {
            throw LambdaError(
                .invalidParameterValue,
                "Petrel's event source mappings read its SQS queues (arn:aws:sqs:\(region):ACCOUNT:QUEUE); \(sourceArn) is not one.")
        }
        guard let q = try queues.queue(arn: sourceArn), arn.region == region,
            q.account == caller.account || q.settings.policy?.allows(account: caller.account, action: "sqs:ReceiveMessage") == true
        else {
            throw LambdaError(
                .invalidParameterValue, "The provided event source does not exist or this account may not read it: \(sourceArn)")
        }
        let ref = try FunctionReference(parsing: functionName)
        if let a = ref.account, a != caller.account {
            throw LambdaError(.invalidParameterValue, "An event source mapping invokes a function of its own account.")
        }
        let f = try catalog.resolve(ref, caller: caller)
        return (q, ref, f)
    }

    /// What the mapping will do with its function's role, as Lambda checks it when the mapping is
    /// made: read and delete the queue's messages, read the source's secrets, send what fails
    /// to the on-failure destination.
    func checkRole(_ m: EventSourceMapping, caller: Caller) throws {
        guard let f = try catalog.functions.get(account: m.account, m.function) else { return }
        if m.kind == .sqs {
            for action in ["sqs:ReceiveMessage", "sqs:DeleteMessage", "sqs:GetQueueAttributes"] {
                try catalog.requireRole(f, action, on: [m.sourceArn])
            }
        }
        let secrets = (m.sourceAccess ?? []).map(\.uri).filter { $0.hasPrefix("arn:aws:secretsmanager:") }
        try catalog.requireRole(f, "secretsmanager:GetSecretValue", on: secrets)
        if let d = m.stream?.onFailure { try catalog.requireDestination(f, d) }
    }

    /// Lambda's rule: the queue must hide a message for at least as long as the function may run.
    func checkVisibility(_ q: QueueRecord, _ f: FunctionRecord) throws {
        guard q.settings.visibilitySeconds >= f.timeoutSeconds else {
            throw LambdaError(
                .invalidParameterValue,
                "Queue visibility timeout: \(q.settings.visibilitySeconds) seconds is less than Function timeout: \(f.timeoutSeconds) seconds"
            )
        }
    }

    func createMapping(_ req: Request, _ ctx: PetrelRequestContext, _ call: Call) async throws -> Response {
        let input = try Self.decode(MappingInput.self, call.body)
        guard let name = input.FunctionName else { throw LambdaError(.invalidParameterValue, "FunctionName is required.") }
        let kafka = input.SelfManagedEventSource != nil
        if kafka, input.EventSourceArn != nil {
            throw LambdaError(.invalidParameterValue, "A self-managed Kafka mapping has SelfManagedEventSource, not EventSourceArn.")
        }
        guard let source = kafka ? "" : input.EventSourceArn else {
            throw LambdaError(.invalidParameterValue, "EventSourceArn is required.")
        }
        let broker = source.hasPrefix("arn:aws:mq:")
        let stream = kafka || source.hasPrefix("arn:aws:rds:")
        if !stream { try input.refuseStreamParameters(broker: broker) }
        var m: EventSourceMapping
        if stream {
            m = try streamMapping(source: source, functionName: name, input, caller: call.caller)
        } else if broker {
            m = try brokerMapping(source: source, functionName: name, input, caller: call.caller)
        } else {
            let (q, ref, f) = try mappingTargets(sourceArn: source, functionName: name, caller: call.caller)
            try checkVisibility(q, f)
            m = EventSourceMapping(account: call.caller.account, function: ref.name, qualifier: ref.qualifier, sourceArn: source)
            try m.apply(input.settings, fifo: q.fifo)
        }
        m.tags = input.Tags ?? [:]
        try checkRole(m, caller: call.caller)
        if let existing = try mappings.store.insert(m) {
            throw LambdaError(
                .resourceConflict,
                "An event source mapping with \(broker || stream ? "event source" : "SQS arn") (\" \(source) \") and function (\" \(m.function) \") already exists. Please update or delete the existing mapping with UUID \(existing.uuid)"
            )
        }
        mappings.mappingsChanged()
        return APIResponse.json(mappingShape(m), status: .accepted)
    }

    /// A mapping on a RabbitMQ broker (Amazon MQ's shape): one queue, BASIC_AUTH naming a
    /// secret of the account, an optional VIRTUAL_HOST; the broker must be one the operator
    /// configured. Batches of 100 by default, as on Lambda.
    func brokerMapping(source: String, functionName: String, _ input: MappingInput, caller: Caller) throws -> EventSourceMapping {
        let ref = try FunctionReference(parsing: functionName)
        if let a = ref.account, a != caller.account {
            throw LambdaError(.invalidParameterValue, "An event source mapping invokes a function of its own account.")
        }
        _ = try catalog.resolve(ref, caller: caller)
        guard let queues = input.Queues, queues.count == 1, let queue = queues.first, (1...1000).contains(queue.utf8.count) else {
            throw LambdaError(.invalidParameterValue, "Queues must name exactly one queue of the broker.")
        }
        var m = EventSourceMapping(account: caller.account, function: ref.name, qualifier: ref.qualifier, sourceArn: source)
        m.queues = [queue]
        m.sourceAccess = (input.SourceAccessConfigurations ?? []).map { .init(type: $0.Type ?? "", uri: $0.URI ?? "") }
        for a in m.sourceAccess ?? [] where !["BASIC_AUTH", "VIRTUAL_HOST"].contains(a.type) {
            throw LambdaError(.invalidParameterValue, "Unsupported SourceAccessConfiguration type \(a.type) for a RabbitMQ broker.")
        }
        m.batchSize = 100
        try m.apply(input.settings, fifo: false)
        do { _ = try mappings.rabbitSettings(m) } catch let e as DomainError { throw LambdaError(.invalidParameterValue, e.message) }
        return m
    }

    /// A mapping on an ordered stream: a self-managed Kafka cluster's topic (its bootstrap
    /// servers, which the operator must allow) or a PostgreSQL server's change stream
    /// (DocumentDB's shape: the cluster ARN of a server the operator configured, the database
    /// and the table). Lambda's stream defaults: batches of 100, retries until the record
    /// is too old (forever, with no age limit).
    func streamMapping(source: String, functionName: String, _ input: MappingInput, caller: Caller) throws -> EventSourceMapping {
        let kafka = source.isEmpty
        try input.refuseUnsupportedStreamParameters(kafka: kafka)
        let ref = try FunctionReference(parsing: functionName)
        if let a = ref.account, a != caller.account {
            throw LambdaError(.invalidParameterValue, "An event source mapping invokes a function of its own account.")
        }
        _ = try catalog.resolve(ref, caller: caller)
        guard let position = input.StartingPosition else { throw LambdaError(.invalidParameterValue, "StartingPosition is required.") }
        guard ["TRIM_HORIZON", "LATEST"].contains(position) else {
            throw LambdaError(.invalidParameterValue, "StartingPosition must be TRIM_HORIZON or LATEST (AT_TIMESTAMP is not supported).")
        }
        var st = EventSourceMapping.StreamSettings(startingPosition: position)
        var m = EventSourceMapping(account: caller.account, function: ref.name, qualifier: ref.qualifier, sourceArn: source)
        m.sourceAccess = (input.SourceAccessConfigurations ?? []).map { .init(type: $0.Type ?? "", uri: $0.URI ?? "") }
        if kafka {
            let servers = input.SelfManagedEventSource?.Endpoints?.KAFKA_BOOTSTRAP_SERVERS ?? []
            guard !servers.isEmpty, servers.count <= 10,
                servers.allSatisfy({ s in s.lastIndex(of: ":").map { Int(s[s.index(after: $0)...]) != nil && $0 > s.startIndex } ?? false })
            else {
                throw LambdaError(.invalidParameterValue, "KAFKA_BOOTSTRAP_SERVERS takes 1 to 10 HOST:PORT addresses.")
            }
            guard let topics = input.Topics, topics.count == 1, let topic = topics.first, (1...249).contains(topic.utf8.count),
                topic.allSatisfy({ $0.isLetter || $0.isNumber || "._-".contains($0) })
            else {
                throw LambdaError(.invalidParameterValue, "Topics must name exactly one Kafka topic.")
            }
            st.bootstrapServers = servers
            st.topics = [topic]
            if let g = input.SelfManagedKafkaEventSourceConfig?.ConsumerGroupId {
                guard (1...200).contains(g.utf8.count) else {
                    throw LambdaError(.invalidParameterValue, "ConsumerGroupId must be 1 to 200 characters.")
                }
                st.consumerGroupId = g
            }
        } else {
            guard PostgresServers.name(source) != nil else {
                throw LambdaError(
                    .invalidParameterValue, "A PostgreSQL change stream's EventSourceArn is arn:aws:rds:REGION:ACCOUNT:cluster:NAME.")
            }
            guard let db = input.DocumentDBEventSourceConfig?.DatabaseName, (1...63).contains(db.utf8.count) else {
                throw LambdaError(.invalidParameterValue, "DocumentDBEventSourceConfig.DatabaseName is required.")
            }
            st.database = db
            if let t = input.DocumentDBEventSourceConfig?.CollectionName {
                let parts = t.split(separator: ".", omittingEmptySubsequences: false)
                guard (1...2).contains(parts.count),
                    parts.allSatisfy({ p in (1...63).contains(p.utf8.count) && p.allSatisfy { $0.isLetter || $0.isNumber || $0 == "_" } })
                else {
                    throw LambdaError(.invalidParameterValue, "CollectionName is a table: TABLE or SCHEMA.TABLE.")
                }
                st.table = parts.count == 2 ? t : "public." + t
            }
        }
        m.stream = st
        m.batchSize = 100
        try m.apply(input.settings, fifo: false)
        if let d = m.stream?.onFailure { try checkDestination(d, caller: caller) }
        do { try mappings.checkSource(m) } catch let e as DomainError {
            throw LambdaError(.invalidParameterValue, e.message)
        }
        return m
    }

    /// An on-failure destination must be a queue or topic of the caller's account that exists.
    func checkDestination(_ arn: String, caller: Caller) throws {
        if let q = QueueARN(arn), q.account == caller.account, try queues.queue(arn: arn) != nil { return }
        if let t = TopicARN(arn), t.account == caller.account, try topics?.topic(account: t.account, name: t.name) != nil { return }
        throw LambdaError(.invalidParameterValue, "The on-failure destination \(arn) is not a queue or topic of this account.")
    }

    func ownMapping(_ ctx: PetrelRequestContext, _ caller: Caller) throws -> EventSourceMapping {
        guard let uuid = ctx.parameters.get("uuid"), let m = try mappings.store.get(uuid), m.account == caller.account else {
            throw Self.mappingNotFound
        }
        return m
    }

    func getMapping(_ req: Request, _ ctx: PetrelRequestContext, _ call: Call) async throws -> Response {
        APIResponse.json(mappingShape(try ownMapping(ctx, call.caller)))
    }

    func listMappings(_ req: Request, _ ctx: PetrelRequestContext, _ call: Call) async throws -> Response {
        let query = req.uri.queryParameters
        var all = try mappings.store.all(account: call.caller.account)
        if let source = query["EventSourceArn"].map({ SigV4Decoded.string($0) }) { all = all.filter { $0.sourceArn == source } }
        if let name = query["FunctionName"].map({ SigV4Decoded.string($0) }) {
            let ref = try FunctionReference(parsing: name)
            all = all.filter { $0.function == ref.name && (ref.qualifier == nil || $0.qualifier == ref.qualifier) }
        }
        let max = query["MaxItems"].flatMap { Int($0) } ?? 100
        guard (1...10_000).contains(max) else {
            throw LambdaError.constraint("\(max)", at: "maxItems", "Member must have value greater than or equal to 1")
        }
        var start = 0
        if let marker = query["Marker"].map({ SigV4Decoded.string($0) }) {
            guard let i = all.firstIndex(where: { $0.uuid == marker }) else { throw LambdaError(.invalidParameterValue, "Invalid Marker.") }
            start = i
        }
        let page = Array(all[start...].prefix(min(max, 100)))
        struct ListShape: Encodable {
            var EventSourceMappings: [MappingShape]
            var NextMarker: String?
        }
        let next = start + page.count < all.count ? all[start + page.count].uuid : nil
        return APIResponse.json(ListShape(EventSourceMappings: page.map(mappingShape), NextMarker: next))
    }

    func updateMapping(_ req: Request, _ ctx: PetrelRequestContext, _ call: Call) async throws -> Response {
        var m = try ownMapping(ctx, call.caller)
        let input = try Self.decode(MappingInput.self, call.body)
        if m.stream == nil { try input.refuseStreamParameters(broker: m.kind == .rabbitmq) }
        guard input.Queues == nil else { throw LambdaError(.invalidParameterValue, "Queues cannot be changed; make a new mapping.") }
        guard m.state != "Deleting" else {
            throw LambdaError(LambdaError.Code("ResourceInUseException", status: 400), "The mapping \(m.uuid) is being deleted.")
        }
        if m.stream != nil {
            try input.refuseUnsupportedStreamParameters(kafka: m.kind == .kafka)
            if input.Topics != nil || input.StartingPosition != nil || input.SelfManagedEventSource != nil
                || input.DocumentDBEventSourceConfig != nil || input.SelfManagedKafkaEventSourceConfig != nil
            {
                throw LambdaError(
                    .invalidParameterValue, "The source of a stream mapping and where it starts cannot be changed; make a new mapping.")
            }
        }
        if m.kind != .sqs {
            if let name = input.FunctionName {
                let ref = try FunctionReference(parsing: name)
                _ = try catalog.resolve(ref, caller: call.caller)
                m.function = ref.name
                m.qualifier = ref.qualifier
            }
            if let access = input.SourceAccessConfigurations {
                m.sourceAccess = access.map { .init(type: $0.Type ?? "", uri: $0.URI ?? "") }
            }
            try m.apply(input.settings, fifo: false)
            if let d = m.stream?.onFailure, input.DestinationConfig != nil { try checkDestination(d, caller: call.caller) }
            do { try mappings.checkSource(m) } catch let e as DomainError { throw LambdaError(.invalidParameterValue, e.message) }
        } else {
            let (q, ref, f) = try mappingTargets(
                sourceArn: m.sourceArn, functionName: input.FunctionName ?? m.function, caller: call.caller)
            try checkVisibility(q, f)
            if input.FunctionName != nil {
                m.function = ref.name
                m.qualifier = ref.qualifier
            }
            try m.apply(input.settings, fifo: q.fifo)
        }
        // A new function, secrets or destination: what the mapping will do needs that function's role.
        if input.FunctionName != nil || input.SourceAccessConfigurations != nil || input.DestinationConfig != nil {
            try checkRole(m, caller: call.caller)
        }
        m.state = "Updating"
        m.lastModified = Date()
        try mappings.store.update(m)
        mappings.mappingsChanged()
        return APIResponse.json(mappingShape(m), status: .accepted)
    }

    func deleteMapping(_ req: Request, _ ctx: PetrelRequestContext, _ call: Call) async throws -> Response {
        var m = try ownMapping(ctx, call.caller)
        m.state = "Deleting"
        m.lastModified = Date()
        try mappings.store.update(m)
        mappings.mappingsChanged()
        return APIResponse.json(mappingShape(m), status: .accepted)
    }
}

/// Query values as the router gives them, percent-decoded.
enum SigV4Decoded {
    static func string(_ s: Substring) -> String { SigV4.percentDecoded(String(s)) }
}
