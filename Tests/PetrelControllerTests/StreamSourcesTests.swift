import Foundation
import PetrelCore
import Testing

@testable import PetrelSources

/// The pure parts of the stream and object-event sources: what a store's notification
/// turns into, which functions want it, PostgreSQL's positions and times, the allow lists.
@Suite struct StreamSourcesTests {
    func seaweed(_ type: String, _ key: String, new: [String: Any]? = nil, old: [String: Any]? = nil, parent: String? = nil) throws -> Data
    {
        var message: [String: Any] = [:]
        if let new { message["new_entry"] = new }
        if let old { message["old_entry"] = old }
        if let parent { message["new_parent_path"] = parent }
        return try JSONSerialization.data(withJSONObject: ["event_type": type, "key": key, "message": message])
    }

    @Test("SeaweedFS filer events: files under /buckets become S3 events; directories and system paths none")
    func seaweedEvents() throws {
        let file: [String: Any] = [
            "name": "b.jpg", "attributes": ["file_size": 11, "mtime": 1_796_653_864, "md5": "XrY7u+Ae7tCTyyK7j1rNww=="],
        ]
        let created = try ObjectEvent.parse(try seaweed("create", "/buckets/photos/a/b.jpg", new: file), now: 5)
        #expect(created.count == 1)
        #expect(created[0].bucket == "photos")
        #expect(created[0].key == "a/b.jpg")
        #expect(created[0].eventName == "ObjectCreated:Put")
        #expect(created[0].size == 11)
        #expect(created[0].eTag == "5eb63bbbe01eeed093cb22bb8f5acdc3")
        #expect(created[0].time == 1_796_653_864_000)
        let removed = try ObjectEvent.parse(try seaweed("delete", "/buckets/photos/a/b.jpg", old: file), now: 5)
        #expect(removed.map(\.eventName) == ["ObjectRemoved:Delete"])
        #expect(removed[0].size == nil)
        let renamed = try ObjectEvent.parse(
            try seaweed("rename", "/buckets/photos/a/b.jpg", new: file, old: file, parent: "/buckets/photos/z"), now: 5)
        #expect(renamed.map(\.eventName) == ["ObjectRemoved:Delete", "ObjectCreated:Copy"])
        #expect(renamed.map(\.key) == ["a/b.jpg", "z/b.jpg"])
        let dir: [String: Any] = ["name": "a", "is_directory": true]
        #expect(try ObjectEvent.parse(try seaweed("create", "/buckets/photos/a", new: dir), now: 5).isEmpty)
        #expect(try ObjectEvent.parse(try seaweed("create", "/buckets/.system/owners/x", new: file), now: 5).isEmpty)
        #expect(try ObjectEvent.parse(try seaweed("create", "/etc/x", new: file), now: 5).isEmpty)
        #expect(throws: DomainError.self) { try ObjectEvent.parse(Data("[1]".utf8), now: 5) }
        #expect(throws: DomainError.self) { try ObjectEvent.parse(Data(#"{"Records":[{"s3":{}}]}"#.utf8), now: 5) }
    }

    @Test("S3-shaped records pass through with their configuration id set; keys are decoded to match and encoded as S3 does")
    func s3Records() throws {
        let body =
            #"{"Records":[{"eventName":"s3:ObjectCreated:Put","eventSource":"minio:s3","s3":{"bucket":{"name":"b"},"object":{"key":"a+b%2Bc.txt","size":3}}}]}"#
        let events = try ObjectEvent.parse(Data(body.utf8), now: 7)
        #expect(events.count == 1)
        #expect(events[0].key == "a b+c.txt")
        #expect(events[0].eventName == "ObjectCreated:Put")
        let r = events[0].s3Record(configurationID: "cfg", region: "us-east-1", sequence: 1)
        #expect(r["eventSource"] as? String == "minio:s3")
        #expect(((r["s3"] as? [String: Any])?["configurationId"]) as? String == "cfg")
        var own = ObjectEvent(bucket: "b", key: "a b+c/d.txt", eventName: "ObjectRemoved:Delete", size: nil, eTag: nil, time: 0)
        own.record = nil
        let made = own.s3Record(configurationID: "x", region: "eu-west-1", sequence: 255)
        let object = (made["s3"] as? [String: Any])?["object"] as? [String: Any]
        #expect(object?["key"] as? String == "a+b%2Bc/d.txt")
        #expect(object?["sequencer"] as? String == "00000000000000FF")
        #expect(object?["size"] == nil)
        #expect(made["eventName"] as? String == "ObjectRemoved:Delete")
    }

    @Test("a configuration wants its event types (exact or :*) and keys (prefix, suffix)")
    func wants() {
        let t = BucketNotification.FunctionTarget(
            id: "i", function: "f", qualifier: nil, events: ["s3:ObjectCreated:*"], prefix: "in/", suffix: ".pdf")
        #expect(t.wants("ObjectCreated:Put", key: "in/a.pdf"))
        #expect(t.wants("ObjectCreated:Copy", key: "in/a.pdf"))
        #expect(!t.wants("ObjectRemoved:Delete", key: "in/a.pdf"))
        #expect(!t.wants("ObjectCreated:Put", key: "out/a.pdf"))
        #expect(!t.wants("ObjectCreated:Put", key: "in/a.txt"))
        let exact = BucketNotification.FunctionTarget(
            id: "i", function: "f", qualifier: nil, events: ["s3:ObjectRemoved:Delete"], prefix: nil, suffix: nil)
        #expect(exact.wants("ObjectRemoved:Delete", key: "x"))
        #expect(!exact.wants("ObjectCreated:Put", key: "x"))
        #expect(BucketNotification.isValidBucket("photos-2026.eu"))
        #expect(!BucketNotification.isValidBucket("Photos"))
        #expect(!BucketNotification.isValidBucket("ab"))
        #expect(!BucketNotification.isValidBucket("-ab"))
        #expect(!BucketNotification.isValidBucket("a/b"))
    }

    @Test("the operator's object stores and Kafka allow list")
    func operatorLists() throws {
        let stores = try ObjectStores(parsing: "weed=0123456789abcdef, minio = fedcba9876543210xyz")
        #expect(stores.tokens == ["weed": "0123456789abcdef", "minio": "fedcba9876543210xyz"])
        #expect(throws: DomainError.self) { try ObjectStores(parsing: "weed=short") }
        #expect(throws: DomainError.self) { try ObjectStores(parsing: "=0123456789abcdef") }
        let allow = KafkaAllowList(["10.0.0.1:9092", "kafka.internal:*"])
        #expect(allow.allows("10.0.0.1:9092"))
        #expect(!allow.allows("10.0.0.1:9093"))
        #expect(allow.allows("kafka.internal:19092"))
        #expect(!allow.allows("kafka.internal"))
        #expect(!KafkaAllowList([]).allows("127.0.0.1:9092"))
        #expect(KafkaAllowList(["*"]).allows("anything:1"))
        #expect(PostgresServers.name("arn:aws:rds:us-east-1:000000000000:cluster:main") == "main")
        #expect(PostgresServers.name("arn:aws:rds:us-east-1:000000000000:db:main") == nil)
        #expect(PostgresServers.slot("86536A74-ea6b-4b8d-8a8d-433211323cc9") == "petrel_86536a74ea6b4b8d8a8d433211323cc9")
    }

    @Test("PostgreSQL's WAL positions and commit times")
    func postgresText() {
        #expect(PostgresReader.lsn("0/152D238") == 0x152_D238)
        #expect(PostgresReader.lsn("1A/0") == 0x1A_0000_0000)
        #expect(PostgresReader.lsn("nope") == nil)
        #expect(PostgresReader.lsnText(0x1A_0152_D238) == "1A/152D238")
        #expect(PostgresReader.timestamp("1970-01-01 00:00:01.5+00") == 1500)
        #expect(PostgresReader.timestamp("1970-01-01 00:00:01+00") == 1000)
        #expect(PostgresReader.timestamp("1970-01-01 05:30:00.000001+05:30") == 0)
        #expect(PostgresReader.timestamp("2026-12-07 13:58:09.170359-01") == PostgresReader.timestamp("2026-12-07 14:58:09.170+00"))
        #expect(PostgresReader.timestamp("2026-12-07 14:58:09.170+00") == 1_796_655_489_170)
        #expect(PostgresReader.timestamp("garbage") == nil)
    }

    @Test("stream settings: Lambda's ranges, and refused for a queue's mapping")
    func streamSettings() throws {
        var m = EventSourceMapping(
            account: "000000000000", function: "f", qualifier: nil, sourceArn: "arn:aws:sqs:us-east-1:000000000000:q")
        var s = EventSourceMapping.Settings()
        s.maximumRetryAttempts = 3
        #expect(throws: DomainError.self) { try m.apply(s, fifo: false) }
        m.stream = .init(startingPosition: "LATEST")
        m.sourceArn = "arn:aws:rds:us-east-1:000000000000:cluster:main"
        try m.apply(s, fifo: false)
        #expect(m.stream?.maximumRetryAttempts == 3)
        var age = EventSourceMapping.Settings()
        age.maximumRecordAgeInSeconds = 59
        #expect(throws: DomainError.self) { try m.apply(age, fifo: false) }
        age.maximumRecordAgeInSeconds = -1
        try m.apply(age, fifo: false)
        var d = EventSourceMapping.Settings()
        d.onFailure = "arn:aws:lambda:us-east-1:000000000000:function:x"
        #expect(throws: DomainError.self) { try m.apply(d, fifo: false) }
        d.onFailure = "arn:aws:sqs:us-east-1:000000000000:dlq"
        try m.apply(d, fifo: false)
        #expect(m.stream?.onFailure == "arn:aws:sqs:us-east-1:000000000000:dlq")
        d.onFailure = ""
        try m.apply(d, fifo: false)
        #expect(m.stream?.onFailure == nil)
    }

    @Test("a failing segment splits in two halves, the second keeping the commit point")
    func halves() {
        func r(_ i: Int) -> StreamRecord {
            StreamRecord(partition: "p", identifier: "\(i)", time: 0, record: [:], payload: Data(), field: "", size: 1, position: UInt64(i))
        }
        let seg = StreamSegment(records: [r(1), r(2), r(3)], end: r(9))
        let h = MappingService.halves(seg)
        #expect(h.map { $0.records.map(\.position) } == [[1], [2, 3]])
        #expect(h.map(\.end.position) == [1, 9])
    }

    @Test("broker and server lists: TLS only where the source has a TLS scheme; names checked")
    func directories() throws {
        let rabbit = try BrokerDirectory(parsing: "main=127.0.0.1:5672, secure = amqps://mq.internal:5671", schemes: ("amqp", "amqps"))
        #expect(rabbit.brokers["main"]?.port == 5672)
        #expect(rabbit.brokers["secure"]?.host == "mq.internal")
        #expect(rabbit.tls == ["secure"])
        #expect(throws: DomainError.self) { try BrokerDirectory(parsing: "pg=amqps://db:5432", what: "PostgreSQL server") }
        #expect(throws: DomainError.self) { try BrokerDirectory(parsing: "a b=db:5432") }
        #expect(throws: DomainError.self) { try BrokerDirectory(parsing: "pg=db:70000") }
    }

    @Test("a PostgreSQL connection string quotes every value: a password cannot add options")
    func conninfoQuoting() {
        let s = PostgresSettings(
            host: "db", port: 5432, database: "shop", user: "u", password: "p' replication=database sslmode='disable\\",
            table: nil, slot: "s", arn: "a")
        let plain = s.conninfo(replication: false)
        #expect(plain.contains("password='p\\' replication=database sslmode=\\'disable\\\\'"))
        #expect(!plain.contains("replication=database sslmode='"))
        #expect(s.conninfo(replication: true).hasSuffix(" replication=database"))
    }
}
