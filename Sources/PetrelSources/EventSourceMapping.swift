import Foundation
import GRDB
import PetrelCore
import PetrelStore

/// An event source mapping: a source (today an SQS queue of Petrel's) read by the
/// platform, its records handed to a function in batches.
public struct EventSourceMapping: Sendable, Codable, Equatable {
    public var uuid: String
    public var account: String
    public var function: String
    /// The version or alias invoked (nil: the unqualified function).
    public var qualifier: String?
    public var sourceArn: String
    /// What the user asked for: the state is Enabled or Disabled once the platform got there.
    public var enabled: Bool
    /// Creating, Enabled, Disabled, Updating, Deleting (Lambda's names).
    public var state: String
    public var stateTransitionReason: String
    public var lastModified: Date
    public var lastProcessingResult: String
    public var batchSize: Int
    public var maximumBatchingWindowInSeconds: Int
    public var functionResponseTypes: [String]
    /// FilterCriteria's patterns, as given.
    public var filters: [String]
    /// ScalingConfig.MaximumConcurrency: how many batches may run at once.
    public var maximumConcurrency: Int?
    public var tags: [String: String]
    /// A broker's queues (Amazon MQ's shape: exactly one).
    public var queues: [String]?
    /// `SourceAccessConfigurations`: `BASIC_AUTH` (a secret's ARN), `VIRTUAL_HOST`.
    public var sourceAccess: [SourceAccess]?
    /// A stream source's settings (Kafka, PostgreSQL); nil for queues and brokers.
    public var stream: StreamSettings?

    public struct SourceAccess: Sendable, Codable, Equatable {
        public var type: String
        public var uri: String
        public init(type: String, uri: String) {
            self.type = type
            self.uri = uri
        }
    }

    /// What the source is: one of Petrel's SQS queues, a RabbitMQ broker (Amazon MQ's ARN),
    /// a self-managed Kafka cluster (no ARN: its bootstrap servers), or a PostgreSQL server's
    /// change stream (DocumentDB's shape: a cluster ARN naming a server the operator configured).
    public enum Kind: Sendable { case sqs, rabbitmq, kafka, postgres }
    public var kind: Kind {
        if stream?.bootstrapServers != nil { return .kafka }
        if sourceArn.hasPrefix("arn:aws:mq:") { return .rabbitmq }
        if sourceArn.hasPrefix("arn:aws:rds:") { return .postgres }
        return .sqs
    }

    /// The settings of an ordered stream (Lambda's names): where a new mapping starts, how
    /// long a failing batch is retried, and where what is given up on is recorded.
    public struct StreamSettings: Sendable, Codable, Equatable {
        /// `TRIM_HORIZON` or `LATEST`.
        public var startingPosition: String
        /// -1: until the record is too old (or forever, with no age limit).
        public var maximumRetryAttempts: Int = -1
        /// -1: no limit.
        public var maximumRecordAgeInSeconds: Int = -1
        public var bisectBatchOnFunctionError: Bool = false
        /// `DestinationConfig.OnFailure.Destination`: a queue's or topic's ARN.
        public var onFailure: String?
        /// Kafka: the topic (Lambda takes exactly one) and the cluster's bootstrap servers.
        public var topics: [String]?
        public var bootstrapServers: [String]?
        /// Kafka's consumer group (default: the mapping's UUID, as on Lambda).
        public var consumerGroupId: String?
        /// PostgreSQL: the database and the table (`schema.table`; nil: every table).
        public var database: String?
        public var table: String?
        public init(startingPosition: String) { self.startingPosition = startingPosition }
    }

    public static let defaultConcurrency = 5

    public init(uuid: String = FastIDs.uuid(), account: String, function: String, qualifier: String?, sourceArn: String) {
        self.uuid = uuid
        self.account = account
        self.function = function
        self.qualifier = qualifier
        self.sourceArn = sourceArn
        enabled = true
        state = "Creating"
        stateTransitionReason = "USER_INITIATED"
        lastModified = Date()
        lastProcessingResult = "No records processed"
        batchSize = 10
        maximumBatchingWindowInSeconds = 0
        functionResponseTypes = []
        filters = []
        tags = [:]
    }

    public var reportsItemFailures: Bool { functionResponseTypes.contains("ReportBatchItemFailures") }
    public var concurrency: Int { maximumConcurrency ?? Self.defaultConcurrency }

    /// The settings a create or update may change, each checked as Lambda checks it.
    public struct Settings: Sendable {
        public var enabled: Bool?
        public var batchSize: Int?
        public var maximumBatchingWindowInSeconds: Int?
        public var functionResponseTypes: [String]?
        public var filters: [String]?
        public var maximumConcurrency: Int??
        public var maximumRetryAttempts: Int?
        public var maximumRecordAgeInSeconds: Int?
        public var bisectBatchOnFunctionError: Bool?
        /// nil: unchanged; "": removed.
        public var onFailure: String?
        public init() {}
    }

    /// Applies `s`, then checks the whole (a FIFO source: batches of at most 10, no window).
    public mutating func apply(_ s: Settings, fifo: Bool) throws(DomainError) {
        if let e = s.enabled { enabled = e }
        if let b = s.batchSize {
            guard (1...10_000).contains(b) else {
                throw DomainError.constraint("\(b)", at: "batchSize", "Member must have value less than or equal to 10000")
            }
            batchSize = b
        }
        if let w = s.maximumBatchingWindowInSeconds {
            guard (0...300).contains(w) else {
                throw DomainError.constraint(
                    "\(w)", at: "maximumBatchingWindowInSeconds", "Member must have value less than or equal to 300")
            }
            maximumBatchingWindowInSeconds = w
        }
        if let t = s.functionResponseTypes {
            guard t.allSatisfy({ $0 == "ReportBatchItemFailures" }), t.count <= 1 else {
                throw DomainError(.invalidParameter, "FunctionResponseTypes takes ReportBatchItemFailures only.")
            }
            functionResponseTypes = t
        }
        if let f = s.filters {
            guard f.count <= 5 else { throw DomainError(.invalidParameter, "FilterCriteria takes at most 5 filters.") }
            for p in f { _ = try EventPattern(json: p) }
            filters = f
        }
        if let c = s.maximumConcurrency {
            if let c {
                guard (2...1000).contains(c) else {
                    throw DomainError.constraint(
                        "\(c)", at: "scalingConfig.maximumConcurrency", "Member must have value between 2 and 1000")
                }
            }
            maximumConcurrency = c
        }
        try applyStream(s)
        if fifo {
            guard batchSize <= 10 else {
                throw DomainError(.invalidParameter, "BatchSize for a FIFO queue is at most 10.")
            }
            guard maximumBatchingWindowInSeconds == 0 else {
                throw DomainError(.invalidParameter, "Batching window is not supported for FIFO queues.")
            }
        }
        // (Lambda's rule for queues; a broker's or a stream's batches have no such rule.)
        guard kind != .sqs || batchSize <= 10 || maximumBatchingWindowInSeconds >= 1 else {
            throw DomainError(
                .invalidParameter, "Maximum batch window in seconds must be greater than 0 if maximum batch size is greater than 10")
        }
    }
}

extension EventSourceMapping {
    /// Whether two mappings read the same thing (the same queue of a broker, topic of a
    /// cluster, table of a database).
    func sameSource(_ o: EventSourceMapping) -> Bool {
        sourceArn == o.sourceArn && queues == o.queues && stream?.topics == o.stream?.topics
            && stream?.bootstrapServers.map(Set.init) == o.stream?.bootstrapServers.map(Set.init)
            && stream?.database == o.stream?.database && stream?.table == o.stream?.table
    }

    /// A stream's own settings, checked as Lambda checks them; refused for other sources.
    mutating func applyStream(_ s: Settings) throws(DomainError) {
        let given = [
            ("MaximumRetryAttempts", s.maximumRetryAttempts != nil), ("MaximumRecordAgeInSeconds", s.maximumRecordAgeInSeconds != nil),
            ("BisectBatchOnFunctionError", s.bisectBatchOnFunctionError != nil), ("DestinationConfig", s.onFailure != nil),
        ]
        guard var st = stream else {
            if let (name, _) = given.first(where: \.1) {
                throw DomainError(.invalidParameter, "Unsupported \(name) parameter for given event source mapping type.")
            }
            return
        }
        if let r = s.maximumRetryAttempts {
            guard (-1...10_000).contains(r) else {
                throw DomainError.constraint("\(r)", at: "maximumRetryAttempts", "Member must have value less than or equal to 10000")
            }
            st.maximumRetryAttempts = r
        }
        if let a = s.maximumRecordAgeInSeconds {
            guard a == -1 || (60...604_800).contains(a) else {
                throw DomainError.constraint(
                    "\(a)", at: "maximumRecordAgeInSeconds", "Member must have value less than or equal to 604800")
            }
            st.maximumRecordAgeInSeconds = a
        }
        if let b = s.bisectBatchOnFunctionError { st.bisectBatchOnFunctionError = b }
        if let d = s.onFailure {
            guard d.isEmpty || d.hasPrefix("arn:aws:sqs:") || d.hasPrefix("arn:aws:sns:") else {
                throw DomainError(.invalidParameter, "The on-failure destination must be an SQS queue's or an SNS topic's ARN, not \(d).")
            }
            st.onFailure = d.isEmpty ? nil : d
        }
        stream = st
    }
}

/// Event source mappings in SQLite.
public struct MappingStore: Sendable {
    let db: PetrelDatabase

    public init(_ db: PetrelDatabase) { self.db = db }

    static func decode(_ row: Row) throws -> EventSourceMapping {
        let d = JSONDecoder()
        d.dateDecodingStrategy = .millisecondsSince1970
        return try d.decode(EventSourceMapping.self, from: Data((row["record"] as String).utf8))
    }

    static func encode(_ m: EventSourceMapping) throws -> String {
        let e = JSONEncoder()
        e.dateEncodingStrategy = .millisecondsSince1970
        e.outputFormatting = .sortedKeys
        return String(decoding: try e.encode(m), as: UTF8.self)
    }

    public func get(_ uuid: String) throws -> EventSourceMapping? {
        try db.pool.read { db in
            try Row.fetchOne(db, sql: "SELECT record FROM event_source_mappings WHERE uuid = ?", arguments: [uuid]).map(Self.decode)
        }
    }

    /// Every mapping (nil account: all accounts'), oldest first.
    public func all(account: String?) throws -> [EventSourceMapping] {
        try db.pool.read { db in
            if let account {
                return try Row.fetchAll(
                    db, sql: "SELECT record FROM event_source_mappings WHERE account = ? ORDER BY rowid", arguments: [account]
                )
                .map(Self.decode)
            }
            return try Row.fetchAll(db, sql: "SELECT record FROM event_source_mappings ORDER BY rowid").map(Self.decode)
        }
    }

    /// Stores a new mapping unless one of the same function and source exists (that one is answered).
    public func insert(_ m: EventSourceMapping) throws -> EventSourceMapping? {
        try db.pool.write { db in
            let same = try Row.fetchAll(
                db, sql: "SELECT record FROM event_source_mappings WHERE account = ? AND function = ? AND source = ?",
                arguments: [m.account, m.function, m.sourceArn]
            ).map(Self.decode)
            if let existing = same.first(where: { $0.qualifier == m.qualifier && $0.sameSource(m) }) { return existing }
            try db.execute(
                sql: "INSERT INTO event_source_mappings (uuid, account, function, source, record) VALUES (?, ?, ?, ?, ?)",
                arguments: [m.uuid, m.account, m.function, m.sourceArn, try Self.encode(m)])
            return nil
        }
    }

    public func update(_ m: EventSourceMapping) throws {
        try db.pool.write { db in
            try db.execute(
                sql: "UPDATE event_source_mappings SET function = ?, record = ? WHERE uuid = ?",
                arguments: [m.function, try Self.encode(m), m.uuid])
        }
    }

    public func delete(_ uuid: String) throws {
        try db.pool.write { db in
            try db.execute(sql: "DELETE FROM event_source_mappings WHERE uuid = ?", arguments: [uuid])
            try db.execute(sql: "DELETE FROM stream_checkpoints WHERE mapping = ?", arguments: [uuid])
        }
    }

    /// Where a stream mapping's partition stands beyond what its source keeps.
    public func checkpoint(_ uuid: String, partition: String) throws -> String? {
        try db.pool.read { db in
            try String.fetchOne(
                db, sql: "SELECT position FROM stream_checkpoints WHERE mapping = ? AND partition = ?", arguments: [uuid, partition])
        }
    }

    public func setCheckpoint(_ uuid: String, partition: String, _ position: String?) throws {
        try db.pool.write { db in
            if let position {
                try db.execute(
                    sql: "INSERT OR REPLACE INTO stream_checkpoints (mapping, partition, position) VALUES (?, ?, ?)",
                    arguments: [uuid, partition, position])
            } else {
                try db.execute(sql: "DELETE FROM stream_checkpoints WHERE mapping = ? AND partition = ?", arguments: [uuid, partition])
            }
        }
    }
}
