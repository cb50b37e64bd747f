import Foundation
import PetrelCore
import PetrelRuntime
import PetrelStore

/// Where the operator's RabbitMQ brokers are: Amazon MQ broker ARNs name a broker
/// (`arn:aws:mq:REGION:ACCOUNT:broker:NAME:ID`); the operator says where NAME listens.
public struct BrokerDirectory: Sendable {
    public var brokers: [String: (host: String, port: Int)]
    /// Brokers spoken to over TLS (`amqps://`).
    public var tls: Set<String> = []
    /// The CA certificates (a PEM file) TLS brokers' certificates must chain to (nil: the system's).
    public var caFile: String?
    public init(_ brokers: [String: (host: String, port: Int)] = [:]) { self.brokers = brokers }

    /// `NAME=HOST:PORT` entries, comma-separated. With `schemes`, HOST may follow the plain
    /// scheme (`amqp://`) or the TLS one (`amqps://`, which puts NAME in `tls`).
    public init(parsing text: String, schemes: (plain: String, tls: String)? = nil, what: String = "broker") throws(DomainError) {
        var out: [String: (host: String, port: Int)] = [:]
        for (name, value, entry) in try Self.namedEntries(text, what: "a \(what) is NAME=HOST:PORT") {
            var address = value
            if let schemes {
                if address.hasPrefix(schemes.plain + "://") { address.removeFirst(schemes.plain.count + 3) }
                if address.hasPrefix(schemes.tls + "://") {
                    address.removeFirst(schemes.tls.count + 3)
                    tls.insert(name)
                }
            }
            guard let colon = address.lastIndex(of: ":"), let port = Int(address[address.index(after: colon)...]),
                (1...65_535).contains(port), colon > address.startIndex,
                !address[..<colon].contains(where: { $0 == "/" || $0 == " " })
            else {
                throw DomainError(.invalidParameter, "a \(what) is NAME=HOST:PORT, not \(entry)")
            }
            out[name] = (String(address[..<colon]), port)
        }
        brokers = out
    }

    /// The operator's `NAME=VALUE, …` lists (brokers, servers, object stores): each entry's
    /// name and value, trimmed, and the entry as written; `form` says what an entry must be.
    public static func namedEntries(_ text: String, what form: String) throws(DomainError) -> [(name: String, value: String, entry: String)]
    {
        var out: [(name: String, value: String, entry: String)] = []
        for entry in text.split(separator: ",").map({ $0.trimmingCharacters(in: .whitespaces) }) where !entry.isEmpty {
            let kv = entry.split(separator: "=", maxSplits: 1).map { $0.trimmingCharacters(in: .whitespaces) }
            guard kv.count == 2, !kv[0].isEmpty, kv[0].allSatisfy({ $0.isLetter || $0.isNumber || $0 == "-" || $0 == "_" }) else {
                throw DomainError(.invalidParameter, "\(form), not \(entry)")
            }
            out.append((kv[0], kv[1], entry))
        }
        return out
    }

    /// The broker name of an Amazon MQ broker ARN.
    public static func name(_ arn: String) -> String? {
        let p = arn.split(separator: ":", omittingEmptySubsequences: false)
        guard p.count == 8, p[0] == "arn", p[2] == "mq", p[5] == "broker", !p[6].isEmpty, !p[7].isEmpty else { return nil }
        return String(p[6])
    }
}

extension MappingService {
    /// The user name and password a secret of the mapping's account holds (Lambda's shape:
    /// a JSON object with `username` and `password`).
    func credentials(_ m: EventSourceMapping, _ secretARN: String) throws -> (user: String, password: String) {
        let o = try secretJSON(m, secretARN)
        guard let user = o["username"] as? String, let password = o["password"] as? String else {
            throw DomainError(.invalidParameter, "The secret \(secretARN) is not a JSON object with username and password.")
        }
        return (user, password)
    }

    /// The JSON object a secret of the mapping's account holds.
    func secretJSON(_ m: EventSourceMapping, _ secretARN: String) throws -> [String: Any] {
        guard let secret = try secrets.secret(account: m.account, id: secretARN, now: queues.now()), secret.deleted == nil,
            let value = try secrets.value(arn: secret.arn, version: nil, stage: nil, now: queues.now()), let text = value.string,
            let o = (try? JSONSerialization.jsonObject(with: Data(text.utf8))) as? [String: Any]
        else {
            throw DomainError(.invalidParameter, "The secret \(secretARN) does not exist or is not a JSON object.")
        }
        return o
    }

    /// The broker, virtual host and credentials a RabbitMQ mapping connects with; throws a
    /// sentence for the mapping's state when one is missing.
    public func rabbitSettings(_ m: EventSourceMapping) throws -> (
        host: String, port: Int, vhost: String, user: String, password: String, tlsCA: String?
    ) {
        guard let name = BrokerDirectory.name(m.sourceArn), let b = brokers.brokers[name] else {
            throw DomainError(.invalidParameter, "The broker \(m.sourceArn) is not one the operator configured (rabbitmq_brokers).")
        }
        let access = m.sourceAccess ?? []
        let vhost = access.first { $0.type == "VIRTUAL_HOST" }?.uri ?? "/"
        guard let secretARN = access.first(where: { $0.type == "BASIC_AUTH" })?.uri else {
            throw DomainError(.invalidParameter, "A RabbitMQ mapping needs SourceAccessConfigurations of type BASIC_AUTH (a secret's ARN).")
        }
        let (user, password) = try credentials(m, secretARN)
        return (b.host, b.port, vhost, user, password, brokers.tls.contains(name) ? (brokers.caFile ?? "") : nil)
    }

    /// One consumer of a RabbitMQ mapping: a connection that takes up to a batch's worth of
    /// unacknowledged messages, a place in the function's concurrency before each batch, the
    /// batch acknowledged after the invocation succeeded and rejected (requeued) after it
    /// failed, so that the queue's delivery limit and dead-letter exchange apply.
    func consumeRabbit(_ m: EventSourceMapping, generation: Int) async {
        let stop: @Sendable () -> Bool = { [self] in !current(m.uuid, generation) }
        let patterns = m.filters.compactMap { try? EventPattern(json: $0) }
        let queueName = m.queues?.first ?? ""
        let key = queueName + "::" + ((m.sourceAccess ?? []).first { $0.type == "VIRTUAL_HOST" }?.uri ?? "/")
        while !stop() {
            let consumer: RabbitConsumer
            do {
                let s = try rabbitSettings(m)
                consumer = try await RabbitConsumer.connect(
                    host: s.host, port: s.port, vhost: s.vhost, user: s.user, password: s.password, tlsCA: s.tlsCA, queue: queueName,
                    prefetch: m.batchSize)
            } catch {
                report(m, "PROBLEM: Connection error. \(error)")
                try? await pause(stop)
                continue
            }
            do {
                while !stop() {
                    guard let target = try functions.resolve(account: m.account, m.function, qualifier: m.qualifier) else {
                        report(m, "PROBLEM: Function not found.")
                        try await pause(stop)
                        continue
                    }
                    guard let slot = await dispatcher.reserveSlot(target.record.key) else { break }
                    var batch: [RabbitConsumer.Delivery] = []
                    while batch.isEmpty && !stop() {
                        if let d = try await consumer.next(timeoutMillis: 1000) { batch.append(d) }
                    }
                    let closes = queues.now() + Int64(m.maximumBatchingWindowInSeconds) * 1000
                    var bytes = batch.first?.body.count ?? 0
                    while !batch.isEmpty, batch.count < m.batchSize, bytes < Self.maxPayload * 3 / 4 {
                        let left = max(5, closes - queues.now())
                        guard let d = try await consumer.next(timeoutMillis: Int(m.maximumBatchingWindowInSeconds == 0 ? 5 : left)) else {
                            break
                        }
                        batch.append(d)
                        bytes += d.body.count
                    }
                    guard !batch.isEmpty else {
                        await dispatcher.releaseSlot(slot)
                        break
                    }
                    var records: [[String: Any]] = []
                    var kept: [UInt64] = []
                    var dropped: [UInt64] = []
                    for d in batch {
                        let record: [String: Any] = [
                            "basicProperties": (try? JSONSerialization.jsonObject(with: d.properties)) ?? [:],
                            "redelivered": d.redelivered, "data": d.body.base64EncodedString(),
                        ]
                        if Self.passes(patterns, record, field: "data", payload: d.body) {
                            records.append(record)
                            kept.append(d.tag)
                        } else {
                            dropped.append(d.tag)
                        }
                    }
                    // Filtered out: acknowledged (dropped), as Lambda does.
                    try await consumer.ack(dropped)
                    Self.messages(m, "filtered", dropped.count)
                    guard !kept.isEmpty else {
                        await dispatcher.releaseSlot(slot)
                        continue
                    }
                    let event: [String: Any] = [
                        "eventSource": "aws:rmq", "eventSourceArn": m.sourceArn, "rmqMessagesByQueue": [key: records],
                    ]
                    let payload = try JSONSerialization.data(withJSONObject: event, options: [.withoutEscapingSlashes])
                    let succeeded: Bool
                    do {
                        succeeded = try await invokeBatch(m, target, payload: payload, slot: slot).functionError == nil
                    } catch {
                        succeeded = false
                        report(m, "PROBLEM: Function call failed: \(error.message)")
                    }
                    if succeeded {
                        try await consumer.ack(kept)
                        Self.batches(m, "succeeded")
                        Self.messages(m, "succeeded", kept.count)
                        report(m, "OK")
                    } else {
                        try await consumer.reject(kept, requeue: true)
                        Self.batches(m, "failed")
                        Self.messages(m, "failed", kept.count)
                        report(m, "PROBLEM: Function call failed")
                    }
                }
            } catch {
                // The broker went away or closed the consumer: unacknowledged messages go back
                // to the queue (the broker's doing); connect again.
                report(m, "PROBLEM: Connection error. \(error)")
                logger.warning("a RabbitMQ mapping lost its broker", metadata: ["mapping": "\(m.uuid)", "error": "\(error)"])
                await consumer.close()
                try? await pause(stop)
                continue
            }
            await consumer.close()
        }
    }
}
