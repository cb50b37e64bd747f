import Foundation
import NIOCore
import PetrelCore
import PetrelMessaging
import PetrelSources
import PetrelStore
import Testing

/// Lambda's and SNS's filter grammar, queue attributes and policies, SQS's MD5
/// of message attributes, and the queue store on a real SQLite file.
@Suite("Messaging")
struct MessagingTests {
    func json(_ s: String) -> Any { try! JSONSerialization.jsonObject(with: Data(s.utf8), options: [.fragmentsAllowed]) }

    @Test("filter patterns: exact, prefix, suffix, anything-but, numeric, exists, nesting, arrays, $or")
    func patterns() throws {
        let order = json(#"{"body":{"kind":"order","total":12,"tags":["a","vip"],"ship":{"country":"FR"},"note":null}}"#)
        let cases: [(String, Bool)] = [
            (#"{"body":{"kind":["order"]}}"#, true),
            (#"{"body":{"kind":["refund"]}}"#, false),
            (#"{"body":{"kind":[{"prefix":"ord"}]}}"#, true),
            (#"{"body":{"kind":[{"suffix":"der"}]}}"#, true),
            (#"{"body":{"kind":[{"equals-ignore-case":"ORDER"}]}}"#, true),
            (#"{"body":{"kind":[{"anything-but":["order","refund"]}]}}"#, false),
            (#"{"body":{"kind":[{"anything-but":{"prefix":"x"}}]}}"#, true),
            (#"{"body":{"total":[{"numeric":[">",10,"<=",12]}]}}"#, true),
            (#"{"body":{"total":[{"numeric":["<",10]}]}}"#, false),
            (#"{"body":{"total":[12]}}"#, true),
            (#"{"body":{"tags":["vip"]}}"#, true),
            (#"{"body":{"tags":[{"anything-but":"vip"}]}}"#, false),
            (#"{"body":{"ship":{"country":["FR","DE"]}}}"#, true),
            (#"{"body":{"missing":[{"exists":false}]}}"#, true),
            (#"{"body":{"missing":[{"exists":true}]}}"#, false),
            (#"{"body":{"kind":[{"exists":true}]}}"#, true),
            (#"{"body":{"note":[null]}}"#, true),
            (#"{"body":{"kind":["order"],"total":[1]}}"#, false),
            (#"{"body":{"$or":[{"kind":["refund"]},{"total":[12]}]}}"#, true),
        ]
        for (pattern, wanted) in cases {
            #expect(try EventPattern(json: pattern).matches(order) == wanted, "\(pattern)")
        }
        for bad in [#"not json"#, #"{"a":"b"}"#, #"{"a":[]}"#, #"{"a":[{"numeric":["~",1]}]}"#, #"{"a":[{"nope":1}]}"#, "{}"] {
            #expect(throws: DomainError.self, "\(bad)") { _ = try EventPattern(json: bad) }
        }
    }

    @Test("queue attributes are checked against SQS's ranges; FIFO-ness is fixed")
    func settings() throws {
        var s = QueueSettings()
        try s.set(["VisibilityTimeout": "60", "DelaySeconds": "5"], fifo: false, creating: true)
        #expect(s.visibilitySeconds == 60 && s.delaySeconds == 5 && s.maximumMessageSize == 1_048_576 && s.retentionSeconds == 345_600)
        #expect(throws: MessagingError.self) { try s.set(["VisibilityTimeout": "43201"], fifo: false, creating: false) }
        #expect(throws: MessagingError.self) { try s.set(["Unknown": "1"], fifo: false, creating: false) }
        #expect(throws: MessagingError.self) { try s.set(["FifoQueue": "true"], fifo: false, creating: false) }
        #expect(throws: MessagingError.self) { try s.set(["ContentBasedDeduplication": "true"], fifo: false, creating: false) }
        #expect(throws: MessagingError.self) {
            try s.set(["RedrivePolicy": #"{"deadLetterTargetArn":"x","maxReceiveCount":1}"#], fifo: false, creating: false)
        }
        try s.set(
            ["RedrivePolicy": #"{"deadLetterTargetArn":"arn:aws:sqs:us-east-1:000000000000:dlq","maxReceiveCount":"3"}"#], fifo: false,
            creating: false)
        #expect(s.redrive?.maxReceiveCount == 3)
        try s.set(["RedrivePolicy": ""], fifo: false, creating: false)
        #expect(s.redrive == nil)
        #expect(s.visibilitySeconds == 60, "a refused change changes nothing")
    }

    @Test("queue policies: principals, actions with wildcards, source conditions, deny wins")
    func policies() throws {
        let p = try QueuePolicy(
            json: #"""
                {"Statement":[
                  {"Effect":"Allow","Principal":{"AWS":["111122223333","arn:aws:iam::444455556666:root"]},"Action":"sqs:Send*"},
                  {"Effect":"Allow","Principal":{"Service":"sns.amazonaws.com"},"Action":"sqs:SendMessage",
                   "Condition":{"ArnEquals":{"aws:SourceArn":"arn:aws:sns:us-east-1:000000000000:t"}}},
                  {"Effect":"Deny","Principal":"*","Action":"sqs:SendMessage","Condition":{"ArnLike":{"aws:SourceArn":"arn:aws:sns:*:*:blocked"}}}
                ]}
                """#)
        #expect(p.allows(account: "111122223333", action: "sqs:SendMessage"))
        #expect(p.allows(account: "444455556666", action: "SQS:SendMessageBatch"))
        #expect(!p.allows(account: "111122223333", action: "sqs:ReceiveMessage"))
        #expect(!p.allows(account: "999999999999", action: "sqs:SendMessage"))
        #expect(
            p.allows(
                account: nil, service: "sns.amazonaws.com", action: "sqs:SendMessage", sourceArn: "arn:aws:sns:us-east-1:000000000000:t"))
        #expect(
            !p.allows(
                account: nil, service: "sns.amazonaws.com", action: "sqs:SendMessage", sourceArn: "arn:aws:sns:us-east-1:000000000000:u"))
        #expect(
            !p.allows(account: "111122223333", action: "sqs:SendMessage", sourceArn: "arn:aws:sns:us-east-1:000000000000:blocked"))
        #expect(throws: MessagingError.self) { _ = try QueuePolicy(json: #"{"Statement":[{"Effect":"Maybe"}]}"#) }
    }

    @Test("the MD5 of message attributes is SQS's")
    func attributeMD5() {
        // A reference value computed by the algorithm the AWS SDKs use to check SQS's answers.
        let attrs = [
            "b": MessageAttribute(dataType: "Binary", binaryValue: Data([0, 1])),
            "a": MessageAttribute(dataType: "String", stringValue: "v"),
        ]
        var bytes: [UInt8] = []
        func part(_ b: [UInt8]) { bytes += withUnsafeBytes(of: UInt32(b.count).bigEndian, Array.init) + b }
        part(Array("a".utf8))
        part(Array("String".utf8))
        bytes.append(1)
        part(Array("v".utf8))
        part(Array("b".utf8))
        part(Array("Binary".utf8))
        bytes.append(2)
        part([0, 1])
        #expect(MessageAttribute.md5(attrs) == MessageAttribute.md5Hex(bytes))
        #expect(MessageAttribute.md5([:]) == nil)
        #expect(MessageAttribute.md5Hex(Array("hello".utf8)) == "5d41402abc4b2a76b9719d911017c592")
    }

    func store() throws -> (QueueStore, String) {
        let dir = try makeScratchDirectory("queues")
        let db = try PetrelDatabase(path: dir + "/petrel.sqlite")
        return (QueueStore(db, keys: try KeyRing(directory: dir, db: db), commits: GroupCommit(db)), dir)
    }

    @Test("receives hide messages, count them, and move them to the dead-letter queue past maxReceiveCount")
    func receiveAndRedrive() async throws {
        let (store, dir) = try store()
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let q = try #require(try store.create(account: "000000000000", name: "q", settings: QueueSettings(), tags: [:], now: 0))
        let dlq = try #require(try store.create(account: "000000000000", name: "dlq", settings: QueueSettings(), tags: [:], now: 0))
        _ = try await store.send(q, [NewMessage(body: "m", sender: "t")], now: 1000)
        let redrive = QueueStore.Redrive(target: dlq, maxReceiveCount: 2, sourceARN: "arn:aws:sqs:us-east-1:000000000000:q")
        let first = try store.receive(q, max: 10, visibility: 1, now: 1000, redrive: redrive).messages
        #expect(first.map(\.body) == ["m"] && first[0].receiveCount == 1)
        #expect(try store.receive(q, max: 10, visibility: 1, now: 1500, redrive: redrive).messages.isEmpty)
        let second = try store.receive(q, max: 10, visibility: 1, now: 2000, redrive: redrive).messages
        #expect(second[0].receiveCount == 2 && second[0].firstReceive == 1000)
        // The first handle is stale: it deletes nothing.
        #expect(try store.delete(q, handle: first[0].receiptHandle) == false)
        #expect(throws: MessagingError.self) { _ = try store.delete(dlq, handle: second[0].receiptHandle) }
        let third = try store.receive(q, max: 10, visibility: 1, now: 3000, redrive: redrive)
        #expect(third.messages.isEmpty && third.moved == 1)
        let dead = try store.receive(dlq, max: 10, visibility: 1, now: 3000, redrive: nil).messages
        #expect(dead.map(\.id) == first.map(\.id) && dead[0].deadLetterSource == redrive.sourceARN && dead[0].receiveCount == 1)
        #expect(try store.delete(dlq, handle: dead[0].receiptHandle))
        let counts = try store.counts(dlq.id, now: 3000)
        #expect(counts.visible == 0 && counts.inFlight == 0 && counts.delayed == 0 && counts.oldestSent == nil)
    }

    @Test("a FIFO queue hands out a group's messages in order, one receiver at a time, and folds duplicates")
    func fifo() async throws {
        let (store, dir) = try store()
        defer { try? FileManager.default.removeItem(atPath: dir) }
        var s = QueueSettings()
        try s.set(["FifoQueue": "true"], fifo: true, creating: true)
        let q = try #require(try store.create(account: "000000000000", name: "q.fifo", settings: s, tags: [:], now: 0))
        var messages: [NewMessage] = []
        for (g, i) in [("a", 1), ("b", 1), ("a", 2), ("b", 2), ("a", 3)] {
            messages.append(NewMessage(body: "\(g)\(i)", sender: "t", groupID: g, dedupID: "\(g)\(i)"))
        }
        let sent = try await store.send(q, messages, now: 0)
        let again = try await store.send(q, [NewMessage(body: "dup", sender: "t", groupID: "a", dedupID: "a1")], now: 1000)
        #expect(again[0].id == sent[0].id && again[0].sequence == sent[0].sequence)
        let one = try store.receive(q, max: 2, visibility: 30, now: 1000, redrive: nil).messages
        #expect(one.map(\.body) == ["a1", "b1"])
        // Both groups are in flight: nothing more until they are done.
        #expect(try store.receive(q, max: 10, visibility: 30, now: 1000, redrive: nil).messages.isEmpty)
        #expect(try store.delete(q, handle: one[0].receiptHandle))
        let next = try store.receive(q, max: 10, visibility: 30, now: 1000, redrive: nil).messages
        #expect(next.map(\.body) == ["a2", "a3"])
        // Past the five-minute window, the same deduplication id is a new message.
        let later = try await store.send(q, [NewMessage(body: "new", sender: "t", groupID: "c", dedupID: "a1")], now: 400_000)
        #expect(later[0].id != sent[0].id)
    }

    @Test("mapping settings: Lambda's ranges, FIFO limits, the batching window rule")
    func mappingSettings() throws {
        var m = EventSourceMapping(
            account: "000000000000", function: "f", qualifier: nil, sourceArn: "arn:aws:sqs:us-east-1:000000000000:q")
        var s = EventSourceMapping.Settings()
        s.batchSize = 100
        #expect(throws: DomainError.self) { try m.apply(s, fifo: false) }
        s.maximumBatchingWindowInSeconds = 1
        try m.apply(s, fifo: false)
        #expect(m.batchSize == 100)
        #expect(throws: DomainError.self) { try m.apply(s, fifo: true) }
        var c = EventSourceMapping.Settings()
        c.maximumConcurrency = .some(1)
        #expect(throws: DomainError.self) { try m.apply(c, fifo: false) }
        c.maximumConcurrency = .some(nil)
        try m.apply(c, fifo: false)
        #expect(m.concurrency == EventSourceMapping.defaultConcurrency)
    }

    @Test("a batch item failure report: ids of the batch only, else the whole batch failed")
    func itemFailures() {
        func report(_ s: String) -> Set<String>? {
            MappingService.itemFailures(.init(bytes: Array(s.utf8)), ids: ["a", "b"])
        }
        #expect(report(#"{"batchItemFailures":[{"itemIdentifier":"a"}]}"#) == ["a"])
        #expect(report(#"{"batchItemFailures":[]}"#) == [])
        #expect(report("null") == [])
        #expect(report(#"{"other":1}"#) == [])
        #expect(report(#"{"batchItemFailures":[{"itemIdentifier":"zzz"}]}"#) == nil)
        #expect(report(#"{"batchItemFailures":[{"itemIdentifier":""}]}"#) == nil)
        #expect(report(#"{"batchItemFailures":"a"}"#) == nil)
    }
}
