import CPetrelKafka
import Dispatch
import Foundation
import PetrelCore
import Synchronization

/// Which Kafka bootstrap servers mappings may name (`HOST:PORT`, `HOST:*`, or `*`): a
/// mapping makes the daemon connect where it says, so the operator says where that may be.
public struct KafkaAllowList: Sendable {
    public let entries: [String]
    public init(_ entries: [String]) { self.entries = entries }

    public func allows(_ server: String) -> Bool {
        guard let colon = server.lastIndex(of: ":") else { return false }
        let host = server[..<colon]
        return entries.contains { e in e == "*" || e == server || e == "\(host):*" }
    }
}

/// Where a Kafka mapping reads, and how it authenticates (librdkafka's settings).
struct KafkaSettings: Sendable {
    var servers: [String]
    var topic: String
    var group: String
    var startingPosition: String
    var config: [(String, String)]
}

extension MappingService {
    /// A Kafka mapping's servers (each one the operator allows), topic, group and credentials
    /// (`SourceAccessConfigurations` naming secrets, as on Lambda).
    func kafkaSettings(_ m: EventSourceMapping) throws -> KafkaSettings {
        guard let st = m.stream, let servers = st.bootstrapServers, let topic = st.topics?.first else {
            throw DomainError(.invalidParameter, "A Kafka mapping needs KAFKA_BOOTSTRAP_SERVERS and one topic.")
        }
        for s in servers where !kafkaAllow.allows(s) {
            throw DomainError(.invalidParameter, "The Kafka bootstrap server \(s) is not one the operator allows (kafka_allow).")
        }
        var config: [(String, String)] = []
        var sasl: String?
        var tls = false
        for a in m.sourceAccess ?? [] {
            switch a.type {
            case "BASIC_AUTH", "SASL_SCRAM_256_AUTH", "SASL_SCRAM_512_AUTH":
                let (user, password) = try credentials(m, a.uri)
                sasl = ["BASIC_AUTH": "PLAIN", "SASL_SCRAM_256_AUTH": "SCRAM-SHA-256", "SASL_SCRAM_512_AUTH": "SCRAM-SHA-512"][a.type]
                config += [("sasl.username", user), ("sasl.password", password)]
            case "SERVER_ROOT_CA_CERTIFICATE":
                let o = try secretJSON(m, a.uri)
                guard let pem = o["certificate"] as? String else {
                    throw DomainError(.invalidParameter, "The secret \(a.uri) holds no certificate.")
                }
                config.append(("ssl.ca.pem", pem))
                tls = true
            case "CLIENT_CERTIFICATE_TLS_AUTH":
                let o = try secretJSON(m, a.uri)
                guard let cert = o["certificate"] as? String, let key = o["privateKey"] as? String else {
                    throw DomainError(.invalidParameter, "The secret \(a.uri) holds no certificate and privateKey.")
                }
                config += [("ssl.certificate.pem", cert), ("ssl.key.pem", key)]
                if let p = o["privateKeyPassword"] as? String { config.append(("ssl.key.password", p)) }
                tls = true
            default:
                throw DomainError(.invalidParameter, "Unsupported SourceAccessConfiguration type \(a.type) for a Kafka cluster.")
            }
        }
        if let sasl { config.append(("sasl.mechanisms", sasl)) }
        config.append(("security.protocol", (sasl == nil ? "" : "SASL_") + (tls ? "SSL" : "PLAINTEXT")))
        if sasl == nil, tls { config[config.count - 1].1 = "SSL" }
        return KafkaSettings(
            servers: servers, topic: topic, group: st.consumerGroupId ?? m.uuid, startingPosition: st.startingPosition, config: config)
    }
}

/// A Kafka topic read through librdkafka with the mapping's consumer group: every partition
/// assigned to this reader (one reader per mapping), from the group's committed offsets
/// (or the starting position, pinned by a commit on the first start), committing each
/// partition's offset only past records that are done.
final class KafkaReader: StreamReader, @unchecked Sendable {
    private let rk: OpaquePointer
    private let queue = DispatchQueue(label: "petrel.kafka")
    /// When the reader last looked whether the cluster answers (touched only on `queue`).
    private var lastCheck = ContinuousClock.now
    let settings: KafkaSettings
    private let partitionIDs: [String: Int32]

    private struct Shared {
        var committed: [Int32: Int64] = [:]
        var problem: String?
    }
    private let shared = Mutex(Shared())

    struct Failure: Error, CustomStringConvertible {
        var description: String
    }

    private init(_ rk: OpaquePointer, _ settings: KafkaSettings, partitions: [Int32], committed: [Int32: Int64]) {
        self.rk = rk
        self.settings = settings
        partitionIDs = Dictionary(uniqueKeysWithValues: partitions.map { ("\(settings.topic)-\($0)", $0) })
        shared.withLock { $0.committed = committed }
    }

    static func open(_ m: EventSourceMapping, settings: KafkaSettings) async throws -> KafkaReader {
        try await withCheckedThrowingContinuation { c in
            DispatchQueue.global().async { c.resume(with: Result { try connect(settings) }) }
        }
    }

    private static func connect(_ s: KafkaSettings) throws -> KafkaReader {
        var err = [CChar](repeating: 0, count: 512)
        let conf = rd_kafka_conf_new()
        let values =
            [
                ("bootstrap.servers", s.servers.joined(separator: ",")), ("group.id", s.group), ("client.id", "petrel"),
                ("enable.auto.commit", "false"), ("enable.auto.offset.store", "false"),
                ("auto.offset.reset", s.startingPosition == "LATEST" ? "latest" : "earliest"),
                ("socket.connection.setup.timeout.ms", "5000"), ("reconnect.backoff.max.ms", "2000"),
                // An idle partition's fetch waits at most this long at the broker (librdkafka: 500).
                ("fetch.wait.max.ms", "100"),
            ] + s.config
        for (k, v) in values where rd_kafka_conf_set(conf, k, v, &err, err.count) != RD_KAFKA_CONF_OK {
            rd_kafka_conf_destroy(conf)
            throw Failure(description: "Kafka setting \(k): \(String(cString: err))")
        }
        guard let rk = rd_kafka_new(RD_KAFKA_CONSUMER, conf, &err, err.count) else {
            rd_kafka_conf_destroy(conf)
            throw Failure(description: String(cString: err))
        }
        rd_kafka_poll_set_consumer(rk)
        do {
            let partitions = try Self.partitions(rk, s.topic)
            let committed = try Self.start(rk, s, partitions)
            return KafkaReader(rk, s, partitions: partitions, committed: committed)
        } catch {
            rd_kafka_consumer_close(rk)
            rd_kafka_destroy(rk)
            throw error
        }
    }

    /// The topic's partitions (from the cluster's metadata).
    private static func partitions(_ rk: OpaquePointer, _ topic: String, timeoutMillis: Int32 = 5000) throws -> [Int32] {
        let rkt = rd_kafka_topic_new(rk, topic, nil)
        defer { rd_kafka_topic_destroy(rkt) }
        var md: UnsafePointer<rd_kafka_metadata_t>?
        let e = rd_kafka_metadata(rk, 0, rkt, &md, timeoutMillis)
        guard e == RD_KAFKA_RESP_ERR_NO_ERROR, let md else {
            throw Failure(description: "Connection error. The Kafka cluster did not answer: \(String(cString: rd_kafka_err2str(e)))")
        }
        defer { rd_kafka_metadata_destroy(md) }
        guard md.pointee.topic_cnt == 1, let t = md.pointee.topics?.pointee, t.err == RD_KAFKA_RESP_ERR_NO_ERROR, t.partition_cnt > 0
        else {
            throw Failure(description: "The topic \(topic) does not exist in the Kafka cluster.")
        }
        return (0..<Int(t.partition_cnt)).map { t.partitions[$0].id }.sorted()
    }

    /// Assigns every partition at the group's committed offset; partitions the group never
    /// committed start at the starting position, which is committed at once so that a
    /// restart before the first record does not move it.
    private static func start(_ rk: OpaquePointer, _ s: KafkaSettings, _ partitions: [Int32]) throws -> [Int32: Int64] {
        let list = rd_kafka_topic_partition_list_new(Int32(partitions.count))
        defer { rd_kafka_topic_partition_list_destroy(list) }
        for p in partitions { rd_kafka_topic_partition_list_add(list, s.topic, p) }
        let e = rd_kafka_committed(rk, list, 5000)
        guard e == RD_KAFKA_RESP_ERR_NO_ERROR, let list else {
            throw Failure(description: "Connection error. The group's offsets: \(String(cString: rd_kafka_err2str(e)))")
        }
        var committed: [Int32: Int64] = [:]
        var pin: [(Int32, Int64)] = []
        for i in 0..<Int(list.pointee.cnt) {
            let el = list.pointee.elems[i]
            if el.offset >= 0 {
                committed[el.partition] = el.offset
                continue
            }
            var lo: Int64 = 0
            var hi: Int64 = 0
            let w = rd_kafka_query_watermark_offsets(rk, s.topic, el.partition, &lo, &hi, 5000)
            guard w == RD_KAFKA_RESP_ERR_NO_ERROR else {
                throw Failure(description: "Connection error. The topic's offsets: \(String(cString: rd_kafka_err2str(w)))")
            }
            let start = s.startingPosition == "LATEST" ? hi : lo
            list.pointee.elems[i].offset = start
            committed[el.partition] = start
            pin.append((el.partition, start))
        }
        if !pin.isEmpty { try commit(rk, s.topic, pin) }
        let a = rd_kafka_assign(rk, list)
        guard a == RD_KAFKA_RESP_ERR_NO_ERROR else { throw Failure(description: String(cString: rd_kafka_err2str(a))) }
        return committed
    }

    private static func commit(_ rk: OpaquePointer, _ topic: String, _ offsets: [(Int32, Int64)]) throws {
        let list = rd_kafka_topic_partition_list_new(Int32(offsets.count))
        defer { rd_kafka_topic_partition_list_destroy(list) }
        for (p, o) in offsets { rd_kafka_topic_partition_list_add(list, topic, p)?.pointee.offset = o }
        let e = rd_kafka_commit(rk, list, 0)
        guard e == RD_KAFKA_RESP_ERR_NO_ERROR else {
            throw Failure(description: "Connection error. The commit failed: \(String(cString: rd_kafka_err2str(e)))")
        }
    }

    var problem: String? { shared.withLock { $0.problem } }

    func poll(waitMillis: Int) async throws -> [StreamRecord] {
        try await withCheckedThrowingContinuation { c in
            queue.async { c.resume(returning: self.read(waitMillis: waitMillis)) }
        }
    }

    private func read(waitMillis: Int) -> [StreamRecord] {
        var out: [StreamRecord] = []
        var wait = Int32(waitMillis)
        // What the poll says of the connection: the last error, or nothing wrong once a record
        // came after it (set once, not per record).
        var problem: String??
        while out.count < 5_000, let msg = rd_kafka_consumer_poll(rk, wait) {
            wait = 0
            defer { rd_kafka_message_destroy(msg) }
            let m = msg.pointee
            guard m.err == RD_KAFKA_RESP_ERR_NO_ERROR else {
                if m.err != RD_KAFKA_RESP_ERR__PARTITION_EOF { problem = .some(String(cString: rd_kafka_err2str(m.err))) }
                continue
            }
            problem = .some(nil)
            out.append(record(msg))
        }
        if let problem { shared.withLock { $0.problem = problem } }
        // Nothing came: every 2 seconds, look whether the cluster answers (librdkafka
        // reconnects by itself, and says nothing to a consumer while its brokers are away).
        if out.isEmpty, ContinuousClock.now - lastCheck > .seconds(2) {
            lastCheck = .now
            let answer: String?
            do {
                _ = try Self.partitions(rk, settings.topic, timeoutMillis: 1000)
                answer = nil
            } catch {
                answer = "\(error)"
            }
            shared.withLock { $0.problem = answer }
        }
        return out
    }

    /// Lambda's Kafka record: base64 key and value, headers as byte arrays.
    private func record(_ msg: UnsafeMutablePointer<rd_kafka_message_t>) -> StreamRecord {
        let m = msg.pointee
        var type = RD_KAFKA_TIMESTAMP_NOT_AVAILABLE
        let ts = rd_kafka_message_timestamp(msg, &type)
        let value = m.payload.map { Data(bytes: $0, count: m.len) } ?? Data()
        var r: [String: Any] = [
            "topic": settings.topic, "partition": Int(m.partition), "offset": m.offset, "timestamp": ts,
            "timestampType": type == RD_KAFKA_TIMESTAMP_LOG_APPEND_TIME
                ? "LOG_APPEND_TIME" : type == RD_KAFKA_TIMESTAMP_CREATE_TIME ? "CREATE_TIME" : "NO_TIMESTAMP_TYPE",
            "value": value.base64EncodedString(),
        ]
        if let k = m.key { r["key"] = Data(bytes: k, count: m.key_len).base64EncodedString() }
        var headers: [[String: [UInt8]]] = []
        var hdrs: OpaquePointer?
        if rd_kafka_message_headers(msg, &hdrs) == RD_KAFKA_RESP_ERR_NO_ERROR, let hdrs {
            var i = 0
            var name: UnsafePointer<CChar>?
            var v: UnsafeRawPointer?
            var size = 0
            while rd_kafka_header_get_all(hdrs, i, &name, &v, &size) == RD_KAFKA_RESP_ERR_NO_ERROR {
                if let name {
                    let bytes = v.map { Array(UnsafeRawBufferPointer(start: $0, count: size)) } ?? []
                    headers.append([String(cString: name): bytes])
                }
                i += 1
            }
        }
        r["headers"] = headers
        let now = Int64(Date().timeIntervalSince1970 * 1000)
        return StreamRecord(
            partition: "\(settings.topic)-\(m.partition)", identifier: "\(m.offset)", time: ts > 0 ? ts : now, record: r,
            payload: value, field: "value", size: value.count * 4 / 3 + m.key_len * 4 / 3 + 200, position: UInt64(max(0, m.offset)))
    }

    func commit(_ record: StreamRecord) async throws {
        guard let p = partitionIDs[record.partition] else { return }
        let next = Int64(record.position) + 1
        try await withCheckedThrowingContinuation { (c: CheckedContinuation<Void, any Error>) in
            DispatchQueue.global().async {
                c.resume(with: Result { try Self.commit(self.rk, self.settings.topic, [(p, next)]) })
            }
        }
        shared.withLock { $0.committed[p] = next }
    }

    func pause(_ partition: String, _ paused: Bool) async {
        guard let p = partitionIDs[partition] else { return }
        let list = rd_kafka_topic_partition_list_new(1)
        defer { rd_kafka_topic_partition_list_destroy(list) }
        rd_kafka_topic_partition_list_add(list, settings.topic, p)
        _ = paused ? rd_kafka_pause_partitions(rk, list) : rd_kafka_resume_partitions(rk, list)
    }

    func lag(_ partition: String) -> Int64? {
        guard let p = partitionIDs[partition], let committed = shared.withLock({ $0.committed[p] }) else { return nil }
        var lo: Int64 = 0
        var hi: Int64 = 0
        guard rd_kafka_get_watermark_offsets(rk, settings.topic, p, &lo, &hi) == RD_KAFKA_RESP_ERR_NO_ERROR, hi >= 0 else { return nil }
        return max(0, hi - committed)
    }

    func event(_ partition: String, _ records: [StreamRecord]) -> [String: Any] {
        [
            "eventSource": "SelfManagedKafka", "bootstrapServers": settings.servers.joined(separator: ","),
            "records": [partition: records.map(\.record)],
        ]
    }

    func batchInfo(_ partition: String, _ records: [StreamRecord]) -> (key: String, value: [String: Any]) {
        (
            "KafkaBatchInfo",
            [
                "batchSize": records.count, "bootstrapServers": settings.servers.joined(separator: ","), "topic": settings.topic,
                "partition": Int(partitionIDs[partition] ?? -1), "startOffset": Int64(records.first?.position ?? 0),
                "endOffset": Int64(records.last?.position ?? 0),
                "approximateArrivalOfFirstRecord": PlatformClock.iso8601(millis: records.first?.time ?? 0),
                "approximateArrivalOfLastRecord": PlatformClock.iso8601(millis: records.last?.time ?? 0),
            ]
        )
    }

    func close() async {
        await withCheckedContinuation { (c: CheckedContinuation<Void, Never>) in
            queue.async {
                rd_kafka_consumer_close(self.rk)
                rd_kafka_destroy(self.rk)
                c.resume()
            }
        }
    }
}
