import CPetrelRabbitMQ
import Dispatch
import Foundation

/// One AMQP connection consuming one queue, over rabbitmq-c, whose calls block: every
/// call runs on the connection's own serial queue, off the cooperative threads.
final class RabbitConsumer: @unchecked Sendable {
    // Touched only on `queue`.
    private var handle: OpaquePointer?
    private let queue = DispatchQueue(label: "petrel.rabbitmq")

    struct Failure: Error, CustomStringConvertible {
        var description: String
    }

    struct Delivery: Sendable {
        var tag: UInt64
        var redelivered: Bool
        var body: Data
        /// Lambda's `basicProperties`, as JSON.
        var properties: Data
    }

    private init(_ handle: OpaquePointer) { self.handle = handle }

    private func run<T: Sendable>(_ body: @escaping @Sendable (OpaquePointer?) throws -> T) async throws -> T {
        try await withCheckedThrowingContinuation { c in
            queue.async { c.resume(with: Result { try body(self.handle) }) }
        }
    }

    static func connect(
        host: String, port: Int, vhost: String, user: String, password: String, tlsCA: String?, queue name: String, prefetch: Int
    ) async throws -> RabbitConsumer {
        let handle = try await withCheckedThrowingContinuation { (c: CheckedContinuation<OpaquePointer, any Error>) in
            DispatchQueue.global().async {
                var err = [CChar](repeating: 0, count: 512)
                let connected: OpaquePointer? =
                    if let tlsCA {
                        petrel_rmq_connect(host, Int32(port), vhost, user, password, 5000, tlsCA, &err, err.count)
                    } else {
                        petrel_rmq_connect(host, Int32(port), vhost, user, password, 5000, nil, &err, err.count)
                    }
                guard let h = connected else {
                    return c.resume(throwing: Failure(description: String(cString: err)))
                }
                if petrel_rmq_consume(h, name, Int32(min(prefetch, 65_535)), &err, err.count) != 0 {
                    petrel_rmq_close(h)
                    return c.resume(throwing: Failure(description: String(cString: err)))
                }
                c.resume(returning: h)
            }
        }
        return RabbitConsumer(handle)
    }

    /// The next delivery within `timeoutMillis`, or nil.
    func next(timeoutMillis: Int) async throws -> Delivery? {
        try await run { h in
            guard let h else { throw Failure(description: "the connection is closed") }
            var d = petrel_rmq_delivery()
            var err = [CChar](repeating: 0, count: 512)
            switch petrel_rmq_next(h, Int32(timeoutMillis), &d, &err, err.count) {
            case 1:
                defer { petrel_rmq_free(d.properties_json) }
                let body = d.body.map { Data(bytes: $0, count: d.body_len) } ?? Data()
                let props = d.properties_json.map { Data(bytes: $0, count: strlen($0)) } ?? Data("{}".utf8)
                return Delivery(tag: d.delivery_tag, redelivered: d.redelivered != 0, body: body, properties: props)
            case 0:
                return nil
            default:
                throw Failure(description: String(cString: err))
            }
        }
    }

    func ack(_ tags: [UInt64]) async throws {
        try await run { h in
            for t in tags where h == nil || petrel_rmq_ack(h, t) != 0 { throw Failure(description: "cannot acknowledge a message") }
        }
    }

    func reject(_ tags: [UInt64], requeue: Bool) async throws {
        try await run { h in
            for t in tags where h == nil || petrel_rmq_reject(h, t, requeue ? 1 : 0) != 0 {
                throw Failure(description: "cannot reject a message")
            }
        }
    }

    func close() async {
        _ = try? await run { h in
            if let h { petrel_rmq_close(h) }
            self.handle = nil
        }
    }
}
